//! The delivery stage: takes forwarded stanzas, stores them in the queue, calls the hook,
//! retries what may succeed later, and sends what the hook's answer asks for (SPEC §3).
//!
//! With `ordering = "conversation"` the stanzas of one conversation (sender bare JID × addressed
//! JID) are delivered one at a time in arrival order, and different conversations run
//! concurrently; a conversation whose head is being retried waits, the others go on. With
//! `"none"` every stanza runs on its own. At most `max_in_flight` hook calls run at once.
//!
//! What the queue holds is bounded by `queue_max_stanzas` and `queue_max_bytes`: past either, a
//! new stanza is refused at once with `wait/resource-constraint`. With the durable queue a
//! message or presence is on disk (group commit, [`Store`]) before its first POST and leaves it
//! at its final outcome, or moves to the dead letters when `retry_for` runs out. Iq requests are
//! never stored: their sender gives up after `iq_timeout`, so they are retried until then at most.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::bridge::outbox::Outbox;
use crate::bridge::payload::HookRequest;
use crate::bridge::reply::{self, Decision, HookOutcome};
use crate::config::{Config, Ordering};
use crate::queue::retry;
use crate::queue::store::{self, Committed, Entry, Store};
use crate::webhook::client::HookClient;
use crate::xmpp::codec::{ReadLimits, parse_stanza};
use crate::xmpp::stanza::{ErrorType, Kind, Stanza, StanzaError, bare};

/// A stanza in the queue, from admission to its final outcome.
struct Job {
    stanza: Stanza,
    /// Its place in the durable queue; `None` when it is not stored.
    position: Option<u64>,
    /// On disk once this resolves; `None` when it is not stored or was stored earlier.
    committed: Option<Committed>,
    /// The `webhook-id` of every call made for this stanza.
    webhook_id: String,
    /// No retry starts after this.
    retry_until: Instant,
}

type ConversationKey = (String, String);

#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    hook: HookClient,
    outbox: Outbox,
    store: Option<Store>,
    /// Hook calls in flight across the process.
    calls: Semaphore,
    /// What the queue holds, against its bounds.
    held: Mutex<Held>,
    /// Conversations with a running worker, and what waits behind their current stanza.
    conversations: Mutex<HashMap<ConversationKey, VecDeque<Job>>>,
    tasks: TaskTracker,
    /// Cancelled at shutdown: no new call starts for a stored stanza, and no retry waits.
    stop: CancellationToken,
    /// Random per process: ids of stanzas that are not stored stay unique across restarts.
    memory_id_prefix: u64,
    memory_sequence: AtomicU64,
}

#[derive(Default)]
struct Held {
    stanzas: usize,
    bytes: usize,
}

impl Delivery {
    pub fn new(
        config: Arc<Config>,
        hook: HookClient,
        outbox: Outbox,
        store: Option<Store>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                calls: Semaphore::new(config.max_in_flight),
                config,
                hook,
                outbox,
                store,
                held: Mutex::new(Held::default()),
                conversations: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                stop,
                memory_id_prefix: rand::random(),
                memory_sequence: AtomicU64::new(0),
            }),
        }
    }

    /// Admits a forwarded stanza: refuses it with `wait/resource-constraint` if the queue is
    /// full, else queues it (waiting only while the disk writer is behind).
    pub async fn submit(&self, stanza: Stanza) {
        let inner = &self.inner;
        if !inner.reserve(stanza.raw.len()) {
            warn!(
                from = stanza.from(),
                to = stanza.to(),
                "queue full (queue_max_stanzas or queue_max_bytes): stanza refused with resource-constraint"
            );
            let error = StanzaError::new(ErrorType::Wait, "resource-constraint")
                .with_text("The queue is full, try again later");
            inner.outbox.bounce(&stanza, &error).await;
            return;
        }
        let queue = &inner.config.queue;
        let retry_until = Instant::now()
            + match stanza.kind {
                Kind::Iq => queue.retry_for.min(inner.config.iq_timeout),
                _ => queue.retry_for,
            };
        let job = match &inner.store {
            Some(store) if stanza.kind != Kind::Iq => {
                let position = store.allocate();
                let entry = Entry {
                    position,
                    id: position,
                    received_ms: store::now_ms(),
                    raw: stanza.raw.clone(),
                };
                Job {
                    committed: Some(store.append(entry).await),
                    position: Some(position),
                    webhook_id: store.webhook_id(position),
                    retry_until,
                    stanza,
                }
            }
            _ => Job {
                retry_until,
                webhook_id: inner.next_memory_id(),
                position: None,
                committed: None,
                stanza,
            },
        };
        self.schedule(job);
    }

    /// Queues stanzas that are already stored (found at start, or dead letters replayed), in
    /// the order given. They count against the bounds but are never refused: they were accepted.
    pub fn resume(&self, entries: Vec<Entry>) {
        let Some(store) = &self.inner.store else {
            return;
        };
        let limits = self.inner.read_limits();
        let now_ms = store::now_ms();
        for entry in entries {
            let stanza = match parse_stanza(&entry.raw, limits)
                .ok()
                .and_then(Stanza::from_read)
            {
                Some(stanza) => stanza,
                None => {
                    error!(
                        position = entry.position,
                        "a stored stanza no longer parses; it is left in the queue file"
                    );
                    continue;
                }
            };
            let waited = Duration::from_millis(now_ms.saturating_sub(entry.received_ms));
            let retry_for = self.inner.config.queue.retry_for;
            self.inner.force_reserve(stanza.raw.len());
            self.schedule(Job {
                position: Some(entry.position),
                committed: None,
                webhook_id: store.webhook_id(entry.id),
                retry_until: Instant::now() + retry_for.saturating_sub(waited),
                stanza,
            });
        }
    }

    fn schedule(&self, job: Job) {
        let inner = self.inner.clone();
        match self.inner.config.ordering {
            Ordering::None => {
                self.inner.tasks.spawn(async move {
                    if inner.may_start(&job) {
                        inner.deliver(job).await;
                    }
                });
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

    /// After the stop: waits until the calls in flight are finished, or `limit` has passed;
    /// returns whether all finished. Stored stanzas not yet delivered stay in the queue for the
    /// next start; in memory, the stanzas still waiting are delivered within `limit` if they can.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.inner.tasks.close();
        let finished = tokio::time::timeout(limit, self.inner.tasks.wait())
            .await
            .is_ok();
        let held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.stanzas > 0 {
            match self.inner.store {
                Some(_) => info!(
                    stanzas = held.stanzas,
                    "stanzas not yet delivered stay in the queue for the next start"
                ),
                None => warn!(
                    stanzas = held.stanzas,
                    "queue = \"memory\": stanzas not yet delivered are lost"
                ),
            }
        }
        finished
    }

    /// Stanzas in the queue, waiting or in flight.
    pub fn held(&self) -> usize {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stanzas
    }
}

impl Inner {
    fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            max_stanza_bytes: self.config.max_stanza_bytes,
            max_depth: self.config.max_depth,
        }
    }

    fn next_memory_id(&self) -> String {
        let sequence = self.memory_sequence.fetch_add(1, AtomicOrdering::Relaxed);
        format!("msg_{:016x}_m{sequence}", self.memory_id_prefix)
    }

    fn lock_conversations(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, VecDeque<Job>>> {
        self.conversations.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve(&self, bytes: usize) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let queue = &self.config.queue;
        if held.stanzas + 1 > queue.max_stanzas || held.bytes + bytes > queue.max_bytes {
            return false;
        }
        held.stanzas += 1;
        held.bytes += bytes;
        true
    }

    fn force_reserve(&self, bytes: usize) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.stanzas += 1;
        held.bytes += bytes;
    }

    fn release(&self, job: &Job) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.stanzas = held.stanzas.saturating_sub(1);
        held.bytes = held.bytes.saturating_sub(job.stanza.raw.len());
    }

    /// After the stop a stored stanza waits in the queue for the next start rather than begin
    /// a call the drain may cut short; one held only in memory is still tried.
    fn may_start(&self, job: &Job) -> bool {
        if job.position.is_some() && self.stop.is_cancelled() {
            self.release(job);
            return false;
        }
        true
    }

    async fn run_conversation(&self, key: ConversationKey, first: Job) {
        let mut job = first;
        loop {
            if self.may_start(&job) {
                self.deliver(job).await;
            }
            let mut conversations = self.lock_conversations();
            match conversations.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => job = next,
                None => {
                    conversations.remove(&key);
                    return;
                }
            }
        }
    }

    /// Calls the hook for `job` until it has a final outcome, then acts on it.
    async fn deliver(&self, mut job: Job) {
        if let Some(committed) = job.committed.take()
            && let Err(reason) = committed.wait().await
        {
            error!(
                from = job.stanza.from(),
                "stanza refused, it could not be stored: {reason}"
            );
            let error = StanzaError::new(ErrorType::Wait, "internal-server-error")
                .with_text("The queue cannot be written");
            self.outbox.bounce(&job.stanza, &error).await;
            self.release(&job);
            return;
        }
        let body = Bytes::from(HookRequest::of(&job.stanza).to_json());
        let attempt = || async {
            // The semaphore is never closed.
            let _call = self.calls.acquire().await;
            self.hook.post(&job.webhook_id, body.clone()).await
        };
        let outcome = retry::until_final(
            attempt,
            job.retry_until,
            self.config.queue.retry_max_interval,
            &self.stop,
            rand::random,
            |outcome, attempt, wait| {
                warn!(
                    url = %self.hook.url(),
                    webhook_id = job.webhook_id,
                    attempt,
                    "{}; retrying in {wait:.1?}",
                    retry::describe(outcome)
                )
            },
        )
        .await;
        let Some(outcome) = outcome else {
            if job.position.is_none() {
                warn!(
                    webhook_id = job.webhook_id,
                    "stopped while a stanza held in memory was waiting to be retried: it is lost"
                );
            }
            self.release(&job);
            return;
        };
        self.finish(&job, &outcome).await;
        self.release(&job);
    }

    /// Acts on the final outcome: the reply or bounce the rules ask for; a stored stanza leaves
    /// the queue, or joins the dead letters if the hook could still not take it at the end of
    /// `retry_for` (with `retry_for = "0s"` it is bounced and not kept, like the module does).
    async fn finish(&self, job: &Job, outcome: &HookOutcome) {
        let stanza = &job.stanza;
        let verdict = reply::decide(stanza, outcome, self.read_limits());
        let stored = self.store.as_ref().zip(job.position);
        let mut kept = false;
        if let Some((store, position)) = stored
            && retry::retryable(outcome)
            && !self.config.queue.retry_for.is_zero()
        {
            let reason = retry::describe(outcome);
            error!(
                webhook_id = job.webhook_id,
                from = stanza.from(),
                "{reason}; retry_for has run out: kept as a dead letter (see `component-http dead-letters`)"
            );
            match store.bury(position, reason).await {
                Ok(()) => kept = true,
                Err(reason) => error!("the dead letter could not be stored: {reason}"),
            }
        }
        if let Some(warning) = &verdict.warning
            && !kept
        {
            warn!(url = %self.hook.url(), status = outcome.status(), from = stanza.from(), to = stanza.to(), "hook: {warning}");
        }
        match verdict.decision {
            Decision::Nothing => {}
            Decision::Send(element) => self.outbox.send(element).await,
            Decision::Bounce(error) => self.outbox.bounce(stanza, &error).await,
            Decision::AnswerLater => {
                // The hook promised to answer through the API; if it does not within
                // iq_timeout, the sender gets the timeout error. Not tracked: it must not hold
                // up a shutdown.
                let outbox = self.outbox.clone();
                let timeout = self.config.iq_timeout;
                let stanza = stanza.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let error = StanzaError::new(ErrorType::Wait, "remote-server-timeout");
                    outbox.bounce(&stanza, &error).await;
                });
            }
        }
        // Removed only once the reply is handed to the writer, so that a crash before then
        // delivers the stanza again (same webhook-id) rather than lose its reply.
        if let Some((store, position)) = stored
            && !kept
        {
            store.remove(position).await;
        }
    }
}

/// Sender bare JID × addressed JID.
fn conversation_key(stanza: &Stanza) -> ConversationKey {
    let from = stanza.from().unwrap_or_default();
    let from = bare(from).unwrap_or_else(|| from.to_owned());
    (from, stanza.to().unwrap_or_default().to_owned())
}
