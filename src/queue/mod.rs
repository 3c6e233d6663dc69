//! The queue: what waits for a final outcome, behind one interface ([`Backend`]) with three
//! implementations: [`redb::RedbQueue`], the durable default (one file under `data_dir`),
//! [`memory::MemoryQueue`] (`queue = "memory"`: nothing survives the process) and
//! [`postgres::PostgresQueue`] (`queue = "postgres"`: one database that several instances
//! share, each delivering the conversations it claims). The retry policy
//! is [`retry`]'s. The scheduling itself (order per conversation, calls in flight) is the delivery
//! stage's; the dead-letter commands are [`crate::admin`]'s.
//!
//! A queue stores bytes in two directions ([`Direction`]): stanzas read from the server that wait
//! for the hook, and stanzas sent through the API that wait for the server. It also remembers the
//! API's answers by idempotency key ([`Remembered`]), committed together with the stanza they
//! accepted. It does not parse stanzas, schedule or call anything.

pub mod memory;
pub mod postgres;
pub mod redb;
pub mod retry;
mod writes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::config::{QueueBackend, QueueConfig};

/// A queue, whichever its backend.
pub type Queue = Arc<dyn Backend>;

/// Opens the queue the configuration asks for; a durable one resumes what it holds.
pub async fn open(config: &QueueConfig) -> Result<Queue, QueueError> {
    Ok(match &config.backend {
        QueueBackend::Durable => Arc::new(redb::RedbQueue::open(&config.data_dir)?),
        QueueBackend::Memory => Arc::new(memory::MemoryQueue::new()),
        QueueBackend::Postgres(postgres) => {
            Arc::new(postgres::PostgresQueue::open(postgres).await?)
        }
    })
}

/// What every queue backend does. Writes are asynchronous and may be grouped: an append
/// resolves its [`Committed`] once it is as safe as the backend makes it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Whether what is committed survives the process. A stop leaves such stanzas queued for
    /// the next start; any other undelivered stanza must be answered at the stop.
    fn durable(&self) -> bool;
    /// Whether several instances share this queue, each delivering the conversations it claims:
    /// only then does an [`Entry`] need its conversation, and a finished conversation a
    /// [`Backend::release`].
    fn shared(&self) -> bool {
        false
    }
    /// A new position at the end of the queue; positions are never reused.
    fn allocate(&self) -> u64;
    /// The `webhook-id` of the stanza numbered `id`.
    fn webhook_id(&self, id: u64) -> String;
    /// Queues `entry` for the next commit, with the answer to remember for it if any (both are
    /// committed together or not at all); waits only while the backend's writer is behind. A
    /// shared backend also claims the entry's conversation for this instance (see [`Admitted`]).
    async fn append(&self, entry: Entry, remember: Option<Remembered>) -> Committed;
    /// This instance delivers nothing of `conversation` now: a shared backend lets another
    /// instance claim it. Only a conversation that holds nothing of this instance is let go.
    async fn release(&self, _conversation: String) {}
    /// Stanzas this instance must deliver besides its own appends: handed to it by another
    /// instance (whose sender's conversation it holds), or taken over from an instance that
    /// died. The receiver can be taken once; only a shared backend has one.
    fn arrivals(&self) -> Option<mpsc::UnboundedReceiver<Vec<Entry>>> {
        None
    }
    /// Remembers an answer on its own; returns once that is committed.
    async fn remember(&self, remembered: Remembered) -> Result<(), String>;
    /// The answer remembered under `key`, unless it has expired.
    async fn recall(&self, key: &str) -> Result<Option<Remembered>, QueueError>;
    /// Forgets the answers that expired before `now_ms`.
    async fn forget_expired(&self, now_ms: u64);
    /// Removes a stanza that reached its final outcome, in the next commit.
    async fn remove(&self, position: u64);
    /// Moves a stanza to the dead letters; returns once that is committed. A backend that
    /// keeps no dead letters says why in the `Err`.
    async fn bury(&self, position: u64, reason: String) -> Result<(), String>;
    /// Returns once everything written before this call is committed.
    async fn flush(&self);
    /// The positions of appends whose commit failed, one batch per failed commit; the receiver
    /// can be taken once. Each of those appends' [`Committed`] reports the failure as well.
    fn failed_appends(&self) -> Option<mpsc::UnboundedReceiver<Vec<u64>>>;
    /// Every waiting stanza, in queue order.
    async fn pending(&self) -> Result<Vec<Entry>, QueueError>;
    /// Every dead letter, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;
    /// Moves the selected dead letters back to the end of the queue, in their original order and
    /// with their original ids, with a fresh `retry_for` counted from now; returns them.
    async fn revive(&self, selection: Selection) -> Result<Vec<Entry>, QueueError>;
    /// Deletes the selected dead letters; returns how many there were.
    async fn purge(&self, selection: Selection) -> Result<usize, QueueError>;
    /// How many dead letters there are, and when the oldest waiting stanza was received.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
    /// Why nothing can be committed now (the last commit failed), if so.
    fn unwritable(&self) -> Option<String>;
}

/// What the metrics and the status read of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub dead_letters: usize,
    /// `received_ms` of the oldest stanza waiting, in either direction.
    pub oldest_received_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "the queue {path} is in use by another component-http process; stop it, or give this one its own data_dir"
    )]
    InUse { path: PathBuf },
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the queue {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: ::redb::Error,
    },
    #[error("the queue cannot be written: {0}")]
    Database(#[from] ::redb::Error),
    #[error("a record in the queue is damaged (position {0}); it is skipped")]
    Damaged(u64),
    #[error("the queue's writer has stopped")]
    Closed,
    #[error("the queue file is closed after an I/O error and is being opened again")]
    Reopening,
    #[error("the PostgreSQL queue: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("the PostgreSQL queue's schema cannot be brought up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "another component-http process runs as instance {instance:?} on this PostgreSQL queue; stop it, or give this one its own `instance`"
    )]
    InstanceInUse { instance: String },
}

/// Which way a queued stanza goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read from the server, waiting for the hook.
    ToHook,
    /// Sent through the API, waiting to be written to the server.
    ToServer,
}

/// A stanza waiting for its final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it sits in the queue: stanzas of one conversation go in position order.
    pub(crate) position: u64,
    /// Numbers its `webhook-id`; the position it first had, kept when a dead letter is replayed.
    pub id: u64,
    /// When the bridge read it (or it was replayed), in milliseconds since the Unix epoch:
    /// `retry_for` counts from here, across restarts.
    pub(crate) received_ms: u64,
    pub direction: Direction,
    /// The stanza's XML.
    pub raw: String,
    /// The conversation it is delivered in, for a shared backend's claims; `None` when order
    /// per conversation is off, for stanzas sent through the API, and as read back.
    pub(crate) conversation: Option<String>,
}

/// An answer of the API, remembered under its idempotency key until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub key: String,
    pub expires_ms: u64,
    pub status: u16,
    pub body: String,
}

/// A stanza whose retries ran out, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub(crate) entry: Entry,
    pub(crate) died_ms: u64,
    pub(crate) reason: String,
}

/// Which dead letters a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Positions(Vec<u64>),
}

impl Selection {
    fn contains(&self, position: u64) -> bool {
        match self {
            Selection::All => true,
            Selection::Positions(positions) => positions.contains(&position),
        }
    }
}

/// Resolves when an appended stanza is committed.
pub struct Committed(oneshot::Receiver<Result<Admitted, String>>);

/// Who delivers a committed stanza. Only a shared backend answers other than [`Admitted::Here`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// This instance.
    Here,
    /// The instance that holds its conversation; this one must not deliver it.
    HandedOver,
    /// This instance, after these older stanzas of its conversation, taken over from an
    /// instance that died while holding it (oldest first).
    After(Vec<Entry>),
}

impl Committed {
    /// A commit with `result` already known.
    fn ready(result: Result<Admitted, String>) -> Self {
        let (done, committed) = oneshot::channel();
        let _ = done.send(result);
        Committed(committed)
    }

    /// `Err` says why the stanza could not be stored.
    pub(crate) async fn wait(self) -> Result<Admitted, String> {
        self.0
            .await
            .unwrap_or_else(|_| Err("the queue's writer has stopped".into()))
    }
}

/// Waits for a write's outcome from a backend's writer; `Err` says why it was not committed.
pub(crate) async fn written(outcome: oneshot::Receiver<Result<(), String>>) -> Result<(), String> {
    outcome
        .await
        .unwrap_or_else(|_| Err("the queue's writer has stopped".into()))
}

/// Delivery ids for stanzas that are not stored (iq, or a memory queue): random per process, so
/// they stay unique across restarts without anything written down.
pub(crate) struct ProcessIds {
    prefix: u64,
    next: AtomicU64,
}

impl ProcessIds {
    pub(crate) fn new() -> Self {
        Self {
            prefix: rand::random(),
            next: AtomicU64::new(0),
        }
    }

    pub(crate) fn allocate(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn webhook_id(&self, id: u64) -> String {
        format!("msg_{:016x}_m{id}", self.prefix)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
