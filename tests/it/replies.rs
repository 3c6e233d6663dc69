//! How the webhook's response becomes the reply (README, "How the response becomes the reply",
//! rules 1 to 4): error stanzas are never answered; JSON bodies (any JSON media type) build a reply
//! with the documented defaults, or carry a whole `stanza`; `application/xmpp+xml`; other 2xx; and
//! the iq cases (`kind = "iq"`, 204, 202 then `iq_timeout`, unusable bodies).

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";

fn json_as(status: u16, content_type: &str, body: &str) -> Reply {
    Reply::status(status).content_type(content_type).body(body)
}

async fn stack(replies: Vec<(&str, Reply)>) -> Stack {
    Stack::start(by_id(replies), |c| {
        c.key("stanzas = [\"message\", \"presence\", \"iq\"]")
            .key("iq_timeout = \"1s\"")
            // These tests are about the reply rules: a 5xx is bounced at once, as the module does.
            .key("retry_for = \"0s\"")
    })
    .await
}

#[tokio::test]
async fn a_json_body_builds_a_message_with_the_documented_defaults() {
    let mut stack = stack(vec![
        ("chat", Reply::json(json!({ "body": "r-chat" }))),
        ("normal", Reply::json(json!({ "body": "r-normal" }))),
        (
            "kind",
            Reply::json(json!({ "kind": "message", "body": "r-kind" })),
        ),
        (
            "explicit",
            Reply::json(json!({
                "to": "carol@localhost", "from": "alias@bot.localhost",
                "type": "headline", "id": "given", "body": "r-explicit"
            })),
        ),
        ("group", Reply::json(json!({ "body": "r-group" }))),
    ])
    .await;

    let sender = "alice@localhost/phone";
    stack.conn.send(&chat(sender, ECHO, "chat", "x")).await;
    let reply = stack.conn.with_id("chat").await;
    assert!(reply.is("message", NS_COMPONENT), "{}", to_xml(&reply));
    assert_eq!(
        reply.attr("to"),
        Some(sender),
        "to defaults to the original from"
    );
    assert_eq!(
        reply.attr("from"),
        Some(ECHO),
        "from defaults to the original to"
    );
    assert_eq!(reply.attr("type"), Some("chat"));
    assert_eq!(body_of(&reply).as_deref(), Some("r-chat"));

    stack
        .conn
        .send(&format!(
            "<message from='{sender}' to='{ECHO}' id='normal'><body>x</body></message>"
        ))
        .await;
    let reply = stack.conn.with_id("normal").await;
    assert_eq!(
        reply.attr("type"),
        Some("chat"),
        "a reply to a normal message is chat"
    );
    assert_eq!(body_of(&reply).as_deref(), Some("r-normal"));

    stack.conn.send(&chat(sender, ECHO, "kind", "x")).await;
    assert_eq!(
        body_of(&stack.conn.with_id("kind").await).as_deref(),
        Some("r-kind")
    );

    stack.conn.send(&chat(sender, ECHO, "explicit", "x")).await;
    let reply = stack.conn.with_id("given").await;
    assert_eq!(reply.attr("to"), Some("carol@localhost"));
    assert_eq!(reply.attr("from"), Some("alias@bot.localhost"));
    assert_eq!(reply.attr("type"), Some("headline"));
    assert_eq!(body_of(&reply).as_deref(), Some("r-explicit"));

    stack
        .conn
        .send(&format!(
            "<message from='room@conference.localhost/nick' to='{ECHO}' id='group' type='groupchat'><body>x</body></message>"
        ))
        .await;
    let reply = stack.conn.with_id("group").await;
    assert_eq!(
        reply.attr("to"),
        Some("room@conference.localhost"),
        "a groupchat reply goes to the room's bare JID"
    );
    assert_eq!(reply.attr("type"), Some("groupchat"));
    assert_eq!(body_of(&reply).as_deref(), Some("r-group"));
}

#[tokio::test]
async fn every_json_media_type_counts_and_others_do_not() {
    let body = r#"{"body":"from json"}"#;
    let json_types = [
        ("t1", 200, "application/json"),
        ("t2", 201, "application/json"),
        ("t3", 200, "application/json; charset=utf-8"),
        ("t4", 201, "Application/JSON;Charset=UTF-8"),
        ("t5", 200, "application/foo+json"),
        ("t6", 200, "application/vnd.bot.v1+json; charset=utf-8"),
    ];
    let not_json = [
        ("n1", 200, "text/html"),
        ("n2", 200, "text/plain"),
        ("n3", 200, ""),
    ];
    let mut replies = Vec::new();
    for (id, status, ct) in json_types.iter().chain(not_json.iter()) {
        let reply = if ct.is_empty() {
            Reply::status(*status).body(body)
        } else {
            json_as(*status, ct, body)
        };
        replies.push((*id, reply));
    }
    let mut stack = stack(replies).await;
    for (id, _, ct) in json_types {
        let sender = format!("{id}@localhost/r");
        stack.conn.send(&chat(&sender, ECHO, id, "x")).await;
        let reply = stack.conn.with_id(id).await;
        assert_eq!(
            body_of(&reply).as_deref(),
            Some("from json"),
            "{ct} is a JSON media type: {}",
            to_xml(&reply)
        );
    }
    for (id, _, ct) in not_json {
        let sender = format!("{id}@localhost/r");
        assert_no_answer(
            &mut stack.conn,
            &sender,
            ECHO,
            &chat(&sender, ECHO, id, "x"),
            &format!("a 200 with {ct:?} is accepted without a reply"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_stanza_field_is_sent_with_missing_addresses_filled_and_foreign_senders_refused() {
    let mut stack = stack(vec![
        (
            "s1",
            Reply::json(json!({ "stanza": "<message type='headline'><body>s1</body></message>" })),
        ),
        (
            "s2",
            Reply::json(json!({
                "stanza": "<message to='carol@localhost' from='alias@bot.localhost' id='s2-out'><body>s2</body></message>"
            })),
        ),
        (
            "s3",
            Reply::json(json!({
                "stanza": "<message from='mallory@evil.example' id='s3-out'><body>s3</body></message>"
            })),
        ),
        (
            "x1",
            Reply::status(200)
                .content_type("application/xmpp+xml")
                .body("<message id='x1-out'><body>x1</body></message>"),
        ),
        (
            "x2",
            Reply::status(200)
                .content_type("application/xmpp+xml")
                .body("<presence from='mallory@evil.example' id='x2-out'/>"),
        ),
    ])
    .await;
    let sender = "alice@localhost/phone";

    stack.conn.send(&chat(sender, ECHO, "s1", "x")).await;
    let reply = stack
        .conn
        .stanza_where("the s1 reply", |e| body_of(e).as_deref() == Some("s1"))
        .await;
    assert_eq!(
        reply.attr("to"),
        Some(sender),
        "missing to is the original from"
    );
    assert_eq!(
        reply.attr("from"),
        Some(ECHO),
        "missing from is the original to"
    );
    assert_eq!(reply.attr("type"), Some("headline"), "sent as given");

    stack.conn.send(&chat(sender, ECHO, "s2", "x")).await;
    let reply = stack.conn.with_id("s2-out").await;
    assert_eq!(reply.attr("to"), Some("carol@localhost"));
    assert_eq!(reply.attr("from"), Some("alias@bot.localhost"));

    assert_no_answer(
        &mut stack.conn,
        sender,
        ECHO,
        &chat(sender, ECHO, "s3", "x"),
        "a stanza field from outside the domain is refused",
    )
    .await;
    assert!(!stack.conn.output().contains("evil.example"));

    stack.conn.send(&chat(sender, ECHO, "x1", "x")).await;
    let reply = stack.conn.with_id("x1-out").await;
    assert_eq!(reply.attr("to"), Some(sender));
    assert_eq!(reply.attr("from"), Some(ECHO));
    assert_eq!(body_of(&reply).as_deref(), Some("x1"));

    assert_no_answer(
        &mut stack.conn,
        sender,
        ECHO,
        &chat(sender, ECHO, "x2", "x"),
        "an application/xmpp+xml stanza from outside the domain is refused",
    )
    .await;
    assert!(!stack.conn.output().contains("evil.example"));
    assert_eq!(stack.server.connections(), 1);
    stack
        .bridge
        .log_line("a warning about the refused sender", |l| {
            l.contains("WARN") && l.contains("evil.example")
        })
        .await;
}

#[tokio::test]
async fn error_stanzas_are_never_answered_whatever_the_hook_says() {
    let says = Reply::json(json!({ "body": "answering an error" }));
    let mut stack = stack(vec![
        ("e1", says.clone()),
        ("e2", Reply::status(500)),
        ("e3", says.clone()),
        ("e4", Reply::json(json!({ "kind": "iq" }))),
        ("e5", says.clone()),
        ("e6", Reply::status(404)),
    ])
    .await;
    let error_child =
        format!("<error type='cancel'><item-not-found xmlns='{NS_STANZAS}'/></error>");
    let cases = [
        (
            "m1@localhost/r",
            format!(
                "<message from='m1@localhost/r' to='{ECHO}' id='e1' type='error'>{error_child}</message>"
            ),
        ),
        (
            "m2@localhost/r",
            format!(
                "<message from='m2@localhost/r' to='{ECHO}' id='e2' type='error'>{error_child}</message>"
            ),
        ),
        (
            "i1@localhost/r",
            format!("<iq from='i1@localhost/r' to='{ECHO}' id='e3' type='result'/>"),
        ),
        (
            "i2@localhost/r",
            format!(
                "<iq from='i2@localhost/r' to='{ECHO}' id='e4' type='error'>{error_child}</iq>"
            ),
        ),
        (
            "p1@localhost/r",
            format!(
                "<presence from='p1@localhost/r' to='{ECHO}' id='e5' type='error'>{error_child}</presence>"
            ),
        ),
        (
            "i3@localhost/r",
            format!(
                "<iq from='i3@localhost/r' to='{ECHO}' id='e6' type='result'><query xmlns='urn:example:q'/></iq>"
            ),
        ),
    ];
    for (sender, stanza) in &cases {
        assert_no_answer(
            &mut stack.conn,
            sender,
            ECHO,
            stanza,
            "error and result stanzas",
        )
        .await;
    }
}

#[tokio::test]
async fn other_2xx_are_accepted_without_a_reply() {
    let mut stack = stack(vec![
        ("a1", Reply::status(202)),
        ("a2", Reply::status(204)),
        (
            "a3",
            Reply::status(202)
                .content_type("application/json")
                .body(r#"{"body":"later"}"#),
        ),
        (
            "a4",
            Reply::status(206)
                .content_type("application/json")
                .body(r#"{"body":"partial"}"#),
        ),
    ])
    .await;
    for id in ["a1", "a2", "a3", "a4"] {
        let sender = format!("{id}@localhost/r");
        assert_no_answer(
            &mut stack.conn,
            &sender,
            ECHO,
            &chat(&sender, ECHO, id, "x"),
            "a 2xx other than 200/201 with a body",
        )
        .await;
    }
}

#[tokio::test]
async fn unusable_json_gets_no_reply_to_a_message_and_a_warning() {
    let mut stack = stack(vec![
        ("u1", json_as(200, "application/json", "")),
        ("u2", json_as(200, "application/json", "{}")),
        ("u3", json_as(200, "application/json", "{\"body\":")),
        (
            "u4",
            json_as(200, "application/json", "{\"unrelated\":true}"),
        ),
        ("u5", json_as(200, "application/json", "[1,2]")),
        ("u6", json_as(200, "application/json", "{}")),
    ])
    .await;
    for id in ["u1", "u2", "u3", "u4", "u5"] {
        let sender = format!("{id}@localhost/r");
        assert_no_answer(
            &mut stack.conn,
            &sender,
            ECHO,
            &chat(&sender, ECHO, id, "x"),
            "an unusable JSON body",
        )
        .await;
    }
    // Presence is not answered either.
    assert_no_answer(
        &mut stack.conn,
        "u6@localhost/r",
        ECHO,
        &format!("<presence from='u6@localhost/r' to='{ECHO}' id='u6'/>"),
        "an unusable JSON body to a presence",
    )
    .await;
    let url = stack.hook.url();
    stack
        .bridge
        .log_line("a warning with the hook's URL and status", |l| {
            l.contains("WARN") && l.contains(&url) && l.contains("200")
        })
        .await;
}

#[tokio::test]
async fn unknown_kind_is_a_hook_error() {
    let mut stack = stack(vec![(
        "k1",
        Reply::json(json!({ "kind": "telegram", "body": "x" })),
    )])
    .await;
    let sender = "alice@localhost/phone";
    stack.conn.send(&chat(sender, ECHO, "k1", "x")).await;
    let reply = stack.conn.with_id("k1").await;
    let error = assert_error_reply(&reply, sender, ECHO, "k1");
    assert_eq!(
        error.condition,
        "internal-server-error",
        "{}",
        to_xml(&reply)
    );
    assert_eq!(error.type_, "cancel", "{}", to_xml(&reply));
}

#[tokio::test]
async fn iq_replies_results_and_errors() {
    let mut stack = stack(vec![
        ("q1", Reply::json(json!({ "kind": "iq" }))),
        ("q2", Reply::status(204)),
        ("q3", json_as(200, "application/json", "")),
        ("q4", json_as(200, "application/json", "{}")),
        ("q5", json_as(200, "application/json", "not json")),
    ])
    .await;
    let query = "<query xmlns='urn:example:q'/>";

    let sender = "q1@localhost/r";
    stack.conn.send(&iq("get", sender, ECHO, "q1", query)).await;
    let result = stack.conn.with_id("q1").await;
    assert!(result.is("iq", NS_COMPONENT));
    assert_eq!(result.attr("type"), Some("result"), "{}", to_xml(&result));
    assert_eq!(result.attr("to"), Some(sender));
    assert_eq!(result.attr("from"), Some(ECHO));

    let sender = "q2@localhost/r";
    stack.conn.send(&iq("set", sender, ECHO, "q2", query)).await;
    let result = stack.conn.with_id("q2").await;
    assert_eq!(
        result.attr("type"),
        Some("result"),
        "204 answers an empty result: {}",
        to_xml(&result)
    );
    assert_eq!(
        result.children().count(),
        0,
        "an empty result: {}",
        to_xml(&result)
    );
    assert_eq!(result.attr("to"), Some(sender));
    assert_eq!(result.attr("from"), Some(ECHO));

    for id in ["q3", "q4", "q5"] {
        let sender = format!("{id}@localhost/r");
        stack.conn.send(&iq("get", &sender, ECHO, id, query)).await;
        let reply = stack.conn.with_id(id).await;
        let error = assert_error_reply(&reply, &sender, ECHO, id);
        assert_eq!(
            error.condition,
            "internal-server-error",
            "an unusable body answers an iq with internal-server-error: {}",
            to_xml(&reply)
        );
    }
}

#[tokio::test]
async fn an_iq_accepted_with_202_times_out_after_iq_timeout() {
    let mut stack = stack(vec![("late", Reply::status(202))]).await;
    let sender = "alice@localhost/phone";
    let sent = Instant::now();
    stack
        .conn
        .send(&iq(
            "get",
            sender,
            ECHO,
            "late",
            "<query xmlns='urn:example:q'/>",
        ))
        .await;
    let reply = stack.conn.with_id("late").await;
    let waited = sent.elapsed();
    let error = assert_error_reply(&reply, sender, ECHO, "late");
    assert_eq!(error.type_, "wait", "{}", to_xml(&reply));
    assert_eq!(
        error.condition,
        "remote-server-timeout",
        "{}",
        to_xml(&reply)
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "the timeout error comes after iq_timeout (1s), came after {waited:?}"
    );
}
