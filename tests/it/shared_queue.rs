//! The shared queue (`queue = "postgres"`, README "Scaling out") with two bridge processes on
//! one throwaway PostgreSQL and one scripted server: a conversation's stanzas go one at a time
//! and in arrival order whichever instance read them, and what an instance that is SIGKILLed
//! had committed is delivered by the other, once each, with its `webhook-id`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use testkit::postgres::{Postgres, PostgresOptions};

use crate::api;
use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";
const SENDERS: [&str; 3] = [
    "alice@localhost/phone",
    "bob@localhost/laptop",
    "carol@localhost/desk",
];
const PER_SENDER: usize = 5;

/// 503 while `healthy` is false, the echo bot once it is true.
fn healthy_when(healthy: Arc<AtomicBool>) -> impl Fn(&Request) -> Reply + Send + Sync {
    move |request| {
        if healthy.load(Ordering::SeqCst) {
            Reply::echo(request)
        } else {
            Reply::status(503)
        }
    }
}

fn instance(server: &XmppServer, hook: &Hook, postgres: &Postgres, name: &str) -> BridgeConfig {
    BridgeConfig::new(server, &hook.url())
        .key("queue = \"postgres\"")
        .key(&format!("postgres_url = \"{}\"", postgres.url()))
        .key(&format!("instance = \"{name}\""))
        .key("queue_lease = \"3s\"")
        .key("retry_max_interval = \"1s\"")
}

/// Instances "a" and "b" of one shared queue, each connected to the scripted server, in front
/// of a hook that answers 503 until `healthy` is set.
struct Pair {
    postgres: Postgres,
    server: XmppServer,
    healthy: Arc<AtomicBool>,
    hook: Hook,
    a: (Bridge, Conn),
    b: (Bridge, Conn),
}

impl Pair {
    async fn start() -> Pair {
        let postgres = Postgres::start(PostgresOptions::default()).await;
        let mut server = XmppServer::start().await;
        let healthy = Arc::new(AtomicBool::new(false));
        let hook = Hook::start(healthy_when(healthy.clone())).await;
        let a = instance(&server, &hook, &postgres, "a").spawn();
        let conn_a = server.accept().await;
        let b = instance(&server, &hook, &postgres, "b").spawn();
        let conn_b = server.accept().await;
        Pair {
            postgres,
            server,
            healthy,
            hook,
            a: (a, conn_a),
            b: (b, conn_b),
        }
    }
}

/// The sender of the marker that follows a burst: one per burst, so that no marker waits
/// behind another.
fn marker_sender(prefix: &str) -> String {
    format!("marker-{prefix}@localhost/pc")
}

/// Sends `PER_SENDER` messages from each sender, then a marker in a conversation of its own;
/// returns once the hook has seen the marker, when everything sent before it is committed
/// (the queue commits in the order it reads).
async fn send_and_commit(conn: &mut Conn, hook: &Hook, prefix: &str) {
    let mut burst = String::new();
    for n in 0..PER_SENDER {
        for (s, sender) in SENDERS.iter().enumerate() {
            burst.push_str(&chat(
                sender,
                ECHO,
                &format!("{prefix}{s}-{n}"),
                &format!("{prefix} {s} {n}"),
            ));
        }
    }
    conn.send(&burst).await;
    let marker = format!("{prefix}-marker");
    conn.send(&chat(&marker_sender(prefix), ECHO, &marker, "marker"))
        .await;
    hook.request_with_id(&marker).await;
}

/// Reads the replies to every sender from `conn` and asserts they answer `ids`, in order.
async fn assert_replies_in_order(conn: &mut Conn, ids: &HashMap<&str, Vec<String>>) {
    for (sender, expected) in ids {
        for id in expected {
            let reply = conn.next_to(sender).await;
            assert_eq!(
                reply.attr("id"),
                Some(id.as_str()),
                "replies to {sender} in the order it wrote: {}",
                to_xml(&reply)
            );
            assert_eq!(reply.attr("type"), Some("chat"), "{}", to_xml(&reply));
        }
    }
}

#[tokio::test]
async fn a_killed_instances_committed_stanzas_are_delivered_by_the_other_once_each() {
    if !Postgres::available() {
        return;
    }
    let Pair {
        postgres: _postgres,
        server: _server,
        healthy,
        hook,
        a: (mut a, mut conn_a),
        b: (_b, mut conn_b),
    } = Pair::start().await;

    send_and_commit(&mut conn_a, &hook, "k").await;
    let tried_by_a: HashMap<String, String> = hook
        .requests()
        .iter()
        .map(|r| (r.field("id").unwrap_or("?").to_owned(), r.webhook_id()))
        .collect();
    a.kill();
    drop(conn_a);
    healthy.store(true, Ordering::SeqCst);

    // b takes over a's stanzas and conversations and delivers them, in order per sender.
    let ids: HashMap<&str, Vec<String>> = SENDERS
        .iter()
        .enumerate()
        .map(|(s, sender)| {
            (
                *sender,
                (0..PER_SENDER).map(|n| format!("k{s}-{n}")).collect(),
            )
        })
        .collect();
    assert_replies_in_order(&mut conn_b, &ids).await;
    conn_b.next_to(&marker_sender("k")).await;

    // Counted by webhook-id: every committed stanza reached the hook under one id, the one a
    // gave it, and was answered once (above, and nothing more below).
    let requests = hook.requests();
    let mut webhook_ids: HashMap<String, HashSet<String>> = HashMap::new();
    for request in &requests {
        webhook_ids
            .entry(request.field("id").unwrap_or("?").to_owned())
            .or_default()
            .insert(request.webhook_id());
    }
    let committed = SENDERS.len() * PER_SENDER + 1;
    assert_eq!(
        webhook_ids.len(),
        committed,
        "every committed stanza reached the hook"
    );
    for (id, ids) in &webhook_ids {
        assert_eq!(ids.len(), 1, "{id} kept one webhook-id: {ids:?}");
        if let Some(first) = tried_by_a.get(id) {
            assert!(ids.contains(first), "{id} kept the webhook-id a gave it");
        }
    }
    let again = conn_b
        .try_stanza_where(Duration::from_secs(2), |e| e.attr("type") == Some("chat"))
        .await;
    assert!(
        again.is_none(),
        "answered twice: {:?}",
        again.map(|e| to_xml(&e))
    );
    eprintln!(
        "committed {committed}, delivered {} (by webhook-id), duplicated 0; a had tried {} heads",
        webhook_ids.len(),
        tried_by_a.len()
    );
}

/// The ids of `sender`'s calls to the hook, in arrival order, with the retries of a stanza
/// (consecutive calls with its id) counted once.
fn calls_of(requests: &[Request], sender: &str) -> Vec<String> {
    let mut ids: Vec<String> = requests
        .iter()
        .filter(|r| r.field("from") == Some(sender))
        .map(|r| r.field("id").unwrap_or("?").to_owned())
        .collect();
    ids.dedup();
    ids
}

#[tokio::test]
async fn a_conversation_another_instance_holds_goes_on_there_in_arrival_order() {
    if !Postgres::available() {
        return;
    }
    let Pair {
        postgres: _postgres,
        server: _server,
        healthy,
        hook,
        a: (_a, mut conn_a),
        b: (_b, mut conn_b),
    } = Pair::start().await;

    // a holds the three conversations (their heads are being retried); then the same senders'
    // next stanzas reach b, as when the server moves a sender to another connection.
    send_and_commit(&mut conn_a, &hook, "x").await;
    send_and_commit(&mut conn_b, &hook, "y").await;
    healthy.store(true, Ordering::SeqCst);

    let ids: HashMap<&str, Vec<String>> = SENDERS
        .iter()
        .enumerate()
        .map(|(s, sender)| {
            let ids = ["x", "y"]
                .iter()
                .flat_map(|prefix| (0..PER_SENDER).map(move |n| format!("{prefix}{s}-{n}")))
                .collect();
            (*sender, ids)
        })
        .collect();
    assert_replies_in_order(&mut conn_a, &ids).await;
    // Each sender's stanzas reached the hook one at a time, in the order the sender wrote,
    // though half of them were read by b.
    let requests = hook.requests();
    for (sender, expected) in &ids {
        assert_eq!(
            &calls_of(&requests, sender),
            expected,
            "the hook's calls for {sender}"
        );
    }
}

/// Runs `check` with `config` against `server`, which accepts the component.
async fn check(server: &mut XmppServer, config: BridgeConfig) -> Finished {
    let check = tokio::spawn(async move { config.check().await });
    let _conn = server.accept().await;
    check.await.expect("the check task")
}

#[tokio::test]
async fn check_reports_the_shared_queues_schema_version_and_an_unreachable_database() {
    if !Postgres::available() {
        return;
    }
    let postgres = Postgres::start(PostgresOptions::default()).await;
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let config = instance(&server, &hook, &postgres, "a");
    let before = check(&mut server, config).await;
    assert!(
        before.stdout.contains(
            "ok    PostgreSQL queue reachable as instance \"a\": schema version 0 (brought to 1 at the next start)"
        ),
        "{}",
        before.stdout
    );
    let _running = instance(&server, &hook, &postgres, "a").spawn();
    let _conn = server.accept().await;
    let config = instance(&server, &hook, &postgres, "b");
    let after = check(&mut server, config).await;
    assert!(
        after.stdout.contains("schema version 1\n"),
        "{}",
        after.stdout
    );

    let closed = ClosedPort::new();
    let unreachable = BridgeConfig::new(&server, &hook.url())
        .key("queue = \"postgres\"")
        .key(&format!(
            "postgres_url = \"postgres://bridge:throwaway-password@127.0.0.1:{}/queue\"",
            closed.port
        ));
    let failed = check(&mut server, unreachable).await;
    assert_eq!(failed.code(), Some(1), "{}", failed.stdout);
    assert!(
        failed.stdout.contains("FAIL  the PostgreSQL queue:"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("fix: check postgres_url"),
        "{}",
        failed.stdout
    );
    assert!(
        !failed.stdout.contains("throwaway-password"),
        "the URL's password is never shown:\n{}",
        failed.stdout
    );
}

#[tokio::test]
async fn with_a_shared_queue_a_refused_second_connection_waits_as_a_standby_and_retries_soon() {
    if !Postgres::available() {
        return;
    }
    let postgres = Postgres::start(PostgresOptions::default()).await;
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let _standby = instance(&server, &hook, &postgres, "b").spawn();
    // Refused as Prosody refuses a second connection for a component...
    server
        .accept_with(SECRET, Answer::StreamError("conflict"))
        .await;
    let refused_at = tokio::time::Instant::now();
    // ...it comes back within seconds (a configuration error would wait 30 s), and once the
    // domain is free it serves it.
    let mut conn = server.accept().await;
    let waited = refused_at.elapsed();
    assert!(waited < Duration::from_secs(5), "retried after {waited:?}");
    conn.send(&chat(SENDERS[0], ECHO, "s1", "standing by"))
        .await;
    assert_echo(&conn.with_id("s1").await, "standing by");
}

#[tokio::test]
async fn an_idempotency_key_holds_across_instances() {
    if !Postgres::available() {
        return;
    }
    let postgres = Postgres::start(PostgresOptions::default()).await;
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let a = api::with_api(instance(&server, &hook, &postgres, "a")).spawn();
    let mut conn_a = server.accept().await;
    let b = api::with_api(instance(&server, &hook, &postgres, "b")).spawn();
    let mut conn_b = server.accept().await;
    let send = |api: &api::Api, body: &str| {
        api.post("/v1/stanzas")
            .bearer_auth(api::TOKEN)
            .header("idempotency-key", "k-1")
            .json(&api::message("alice@localhost", body))
    };
    let (status, first) = api::answer(send(&api::Api::of(&a).await, "once")).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{first}");
    // A client retrying through another instance (behind a load balancer) gets the first answer.
    let api_b = api::Api::of(&b).await;
    let (status, again) = api::answer(send(&api_b, "once")).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{again}");
    assert_eq!(again, first, "the first answer, from the shared queue");
    conn_a
        .stanza_where("the message", |s| body_of(s).as_deref() == Some("once"))
        .await;
    // b sent nothing of it: a marker b sends after it is all b wrote.
    let (status, _) = api_b
        .stanza(api::message("alice@localhost", "marker"))
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    conn_b
        .stanza_where("the marker", |s| body_of(s).as_deref() == Some("marker"))
        .await;
    assert!(
        !conn_b.output().contains("<body>once</body>"),
        "{}",
        conn_b.output()
    );
}
