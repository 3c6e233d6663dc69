//! Nothing the server would close the stream over reaches the socket (README, "The XMPP link"): a
//! hook reply with a `from` outside the component's domain, an invalid `to`, or a character XML 1.0
//! forbids is refused (and logged) before it is written; the link stays up and the next message
//! works.

use serde_json::json;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";

/// Whether the bridge's output carries U+0001 in any form.
fn carries_control_character(output: &[u8]) -> bool {
    let text = String::from_utf8_lossy(output).to_lowercase();
    output.contains(&0x01)
        || text.contains("&#1;")
        || text.contains("&#x1;")
        || text.contains("&#x01;")
}

#[tokio::test]
async fn replies_the_server_would_refuse_are_never_written() {
    let mut stack = Stack::start(
        by_id([
            ("f1", Reply::json(json!({ "from": "bot@evil.example", "body": "nope" }))),
            ("f2", Reply::json(json!({ "from": "x@sub.bot.localhost", "body": "nope" }))),
            ("f3", Reply::json(json!({ "from": "localhost", "body": "nope" }))),
            (
                "f4",
                Reply::json(json!({
                    "stanza": "<message from='evil.example' to='alice@localhost'><body>nope</body></message>"
                })),
            ),
            ("f5", Reply::json(json!({ "to": "not a@valid@jid", "body": "nope" }))),
            (
                "f6",
                Reply::json(json!({ "stanza": "<message to='alice@localhost'><body>a&#1;b</body></message>" })),
            ),
            (
                "f7",
                Reply::status(200)
                    .content_type("application/xmpp+xml")
                    .body("<message><body>a&#x1;b</body></message>"),
            ),
        ]),
        |c| c,
    )
    .await;
    for id in ["f1", "f2", "f3", "f4", "f5", "f6", "f7"] {
        let sender = format!("{id}@localhost/r");
        let sent = sent_before_marker(
            &mut stack.conn,
            &sender,
            ECHO,
            &chat(&sender, ECHO, id, "x"),
        )
        .await;
        assert!(
            sent.iter().all(|s| s.attr("type") == Some("error")),
            "{id}: the hook's reply must not be written: {:?}",
            sent.iter().map(to_xml).collect::<Vec<_>>()
        );
    }
    let output = stack.conn.output();
    assert!(
        !output.contains("nope"),
        "a refused reply reached the socket:\n{output}"
    );
    assert!(!output.contains("evil.example"));
    assert!(!carries_control_character(&stack.conn.output_bytes()));
    assert!(!stack.conn.is_closed());
    assert_eq!(stack.server.connections(), 1);
    assert!(!output.contains("stream:error"));
    let reply = stack
        .round_trip("alice@localhost/phone", "next", "still here")
        .await;
    assert_echo(&reply, "still here");
    stack
        .bridge
        .log_line("why the foreign reply was refused", |l| {
            l.contains("WARN") && l.contains("evil.example")
        })
        .await;
}

#[tokio::test]
async fn a_control_character_from_the_hook_never_reaches_the_socket() {
    let mut stack = Stack::start(
        by_id([
            ("c1", Reply::json(json!({ "body": "a\u{1}b" }))),
            (
                "c2",
                Reply::json(json!({ "body": "ok", "subject": "\u{1}" })),
            ),
            ("c3", Reply::json(json!({ "body": "ok", "id": "i\u{1}d" }))),
        ]),
        |c| c,
    )
    .await;
    for id in ["c1", "c2", "c3"] {
        let sender = format!("{id}@localhost/r");
        // Whatever the bridge does with it (drop it, or drop the character), the next message
        // of the conversation gets its answer and the link stays up.
        sent_before_marker(
            &mut stack.conn,
            &sender,
            ECHO,
            &chat(&sender, ECHO, id, "x"),
        )
        .await;
    }
    assert!(
        !carries_control_character(&stack.conn.output_bytes()),
        "U+0001 reached the socket:\n{}",
        stack.conn.output()
    );
    assert!(!stack.conn.is_closed());
    assert_eq!(stack.server.connections(), 1);
}
