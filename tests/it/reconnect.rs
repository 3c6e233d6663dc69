//! Reconnection (README, "The XMPP link"): when the server goes away — restarted at once, or down
//! for a while — the bridge comes back within seconds and delivers again; a reply made while the
//! link was down is sent on the new link.

use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::*;

const SENDER: &str = "alice@localhost/phone";
const ECHO: &str = "echo@bot.localhost";
/// "Within a few seconds" of the server being back.
const BACK_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_restarted_server_gets_the_bridge_back_within_seconds() {
    let Stack {
        mut server,
        hook,
        bridge: _bridge,
        mut conn,
    } = Stack::echo().await;
    assert_echo(
        &{
            conn.send(&chat(SENDER, ECHO, "before", "one")).await;
            conn.with_id("before").await
        },
        "one",
    );

    // The server process dies (its socket and its listener go) and starts again.
    server.stop_listening();
    drop(conn);
    let restarted = Instant::now();
    server.listen_again().await;
    let mut conn = server
        .try_accept_raw(BACK_WITHIN)
        .await
        .unwrap_or_else(|| panic!("the bridge did not reconnect within {BACK_WITHIN:?}"));
    conn.handshake(SECRET, Answer::Accept).await;
    assert!(restarted.elapsed() < BACK_WITHIN);

    conn.send(&chat(SENDER, ECHO, "after", "two")).await;
    assert_echo(&conn.with_id("after").await, "two");
    assert_eq!(hook.requests().len(), 2);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_server_that_closes_its_stream_gets_the_closing_tag_back_then_a_new_connection() {
    let Stack {
        mut server,
        hook: _hook,
        bridge: _bridge,
        mut conn,
    } = Stack::echo().await;
    // A server shutting down gracefully closes its stream and waits for ours (RFC 6120 §4.4).
    conn.send("</stream:stream>").await;
    let ending = conn.ended().await;
    assert!(
        ending.close_tag && ending.stream_error.is_none(),
        "the bridge answers a closed stream with its own closing tag, got {ending:?}"
    );
    let mut conn = server
        .try_accept_raw(BACK_WITHIN)
        .await
        .unwrap_or_else(|| panic!("the bridge did not reconnect within {BACK_WITHIN:?}"));
    conn.handshake(SECRET, Answer::Accept).await;
    conn.send(&chat(SENDER, ECHO, "after", "again")).await;
    assert_echo(&conn.with_id("after").await, "again");
}

#[tokio::test]
async fn a_server_down_for_a_while_gets_the_bridge_back_within_seconds() {
    let Stack {
        mut server,
        hook: _hook,
        bridge: _bridge,
        conn,
    } = Stack::echo().await;
    server.stop_listening();
    conn.close().await;
    // Down long enough for several refused attempts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = Instant::now();
    server.listen_again().await;
    let mut conn = server
        .try_accept_raw(BACK_WITHIN)
        .await
        .unwrap_or_else(|| panic!("the bridge did not come back within {BACK_WITHIN:?}"));
    conn.handshake(SECRET, Answer::Accept).await;
    assert!(back.elapsed() < BACK_WITHIN);
    conn.send(&chat(SENDER, ECHO, "after", "back")).await;
    assert_echo(&conn.with_id("after").await, "back");
}

#[tokio::test]
async fn a_reply_made_while_the_link_is_down_is_sent_after_reconnecting() {
    let hook_delay = Duration::from_millis(800);
    let Stack {
        mut server,
        hook,
        bridge: _bridge,
        mut conn,
    } = Stack::start(move |r| Reply::echo(r).delay(hook_delay), |c| c).await;
    conn.send(&chat(SENDER, ECHO, "pending", "slow")).await;
    hook.wait_requests(1).await;
    // The link drops while the hook is still thinking.
    drop(conn);
    let mut conn = server.accept().await;
    assert_echo(&conn.with_id("pending").await, "slow");
}
