//! How the hook's answer becomes the reply (README, "How the response becomes the reply"): a
//! `stanza` field, an `application/xmpp+xml` body, `kind = "iq"`, the 2xx answers that mean "no
//! reply", unusable JSON, and stanzas of type `error` that are never answered.

use std::time::Duration;

use serde_json::json;

use crate::harness::ServerKind;
use crate::harness::{Reply, Request, Stack, body, stanza_error, to_xml};

/// Bodies starting with `marker` are echoed (see `assert_nothing_before_marker`).
fn marker_or(request: &Request, otherwise: impl FnOnce(&str) -> Reply) -> Reply {
    let text = request.json["body"].as_str().unwrap_or("");
    if text.starts_with("marker") {
        Reply::echo(request)
    } else {
        otherwise(text)
    }
}

async fn a_stanza_field_is_sent_with_missing_addresses_filled_in(kind: ServerKind) {
    let Some(stack) = Stack::start(kind,
        |request: &Request| {
            marker_or(request, |text| match text {
                "headline" => Reply::json(json!({
                    "stanza": "<message type='headline'><body>from the stanza field</body></message>"
                })),
                "other sender" => Reply::json(json!({
                    "stanza": "<message from='other@bot.localhost' type='chat'><body>from another JID</body></message>"
                })),
                _ => Reply::json(json!({
                    "stanza": "<message from='mallory@localhost' type='chat'><body>spoofed</body></message>"
                })),
            })
        },
        "",
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;
    let me = user.jid.to_string();

    let reply = user.chat("echo@bot.localhost", "st-1", "headline").await;
    assert_eq!(body(&reply).as_deref(), Some("from the stanza field"));
    assert_eq!(reply.attr("type"), Some("headline"));
    assert_eq!(
        reply.attr("from"),
        Some("echo@bot.localhost"),
        "missing from = original to"
    );
    assert_eq!(
        reply.attr("to"),
        Some(me.as_str()),
        "missing to = original from"
    );

    let reply = user
        .chat("echo@bot.localhost", "st-2", "other sender")
        .await;
    assert_eq!(body(&reply).as_deref(), Some("from another JID"));
    assert_eq!(reply.attr("from"), Some("other@bot.localhost"));
    assert_eq!(reply.attr("to"), Some(me.as_str()));

    // A `from` outside the component's domain is refused before the socket: nothing arrives,
    // and the stream to the server survives (the marker still comes back).
    user.send_xml(
        "<message to='echo@bot.localhost' type='chat' id='st-3'><body>spoof</body></message>",
    )
    .await;
    user.assert_nothing_before_marker("echo@bot.localhost", "a stanza field with a foreign from")
        .await;
}
on_both_servers!(a_stanza_field_is_sent_with_missing_addresses_filled_in);

async fn an_xmpp_xml_answer_is_the_reply(kind: ServerKind) {
    let Some(stack) = Stack::start(
        kind,
        |_: &Request| {
            Reply::status(200)
                .content_type("application/xmpp+xml")
                .body("<message type='chat'><body>raw reply</body></message>")
        },
        "",
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;

    let reply = user.chat("echo@bot.localhost", "xml-1", "hi").await;

    assert_eq!(body(&reply).as_deref(), Some("raw reply"));
    assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
    assert_eq!(reply.attr("to"), Some(user.jid.to_string().as_str()));
}
on_both_servers!(an_xmpp_xml_answer_is_the_reply);

/// 202, 204, an empty or `{}` JSON body, invalid JSON, a 200 that is not JSON: no reply to a
/// message, and the conversation goes on.
async fn answers_without_a_usable_reply_send_nothing_for_messages(kind: ServerKind) {
    let cases = [
        "202",
        "204",
        "empty json",
        "empty object",
        "invalid json",
        "html",
    ];
    let Some(stack) = Stack::start(
        kind,
        |request: &Request| {
            marker_or(request, |text| match text {
                "202" => Reply::status(202),
                "204" => Reply::status(204),
                "empty json" => Reply::status(200).content_type("application/json"),
                "empty object" => Reply::json(json!({})),
                "invalid json" => Reply::status(200)
                    .content_type("application/json")
                    .body("{\"body\": \"unterminated"),
                _ => Reply::status(200)
                    .content_type("text/html")
                    .body("<p>thanks</p>"),
            })
        },
        "",
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;

    for (n, case) in cases.iter().enumerate() {
        user.send_xml(&format!(
            "<message to='echo@bot.localhost' type='chat' id='none-{n}'><body>{case}</body></message>"
        ))
        .await;
        user.assert_nothing_before_marker(
            "echo@bot.localhost",
            &format!("a hook answering {case}"),
        )
        .await;
    }
    assert_eq!(
        stack.hook.requests().len(),
        cases.len() * 2,
        "every message was posted"
    );
}
on_both_servers!(answers_without_a_usable_reply_send_nothing_for_messages);

/// With iq forwarded: `kind = "iq"` is a result to the original iq, 204 an empty result at once,
/// invalid JSON an internal-server-error, and 202 without a later answer a timeout.
async fn forwarded_iqs_get_a_result_or_an_error(kind: ServerKind) {
    let Some(stack) = Stack::start(
        kind,
        |request: &Request| match request.json["id"].as_str() {
            Some("iq-kind") => Reply::json(json!({ "kind": "iq" })),
            Some("iq-204") => Reply::status(204),
            Some("iq-invalid") => Reply::status(200)
                .content_type("application/json")
                .body("not json"),
            _ => Reply::status(202),
        },
        "stanzas = [\"message\", \"iq\"]\niq_timeout = \"1s\"",
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;
    let me = user.jid.to_string();
    let query = "<query xmlns='urn:example:weather'/>";

    let answer = user.iq("echo@bot.localhost", "get", "iq-kind", query).await;
    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
    assert_eq!(answer.attr("from"), Some("echo@bot.localhost"));
    assert_eq!(answer.attr("to"), Some(me.as_str()));
    let requests = stack.hook.wait_requests(1).await;
    assert_eq!(requests[0].json["kind"], "iq");
    assert_eq!(requests[0].json["type"], "get");

    let answer = user.iq("echo@bot.localhost", "set", "iq-204", query).await;
    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
    assert_eq!(
        answer.children().count(),
        0,
        "an empty result: {}",
        to_xml(&answer)
    );

    let answer = user
        .iq("echo@bot.localhost", "get", "iq-invalid", query)
        .await;
    let error = stanza_error(&answer).unwrap_or_else(|| panic!("an error: {}", to_xml(&answer)));
    assert_eq!(
        error.condition,
        "internal-server-error",
        "{}",
        to_xml(&answer)
    );

    let sent = tokio::time::Instant::now();
    let answer = user.iq("echo@bot.localhost", "get", "iq-202", query).await;
    let error = stanza_error(&answer).unwrap_or_else(|| panic!("an error: {}", to_xml(&answer)));
    assert_eq!(
        (error.type_.as_str(), error.condition.as_str()),
        ("wait", "remote-server-timeout"),
        "{}",
        to_xml(&answer)
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "the timeout answer came after iq_timeout, not at once ({:?})",
        sent.elapsed()
    );
}
on_both_servers!(forwarded_iqs_get_a_result_or_an_error);

/// A stanza of type `error` is never answered, neither with the hook's reply nor with an error
/// for the hook's failure; nor is an iq result.
async fn error_stanzas_are_never_answered(kind: ServerKind) {
    let Some(stack) = Stack::start(
        kind,
        |request: &Request| {
            marker_or(request, |_| match request.json["id"].as_str() {
                Some("err-500") => Reply::status(500),
                _ => Reply::json(json!({ "body": "answer to an error" })),
            })
        },
        // A 500 is bounced at once, as by the module, rather than retried.
        &format!(
            "stanzas = [\"message\", \"iq\"]\n{}",
            crate::harness::BOUNCE_AT_ONCE
        ),
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;
    let error = "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";

    for id in ["err-200", "err-500"] {
        user.send_xml(&format!(
            "<message to='echo@bot.localhost' type='error' id='{id}'><body>bounced</body>{error}</message>"
        ))
        .await;
        user.assert_nothing_before_marker(
            "echo@bot.localhost",
            &format!("a message of type error ({id})"),
        )
        .await;
    }
    user.send_xml("<iq to='echo@bot.localhost' type='result' id='iq-result-1'/>")
        .await;
    user.send_xml(&format!(
        "<iq to='echo@bot.localhost' type='error' id='iq-error-1'>{error}</iq>"
    ))
    .await;
    user.assert_nothing_before_marker("echo@bot.localhost", "an iq result and an iq error")
        .await;
    let answered: Vec<String> = user
        .unconsumed()
        .iter()
        .filter(|e| matches!(e.attr("id"), Some("iq-result-1" | "iq-error-1")))
        .map(to_xml)
        .collect();
    assert!(
        answered.is_empty(),
        "iq result/error were answered: {answered:?}"
    );
}
on_both_servers!(error_stanzas_are_never_answered);
