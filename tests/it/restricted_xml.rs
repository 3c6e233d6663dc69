//! Restricted XML (RFC 6120 §11.1, README, "The XMPP link"): a DTD, a processing instruction, a
//! comment or an entity reference other than the five predefined ones ends the stream cleanly (a
//! stream error, then the close) and the bridge reconnects; nothing of it reaches the hook, and no
//! entity is ever expanded.

use futures::future::join_all;

use crate::helpers::*;

const SENDER: &str = "alice@localhost/phone";
const ECHO: &str = "echo@bot.localhost";

#[tokio::test]
async fn restricted_xml_in_the_stream_ends_it_cleanly_and_the_bridge_reconnects() {
    let message = |inner: &str| {
        format!("<message from='{SENDER}' to='{ECHO}' id='refused'><body>x</body>{inner}</message>")
    };
    // RFC 6120 §11.1 names the condition for comments, processing instructions and DTDs; an
    // undeclared entity is also simply not well-formed XML.
    const RESTRICTED: &[&str] = &["restricted-xml"];
    const EITHER: &[&str] = &["restricted-xml", "not-well-formed"];
    let cases = [
        (
            "a comment in a stanza",
            message("<!-- hidden -->"),
            RESTRICTED,
        ),
        (
            "a comment between stanzas",
            "<!-- between -->".to_owned(),
            RESTRICTED,
        ),
        (
            "a processing instruction between stanzas",
            "<?xml-stylesheet href='x'?>".to_owned(),
            RESTRICTED,
        ),
        (
            "a processing instruction in a stanza",
            message("<?php echo 1; ?>"),
            RESTRICTED,
        ),
        (
            "an undeclared entity",
            message("<x xmlns='urn:example'>&boom;</x>"),
            EITHER,
        ),
        (
            "a DOCTYPE inside the stream",
            "<!DOCTYPE message [<!ENTITY boom 'boom'>]>".to_owned(),
            RESTRICTED,
        ),
    ];
    let endings = join_all(cases.iter().map(|(_, input, _)| async move {
        let mut stack = Stack::echo().await;
        stack.conn.send(input).await;
        // A message that would reach the hook, were the stream still read.
        stack
            .conn
            .send(&chat(SENDER, ECHO, "refused-too", "after the refused XML"))
            .await;
        let ending = stack.conn.ended().await;

        let mut conn = stack.server.accept().await;
        conn.send(&chat(SENDER, ECHO, "after", "hello again")).await;
        assert_echo(&conn.with_id("after").await, "hello again");
        let requests = stack.hook.requests();
        assert!(
            requests.iter().all(|r| r.field("id") == Some("after")),
            "nothing read after the restricted XML may reach the hook: {:?}",
            requests
                .iter()
                .map(|r| r.json.to_string())
                .collect::<Vec<_>>()
        );
        ending
    }))
    .await;
    let mut wrong = Vec::new();
    for ((what, _, expected), ending) in cases.iter().zip(endings) {
        let condition = ending.stream_error.as_deref();
        if !condition.is_some_and(|c| expected.contains(&c)) {
            wrong.push(format!("{what}: expected {expected:?}, got {condition:?}"));
        }
        assert!(
            ending.close_tag,
            "{what}: the stream must be closed (</stream:stream>) after the stream error"
        );
    }
    assert!(
        wrong.is_empty(),
        "wrong stream error conditions:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_doctype_in_the_servers_header_is_refused_before_the_handshake() {
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let _bridge = BridgeConfig::new(&server, &hook.url()).spawn();

    let mut conn = server.accept_raw().await;
    conn.read_stream_header().await;
    // The classic entity expansion bomb, in front of an otherwise valid header.
    let mut dtd = String::from("<!DOCTYPE stream:stream [<!ENTITY lol0 'lol'>");
    for i in 1..10 {
        let prev = format!("&lol{};", i - 1);
        dtd.push_str(&format!("<!ENTITY lol{i} '{}'>", prev.repeat(10)));
    }
    dtd.push_str("]>");
    conn.send(&format!(
        "<?xml version='1.0'?>{dtd}<stream:stream xmlns:stream='{NS_STREAMS}' xmlns='{NS_COMPONENT}' from='&lol9;' id='{}'>",
        conn.stream_id
    ))
    .await;
    assert!(
        conn.closes_within(WAIT).await,
        "the bridge must drop a stream that starts with a DTD"
    );
    assert!(
        !conn.output().contains("<handshake"),
        "the bridge must not authenticate on a stream with a DTD: {}",
        conn.output()
    );

    let mut conn = server.accept().await;
    conn.send(&chat(SENDER, ECHO, "after", "clean stream"))
        .await;
    assert_echo(&conn.with_id("after").await, "clean stream");
    assert!(
        bridge_memory_is_small(&_bridge),
        "no entity may have been expanded"
    );
}

fn bridge_memory_is_small(bridge: &Bridge) -> bool {
    bridge.memory().peak_kib < 64 * 1024
}
