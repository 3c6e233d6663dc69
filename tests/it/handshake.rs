//! The XEP-0114 exchange (README, "The XMPP link"): the stream header in one write, the handshake
//! digest, and what the bridge does when the server refuses it for a configuration error (`run`
//! logs the fix and retries at a slow pace; `check` exits non-zero).

use std::time::Duration;

use futures::future::join_all;

use crate::helpers::*;

/// Configuration errors are retried slowly; the normal backoff retries within a few seconds.
const NOT_BEFORE: Duration = Duration::from_secs(5);
/// The slow retry must still come, so that the operator's fix is picked up without a restart.
const RETRY_WITHIN: Duration = Duration::from_secs(45);

#[tokio::test]
async fn the_header_goes_out_in_one_write_and_the_digest_is_correct() {
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let _bridge = BridgeConfig::new(&server, &hook.url()).spawn();
    let mut conn = server.accept_raw().await;

    let header = conn.read_stream_header().await;
    assert_eq!(header.to.as_deref(), Some(DOMAIN), "{}", header.raw);
    assert!(
        header.declares("xmlns", NS_COMPONENT),
        "the header must declare jabber:component:accept: {}",
        header.raw
    );
    assert!(
        header.declares("xmlns:stream", NS_STREAMS),
        "the header must bind the stream prefix: {}",
        header.raw
    );
    let first = String::from_utf8_lossy(&conn.first_chunk().expect("a first read")).into_owned();
    assert!(
        first.contains(&header.raw),
        "the stream header must arrive in one write; the first read held only {first:?}"
    );

    // A header without `version`, as XEP-0114 servers send it.
    conn.open_stream().await;
    let sent = conn.read_handshake().await;
    assert_eq!(sent, digest(&conn.stream_id, SECRET));
    assert!(
        sent.len() == 40
            && sent
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()),
        "the digest must be lowercase hex: {sent}"
    );
    conn.send("<handshake/>").await;

    // Accepted: the link carries stanzas.
    conn.send(&chat(
        "alice@localhost/phone",
        "echo@bot.localhost",
        "h1",
        "hi",
    ))
    .await;
    assert_echo(&conn.with_id("h1").await, "hi");
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn configuration_errors_are_logged_with_the_fix_and_retried_slowly() {
    let cases = [
        ("not-authorized", "secret"),
        ("host-unknown", "domain"),
        ("conflict", "other"),
    ];
    join_all(cases.into_iter().map(|(condition, fix_mentions)| async move {
        let mut server = XmppServer::start().await;
        let hook = Hook::echo().await;
        let bridge = BridgeConfig::new(&server, &hook.url()).spawn();
        let refused = server
            .accept_with(SECRET, Answer::StreamError(condition))
            .await;
        assert!(
            refused.closes_within(WAIT).await,
            "{condition}: the bridge must close the refused connection"
        );

        let line = bridge
            .log_line(&format!("an error naming {condition}"), |l| {
                l.contains("ERROR") && l.contains(condition)
            })
            .await;
        assert!(
            line.contains(fix_mentions),
            "{condition}: the log line should say what to fix (mention {fix_mentions:?}): {line}"
        );

        assert!(
            server.try_accept_raw(NOT_BEFORE).await.is_none(),
            "{condition} is a configuration error: the bridge must not retry within {NOT_BEFORE:?}"
        );
        let mut retry = server
            .try_accept_raw(RETRY_WITHIN)
            .await
            .unwrap_or_else(|| panic!("{condition}: the bridge never retried"));
        retry.handshake(SECRET, Answer::Accept).await;
        retry
            .send(&chat("alice@localhost/phone", "echo@bot.localhost", "after", "fixed"))
            .await;
        assert_echo(&retry.with_id("after").await, "fixed");
    }))
    .await;
}

#[tokio::test]
async fn check_exits_non_zero_on_configuration_errors() {
    let cases = ["not-authorized", "host-unknown", "conflict"];
    let results = join_all(cases.into_iter().map(|condition| async move {
        let mut server = XmppServer::start().await;
        let hook = Hook::echo().await;
        let config = BridgeConfig::new(&server, &hook.url());
        let check = tokio::spawn(async move { config.check().await });
        let mut conn = server.accept_raw().await;
        conn.handshake(SECRET, Answer::StreamError(condition)).await;
        let finished = check.await.expect("the check task");
        (condition, finished)
    }))
    .await;
    for (condition, finished) in results {
        assert_ne!(
            finished.code(),
            Some(0),
            "check must fail when the server answers {condition}; stdout:\n{}",
            finished.stdout
        );
        let said = format!("{}{}", finished.stdout, finished.stderr);
        assert!(
            said.contains(condition),
            "check must name {condition}; it printed:\n{said}"
        );
    }

    // The same check against a server that accepts passes: the failures above were the
    // server's answers, not the check itself.
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let config = BridgeConfig::new(&server, &hook.url());
    let check = tokio::spawn(async move { config.check().await });
    let _conn = server.accept().await;
    let finished = check.await.expect("the check task");
    assert_eq!(
        finished.code(),
        Some(0),
        "check must pass against an accepting server and a live hook; stdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
}
