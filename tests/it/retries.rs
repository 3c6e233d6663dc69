//! Retries (README, "Delivery"): a failure that may pass later (a timeout, 408, 429, 5xx but 501)
//! is tried again with backoff under one `webhook-id`, while that conversation waits and the others
//! go on; `Retry-After` sets the least wait, within `retry_max_interval`; final statuses are
//! bounced at once and not kept; `retry_for = "0s"` bounces at once; an iq is retried only until
//! `iq_timeout`; and `queue = "memory"` retries too, without a file.
//!
//! `retry_max_interval = "1s"` keeps retries within a second, except where a test needs room
//! for a longer `Retry-After`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use minidom::Element;
use tokio::time::Instant;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";
const ALICE: &str = "alice@localhost/phone";
const ALICE_LAPTOP: &str = "alice@localhost/laptop";
const BOB: &str = "bob@localhost/laptop";
const FAST_RETRIES: &str = "retry_max_interval = \"1s\"";

/// A responder that answers the first `failures` calls for the stanza `id` with what `failure`
/// makes, then echoes (as it echoes every other stanza).
fn failing_first(
    id: &str,
    failures: usize,
    failure: impl Fn() -> Reply + Send + Sync + 'static,
) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let id = id.to_owned();
    let calls = Mutex::new(0usize);
    move |request| {
        if request.field("id") != Some(id.as_str()) {
            return Reply::echo(request);
        }
        let mut calls = calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls += 1;
        if *calls <= failures {
            failure()
        } else {
            Reply::echo(request)
        }
    }
}

/// `msg_` + 16 hex digits (the queue's instance) + `_` + a sequence number.
fn assert_webhook_id_shape(id: &str) {
    let parts: Vec<&str> = id.split('_').collect();
    let ok = matches!(parts.as_slice(), ["msg", instance, n]
        if instance.len() == 16
            && instance.chars().all(|c| c.is_ascii_hexdigit())
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit()));
    assert!(ok, "webhook-id {id:?} is not msg_<16 hex>_<n>");
}

/// The same `webhook-id` on every call; returns it.
/// Sends `stanza` from Alice, then a marker in her conversation; asserts that exactly one
/// stanza came back before the marker's answer, and returns it.
async fn only_answer(conn: &mut Conn, stanza: &str, why: &str) -> Element {
    let mut sent = sent_before_marker(conn, ALICE, ECHO, stanza).await;
    assert_eq!(
        sent.len(),
        1,
        "{why}: {:?}",
        sent.iter().map(to_xml).collect::<Vec<_>>()
    );
    sent.remove(0)
}

fn one_webhook_id(attempts: &[Request]) -> String {
    let ids: Vec<String> = attempts.iter().map(Request::webhook_id).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every retry of a stanza must carry its webhook-id: {ids:?}"
    );
    ids[0].clone()
}

#[tokio::test]
async fn a_503_is_retried_under_one_webhook_id_until_the_hook_takes_the_stanza() {
    let mut stack = Stack::start(failing_first("r1", 2, || Reply::status(503)), |c| {
        c.key(FAST_RETRIES)
    })
    .await;
    let stanza = chat(ALICE, ECHO, "r1", "third time lucky");
    let answer = only_answer(
        &mut stack.conn,
        &stanza,
        "the sender gets exactly one answer, the hook's reply",
    )
    .await;
    assert_eq!(answer.attr("id"), Some("r1"), "{}", to_xml(&answer));
    assert_echo(&answer, "third time lucky");

    let attempts = stack.hook.requests_with_id("r1");
    assert_eq!(attempts.len(), 3, "two 503s, then the 200");
    let id = one_webhook_id(&attempts);
    assert_webhook_id_shape(&id);
    for pair in attempts.windows(2) {
        assert!(
            pair[1].arrived >= pair[0].answered.expect("answered"),
            "a retry starts after the failed call has been answered"
        );
    }

    stack.round_trip(ALICE, "r2", "another").await;
    let second = stack.hook.request_with_id("r2").await;
    assert_webhook_id_shape(&second.webhook_id());
    assert_ne!(
        second.webhook_id(),
        id,
        "a different stanza gets a different webhook-id"
    );
    assert!(
        stack.bridge.dir().join("data").join("queue.redb").exists(),
        "the durable queue is the default, in data/ next to the configuration"
    );
}

#[tokio::test]
async fn a_retried_head_holds_back_its_conversation_but_not_the_others() {
    let a1_fails = Arc::new(AtomicBool::new(true));
    let responder = {
        let a1_fails = a1_fails.clone();
        move |request: &Request| {
            if request.field("id") == Some("a1") && a1_fails.load(Ordering::SeqCst) {
                Reply::status(503)
            } else {
                Reply::echo(request)
            }
        }
    };
    let mut stack = Stack::start(responder, |c| c.key(FAST_RETRIES)).await;
    // Two resources of one account are one conversation.
    let burst = [
        chat(ALICE, ECHO, "a1", "first"),
        chat(ALICE_LAPTOP, ECHO, "a2", "second"),
        chat(BOB, ECHO, "b1", "meanwhile"),
    ]
    .concat();
    stack.conn.send(&burst).await;

    let bob = stack.conn.with_id("b1").await;
    assert_echo(&bob, "meanwhile");
    let seen = stack
        .hook
        .wait_until("three attempts at a1", |requests| {
            requests
                .iter()
                .filter(|r| r.field("id") == Some("a1"))
                .count()
                >= 3
        })
        .await;
    assert!(
        seen.iter().all(|r| r.field("id") != Some("a2")),
        "alice's second message went to the hook while her first was being retried"
    );

    a1_fails.store(false, Ordering::SeqCst);
    assert_echo(&stack.conn.with_id("a1").await, "first");
    assert_echo(&stack.conn.with_id("a2").await, "second");

    let requests = stack.hook.requests();
    let alice: Vec<&Request> = requests
        .iter()
        .filter(|r| r.field("from").is_some_and(|f| f.starts_with("alice@")))
        .collect();
    let order: Vec<&str> = alice.iter().map(|r| r.field("id").unwrap_or("?")).collect();
    let (last, head) = order.split_last().expect("alice's calls");
    assert!(
        *last == "a2" && head.len() >= 4 && head.iter().all(|id| *id == "a1"),
        "at the hook: a1 until it succeeds, then a2; got {order:?}"
    );
    let a1_done = alice[alice.len() - 2].answered.expect("answered");
    assert!(
        alice[alice.len() - 1].arrived >= a1_done,
        "a2 must wait for a1's success"
    );
    let b1 = requests
        .iter()
        .find(|r| r.field("id") == Some("b1"))
        .expect("b1 at the hook");
    assert!(
        b1.arrived < alice[alice.len() - 2].arrived,
        "bob's message must not wait for alice's retries"
    );
}

/// Sends one stanza whose first call is answered with `failure`; returns the time between the
/// first and the second call's arrival.
async fn gap_after(
    failure: impl Fn() -> Reply + Send + Sync + 'static,
    max_interval: &str,
) -> Duration {
    let mut stack = Stack::start(failing_first("w1", 1, failure), |c| {
        c.key(&format!("retry_max_interval = \"{max_interval}\""))
    })
    .await;
    let reply = stack.round_trip(ALICE, "w1", "patience").await;
    assert_echo(&reply, "patience");
    let attempts = stack.hook.requests_with_id("w1");
    assert_eq!(attempts.len(), 2, "one failure, then the 200");
    one_webhook_id(&attempts);
    attempts[1].arrived - attempts[0].arrived
}

#[tokio::test]
async fn retry_after_in_seconds_is_the_least_wait() {
    // Without the header the first retry comes within 1 s (full jitter under a 1 s ceiling).
    let gap = gap_after(|| Reply::status(429).header("retry-after", "2"), "10s").await;
    assert!(
        gap >= Duration::from_millis(1900),
        "the hook asked for 2 s; the retry came after {gap:?}"
    );
    assert!(
        gap < Duration::from_millis(3500),
        "the retry came {gap:?} later, not about 2 s"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_the_least_wait() {
    // Three seconds ahead, to the second: a wait of more than 2 s.
    let gap = gap_after(
        || {
            let at = SystemTime::now() + Duration::from_secs(3);
            Reply::status(503).header("retry-after", &httpdate::fmt_http_date(at))
        },
        "10s",
    )
    .await;
    assert!(
        gap >= Duration::from_millis(1900),
        "the hook asked to wait until a date about 3 s ahead; the retry came after {gap:?}"
    );
    assert!(gap < Duration::from_millis(4500), "{gap:?}");
}

#[tokio::test]
async fn retry_after_cannot_park_a_conversation_past_retry_max_interval() {
    let gap = gap_after(|| Reply::status(503).header("retry-after", "3600"), "1s").await;
    assert!(
        gap < Duration::from_secs(3),
        "retry_max_interval = 1s caps a Retry-After of an hour; the retry came after {gap:?}"
    );
}

/// A responder that answers the first call for each listed stanza id with its reply, then
/// echoes (as it echoes every other stanza).
fn first_call_fails(
    failures: Vec<(String, Reply)>,
) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let failures: Mutex<HashMap<String, Reply>> = Mutex::new(failures.into_iter().collect());
    move |request| {
        let failure = request.field("id").and_then(|id| {
            failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id)
        });
        failure.unwrap_or_else(|| Reply::echo(request))
    }
}

#[tokio::test]
async fn every_status_worth_another_try_is_retried() {
    const RETRIED: [u16; 8] = [408, 429, 500, 502, 503, 504, 507, 599];
    let failures = RETRIED
        .iter()
        .map(|status| (format!("s{status}"), Reply::status(*status)))
        .collect();
    let mut stack = Stack::start(first_call_fails(failures), |c| c.key(FAST_RETRIES)).await;
    // One conversation each, so they are retried side by side.
    let sender = |status: u16| format!("user{status}@localhost/r");
    let burst: String = RETRIED
        .iter()
        .map(|s| chat(&sender(*s), ECHO, &format!("s{s}"), &format!("after {s}")))
        .collect();
    stack.conn.send(&burst).await;
    for status in RETRIED {
        let id = format!("s{status}");
        let reply = stack.conn.with_id(&id).await;
        assert_eq!(reply.attr("to"), Some(sender(status).as_str()));
        assert!(
            stanza_error(&reply).is_none(),
            "HTTP {status} is retried, not bounced: {}",
            to_xml(&reply)
        );
        assert_echo(&reply, &format!("after {status}"));
        let attempts = stack.hook.requests_with_id(&id);
        assert_eq!(attempts.len(), 2, "HTTP {status}, then the 200");
        one_webhook_id(&attempts);
    }
}

#[tokio::test]
async fn a_hook_that_times_out_is_asked_again() {
    let mut stack = Stack::start(
        failing_first("slow", 1, || {
            Reply::json(serde_json::json!({ "body": "too late" })).delay(Duration::from_secs(3))
        }),
        |c| c.key(FAST_RETRIES).table("[webhook]\ntimeout = \"1s\""),
    )
    .await;
    let stanza = chat(ALICE, ECHO, "slow", "take your time");
    let answer = only_answer(
        &mut stack.conn,
        &stanza,
        "the sender gets exactly one answer",
    )
    .await;
    assert_echo(&answer, "take your time");
    let attempts = stack.hook.requests_with_id("slow");
    assert_eq!(attempts.len(), 2, "the timed-out call, then the retry");
    one_webhook_id(&attempts);
}

#[tokio::test]
async fn final_statuses_are_bounced_at_once_and_not_kept() {
    const FINAL: [(u16, &str, &str); 8] = [
        (400, "modify", "bad-request"),
        (401, "auth", "not-authorized"),
        (403, "auth", "forbidden"),
        (404, "cancel", "item-not-found"),
        (409, "cancel", "conflict"),
        (413, "modify", "resource-constraint"),
        (422, "modify", "bad-request"),
        (501, "cancel", "feature-not-implemented"),
    ];
    let failures = FINAL
        .iter()
        .map(|(status, _, _)| (format!("f{status}"), Reply::status(*status)))
        .collect();
    // The default retry_for of a day: a retry would hold the conversation that long.
    let mut stack = Stack::start(first_call_fails(failures), |c| c.key(FAST_RETRIES)).await;
    for (status, type_, condition) in FINAL {
        let id = format!("f{status}");
        let stanza = chat(ALICE, ECHO, &id, "final");
        let answer = only_answer(
            &mut stack.conn,
            &stanza,
            &format!("one error for HTTP {status}"),
        )
        .await;
        let error = assert_error_reply(&answer, ALICE, ECHO, &id);
        assert_eq!(
            (error.type_.as_str(), error.condition.as_str()),
            (type_, condition),
            "{}",
            to_xml(&answer)
        );
        assert_eq!(
            stack.hook.requests_with_id(&id).len(),
            1,
            "HTTP {status} must not be retried"
        );
    }
    assert_eq!(
        stack.bridge.dead_letter_list().await,
        Vec::<serde_json::Value>::new(),
        "a final status is not a dead letter"
    );
}

#[tokio::test]
async fn retry_for_zero_bounces_at_once_and_keeps_no_dead_letter() {
    let mut stack = Stack::start(by_id([("z1", Reply::status(503))]), |c| {
        c.key("retry_for = \"0s\"")
    })
    .await;
    let stanza = chat(ALICE, ECHO, "z1", "now or never");
    let answer = only_answer(
        &mut stack.conn,
        &stanza,
        "the sender gets exactly one answer",
    )
    .await;
    let error = assert_error_reply(&answer, ALICE, ECHO, "z1");
    assert_eq!(
        error,
        StanzaErrorSeen {
            type_: "wait".into(),
            condition: "remote-server-timeout".into(),
            text: Some("Service temporarily unavailable".into()),
            by: error.by.clone(),
        }
    );
    assert_eq!(
        stack.hook.requests_with_id("z1").len(),
        1,
        "retry_for = 0s: one call, like the module"
    );
    assert!(stack.bridge.dead_letter_list().await.is_empty());
    let human = stack.bridge.dead_letters(&["list"]).await;
    assert_eq!(human.code(), Some(0), "{human:?}");
    assert_eq!(human.stdout.trim(), "no dead letters");
}

#[tokio::test]
async fn an_iq_is_retried_until_iq_timeout_only_and_never_kept() {
    let mut stack = Stack::start(
        |_: &Request| Reply::status(503),
        |c| {
            c.key("stanzas = [\"message\", \"iq\"]")
                .key("iq_timeout = \"2s\"")
                .key(FAST_RETRIES)
        },
    )
    .await;
    let started = Instant::now();
    stack
        .conn
        .send(&iq(
            "get",
            ALICE,
            ECHO,
            "q1",
            "<query xmlns='urn:example:weather'/>",
        ))
        .await;
    let reply = stack.conn.with_id("q1").await;
    let elapsed = started.elapsed();
    let error = assert_error_reply(&reply, ALICE, ECHO, "q1");
    assert_eq!(
        (error.type_.as_str(), error.condition.as_str()),
        ("wait", "remote-server-timeout"),
        "{}",
        to_xml(&reply)
    );
    assert!(
        stack.hook.requests_with_id("q1").len() >= 2,
        "the iq is retried while its sender still waits"
    );
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5),
        "the iq's retries end at iq_timeout (2 s), not retry_for; the error came after {elapsed:?}"
    );
    assert!(
        stack.bridge.dead_letter_list().await.is_empty(),
        "an iq is never kept"
    );
}

#[tokio::test]
async fn the_memory_queue_retries_too_and_writes_no_file() {
    let mut stack = Stack::start(failing_first("m1", 2, || Reply::status(503)), |c| {
        c.key("queue = \"memory\"").key(FAST_RETRIES)
    })
    .await;
    let stanza = chat(ALICE, ECHO, "m1", "in memory");
    let answer = only_answer(
        &mut stack.conn,
        &stanza,
        "the sender gets exactly one answer",
    )
    .await;
    assert_echo(&answer, "in memory");
    let attempts = stack.hook.requests_with_id("m1");
    assert_eq!(attempts.len(), 3);
    let id = one_webhook_id(&attempts);
    assert!(id.starts_with("msg_"), "webhook-id {id:?}");
    let marker_id = stack
        .hook
        .requests()
        .last()
        .expect("the marker's call")
        .webhook_id();
    assert_ne!(marker_id, id);

    // Only the control socket (for `send`) is in data_dir, no queue file.
    let data = stack.bridge.dir().join("data");
    assert!(
        !data.join("queue.redb").exists(),
        "queue = \"memory\" must not create a queue file"
    );
    let listed = stack.bridge.dead_letters(&["list"]).await;
    assert_ne!(listed.code(), Some(0), "{listed:?}");
    assert!(
        listed
            .stderr
            .contains("queue = \"memory\", which keeps no dead letters"),
        "{listed:?}"
    );
    assert!(
        !data.join("queue.redb").exists(),
        "listing must not create a queue"
    );
}
