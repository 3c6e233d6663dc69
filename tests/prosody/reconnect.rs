//! The bridge survives its server: Prosody is killed (SIGKILL, no goodbye) and started again on
//! the same ports; the same bridge process reconnects and delivers again within 5 seconds of
//! Prosody accepting connections.

use std::time::Duration;

use crate::harness::{Reply, Stack, body, echo_text, from_component};

const BACK_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_bridge_is_back_within_five_seconds_after_prosody_is_killed() {
    let Some(mut stack) = Stack::start(Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;
    let reply = user.chat("echo@bot.localhost", "before", "before").await;
    assert_eq!(body(&reply), Some(echo_text("before")));
    user.close().await;
    let logins = stack.prosody.component_logins();

    let accepting = stack.prosody.kill_and_restart().await;

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
        // Either the echo, or Prosody's error while the component is not connected yet.
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
            "no echo within {BACK_WITHIN:?} of Prosody accepting connections again; last answer: {last}"
        );
        if answer.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let elapsed = accepting.elapsed();
    eprintln!(
        "delivering again {elapsed:?} after Prosody accepted connections ({attempt} attempt(s))"
    );
    assert!(elapsed < BACK_WITHIN, "delivering again after {elapsed:?}");
    assert!(stack.bridge.is_running(), "the same bridge process");
    assert_eq!(
        stack.prosody.component_logins(),
        logins + 1,
        "the bridge logged in again exactly once"
    );
}
