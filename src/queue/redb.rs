//! The durable queue (`queue = "durable"`, the default): one redb file under `data_dir` holding
//! the stanzas that wait for the hook (`pending`) or for the server (`outgoing`), the ones that
//! ran out of retries (`dead`), and the counters that make delivery ids unique (`meta`).
//!
//! Appends, removals and burials go to one writer thread that commits whatever has queued up in
//! a single transaction (group commit: one fsync for many stanzas), and tells each appender when
//! its stanza is on disk. Reading and the dead-letter commands use their own transactions. This
//! module stores bytes; it does not parse stanzas, schedule or call the hook.
//!
//! A failed commit (a full disk, an I/O error) fails every append in it at once, reported both
//! to each appender and on [`RedbQueue::failed_appends`], so a stanza waiting behind others learns of
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

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::limits;
use crate::queue::writes::{TakeOnce, Write, Writes, answer, drain_into};
use crate::queue::{
    Admitted, Backend, Committed, DeadLetter, Direction, Entry, QueueError, QueueStats, Remembered,
    Selection, now_ms,
};

/// Position in the queue → [`Entry`] bytes.
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// Position in the queue → [`Entry`] bytes of a stanza sent through the API.
const OUTGOING: TableDefinition<u64, &[u8]> = TableDefinition::new("outgoing");
/// Idempotency key → [`Remembered`] bytes: the API's answers, kept until they expire.
const REMEMBERED: TableDefinition<&str, &[u8]> = TableDefinition::new("remembered");
/// Position the stanza had when it died → [`DeadLetter`] bytes.
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The next queue position; positions are never reused, so they also number the deliveries.
const META_NEXT_POSITION: &str = "next_position";
/// Random per database, so ids stay unique if the file is deleted and made anew.
const META_INSTANCE: &str = "instance";

/// The file inside `data_dir`.
pub const FILE_NAME: &str = "queue.redb";

/// Converts every redb error type into [`QueueError::Database`].
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for QueueError {
            fn from(error: $t) -> Self {
                QueueError::Database(error.into())
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

#[derive(Clone)]
pub struct RedbQueue {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; `None` while the writer reopens it after an I/O error.
    db: Arc<RwLock<Option<Arc<Database>>>>,
    writes: Writes,
    next_position: AtomicU64,
    instance: u64,
    /// Positions of appends whose commit failed, one batch per failed commit.
    failed_appends: TakeOnce<mpsc::UnboundedReceiver<Vec<u64>>>,
    /// Why the last commit failed; `None` once one succeeds.
    last_failure: Arc<Mutex<Option<String>>>,
}

impl RedbQueue {
    /// Opens (or creates) the queue in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<RedbQueue, QueueError> {
        create_private_dir(dir).map_err(|source| QueueError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = open_database(&path)?;
        let (next_position, instance) = init_meta(&db)?;
        let db = Arc::new(RwLock::new(Some(Arc::new(db))));
        let (writes, queue) = Writes::channel();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let last_failure = Arc::new(Mutex::new(None));
        let writer = Writer {
            last_failure: last_failure.clone(),
            db: db.clone(),
            path: path.clone(),
            failed_appends: failed_tx,
            unremoved: Vec::new(),
            last_reopen: None,
        };
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| QueueError::Open {
                path,
                source: redb::Error::Io(e),
            })?;
        Ok(RedbQueue {
            inner: Arc::new(Inner {
                db,
                writes,
                next_position: AtomicU64::new(next_position),
                instance,
                failed_appends: TakeOnce::new(failed_rx),
                last_failure,
            }),
        })
    }

    /// The open database, for a read or a command's own transaction.
    fn db(&self) -> Result<Arc<Database>, QueueError> {
        self.inner
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(QueueError::Reopening)
    }

    /// Runs a blocking read or command on a thread of its own.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&RedbQueue) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let queue = self.clone();
        tokio::task::spawn_blocking(move || work(&queue))
            .await
            .unwrap_or(Err(QueueError::Closed))
    }

    /// Every waiting stanza of both directions, in queue order; damaged records are reported
    /// and skipped.
    pub fn pending_now(&self) -> Result<Vec<Entry>, QueueError> {
        let mut entries = self.read_all(PENDING, |position, bytes| {
            decode_entry(position, Direction::ToHook, bytes)
        })?;
        entries.extend(self.read_all(OUTGOING, |position, bytes| {
            decode_entry(position, Direction::ToServer, bytes)
        })?);
        entries.sort_by_key(|entry| entry.position);
        Ok(entries)
    }

    fn read_all<T>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        decode: fn(u64, &[u8]) -> Option<T>,
    ) -> Result<Vec<T>, QueueError> {
        let read = self.db()?.begin_read()?;
        let table = read.open_table(table)?;
        let mut records = Vec::new();
        for row in table.range::<u64>(..)? {
            let (position, bytes) = row?;
            match decode(position.value(), bytes.value()) {
                Some(record) => records.push(record),
                None => error!("{}", QueueError::Damaged(position.value())),
            }
        }
        Ok(records)
    }

    fn purge_now(&self, selection: &Selection) -> Result<usize, QueueError> {
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

    fn revive_now(&self, selection: &Selection) -> Result<Vec<Entry>, QueueError> {
        let write = self.db()?.begin_write()?;
        let mut revived = Vec::new();
        {
            let mut dead = write.open_table(DEAD)?;
            let mut pending = write.open_table(PENDING)?;
            let mut meta = write.open_table(META)?;
            for position in selected(&dead, selection)? {
                let bytes = dead.remove(position)?.map(|b| b.value().to_vec());
                let Some(letter) = bytes.and_then(|b| decode_dead(position, &b)) else {
                    error!("{}", QueueError::Damaged(position));
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

#[async_trait]
impl Backend for RedbQueue {
    fn durable(&self) -> bool {
        true
    }

    fn allocate(&self) -> u64 {
        self.inner.next_position.fetch_add(1, Ordering::Relaxed)
    }

    fn webhook_id(&self, id: u64) -> String {
        format!("msg_{:016x}_{id}", self.inner.instance)
    }

    async fn append(&self, entry: Entry, remember: Option<Remembered>) -> Committed {
        self.inner.writes.append(entry, remember).await
    }

    async fn remember(&self, remembered: Remembered) -> Result<(), String> {
        self.inner.writes.remember(remembered).await
    }

    async fn recall(&self, key: &str) -> Result<Option<Remembered>, QueueError> {
        let key = key.to_owned();
        self.blocking(move |queue| {
            let read = queue.db()?.begin_read()?;
            let table = read.open_table(REMEMBERED)?;
            let found = table
                .get(key.as_str())?
                .and_then(|bytes| decode_remembered(&key, bytes.value()));
            Ok(found.filter(|r| r.expires_ms > now_ms()))
        })
        .await
    }

    async fn forget_expired(&self, now_ms: u64) {
        self.inner.writes.forget_expired(now_ms).await;
    }

    async fn remove(&self, position: u64) {
        self.inner.writes.remove(position).await;
    }

    async fn bury(&self, position: u64, reason: String) -> Result<(), String> {
        self.inner.writes.bury(position, reason).await
    }

    async fn flush(&self) {
        self.inner.writes.flush().await;
    }

    fn failed_appends(&self) -> Option<mpsc::UnboundedReceiver<Vec<u64>>> {
        self.inner.failed_appends.take()
    }

    async fn pending(&self) -> Result<Vec<Entry>, QueueError> {
        self.blocking(RedbQueue::pending_now).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.blocking(|queue| queue.read_all(DEAD, decode_dead))
            .await
    }

    async fn revive(&self, selection: Selection) -> Result<Vec<Entry>, QueueError> {
        self.blocking(move |queue| queue.revive_now(&selection))
            .await
    }

    async fn purge(&self, selection: Selection) -> Result<usize, QueueError> {
        self.blocking(move |queue| queue.purge_now(&selection))
            .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.blocking(|queue| {
            let read = queue.db()?.begin_read()?;
            let dead_letters = read.open_table(DEAD)?.len()?;
            let mut oldest_received_ms = None;
            for (table, direction) in [
                (PENDING, Direction::ToHook),
                (OUTGOING, Direction::ToServer),
            ] {
                if let Some((position, bytes)) = read.open_table(table)?.first()?
                    && let Some(entry) = decode_entry(position.value(), direction, bytes.value())
                {
                    let received = entry.received_ms;
                    oldest_received_ms =
                        Some(oldest_received_ms.map_or(received, |o: u64| o.min(received)));
                }
            }
            Ok(QueueStats {
                dead_letters: usize::try_from(dead_letters).unwrap_or(usize::MAX),
                oldest_received_ms,
            })
        })
        .await
    }

    fn unwritable(&self) -> Option<String> {
        self.inner
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn selected(
    dead: &impl ReadableTable<u64, &'static [u8]>,
    selection: &Selection,
) -> Result<Vec<u64>, QueueError> {
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
fn init_meta(db: &Database) -> Result<(u64, u64), QueueError> {
    let write = db.begin_write()?;
    let found = {
        write.open_table(PENDING)?;
        write.open_table(OUTGOING)?;
        write.open_table(REMEMBERED)?;
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
fn open_database(path: &Path) -> Result<Database, QueueError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let open_error = |source: std::io::Error| QueueError::Open {
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
            redb::DatabaseError::DatabaseAlreadyOpen => QueueError::InUse {
                path: path.to_owned(),
            },
            other => QueueError::Open {
                path: path.to_owned(),
                source: other.into(),
            },
        })
}

/// `create_dir_all`, with the directories it creates readable by their owner only.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
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
    /// Shared with the queue, for the health check.
    last_failure: Arc<Mutex<Option<String>>>,
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
            let unwritten = answer(&mut batch, &result, |_| Admitted::Here);
            self.unremoved.extend(unwritten.removals);
            if !unwritten.appends.is_empty() {
                let _ = self.failed_appends.send(unwritten.appends);
            }
        }
        // Everyone is gone: the database closes when its last reader lets go of it.
        self.db.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Commits `batch` (plus the removals that failed before); on failure the database is
    /// closed, to be opened again before the next commit.
    fn commit(&mut self, batch: &[Write]) -> Result<(), QueueError> {
        let result = self
            .database()
            .and_then(|db| commit(&db, batch, &self.unremoved));
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
            result.as_ref().err().map(ToString::to_string);
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
    fn database(&mut self) -> Result<Arc<Database>, QueueError> {
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

type Table<'t> = redb::Table<'t, u64, &'static [u8]>;

fn commit(db: &Database, batch: &[Write], unremoved: &[u64]) -> Result<(), QueueError> {
    let write = db.begin_write()?;
    {
        let mut pending = write.open_table(PENDING)?;
        let mut outgoing = write.open_table(OUTGOING)?;
        let mut dead = write.open_table(DEAD)?;
        let mut remembered = write.open_table(REMEMBERED)?;
        let mut next_position = None;
        // A position is in one of the two tables; trying both is cheaper than remembering which.
        let remove = |pending: &mut Table, outgoing: &mut Table, position: &u64| {
            if pending.remove(position)?.is_none() {
                outgoing.remove(position)?;
            }
            Ok::<(), QueueError>(())
        };
        for position in unremoved {
            remove(&mut pending, &mut outgoing, position)?;
        }
        for op in batch {
            match op {
                Write::Append(entry, remember, _) => {
                    let table = match entry.direction {
                        Direction::ToHook => &mut pending,
                        Direction::ToServer => &mut outgoing,
                    };
                    table.insert(entry.position, encode_entry(entry).as_slice())?;
                    next_position = next_position.max(Some(entry.position + 1));
                    if let Some(record) = remember {
                        remembered
                            .insert(record.key.as_str(), encode_remembered(record).as_slice())?;
                    }
                }
                Write::Remember(record, _) => {
                    remembered.insert(record.key.as_str(), encode_remembered(record).as_slice())?;
                }
                Write::ForgetExpired(now) => {
                    remembered.retain(|key, bytes| {
                        decode_remembered(key, bytes).is_some_and(|r| r.expires_ms > *now)
                    })?;
                }
                Write::Remove(position) => remove(&mut pending, &mut outgoing, position)?,
                Write::Bury(position, reason, _) => {
                    let bytes = pending.remove(position)?.map(|b| b.value().to_vec());
                    if let Some(entry) =
                        bytes.and_then(|b| decode_entry(*position, Direction::ToHook, &b))
                    {
                        let letter = DeadLetter {
                            entry,
                            died_ms: now_ms(),
                            reason: reason.clone(),
                        };
                        dead.insert(position, encode_dead(&letter).as_slice())?;
                    }
                }
                Write::Flush(_) | Write::Release(_) => {}
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

/// Record layouts. Version byte first, so a later layout can be told apart.
const ENTRY_V1: u8 = 1;
const DEAD_V1: u8 = 1;
const REMEMBERED_V1: u8 = 1;

/// `[1][id u64][received_ms u64][raw …]`
fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(17 + entry.raw.len());
    bytes.push(ENTRY_V1);
    bytes.extend_from_slice(&entry.id.to_be_bytes());
    bytes.extend_from_slice(&entry.received_ms.to_be_bytes());
    bytes.extend_from_slice(entry.raw.as_bytes());
    bytes
}

fn decode_entry(position: u64, direction: Direction, bytes: &[u8]) -> Option<Entry> {
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
        direction,
        raw: String::from_utf8(rest.to_vec()).ok()?,
        conversation: None,
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
    let entry = decode_entry(position, Direction::ToHook, rest.get(length..)?)?;
    Some(DeadLetter {
        entry,
        died_ms,
        reason,
    })
}

/// `[1][expires_ms u64][status u16][body …]`
fn encode_remembered(record: &Remembered) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(11 + record.body.len());
    bytes.push(REMEMBERED_V1);
    bytes.extend_from_slice(&record.expires_ms.to_be_bytes());
    bytes.extend_from_slice(&record.status.to_be_bytes());
    bytes.extend_from_slice(record.body.as_bytes());
    bytes
}

fn decode_remembered(key: &str, bytes: &[u8]) -> Option<Remembered> {
    let (&version, rest) = bytes.split_first()?;
    if version != REMEMBERED_V1 {
        return None;
    }
    let (expires_ms, rest) = take_u64(rest)?;
    let (status, rest) = rest.split_first_chunk::<2>()?;
    Some(Remembered {
        key: key.to_owned(),
        expires_ms,
        status: u16::from_be_bytes(*status),
        body: String::from_utf8(rest.to_vec()).ok()?,
    })
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (value, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*value), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(store: &RedbQueue, raw: &str) -> Entry {
        let position = store.allocate();
        Entry {
            position,
            id: position,
            received_ms: 1_700_000_000_000,
            direction: Direction::ToHook,
            raw: raw.to_owned(),
            conversation: None,
        }
    }

    #[tokio::test]
    async fn appended_entries_survive_a_reopen_in_order_and_removed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbQueue::open(dir.path()).unwrap();
        let mut commits = Vec::new();
        let mut entries = Vec::new();
        for i in 0..50 {
            let e = entry(&store, &format!("<message id='{i}'/>"));
            entries.push(e.clone());
            commits.push(store.append(e, None).await);
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
        let pending = store.pending().await.unwrap();
        entries.remove(3);
        assert_eq!(pending, entries);
        assert_eq!(
            store.webhook_id(7),
            id_before,
            "ids are stable per database"
        );
        assert_eq!(store.allocate(), 50, "positions are never reused");
    }

    #[tokio::test]
    async fn stanzas_for_the_server_are_kept_apart_and_come_back_with_their_direction() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbQueue::open(dir.path()).unwrap();
        let inbound = entry(&store, "<message id='in'/>");
        let outbound = Entry {
            direction: Direction::ToServer,
            ..entry(&store, "<message id='out'/>")
        };
        let removed = Entry {
            direction: Direction::ToServer,
            ..entry(&store, "<message id='written'/>")
        };
        for e in [&inbound, &outbound, &removed] {
            store.append(e.clone(), None).await.wait().await.unwrap();
        }
        store.remove(removed.position).await;
        store.flush().await;
        drop(store);
        let store = reopen(dir.path()).await;
        assert_eq!(store.pending().await.unwrap(), vec![inbound, outbound]);
    }

    #[tokio::test]
    async fn remembered_answers_survive_a_reopen_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbQueue::open(dir.path()).unwrap();
        let record = |key: &str, expires_ms| Remembered {
            key: key.into(),
            expires_ms,
            status: 202,
            body: format!("{{\"id\":\"{key}\"}}"),
        };
        let far = now_ms() + 3_600_000;
        let with_stanza = record("t\nwith-stanza", far);
        store
            .append(entry(&store, "<message/>"), Some(with_stanza.clone()))
            .await
            .wait()
            .await
            .unwrap();
        store.remember(record("t\nlater", far)).await.unwrap();
        store.remember(record("t\nexpired", 1)).await.unwrap();
        drop(store);
        let store = reopen(dir.path()).await;
        assert_eq!(
            store.recall("t\nwith-stanza").await.unwrap(),
            Some(with_stanza)
        );
        assert!(store.recall("t\nlater").await.unwrap().is_some());
        assert_eq!(store.recall("t\nexpired").await.unwrap(), None);
        assert_eq!(store.recall("other\nlater").await.unwrap(), None);
        store.forget_expired(far + 1).await;
        store.flush().await;
        assert_eq!(store.recall("t\nlater").await.unwrap(), None);
    }

    async fn reopen(dir: &Path) -> RedbQueue {
        for _ in 0..100 {
            match RedbQueue::open(dir) {
                Ok(store) => return store,
                Err(QueueError::InUse { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(other) => panic!("{other}"),
            }
        }
        panic!("the database stayed locked after its store was dropped");
    }

    #[tokio::test]
    async fn a_second_process_on_the_same_file_is_told_it_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _store = RedbQueue::open(dir.path()).unwrap();
        let error = RedbQueue::open(dir.path()).err().unwrap();
        assert!(matches!(error, QueueError::InUse { .. }), "{error}");
        assert!(error.to_string().contains("data_dir"), "{error}");
    }

    #[tokio::test]
    async fn buried_entries_become_dead_letters_that_can_be_revived_or_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbQueue::open(dir.path()).unwrap();
        let a = entry(&store, "<message id='a'/>");
        let b = entry(&store, "<message id='b'/>");
        let c = entry(&store, "<message id='c'/>");
        for e in [&a, &b, &c] {
            store.append(e.clone(), None).await.wait().await.unwrap();
        }
        for e in [&a, &b, &c] {
            store
                .bury(e.position, format!("HTTP 503 for {}", e.raw))
                .await
                .unwrap();
        }
        assert!(store.pending().await.unwrap().is_empty());
        let dead = store.dead_letters().await.unwrap();
        assert_eq!(
            dead.iter().map(|d| d.entry.clone()).collect::<Vec<_>>(),
            vec![a.clone(), b.clone(), c.clone()]
        );
        assert_eq!(dead[1].reason, "HTTP 503 for <message id='b'/>");

        let revived = store
            .revive(Selection::Positions(vec![c.position, a.position]))
            .await
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
        assert_eq!(store.pending().await.unwrap(), revived);
        assert_eq!(store.purge(Selection::All).await.unwrap(), 1);
        assert!(store.dead_letters().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_queue_file_and_a_created_data_dir_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state").join("queue");
        let store = RedbQueue::open(&dir).unwrap();
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
            direction: Direction::ToHook,
            raw: "<message/>".into(),
            conversation: None,
        };
        let bytes = encode_entry(&e);
        assert_eq!(decode_entry(9, Direction::ToHook, &bytes), Some(e.clone()));
        for cut in 0..17 {
            assert_eq!(decode_entry(9, Direction::ToHook, &bytes[..cut]), None);
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
