//! The durable queue's storage: one redb file under `data_dir` holding the stanzas that wait for
//! a final outcome (`pending`), the ones that ran out of retries (`dead`), and the counters that
//! make delivery ids unique (`meta`).
//!
//! Appends, removals and burials go to one writer thread that commits whatever has queued up in
//! a single transaction (group commit: one fsync for many stanzas), and tells each appender when
//! its stanza is on disk. Reading and the dead-letter commands use their own transactions. This
//! module stores bytes; it does not parse stanzas, schedule or call the hook.
//!
//! A failed commit (a full disk, an I/O error) fails every append in it at once, reported both
//! to each appender and on [`Store::failed_appends`], so a stanza waiting behind others learns of
//! it without waiting its turn. redb refuses all work after an I/O error until the database is
//! opened again, so the writer closes and reopens the file before its next transaction (at
//! most once per [`limits::QUEUE_REOPEN_INTERVAL`], waiting for it if need be): the queue
//! recovers by itself once the disk does. Removals that failed are retried with every later commit, so a delivered stanza is not
//! delivered again at the next start just because its removal met a full disk. The file is
//! created readable by its owner only (it holds message bodies), and so is a `data_dir` this
//! module creates.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::limits;

/// Position in the queue → [`Entry`] bytes.
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// Position the stanza had when it died → [`DeadLetter`] bytes.
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The next queue position; positions are never reused, so they also number the deliveries.
const META_NEXT_POSITION: &str = "next_position";
/// Random per database, so ids stay unique if the file is deleted and made anew.
const META_INSTANCE: &str = "instance";

/// The file inside `data_dir`.
pub const FILE_NAME: &str = "queue.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
        source: redb::Error,
    },
    #[error("the queue cannot be written: {0}")]
    Database(#[from] redb::Error),
    #[error("a record in the queue is damaged (position {0}); it is skipped")]
    Damaged(u64),
    #[error("the queue's writer has stopped")]
    Closed,
    #[error("the queue file is closed after an I/O error and is being opened again")]
    Reopening,
}

/// Converts every redb error type into [`StoreError::Database`].
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(error: $t) -> Self {
                StoreError::Database(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

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
    /// The stanza's XML as read from the server.
    pub raw: String,
}

/// A stanza whose retries ran out, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub(crate) entry: Entry,
    pub(crate) died_ms: u64,
    pub(crate) reason: String,
}

/// Which dead letters a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
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

enum Write {
    Append(Entry, oneshot::Sender<Result<(), String>>),
    Remove(u64),
    Bury(u64, String, oneshot::Sender<Result<(), String>>),
    Flush(oneshot::Sender<()>),
}

/// Resolves when an appended stanza is on disk.
pub(crate) struct Committed(oneshot::Receiver<Result<(), String>>);

impl Committed {
    /// `Err` says why the stanza could not be stored.
    pub(crate) async fn wait(self) -> Result<(), String> {
        self.0
            .await
            .unwrap_or_else(|_| Err("the queue's writer has stopped".into()))
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; `None` while the writer reopens it after an I/O error.
    db: Arc<RwLock<Option<Arc<Database>>>>,
    writes: mpsc::Sender<Write>,
    next_position: AtomicU64,
    instance: u64,
    /// Positions of appends whose commit failed, one batch per failed commit.
    failed_appends: Mutex<Option<mpsc::UnboundedReceiver<Vec<u64>>>>,
}

impl Store {
    /// Opens (or creates) the queue in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = open_database(&path)?;
        let (next_position, instance) = init_meta(&db)?;
        let db = Arc::new(RwLock::new(Some(Arc::new(db))));
        let (writes, queue) = mpsc::channel(limits::QUEUE_WRITE_BACKLOG);
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: db.clone(),
            path: path.clone(),
            failed_appends: failed_tx,
            unremoved: Vec::new(),
            last_reopen: None,
        };
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Open {
                path,
                source: redb::Error::Io(e),
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                writes,
                next_position: AtomicU64::new(next_position),
                instance,
                failed_appends: Mutex::new(Some(failed_rx)),
            }),
        })
    }

    /// The positions of appends whose commit failed, a batch per failed commit; the receiver
    /// can be taken once. Each of those appends' [`Committed`] reports the failure as well.
    pub(crate) fn failed_appends(&self) -> Option<mpsc::UnboundedReceiver<Vec<u64>>> {
        self.inner
            .failed_appends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The open database, for a read or a command's own transaction.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.inner
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Reopening)
    }

    /// The `webhook-id` of the stanza numbered `id`.
    pub fn webhook_id(&self, id: u64) -> String {
        format!("msg_{:016x}_{id}", self.inner.instance)
    }

    /// A new position at the end of the queue.
    pub(crate) fn allocate(&self) -> u64 {
        self.inner.next_position.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `entry` for the next group commit; waits only while the writer's backlog is full
    /// (which slows the reader down to the disk's pace).
    pub(crate) async fn append(&self, entry: Entry) -> Committed {
        let (done, committed) = oneshot::channel();
        // If the writer is gone, `done` is dropped and `Committed::wait` reports it.
        let _ = self.inner.writes.send(Write::Append(entry, done)).await;
        Committed(committed)
    }

    /// Removes a stanza that reached its final outcome, in the next group commit.
    pub(crate) async fn remove(&self, position: u64) {
        let _ = self.inner.writes.send(Write::Remove(position)).await;
    }

    /// Moves a stanza from the queue to the dead letters; returns once that is on disk.
    pub(crate) async fn bury(&self, position: u64, reason: String) -> Result<(), String> {
        let (done, buried) = oneshot::channel();
        let _ = self
            .inner
            .writes
            .send(Write::Bury(position, reason, done))
            .await;
        Committed(buried).wait().await
    }

    /// Returns once everything sent to the writer before this call is on disk.
    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.inner.writes.send(Write::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Every waiting stanza, in queue order; damaged records are reported and skipped.
    pub fn pending(&self) -> Result<Vec<Entry>, StoreError> {
        self.read_all(PENDING, decode_entry)
    }

    /// Every dead letter, oldest first.
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read_all(DEAD, decode_dead)
    }

    fn read_all<T>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        decode: fn(u64, &[u8]) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let read = self.db()?.begin_read()?;
        let table = read.open_table(table)?;
        let mut records = Vec::new();
        for row in table.range::<u64>(..)? {
            let (position, bytes) = row?;
            match decode(position.value(), bytes.value()) {
                Some(record) => records.push(record),
                None => error!("{}", StoreError::Damaged(position.value())),
            }
        }
        Ok(records)
    }

    /// Deletes the selected dead letters; returns how many there were.
    pub(crate) fn purge(&self, selection: &Selection) -> Result<usize, StoreError> {
        let write = self.db()?.begin_write()?;
        let purged = {
            let mut dead = write.open_table(DEAD)?;
            let doomed = selected(&dead, selection)?;
            for position in &doomed {
                dead.remove(position)?;
            }
            doomed.len()
        };
        write.commit()?;
        Ok(purged)
    }

    /// Moves the selected dead letters back to the end of the queue, in their original order and
    /// with their original ids (so a hook that did see one can tell), with a fresh `retry_for`
    /// counted from now; returns the new entries.
    pub(crate) fn revive(&self, selection: &Selection) -> Result<Vec<Entry>, StoreError> {
        let write = self.db()?.begin_write()?;
        let mut revived = Vec::new();
        {
            let mut dead = write.open_table(DEAD)?;
            let mut pending = write.open_table(PENDING)?;
            let mut meta = write.open_table(META)?;
            for position in selected(&dead, selection)? {
                let bytes = dead.remove(position)?.map(|b| b.value().to_vec());
                let Some(letter) = bytes.and_then(|b| decode_dead(position, &b)) else {
                    error!("{}", StoreError::Damaged(position));
                    continue;
                };
                let entry = Entry {
                    position: self.allocate(),
                    received_ms: now_ms(),
                    ..letter.entry
                };
                pending.insert(entry.position, encode_entry(&entry).as_slice())?;
                revived.push(entry);
            }
            let next = self.inner.next_position.load(Ordering::Relaxed);
            meta.insert(META_NEXT_POSITION, next)?;
        }
        write.commit()?;
        Ok(revived)
    }
}

fn selected(
    dead: &impl ReadableTable<u64, &'static [u8]>,
    selection: &Selection,
) -> Result<Vec<u64>, StoreError> {
    let mut positions = Vec::new();
    for row in dead.range::<u64>(..)? {
        let position = row?.0.value();
        if selection.contains(position) {
            positions.push(position);
        }
    }
    Ok(positions)
}

/// Reads (or sets up) the next position and the instance number, creating the tables.
fn init_meta(db: &Database) -> Result<(u64, u64), StoreError> {
    let write = db.begin_write()?;
    let found = {
        write.open_table(PENDING)?;
        write.open_table(DEAD)?;
        let mut meta = write.open_table(META)?;
        let next = meta.get(META_NEXT_POSITION)?.map(|v| v.value());
        let instance = meta.get(META_INSTANCE)?.map(|v| v.value());
        let instance = match instance {
            Some(instance) => instance,
            None => {
                let instance = rand::random();
                meta.insert(META_INSTANCE, instance)?;
                instance
            }
        };
        (next.unwrap_or(0), instance)
    };
    write.commit()?;
    Ok(found)
}

/// Opens the database file, created owner-only when it is new; an existing file that others
/// may read is made owner-only too (it holds message bodies).
fn open_database(path: &Path) -> Result<Database, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let open_error = |source: std::io::Error| StoreError::Open {
        path: path.to_owned(),
        source: redb::Error::Io(source),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(open_error)?;
    let mode = file.metadata().map_err(open_error)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(open_error)?;
        info!(
            "made the queue file {} readable by its owner only (it holds message bodies)",
            path.display()
        );
    }
    drop(file);
    redb::Builder::new()
        .set_cache_size(limits::QUEUE_CACHE_BYTES)
        .create(path)
        .map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_owned(),
            },
            other => StoreError::Open {
                path: path.to_owned(),
                source: other.into(),
            },
        })
}

/// `create_dir_all`, with the directories it creates readable by their owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The writer thread's state.
struct Writer {
    db: Arc<RwLock<Option<Arc<Database>>>>,
    path: PathBuf,
    failed_appends: mpsc::UnboundedSender<Vec<u64>>,
    /// Removals whose commit failed: retried with every later commit.
    unremoved: Vec<u64>,
    last_reopen: Option<std::time::Instant>,
}

impl Writer {
    /// One transaction and one fsync for everything queued since the last one, after a short
    /// wait for more when several writes are coming in at once.
    fn run(mut self, mut queue: mpsc::Receiver<Write>) {
        let mut batch = Vec::new();
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            drain_into(&mut batch, &mut queue);
            if batch.len() > 1 && batch.len() < limits::QUEUE_GROUP_COMMIT_LINGER_BELOW {
                std::thread::sleep(limits::QUEUE_GROUP_COMMIT_LINGER);
                drain_into(&mut batch, &mut queue);
            }
            let result = self.commit(&batch).map_err(|e| e.to_string());
            let mut failed = Vec::new();
            for write in batch.drain(..) {
                match write {
                    Write::Append(entry, done) => {
                        if result.is_err() {
                            failed.push(entry.position);
                        }
                        let _ = done.send(result.clone());
                    }
                    Write::Bury(_, _, done) => {
                        let _ = done.send(result.clone());
                    }
                    Write::Flush(done) => {
                        let _ = done.send(());
                    }
                    Write::Remove(position) => {
                        if result.is_err() {
                            self.unremoved.push(position);
                        }
                    }
                }
            }
            if !failed.is_empty() {
                let _ = self.failed_appends.send(failed);
            }
        }
        // Everyone is gone: the database closes when its last reader lets go of it.
        self.db.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Commits `batch` (plus the removals that failed before); on failure the database is
    /// closed, to be opened again before the next commit.
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        let db = self.database()?;
        let result = commit(&db, batch, &self.unremoved);
        drop(db);
        match &result {
            Ok(()) => self.unremoved.clear(),
            Err(reason) => {
                error!("the queue could not be written: {reason}");
                // redb needs a fresh open after an I/O error; the next commit does it.
                self.db.write().unwrap_or_else(|e| e.into_inner()).take();
            }
        }
        result
    }

    /// The open database, reopening it first if an earlier commit failed.
    fn database(&mut self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.db.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(db);
        }
        // Every batch gets a real attempt, so the first writes after the disk frees succeed;
        // attempts are spaced so that a disk that stays full is not hammered.
        if let Some(at) = self.last_reopen {
            std::thread::sleep(limits::QUEUE_REOPEN_INTERVAL.saturating_sub(at.elapsed()));
        }
        self.last_reopen = Some(std::time::Instant::now());
        match open_database(&self.path) {
            Ok(db) => {
                warn!(
                    "the queue file {} is open again and writable",
                    self.path.display()
                );
                let db = Arc::new(db);
                *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
                Ok(db)
            }
            Err(reason) => {
                error!("the queue file cannot be opened again yet: {reason}");
                Err(reason)
            }
        }
    }
}

/// Adds what is queued, up to the most one commit takes.
fn drain_into(batch: &mut Vec<Write>, queue: &mut mpsc::Receiver<Write>) {
    while batch.len() < limits::QUEUE_GROUP_COMMIT_MAX {
        match queue.try_recv() {
            Ok(write) => batch.push(write),
            Err(_) => break,
        }
    }
}

fn commit(db: &Database, batch: &[Write], unremoved: &[u64]) -> Result<(), StoreError> {
    let write = db.begin_write()?;
    {
        let mut pending = write.open_table(PENDING)?;
        let mut dead = write.open_table(DEAD)?;
        let mut next_position = None;
        for position in unremoved {
            pending.remove(position)?;
        }
        for op in batch {
            match op {
                Write::Append(entry, _) => {
                    pending.insert(entry.position, encode_entry(entry).as_slice())?;
                    next_position = next_position.max(Some(entry.position + 1));
                }
                Write::Remove(position) => {
                    pending.remove(position)?;
                }
                Write::Bury(position, reason, _) => {
                    let bytes = pending.remove(position)?.map(|b| b.value().to_vec());
                    if let Some(entry) = bytes.and_then(|b| decode_entry(*position, &b)) {
                        let letter = DeadLetter {
                            entry,
                            died_ms: now_ms(),
                            reason: reason.clone(),
                        };
                        dead.insert(position, encode_dead(&letter).as_slice())?;
                    }
                }
                Write::Flush(_) => {}
            }
        }
        if let Some(next) = next_position {
            let mut meta = write.open_table(META)?;
            let stored = meta.get(META_NEXT_POSITION)?.map(|v| v.value());
            if stored.is_none_or(|stored| stored < next) {
                meta.insert(META_NEXT_POSITION, next)?;
            }
        }
    }
    write.commit()?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Record layouts. Version byte first, so a later layout can be told apart.
const ENTRY_V1: u8 = 1;
const DEAD_V1: u8 = 1;

/// `[1][id u64][received_ms u64][raw …]`
fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(17 + entry.raw.len());
    bytes.push(ENTRY_V1);
    bytes.extend_from_slice(&entry.id.to_be_bytes());
    bytes.extend_from_slice(&entry.received_ms.to_be_bytes());
    bytes.extend_from_slice(entry.raw.as_bytes());
    bytes
}

fn decode_entry(position: u64, bytes: &[u8]) -> Option<Entry> {
    let (&version, rest) = bytes.split_first()?;
    if version != ENTRY_V1 {
        return None;
    }
    let (id, rest) = take_u64(rest)?;
    let (received_ms, rest) = take_u64(rest)?;
    Some(Entry {
        position,
        id,
        received_ms,
        raw: String::from_utf8(rest.to_vec()).ok()?,
    })
}

/// `[1][died_ms u64][reason length u32][reason][entry record]`
fn encode_dead(letter: &DeadLetter) -> Vec<u8> {
    let entry = encode_entry(&letter.entry);
    let reason = letter.reason.as_bytes();
    let mut bytes = Vec::with_capacity(13 + reason.len() + entry.len());
    bytes.push(DEAD_V1);
    bytes.extend_from_slice(&letter.died_ms.to_be_bytes());
    bytes.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    bytes.extend_from_slice(reason);
    bytes.extend_from_slice(&entry);
    bytes
}

fn decode_dead(position: u64, bytes: &[u8]) -> Option<DeadLetter> {
    let (&version, rest) = bytes.split_first()?;
    if version != DEAD_V1 {
        return None;
    }
    let (died_ms, rest) = take_u64(rest)?;
    let (length, rest) = rest.split_first_chunk::<4>()?;
    let length = u32::from_be_bytes(*length) as usize;
    let reason = std::str::from_utf8(rest.get(..length)?).ok()?.to_owned();
    let entry = decode_entry(position, rest.get(length..)?)?;
    Some(DeadLetter {
        entry,
        died_ms,
        reason,
    })
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (value, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*value), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(store: &Store, raw: &str) -> Entry {
        let position = store.allocate();
        Entry {
            position,
            id: position,
            received_ms: 1_700_000_000_000,
            raw: raw.to_owned(),
        }
    }

    #[tokio::test]
    async fn appended_entries_survive_a_reopen_in_order_and_removed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commits = Vec::new();
        let mut entries = Vec::new();
        for i in 0..50 {
            let e = entry(&store, &format!("<message id='{i}'/>"));
            entries.push(e.clone());
            commits.push(store.append(e).await);
        }
        for commit in commits {
            commit.wait().await.unwrap();
        }
        store.remove(entries[3].position).await;
        store.flush().await;
        let id_before = store.webhook_id(7);
        drop(store);
        // The writer thread releases the file when it sees the channel closed.
        let store = reopen(dir.path()).await;
        let pending = store.pending().unwrap();
        entries.remove(3);
        assert_eq!(pending, entries);
        assert_eq!(
            store.webhook_id(7),
            id_before,
            "ids are stable per database"
        );
        assert_eq!(store.allocate(), 50, "positions are never reused");
    }

    async fn reopen(dir: &Path) -> Store {
        for _ in 0..100 {
            match Store::open(dir) {
                Ok(store) => return store,
                Err(StoreError::InUse { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(other) => panic!("{other}"),
            }
        }
        panic!("the database stayed locked after its store was dropped");
    }

    #[tokio::test]
    async fn a_second_process_on_the_same_file_is_told_it_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).err().unwrap();
        assert!(matches!(error, StoreError::InUse { .. }), "{error}");
        assert!(error.to_string().contains("data_dir"), "{error}");
    }

    #[tokio::test]
    async fn buried_entries_become_dead_letters_that_can_be_revived_or_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = entry(&store, "<message id='a'/>");
        let b = entry(&store, "<message id='b'/>");
        let c = entry(&store, "<message id='c'/>");
        for e in [&a, &b, &c] {
            store.append(e.clone()).await.wait().await.unwrap();
        }
        for e in [&a, &b, &c] {
            store
                .bury(e.position, format!("HTTP 503 for {}", e.raw))
                .await
                .unwrap();
        }
        assert!(store.pending().unwrap().is_empty());
        let dead = store.dead_letters().unwrap();
        assert_eq!(
            dead.iter().map(|d| d.entry.clone()).collect::<Vec<_>>(),
            vec![a.clone(), b.clone(), c.clone()]
        );
        assert_eq!(dead[1].reason, "HTTP 503 for <message id='b'/>");

        let revived = store
            .revive(&Selection::Positions(vec![c.position, a.position]))
            .unwrap();
        assert_eq!(
            revived
                .iter()
                .map(|e| (e.id, e.raw.as_str()))
                .collect::<Vec<_>>(),
            vec![(a.id, a.raw.as_str()), (c.id, c.raw.as_str())],
            "revived in their original order, with their original ids"
        );
        assert!(
            revived.iter().all(|e| e.position >= 3),
            "at the end of the queue"
        );
        assert_eq!(store.pending().unwrap(), revived);
        assert_eq!(store.purge(&Selection::All).unwrap(), 1);
        assert!(store.dead_letters().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_queue_file_and_a_created_data_dir_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state").join("queue");
        let store = Store::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&parent.path().join("state")), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
        drop(store);
        // A file left readable by others (by an earlier version) is made owner-only.
        std::fs::set_permissions(dir.join(FILE_NAME), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let _store = reopen(&dir).await;
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
    }

    #[test]
    fn damaged_records_are_refused_not_misread() {
        let e = Entry {
            position: 9,
            id: 4,
            received_ms: 5,
            raw: "<message/>".into(),
        };
        let bytes = encode_entry(&e);
        assert_eq!(decode_entry(9, &bytes), Some(e.clone()));
        for cut in 0..17 {
            assert_eq!(decode_entry(9, &bytes[..cut]), None);
        }
        let letter = DeadLetter {
            entry: e,
            died_ms: 6,
            reason: "timeout".into(),
        };
        let bytes = encode_dead(&letter);
        assert_eq!(decode_dead(9, &bytes), Some(letter));
        assert_eq!(decode_dead(9, &bytes[..20]), None);
        assert_eq!(decode_dead(9, b"\x02rest"), None);
    }
}
