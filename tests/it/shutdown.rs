//! A clean stop (README, "Stopping"): on SIGTERM, SIGINT or SIGHUP the bridge lets deliveries in
//! flight finish, writes their replies, closes the stream, and exits 0, within a bounded time
//! whatever the server and the hook do.

use std::time::Duration;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";

async fn stop_with(signal: &str) {
    let hook_delay = Duration::from_millis(1500);
    let mut stack = Stack::start(move |r: &Request| Reply::echo(r).delay(hook_delay), |c| c).await;
    stack
        .conn
        .send(&chat(
            "alice@localhost/phone",
            ECHO,
            "inflight",
            "wait for me",
        ))
        .await;
    stack.hook.wait_requests(1).await;

    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(stack.bridge.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());

    let reply = stack.conn.with_id("inflight").await;
    assert_echo(&reply, "wait for me");
    let ending = stack.conn.ended().await;
    assert!(
        ending.close_tag,
        "the bridge closes the stream on its way out"
    );
    assert!(
        ending.stream_error.is_none(),
        "a clean stop is not a stream error"
    );
    let status = stack
        .bridge
        .exit_within(WAIT)
        .await
        .unwrap_or_else(|| panic!("the bridge did not exit within {WAIT:?} of SIG{signal}"));
    assert_eq!(status.code(), Some(0), "a clean stop exits 0");
    assert_eq!(stack.server.connections(), 1, "no reconnect after a stop");
}

#[tokio::test]
async fn sigterm_finishes_deliveries_in_flight_then_exits_0() {
    stop_with("TERM").await;
}

#[tokio::test]
async fn sigint_finishes_deliveries_in_flight_then_exits_0() {
    stop_with("INT").await;
}

#[tokio::test]
async fn sighup_is_a_graceful_stop_too() {
    stop_with("HUP").await;
}

#[tokio::test]
async fn a_stop_is_bounded_when_the_server_stops_reading() {
    // Replies of 100 KB each, and a server that reads nothing: the bridge's writes block on
    // full socket buffers. The stop must still end within the drain (10 s) and the flush (3 s).
    let big = "b".repeat(100_000);
    let mut stack = Stack::start(
        move |_: &Request| Reply::json(serde_json::json!({ "body": big })),
        |c| c,
    )
    .await;
    stack.conn.pause_reading();
    for i in 0..300 {
        stack
            .conn
            .send(&chat(
                &format!("u{}@localhost/r", i % 30),
                ECHO,
                &format!("m{i}"),
                "x",
            ))
            .await;
    }
    stack.hook.wait_requests(100).await;
    let started = tokio::time::Instant::now();
    stack.bridge.terminate();
    let status = stack
        .bridge
        .exit_within(Duration::from_secs(40))
        .await
        .expect("the bridge exits");
    assert!(
        started.elapsed() < Duration::from_secs(16),
        "the stop took {:?}, longer than the drain and the flush allow",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn an_idle_bridge_stops_at_once() {
    let mut stack = Stack::echo().await;
    let started = tokio::time::Instant::now();
    stack.bridge.terminate();
    let status = stack
        .bridge
        .exit_within(WAIT)
        .await
        .expect("the bridge exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "nothing in flight: the stop must not wait for the drain limit ({:?})",
        started.elapsed()
    );
    assert!(stack.conn.ended().await.close_tag);
}

#[tokio::test]
async fn a_stop_while_delivery_is_full_does_not_wait_for_the_hook() {
    // max_in_flight = 1 and a hook that never answers: the first message occupies delivery, the
    // second waits for room. SIGTERM must end the process within the drain limit (10 s) plus a
    // margin, not after the hook's 60 s timeout.
    let mut stack = Stack::start(
        |_: &Request| Reply::status(200).held(),
        |c| {
            c.key("max_in_flight = 1")
                .table("[webhook]\ntimeout = \"60s\"")
        },
    )
    .await;
    for id in ["first", "second"] {
        stack
            .conn
            .send(&chat("alice@localhost/phone", ECHO, id, "hello"))
            .await;
    }
    stack.hook.wait_requests(1).await;
    let started = tokio::time::Instant::now();
    stack.bridge.terminate();
    let status = stack
        .bridge
        .exit_within(Duration::from_secs(20))
        .await
        .expect("the bridge exits within 20 s of SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "the stop waited {:?}: longer than the 10 s drain allows",
        started.elapsed()
    );
}
