//! Durability and dead letters (README, "Delivery" and "Command line"): when `retry_for` runs out
//! the sender gets the stanza error and the stanza is kept as a dead letter; `component-http
//! dead-letters list|replay|purge` manages them on a running instance (through its control socket)
//! and on a stopped one (on the file); a replay keeps the `webhook-id`; and a crash loses nothing
//! that was read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";
const ALICE: &str = "alice@localhost/phone";
const BOB: &str = "bob@localhost/laptop";
const CAROL: &str = "carol@localhost/desk";
const FAST_RETRIES: &str = "retry_max_interval = \"1s\"";
const HEADER: &str = "ID\tDIED\tFROM\tTO\tREASON";

/// 503 while `healthy` is false, the echo bot once it is true.
fn unavailable_until(healthy: Arc<AtomicBool>) -> impl Fn(&Request) -> Reply + Send + Sync {
    move |request| {
        if healthy.load(Ordering::SeqCst) {
            Reply::echo(request)
        } else {
            Reply::status(503)
        }
    }
}

/// Asserts that `reply` is the 503 row of the table, answering `id` from `from`.
fn assert_503_bounce(reply: &minidom::Element, from: &str, id: &str) {
    let error = assert_error_reply(reply, from, ECHO, id);
    assert_eq!(
        (
            error.type_.as_str(),
            error.condition.as_str(),
            error.text.as_deref()
        ),
        (
            "wait",
            "remote-server-timeout",
            Some("Service temporarily unavailable")
        ),
        "{}",
        to_xml(reply)
    );
}

fn text<'a>(letter: &'a Value, field: &str) -> &'a str {
    letter[field]
        .as_str()
        .unwrap_or_else(|| panic!("dead letter without a string {field:?}: {letter}"))
}

fn letter_id(letter: &Value) -> u64 {
    letter["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("dead letter without a numeric id: {letter}"))
}

fn time_of(letter: &Value, field: &str) -> SystemTime {
    let value = text(letter, field);
    humantime::parse_rfc3339(value)
        .unwrap_or_else(|e| panic!("{field} = {value:?} is not RFC 3339 ({e}): {letter}"))
}

/// The dead letter of the stanza `id`.
fn letter_of<'a>(letters: &'a [Value], id: &str) -> &'a Value {
    letters
        .iter()
        .find(|l| {
            parse_in_stream(text(l, "stanza")).is_ok_and(|stanza| stanza.attr("id") == Some(id))
        })
        .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:#?}"))
}

/// Asserts that a dead-letters command succeeded and printed `expected`.
fn assert_ok(finished: &Finished, expected: &str) {
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    assert_eq!(finished.stdout.trim(), expected, "{finished:?}");
}

/// Asserts that a dead-letters command failed and said that `id` is not a dead letter.
fn assert_unknown_id(finished: &Finished, id: u64) {
    assert!(
        finished.code().is_some_and(|code| code != 0),
        "an unknown id must fail the command: {finished:?}"
    );
    assert!(
        finished
            .stderr
            .contains(&format!("no dead letter has id {id}")),
        "the command must name the unknown id: {finished:?}"
    );
}

#[tokio::test]
async fn when_retry_for_runs_out_the_sender_is_told_and_the_stanza_is_kept_for_a_replay() {
    let healthy = Arc::new(AtomicBool::new(false));
    let mut stack = Stack::start(unavailable_until(healthy.clone()), |c| {
        c.key("retry_for = \"2s\"").key(FAST_RETRIES)
    })
    .await;
    let started = Instant::now();
    stack
        .conn
        .send(&chat(ALICE, ECHO, "d1", "keep me safe"))
        .await;
    let bounce = stack.conn.with_id("d1").await;
    let elapsed = started.elapsed();
    assert_503_bounce(&bounce, ALICE, "d1");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5),
        "the error comes when retry_for (2 s) runs out, not after {elapsed:?}"
    );
    let attempts = stack.hook.requests_with_id("d1");
    assert!(attempts.len() >= 2, "retried until retry_for ran out");
    let webhook_id = attempts[0].webhook_id();
    assert!(attempts.iter().all(|r| r.webhook_id() == webhook_id));

    // The running instance answers through its control socket.
    let letters = stack.bridge.dead_letter_list().await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(text(letter, "webhook_id"), webhook_id);
    assert_eq!(text(letter, "from"), ALICE);
    assert_eq!(text(letter, "to"), ECHO);
    assert!(text(letter, "reason").contains("503"), "{letter}");
    let stanza = parse_in_stream(text(letter, "stanza")).expect("the stanza parses");
    assert_eq!(stanza.attr("id"), Some("d1"));
    assert_eq!(body_of(&stanza).as_deref(), Some("keep me safe"));
    let (received, died) = (time_of(letter, "received"), time_of(letter, "died"));
    assert!(
        died.duration_since(received)
            .is_ok_and(|lived| lived >= Duration::from_secs(1)),
        "it died when retry_for ran out, after it was received: {letter}"
    );
    let id = letter_id(letter);

    let human = stack.bridge.dead_letters(&["list"]).await;
    assert_eq!(human.code(), Some(0), "{human:?}");
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", human.stdout);
    assert_eq!(lines[0], HEADER);
    let row: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(
        row,
        [
            id.to_string().as_str(),
            text(letter, "died"),
            ALICE,
            ECHO,
            text(letter, "reason")
        ]
    );

    healthy.store(true, Ordering::SeqCst);
    assert_ok(
        &stack.bridge.dead_letters(&["replay", "--all"]).await,
        "1 dead letter(s)",
    );
    let reply = stack.conn.with_id("d1").await;
    assert_echo(&reply, "keep me safe");
    let replayed = stack.hook.requests_with_id("d1");
    assert_eq!(replayed.len(), attempts.len() + 1, "delivered once more");
    assert_eq!(
        replayed.last().expect("the replay").webhook_id(),
        webhook_id,
        "a replayed dead letter keeps its webhook-id, so the hook can deduplicate"
    );
    assert!(stack.bridge.dead_letter_list().await.is_empty());
    assert_ok(
        &stack.bridge.dead_letters(&["list"]).await,
        "no dead letters",
    );
}

#[tokio::test]
async fn purge_deletes_dead_letters_for_good_and_unknown_ids_are_refused() {
    let mut stack = Stack::start(
        |request: &Request| {
            if request.field("id").is_some_and(|id| id.starts_with('p')) {
                Reply::status(503)
            } else {
                Reply::echo(request)
            }
        },
        |c| c.key("retry_for = \"1s\"").key(FAST_RETRIES),
    )
    .await;
    let burst = [
        chat(ALICE, ECHO, "p1", "doomed"),
        chat(BOB, ECHO, "p2", "doomed too"),
    ]
    .concat();
    stack.conn.send(&burst).await;
    assert_503_bounce(&stack.conn.with_id("p1").await, ALICE, "p1");
    assert_503_bounce(&stack.conn.with_id("p2").await, BOB, "p2");
    let letters = stack.bridge.dead_letter_list().await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let (p1, p2) = (
        letter_id(letter_of(&letters, "p1")),
        letter_id(letter_of(&letters, "p2")),
    );

    assert_ok(
        &stack.bridge.dead_letters(&["purge", &p1.to_string()]).await,
        "1 dead letter(s)",
    );
    let left = stack.bridge.dead_letter_list().await;
    assert_eq!(
        left.iter().map(letter_id).collect::<Vec<_>>(),
        [p2],
        "only the purged one is gone"
    );

    let unknown = 987_654_321;
    assert_unknown_id(
        &stack
            .bridge
            .dead_letters(&["purge", &unknown.to_string()])
            .await,
        unknown,
    );
    assert_unknown_id(
        &stack
            .bridge
            .dead_letters(&["replay", &p1.to_string()])
            .await,
        p1,
    );
    assert_eq!(stack.bridge.dead_letter_list().await.len(), 1);
    // Had p1 come back, it would be queued ahead of this in alice's conversation.
    let calls = stack.hook.requests_with_id("p1").len();
    stack.round_trip(ALICE, "after", "still here").await;
    assert_eq!(
        stack.hook.requests_with_id("p1").len(),
        calls,
        "a purged dead letter is never delivered"
    );

    assert_ok(
        &stack.bridge.dead_letters(&["purge", "--all"]).await,
        "1 dead letter(s)",
    );
    assert_ok(
        &stack.bridge.dead_letters(&["list"]).await,
        "no dead letters",
    );
}

#[tokio::test]
async fn a_stopped_instance_is_managed_on_its_file_and_a_replay_is_delivered_at_the_next_start() {
    let data = tempfile::tempdir().expect("a data directory");
    let healthy = Arc::new(AtomicBool::new(false));
    let mut server = XmppServer::start().await;
    let hook = Hook::start(unavailable_until(healthy.clone())).await;
    let config = BridgeConfig::new(&server, &hook.url())
        .key("retry_for = \"1s\"")
        .key(FAST_RETRIES)
        .data_dir(data.path());
    let mut bridge = config.spawn();
    let mut conn = server.accept().await;
    // One stanza the hook takes before the stop: it leaves the queue for good.
    healthy.store(true, Ordering::SeqCst);
    conn.send(&chat(ALICE, ECHO, "ok1", "taken")).await;
    assert_echo(&conn.with_id("ok1").await, "taken");
    healthy.store(false, Ordering::SeqCst);
    conn.send(&chat(ALICE, ECHO, "s1", "after the restart"))
        .await;
    assert_503_bounce(&conn.with_id("s1").await, ALICE, "s1");
    let webhook_id = hook.request_with_id("s1").await.webhook_id();
    bridge.terminate();
    let status = bridge.exit_within(WAIT).await.expect("the bridge stops");
    assert_eq!(status.code(), Some(0));

    let human = bridge.dead_letters(&["list"]).await;
    assert_eq!(human.code(), Some(0), "{human:?}");
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&HEADER), "{}", human.stdout);
    assert_eq!(lines.len(), 2, "{}", human.stdout);
    let row: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(row.len(), 5, "{}", lines[1]);
    assert_eq!((row[2], row[3]), (ALICE, ECHO));
    assert!(row[4].contains("503"), "{}", lines[1]);
    let letters = bridge.dead_letter_list().await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(text(&letters[0], "webhook_id"), webhook_id);
    let id = letter_id(&letters[0]);
    assert_eq!(row[0], id.to_string());

    assert_ok(
        &bridge.dead_letters(&["replay", &id.to_string()]).await,
        "1 dead letter(s)",
    );
    assert!(
        bridge.dead_letter_list().await.is_empty(),
        "a replayed dead letter is back in the queue"
    );

    healthy.store(true, Ordering::SeqCst);
    let calls = hook.requests_with_id("s1").len();
    let restarted = config.spawn();
    let mut conn = server.accept().await;
    assert_echo(&conn.with_id("s1").await, "after the restart");
    let delivered = hook.requests_with_id("s1");
    assert_eq!(delivered.len(), calls + 1, "delivered once at the start");
    assert_eq!(
        hook.requests_with_id("ok1").len(),
        1,
        "a stanza the hook took before the stop is not delivered again"
    );
    assert_eq!(
        delivered.last().expect("the delivery").webhook_id(),
        webhook_id,
        "the replay keeps the webhook-id"
    );

    // New stanzas on the same queue get new ids, not ones used before the restart.
    conn.send(&chat(ALICE, ECHO, "s2", "new")).await;
    assert_echo(&conn.with_id("s2").await, "new");
    let fresh = hook.request_with_id("s2").await.webhook_id();
    assert_ne!(fresh, webhook_id);
    assert!(restarted.dead_letter_list().await.is_empty());
}

#[tokio::test]
async fn a_crash_loses_nothing_that_was_read() {
    let (data, mut server, hook, mut bridge, mut conn) = failing_until_restarted().await;

    let senders = [(ALICE, 'a'), (BOB, 'b')];
    let mut burst = String::new();
    for n in 0..10 {
        for (sender, letter) in senders {
            burst.push_str(&chat(
                sender,
                ECHO,
                &format!("{letter}{n}"),
                &format!("{letter} {n}"),
            ));
        }
    }
    conn.send(&burst).await;
    // Read after the 20 and in a conversation of its own, so it is posted only after its own
    // commit, and the queue commits in the order it reads: once the hook sees it, the 20
    // before it are on disk too.
    conn.send(&chat(CAROL, ECHO, "c0", "c 0")).await;
    let seen = hook
        .wait_until("the heads of the three conversations", |requests| {
            ["a0", "b0", "c0"]
                .iter()
                .all(|id| requests.iter().any(|r| r.field("id") == Some(id)))
        })
        .await;
    let before: HashMap<String, String> = seen
        .iter()
        .map(|r| (r.field("id").unwrap_or("?").to_owned(), r.webhook_id()))
        .collect();
    assert!(
        before
            .keys()
            .all(|id| ["a0", "b0", "c0"].contains(&id.as_str())),
        "only the head of each conversation is tried while it fails: {:?}",
        before.keys().collect::<Vec<_>>()
    );

    bridge.kill();
    drop(conn);

    let _restarted = BridgeConfig::new(&server, &hook.url_of("/after"))
        .key(FAST_RETRIES)
        .data_dir(data.path())
        .spawn();
    let mut conn = server.accept().await;
    for (sender, letter) in senders {
        for n in 0..10 {
            let reply = conn.next_to(sender).await;
            assert_eq!(
                reply.attr("id"),
                Some(format!("{letter}{n}").as_str()),
                "replies to {sender} in the order it wrote: {}",
                to_xml(&reply)
            );
            assert_echo(&reply, &format!("{letter} {n}"));
        }
    }
    assert_echo(&conn.next_to(CAROL).await, "c 0");

    let after: Vec<Request> = hook
        .requests()
        .into_iter()
        .filter(|r| r.path == "/after")
        .collect();
    let ids: Vec<&str> = after.iter().map(|r| r.field("id").unwrap_or("?")).collect();
    assert_eq!(after.len(), 21, "each stanza delivered once: {ids:?}");
    for (_, letter) in senders {
        let order: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| id.starts_with(letter))
            .collect();
        let expected: Vec<String> = (0..10).map(|n| format!("{letter}{n}")).collect();
        assert_eq!(order, expected, "order at the hook per sender");
    }
    for (id, webhook_id) in &before {
        let request = after
            .iter()
            .find(|r| r.field("id") == Some(id.as_str()))
            .expect("delivered after the restart");
        assert_eq!(
            &request.webhook_id(),
            webhook_id,
            "{id} keeps its webhook-id across the crash"
        );
    }
    let distinct: HashSet<String> = after.iter().map(Request::webhook_id).collect();
    assert_eq!(distinct.len(), 21, "one webhook-id per stanza");
}

#[tokio::test]
async fn a_stop_keeps_a_stanza_being_retried_and_the_next_start_delivers_it() {
    let (data, mut server, hook, mut bridge, mut conn) = failing_until_restarted().await;
    conn.send(&chat(ALICE, ECHO, "k1", "hold on")).await;
    let seen = hook
        .wait_until("two attempts at k1", |requests| requests.len() >= 2)
        .await;
    let webhook_id = seen[0].webhook_id();

    let stopping = Instant::now();
    bridge.terminate();
    let status = bridge.exit_within(WAIT).await.expect("the bridge stops");
    assert_eq!(status.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "a stanza waiting for its next retry must not hold up the stop ({:?})",
        stopping.elapsed()
    );
    conn.ended().await;
    assert!(
        conn.try_stanza_where(Duration::ZERO, |e| e.attr("id") == Some("k1"))
            .await
            .is_none(),
        "the sender is not told anything: the stanza is kept, not given up"
    );

    let _restarted = BridgeConfig::new(&server, &hook.url_of("/after"))
        .key(FAST_RETRIES)
        .data_dir(data.path())
        .spawn();
    let mut conn = server.accept().await;
    assert_echo(&conn.with_id("k1").await, "hold on");
    let delivered = hook
        .requests()
        .into_iter()
        .filter(|r| r.path == "/after")
        .collect::<Vec<_>>();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].webhook_id(), webhook_id);
}

#[tokio::test]
async fn retry_for_counts_from_when_the_stanza_was_read_across_a_restart() {
    let data = tempfile::tempdir().expect("a data directory");
    let mut server = XmppServer::start().await;
    let hook = Hook::start(|_: &Request| Reply::status(503)).await;
    let config = BridgeConfig::new(&server, &hook.url())
        .key("retry_for = \"4s\"")
        .key(FAST_RETRIES)
        .data_dir(data.path());
    let mut bridge = config.spawn();
    let mut conn = server.accept().await;
    let sent = Instant::now();
    conn.send(&chat(ALICE, ECHO, "t1", "tick")).await;
    hook.request_with_id("t1").await;
    bridge.terminate();
    let status = bridge.exit_within(WAIT).await.expect("the bridge stops");
    assert_eq!(status.code(), Some(0));

    // Down for more than half of retry_for.
    tokio::time::sleep_until(sent + Duration::from_millis(2500)).await;
    let restarted = config.spawn();
    let mut conn = server.accept().await;
    let bounce = conn.with_id("t1").await;
    let elapsed = sent.elapsed();
    assert_503_bounce(&bounce, ALICE, "t1");
    assert!(
        elapsed >= Duration::from_millis(3900) && elapsed < Duration::from_millis(5500),
        "retry_for (4 s) counts from when the stanza was read, not from the restart \
         (which would end it after 6.5 s); the error came after {elapsed:?}"
    );
    let letters = restarted.dead_letter_list().await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    letter_of(&letters, "t1");
}

/// A bridge on its own `data_dir` whose hook answers 503, except on `/after`, where it echoes.
/// The bridge started after a crash or a stop posts to `/after`: a call the first process had on
/// the wire cannot be mistaken for one of the restarted one.
async fn failing_until_restarted() -> (tempfile::TempDir, XmppServer, Hook, Bridge, Conn) {
    let data = tempfile::tempdir().expect("a data directory");
    let mut server = XmppServer::start().await;
    let hook = Hook::start(|request: &Request| {
        if request.path == "/after" {
            Reply::echo(request)
        } else {
            Reply::status(503)
        }
    })
    .await;
    let bridge = BridgeConfig::new(&server, &hook.url())
        .key(FAST_RETRIES)
        .data_dir(data.path())
        .spawn();
    let conn = server.accept().await;
    (data, server, hook, bridge, conn)
}
