//! HTTP failures become stanza errors (README, "How the response becomes the reply", rule 5): every
//! row of the table, the `by` attribute, swapped addresses and the same id; a short `text/plain`
//! body as the text; a refused connection, a timeout, and redirects that are never followed.

use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";
/// These tests are about the table: the error comes at once, as with the module, instead of
/// after the retries (which `retries.rs` covers).
const BOUNCE_AT_ONCE: &str = "retry_for = \"0s\"";

/// Status, error type, condition, text.
const TABLE: &[(u16, &str, &str, Option<&str>)] = &[
    (300, "cancel", "service-unavailable", None),
    (301, "cancel", "service-unavailable", None),
    (302, "cancel", "service-unavailable", None),
    (303, "cancel", "service-unavailable", None),
    (307, "cancel", "service-unavailable", None),
    (308, "cancel", "service-unavailable", None),
    (400, "modify", "bad-request", None),
    (411, "modify", "bad-request", None),
    (416, "modify", "bad-request", None),
    (422, "modify", "bad-request", None),
    (401, "auth", "not-authorized", None),
    (402, "auth", "forbidden", Some("Payment required")),
    (403, "auth", "forbidden", None),
    (451, "auth", "forbidden", None),
    (404, "cancel", "item-not-found", None),
    (405, "cancel", "not-allowed", None),
    (406, "modify", "not-acceptable", None),
    (408, "wait", "remote-server-timeout", None),
    (409, "cancel", "conflict", None),
    (412, "cancel", "conflict", None),
    (410, "cancel", "gone", None),
    (413, "modify", "resource-constraint", None),
    (414, "modify", "resource-constraint", None),
    (431, "modify", "resource-constraint", None),
    (415, "cancel", "feature-not-implemented", None),
    (
        423,
        "wait",
        "resource-constraint",
        Some("Too many requests"),
    ),
    (
        429,
        "wait",
        "resource-constraint",
        Some("Too many requests"),
    ),
    (500, "cancel", "internal-server-error", None),
    (501, "cancel", "feature-not-implemented", None),
    (502, "cancel", "remote-server-timeout", Some("Bad gateway")),
    (
        503,
        "wait",
        "remote-server-timeout",
        Some("Service temporarily unavailable"),
    ),
    (
        504,
        "wait",
        "remote-server-timeout",
        Some("Gateway timeout"),
    ),
    // "other"
    (418, "cancel", "service-unavailable", None),
    (420, "cancel", "service-unavailable", None),
    (499, "cancel", "service-unavailable", None),
    (505, "cancel", "service-unavailable", None),
    (507, "cancel", "service-unavailable", None),
    (599, "cancel", "service-unavailable", None),
];

#[tokio::test]
async fn every_row_of_the_table_becomes_its_stanza_error() {
    let hook_for_redirects = Hook::echo().await;
    let elsewhere = hook_for_redirects.url_of("/elsewhere");
    let replies: Vec<(String, Reply)> = TABLE
        .iter()
        .map(|(status, ..)| {
            // An HTML error page, as frameworks send: it must not become the error text.
            let mut reply = Reply::status(*status)
                .content_type("text/html")
                .body("<h1>error page</h1>");
            if (300..400).contains(status) {
                reply = reply.header("location", &elsewhere);
            }
            (format!("s{status}"), reply)
        })
        .collect();
    let mut stack = Stack::start(
        by_id(replies.iter().map(|(id, r)| (id.as_str(), r.clone()))),
        |c| c.key("stanzas = [\"message\", \"iq\"]").key(BOUNCE_AT_ONCE),
    )
    .await;

    // Each status from its own sender: they run concurrently.
    for (status, ..) in TABLE {
        let sender = format!("s{status}@localhost/r");
        stack
            .conn
            .send(&chat(&sender, ECHO, &format!("s{status}"), "x"))
            .await;
    }
    let mut wrong = Vec::new();
    for (status, type_, condition, text) in TABLE {
        let sender = format!("s{status}@localhost/r");
        let id = format!("s{status}");
        let reply = stack.conn.with_id(&id).await;
        let error = assert_error_reply(&reply, &sender, ECHO, &id);
        let expected = (
            type_.to_string(),
            condition.to_string(),
            text.map(str::to_owned),
        );
        let got = (
            error.type_.clone(),
            error.condition.clone(),
            error.text.clone(),
        );
        if got != expected {
            wrong.push(format!("HTTP {status}: expected {expected:?}, got {got:?}"));
        }
        assert!(reply.is("message", NS_COMPONENT));
    }
    assert!(
        wrong.is_empty(),
        "rows that differ from the table:\n{}",
        wrong.join("\n")
    );
    assert!(
        hook_for_redirects.requests().is_empty(),
        "redirects must never be followed"
    );
    assert_eq!(
        stack.hook.requests().len(),
        TABLE.len(),
        "one request per stanza, none repeated"
    );

    // An iq gets its error as an iq.
    let sender = "iq@localhost/r";
    stack
        .conn
        .send(&iq(
            "get",
            sender,
            ECHO,
            "s404",
            "<query xmlns='urn:example:q'/>",
        ))
        .await;
    let reply = stack
        .conn
        .stanza_where("the iq's error", |e| {
            e.is("iq", NS_COMPONENT) && e.attr("id") == Some("s404")
        })
        .await;
    let error = assert_error_reply(&reply, sender, ECHO, "s404");
    assert_eq!(error.condition, "item-not-found");
}

#[tokio::test]
async fn a_short_text_plain_body_becomes_the_error_text() {
    let long = "y".repeat(300);
    let mut stack = Stack::start(
        by_id([
            (
                "t1",
                Reply::status(503)
                    .content_type("text/plain")
                    .body("Bot is asleep"),
            ),
            (
                "t2",
                Reply::status(429)
                    .content_type("text/plain; charset=utf-8")
                    .body("Slow down"),
            ),
            (
                "t3",
                Reply::status(404)
                    .content_type("text/plain")
                    .body(long.clone()),
            ),
            (
                "t4",
                Reply::status(402)
                    .content_type("text/plain")
                    .body(long.clone()),
            ),
            (
                "t5",
                Reply::status(500)
                    .content_type("text/html")
                    .body("<p>oops</p>"),
            ),
            (
                "t6",
                Reply::status(400)
                    .content_type("text/plain")
                    .body("x".repeat(256)),
            ),
        ]),
        |c| c.key(BOUNCE_AT_ONCE),
    )
    .await;
    let cases: [(&str, Option<String>); 6] = [
        ("t1", Some("Bot is asleep".to_owned())),
        ("t2", Some("Slow down".to_owned())),
        ("t3", None),
        ("t4", Some("Payment required".to_owned())),
        ("t5", None),
        ("t6", Some("x".repeat(256))),
    ];
    for (id, _) in &cases {
        let sender = format!("{id}@localhost/r");
        stack.conn.send(&chat(&sender, ECHO, id, "x")).await;
    }
    for (id, text) in cases {
        let sender = format!("{id}@localhost/r");
        let reply = stack.conn.with_id(id).await;
        let error = assert_error_reply(&reply, &sender, ECHO, id);
        assert_eq!(error.text, text, "{id}: {}", to_xml(&reply));
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_failure() {
    // Bound but not listening: connections are refused, and no other test can take the port.
    let closed = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    closed
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind a port");
    let url = format!("http://{}/hook", closed.local_addr().expect("address"));
    let mut server = XmppServer::start().await;
    let _bridge = BridgeConfig::new(&server, &url).key(BOUNCE_AT_ONCE).spawn();
    let mut conn = server.accept().await;
    let sender = "alice@localhost/phone";
    conn.send(&chat(sender, ECHO, "c1", "anyone?")).await;
    let reply = conn.with_id("c1").await;
    let error = assert_error_reply(&reply, sender, ECHO, "c1");
    assert_eq!(
        (
            error.type_.as_str(),
            error.condition.as_str(),
            error.text.as_deref()
        ),
        (
            "cancel",
            "remote-server-timeout",
            Some("Connection failure")
        ),
        "{}",
        to_xml(&reply)
    );
}

#[tokio::test]
async fn a_hook_slower_than_the_timeout_is_a_timeout() {
    let mut stack = Stack::start(
        |r: &Request| Reply::echo(r).delay(Duration::from_secs(5)),
        |c| {
            c.key(BOUNCE_AT_ONCE)
                .table("[webhook]\ntimeout = \"500ms\"")
        },
    )
    .await;
    let sender = "alice@localhost/phone";
    let sent = Instant::now();
    stack.conn.send(&chat(sender, ECHO, "slow", "hurry")).await;
    let reply = stack.conn.with_id("slow").await;
    let waited = sent.elapsed();
    let error = assert_error_reply(&reply, sender, ECHO, "slow");
    assert_eq!(
        (
            error.type_.as_str(),
            error.condition.as_str(),
            error.text.as_deref()
        ),
        ("wait", "remote-server-timeout", Some("Timeout")),
        "{}",
        to_xml(&reply)
    );
    assert!(
        waited < Duration::from_secs(3),
        "the error must come at the configured timeout, not when the hook finishes ({waited:?})"
    );
}

#[tokio::test]
async fn errors_go_back_for_every_addressing_form() {
    join_all(
        [
            "bot.localhost",
            "echo@bot.localhost",
            "echo@bot.localhost/desk",
        ]
        .map(|to| async move {
            let mut stack =
                Stack::start(|_: &Request| Reply::status(500), |c| c.key(BOUNCE_AT_ONCE)).await;
            let sender = "alice@localhost/phone";
            stack.conn.send(&chat(sender, to, "f1", "x")).await;
            let reply = stack.conn.with_id("f1").await;
            let error = assert_error_reply(&reply, sender, to, "f1");
            assert_eq!(error.condition, "internal-server-error");
        }),
    )
    .await;
}
