//! Stanzas the bridge sends on its own behalf, through the HTTP API (README, "The HTTP API"):
//!
//! - a message or presence ([`Outgoing::send`]) is committed to the queue (as [`Direction::ToServer`])
//!   and counts against its bounds until the session's writer has written it to the socket; one
//!   task feeds them to the writer in the order they were accepted, so they wait while the link
//!   is down and go out after the reconnect in order. A durable queue resumes them at start.
//! - an iq `result`/`error` ([`Outgoing::answer`]) completes a forwarded iq the hook answered
//!   `202`, cancelling its timeout; one that matches nothing waiting is refused.
//! - an iq `get`/`set` ([`Outgoing::ask`]) is written (not stored) and its answer, matched by
//!   id and addresses, is handed back by the router ([`Outgoing::take_answer`]).
//!
//! It checks nothing about who may send what (that is the API's) and parses nothing: it takes
//! elements and checks them as every outgoing stanza is checked ([`Outbox::check`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minidom::Element;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use crate::bridge::bounds::{Bounds, Reservation};
use crate::bridge::outbox::Outbox;
use crate::bridge::pending_iq::PendingIqs;
use crate::limits;
use crate::queue::{self, Direction, Entry, Queue, Remembered};
use crate::xmpp::codec::{ReadLimits, parse_stanza};
use crate::xmpp::stanza::{Origin, Outbound, OutboundError, Stanza};

/// Why a stanza was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("the stanza would be refused by the server: {0}")]
    Refused(#[from] OutboundError),
    #[error("the queue is full (queue_max_stanzas or queue_max_bytes)")]
    QueueFull,
    #[error("the queue cannot be written: {0}")]
    NotStored(String),
    #[error("the link to the XMPP server is down or slow, and its write queue is full")]
    WriterBusy,
    #[error("no forwarded iq with this id from {to} to {from} waits for an answer")]
    NothingWaiting { to: String, from: String },
    #[error("an iq with this id, from and to already waits for its answer")]
    DuplicateId,
    #[error("too many iq sent through the API wait for their answer")]
    TooManyWaiting,
    #[error("no answer came within {0:?}")]
    NoAnswer(Duration),
}

/// What became of a stanza handed to [`Outgoing::dispatch`].
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// A message or presence, committed and waiting for its turn to be written.
    Queued,
    /// An iq result or error, sent to the iq it answers.
    Answered,
    /// An iq get or set, and the answer it got.
    Reply(Stanza),
}

/// (our JID that sent it, the JID asked, id): what the answer to an iq must match.
type AskKey = (String, String, String);

#[derive(Clone)]
pub(crate) struct Outgoing {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: Outbox,
    queue: Queue,
    bounds: Arc<Bounds>,
    pending_iqs: PendingIqs,
    limits: ReadLimits,
    /// Accepted stanzas in the order they were accepted, towards the feeding task.
    feed: mpsc::UnboundedSender<Outbound>,
    /// What an accepted stanza holds of the queue's bounds, until it is written.
    held: Mutex<HashMap<u64, Reservation>>,
    asked: Mutex<HashMap<AskKey, oneshot::Sender<Stanza>>>,
}

impl Outgoing {
    /// Starts the tasks that feed accepted stanzas to the writer and forget them once written
    /// (`written` carries the writer's receipts).
    pub(crate) fn new(
        outbox: Outbox,
        queue: Queue,
        bounds: Arc<Bounds>,
        pending_iqs: PendingIqs,
        limits: ReadLimits,
        mut written: mpsc::UnboundedReceiver<Vec<u64>>,
    ) -> Self {
        let (feed, mut accepted) = mpsc::unbounded_channel::<Outbound>();
        let outgoing = Self {
            inner: Arc::new(Inner {
                outbox: outbox.clone(),
                queue,
                bounds,
                pending_iqs,
                limits,
                feed,
                held: Mutex::new(HashMap::new()),
                asked: Mutex::new(HashMap::new()),
            }),
        };
        // Unbounded, but what it carries holds reservations against the queue's bounds.
        tokio::spawn(async move {
            while let Some(out) = accepted.recv().await {
                outbox.send_checked(out).await;
            }
        });
        let inner = outgoing.inner.clone();
        tokio::spawn(async move {
            while let Some(positions) = written.recv().await {
                for position in positions {
                    inner.queue.remove(position).await;
                    inner.lock_held().remove(&position);
                }
            }
        });
        outgoing
    }

    /// Sends `element` the way its kind asks: a message or presence is queued (with the answer
    /// to `remember`), an iq result or error answers a waiting iq, an iq get or set waits up to
    /// `wait` for its answer.
    pub(crate) async fn dispatch(
        &self,
        element: Element,
        wait: Duration,
        remember: Option<Remembered>,
    ) -> Result<Dispatched, SendError> {
        let iq = element.name() == "iq";
        match (iq, element.attr("type").unwrap_or_default()) {
            (true, "get" | "set") => self.ask(element, wait).await.map(Dispatched::Reply),
            (true, _) => self.answer(element).await.map(|()| Dispatched::Answered),
            (false, _) => self
                .send(element, remember)
                .await
                .map(|()| Dispatched::Queued),
        }
    }

    /// Sends what the queue kept from an earlier run, before anything new.
    pub(crate) fn resume(&self, entries: Vec<Entry>) {
        for entry in entries {
            let element = match parse_stanza(&entry.raw, self.inner.limits) {
                Ok(read) => read.element,
                Err(reason) => {
                    error!(
                        position = entry.position,
                        "a stored outgoing stanza no longer parses ({reason}); it is left in the queue file"
                    );
                    continue;
                }
            };
            match self.inner.outbox.check(element, Origin::Api) {
                Ok(out) => {
                    let reservation = self.inner.bounds.force(out.bytes.len());
                    self.inner.accept(entry.position, out, reservation);
                }
                Err(reason) => error!(
                    position = entry.position,
                    "a stored outgoing stanza is refused now ({reason}); it is left in the queue file"
                ),
            }
        }
    }

    /// A message or presence: checked, committed (with the answer to `remember` for it, if any),
    /// then written in turn. Returns once committed.
    async fn send(&self, element: Element, remember: Option<Remembered>) -> Result<(), SendError> {
        let inner = &self.inner;
        let out = inner.outbox.check(element, Origin::Api)?;
        let reservation = inner
            .bounds
            .reserve(out.bytes.len())
            .ok_or(SendError::QueueFull)?;
        let position = inner.queue.allocate();
        let entry = Entry {
            position,
            id: position,
            received_ms: queue::now_ms(),
            direction: Direction::ToServer,
            raw: out.bytes.clone(),
            conversation: None,
        };
        inner
            .queue
            .append(entry, remember)
            .await
            .wait()
            .await
            .map_err(SendError::NotStored)?;
        inner.accept(position, out, reservation);
        Ok(())
    }

    /// An iq `result` or `error` answering a forwarded iq the hook accepted with `202`.
    async fn answer(&self, element: Element) -> Result<(), SendError> {
        let inner = &self.inner;
        let attr = |name| element.attr(name).unwrap_or_default().to_owned();
        let (to, from, id) = (attr("to"), attr("from"), attr("id"));
        let out = inner.outbox.check(element, Origin::Api)?;
        if inner.pending_iqs.complete(&to, &from, &id).is_none() {
            return Err(SendError::NothingWaiting { to, from });
        }
        inner
            .outbox
            .send_within(out, limits::API_OUTBOX_WAIT)
            .await
            .map_err(|_| SendError::WriterBusy)
    }

    /// An iq `get` or `set`: written at once, and its answer awaited for up to `timeout`.
    async fn ask(&self, element: Element, timeout: Duration) -> Result<Stanza, SendError> {
        let inner = &self.inner;
        let out = inner.outbox.check(element, Origin::Api)?;
        let read = parse_stanza(&out.bytes, inner.limits)
            .map_err(|e| SendError::Refused(OutboundError::NotAStanza(e.to_string())))?;
        let attr = |name| read.element.attr(name).unwrap_or_default().to_owned();
        let key = (attr("from"), attr("to"), attr("id"));
        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let mut asked = inner.lock_asked();
            if asked.contains_key(&key) {
                return Err(SendError::DuplicateId);
            }
            if asked.len() >= limits::API_IQ_WAITING_MAX {
                return Err(SendError::TooManyWaiting);
            }
            asked.insert(key.clone(), answer_tx);
        }
        // Removes the entry however this ends, the client gone included.
        let _forget = Forget {
            inner: inner.clone(),
            key,
        };
        inner
            .outbox
            .send_within(out, limits::API_OUTBOX_WAIT)
            .await
            .map_err(|_| SendError::WriterBusy)?;
        match tokio::time::timeout(timeout, answer_rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(SendError::NoAnswer(timeout)),
        }
    }

    /// Hands an iq `result`/`error` from the server to the API request waiting for it; returns
    /// it if nobody waits.
    pub(crate) fn take_answer(&self, stanza: Stanza) -> Option<Stanza> {
        if self.inner.lock_asked().is_empty() {
            return Some(stanza);
        }
        let key = (
            stanza.to().unwrap_or_default().to_owned(),
            stanza.from().unwrap_or_default().to_owned(),
            stanza.id().unwrap_or_default().to_owned(),
        );
        match self.inner.lock_asked().remove(&key) {
            Some(waiting) => {
                if let Err(stanza) = waiting.send(stanza) {
                    warn!(
                        from = stanza.from(),
                        "an iq answer came after its API request gave up"
                    );
                }
                None
            }
            None => Some(stanza),
        }
    }
}

impl Inner {
    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Reservation>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_asked(&self) -> std::sync::MutexGuard<'_, HashMap<AskKey, oneshot::Sender<Stanza>>> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accept(&self, position: u64, mut out: Outbound, reservation: Reservation) {
        out.receipt = Some(position);
        self.lock_held().insert(position, reservation);
        // The feeding task lives as long as the process.
        let _ = self.feed.send(out);
    }
}

/// Removes an iq's entry from the waiting list when its request ends.
struct Forget {
    inner: Arc<Inner>,
    key: AskKey,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.inner.lock_asked().remove(&self.key);
    }
}
