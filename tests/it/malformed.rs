//! Bad input on the stream (README, "The XMPP link"): XML that is not well-formed ends the stream,
//! with a stream error, and the bridge reconnects; a stanza that is only odd (unknown type, missing
//! payload, an element that is not a stanza) is answered or dropped with a log line and the stream
//! goes on.

use futures::future::join_all;

use crate::helpers::*;

const SENDER: &str = "alice@localhost/phone";
const ECHO: &str = "echo@bot.localhost";

/// Sends `input` on a fresh link; returns how the bridge ended that link, after checking that
/// it reconnected, that the new link works and that nothing of `input` reached the hook.
async fn dropped_then_restored(input: &[u8]) -> Ending {
    let mut stack = Stack::echo().await;
    stack.conn.send_bytes(input).await;
    let ending = stack.conn.ended().await;

    let mut conn = stack.server.accept().await;
    conn.send(&chat(SENDER, ECHO, "after", "still there?"))
        .await;
    assert_echo(&conn.with_id("after").await, "still there?");
    let requests = stack.hook.requests();
    assert_eq!(
        requests.len(),
        1,
        "only the message after the reconnect may reach the hook, got {:?}",
        requests
            .iter()
            .map(|r| r.json.to_string())
            .collect::<Vec<_>>()
    );
    ending
}

#[tokio::test]
async fn xml_that_is_not_well_formed_drops_the_stream_and_the_bridge_reconnects() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unbalanced tags",
            format!("<message from='{SENDER}' to='{ECHO}' id='bad'><body>x</message>").into_bytes(),
        ),
        (
            "a raw '<' in text",
            format!("<message from='{SENDER}' to='{ECHO}' id='bad'><body>1 < 2</body></message>")
                .into_bytes(),
        ),
        (
            "an unquoted attribute",
            format!("<message from={SENDER} to='{ECHO}' id='bad'><body>x</body></message>")
                .into_bytes(),
        ),
        (
            "an undeclared prefix",
            format!("<message from='{SENDER}' to='{ECHO}' id='bad'><x:body>x</x:body></message>")
                .into_bytes(),
        ),
        (
            "invalid UTF-8",
            [
                format!("<message from='{SENDER}' to='{ECHO}' id='bad'><body>").as_bytes(),
                b"\xff\xfe\xfd",
                b"</body></message>",
            ]
            .concat(),
        ),
        (
            "a NUL character",
            format!("<message from='{SENDER}' to='{ECHO}' id='bad'><body>a\u{0}b</body></message>")
                .into_bytes(),
        ),
    ];
    let endings = join_all(cases.iter().map(|(_, input)| dropped_then_restored(input))).await;
    for ((what, _), ending) in cases.iter().zip(endings) {
        let condition = ending.stream_error.as_deref();
        assert!(
            matches!(condition, Some("not-well-formed" | "bad-format")),
            "{what}: expected a not-well-formed stream error before the close, got {condition:?}"
        );
        assert!(
            ending.close_tag,
            "{what}: the bridge must close the stream (</stream:stream>) after the stream error"
        );
    }
}

#[tokio::test]
async fn odd_stanzas_are_answered_or_dropped_and_the_stream_goes_on() {
    let mut stack = Stack::start(Reply::echo, |c| c.key("stanzas = [\"message\"]")).await;
    let odd = [
        // An unknown message type.
        format!(
            "<message from='{SENDER}' to='{ECHO}' id='odd1' type='bogus'><body>x</body></message>"
        ),
        // A message without any payload.
        format!("<message from='{SENDER}' to='{ECHO}' id='odd2'/>"),
        // A message without `from`: nobody to answer.
        format!("<message to='{ECHO}' id='odd3'><body>x</body></message>"),
        // A top-level element that is not a stanza.
        "<frobnicate xmlns='urn:example:odd'><x/></frobnicate>".to_owned(),
        // An element of the stream namespace that a server never sends after the handshake.
        "<handshake/>".to_owned(),
        // An iq get without a payload, and an iq with an unknown type.
        format!("<iq from='{SENDER}' to='{ECHO}' id='odd4' type='get'/>"),
        format!(
            "<iq from='{SENDER}' to='{ECHO}' id='odd5' type='bogus'><query xmlns='urn:example:q'/></iq>"
        ),
        // Presence with an unknown type.
        format!("<presence from='{SENDER}' to='{ECHO}' id='odd6' type='bogus'/>"),
    ];
    for stanza in &odd {
        stack.conn.send(stanza).await;
    }
    stack.conn.send(&chat(SENDER, ECHO, "good", "fine")).await;
    assert_echo(&stack.conn.with_id("good").await, "fine");

    assert_eq!(
        stack.server.connections(),
        1,
        "odd stanzas must not end the stream"
    );
    assert!(
        !stack.conn.is_closed(),
        "odd stanzas must not close the connection"
    );
    assert!(
        !stack.conn.output().contains("stream:error"),
        "odd stanzas must not cause a stream error: {}",
        stack.conn.output()
    );
    stack
        .bridge
        .log_line("a warning about the element that is not a stanza", |l| {
            l.contains("WARN") && l.contains("frobnicate")
        })
        .await;
    stack
        .bridge
        .log_line("a warning about the message without `from`", |l| {
            l.contains("WARN") && l.contains("odd3")
        })
        .await;
}
