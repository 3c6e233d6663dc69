//! The delivery stage: takes forwarded stanzas, stores them in the queue, calls the hook,
//! retries what may succeed later, and sends what the hook's answer asks for (README, "Delivery").
//!
//! With `ordering = "conversation"` the stanzas of one conversation (sender bare JID × addressed
//! JID) are delivered one at a time in arrival order, and different conversations run
//! concurrently; a conversation whose head is being retried waits, the others go on. With
//! `"none"` every stanza runs on its own. At most `max_in_flight` hook calls run at once.
//!
//! What the queue holds is bounded by `queue_max_stanzas` and `queue_max_bytes` ([`Bounds`]):
//! past either, a new stanza is refused at once with `wait/resource-constraint`. An iq the hook
//! accepted with `202` keeps its place in those bounds while it waits ([`PendingIqs`]). With the
//! durable queue a message or presence is on disk (group commit, [`crate::queue::redb`]) before its first
//! POST and leaves it at its final outcome, or moves to the dead letters when `retry_for` runs
//! out; if its commit fails, its sender gets `wait/internal-server-error` at once, even while it
//! waits behind others. Iq requests are never stored: their sender gives up after `iq_timeout`,
//! so they are retried until then at most.
//!
//! A stop never drops a stanza silently: one that is stored stays in the queue file for the next
//! start; any other (an iq, or everything with `queue = "memory"`) that is not delivered within
//! the drain gets `wait/remote-server-timeout` back, as the server itself answers while the
//! component is away.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::bridge::bounds::{Bounds, Reservation};
use crate::bridge::outbox::Outbox;
use crate::bridge::payload::HookRequest;
use crate::bridge::pending_iq::PendingIqs;
use crate::bridge::reply::{self, Decision};
use crate::config::{Config, Ordering};
use crate::limits;
use crate::metrics::{HookError, Metrics, delivered, refused};
use crate::queue::{self, Admitted, Committed, Direction, Entry, ProcessIds, Queue, retry};
use crate::webhook::client::HookClient;
use crate::webhook::outcome::{HookOutcome, describe, retryable};
use crate::xmpp::codec::{ReadLimits, parse_stanza};
use crate::xmpp::stanza::{ErrorType, Kind, Origin, Stanza, StanzaError, bare};

/// A stanza in the queue, from admission to its final outcome.
struct Job {
    stanza: Stanza,
    /// Its place in the queue; `None` for an iq, which is never stored.
    position: Option<u64>,
    /// On disk once this resolves; `None` when it is not stored or was stored earlier.
    committed: Option<Committed>,
    /// The `webhook-id` of every call made for this stanza.
    webhook_id: String,
    /// No retry starts after this.
    retry_until: Instant,
    /// Its share of the queue's bounds, held as long as the stanza is.
    reservation: Reservation,
}

type ConversationKey = (String, String);

#[derive(Clone)]
pub(crate) struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    hook: HookClient,
    outbox: Outbox,
    queue: Queue,
    /// Hook calls in flight across the process.
    calls: Semaphore,
    /// What the queue holds, against its bounds.
    bounds: Arc<Bounds>,
    /// Forwarded iq the hook answered `202`, waiting for their answer.
    pending_iqs: PendingIqs,
    /// Conversations with a running worker, and what waits behind their current stanza.
    conversations: Mutex<HashMap<ConversationKey, VecDeque<Job>>>,
    tasks: TaskTracker,
    /// Cancelled at the stop: no new call starts for a stored stanza, and no retry waits.
    stop: CancellationToken,
    /// Cancelled when the drain's time is up: calls in flight are abandoned and nothing starts.
    abandon: CancellationToken,
    /// Ids of the stanzas that are not stored (iq).
    unstored_ids: ProcessIds,
    metrics: Arc<Metrics>,
}

impl Delivery {
    pub(crate) fn new(
        config: Arc<Config>,
        hook: HookClient,
        outbox: Outbox,
        queue: Queue,
        stop: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        let delivery = Self {
            inner: Arc::new(Inner {
                calls: Semaphore::new(config.max_in_flight),
                bounds: Bounds::new(config.queue.max_stanzas, config.queue.max_bytes),
                pending_iqs: PendingIqs::default(),
                config,
                hook,
                outbox,
                queue,
                conversations: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                stop,
                abandon: CancellationToken::new(),
                unstored_ids: ProcessIds::new(),
                metrics,
            }),
        };
        let inner = delivery.inner.clone();
        tokio::spawn(async move {
            let timeout = StanzaError::new(ErrorType::Wait, "remote-server-timeout");
            inner
                .pending_iqs
                .run_timeouts(|stanza| {
                    let (outbox, timeout) = (inner.outbox.clone(), timeout.clone());
                    async move { outbox.bounce(&stanza, &timeout).await }
                })
                .await
        });
        if let Some(mut failed) = delivery.inner.queue.failed_appends() {
            let inner = delivery.inner.clone();
            tokio::spawn(async move {
                while let Some(positions) = failed.recv().await {
                    inner
                        .refuse_uncommitted(positions.into_iter().collect())
                        .await;
                }
            });
        }
        delivery
    }

    /// What the queue holds against its bounds; shared with what the API sends.
    pub(crate) fn bounds(&self) -> Arc<Bounds> {
        self.inner.bounds.clone()
    }

    /// Forwarded iq the hook answered `202`; the API answers them.
    pub(crate) fn pending_iqs(&self) -> PendingIqs {
        self.inner.pending_iqs.clone()
    }

    /// Admits a forwarded stanza: refuses it with `wait/resource-constraint` if the queue is
    /// full, else queues it (waiting only while the disk writer is behind).
    pub(crate) async fn submit(&self, stanza: Stanza) {
        let inner = &self.inner;
        let Some(reservation) = inner.bounds.reserve(stanza.raw.len()) else {
            inner.metrics.refused(refused::QUEUE_FULL);
            warn!(
                from = stanza.from(),
                to = stanza.to(),
                "queue full (queue_max_stanzas or queue_max_bytes): stanza refused with resource-constraint"
            );
            let error = StanzaError::new(ErrorType::Wait, "resource-constraint")
                .with_text("The queue is full, try again later");
            inner.outbox.bounce(&stanza, &error).await;
            return;
        };
        let queue = &inner.config.queue;
        let retry_until = Instant::now()
            + match stanza.kind {
                Kind::Iq => queue.retry_for.min(inner.config.iq_timeout),
                _ => queue.retry_for,
            };
        let job = if stanza.kind == Kind::Iq {
            let id = inner.unstored_ids.allocate();
            Job {
                retry_until,
                webhook_id: inner.unstored_ids.webhook_id(id),
                position: None,
                committed: None,
                stanza,
                reservation,
            }
        } else {
            let position = inner.queue.allocate();
            let conversation = inner
                .claims_conversations()
                .then(|| shared_name(&conversation_key(&stanza)));
            let entry = Entry {
                position,
                id: position,
                received_ms: queue::now_ms(),
                direction: Direction::ToHook,
                raw: stanza.raw.clone(),
                conversation,
            };
            Job {
                committed: Some(inner.queue.append(entry, None).await),
                position: Some(position),
                webhook_id: inner.queue.webhook_id(position),
                retry_until,
                stanza,
                reservation,
            }
        };
        self.schedule(job);
    }

    /// Queues stanzas that are already stored (found at start, or dead letters replayed), in
    /// the order given. They count against the bounds but are never refused: they were accepted.
    pub(crate) fn resume(&self, entries: Vec<Entry>) {
        for entry in entries {
            if let Some(job) = self.inner.stored_job(entry) {
                self.schedule(job);
            }
        }
    }

    fn schedule(&self, job: Job) {
        let inner = self.inner.clone();
        match self.inner.config.ordering {
            Ordering::None => {
                self.inner.tasks.spawn(async move { inner.run(job).await });
            }
            Ordering::Conversation => {
                let key = conversation_key(&job.stanza);
                {
                    let mut conversations = self.inner.lock_conversations();
                    if let Some(waiting) = conversations.get_mut(&key) {
                        waiting.push_back(job);
                        return;
                    }
                    conversations.insert(key.clone(), VecDeque::new());
                }
                self.inner
                    .tasks
                    .spawn(async move { inner.run_conversation(key, job).await });
            }
        }
    }

    /// After the stop: lets the calls in flight finish for up to `limit`, then abandons the
    /// rest; returns whether all finished in time. Stored stanzas not yet delivered stay in the
    /// queue for the next start; in memory, the stanzas still waiting are delivered within
    /// `limit` if they can be. Every other stanza left, and every iq still waiting for an
    /// answer, gets `wait/remote-server-timeout` back.
    pub(crate) async fn drain(&self, limit: Duration) -> bool {
        let inner = &self.inner;
        inner.tasks.close();
        let finished = tokio::time::timeout(limit, inner.tasks.wait())
            .await
            .is_ok();
        if !finished {
            inner.abandon.cancel();
            // Abandoned calls end at their next await; what they held is answered or stays
            // stored at once.
            let _ = tokio::time::timeout(limits::SHUTDOWN_ABANDON, inner.tasks.wait()).await;
        }
        for stanza in inner.pending_iqs.close() {
            inner.outbox.bounce(&stanza, &stopped_error()).await;
        }
        let held = inner.bounds.held();
        if held.stanzas > 0 {
            info!(
                stanzas = held.stanzas,
                "stanzas not yet delivered stay in the queue for the next start"
            );
        }
        finished
    }
}

/// What the sender of a stanza that was neither delivered nor stored hears at a stop: what the
/// server itself answers while the component is away.
fn stopped_error() -> StanzaError {
    StanzaError::new(ErrorType::Wait, "remote-server-timeout")
        .with_text("The component stopped before this stanza was delivered")
}

impl Inner {
    /// A job for a stanza that is already stored; `None` (and an error logged) if it no longer
    /// parses.
    fn stored_job(&self, entry: Entry) -> Option<Job> {
        let Some(stanza) = parse_stanza(&entry.raw, self.read_limits())
            .ok()
            .and_then(Stanza::from_read)
        else {
            error!(
                position = entry.position,
                "a stored stanza no longer parses; it is left in the queue"
            );
            return None;
        };
        let waited = Duration::from_millis(queue::now_ms().saturating_sub(entry.received_ms));
        Some(Job {
            position: Some(entry.position),
            committed: None,
            webhook_id: self.queue.webhook_id(entry.id),
            retry_until: Instant::now() + self.config.queue.retry_for.saturating_sub(waited),
            reservation: self.bounds.force(stanza.raw.len()),
            stanza,
        })
    }

    /// Whether this instance claims the conversations it delivers in a shared queue.
    fn claims_conversations(&self) -> bool {
        self.config.ordering == Ordering::Conversation && self.queue.shared()
    }

    fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            max_stanza_bytes: self.config.max_stanza_bytes,
            max_depth: self.config.max_depth,
        }
    }

    /// The place of a stanza that survives a stop in the queue, if it has one.
    fn kept_at(&self, job: &Job) -> Option<u64> {
        job.position.filter(|_| self.queue.durable())
    }

    fn lock_conversations(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, VecDeque<Job>>> {
        self.conversations.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run_conversation(&self, key: ConversationKey, first: Job) {
        let mut job = first;
        loop {
            self.run(job).await;
            let next = {
                let mut conversations = self.lock_conversations();
                let next = conversations.get_mut(&key).and_then(VecDeque::pop_front);
                if next.is_none() {
                    conversations.remove(&key);
                }
                next
            };
            match next {
                Some(next) => job = next,
                None => {
                    if self.claims_conversations() {
                        self.queue.release(shared_name(&key)).await;
                    }
                    return;
                }
            }
        }
    }

    /// Stanzas waiting behind others whose commit failed: taken out of their conversation and
    /// refused now, rather than when their turn comes. Those not found are with a worker, which
    /// sees the failure itself.
    async fn refuse_uncommitted(&self, positions: HashSet<u64>) {
        let mut refused = Vec::new();
        for waiting in self.lock_conversations().values_mut() {
            let (failed, kept) = std::mem::take(waiting)
                .into_iter()
                .partition(|job| job.position.is_some_and(|p| positions.contains(&p)));
            *waiting = kept;
            refused.extend::<VecDeque<Job>>(failed);
        }
        for job in refused {
            self.refuse_unstored(&job, "the commit failed").await;
        }
    }

    async fn refuse_unstored(&self, job: &Job, reason: &str) {
        self.metrics.refused(refused::NOT_STORED);
        error!(
            webhook_id = job.webhook_id,
            from = job.stanza.from(),
            "stanza refused, it could not be stored: {reason}"
        );
        let error = StanzaError::new(ErrorType::Wait, "internal-server-error")
            .with_text("The queue cannot be written");
        self.outbox.bounce(&job.stanza, &error).await;
    }

    /// One stanza, from its commit to its final outcome; or, at a stop, left stored or answered.
    /// Every log line on the way carries its `webhook-id` and conversation.
    async fn run(&self, job: Job) {
        let span = info_span!(
            "delivery",
            webhook_id = %job.webhook_id,
            conversation = %Conversation(&job.stanza)
        );
        self.deliver(job).instrument(span).await
    }

    async fn deliver(&self, mut job: Job) {
        if let Some(committed) = job.committed.take() {
            match committed.wait().await {
                Err(reason) => {
                    self.refuse_unstored(&job, &reason).await;
                    return;
                }
                Ok(Admitted::Here) => {}
                Ok(Admitted::HandedOver) => {
                    debug!("handed over to the instance that holds its conversation");
                    return;
                }
                Ok(Admitted::After(older)) => {
                    info!(
                        stanzas = older.len(),
                        "taken over with its conversation from an instance that stopped; those go first"
                    );
                    for job in older.into_iter().filter_map(|e| self.stored_job(e)) {
                        Box::pin(self.run(job)).await;
                    }
                }
            }
        }
        // After the stop a stored stanza waits in the queue for the next start rather than begin
        // a call the drain may cut short; one held only in memory is still tried.
        if self.abandon.is_cancelled() || (self.kept_at(&job).is_some() && self.stop.is_cancelled())
        {
            self.not_delivered(job).await;
            return;
        }
        let outcome = tokio::select! {
            outcome = self.call_until_final(&job) => outcome,
            _ = self.abandon.cancelled() => None,
        };
        match outcome {
            Some(outcome) => self.finish(job, &outcome).await,
            None => self.not_delivered(job).await,
        }
    }

    /// Calls the hook for `job` until it has a final outcome; `None` if the stop came first.
    async fn call_until_final(&self, job: &Job) -> Option<HookOutcome> {
        let body = Bytes::from(HookRequest::of(&job.stanza).to_json());
        let attempt = || async {
            // The semaphore is never closed.
            let _call = self.calls.acquire().await;
            let started = std::time::Instant::now();
            let outcome = self.hook.post(&job.webhook_id, body.clone()).await;
            self.count_call(&outcome, started.elapsed());
            outcome
        };
        // Counted as retrying from its first failure to its final outcome (or the stop).
        let retrying = Retrying {
            metrics: &self.metrics,
            counted: AtomicBool::new(false),
        };
        retry::until_final(
            attempt,
            job.retry_until,
            self.config.queue.retry_max_interval,
            &self.stop,
            rand::random,
            |outcome, attempt, wait| {
                self.metrics.retried();
                retrying.start();
                warn!(
                    url = %self.hook.url(),
                    attempt,
                    "{}; retrying in {wait:.1?}",
                    describe(outcome)
                )
            },
        )
        .await
    }

    /// Counts one hook call by its outcome class, and keeps the last failure for the status.
    fn count_call(&self, outcome: &HookOutcome, took: Duration) {
        let class = outcome.class();
        let failure = (class != "2xx").then(|| HookError {
            time: std::time::SystemTime::now(),
            status: outcome.status(),
            message: describe(outcome),
        });
        self.metrics.hook_called(class, took, failure);
    }

    /// A stanza the stop came to before its final outcome: a stored one stays in the queue for
    /// the next start; any other is answered, so that no stop drops a stanza silently.
    async fn not_delivered(&self, job: Job) {
        if self.kept_at(&job).is_none() {
            warn!(
                from = job.stanza.from(),
                "stopped before this stanza (not stored) was delivered: its sender is told"
            );
            self.outbox.bounce(&job.stanza, &stopped_error()).await;
        }
    }

    /// Acts on the final outcome: the reply or bounce the rules ask for; a stored stanza leaves
    /// the queue, or joins the dead letters if the hook could still not take it at the end of
    /// `retry_for` (with `retry_for = "0s"` it is bounced and not kept, like the module does).
    async fn finish(&self, job: Job, outcome: &HookOutcome) {
        let stanza = &job.stanza;
        let verdict = reply::decide(stanza, outcome, self.read_limits());
        let stored = self.kept_at(&job);
        let mut kept = false;
        if let Some(position) = stored
            && retryable(outcome)
            && !self.config.queue.retry_for.is_zero()
        {
            let reason = describe(outcome);
            error!(
                from = stanza.from(),
                "{reason}; retry_for has run out: kept as a dead letter (see `component-http dead-letters`)"
            );
            match self.queue.bury(position, reason).await {
                Ok(()) => kept = true,
                Err(reason) => error!("the dead letter could not be stored: {reason}"),
            }
        }
        if let Some(warning) = &verdict.warning
            && !kept
        {
            warn!(url = %self.hook.url(), status = outcome.status(), from = stanza.from(), to = stanza.to(), "hook: {warning}");
        }
        self.metrics.delivered(match (&verdict.decision, kept) {
            (_, true) => delivered::DEAD_LETTER,
            (Decision::Bounce(_), false) => delivered::BOUNCED,
            _ => delivered::DELIVERED,
        });
        match verdict.decision {
            Decision::Nothing => {}
            Decision::Send(element) => self.outbox.send(element, Origin::Reply).await,
            Decision::Bounce(error) => self.outbox.bounce(stanza, &error).await,
            Decision::AnswerLater => {
                // It keeps its reservation while it waits: waiting iq count against the bounds.
                let timeout = StanzaError::new(ErrorType::Wait, "remote-server-timeout");
                for due in self.pending_iqs.wait(
                    job.stanza.clone(),
                    job.reservation,
                    self.config.iq_timeout,
                ) {
                    self.outbox.bounce(&due, &timeout).await;
                }
            }
        }
        // Removed only once the reply is handed to the writer, so that a crash before then
        // delivers the stanza again (same webhook-id) rather than lose its reply.
        if let Some(position) = job.position
            && !kept
        {
            self.queue.remove(position).await;
        }
    }
}

/// A stanza's conversation as the logs show it: `sender bare JID → addressed JID`.
struct Conversation<'a>(&'a Stanza);

impl std::fmt::Display for Conversation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (from, to) = conversation_key(self.0);
        write!(f, "{from} → {to}")
    }
}

/// Holds a stanza's place in the count of those waiting for a retry.
struct Retrying<'a> {
    metrics: &'a Metrics,
    counted: AtomicBool,
}

impl Retrying<'_> {
    fn start(&self) {
        if !self.counted.swap(true, AtomicOrdering::Relaxed) {
            self.metrics.retrying(1);
        }
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        if self.counted.load(AtomicOrdering::Relaxed) {
            self.metrics.retrying(-1);
        }
    }
}

/// A conversation's name in a shared queue: a bare JID has no space, so the first space
/// splits the two JIDs.
fn shared_name((from, to): &ConversationKey) -> String {
    format!("{from} {to}")
}

/// Sender bare JID × addressed JID.
fn conversation_key(stanza: &Stanza) -> ConversationKey {
    let from = stanza.from().unwrap_or_default();
    let from = bare(from).unwrap_or_else(|| from.to_owned());
    (from, stanza.to().unwrap_or_default().to_owned())
}
