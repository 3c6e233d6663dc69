//! The echo bot through a real server: a user's chat message to a JID of the component's
//! domain comes back as the hook's answer, from the JID it was sent to, whatever JSON media type
//! the hook declares and whichever kind of address (domain, bare JID, full JID) was used.

use serde_json::json;

use crate::harness::ServerKind;
use crate::harness::{Reply, Request, Stack, body, echo_text};

async fn a_chat_message_comes_back_from_the_echo_bot(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    let reply = user.chat("echo@bot.localhost", "echo-1", "hi").await;

    assert_eq!(body(&reply).as_deref(), Some("Did you say hi?"));
    assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
    assert_eq!(reply.attr("to"), Some(user.jid.to_string().as_str()));
    assert_eq!(reply.attr("type"), Some("chat"));
    assert_eq!(
        reply.attr("id"),
        Some("echo-1"),
        "the reply carries the request's id"
    );
    assert_eq!(stack.hook.requests().len(), 1, "one message, one POST");
}
on_both_servers!(a_chat_message_comes_back_from_the_echo_bot);

/// `application/json` with parameters, in any case, and `application/*+json` are JSON too.
async fn json_media_types_with_parameters_are_understood(kind: ServerKind) {
    let content_type = |body: &str| match body {
        "one" => "application/json; charset=utf-8",
        "two" => "Application/JSON;Charset=UTF-8",
        _ => "application/vnd.example+json",
    };
    let Some(stack) = Stack::start(
        kind,
        move |request: &Request| {
            let said = request.json["body"].as_str().unwrap_or("");
            Reply::status(200)
                .content_type(content_type(said))
                .body(json!({ "body": echo_text(said) }).to_string())
        },
        "",
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;

    for (id, text) in [("ct-1", "one"), ("ct-2", "two"), ("ct-3", "three")] {
        let reply = user.chat("echo@bot.localhost", id, text).await;
        assert_eq!(
            body(&reply),
            Some(echo_text(text)),
            "reply to {text:?} ({})",
            content_type(text)
        );
        assert_eq!(reply.attr("type"), Some("chat"));
    }
}
on_both_servers!(json_media_types_with_parameters_are_understood);

/// The domain itself, a bare JID and a full JID of the domain are all served; the reply comes
/// from exactly the address the user wrote to, and the hook sees that address as `to`.
async fn the_domain_bare_and_full_jids_are_all_answered_from_the_addressed_jid(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    for (n, to) in [
        "bot.localhost",
        "echo@bot.localhost",
        "echo@bot.localhost/desk",
    ]
    .into_iter()
    .enumerate()
    {
        let text = format!("hello {to}");
        let reply = user.chat(to, &format!("addr-{n}"), &text).await;
        assert_eq!(
            body(&reply),
            Some(echo_text(&text)),
            "reply to a message for {to}"
        );
        assert_eq!(reply.attr("from"), Some(to), "reply to a message for {to}");
        let requests = stack.hook.wait_requests(n + 1).await;
        assert_eq!(requests[n].json["to"], to, "the hook's `to` for {to}");
    }

    // A message without a type is `normal`; the reply to it is a chat message.
    user.send_xml("<message to='other@bot.localhost' id='normal-1'><body>plain</body></message>")
        .await;
    let reply = user.recv_message_from_component().await;
    assert_eq!(body(&reply), Some(echo_text("plain")));
    assert_eq!(reply.attr("from"), Some("other@bot.localhost"));
    assert_eq!(reply.attr("type"), Some("chat"));
}
on_both_servers!(the_domain_bare_and_full_jids_are_all_answered_from_the_addressed_jid);
