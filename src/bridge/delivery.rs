//! The delivery stage: takes forwarded stanzas, calls the hook, and sends what its answer asks
//! for (SPEC §3, ordering and concurrency).
//!
//! With `ordering = "conversation"` the stanzas of one conversation (sender bare JID × addressed
//! JID) are delivered one at a time in arrival order, and different conversations run
//! concurrently; with `"none"` every stanza runs at once. Either way at most `max_in_flight`
//! stanzas are admitted and unfinished: [`Delivery::submit`] waits for room, which stops the
//! router, which stops the socket reader. This stage is the seam where a durable queue sits:
//! `submit` is the only way in, and where each stanza gets its delivery id (`webhook-id`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::bridge::outbox::Outbox;
use crate::bridge::payload::HookRequest;
use crate::bridge::reply::{self, Decision, HookOutcome};
use crate::config::{Config, Ordering};
use crate::webhook::client::HookClient;
use crate::xmpp::codec::ReadLimits;
use crate::xmpp::stanza::{ErrorType, Stanza, StanzaError, bare};

/// A stanza admitted for delivery; its permit is returned when it is finished.
struct Job {
    stanza: Stanza,
    /// The `webhook-id` of every call made for this stanza.
    webhook_id: String,
    _admitted: OwnedSemaphorePermit,
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
    admission: Arc<Semaphore>,
    /// Conversations with a running worker, and what waits behind their current stanza.
    conversations: Mutex<HashMap<ConversationKey, VecDeque<Job>>>,
    tasks: TaskTracker,
    /// Random per process, so that ids stay unique across restarts without stored state.
    id_prefix: u64,
    /// Numbers the stanzas admitted by this process.
    sequence: AtomicU64,
}

impl Delivery {
    pub fn new(config: Arc<Config>, hook: HookClient, outbox: Outbox) -> Self {
        let admission = Arc::new(Semaphore::new(config.max_in_flight));
        Self {
            inner: Arc::new(Inner {
                config,
                hook,
                outbox,
                admission,
                conversations: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                id_prefix: rand::random(),
                sequence: AtomicU64::new(0),
            }),
        }
    }

    /// Admits a stanza for delivery, waiting while `max_in_flight` stanzas are unfinished.
    pub async fn submit(&self, stanza: Stanza) {
        let Ok(permit) = self.inner.admission.clone().acquire_owned().await else {
            return; // The semaphore is never closed.
        };
        let job = Job {
            stanza,
            webhook_id: self.inner.next_webhook_id(),
            _admitted: permit,
        };
        match self.inner.config.ordering {
            Ordering::None => {
                let inner = self.inner.clone();
                self.inner
                    .tasks
                    .spawn(async move { inner.deliver(job).await });
            }
            Ordering::Conversation => self.enqueue(job),
        }
    }

    fn enqueue(&self, job: Job) {
        let key = conversation_key(&job.stanza);
        {
            let mut conversations = self
                .inner
                .conversations
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(waiting) = conversations.get_mut(&key) {
                waiting.push_back(job);
                return;
            }
            conversations.insert(key.clone(), VecDeque::new());
        }
        let inner = self.inner.clone();
        self.inner
            .tasks
            .spawn(async move { inner.run_conversation(key, job).await });
    }

    /// Waits until every admitted stanza is finished, or `limit` has passed; returns whether
    /// all finished.
    pub async fn drain(&self, limit: std::time::Duration) -> bool {
        self.inner.tasks.close();
        tokio::time::timeout(limit, self.inner.tasks.wait())
            .await
            .is_ok()
    }
}

impl Inner {
    /// `msg_<process prefix>_<sequence>`: unique per stanza, in this process and across
    /// restarts; made once at admission so every call for the stanza repeats it.
    fn next_webhook_id(&self) -> String {
        let sequence = self.sequence.fetch_add(1, AtomicOrdering::Relaxed);
        format!("msg_{:016x}_{sequence}", self.id_prefix)
    }

    async fn run_conversation(&self, key: ConversationKey, first: Job) {
        let mut job = first;
        loop {
            self.deliver(job).await;
            let mut conversations = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
            match conversations.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => job = next,
                None => {
                    conversations.remove(&key);
                    return;
                }
            }
        }
    }

    async fn deliver(&self, job: Job) {
        let stanza = &job.stanza;
        let outcome = self
            .hook
            .post(&job.webhook_id, HookRequest::of(stanza).to_json())
            .await;
        let limits = ReadLimits {
            max_stanza_bytes: self.config.max_stanza_bytes,
            max_depth: self.config.max_depth,
        };
        let verdict = reply::decide(stanza, &outcome, limits);
        if let Some(warning) = &verdict.warning {
            let status = match &outcome {
                HookOutcome::Response { status, .. } | HookOutcome::ResponseTooLarge { status } => {
                    Some(*status)
                }
                _ => None,
            };
            warn!(url = %self.hook.url(), status, from = stanza.from(), to = stanza.to(), "hook: {warning}");
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
                let stanza = job.stanza.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let error = StanzaError::new(ErrorType::Wait, "remote-server-timeout");
                    outbox.bounce(&stanza, &error).await;
                });
            }
        }
    }
}

/// Sender bare JID × addressed JID.
fn conversation_key(stanza: &Stanza) -> ConversationKey {
    let from = stanza.from().unwrap_or_default();
    let from = bare(from).unwrap_or_else(|| from.to_owned());
    (from, stanza.to().unwrap_or_default().to_owned())
}
