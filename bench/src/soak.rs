//! Soak mode (`--soak MINUTES`): a steady load for a long time, with hook failures and XMPP
//! server restarts mixed in, and an exact account of every message at the end.
//!
//! The harness plays the XMPP server (the scripted accept side of [`crate::isolated`]) and the
//! hook ([`crate::hook`], switchable at run time between the echo and `503`, recording each
//! call's stanza id and `webhook-id`); the bridge ([`crate::process::Bridge`]) runs with
//! `ordering = "conversation"`, the durable queue, `retry_max_interval = "2s"` and
//! `retry_for = "1h"`. 50 senders (`user{N}@localhost/r`) push chat messages with unique ids to
//! `echo@bot.localhost` at a fixed rate (`--soak-rate`, 300/s by default).
//!
//! Faults: from 1:00 on, every 2 minutes, the hook answers `503` for 20 s, so messages wait in
//! the queue and are retried. From 2:10 on, every 3 minutes (so every other restart falls into
//! a 503 phase), the server side restarts gracefully: it stops sending, writes
//! `</stream:stream>`, reads what the bridge still writes until the bridge closes its side,
//! drops the connection and its listener, listens again on the same port 1 s later, accepts the
//! bridge's reconnection and resumes sending. The bridge reads everything sent before a
//! graceful close, so nothing may go missing. Every 10 s it samples the bridge's RSS, its open
//! file descriptors (and which of them are connections to the hook or to the XMPP port), and
//! the queue depth as the harness sees it: messages sent minus messages finished (a reply or a
//! stanza error came back for that id).
//!
//! At the end sending stops, the harness waits up to 2 minutes for every message to finish, and
//! accounts for each message id: delivered (the hook answered it 200; the distinct `webhook-id`s
//! of its calls), replied, answered with a stanza error (per condition), lost (neither). It
//! prints a time series per minute and a summary block for BENCHMARKS.md, and fails (exit
//! status 1, saying why) if a message is lost, if one message's calls carried different
//! `webhook-id`s, if a reply carried the wrong body, or if the bridge grew between the first
//! and the last third of the run: largest RSS over 1.5 × the first third's + 10 MiB, largest
//! count of descriptors other than hook connections up by more than 10, or the floor of the
//! hook connections (the pool follows the load, a leak would raise its floor) up by more
//! than 10.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use component_http::xmpp::codec::{Frame, StreamReader};
use component_http::xmpp::write;
use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::hook::{self, Calls, HookBehaviour, Switch};
use crate::isolated;
use crate::process::{self, Bridge, BridgeOptions};

/// Conversations: `user0@localhost/r` … `user49@localhost/r`, each to `echo@bot.localhost`.
const SENDERS: usize = 50;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Hook failures: `503` for `FAULT_LASTS`, from `FAULT_FIRST` on, every `FAULT_EVERY`.
const FAULT_FIRST: Duration = Duration::from_secs(60);
const FAULT_EVERY: Duration = Duration::from_secs(120);
const FAULT_LASTS: Duration = Duration::from_secs(20);
/// Server restarts: from `RESTART_FIRST` on, every `RESTART_EVERY`. The offset puts every other
/// restart inside a hook failure (at 5:10, 11:10, …), while messages wait for their retry.
const RESTART_FIRST: Duration = Duration::from_secs(130);
const RESTART_EVERY: Duration = Duration::from_secs(180);
/// How long the server's listener stays closed during a restart.
const SERVER_DOWN_FOR: Duration = Duration::from_secs(1);
/// How long the bridge may take to close its side after the server's `</stream:stream>`.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);
/// How long the harness waits, after sending stops, for every message to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// A write to the bridge that takes longer than this means the bridge stopped reading.
const WRITE_LIMIT: Duration = Duration::from_secs(30);
/// Growth tolerances between the first and the last third of the run.
const RSS_GROWTH_FACTOR: f64 = 1.5;
const RSS_GROWTH_SLACK_KIB: u64 = 10 * 1024;
const FD_GROWTH_SLACK: usize = 10;
/// The bridge's retry settings in the soak: failures come back quickly, and never run out.
const RETRY_MAX_INTERVAL: Duration = Duration::from_secs(2);
const RETRY_FOR: Duration = Duration::from_secs(3600);

pub struct SoakOptions {
    pub minutes: u64,
    /// Messages per second, across all senders.
    pub rate: f64,
}

/// What came back for one message.
#[derive(Debug, Clone, Default)]
struct Fate {
    /// When it was written, in ms since the soak's start.
    sent_ms: u32,
    /// When its first reply or error came back, in ms since the soak's start.
    finished_ms: u32,
    replies: u32,
    /// Replies whose body is not the echo of this message's body.
    wrong_bodies: u32,
    errors: u32,
    /// `type/condition` of the first stanza error.
    error: Option<String>,
}

impl Fate {
    fn finished(&self) -> bool {
        self.replies > 0 || self.errors > 0
    }
}

/// Every message sent, by id (its index), and the counters the samples read.
#[derive(Default)]
struct Ledger {
    fates: Mutex<Vec<Fate>>,
    sent: AtomicU64,
    finished: AtomicU64,
    /// Replies or errors whose id the harness never sent.
    strays: AtomicU64,
    phases: AtomicU64,
    restarts: AtomicU64,
}

impl Ledger {
    fn fates(&self) -> std::sync::MutexGuard<'_, Vec<Fate>> {
        self.fates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn depth(&self) -> u64 {
        let sent = self.sent.load(Ordering::SeqCst);
        sent.saturating_sub(self.finished.load(Ordering::SeqCst))
    }
}

/// The soak's clock: everything is measured from the bridge's start.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ms(self) -> u32 {
        u32::try_from(self.0.elapsed().as_millis()).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Send,
    /// Stop sending, keep answering the bridge's pings (the drain).
    Pause,
    /// Stop sending, write `</stream:stream>` and give the write half back.
    Close,
}

/// One accepted connection: a task that sends, a task that reads.
struct Link {
    mode: watch::Sender<Mode>,
    sender: JoinHandle<anyhow::Result<OwnedWriteHalf>>,
    reader: JoinHandle<anyhow::Result<()>>,
}

impl Link {
    async fn accept(
        listener: &TcpListener,
        ledger: &Arc<Ledger>,
        clock: Clock,
        rate: f64,
    ) -> anyhow::Result<Link> {
        let (read, write, frames) = isolated::accept_bridge(listener).await?.into_parts();
        let (mode, mode_rx) = watch::channel(Mode::Send);
        let (pongs, pongs_rx) = mpsc::channel(16);
        Ok(Link {
            mode,
            sender: tokio::spawn(send_loop(
                write,
                ledger.clone(),
                clock,
                rate,
                mode_rx,
                pongs_rx,
            )),
            reader: tokio::spawn(read_loop(read, frames, ledger.clone(), clock, pongs)),
        })
    }

    /// The server's side of a graceful close: stop sending, `</stream:stream>`, read until the
    /// bridge closes its side (or `CLOSE_LIMIT`), then drop the connection.
    async fn close(self) -> anyhow::Result<Closed> {
        self.mode.send_replace(Mode::Close);
        let write = self.sender.await??;
        let closing = Instant::now();
        let mut reader = self.reader;
        let by_bridge = match timeout(CLOSE_LIMIT, &mut reader).await {
            Ok(joined) => {
                joined??;
                true
            }
            Err(_) => {
                reader.abort();
                false
            }
        };
        drop(write);
        Ok(Closed {
            after: closing.elapsed(),
            by_bridge,
        })
    }

    /// Drops the connection without a close (after the bridge closed it on its own, or at the
    /// very end).
    async fn abandon(self) {
        self.mode.send_replace(Mode::Close);
        let _ = self.sender.await;
        self.reader.abort();
    }
}

struct Closed {
    /// From the server's `</stream:stream>` to the bridge's close (or the limit).
    after: Duration,
    by_bridge: bool,
}

/// Sends at `rate` (counted from this connection's start) while the mode is `Send`, and the
/// answers to the bridge's keepalive pings.
async fn send_loop(
    mut write: OwnedWriteHalf,
    ledger: Arc<Ledger>,
    clock: Clock,
    rate: f64,
    mut mode: watch::Receiver<Mode>,
    mut pongs: mpsc::Receiver<String>,
) -> anyhow::Result<OwnedWriteHalf> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent_here: u64 = 0;
    let mut pongs_open = true;
    let mut batch = String::new();
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Close {
            break;
        }
        tokio::select! {
            changed = mode.changed() => if changed.is_err() { break },
            pong = pongs.recv(), if pongs_open => match pong {
                Some(pong) => write_timed(&mut write, pong.as_bytes()).await?,
                None => pongs_open = false,
            },
            _ = tick.tick(), if current == Mode::Send => {
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                if due <= sent_here {
                    continue;
                }
                batch.clear();
                {
                    let mut fates = ledger.fates();
                    let now = clock.ms();
                    while sent_here < due {
                        let seq = fates.len() as u64;
                        fates.push(Fate { sent_ms: now, ..Fate::default() });
                        batch.push_str(&isolated::chat_message(seq, seq as usize % SENDERS, "r"));
                        sent_here += 1;
                    }
                    ledger.sent.store(fates.len() as u64, Ordering::SeqCst);
                }
                write_timed(&mut write, batch.as_bytes()).await?;
            }
        }
    }
    write_timed(&mut write, b"</stream:stream>").await?;
    Ok(write)
}

async fn write_timed(write: &mut OwnedWriteHalf, bytes: &[u8]) -> anyhow::Result<()> {
    timeout(WRITE_LIMIT, write.write_all(bytes))
        .await
        .context("the bridge stopped reading for 30 s")??;
    Ok(())
}

/// Reads everything the bridge writes until it closes the connection: replies and errors go to
/// the ledger, keepalive pings to the sender for an answer.
async fn read_loop(
    mut read: OwnedReadHalf,
    mut frames: StreamReader,
    ledger: Arc<Ledger>,
    clock: Clock,
    pongs: mpsc::Sender<String>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = read.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        frames.feed(&buf[..n]);
        while let Some(frame) = frames.next_frame()? {
            let Frame::Element(read) = frame else {
                continue;
            };
            let element = &read.element;
            match element.name() {
                "iq" if element.attr("type") == Some("get")
                    && element.children().any(|c| c.is("ping", "urn:xmpp:ping")) =>
                {
                    let pong = format!(
                        "<iq type='result' id='{}' from='{}' to='{}'/>",
                        write::escape_attr(element.attr("id").unwrap_or_default()),
                        write::escape_attr(element.attr("to").unwrap_or_default()),
                        write::escape_attr(element.attr("from").unwrap_or_default()),
                    );
                    let _ = pongs.try_send(pong);
                }
                "message" => record(&ledger, clock, element),
                _ => {}
            }
        }
    }
}

fn record(ledger: &Ledger, clock: Clock, element: &Element) {
    let Some(seq) = element.attr("id").and_then(|id| id.parse::<usize>().ok()) else {
        ledger.strays.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut fates = ledger.fates();
    let Some(fate) = fates.get_mut(seq) else {
        ledger.strays.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let first = !fate.finished();
    if element.attr("type") == Some("error") {
        fate.errors += 1;
        if fate.error.is_none() {
            fate.error = Some(error_condition(element));
        }
    } else {
        fate.replies += 1;
        let body = element
            .children()
            .find(|c| c.name() == "body")
            .map(Element::text);
        if body.as_deref() != Some(format!("Did you say m{seq}?").as_str()) {
            fate.wrong_bodies += 1;
        }
    }
    if first {
        fate.finished_ms = clock.ms();
        ledger.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// `type/condition` of a stanza error, e.g. `wait/remote-server-timeout`.
fn error_condition(element: &Element) -> String {
    let Some(error) = element.children().find(|c| c.name() == "error") else {
        return "(no <error>)".into();
    };
    let condition = error
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "(no condition)".into());
    format!("{}/{condition}", error.attr("type").unwrap_or("?"))
}

/// One 10-second sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    /// Of those, TCP connections to the hook (the HTTP pool: their number follows the load).
    hook_conns: usize,
    /// Of those, TCP connections to the harness's XMPP port.
    xmpp_conns: usize,
    depth: u64,
    sent: u64,
    finished: u64,
    phases: u64,
    restarts: u64,
}

/// What is watched: the bridge and the ports of the hook and of the harness's XMPP side.
struct Watched {
    bridge: Bridge,
    hook_port: u16,
    xmpp_port: u16,
}

/// Samples now; `at` is the sample's scheduled time.
fn sample(watched: &Watched, ledger: &Ledger, at: Duration) -> Sample {
    let pid = watched.bridge.pid;
    Sample {
        at,
        rss_kib: watched.bridge.stats().rss_kib,
        fds: process::open_fds(pid).unwrap_or_default(),
        hook_conns: process::connections_to(pid, watched.hook_port),
        xmpp_conns: process::connections_to(pid, watched.xmpp_port),
        depth: ledger.depth(),
        sent: ledger.sent.load(Ordering::SeqCst),
        finished: ledger.finished.load(Ordering::SeqCst),
        phases: ledger.phases.load(Ordering::SeqCst),
        restarts: ledger.restarts.load(Ordering::SeqCst),
    }
}

/// The hook's failures: `503` for `FAULT_LASTS`, every `FAULT_EVERY`, starting before `end`.
async fn hook_faults(switch: Arc<Switch>, ledger: Arc<Ledger>, clock: Clock, end: Instant) {
    let mut at = clock.0 + FAULT_FIRST;
    while at < end {
        sleep_until(at).await;
        switch.set_failing(true);
        let phase = ledger.phases.fetch_add(1, Ordering::SeqCst) + 1;
        eprintln!(
            "soak {}: hook answers 503 for {} s (phase {phase})",
            clock_text(at - clock.0),
            FAULT_LASTS.as_secs()
        );
        sleep_until(at + FAULT_LASTS).await;
        switch.set_failing(false);
        at += FAULT_EVERY;
    }
}

/// One graceful server restart, as measured.
struct Restart {
    at: Duration,
    /// From `</stream:stream>` to the bridge's close.
    closed_after: Duration,
    closed_by_bridge: bool,
    /// Replies and errors read on the old connection after `</stream:stream>`.
    finished_while_closing: u64,
    /// Messages sent on the old connection still unanswered when it closed: their answers
    /// must come over the new one.
    carried_over: u64,
    /// From listening again to the bridge's completed handshake.
    reconnected_after: Duration,
    /// From the last message sent on the old connection to the first on the new one.
    paused: Duration,
}

/// Restarts the server side: close the listener and the link gracefully, stay down for
/// `SERVER_DOWN_FOR`, listen again on the same address and accept the bridge's reconnection.
async fn restart(
    link: Link,
    listener: TcpListener,
    addr: SocketAddr,
    ledger: &Arc<Ledger>,
    clock: Clock,
    rate: f64,
) -> anyhow::Result<(Link, TcpListener, Restart)> {
    let began = Instant::now();
    let at = began - clock.0;
    drop(listener);
    let finished_before = ledger.finished.load(Ordering::SeqCst);
    let closed = link.close().await?;
    let finished_while_closing = ledger.finished.load(Ordering::SeqCst) - finished_before;
    let carried_over = ledger.depth();
    sleep(SERVER_DOWN_FOR).await;
    let listener = listen_again(addr).await?;
    let listening = Instant::now();
    let link = Link::accept(&listener, ledger, clock, rate)
        .await
        .context("the bridge did not reconnect after the server's restart")?;
    let reconnected_after = listening.elapsed();
    let restarts = ledger.restarts.fetch_add(1, Ordering::SeqCst) + 1;
    let restart = Restart {
        at,
        closed_after: closed.after,
        closed_by_bridge: closed.by_bridge,
        finished_while_closing,
        carried_over,
        reconnected_after,
        paused: began.elapsed(),
    };
    eprintln!(
        "soak {}: server restart {restarts}: the bridge {} {:.2} s after </stream:stream> ({} replies read meanwhile, {} messages left to answer over the next connection), reconnected {:.2} s after the listener was back; sending paused {:.2} s",
        clock_text(at),
        if closed.by_bridge {
            "closed its side"
        } else {
            "had NOT closed its side"
        },
        restart.closed_after.as_secs_f64(),
        restart.finished_while_closing,
        restart.carried_over,
        restart.reconnected_after.as_secs_f64(),
        restart.paused.as_secs_f64(),
    );
    Ok((link, listener, restart))
}

/// Binds `addr` again (the port was the server's; it is free again in a moment).
async fn listen_again(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(error) if attempts < 100 => {
                attempts += 1;
                if attempts == 1 {
                    eprintln!("soak: cannot listen on {addr} again yet ({error}); retrying");
                }
                sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("listening on {addr} again"));
            }
        }
    }
}

/// Runs the soak and prints its report; returns why it failed (empty: it passed).
pub async fn run(options: SoakOptions) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(options.minutes >= 1, "--soak needs at least 1 minute");
    anyhow::ensure!(
        options.rate.is_finite() && options.rate > 0.0,
        "--soak-rate must be a positive number of messages per second"
    );
    let rate = options.rate;
    let switch = Arc::new(Switch::default());
    let hook_addr = hook::start(HookBehaviour::Switchable(switch.clone())).await?;
    let hook_url = format!("http://{hook_addr}/");
    let mut listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let bridge = Bridge::spawn(&BridgeOptions {
        retry_for: Some(RETRY_FOR),
        retry_max_interval: Some(RETRY_MAX_INTERVAL),
        ..BridgeOptions::defaults(addr.to_string(), isolated::SECRET, hook_url)
    })?;
    let watched = Watched {
        bridge,
        hook_port: hook_addr.port(),
        xmpp_port: addr.port(),
    };
    let ledger = Arc::new(Ledger::default());
    eprintln!(
        "soak: {} min at {rate} messages/s from {SENDERS} senders; hook 503 for {} s every {} min from {}, server restart every {} min from {}",
        options.minutes,
        FAULT_LASTS.as_secs(),
        FAULT_EVERY.as_secs() / 60,
        clock_text(FAULT_FIRST),
        RESTART_EVERY.as_secs() / 60,
        clock_text(RESTART_FIRST),
    );
    let clock = Clock(Instant::now());
    let mut link = Link::accept(&listener, &ledger, clock, rate).await?;
    let run_for = Duration::from_secs(options.minutes * 60);
    let end = clock.0 + run_for;

    let faults = tokio::spawn(hook_faults(switch.clone(), ledger.clone(), clock, end));
    let mut samples = Vec::new();
    let mut next_sample = clock.0 + SAMPLE_EVERY;
    let mut next_restart = clock.0 + RESTART_FIRST;
    let mut restarts = Vec::new();
    let mut unplanned: Vec<(Duration, String)> = Vec::new();
    loop {
        let restart_due = (next_restart < end).then_some(next_restart);
        let wake = [Some(next_sample), restart_due, Some(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        let reader_ended = tokio::select! {
            _ = sleep_until(wake) => None,
            ended = &mut link.reader => Some(ended),
        };
        if let Some(ended) = reader_ended {
            // The bridge closed the connection without being asked: note why, take it back.
            let why = match ended {
                Ok(Ok(())) => "the bridge closed the connection".to_owned(),
                Ok(Err(error)) => format!("reading from the bridge failed: {error:#}"),
                Err(error) => format!("the reader task failed: {error}"),
            };
            let at = clock.0.elapsed();
            eprintln!("soak {}: UNPLANNED disconnection: {why}", clock_text(at));
            unplanned.push((at, why));
            link.abandon().await;
            link = Link::accept(&listener, &ledger, clock, rate)
                .await
                .context("the bridge did not reconnect after an unplanned disconnection")?;
            continue;
        }
        let now = Instant::now();
        if now >= next_sample {
            let sampled = sample(&watched, &ledger, next_sample - clock.0);
            if samples.len() % 6 == 5 {
                eprintln!("soak {}: {}", clock_text(sampled.at), progress(&sampled));
            }
            samples.push(sampled);
            next_sample += SAMPLE_EVERY;
        }
        if restart_due.is_some_and(|at| now >= at) {
            let (new_link, new_listener, measured) =
                restart(link, listener, addr, &ledger, clock, rate).await?;
            link = new_link;
            listener = new_listener;
            restarts.push(measured);
            next_restart += RESTART_EVERY;
        }
        // The last sample is the one at `end`.
        if now >= end && next_sample > end {
            break;
        }
    }

    // Stop sending and wait until every message is finished.
    link.mode.send_replace(Mode::Pause);
    faults.abort();
    switch.set_failing(false);
    let stopped = Instant::now();
    sleep(Duration::from_millis(100)).await;
    while ledger.depth() > 0 && stopped.elapsed() < DRAIN_LIMIT {
        sleep(Duration::from_millis(100)).await;
    }
    let drained_after = stopped.elapsed();
    let after_drain = sample(&watched, &ledger, clock.0.elapsed());

    let calls = switch.calls();
    let account = Account::of(&ledger.fates(), &calls);
    let report = Report {
        options: &options,
        run_for,
        samples: &samples,
        after_drain,
        drained_after,
        restarts: &restarts,
        unplanned: &unplanned,
        account: &account,
        hook_totals: switch.totals(),
        strays: ledger.strays.load(Ordering::SeqCst),
    };
    let failures = report.print();
    link.abandon().await;
    drop(watched);
    Ok(failures)
}

fn progress(s: &Sample) -> String {
    format!(
        "RSS {:.1} MiB, {} fds ({} to the hook), queue depth {}, sent {}, finished {}, 503 phases {}, restarts {}",
        mib(s.rss_kib),
        s.fds,
        s.hook_conns,
        s.depth,
        s.sent,
        s.finished,
        s.phases,
        s.restarts
    )
}

/// Every message, accounted for.
#[derive(Default)]
struct Account {
    sent: usize,
    replied: usize,
    replied_twice: usize,
    wrong_body: usize,
    errored: usize,
    /// Messages that got both a reply and an error.
    replied_and_errored: usize,
    conditions: BTreeMap<String, usize>,
    lost: Vec<usize>,
    delivered: usize,
    /// The hook answered 200 for them more than once.
    delivered_twice: Vec<usize>,
    /// The hook saw them only with `503`.
    never_answered_by_hook: usize,
    /// The hook never saw them.
    never_seen_by_hook: usize,
    /// Messages with at least one `503` (so retried).
    retried: usize,
    /// Their hook calls carried more than one `webhook-id` (or none).
    mixed_ids: Vec<(usize, Vec<String>)>,
    /// Hook calls for ids the harness never sent.
    unknown_at_hook: usize,
    /// Milliseconds from sending to the first reply or error, sorted.
    latencies_ms: Vec<u32>,
}

impl Account {
    fn of(fates: &[Fate], calls: &HashMap<u64, Calls>) -> Account {
        let mut account = Account {
            sent: fates.len(),
            unknown_at_hook: calls.keys().filter(|&&id| id >= fates.len() as u64).count(),
            ..Account::default()
        };
        for (seq, fate) in fates.iter().enumerate() {
            if fate.replies > 0 {
                account.replied += 1;
            }
            if fate.replies > 1 {
                account.replied_twice += 1;
            }
            if fate.wrong_bodies > 0 {
                account.wrong_body += 1;
            }
            if let Some(condition) = &fate.error {
                account.errored += 1;
                *account.conditions.entry(condition.clone()).or_default() += 1;
                if fate.replies > 0 {
                    account.replied_and_errored += 1;
                }
            }
            if fate.finished() {
                account
                    .latencies_ms
                    .push(fate.finished_ms.saturating_sub(fate.sent_ms));
            } else {
                account.lost.push(seq);
            }
            match calls.get(&(seq as u64)) {
                None => account.never_seen_by_hook += 1,
                Some(call) => {
                    if call.answered > 0 {
                        account.delivered += 1;
                    } else {
                        account.never_answered_by_hook += 1;
                    }
                    if call.answered > 1 {
                        account.delivered_twice.push(seq);
                    }
                    if call.refused > 0 {
                        account.retried += 1;
                    }
                    if call.webhook_ids.len() != 1 || call.webhook_ids[0].is_empty() {
                        account.mixed_ids.push((seq, call.webhook_ids.clone()));
                    }
                }
            }
        }
        account.latencies_ms.sort_unstable();
        account
    }

    fn latency(&self, p: f64) -> Duration {
        if self.latencies_ms.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies_ms.len() - 1) as f64 * p).round() as usize;
        Duration::from_millis(u64::from(self.latencies_ms[index]))
    }
}

struct Report<'a> {
    options: &'a SoakOptions,
    run_for: Duration,
    samples: &'a [Sample],
    after_drain: Sample,
    drained_after: Duration,
    restarts: &'a [Restart],
    unplanned: &'a [(Duration, String)],
    account: &'a Account,
    /// Hook calls answered with the echo, and with `503`.
    hook_totals: (u64, u64),
    strays: u64,
}

impl Report<'_> {
    /// Prints the time series and the summary; returns why the soak failed, if it did.
    fn print(&self) -> Vec<String> {
        let a = self.account;
        let mut failures = Vec::new();
        println!(
            "| minute | RSS MiB | fds | of which hook conns | queue depth | sent | finished | hook 503 phases | restarts |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for minute in 1..=self.options.minutes {
            let span = Duration::from_secs((minute - 1) * 60)..=Duration::from_secs(minute * 60);
            let in_minute: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|s| span.contains(&s.at) && s.at > *span.start())
                .collect();
            table_row(&minute.to_string(), &in_minute);
        }
        table_row("drained", &[&self.after_drain]);
        println!();
        println!(
            "RSS, fds, hook connections and queue depth: the largest of the minute's {}-second samples; sent, finished and the counts: at the minute's end. \"drained\": once every message finished after sending stopped (or the drain's limit).",
            SAMPLE_EVERY.as_secs()
        );

        // Growth between the first and the last third of the run.
        let third = self.run_for / 3;
        let first: Vec<&Sample> = self.samples.iter().filter(|s| s.at <= third).collect();
        let last: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.at > self.run_for - third && s.at <= self.run_for)
            .collect();
        let max_rss = |v: &[&Sample]| v.iter().map(|s| s.rss_kib).max().unwrap_or_default();
        // The hook's pooled connections follow the load (a burst after a 503 phase opens
        // dozens, idle ones close after 90 s), so they are judged apart: the other descriptors
        // by their largest count, the pool by its floor, which a leak would raise.
        let max_other = |v: &[&Sample]| {
            v.iter()
                .map(|s| s.fds.saturating_sub(s.hook_conns))
                .max()
                .unwrap_or_default()
        };
        let min_hook = |v: &[&Sample]| v.iter().map(|s| s.hook_conns).min().unwrap_or_default();
        let max_hook = |v: &[&Sample]| v.iter().map(|s| s.hook_conns).max().unwrap_or_default();
        let (rss_first, rss_last) = (max_rss(&first), max_rss(&last));
        let rss_limit = (rss_first as f64 * RSS_GROWTH_FACTOR) as u64 + RSS_GROWTH_SLACK_KIB;
        let (fds_first, fds_last) = (max_other(&first), max_other(&last));
        let fds_limit = fds_first + FD_GROWTH_SLACK;
        let (hook_first, hook_last) = (min_hook(&first), min_hook(&last));
        let hook_limit = hook_first + FD_GROWTH_SLACK;
        let rss_ok = rss_last <= rss_limit;
        let fds_ok = fds_last <= fds_limit;
        let hook_ok = hook_last <= hook_limit;
        let xmpp_max = self
            .samples
            .iter()
            .map(|s| s.xmpp_conns)
            .max()
            .unwrap_or_default();

        let (answered, refused) = self.hook_totals;
        let phases = self.samples.last().map(|s| s.phases).unwrap_or_default();
        println!();
        println!("### Soak summary");
        println!();
        println!(
            "- run: {} min at {} messages/s from {SENDERS} senders (`user0..{}@localhost/r` → `echo@bot.localhost`), isolated mode; bridge with ordering=conversation, queue=durable, retry_max_interval={}s, retry_for={}h",
            self.options.minutes,
            self.options.rate,
            SENDERS - 1,
            RETRY_MAX_INTERVAL.as_secs(),
            RETRY_FOR.as_secs() / 3600
        );
        println!(
            "- hook failures: {phases} phase(s) of {} s answering 503 (from {}, every {} min); {refused} calls answered 503, {answered} answered 200",
            FAULT_LASTS.as_secs(),
            clock_text(FAULT_FIRST),
            FAULT_EVERY.as_secs() / 60
        );
        if self.restarts.is_empty() {
            println!(
                "- server restarts: none (the first is at {})",
                clock_text(RESTART_FIRST)
            );
        } else {
            let max = |f: fn(&Restart) -> Duration| {
                self.restarts
                    .iter()
                    .map(f)
                    .max()
                    .unwrap_or_default()
                    .as_secs_f64()
            };
            let not_closed = self.restarts.iter().filter(|r| !r.closed_by_bridge).count();
            println!(
                "- server restarts: {} graceful (at {}); the bridge closed its side at most {:.2} s after `</stream:stream>`{}, {} replies were read on the closing links and {} messages were answered over the next one, it reconnected at most {:.2} s after the listener was back ({} s down), sending paused at most {:.2} s",
                self.restarts.len(),
                self.restarts
                    .iter()
                    .map(|r| clock_text(r.at))
                    .collect::<Vec<_>>()
                    .join(", "),
                max(|r| r.closed_after),
                if not_closed > 0 {
                    format!(
                        " (NOT within {} s in {not_closed} of them)",
                        CLOSE_LIMIT.as_secs()
                    )
                } else {
                    String::new()
                },
                self.restarts
                    .iter()
                    .map(|r| r.finished_while_closing)
                    .sum::<u64>(),
                self.restarts.iter().map(|r| r.carried_over).sum::<u64>(),
                max(|r| r.reconnected_after),
                SERVER_DOWN_FOR.as_secs(),
                max(|r| r.paused),
            );
        }
        if !self.unplanned.is_empty() {
            println!(
                "- UNPLANNED disconnections: {}: {}",
                self.unplanned.len(),
                self.unplanned
                    .iter()
                    .map(|(at, why)| format!("{} {why}", clock_text(*at)))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let conditions = if a.conditions.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                a.conditions
                    .iter()
                    .map(|(c, n)| format!("{c}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        println!(
            "- messages: {} sent, {} replied, {} answered with a stanza error{conditions}, {} lost",
            a.sent,
            a.replied,
            a.errored,
            a.lost.len()
        );
        println!(
            "- hook: {} delivered (answered 200), {} retried after a 503, {} delivered more than once{}, {} seen only with 503, {} never seen; {}",
            a.delivered,
            a.retried,
            a.delivered_twice.len(),
            examples(&a.delivered_twice),
            a.never_answered_by_hook,
            a.never_seen_by_hook,
            if a.mixed_ids.is_empty() {
                "every message's calls carried one webhook-id".to_owned()
            } else {
                format!(
                    "{} messages' calls carried different (or no) webhook-ids, e.g. {}",
                    a.mixed_ids.len(),
                    a.mixed_ids
                        .iter()
                        .take(3)
                        .map(|(seq, ids)| format!("{seq}: {ids:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let mut odd = Vec::new();
        if a.replied_twice > 0 {
            odd.push(format!("{} replied more than once", a.replied_twice));
        }
        if a.replied_and_errored > 0 {
            odd.push(format!(
                "{} got both a reply and an error",
                a.replied_and_errored
            ));
        }
        if a.wrong_body > 0 {
            odd.push(format!("{} replies with the wrong body", a.wrong_body));
        }
        if self.strays > 0 {
            odd.push(format!("{} replies for ids never sent", self.strays));
        }
        if a.unknown_at_hook > 0 {
            odd.push(format!(
                "{} hook calls for ids never sent",
                a.unknown_at_hook
            ));
        }
        if !odd.is_empty() {
            println!("- oddities: {}", odd.join(", "));
        }
        println!(
            "- time to reply or error: p50 {:.1} ms, p99 {:.2} s, max {:.2} s",
            a.latency(0.5).as_secs_f64() * 1e3,
            a.latency(0.99).as_secs_f64(),
            a.latency(1.0).as_secs_f64()
        );
        println!(
            "- drain: {} {:.1} s after sending stopped",
            if self.after_drain.depth == 0 {
                "every message finished"
            } else {
                "NOT every message finished"
            },
            self.drained_after.as_secs_f64()
        );
        println!(
            "- RSS: first third max {:.1} MiB, last third max {:.1} MiB (limit {:.1}), after the drain {:.1} MiB — {}",
            mib(rss_first),
            mib(rss_last),
            mib(rss_limit),
            mib(self.after_drain.rss_kib),
            if rss_ok { "ok" } else { "GREW" }
        );
        let drained = &self.after_drain;
        println!(
            "- open fds besides the hook's connections: first third max {fds_first}, last third max {fds_last} (limit {fds_limit}), after the drain {} — {}",
            drained.fds.saturating_sub(drained.hook_conns),
            if fds_ok { "ok" } else { "GREW" }
        );
        println!(
            "- connections to the hook: first third {hook_first} to {}, last third {hook_last} to {} (limit of the floor {hook_limit}), after the drain {} — {}; XMPP connections open at once: at most {xmpp_max}",
            max_hook(&first),
            max_hook(&last),
            drained.hook_conns,
            if hook_ok { "ok" } else { "GREW" }
        );

        if !a.lost.is_empty() {
            failures.push(format!(
                "{} messages lost (neither replied nor answered with an error){}",
                a.lost.len(),
                examples(&a.lost)
            ));
        }
        if !a.mixed_ids.is_empty() {
            failures.push(format!(
                "{} messages reached the hook with different (or no) webhook-ids",
                a.mixed_ids.len()
            ));
        }
        if a.wrong_body > 0 {
            failures.push(format!("{} replies carried the wrong body", a.wrong_body));
        }
        if !rss_ok {
            failures.push(format!(
                "RSS grew: last third max {:.1} MiB > {RSS_GROWTH_FACTOR} × first third max {:.1} MiB + {} MiB",
                mib(rss_last),
                mib(rss_first),
                RSS_GROWTH_SLACK_KIB / 1024
            ));
        }
        if !fds_ok {
            failures.push(format!(
                "open fds (besides the hook's connections) grew: last third max {fds_last} > first third max {fds_first} + {FD_GROWTH_SLACK}"
            ));
        }
        if !hook_ok {
            failures.push(format!(
                "connections to the hook grew: last third never below {hook_last} > first third floor {hook_first} + {FD_GROWTH_SLACK}"
            ));
        }
        println!(
            "- result: {}",
            if failures.is_empty() {
                "PASS".to_owned()
            } else {
                format!("FAIL: {}", failures.join("; "))
            }
        );
        failures
    }
}

/// One row of the time series: the largest RSS, fds, hook connections and queue depth of the
/// samples, the counts of the last.
fn table_row(label: &str, samples: &[&Sample]) {
    let Some(last) = samples.last() else {
        return;
    };
    let max = |f: fn(&Sample) -> u64| samples.iter().map(|s| f(s)).max().unwrap_or_default();
    println!(
        "| {label} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
        mib(max(|s| s.rss_kib)),
        max(|s| s.fds as u64),
        max(|s| s.hook_conns as u64),
        max(|s| s.depth),
        last.sent,
        last.finished,
        last.phases,
        last.restarts
    );
}

/// ` (e.g. ids 1, 2, 3)` for a non-empty list.
fn examples(ids: &[usize]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = ids.iter().take(5).map(usize::to_string).collect();
    format!(" (e.g. ids {})", shown.join(", "))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `m:ss` since the soak's start.
fn clock_text(at: Duration) -> String {
    let secs = at.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
}
