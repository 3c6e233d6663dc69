//! The shared queue (`queue = "postgres"`): one PostgreSQL database that several instances use
//! at once (README, "Scaling out"). It holds what [`crate::queue::redb`] holds (stanzas for
//! the hook and for the server, dead letters, remembered API answers) and, besides, who
//! delivers what: every stanza belongs to one instance, and every conversation that is being
//! delivered is claimed by one instance, so that its stanzas go one at a time and in arrival
//! order whichever instance read them.
//!
//! - **Claims.** The first stanza of a conversation an instance appends claims it, in the same
//!   transaction. If a live instance holds the conversation, the stanza is handed to it (and it
//!   is told by `NOTIFY`); if the holder is dead, the claim and the dead instance's stanzas of
//!   that conversation are taken over, and go first. An instance lets a conversation go when it
//!   has nothing of it left.
//! - **Liveness.** Each instance holds a session advisory lock named after it for as long as it
//!   runs, and renews a lease row three times per `queue_lease`. It counts as dead once its lock
//!   is free (its process or connection ended) or its lease ran out (its host went silent); the
//!   others then take over its stanzas and conversations, oldest first.
//! - **Group commit.** Appends, removals, burials and releases go to one writer task that commits
//!   whatever has queued up in one transaction, as the redb writer does.
//!
//! Schema migrations are versioned ([`MIGRATIONS`]) and run at start, under a lock, by whichever
//! instance comes first. Like the other backends, this module stores bytes: it does not parse
//! stanzas, schedule or call anything.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Row, SqlSafeStr, Transaction};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::PostgresConfig;
use crate::limits;
use crate::queue::writes::{TakeOnce, Write, Writes, answer, drain_into};
use crate::queue::{
    Admitted, Backend, Committed, DeadLetter, Direction, Entry, QueueError, QueueStats, Remembered,
    Selection, now_ms,
};

/// The schema, one step per version; a released step is never edited, only followed by another.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "queue",
    "CREATE TABLE component_http.meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
     CREATE SEQUENCE component_http.positions INCREMENT BY 1048576 MINVALUE 0 START WITH 0;
     CREATE SEQUENCE component_http.arrivals;
     CREATE TABLE component_http.instances (
         name TEXT PRIMARY KEY,
         lease_until TIMESTAMPTZ NOT NULL
     );
     CREATE TABLE component_http.conversations (
         key TEXT PRIMARY KEY,
         instance TEXT NOT NULL
     );
     CREATE TABLE component_http.stanzas (
         position BIGINT PRIMARY KEY,
         id BIGINT NOT NULL,
         arrival BIGINT NOT NULL DEFAULT nextval('component_http.arrivals'),
         instance TEXT NOT NULL,
         handed BOOLEAN NOT NULL DEFAULT false,
         conversation TEXT,
         direction SMALLINT NOT NULL,
         received_ms BIGINT NOT NULL,
         raw TEXT NOT NULL
     ) -- Every row is deleted soon after it is written: vacuum by dead rows, not by share of
       -- the table, so that index scans do not walk a growing tail of deleted entries.
       WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000);
     CREATE INDEX stanzas_by_instance ON component_http.stanzas (instance, arrival);
     -- A release asks whether this instance holds anything of a conversation (once per commit):
     -- one probe, not a walk over the instance's stanzas.
     CREATE INDEX stanzas_by_conversation ON component_http.stanzas (conversation, instance)
         WHERE conversation IS NOT NULL;
     CREATE INDEX stanzas_handed ON component_http.stanzas (instance) WHERE handed;
     CREATE TABLE component_http.dead_letters (
         position BIGINT PRIMARY KEY,
         id BIGINT NOT NULL,
         conversation TEXT,
         received_ms BIGINT NOT NULL,
         raw TEXT NOT NULL,
         died_ms BIGINT NOT NULL,
         reason TEXT NOT NULL
     );
     CREATE TABLE component_http.remembered (
         key TEXT PRIMARY KEY,
         expires_ms BIGINT NOT NULL,
         status SMALLINT NOT NULL,
         body TEXT NOT NULL
     );",
)];

/// The schema everything lives in, migrations' bookkeeping included.
const SCHEMA: &str = "component_http";
/// The channel on which an instance is told that stanzas were handed to it; the payload is its
/// name.
const CHANNEL: &str = "component_http";
/// First key of the advisory locks that mark live instances (the second is the name's hash).
const LOCK_SPACE: i32 = 0x6368_7474; // "chtt"
/// Positions come from the database in blocks of this many (the sequence's increment).
const POSITION_BLOCK: u64 = 1 << 20;

/// Runs the migrations on `pool`; returns the schema version now in place.
async fn migrate(pool: &PgPool) -> Result<i64, QueueError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                (*sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(format!("{SCHEMA}.migrations"));
    migrator.create_schema(SCHEMA);
    migrator.run(pool).await?;
    Ok(schema_version())
}

/// The version the migrations bring a database to.
pub(crate) fn schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

/// The schema version a database is at (0 before the first start), for `check`.
pub(crate) async fn database_version(config: &PostgresConfig) -> Result<i64, QueueError> {
    let mut connection = PgConnection::connect_with(&connect_options(config)?).await?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM component_http.migrations WHERE success")
            .fetch_one(&mut connection)
            .await
            .or_else(|error| match &error {
                // No migrations table yet: a database no instance has started on.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(error),
            })?;
    let _ = connection.close().await;
    Ok(version.unwrap_or(0))
}

fn connect_options(config: &PostgresConfig) -> Result<PgConnectOptions, QueueError> {
    Ok(PgConnectOptions::from_str(config.url.expose())?
        .application_name(&format!("component-http {}", config.instance)))
}

#[derive(Clone)]
pub struct PostgresQueue {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    instance: String,
    /// Random per database: makes `webhook-id`s unique even if the database is made anew.
    database_id: u64,
    positions: Mutex<Positions>,
    writes: Writes,
    failed_appends: TakeOnce<mpsc::UnboundedReceiver<Vec<u64>>>,
    arrivals: TakeOnce<mpsc::UnboundedReceiver<Vec<Entry>>>,
    last_failure: Arc<Mutex<Option<String>>>,
}

/// The block of positions this instance hands out, and the next one once it is fetched.
struct Positions {
    next: u64,
    end: u64,
    spare: Option<u64>,
    fetching: bool,
}

impl PostgresQueue {
    /// Connects, brings the schema up to date, registers this instance (refused if a live
    /// process already runs under its name) and starts the writer and the lease keeper.
    pub(crate) async fn open(config: &PostgresConfig) -> Result<PostgresQueue, QueueError> {
        let options = connect_options(config)?;
        let pool = PgPoolOptions::new()
            .max_connections(limits::POSTGRES_CONNECTIONS)
            .acquire_timeout(limits::POSTGRES_CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        migrate(&pool).await?;
        // The lock lives as long as this connection: kept by the lease keeper for the process's
        // life, and freed by the server the moment the process or its connection dies.
        let mut session = PgConnection::connect_with(&options).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_SPACE)
            .bind(&config.instance)
            .fetch_one(&mut session)
            .await?;
        if !locked {
            return Err(QueueError::InstanceInUse {
                instance: config.instance.clone(),
            });
        }
        renew_lease(&mut session, &config.instance, config.lease).await?;
        sqlx::query(
            "INSERT INTO component_http.meta (key, value)
             VALUES ('database_id', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(rand::random::<i64>())
        .execute(&pool)
        .await?;
        let database_id: i64 =
            sqlx::query_scalar("SELECT value FROM component_http.meta WHERE key = 'database_id'")
                .fetch_one(&pool)
                .await?;
        let first_block = fetch_block(&pool).await?;

        let (writes, queue) = Writes::channel();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let (arrivals_tx, arrivals_rx) = mpsc::unbounded_channel();
        let last_failure = Arc::new(Mutex::new(None));
        let writer = Writer {
            pool: pool.clone(),
            instance: config.instance.clone(),
            claimed: HashSet::new(),
            unremoved: Vec::new(),
            failed_appends: failed_tx,
            last_failure: last_failure.clone(),
        };
        tokio::spawn(writer.run(queue));
        let mut keeper = LeaseKeeper {
            pool: pool.clone(),
            session,
            options,
            instance: config.instance.clone(),
            lease: config.lease,
            arrivals: arrivals_tx,
        };
        // What dead instances left becomes this one's now, and [`Backend::pending`] returns
        // it with the rest, so it is not announced as arrived.
        keeper.take_over_the_dead().await?;
        tokio::spawn(keeper.run());
        Ok(PostgresQueue {
            inner: Arc::new(Inner {
                pool,
                instance: config.instance.clone(),
                database_id: database_id as u64,
                positions: Mutex::new(Positions {
                    next: first_block,
                    end: first_block + POSITION_BLOCK,
                    spare: None,
                    fetching: false,
                }),
                writes,
                failed_appends: TakeOnce::new(failed_rx),
                arrivals: TakeOnce::new(arrivals_rx),
                last_failure,
            }),
        })
    }

    /// Starts fetching the next block of positions, unless that is under way or done.
    fn fetch_spare(&self, positions: &mut Positions) {
        if positions.fetching || positions.spare.is_some() {
            return;
        }
        positions.fetching = true;
        let queue = self.clone();
        tokio::spawn(async move {
            let block = fetch_block(&queue.inner.pool).await;
            let mut positions = queue.lock_positions();
            positions.fetching = false;
            match block {
                Ok(block) => positions.spare = Some(block),
                Err(error) => warn!("cannot reserve queue positions yet: {error}"),
            }
        });
    }

    fn lock_positions(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.inner
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn selected_positions(selection: &Selection) -> Option<Vec<i64>> {
        match selection {
            Selection::All => None,
            Selection::Positions(positions) => Some(positions.iter().map(|&p| p as i64).collect()),
        }
    }
}

async fn fetch_block(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let start: i64 = sqlx::query_scalar("SELECT nextval('component_http.positions')")
        .fetch_one(pool)
        .await?;
    Ok(start as u64)
}

async fn renew_lease(
    session: &mut PgConnection,
    instance: &str,
    lease: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO component_http.instances (name, lease_until)
         VALUES ($1, now() + make_interval(secs => $2))
         ON CONFLICT (name) DO UPDATE SET lease_until = EXCLUDED.lease_until",
    )
    .bind(instance)
    .bind(lease.as_secs_f64())
    .execute(session)
    .await?;
    Ok(())
}

#[async_trait]
impl Backend for PostgresQueue {
    fn durable(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        true
    }

    fn allocate(&self) -> u64 {
        let mut positions = self.lock_positions();
        if positions.next >= positions.end
            && let Some(block) = positions.spare.take()
        {
            positions.next = block;
            positions.end = block + POSITION_BLOCK;
        }
        if positions.end - positions.next.min(positions.end) < POSITION_BLOCK / 2 {
            self.fetch_spare(&mut positions);
        }
        // Past the block's end (a million positions handed out before the next block came) a
        // position may collide with another instance's; its commit then fails and its sender
        // is told, rather than a stanza being overwritten.
        let position = positions.next;
        positions.next += 1;
        position
    }

    fn webhook_id(&self, id: u64) -> String {
        format!("msg_{:016x}_{id}", self.inner.database_id)
    }

    async fn append(&self, entry: Entry, remember: Option<Remembered>) -> Committed {
        self.inner.writes.append(entry, remember).await
    }

    async fn release(&self, conversation: String) {
        self.inner.writes.release(conversation).await;
    }

    fn arrivals(&self) -> Option<mpsc::UnboundedReceiver<Vec<Entry>>> {
        self.inner.arrivals.take()
    }

    async fn remember(&self, remembered: Remembered) -> Result<(), String> {
        self.inner.writes.remember(remembered).await
    }

    async fn recall(&self, key: &str) -> Result<Option<Remembered>, QueueError> {
        let row: Option<(i64, i16, String)> = sqlx::query_as(
            "SELECT expires_ms, status, body FROM component_http.remembered
             WHERE key = $1 AND expires_ms > $2",
        )
        .bind(key)
        .bind(now_ms() as i64)
        .fetch_optional(&self.inner.pool)
        .await?;
        Ok(row.map(|(expires_ms, status, body)| Remembered {
            key: key.to_owned(),
            expires_ms: expires_ms as u64,
            status: status as u16,
            body,
        }))
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

    /// This instance's stanzas, oldest first; the ones handed to it count as arrived.
    async fn pending(&self) -> Result<Vec<Entry>, QueueError> {
        let rows = sqlx::query(
            "UPDATE component_http.stanzas SET handed = false WHERE instance = $1
             RETURNING position, id, arrival, direction, received_ms, raw, conversation",
        )
        .bind(&self.inner.instance)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(entries_by_arrival(rows))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let rows: Vec<(i64, i64, i64, String, Option<String>, i64, String)> = sqlx::query_as(
            "SELECT position, id, received_ms, raw, conversation, died_ms, reason
             FROM component_http.dead_letters ORDER BY position",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(position, id, received_ms, raw, conversation, died_ms, reason)| DeadLetter {
                    entry: Entry {
                        position: position as u64,
                        id: id as u64,
                        received_ms: received_ms as u64,
                        direction: Direction::ToHook,
                        raw,
                        conversation,
                    },
                    died_ms: died_ms as u64,
                    reason,
                },
            )
            .collect())
    }

    /// Revived stanzas belong to this instance and wait at the end of the queue.
    async fn revive(&self, selection: Selection) -> Result<Vec<Entry>, QueueError> {
        let mut tx = self.inner.pool.begin().await?;
        let rows: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
            "DELETE FROM component_http.dead_letters
             WHERE $1::BIGINT[] IS NULL OR position = ANY($1)
             RETURNING position, id, raw, conversation",
        )
        .bind(Self::selected_positions(&selection))
        .fetch_all(&mut *tx)
        .await?;
        let mut rows = rows;
        rows.sort_by_key(|(position, ..)| *position);
        let received_ms = now_ms();
        let mut revived = Vec::with_capacity(rows.len());
        for (_, id, raw, conversation) in rows {
            let entry = Entry {
                position: self.allocate(),
                id: id as u64,
                received_ms,
                direction: Direction::ToHook,
                raw,
                conversation,
            };
            sqlx::query(
                "INSERT INTO component_http.stanzas
                 (position, id, instance, conversation, direction, received_ms, raw)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(entry.position as i64)
            .bind(entry.id as i64)
            .bind(&self.inner.instance)
            .bind(&entry.conversation)
            .bind(direction_code(entry.direction))
            .bind(received_ms as i64)
            .bind(&entry.raw)
            .execute(&mut *tx)
            .await?;
            revived.push(entry);
        }
        tx.commit().await?;
        Ok(revived)
    }

    async fn purge(&self, selection: Selection) -> Result<usize, QueueError> {
        let done = sqlx::query(
            "DELETE FROM component_http.dead_letters
             WHERE $1::BIGINT[] IS NULL OR position = ANY($1)",
        )
        .bind(Self::selected_positions(&selection))
        .execute(&self.inner.pool)
        .await?;
        Ok(done.rows_affected() as usize)
    }

    /// Dead letters of every instance; the oldest stanza of this one.
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let (dead_letters, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM component_http.dead_letters),
                    (SELECT min(received_ms) FROM component_http.stanzas WHERE instance = $1)",
        )
        .bind(&self.inner.instance)
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(QueueStats {
            dead_letters: dead_letters as usize,
            oldest_received_ms: oldest.map(|ms| ms as u64),
        })
    }

    fn unwritable(&self) -> Option<String> {
        self.inner
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn direction_code(direction: Direction) -> i16 {
    match direction {
        Direction::ToHook => 0,
        Direction::ToServer => 1,
    }
}

/// Rows of `position, id, arrival, direction, received_ms, raw, conversation` as entries,
/// oldest arrival first.
fn entries_by_arrival(rows: Vec<sqlx::postgres::PgRow>) -> Vec<Entry> {
    let mut entries: Vec<(i64, Entry)> = rows
        .iter()
        .filter_map(|row| {
            let direction = match row.try_get::<i16, _>("direction").ok()? {
                1 => Direction::ToServer,
                _ => Direction::ToHook,
            };
            Some((
                row.try_get("arrival").ok()?,
                Entry {
                    position: row.try_get::<i64, _>("position").ok()? as u64,
                    id: row.try_get::<i64, _>("id").ok()? as u64,
                    received_ms: row.try_get::<i64, _>("received_ms").ok()? as u64,
                    direction,
                    raw: row.try_get("raw").ok()?,
                    conversation: row.try_get("conversation").ok()?,
                },
            ))
        })
        .collect();
    entries.sort_by_key(|(arrival, _)| *arrival);
    entries.into_iter().map(|(_, entry)| entry).collect()
}

/// What happened to the conversations appended to in one commit.
#[derive(Default)]
struct Claims {
    /// Conversation → the live instance that holds it, for those this instance may not deliver.
    held_elsewhere: HashMap<String, String>,
    /// Conversation → the older stanzas taken over with it from a dead instance.
    taken_over: HashMap<String, Vec<Entry>>,
}

struct Writer {
    pool: PgPool,
    instance: String,
    /// Conversations this instance holds, as far as it knows: their appends need no claim.
    claimed: HashSet<String>,
    /// Removals whose commit failed, tried again with the next one.
    unremoved: Vec<u64>,
    failed_appends: mpsc::UnboundedSender<Vec<u64>>,
    last_failure: Arc<Mutex<Option<String>>>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Write>) {
        let mut batch = Vec::new();
        while let Some(first) = queue.recv().await {
            batch.push(first);
            drain_into(&mut batch, &mut queue);
            let (result, mut claims) = match self.commit(&batch).await {
                Ok(claims) => (Ok(()), claims),
                Err(reason) => {
                    error!("the PostgreSQL queue could not be written: {reason}");
                    (Err(reason), Claims::default())
                }
            };
            *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                result.as_ref().err().cloned();
            if result.is_ok() {
                self.unremoved.clear();
            }
            let unwritten = answer(&mut batch, &result, |entry| admitted(&mut claims, entry));
            self.unremoved.extend(unwritten.removals);
            if !unwritten.appends.is_empty() {
                let _ = self.failed_appends.send(unwritten.appends);
            }
        }
    }

    /// Commits `batch` in one transaction: claims first, then appends (each to the instance
    /// that is to deliver it), removals, burials, answers, and last the releases, which let a
    /// conversation go only if nothing of this instance's is left in it.
    async fn commit(&mut self, batch: &[Write]) -> Result<Claims, String> {
        let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
        let claims = self
            .claim(&mut tx, batch)
            .await
            .map_err(|e| e.to_string())?;
        self.write(&mut tx, batch, &claims)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        for write in batch {
            match write {
                Write::Append(entry, ..) => {
                    if let Some(conversation) = &entry.conversation
                        && !claims.held_elsewhere.contains_key(conversation)
                    {
                        self.claimed.insert(conversation.clone());
                    }
                }
                Write::Release(conversation) => {
                    self.claimed.remove(conversation);
                }
                _ => {}
            }
        }
        Ok(claims)
    }

    /// Claims the conversations of this batch's appends that this instance does not hold yet.
    async fn claim(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        batch: &[Write],
    ) -> Result<Claims, sqlx::Error> {
        let mut wanted: Vec<&str> = batch
            .iter()
            .filter_map(|write| match write {
                Write::Append(entry, ..) => entry.conversation.as_deref(),
                _ => None,
            })
            .filter(|conversation| !self.claimed.contains(*conversation))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut claims = Claims::default();
        if wanted.is_empty() {
            return Ok(claims);
        }
        sqlx::query(
            "INSERT INTO component_http.conversations (key, instance)
             SELECT unnest($1::TEXT[]), $2 ON CONFLICT (key) DO NOTHING",
        )
        .bind(&wanted)
        .bind(&self.instance)
        .execute(&mut **tx)
        .await?;
        // Locked in key order (as the insert did), so that two instances' claims never
        // deadlock; a claim another instance changed meanwhile is read as it is now.
        let holders: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, instance FROM component_http.conversations
             WHERE key = ANY($1) ORDER BY key FOR UPDATE",
        )
        .bind(&wanted)
        .fetch_all(&mut **tx)
        .await?;
        let mut others: Vec<&str> = holders
            .iter()
            .map(|(_, holder)| holder.as_str())
            .filter(|holder| *holder != self.instance)
            .collect();
        others.sort_unstable();
        others.dedup();
        // A holder is alive while its lease runs and its session lock is held; trying that
        // lock for this transaction succeeds only if its session is gone.
        let alive: Vec<String> = if others.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "SELECT name FROM component_http.instances
                 WHERE name = ANY($1) AND lease_until >= now()
                   AND NOT pg_try_advisory_xact_lock($2, hashtext(name))",
            )
            .bind(&others)
            .bind(LOCK_SPACE)
            .fetch_all(&mut **tx)
            .await?
        };
        let holders: Vec<(String, String, bool)> = holders
            .into_iter()
            .map(|(key, holder)| {
                let free = holder == self.instance || !alive.contains(&holder);
                (key, holder, free)
            })
            .collect();
        let (mut from_dead, mut dead_holders) = (Vec::new(), Vec::new());
        for (key, holder, free) in holders {
            if !free {
                claims.held_elsewhere.insert(key, holder);
            } else if holder != self.instance {
                from_dead.push(key);
                dead_holders.push(holder);
            }
        }
        if !from_dead.is_empty() {
            sqlx::query(
                "UPDATE component_http.conversations SET instance = $2 WHERE key = ANY($1)",
            )
            .bind(&from_dead)
            .bind(&self.instance)
            .execute(&mut **tx)
            .await?;
            let rows = sqlx::query(
                "UPDATE component_http.stanzas SET instance = $2, handed = false
                 WHERE conversation = ANY($1) AND instance = ANY($3)
                 RETURNING position, id, arrival, direction, received_ms, raw, conversation",
            )
            .bind(&from_dead)
            .bind(&self.instance)
            .bind(&dead_holders)
            .fetch_all(&mut **tx)
            .await?;
            for entry in entries_by_arrival(rows) {
                if let Some(conversation) = entry.conversation.clone() {
                    claims
                        .taken_over
                        .entry(conversation)
                        .or_default()
                        .push(entry);
                }
            }
        }
        Ok(claims)
    }

    async fn write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        batch: &[Write],
        claims: &Claims,
    ) -> Result<(), sqlx::Error> {
        let mut appended = Appended::default();
        let mut removed: Vec<i64> = self.unremoved.iter().map(|&p| p as i64).collect();
        let (mut buried, mut reasons) = (Vec::new(), Vec::new());
        let mut remembered = Vec::new();
        let mut released = Vec::new();
        let mut forget_before = None;
        for write in batch {
            match write {
                Write::Append(entry, remember, _) => {
                    let holder = entry
                        .conversation
                        .as_ref()
                        .and_then(|c| claims.held_elsewhere.get(c));
                    appended.push(entry, holder.unwrap_or(&self.instance), holder.is_some());
                    remembered.extend(remember.iter());
                }
                Write::Remember(record, _) => remembered.push(record),
                Write::ForgetExpired(now) => forget_before = Some(*now as i64),
                Write::Remove(position) => removed.push(*position as i64),
                Write::Bury(position, reason, _) => {
                    buried.push(*position as i64);
                    reasons.push(reason.as_str());
                }
                Write::Release(conversation) => released.push(conversation.as_str()),
                Write::Flush(_) => {}
            }
        }
        if !appended.positions.is_empty() {
            sqlx::query(
                "INSERT INTO component_http.stanzas
                 (position, id, instance, handed, conversation, direction, received_ms, raw)
                 SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::BOOLEAN[],
                                      $5::TEXT[], $6::SMALLINT[], $7::BIGINT[], $8::TEXT[])",
            )
            .bind(&appended.positions)
            .bind(&appended.ids)
            .bind(&appended.instances)
            .bind(&appended.handed)
            .bind(&appended.conversations)
            .bind(&appended.directions)
            .bind(&appended.received)
            .bind(&appended.raws)
            .execute(&mut **tx)
            .await?;
        }
        let mut told: Vec<&str> = claims.held_elsewhere.values().map(String::as_str).collect();
        told.sort_unstable();
        told.dedup();
        for holder in told {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(holder)
                .execute(&mut **tx)
                .await?;
        }
        if !remembered.is_empty() {
            let keys: Vec<&str> = remembered.iter().map(|r| r.key.as_str()).collect();
            let expires: Vec<i64> = remembered.iter().map(|r| r.expires_ms as i64).collect();
            let statuses: Vec<i16> = remembered.iter().map(|r| r.status as i16).collect();
            let bodies: Vec<&str> = remembered.iter().map(|r| r.body.as_str()).collect();
            sqlx::query(
                "INSERT INTO component_http.remembered (key, expires_ms, status, body)
                 SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::SMALLINT[], $4::TEXT[])
                 ON CONFLICT (key) DO UPDATE SET expires_ms = EXCLUDED.expires_ms,
                     status = EXCLUDED.status, body = EXCLUDED.body",
            )
            .bind(&keys)
            .bind(&expires)
            .bind(&statuses)
            .bind(&bodies)
            .execute(&mut **tx)
            .await?;
        }
        if !buried.is_empty() {
            sqlx::query(
                "WITH doomed AS (
                     DELETE FROM component_http.stanzas s
                     USING unnest($1::BIGINT[], $2::TEXT[]) AS d(position, reason)
                     WHERE s.position = d.position
                     RETURNING s.position, s.id, s.conversation, s.received_ms, s.raw, d.reason)
                 INSERT INTO component_http.dead_letters
                 (position, id, conversation, received_ms, raw, died_ms, reason)
                 SELECT position, id, conversation, received_ms, raw, $3, reason FROM doomed",
            )
            .bind(&buried)
            .bind(&reasons)
            .bind(now_ms() as i64)
            .execute(&mut **tx)
            .await?;
        }
        if !removed.is_empty() {
            sqlx::query("DELETE FROM component_http.stanzas WHERE position = ANY($1)")
                .bind(&removed)
                .execute(&mut **tx)
                .await?;
        }
        if let Some(now) = forget_before {
            sqlx::query("DELETE FROM component_http.remembered WHERE expires_ms <= $1")
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        if !released.is_empty() {
            sqlx::query(
                "DELETE FROM component_http.conversations c
                 WHERE c.key = ANY($1) AND c.instance = $2
                   AND NOT EXISTS (SELECT 1 FROM component_http.stanzas s
                                   WHERE s.conversation = c.key AND s.instance = $2)",
            )
            .bind(&released)
            .bind(&self.instance)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// Who delivers an appended entry, as its commit decided.
fn admitted(claims: &mut Claims, entry: &Entry) -> Admitted {
    let Some(conversation) = &entry.conversation else {
        return Admitted::Here;
    };
    if claims.held_elsewhere.contains_key(conversation) {
        return Admitted::HandedOver;
    }
    // The first append of the conversation goes after what was taken over with it.
    match claims.taken_over.remove(conversation) {
        Some(older) => Admitted::After(older),
        None => Admitted::Here,
    }
}

/// One commit's appends, column by column (for one `INSERT … SELECT FROM unnest`).
#[derive(Default)]
struct Appended<'a> {
    positions: Vec<i64>,
    ids: Vec<i64>,
    instances: Vec<&'a str>,
    handed: Vec<bool>,
    conversations: Vec<Option<&'a str>>,
    directions: Vec<i16>,
    received: Vec<i64>,
    raws: Vec<&'a str>,
}

impl<'a> Appended<'a> {
    fn push(&mut self, entry: &'a Entry, instance: &'a str, handed: bool) {
        self.positions.push(entry.position as i64);
        self.ids.push(entry.id as i64);
        self.instances.push(instance);
        self.handed.push(handed);
        self.conversations.push(entry.conversation.as_deref());
        self.directions.push(direction_code(entry.direction));
        self.received.push(entry.received_ms as i64);
        self.raws.push(&entry.raw);
    }
}

/// Keeps this instance alive in the database (its lease, on the connection that holds its
/// lock), takes over the stanzas of instances that died, and fetches what others hand to it.
struct LeaseKeeper {
    pool: PgPool,
    session: PgConnection,
    options: PgConnectOptions,
    instance: String,
    lease: Duration,
    arrivals: mpsc::UnboundedSender<Vec<Entry>>,
}

impl LeaseKeeper {
    async fn run(mut self) {
        let mut listener = self.listen().await;
        let period = self.lease / 3;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let told = async {
                match listener.as_mut() {
                    Some(listener) => Some(listener.recv().await.map(|n| n.payload().to_owned())),
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                _ = ticks.tick() => None,
                told = told => told,
                _ = self.arrivals.closed() => return,
            };
            match event {
                None => {
                    self.keep_alive().await;
                    match self.take_over_the_dead().await {
                        Ok(entries) if !entries.is_empty() => {
                            let _ = self.arrivals.send(entries);
                        }
                        Ok(_) => {}
                        Err(error) => warn!(
                            "cannot look for stopped instances in the PostgreSQL queue: {error}"
                        ),
                    }
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                    self.fetch_handed().await;
                }
                Some(Ok(name)) if name == self.instance => self.fetch_handed().await,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    warn!(
                        "lost the PostgreSQL notifications ({error}); polling until they are back"
                    );
                    listener = None;
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let result = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        result
            .inspect_err(|error| warn!("cannot listen for PostgreSQL notifications: {error}"))
            .ok()
    }

    /// Renews the lease; if the session (and with it the lock) was lost, opens a new one and
    /// takes the lock again.
    async fn keep_alive(&mut self) {
        if renew_lease(&mut self.session, &self.instance, self.lease)
            .await
            .is_ok()
        {
            return;
        }
        let reconnected = async {
            let mut session = PgConnection::connect_with(&self.options).await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_SPACE)
                .bind(&self.instance)
                .fetch_one(&mut session)
                .await?;
            renew_lease(&mut session, &self.instance, self.lease).await?;
            Ok::<_, sqlx::Error>((session, locked))
        }
        .await;
        match reconnected {
            Ok((session, locked)) => {
                if !locked {
                    error!(
                        instance = self.instance,
                        "another process holds this instance's name in the PostgreSQL queue; give each instance its own `instance`"
                    );
                }
                self.session = session;
                info!("the PostgreSQL queue's lease is renewed again");
            }
            Err(error) => warn!(
                "cannot renew this instance's lease in the PostgreSQL queue: {error}; after queue_lease the others take its stanzas over"
            ),
        }
    }

    /// Takes over, in one transaction, the stanzas and conversations of every instance whose
    /// lock is free or whose lease ran out; returns the stanzas, oldest first.
    async fn take_over_the_dead(&mut self) -> Result<Vec<Entry>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let dead: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM component_http.instances
             WHERE name <> $1
               AND (lease_until < now() OR pg_try_advisory_xact_lock($2, hashtext(name)))
             FOR UPDATE SKIP LOCKED",
        )
        .bind(&self.instance)
        .bind(LOCK_SPACE)
        .fetch_all(&mut *tx)
        .await?;
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "UPDATE component_http.conversations SET instance = $2 WHERE instance = ANY($1)",
        )
        .bind(&dead)
        .bind(&self.instance)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "UPDATE component_http.stanzas SET instance = $2, handed = false
             WHERE instance = ANY($1)
             RETURNING position, id, arrival, direction, received_ms, raw, conversation",
        )
        .bind(&dead)
        .bind(&self.instance)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM component_http.instances WHERE name = ANY($1)")
            .bind(&dead)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let entries = entries_by_arrival(rows);
        warn!(
            instances = ?dead,
            stanzas = entries.len(),
            "instances stopped: their stanzas and conversations are this one's now"
        );
        Ok(entries)
    }

    /// Stanzas other instances handed to this one.
    async fn fetch_handed(&self) {
        let rows = sqlx::query(
            "UPDATE component_http.stanzas SET handed = false
             WHERE instance = $1 AND handed
             RETURNING position, id, arrival, direction, received_ms, raw, conversation",
        )
        .bind(&self.instance)
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) if !rows.is_empty() => {
                let _ = self.arrivals.send(entries_by_arrival(rows));
            }
            Ok(_) => {}
            Err(error) => warn!("cannot fetch the stanzas handed to this instance: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use testkit::postgres::{Postgres, PostgresOptions};

    use super::*;
    use crate::config::Secret;

    fn config(postgres: &Postgres, instance: &str) -> PostgresConfig {
        PostgresConfig {
            url: Secret::for_tests(&postgres.url()),
            instance: instance.to_owned(),
            lease: Duration::from_secs(3),
        }
    }

    fn entry(queue: &PostgresQueue, raw: &str, conversation: Option<&str>) -> Entry {
        let position = queue.allocate();
        Entry {
            position,
            id: position,
            received_ms: 1_700_000_000_000,
            direction: Direction::ToHook,
            raw: raw.to_owned(),
            conversation: conversation.map(str::to_owned),
        }
    }

    async fn append(queue: &PostgresQueue, entry: &Entry) -> Admitted {
        queue
            .append(entry.clone(), None)
            .await
            .wait()
            .await
            .expect("committed")
    }

    /// Waits until every connection of `instance` has ended, as when its process dies.
    async fn wait_gone(postgres: &Postgres, instance: &str) {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'component-http {instance}'"
        );
        for _ in 0..200 {
            if postgres.psql(&sql) == "0" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("instance {instance} still connected");
    }

    fn raws(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.raw.as_str()).collect()
    }

    #[tokio::test]
    async fn stanzas_survive_a_restart_and_removed_ones_do_not() {
        if !Postgres::available() {
            return;
        }
        let postgres = Postgres::start(PostgresOptions::default()).await;
        let queue = PostgresQueue::open(&config(&postgres, "a")).await.unwrap();
        let entries: Vec<Entry> = ["<m1/>", "<m2/>", "<m3/>"]
            .iter()
            .map(|raw| entry(&queue, raw, Some("u@h bot")))
            .collect();
        for e in &entries {
            assert_eq!(append(&queue, e).await, Admitted::Here);
        }
        let outbound = Entry {
            direction: Direction::ToServer,
            ..entry(&queue, "<out/>", None)
        };
        append(&queue, &outbound).await;
        queue.remove(entries[1].position).await;
        queue.flush().await;
        let id = queue.webhook_id(entries[0].id);
        drop(queue);
        wait_gone(&postgres, "a").await;

        let queue = PostgresQueue::open(&config(&postgres, "a")).await.unwrap();
        let pending = queue.pending().await.unwrap();
        assert_eq!(raws(&pending), ["<m1/>", "<m3/>", "<out/>"]);
        assert_eq!(pending[2].direction, Direction::ToServer);
        assert_eq!(queue.webhook_id(pending[0].id), id, "webhook-id survives");
        assert!(
            pending.iter().all(|e| e.position < queue.allocate()),
            "positions are never reused"
        );
    }

    #[tokio::test]
    async fn a_second_process_under_the_same_instance_name_is_refused() {
        if !Postgres::available() {
            return;
        }
        let postgres = Postgres::start(PostgresOptions::default()).await;
        let _first = PostgresQueue::open(&config(&postgres, "a")).await.unwrap();
        let error = PostgresQueue::open(&config(&postgres, "a"))
            .await
            .err()
            .expect("refused");
        assert!(matches!(error, QueueError::InstanceInUse { .. }), "{error}");
        PostgresQueue::open(&config(&postgres, "b"))
            .await
            .expect("another name is welcome");
    }

    #[tokio::test]
    async fn dead_letters_are_shared_and_can_be_revived_or_purged_and_answers_are_remembered() {
        if !Postgres::available() {
            return;
        }
        let postgres = Postgres::start(PostgresOptions::default()).await;
        let a = PostgresQueue::open(&config(&postgres, "a")).await.unwrap();
        let b = PostgresQueue::open(&config(&postgres, "b")).await.unwrap();
        let first = entry(&a, "<d1/>", None);
        let second = entry(&a, "<d2/>", None);
        append(&a, &first).await;
        append(&a, &second).await;
        a.bury(first.position, "HTTP 500".into()).await.unwrap();
        a.bury(second.position, "HTTP 503".into()).await.unwrap();
        let letters = b.dead_letters().await.unwrap();
        assert_eq!(
            letters
                .iter()
                .map(|l| (l.entry.raw.as_str(), l.reason.as_str()))
                .collect::<Vec<_>>(),
            [("<d1/>", "HTTP 500"), ("<d2/>", "HTTP 503")]
        );
        assert_eq!(b.stats().await.unwrap().dead_letters, 2);
        let revived = b
            .revive(Selection::Positions(vec![first.position]))
            .await
            .unwrap();
        assert_eq!(raws(&revived), ["<d1/>"]);
        assert_eq!(revived[0].id, first.id, "a replay keeps its webhook-id");
        assert_eq!(raws(&b.pending().await.unwrap()), ["<d1/>"]);
        assert_eq!(b.purge(Selection::All).await.unwrap(), 1);
        assert!(a.dead_letters().await.unwrap().is_empty());

        let answer = Remembered {
            key: "token:key-1".into(),
            expires_ms: now_ms() + 60_000,
            status: 202,
            body: "{\"id\":\"x\"}".into(),
        };
        a.remember(answer.clone()).await.unwrap();
        assert_eq!(b.recall("token:key-1").await.unwrap(), Some(answer));
        b.forget_expired(now_ms() + 120_000).await;
        b.flush().await;
        assert_eq!(a.recall("token:key-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_conversation_held_by_a_live_instance_is_handed_to_it_in_order() {
        if !Postgres::available() {
            return;
        }
        let postgres = Postgres::start(PostgresOptions::default()).await;
        let a = PostgresQueue::open(&config(&postgres, "a")).await.unwrap();
        let mut a_arrivals = a.arrivals().unwrap();
        let b = PostgresQueue::open(&config(&postgres, "b")).await.unwrap();
        assert_eq!(
            append(&a, &entry(&a, "<a1/>", Some("u@h bot"))).await,
            Admitted::Here
        );
        for raw in ["<b1/>", "<b2/>"] {
            assert_eq!(
                append(&b, &entry(&b, raw, Some("u@h bot"))).await,
                Admitted::HandedOver
            );
        }
        assert_eq!(
            append(&b, &entry(&b, "<other/>", Some("v@h bot"))).await,
            Admitted::Here,
            "another conversation is b's own"
        );
        let mut handed = Vec::new();
        while handed.len() < 2 {
            let arrived = tokio::time::timeout(Duration::from_secs(10), a_arrivals.recv())
                .await
                .expect("a is told")
                .unwrap();
            handed.extend(arrived);
        }
        assert_eq!(raws(&handed), ["<b1/>", "<b2/>"]);
        assert_eq!(raws(&b.pending().await.unwrap()), ["<other/>"]);

        // Once a has nothing of the conversation left and lets it go, b may take it.
        for e in a.pending().await.unwrap() {
            a.remove(e.position).await;
        }
        a.release("u@h bot".into()).await;
        a.flush().await;
        assert_eq!(
            append(&b, &entry(&b, "<b3/>", Some("u@h bot"))).await,
            Admitted::Here
        );
    }

    #[tokio::test]
    async fn a_conversation_of_a_dead_instance_is_taken_over_with_its_older_stanzas_first() {
        if !Postgres::available() {
            return;
        }
        let postgres = Postgres::start(PostgresOptions::default()).await;
        let a = PostgresQueue::open(&config(&postgres, "a")).await.unwrap();
        for raw in ["<c1/>", "<c2/>"] {
            append(&a, &entry(&a, raw, Some("u@h bot"))).await;
        }
        append(&a, &entry(&a, "<d1/>", Some("w@h bot"))).await;
        // A lease this long means b looks for dead instances only as it starts: what it takes
        // over below comes with the claim alone.
        let b = PostgresQueue::open(&PostgresConfig {
            lease: Duration::from_secs(3600),
            ..config(&postgres, "b")
        })
        .await
        .unwrap();
        drop(a);
        wait_gone(&postgres, "a").await;

        let admitted = append(&b, &entry(&b, "<c3/>", Some("u@h bot"))).await;
        let Admitted::After(older) = admitted else {
            panic!("not taken over: {admitted:?}");
        };
        assert_eq!(raws(&older), ["<c1/>", "<c2/>"]);
        assert_eq!(
            raws(&b.pending().await.unwrap()),
            ["<c1/>", "<c2/>", "<c3/>"],
            "only that conversation's stanzas"
        );
    }

    #[tokio::test]
    async fn a_dead_instances_stanzas_reach_a_survivor_oldest_first() {
        if !Postgres::available() {
            return;
        }
        let postgres = Postgres::start(PostgresOptions::default()).await;
        let a = PostgresQueue::open(&config(&postgres, "a")).await.unwrap();
        for (raw, conversation) in [
            ("<c1/>", "u@h bot"),
            ("<d1/>", "w@h bot"),
            ("<c2/>", "u@h bot"),
        ] {
            append(&a, &entry(&a, raw, Some(conversation))).await;
        }
        let b = PostgresQueue::open(&config(&postgres, "b")).await.unwrap();
        let mut b_arrivals = b.arrivals().unwrap();
        drop(a);
        let arrived = tokio::time::timeout(Duration::from_secs(10), b_arrivals.recv())
            .await
            .expect("taken over within a third of the lease")
            .unwrap();
        assert_eq!(raws(&arrived), ["<c1/>", "<d1/>", "<c2/>"]);
        assert_eq!(
            append(&b, &entry(&b, "<c3/>", Some("u@h bot"))).await,
            Admitted::Here,
            "the conversation came with them"
        );
    }
}
