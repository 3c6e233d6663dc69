//! Promises kept against hostile input and careless configuration: values that would overflow
//! a timer are refused at load, a panic ends the process, credentials in the hook's URL never
//! reach a log, whitespace keepalives do not count as a stanza, waiting iq are bounded, a hook
//! cannot smuggle a second stanza, a malformed hook response is not retried, and a dropped
//! stanza is logged in one short line.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const SENDER: &str = "alice@localhost/phone";
const ECHO: &str = "echo@bot.localhost";

fn minimal(extra: &str) -> String {
    format!(
        "domain = \"bot.localhost\"\nserver = \"127.0.0.1:9\"\nsecret = \"throwaway\"\n{extra}\n"
    )
}

#[tokio::test]
async fn values_that_would_overflow_a_timer_or_a_counter_are_refused_with_their_key() {
    let headers: String = (0..40_000).map(|i| format!("x-h{i} = \"v\"\n")).collect();
    let cases = [
        ("keepalive_interval = \"0s\"", "keepalive_interval"),
        ("retry_for = \"500000000000y\"", "retry_for"),
        ("iq_timeout = \"0s\"", "iq_timeout"),
        ("retry_max_interval = \"100y\"", "retry_max_interval"),
        ("max_in_flight = 3000000000000000000", "max_in_flight"),
        ("max_depth = 100000", "max_depth"),
        ("queue_max_stanzas = 0", "queue_max_stanzas"),
    ];
    for (line, key) in cases {
        let text = minimal(&format!(
            "{line}\ncomponent_post_url = \"http://127.0.0.1:9/hook\""
        ));
        let finished = run_config(&text, &[]).await;
        assert_eq!(finished.code(), Some(2), "{line}: {}", finished.stderr);
        assert!(
            finished.stderr.contains(key),
            "{line}: the message names the key: {}",
            finished.stderr
        );
    }
    let text = minimal(&format!(
        "[webhook]\nurl = \"http://127.0.0.1:9/hook\"\ntimeout = \"0s\"\n[webhook.headers]\n{headers}"
    ));
    let finished = run_config(&text, &[]).await;
    assert_eq!(finished.code(), Some(2), "{}", finished.stderr);
    assert!(finished.stderr.contains("webhook"), "{}", finished.stderr);
    let text = minimal(&format!(
        "[webhook]\nurl = \"http://127.0.0.1:9/hook\"\n[webhook.headers]\n{headers}"
    ));
    let finished = run_config(&text, &[]).await;
    assert_eq!(finished.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("webhook.headers"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn a_panic_in_a_task_ends_the_process_with_a_non_zero_code() {
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let mut bridge = BridgeConfig::new(&server, &hook.url())
        .env("COMPONENT_HTTP_TEST_PANIC_ONLINE", "1")
        .spawn();
    let _conn = server.accept().await;
    let status = bridge
        .exit_within(WAIT)
        .await
        .expect("a process whose session task panicked must not keep running");
    assert_eq!(status.code(), Some(70), "{}", bridge.log());
}

#[tokio::test]
async fn credentials_in_the_hook_url_never_reach_the_logs_or_check() {
    const PASSWORD: &str = "pw-7f3e1c";
    const TOKEN: &str = "tok-9b2d44";
    let mut server = XmppServer::start().await;
    let hook = Hook::start(|_: &Request| Reply::status(500)).await;
    let url = hook
        .url()
        .replacen("http://", &format!("http://bob:{PASSWORD}@"), 1)
        + &format!("?token={TOKEN}");
    let config = BridgeConfig::new(&server, &url).key("retry_for = \"0s\"");
    let bridge = config.spawn();
    let mut conn = server.accept().await;
    conn.send(&chat(SENDER, ECHO, "m1", "hi")).await;
    let request = hook.request_with_id("m1").await;
    assert!(
        request
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")),
        "the URL's credentials are still used"
    );
    assert_eq!(
        stanza_error(&conn.with_id("m1").await).map(|e| e.condition),
        Some("internal-server-error".to_owned())
    );
    let (check, _second) = tokio::join!(config.check(), server.accept());
    let outputs = [bridge.log(), check.stdout.clone(), check.stderr.clone()];
    for output in outputs {
        assert!(
            !output.contains(PASSWORD) && !output.contains(TOKEN),
            "a credential was shown: {output}"
        );
    }
    assert!(bridge.log().contains("REDACTED"), "{}", bridge.log());

    let both = BridgeConfig::new(&server, &url)
        .table("[webhook]\nauthorization = \"Bearer x\"")
        .check()
        .await;
    assert_eq!(both.code(), Some(2), "{}", both.stderr);
    assert!(both.stderr.contains("webhook.url"), "{}", both.stderr);
    assert!(!both.stderr.contains(PASSWORD), "{}", both.stderr);
}

#[tokio::test]
async fn whitespace_between_stanzas_never_ends_the_stream() {
    let mut stack = Stack::echo().await;
    let spaces = vec![b' '; 16 * 1024];
    for _ in 0..(300 / 16 + 1) {
        stack.conn.send_bytes(&spaces).await;
    }
    assert_echo(
        &stack.round_trip(SENDER, "after", "still here").await,
        "still here",
    );
    assert_eq!(stack.server.connections(), 1, "the stream was not ended");
}

#[tokio::test]
async fn iq_answered_202_count_against_the_queue_bounds() {
    let mut stack = Stack::start(
        |_: &Request| Reply::status(202),
        |c| {
            c.key("stanzas = [\"message\", \"iq\"]")
                .key("queue_max_stanzas = 20")
                .key("iq_timeout = \"3s\"")
        },
    )
    .await;
    let padding = "p".repeat(2000);
    for i in 0..40 {
        let payload = format!("<query xmlns='urn:example:slow' pad='{padding}'/>");
        stack
            .conn
            .send(&iq("get", SENDER, ECHO, &format!("iq{i}"), &payload))
            .await;
    }
    let mut refused_at_once = 0;
    let mut timed_out = 0;
    for i in 0..40 {
        let answer = stack.conn.with_id(&format!("iq{i}")).await;
        let error = stanza_error(&answer).expect("every iq gets an error in the end");
        match error.condition.as_str() {
            "resource-constraint" => refused_at_once += 1,
            "remote-server-timeout" => timed_out += 1,
            other => panic!("iq{i}: unexpected {other}"),
        }
    }
    assert_eq!(
        (refused_at_once, timed_out),
        (20, 20),
        "20 wait for their answer (the queue's bound), 20 are refused at once"
    );
    assert_eq!(stack.hook.requests().len(), 20);
    // Once they timed out, their places are free again.
    stack
        .conn
        .send(&iq(
            "get",
            SENDER,
            ECHO,
            "later",
            "<query xmlns='urn:example:slow'/>",
        ))
        .await;
    stack.hook.request_with_id("later").await;
}

#[tokio::test]
async fn a_hook_stanza_that_closes_the_stream_is_refused_whole() {
    let smuggling = Reply::json(json!({
        "stanza": "<message to='alice@localhost/phone'><body>one</body></message></stream:stream><message to='alice@localhost/phone'><body>two</body></message>"
    }));
    let mut stack = Stack::start(by_id([("smuggle", smuggling)]), |c| c).await;
    stack.conn.send(&chat(SENDER, ECHO, "smuggle", "hi")).await;
    let answer = stack.conn.with_id("smuggle").await;
    assert_eq!(
        stanza_error(&answer).map(|e| e.condition),
        Some("internal-server-error".to_owned()),
        "a hook error, not the first half of what it sent: {}",
        to_xml(&answer)
    );
    assert!(
        !stack.conn.output().contains("<body>one</body>"),
        "nothing of the smuggled text is sent"
    );
    assert_echo(&stack.round_trip(SENDER, "next", "ok").await, "ok");
}

#[tokio::test]
async fn a_json_reply_starting_with_a_byte_order_mark_is_used() {
    let mut stack = Stack::start(
        |_: &Request| {
            Reply::status(200)
                .content_type("application/json")
                .body("\u{feff}{\"body\":\"with a BOM\"}")
        },
        |c| c,
    )
    .await;
    let reply = stack.round_trip(SENDER, "bom", "hi").await;
    assert_eq!(body_of(&reply).as_deref(), Some("with a BOM"));
}

#[tokio::test]
async fn a_malformed_hook_response_is_final_and_not_retried() {
    let mut stack = Stack::start(
        |_: &Request| {
            (0..200).fold(Reply::json(json!({"body": "x"})), |reply, i| {
                reply.header(&format!("x-filler-{i}"), "y")
            })
        },
        |c| c.key("retry_max_interval = \"1s\""),
    )
    .await;
    stack.conn.send(&chat(SENDER, ECHO, "bad", "hi")).await;
    let answer = stack.conn.with_id("bad").await;
    let error = stanza_error(&answer).expect("an error");
    assert_eq!(error.condition, "internal-server-error");
    assert_eq!(
        error.text.as_deref(),
        Some("The hook's response is malformed")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.hook.requests_with_id("bad").len(),
        1,
        "the hook received the call; it is not called again"
    );
}

#[tokio::test]
async fn a_dropped_stanza_is_logged_in_one_short_line() {
    let mut stack = Stack::echo().await;
    let big = "z".repeat(200_000);
    stack
        .conn
        .send(&format!(
            "<message to='{ECHO}' id='nofrom'><body>{big}</body></message>"
        ))
        .await;
    let line = stack
        .bridge
        .log_line("the drop", |line| line.contains("stanza dropped"))
        .await;
    assert!(line.len() < 1000, "{} bytes", line.len());
    assert!(line.contains("bytes in all"), "{line}");
}
