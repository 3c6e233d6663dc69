//! Reading is bounded (README, "The XMPP link"): a stanza over `max_stanza_bytes` or deeper than
//! `max_depth` ends the stream with a stream error and the bridge reconnects, without its memory
//! growing with the input.

use std::time::Duration;

use crate::helpers::*;

const SENDER: &str = "alice@localhost/phone";
const ECHO: &str = "echo@bot.localhost";
/// The bridge's peak resident memory must stay under this, whatever the peer sends.
const PEAK_LIMIT_KIB: u64 = 64 * 1024;

/// Writes `chunks` until the bridge stops taking them (it closed, or stopped reading).
async fn write_until_refused(conn: &mut Conn, chunks: impl Iterator<Item = Vec<u8>>) {
    for chunk in chunks {
        match conn.send_within(&chunk, Duration::from_secs(2)).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

/// Checks the end of the link, the reconnect, the hook and the peak memory.
async fn refused_and_bounded(stack: &mut Stack, what: &str) {
    let ending = stack.conn.ended().await;
    if let Some(condition) = &ending.stream_error {
        assert_eq!(
            condition, "policy-violation",
            "{what}: a limit is a policy violation (RFC 6120 §4.9.3.14)"
        );
    }
    let mut conn = stack.server.accept().await;
    conn.send(&chat(SENDER, ECHO, "after", "small one")).await;
    assert_echo(&conn.with_id("after").await, "small one");
    assert!(
        stack
            .hook
            .requests()
            .iter()
            .all(|r| r.field("id") == Some("after")),
        "{what}: the oversized stanza must not reach the hook"
    );
    let memory = stack.bridge.memory();
    assert!(
        memory.peak_kib < PEAK_LIMIT_KIB,
        "{what}: the bridge's peak memory reached {} KiB (limit {PEAK_LIMIT_KIB} KiB)",
        memory.peak_kib
    );
    assert!(
        ending.stream_error.is_some(),
        "{what}: the bridge closed the link without a stream error"
    );
}

#[tokio::test]
async fn a_10_mib_stanza_ends_the_stream_and_memory_stays_bounded() {
    let mut stack = Stack::echo().await;
    let open = format!("<message from='{SENDER}' to='{ECHO}' id='huge'><body>");
    let filler = vec![b'a'; 64 * 1024];
    let total = 10 * 1024 * 1024;
    let chunks = std::iter::once(open.into_bytes())
        .chain(std::iter::repeat_n(filler, total / (64 * 1024)))
        .chain(std::iter::once(b"</body></message>".to_vec()));
    write_until_refused(&mut stack.conn, chunks).await;
    refused_and_bounded(&mut stack, "a 10 MiB stanza").await;
}

#[tokio::test]
async fn a_10_mib_attribute_ends_the_stream_and_memory_stays_bounded() {
    let mut stack = Stack::echo().await;
    let open = format!("<message from='{SENDER}' to='{ECHO}' id='huge' x='");
    let filler = vec![b'a'; 64 * 1024];
    let total = 10 * 1024 * 1024;
    let chunks = std::iter::once(open.into_bytes())
        .chain(std::iter::repeat_n(filler, total / (64 * 1024)))
        .chain(std::iter::once(b"'/>".to_vec()));
    write_until_refused(&mut stack.conn, chunks).await;
    refused_and_bounded(&mut stack, "a 10 MiB attribute").await;
}

#[tokio::test]
async fn a_100k_deep_stanza_ends_the_stream_and_memory_stays_bounded() {
    // Room for the bytes, so that the depth is what gives.
    let mut stack = Stack::start(Reply::echo, |c| c.key("max_stanza_bytes = 4194304")).await;
    let depth = 100_000;
    let mut xml = format!("<message from='{SENDER}' to='{ECHO}' id='deep'>").into_bytes();
    xml.extend(b"<a>".repeat(depth));
    xml.extend(b"</a>".repeat(depth));
    xml.extend(b"</message>");
    let chunks: Vec<Vec<u8>> = xml.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    write_until_refused(&mut stack.conn, chunks.into_iter()).await;
    refused_and_bounded(&mut stack, "100k nested elements").await;
}

#[tokio::test]
async fn stanzas_within_the_limits_pass() {
    // The counterpart of the tests above: a configured limit is a limit, not a guess.
    let mut stack = Stack::start(Reply::echo, |c| {
        c.key("max_stanza_bytes = 65536").key("max_depth = 8")
    })
    .await;
    let body = "b".repeat(60 * 1024);
    let reply = stack.round_trip(SENDER, "big-ok", &body).await;
    assert_echo(&reply, &body);
    let nested = format!(
        "<message from='{SENDER}' to='{ECHO}' id='deep-ok' type='chat'><body>n</body><x xmlns='urn:example'><a><b><c><d>e</d></c></b></a></x></message>"
    );
    stack.conn.send(&nested).await;
    assert_echo(&stack.conn.with_id("deep-ok").await, "n");
    assert_eq!(stack.server.connections(), 1);

    let too_big = "c".repeat(70 * 1024);
    stack
        .conn
        .send(&chat(SENDER, ECHO, "too-big", &too_big))
        .await;
    let ending = stack.conn.ended().await;
    assert_eq!(ending.stream_error.as_deref(), Some("policy-violation"));
}

#[tokio::test]
async fn a_long_attribute_within_max_stanza_bytes_passes() {
    // 100 KiB in one attribute value, in a stanza well under the default 256 KiB.
    let mut stack = Stack::echo().await;
    let value = "v".repeat(100 * 1024);
    stack
        .conn
        .send(&format!(
            "<message from='{SENDER}' to='{ECHO}' id='long-attr' type='chat'><body>attr</body><x xmlns='urn:example' v='{value}'/></message>"
        ))
        .await;
    let reply = stack
        .conn
        .try_stanza_where(WAIT, |e| e.attr("id") == Some("long-attr"))
        .await;
    assert!(
        reply.is_some(),
        "a stanza under max_stanza_bytes must be read; the bridge wrote: {}",
        stack.conn.output()
    );
    assert_eq!(stack.server.connections(), 1);
}
