//! Several instances on one shared queue (`queue = "postgres"`, README "Scaling out"), between
//! a real XMPP server, real users and a recording webhook. Every user sends numbered messages
//! (`senderN-SEQ`) to the echo bot; each instance posts to a path of its own on the one hook,
//! so that every call says which instance made it and under which `webhook-id`.
//!
//! - ejabberd with three instances, each sender's bare JID hashed onto one of three connections
//!   (`domain_balancing`): every instance takes a share, and every sender's messages reach the
//!   hook and come back in the order sent.
//! - ejabberd, one of the three SIGKILLed under load, taken over by a survivor within a third of
//!   the lease, and started again as its supervisor would: what it had committed is delivered,
//!   once each (twice, under one `webhook-id`, only what was in flight at the kill), in order
//!   per sender; what ejabberd did with the stanzas hashed to the empty slot meanwhile is
//!   counted, and the other slots' senders lose nothing.
//! - Prosody with an active instance and a standby (refused with `conflict`, retrying every
//!   second): the active one is SIGKILLed under load, the standby connects within seconds and
//!   delivers what the dead one had committed; what Prosody bounced meanwhile is counted.
//!
//! Each test prints its counts. The servers differ where a connection dies: the comments at
//! the tests say how.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use testkit::postgres::{Postgres, PostgresOptions};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_xmpp::minidom::Element;

use crate::calls::{Call, Message, assert_one_id_per_message, calls, out_of_order, seqs_by_sender};
use crate::harness::{
    Bridge, Hook, Reply, Request, Server, ServerKind, ServerOptions, StanzaErrorInfo, XmppClient,
    body, echo_text, from_component, parse_stanza_xml, stanza_error, to_xml, wait_until,
};

/// Every sender talks to this JID: one conversation per sender.
const TO: &str = "echo@bot.localhost";
/// Logins a few at a time: a login's SCRAM work is CPU-bound, and each must finish within its
/// own deadline.
const LOGINS_AT_ONCE: usize = 5;
/// The shortest lease (README, "Configuration reference"): a silent instance would be taken
/// over after it; a killed one is noticed sooner, by its session lock, within a third of it.
const LEASE: &str = "3s";
/// How long the senders wait for their last echoes: generous, for a machine that runs other
/// tests beside these.
const SETTLE: Duration = Duration::from_secs(30);
/// Deadline for a phase of the load (calls to be seen, a login to happen).
const PHASE: Duration = Duration::from_secs(30);
/// How long a receive waits before a condition is looked at again.
const POLL_CLIENT: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------------------------

/// The configuration of instance `name` on the shared queue.
fn shared_queue(postgres: &Postgres, name: &str) -> String {
    format!(
        "queue = \"postgres\"\npostgres_url = \"{}\"\ninstance = \"{name}\"\nqueue_lease = \"{LEASE}\"\n",
        postgres.url()
    )
}

/// The path instance `name` posts to on the shared hook.
fn path_of(name: &str) -> String {
    format!("/{name}")
}

/// Starts the instances `names` one after the other (each logged in before the next starts).
async fn start_instances(
    server: &Server,
    hook: &Hook,
    postgres: &Postgres,
    names: &[&str],
) -> Vec<Bridge> {
    let mut bridges = Vec::with_capacity(names.len());
    for name in names {
        bridges.push(
            Bridge::start(
                server,
                &hook.url_of(&path_of(name)),
                &shared_queue(postgres, name),
            )
            .await,
        );
    }
    bridges
}

/// The accounts of `count` senders, made when the server starts.
fn sender_accounts(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (sender_name(i), format!("throwaway-{}", sender_name(i))))
        .collect()
}

fn sender_name(index: usize) -> String {
    format!("sender{index}")
}

// ---------------------------------------------------------------------------------------------
// Senders
// ---------------------------------------------------------------------------------------------

/// A user sending numbered messages to [`TO`] and sorting what comes back.
struct Sender {
    name: String,
    client: XmppClient,
    sent_at: BTreeMap<u32, Instant>,
    /// Sequence numbers of the echoes, in arrival order, repeats included.
    echoes: Vec<u32>,
    /// Sequence number → the error that came back.
    errors: BTreeMap<u32, StanzaErrorInfo>,
    /// Anything else, or a second error for one message.
    unexpected: Vec<String>,
    /// The last message, sent once the load is over: its echo comes after everything before
    /// it in the conversation that was committed.
    marker: Option<u32>,
}

impl Sender {
    async fn connect(server: &Server, index: usize) -> Sender {
        let name = sender_name(index);
        let client = server.client_as(&name, &format!("throwaway-{name}")).await;
        Sender {
            name,
            client,
            sent_at: BTreeMap::new(),
            echoes: Vec::new(),
            errors: BTreeMap::new(),
            unexpected: Vec::new(),
            marker: None,
        }
    }

    fn id(&self, seq: u32) -> String {
        format!("{}-{seq}", self.name)
    }

    /// Sends message `seq`, then takes in whatever has arrived meanwhile.
    async fn send(&mut self, seq: u32) {
        let id = self.id(seq);
        self.client
            .send_xml(&format!(
                "<message to='{TO}' type='chat' id='{id}'><body>{id}</body></message>"
            ))
            .await;
        self.sent_at.insert(seq, Instant::now());
        while let Some(element) = self.client.recv_any(Duration::ZERO).await {
            self.take(element);
        }
    }

    /// Receives until `done` holds or `timeout` has passed.
    async fn settle(&mut self, timeout: Duration, done: impl Fn(&Sender) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(element) = self.client.recv_any(left.min(POLL_CLIENT)).await {
                self.take(element);
            }
        }
    }

    fn take(&mut self, element: Element) {
        if element.name() != "message" {
            return;
        }
        let prefix = format!("{}-", self.name);
        let seq = element
            .attr("id")
            .and_then(|id| id.strip_prefix(&prefix))
            .and_then(|seq| seq.parse::<u32>().ok())
            .filter(|seq| self.sent_at.contains_key(seq) && from_component(&element));
        let Some(seq) = seq else {
            self.unexpected.push(to_xml(&element));
            return;
        };
        if let Some(error) = stanza_error(&element) {
            if self.errors.insert(seq, error).is_some() {
                self.unexpected
                    .push(format!("a second error: {}", to_xml(&element)));
            }
        } else if body(&element) == Some(echo_text(&self.id(seq))) {
            self.echoes.push(seq);
        } else {
            self.unexpected.push(to_xml(&element));
        }
    }

    fn echoed(&self, seq: u32) -> usize {
        self.echoes.iter().filter(|&&s| s == seq).count()
    }

    /// The echoes' sequence numbers without repeats, in the order they first came.
    fn first_echoes(&self) -> Vec<u32> {
        let mut seen = BTreeSet::new();
        self.echoes
            .iter()
            .copied()
            .filter(|seq| seen.insert(*seq))
            .collect()
    }
}

/// `count` senders, logged in [`LOGINS_AT_ONCE`] at a time.
async fn connect_senders(server: &Server, count: usize) -> Vec<Sender> {
    let started = Instant::now();
    let mut senders = Vec::with_capacity(count);
    for first in (0..count).step_by(LOGINS_AT_ONCE) {
        let batch = first..count.min(first + LOGINS_AT_ONCE);
        senders.extend(futures::future::join_all(batch.map(|i| Sender::connect(server, i))).await);
    }
    eprintln!("{count} users logged in in {:?}", started.elapsed());
    senders
}

async fn join_senders(tasks: Vec<tokio::task::JoinHandle<Sender>>) -> Vec<Sender> {
    let mut senders = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(sender) => senders.push(sender),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("a sender's task failed: {error}"),
        }
    }
    senders
}

/// Every sender sends a message per `pace` until `stop` is set, then a marker, and waits for
/// the marker's echo.
fn keep_sending(
    senders: Vec<Sender>,
    pace: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Sender>> {
    senders
        .into_iter()
        .map(|mut sender| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(pace);
                // A runtime busy for a moment must not turn into a burst of sends.
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) {
                    ticks.tick().await;
                    sender.send(seq).await;
                    seq += 1;
                }
                sender.marker = Some(seq);
                sender.send(seq).await;
                sender.settle(SETTLE, |s| s.echoes.contains(&seq)).await;
                sender
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What the hook saw
// ---------------------------------------------------------------------------------------------

/// Instance → how many calls it made.
fn calls_per_instance(calls: &[Call]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        *counts.entry(call.instance.clone()).or_default() += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// (1) Three instances behind ejabberd share the load
// ---------------------------------------------------------------------------------------------

const SHARE_INSTANCES: [&str; 3] = ["share-a", "share-b", "share-c"];
const SHARE_SENDERS: usize = 30;
const SHARE_PER_SENDER: u32 = 20;

#[tokio::test]
async fn three_instances_behind_ejabberd_share_the_load_in_order_per_sender() {
    if !ServerKind::Ejabberd.require() || !Postgres::available() {
        return;
    }
    let started = Instant::now();
    let postgres = Postgres::start(PostgresOptions::default()).await;
    let server = balanced_ejabberd(SHARE_INSTANCES.len(), SHARE_SENDERS).await;
    let hook = Hook::start(Reply::echo).await;
    let _bridges = start_instances(&server, &hook, &postgres, &SHARE_INSTANCES).await;
    let senders = connect_senders(&server, SHARE_SENDERS).await;

    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                for seq in 0..SHARE_PER_SENDER {
                    sender.send(seq).await;
                }
                sender
                    .settle(SETTLE, |s| s.echoes.len() >= SHARE_PER_SENDER as usize)
                    .await;
                sender
            })
        })
        .collect();
    let senders = join_senders(tasks).await;

    // Every sender got its echoes once each, in the order it sent.
    let all: Vec<u32> = (0..SHARE_PER_SENDER).collect();
    let wrong: Vec<String> = senders
        .iter()
        .filter(|s| s.echoes != all || !s.errors.is_empty() || !s.unexpected.is_empty())
        .map(|s| {
            format!(
                "{}: echoes {:?}, errors {:?}, unexpected {:?}",
                s.name, s.echoes, s.errors, s.unexpected
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The hook saw each message once, in order per sender, each sender from one instance.
    let calls = calls(&hook.requests());
    assert_one_id_per_message(&calls);
    let total = SHARE_SENDERS * SHARE_PER_SENDER as usize;
    assert_eq!(calls.len(), total, "calls: one per message");
    let by_sender = seqs_by_sender(&calls);
    assert!(
        by_sender.values().all(|seqs| *seqs == all),
        "the hook's calls per sender: {:#?}",
        out_of_order(&by_sender)
    );
    let mut instances_of_sender: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for call in &calls {
        instances_of_sender
            .entry(&call.sender)
            .or_default()
            .insert(&call.instance);
    }
    let spread: Vec<_> = instances_of_sender
        .iter()
        .filter(|(_, instances)| instances.len() > 1)
        .collect();
    // bare_source hashes a sender onto one connection, and so onto one instance.
    assert!(
        spread.is_empty(),
        "senders served by several instances: {spread:?}"
    );
    let per_instance = calls_per_instance(&calls);
    eprintln!(
        "{total} messages from {SHARE_SENDERS} senders; calls per instance {per_instance:?}; \
         senders per instance {:?}; {:?} in all",
        senders_per_instance(&instances_of_sender),
        started.elapsed()
    );
    for name in SHARE_INSTANCES {
        assert!(
            per_instance.get(name).is_some_and(|&n| n > 0),
            "{name} delivered nothing: {per_instance:?}"
        );
    }
}

fn senders_per_instance(
    instances_of_sender: &BTreeMap<&str, BTreeSet<&str>>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for instances in instances_of_sender.values() {
        for instance in instances {
            *counts.entry((*instance).to_owned()).or_default() += 1;
        }
    }
    counts
}

/// An ejabberd that spreads the component's stanzas over `connections` connections by the
/// sender's bare JID, with `senders` accounts; logging only what the harness reads, since the
/// load would otherwise be mostly ejabberd writing its debug log.
async fn balanced_ejabberd(connections: usize, senders: usize) -> Server {
    Server::start_with(
        ServerKind::Ejabberd,
        &ServerOptions {
            component_connections: Some(connections as u32),
            accounts: sender_accounts(senders),
            quiet: true,
            ..ServerOptions::default()
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The reckoning after a kill
// ---------------------------------------------------------------------------------------------

/// What the test knows about the kill of one instance.
struct Kill {
    /// The killed instance; its calls are those to its [`path_of`] (a process started again
    /// under its name is made to post elsewhere: [`restarted`]).
    victim: String,
    at: Instant,
    /// The messages in the queue right after the kill (every instance's), with their
    /// `webhook-id`s. A survivor may have taken over the victim's already: its rows then name
    /// the survivor, and so the victim's are told by their senders instead.
    queued: BTreeMap<Message, String>,
}

impl Kill {
    /// SIGKILLs `bridge` (instance `victim`) and reads the queue at once.
    async fn of(bridge: &mut Bridge, victim: &str, postgres: &Postgres) -> Kill {
        bridge.kill();
        let at = Instant::now();
        Kill {
            victim: victim.to_owned(),
            at,
            queued: queued_messages(postgres).await,
        }
    }

    /// Whether `call` was made by the killed process.
    fn by_the_dead(&self, call: &Call) -> bool {
        call.instance == self.victim
    }

    /// The senders the killed process made calls for: those the server routed to it.
    fn victims_senders(&self, calls: &[Call]) -> BTreeSet<String> {
        calls
            .iter()
            .filter(|call| self.by_the_dead(call))
            .map(|call| call.sender.clone())
            .collect()
    }

    /// The `webhook-id`s of the queued stanzas the killed process held.
    fn victims_queue(&self, calls: &[Call]) -> BTreeSet<&str> {
        let senders = self.victims_senders(calls);
        self.queued
            .iter()
            .filter(|((sender, _), _)| senders.contains(sender))
            .map(|(_, id)| id.as_str())
            .collect()
    }
}

/// What the killed process read, against what it had committed: how many messages its log
/// says it read (before any restart), and how many of its senders' messages it had posted or
/// left in the queue. The difference was read but not yet committed when it died.
fn read_and_committed_by_the_dead(bridge: &Bridge, requests: &[Request], kill: &Kill) -> String {
    let log = std::fs::read_to_string(bridge.log_path()).unwrap_or_default();
    let read = log
        .split("----- started again -----")
        .next()
        .unwrap_or_default()
        .matches("stanza received kind=\"message\"")
        .count();
    let calls = calls(requests);
    let senders = kill.victims_senders(&calls);
    let mut committed: BTreeSet<Message> = calls
        .iter()
        .filter(|call| kill.by_the_dead(call))
        .map(Call::message)
        .collect();
    committed.extend(
        kill.queued
            .keys()
            .filter(|(sender, _)| senders.contains(sender))
            .cloned(),
    );
    if read == 0 {
        // The harness logs at debug unless RUST_LOG says otherwise.
        return format!(
            "the killed process had committed {} (its log, without debug, does not say what it read)",
            committed.len()
        );
    }
    format!(
        "the killed process logged {read} messages read and had committed {}",
        committed.len()
    )
}

/// The instance name a restarted process of `instance` posts as ([`Bridge::change_hook_url`]).
fn restarted(instance: &str) -> String {
    format!("{instance}-restarted")
}

/// The messages in the shared queue (schema in `src/queue/postgres.rs`), with the `webhook-id`
/// each is posted under (README, "The webhook contract": `msg_` + the database's id in hex +
/// `_` + the stanza's id).
async fn queued_messages(postgres: &Postgres) -> BTreeMap<Message, String> {
    let rows = postgres
        .psql_rows(
            "SELECT s.id, s.raw, m.value FROM component_http.stanzas s
             CROSS JOIN component_http.meta m WHERE m.key = 'database_id' AND s.direction = 0",
        )
        .await;
    rows.iter()
        .map(|row| {
            let [id, raw, database_id] = row.as_slice() else {
                panic!("a row of three columns: {row:?}");
            };
            let stanza = parse_stanza_xml(raw, "jabber:component:accept");
            let message = stanza
                .attr("id")
                .and_then(|id| id.rsplit_once('-'))
                .and_then(|(sender, seq)| Some((sender.to_owned(), seq.parse().ok()?)))
                .unwrap_or_else(|| panic!("a queued stanza the test did not send: {raw}"));
            let database_id: i64 = database_id.parse().expect("the database's id");
            (message, format!("msg_{:016x}_{id}", database_id as u64))
        })
        .collect()
}

/// What happened to the messages of a run with a kill, counted per message (by sender and
/// sequence number) and per `webhook-id`.
#[derive(Default)]
struct Counts {
    sent: usize,
    /// Posted to the hook, or in the queue at the kill.
    committed: usize,
    /// Echoed to their sender.
    delivered: usize,
    /// `webhook-id`s posted more than once.
    duplicated: usize,
    /// Answered with an error by the server: sent while no instance served the sender.
    bounced: usize,
    /// No answer at all, sent after the kill: dropped by the server.
    dropped: usize,
    /// No answer at all, sent before the kill: unread or uncommitted in the killed process.
    lost_at_kill: usize,
    /// Posted and answered before the kill, but the killed process had not written the echo.
    replies_lost: usize,
    /// In the queue at the kill (all instances'), and the killed instance's of them.
    queued_at_kill: usize,
    queued_by_victim: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, committed {}, delivered {}, duplicated {} (by webhook-id), \
             bounced by the server {}, dropped by the server {}, lost at the kill (unread or uncommitted) {}, \
             echoes lost with the killed process {}; in the queue at the kill {} ({} the killed \
             instance's)",
            self.sent,
            self.committed,
            self.delivered,
            self.duplicated,
            self.bounced,
            self.dropped,
            self.lost_at_kill,
            self.replies_lost,
            self.queued_at_kill,
            self.queued_by_victim
        )
    }
}

/// Asserts what a kill may and may not do to the messages, and counts them: nothing committed
/// is lost, a repeat is a message in flight at the kill posted again under its `webhook-id`,
/// order holds per sender. `error_of_the_server` says which errors the server answers for the
/// component's JIDs while no connection serves their sender.
fn reckon(
    senders: &[Sender],
    requests: &[Request],
    kill: &Kill,
    error_of_the_server: impl Fn(&StanzaErrorInfo) -> bool,
) -> Counts {
    let calls = calls(requests);
    assert_one_id_per_message(&calls);
    let mut calls_of: BTreeMap<Message, Vec<&Call>> = BTreeMap::new();
    for call in &calls {
        calls_of.entry(call.message()).or_default().push(call);
    }
    let mut counts = Counts {
        queued_at_kill: kill.queued.len(),
        queued_by_victim: kill.victims_queue(&calls).len(),
        ..Counts::default()
    };
    let mut wrong = Vec::new();

    for sender in senders {
        let marker = sender.marker.expect("every sender sent its marker");
        if !sender.echoes.contains(&marker) {
            wrong.push(format!(
                "{}: no echo to its last message ({marker}) within {SETTLE:?}",
                sender.name
            ));
        }
        wrong.extend(
            sender
                .unexpected
                .iter()
                .map(|u| format!("{}: {u}", sender.name)),
        );
        for (&seq, &sent_at) in &sender.sent_at {
            counts.sent += 1;
            let message = (sender.name.clone(), seq);
            let seen = calls_of.get(&message).map(Vec::as_slice).unwrap_or(&[]);
            let queued = kill.queued.get(&message);
            let echoed = sender.echoed(seq);
            let error = sender.errors.get(&seq);
            let what = format!("{}-{seq}", sender.name);
            if echoed > 0 {
                counts.delivered += 1;
            }
            if let Some(error) = error {
                counts.bounced += 1;
                if !error_of_the_server(error) {
                    wrong.push(format!(
                        "{what}: bounced with {error:?}, which this server does not answer \
                         while no connection serves the sender"
                    ));
                }
                if !seen.is_empty() || queued.is_some() {
                    wrong.push(format!(
                        "{what}: bounced with {error:?}, but posted {} times, queued {queued:?}",
                        seen.len()
                    ));
                }
            }
            if seen.is_empty() && queued.is_none() {
                if error.is_none() && echoed == 0 {
                    if sent_at < kill.at {
                        counts.lost_at_kill += 1;
                    } else {
                        counts.dropped += 1;
                    }
                } else if echoed > 0 {
                    wrong.push(format!("{what}: echoed, but never posted"));
                }
                continue;
            }
            counts.committed += 1;
            // What was queued at the kill is posted again after it, by a live process, under
            // the id it was queued with, and echoed.
            if let Some(id) = queued
                && !seen
                    .iter()
                    .any(|c| !kill.by_the_dead(c) && &c.webhook_id == id)
            {
                wrong.push(format!(
                    "{what}: queued at the kill as {id}, not posted by a live instance since: {}",
                    describe(seen, kill)
                ));
            }
            // A call the kill cut off (no answer before it) had no final outcome: its stanza
            // was still in the queue, so a live process posts it again, under its id. (The
            // queue read after the kill may come too late to show it: a survivor can take it
            // over and deliver it first.)
            let cut_off = seen
                .iter()
                .any(|c| kill.by_the_dead(c) && c.answered.is_none_or(|at| at >= kill.at));
            if cut_off && !seen.iter().any(|c| !kill.by_the_dead(c)) {
                wrong.push(format!(
                    "{what}: its call was cut off by the kill, and no live process posted it \
                     since: {}",
                    describe(seen, kill)
                ));
            }
            // Posted twice only if in flight at the kill: posted by the killed process, which
            // died before its removal was committed, then once more by a live one.
            if seen.len() > 1 {
                counts.duplicated += 1;
                let in_flight =
                    seen.len() == 2 && kill.by_the_dead(seen[0]) && !kill.by_the_dead(seen[1]);
                if !in_flight {
                    wrong.push(format!(
                        "{what}: posted {} times, not as a stanza in flight at the kill: {}",
                        seen.len(),
                        describe(seen, kill)
                    ));
                }
            }
            if echoed > 1 && seen.len() < 2 {
                wrong.push(format!("{what}: echoed {echoed} times, posted once"));
            }
            if echoed == 0 {
                // Only the killed process may have left a posted message without its echo:
                // the hook answered it, and the process died before writing the reply.
                let reply_lost = seen.iter().all(|c| kill.by_the_dead(c))
                    && seen
                        .iter()
                        .all(|c| c.answered.is_some_and(|at| at < kill.at));
                if reply_lost {
                    counts.replies_lost += 1;
                } else {
                    wrong.push(format!(
                        "{what}: committed but never echoed: {}",
                        describe(seen, kill)
                    ));
                }
            }
        }
        // In order per sender: the echoes as they first came.
        let first = sender.first_echoes();
        if first.windows(2).any(|w| w[0] >= w[1]) {
            wrong.push(format!("{}: echoes out of order: {first:?}", sender.name));
        }
    }
    // Removals are committed in the order they are made: what the killed process posted again
    // is the end of what it posted for a sender, never something before the end.
    for (sender, seqs) in seqs_by_sender(calls.iter().filter(|c| kill.by_the_dead(c))) {
        let again = |seq: &u32| calls_of[&(sender.clone(), *seq)].len() > 1;
        if let Some(first) = seqs.iter().position(again)
            && !seqs[first..].iter().all(again)
        {
            wrong.push(format!(
                "{sender}: posted again after the kill were not the last the killed process \
                 posted: {:?} of its {seqs:?}",
                seqs.iter().filter(|seq| again(seq)).collect::<Vec<_>>()
            ));
        }
    }
    // In order per sender: first calls, the killed process's calls, the others' calls.
    let mut firsts: Vec<&Call> = calls_of.values().map(|seen| seen[0]).collect();
    firsts.sort_by_key(|c| c.arrived);
    for (what, part) in [
        ("first calls", seqs_by_sender(firsts.iter().copied())),
        (
            "calls of the killed process",
            seqs_by_sender(calls.iter().filter(|c| kill.by_the_dead(c))),
        ),
        (
            "calls of the live processes",
            seqs_by_sender(calls.iter().filter(|c| !kill.by_the_dead(c))),
        ),
    ] {
        wrong.extend(
            out_of_order(&part)
                .into_iter()
                .map(|s| format!("{what} out of order: {s}")),
        );
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{counts}");
    counts
}

fn describe(calls: &[&Call], kill: &Kill) -> String {
    let text: Vec<String> = calls
        .iter()
        .map(|c| {
            format!(
                "[{} {}, {:?} after the kill, answered {:?}]",
                c.instance,
                c.webhook_id,
                c.arrived.saturating_duration_since(kill.at),
                c.answered.map(|at| at.saturating_duration_since(kill.at))
            )
        })
        .collect();
    text.join(" ")
}

/// Instance → how many of the killed instance's queued stanzas it posted after the kill.
fn reposted_by(requests: &[Request], kill: &Kill) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let calls = calls(requests);
    let victims_queue = kill.victims_queue(&calls);
    for call in &calls {
        if !kill.by_the_dead(call) && victims_queue.contains(call.webhook_id.as_str()) {
            *counts.entry(call.instance.clone()).or_default() += 1;
        }
    }
    counts
}

/// The messages the server bounced or dropped (answered with an error, or not at all, and
/// never posted): `sender-seq` → when it was sent, from the kill (negative: before).
fn turned_away(senders: &[Sender], requests: &[Request], kill: &Kill) -> Vec<(String, f64)> {
    let posted: BTreeSet<Message> = calls(requests).iter().map(Call::message).collect();
    let mut away = Vec::new();
    for sender in senders {
        for (&seq, &sent_at) in &sender.sent_at {
            let message = (sender.name.clone(), seq);
            if posted.contains(&message) || kill.queued.contains_key(&message) {
                continue;
            }
            let from_kill = if sent_at >= kill.at {
                sent_at.duration_since(kill.at).as_secs_f64()
            } else {
                -kill.at.duration_since(sent_at).as_secs_f64()
            };
            away.push((format!("{}-{seq}", sender.name), from_kill));
        }
    }
    away
}

/// Asserts that the server turned messages away only while no connection served their
/// senders, from a little before the kill (what the killed process had not read or committed)
/// to `served_again` after it (plus the time the harness takes to see the login); returns
/// the window's bounds, from the kill.
fn assert_turned_away_only_meanwhile(
    away: &[(String, f64)],
    served_again: Duration,
) -> Option<(f64, f64)> {
    let late: Vec<_> = away
        .iter()
        .filter(|(_, at)| *at > (served_again + LOGIN_SEEN_WITHIN).as_secs_f64())
        .collect();
    assert!(
        late.is_empty(),
        "turned away though sent {served_again:?} or more after the kill, when a connection \
         served the domain again: {late:?}"
    );
    let first = away.iter().map(|(_, at)| *at).reduce(f64::min)?;
    let last = away.iter().map(|(_, at)| *at).reduce(f64::max)?;
    Some((first, last))
}

/// Between a component's login and the harness reading it in the server's log.
const LOGIN_SEEN_WITHIN: Duration = Duration::from_secs(1);

/// The bounces the senders got, by (type, condition).
fn bounce_conditions(senders: &[Sender]) -> BTreeMap<(String, String), usize> {
    let mut conditions = BTreeMap::new();
    for error in senders.iter().flat_map(|s| s.errors.values()) {
        *conditions
            .entry((error.type_.clone(), error.condition.clone()))
            .or_default() += 1;
    }
    conditions
}

/// The warning an instance logs when it has taken over the stanzas of a dead one.
const TOOK_OVER: &str = "instances stopped: their stanzas and conversations are this one's now";

/// Waits until one of `survivors` has taken over what the killed instance held; returns how
/// long after the kill. A killed process's session lock is freed at once, and the survivors
/// look every third of the lease: so well within the lease, which a silent host would take.
async fn wait_for_takeover(survivors: &[Bridge], kill: &Kill) -> Duration {
    let taken_over = || {
        survivors.iter().any(|bridge| {
            std::fs::read_to_string(bridge.log_path())
                .unwrap_or_default()
                .lines()
                .any(|line| line.contains(TOOK_OVER) && line.contains(&kill.victim))
        })
    };
    assert!(
        wait_until(PHASE, taken_over).await,
        "no survivor took over {} within {PHASE:?} of its kill",
        kill.victim
    );
    let took = kill.at.elapsed();
    assert!(
        took < TAKEOVER_WITHIN,
        "a survivor took over {} only {took:?} after its kill (the lease is {LEASE})",
        kill.victim
    );
    took
}

/// Sooner than [`LEASE`]: a takeover this quick was prompted by the freed lock, not by the
/// lease running out.
const TAKEOVER_WITHIN: Duration = Duration::from_millis(2900);

/// Waits until the hook has seen `n` calls from `instance` that arrived after `since`.
async fn wait_for_calls(hook: &Hook, instance: &str, since: Instant, n: usize) {
    let path = path_of(instance);
    let count = || {
        hook.requests()
            .iter()
            .filter(|r| r.path == path && r.arrived >= since)
            .count()
    };
    assert!(
        wait_until(PHASE, || count() >= n).await,
        "the hook saw {} of {n} calls from {instance} within {PHASE:?}",
        count()
    );
}

/// Waits until the hook has seen `n` calls for messages that the killed instance's senders sent
/// to its slot after it died: neither posted by the killed process nor in the queue at the
/// kill, they can only have come in through the connection that took the slot since.
async fn wait_for_the_slot_served_again(hook: &Hook, kill: &Kill, n: usize) {
    let count = || {
        let calls = calls(&hook.requests());
        let senders = kill.victims_senders(&calls);
        let by_the_dead: BTreeSet<Message> = calls
            .iter()
            .filter(|call| kill.by_the_dead(call))
            .map(Call::message)
            .collect();
        calls
            .iter()
            .filter(|call| senders.contains(&call.sender))
            .filter(|call| {
                let message = call.message();
                !by_the_dead.contains(&message) && !kill.queued.contains_key(&message)
            })
            .count()
    };
    assert!(
        wait_until(PHASE, || count() >= n).await,
        "{} of {n} calls for messages read by the restarted instance within {PHASE:?}",
        count()
    );
}

// ---------------------------------------------------------------------------------------------
// (2) ejabberd: one of three instances killed under load and restarted
// ---------------------------------------------------------------------------------------------

const FAILOVER_INSTANCES: [&str; 3] = ["failover-a", "failover-b", "failover-c"];
const FAILOVER_SENDERS: usize = 30;
/// Each sender sends one message per this interval: 300 a second in all.
const FAILOVER_PACE: Duration = Duration::from_millis(100);
/// A little slower than a sender, so that each instance has a backlog in the queue when one
/// is killed.
const FAILOVER_HOOK_DELAY: Duration = Duration::from_millis(120);
/// The victim is killed once it has made this many calls...
const KILL_AFTER: usize = 150;
/// ...and the load goes on until this many of what it read after its restart were posted.
const CALLS_AFTER_RESTART: usize = 100;

#[tokio::test]
async fn ejabberd_an_instance_killed_under_load_loses_nothing_it_had_committed() {
    if !ServerKind::Ejabberd.require() || !Postgres::available() {
        return;
    }
    let started = Instant::now();
    let postgres = Postgres::start(PostgresOptions::default()).await;
    let server = balanced_ejabberd(FAILOVER_INSTANCES.len(), FAILOVER_SENDERS).await;
    let hook = Hook::start(|request| Reply::echo(request).delay(FAILOVER_HOOK_DELAY)).await;
    let mut bridges = start_instances(&server, &hook, &postgres, &FAILOVER_INSTANCES).await;
    let senders = connect_senders(&server, FAILOVER_SENDERS).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let tasks = keep_sending(senders, FAILOVER_PACE, &stop);
    let victim = FAILOVER_INSTANCES[0];
    wait_for_calls(&hook, victim, load_started, KILL_AFTER).await;
    let kill = Kill::of(&mut bridges[0], victim, &postgres).await;
    let took_over = wait_for_takeover(&bridges[1..], &kill).await;
    // Started again as its supervisor would: the package's unit waits 2 s (`RestartSec`), by
    // when a survivor has taken over. Under the same name, so on what the name holds; it
    // takes the empty slot again. It posts to a path of its own, so that the hook tells its
    // calls from the killed process's.
    bridges[0].change_hook_url(&hook.url_of(&path_of(&restarted(victim))));
    bridges[0].restart(&server).await;
    let back = Instant::now();
    // Its slot is served again once what it reads is delivered. It hands the stanzas of a
    // conversation a survivor took over to that survivor, which keeps the conversation while
    // it has some of it (under this load, to the end): so the calls may be the survivor's.
    wait_for_the_slot_served_again(&hook, &kill, CALLS_AFTER_RESTART).await;
    stop.store(true, Ordering::SeqCst);
    let senders = join_senders(tasks).await;

    // ejabberd keeps a slot for the dead connection and drops what is hashed to it, without
    // a word to the sender, until a new connection takes the slot (README, "Scaling out").
    // Prosody, below, bounces instead.
    let counts = reckon(&senders, &hook.requests(), &kill, |_| false);
    let conditions = bounce_conditions(&senders);
    let requests = hook.requests();
    let per_instance = calls_per_instance(&calls(&requests));
    // The other slots are not touched by the kill: their senders lose nothing.
    let victims_senders = kill.victims_senders(&calls(&requests));
    let away = turned_away(&senders, &requests, &kill);
    let elsewhere: Vec<_> = away
        .iter()
        .filter(|(message, _)| {
            !victims_senders
                .iter()
                .any(|sender| message.starts_with(&format!("{sender}-")))
        })
        .collect();
    assert!(
        elsewhere.is_empty(),
        "messages of senders the killed instance did not serve were turned away: {elsewhere:?}"
    );
    let window = assert_turned_away_only_meanwhile(&away, back.duration_since(kill.at));
    eprintln!(
        "ejabberd, 3 instances, {victim} killed {:?} into the load, taken over {took_over:?} \
         and back {:?} after the kill; {counts}; bounces {conditions:?}; calls per instance \
         {per_instance:?}; its queued stanzas posted again by {:?}; turned away from {window:?} \
         s after the kill, all {} of them for its {} senders; {}; {:?} in all",
        kill.at.duration_since(load_started),
        back.duration_since(kill.at),
        reposted_by(&requests, &kill),
        away.len(),
        victims_senders.len(),
        read_and_committed_by_the_dead(&bridges[0], &requests, &kill),
        started.elapsed()
    );
    assert!(
        counts.queued_by_victim > 0,
        "the kill should find stanzas of the victim in the queue (its backlog)"
    );
    for name in FAILOVER_INSTANCES {
        assert!(
            per_instance.get(name).is_some_and(|&n| n > 0),
            "{name} delivered nothing: {per_instance:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (3) Prosody: the active instance killed under load, the standby takes over
// ---------------------------------------------------------------------------------------------

const STANDBY_SENDERS: usize = 20;
const STANDBY_PACE: Duration = Duration::from_millis(100);
const STANDBY_HOOK_DELAY: Duration = Duration::from_millis(120);
/// The load goes on until the standby has made this many calls.
const CALLS_AFTER_TAKEOVER: usize = 150;
/// The standby retries every second (README, "Scaling out"); under load, allow for more.
const STANDBY_CONNECTS_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn prosody_the_standby_takes_over_what_a_killed_instance_had_committed() {
    if !ServerKind::Prosody.require() || !Postgres::available() {
        return;
    }
    let started = Instant::now();
    let postgres = Postgres::start(PostgresOptions::default()).await;
    let server = Server::start_with(
        ServerKind::Prosody,
        &ServerOptions {
            accounts: sender_accounts(STANDBY_SENDERS),
            quiet: true,
            ..ServerOptions::default()
        },
    )
    .await;
    let hook = Hook::start(|request| Reply::echo(request).delay(STANDBY_HOOK_DELAY)).await;
    let (active, standby) = ("active", "standby");
    let mut bridges = start_instances(&server, &hook, &postgres, &[active]).await;
    // Prosody allows one connection per component: the second is refused with `conflict`,
    // and waits as a standby.
    let standby_bridge = Bridge::start_unchecked(
        &server,
        &hook.url_of(&path_of(standby)),
        &shared_queue(&postgres, standby),
    );
    let refused = wait_until(PHASE, || {
        std::fs::read_to_string(standby_bridge.log_path())
            .unwrap_or_default()
            .contains("waiting as its standby")
    })
    .await;
    assert!(
        refused,
        "Prosody did not refuse the standby with `conflict`"
    );
    let senders = connect_senders(&server, STANDBY_SENDERS).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let tasks = keep_sending(senders, STANDBY_PACE, &stop);
    wait_for_calls(&hook, active, load_started, KILL_AFTER).await;
    let logins = server.component_logins();
    let kill = Kill::of(&mut bridges[0], active, &postgres).await;
    let connected = wait_until(STANDBY_CONNECTS_WITHIN, || {
        server.component_logins() > logins
    })
    .await;
    let took = kill.at.elapsed();
    let took_over = wait_for_takeover(std::slice::from_ref(&standby_bridge), &kill).await;
    assert!(
        connected,
        "the standby did not connect within {STANDBY_CONNECTS_WITHIN:?} of the kill"
    );
    wait_for_calls(&hook, standby, kill.at, CALLS_AFTER_TAKEOVER).await;
    stop.store(true, Ordering::SeqCst);
    let senders = join_senders(tasks).await;

    // Prosody answers `wait/remote-server-timeout` for the component's JIDs once it has seen
    // the connection end and until the standby's is up (ejabberd, above, drops instead). What
    // it wrote to the dead connection before it noticed is lost without a word.
    let counts = reckon(&senders, &hook.requests(), &kill, |error| {
        (error.type_.as_str(), error.condition.as_str()) == ("wait", "remote-server-timeout")
    });
    let requests = hook.requests();
    let per_instance = calls_per_instance(&calls(&requests));
    let away = turned_away(&senders, &requests, &kill);
    let window = assert_turned_away_only_meanwhile(&away, took);
    eprintln!(
        "Prosody, active and standby, active killed {:?} into the load, standby connected \
         {took:?} and took over {took_over:?} after; {counts}; bounces {:?}; calls per instance {per_instance:?}; its queued stanzas \
         posted again by {:?}; turned away from {window:?} s after the kill; {}; {:?} in all",
        kill.at.duration_since(load_started),
        bounce_conditions(&senders),
        reposted_by(&requests, &kill),
        read_and_committed_by_the_dead(&bridges[0], &requests, &kill),
        started.elapsed()
    );
    assert!(
        counts.queued_by_victim > 0,
        "the kill should find stanzas of the active instance in the queue (its backlog)"
    );
    assert!(
        per_instance.get(standby).is_some_and(|&n| n > 0),
        "the standby delivered nothing: {per_instance:?}"
    );
}
