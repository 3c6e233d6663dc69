//! The bridge survives its server: the server is killed (SIGKILL, no goodbye) and started again
//! on the same ports; the same bridge process reconnects and delivers again within 5 seconds of
//! the server accepting connections.

use std::time::Duration;

use crate::harness::ServerKind;
use crate::harness::{Reply, Stack, body, echo_text, from_component};

const BACK_WITHIN: Duration = Duration::from_secs(5);

async fn the_bridge_is_back_within_five_seconds_after_the_server_is_killed(kind: ServerKind) {
    let Some(mut stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;
    let reply = user.chat("echo@bot.localhost", "before", "before").await;
    assert_eq!(body(&reply), Some(echo_text("before")));
    user.close().await;
    let logins = stack.server.component_logins();

    let accepting = stack.server.kill_and_restart().await;

    let mut user = stack.client("user1").await;
    let mut attempt = 0;
    let mut last = String::from("(nothing)");
    loop {
        attempt += 1;
        let id = format!("after-{attempt}");
        let text = format!("after restart {attempt}");
        user.send_xml(&format!(
            "<message to='echo@bot.localhost' type='chat' id='{id}'><body>{text}</body></message>"
        ))
        .await;
        // Either the echo, or the server's error while the component is not connected yet
        // (which error differs: `ServerKind::component_unavailable_error`).
        let answer = user
            .try_recv_where("an answer", Duration::from_secs(1), |e| {
                e.name() == "message" && from_component(e) && e.attr("id") == Some(id.as_str())
            })
            .await;
        if let Some(answer) = &answer {
            if body(answer) == Some(echo_text(&text)) && answer.attr("type") != Some("error") {
                break;
            }
            last = crate::harness::to_xml(answer);
        }
        assert!(
            accepting.elapsed() < BACK_WITHIN,
            "no echo within {BACK_WITHIN:?} of {kind} accepting connections again; last answer: {last}"
        );
        if answer.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let elapsed = accepting.elapsed();
    eprintln!(
        "delivering again {elapsed:?} after {kind} accepted connections ({attempt} attempt(s))"
    );
    assert!(elapsed < BACK_WITHIN, "delivering again after {elapsed:?}");
    assert!(stack.bridge.is_running(), "the same bridge process");
    assert_eq!(
        stack.server.component_logins(),
        logins + 1,
        "the bridge logged in again exactly once"
    );
}
on_both_servers!(the_bridge_is_back_within_five_seconds_after_the_server_is_killed);
