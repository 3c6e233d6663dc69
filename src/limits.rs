//! Every bound and timeout of the process as a named constant.
//!
//! Configurable values take their defaults from here; the rest are fixed bounds that keep memory
//! and waiting finite. Nothing else in the crate writes a bare number for a size or a duration.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Largest stanza read from the server or accepted from a hook (README, "The XMPP link": 256 KiB).
pub(crate) const DEFAULT_MAX_STANZA_BYTES: usize = 256 * 1024;
/// Deepest element nesting inside one stanza (README, "The XMPP link").
pub(crate) const DEFAULT_MAX_DEPTH: usize = 64;
/// The lexer buffers one XML token (name, attribute value, text chunk) of up to the stanza
/// limit plus this slack, so that an overlong token meets the stanza limit (policy-violation)
/// rather than the lexer's own (which would read as restricted XML).
pub(crate) const XML_TOKEN_SLACK_BYTES: usize = 1024;
/// Bytes read from the socket per read call.
pub(crate) const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Queued stanzas are written together up to about this many bytes per write.
pub(crate) const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Idle interval after which whitespace is sent and the server is pinged.
pub(crate) const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long to wait for the TCP (and TLS) connection to the XMPP server.
pub(crate) const XMPP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the stream header exchange and the handshake may take together.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A single write to the server that takes longer than this means a dead link.
pub(crate) const XMPP_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconnect backoff: first delay, cap, and how long a link must live to reset it (README, "The
/// XMPP link"). The cap is low on purpose: while the component is offline the server bounces every
/// message to it, an attempt costs one TCP handshake to a nearby server, and the bridge must be
/// back within seconds of a server restart.
pub(crate) const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(4);
pub(crate) const RECONNECT_STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often a standby instance (one that met `conflict` with a shared queue) tries to take
/// the domain over: the server bounces the domain's stanzas between the serving instance's end
/// and the standby's next attempt.
pub(crate) const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// Retry interval after a configuration error (wrong secret, unknown domain, conflict):
/// retrying fast cannot help, but the operator's fix must be picked up without a restart.
pub(crate) const RECONNECT_AFTER_CONFIGURATION_ERROR: Duration = Duration::from_secs(30);

/// Webhook calls in flight across the process (README, "Delivery").
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// How long a forwarded iq get/set may wait for its answer (README, "How the response becomes the
/// reply", rule 4).
pub(crate) const DEFAULT_IQ_TIMEOUT: Duration = Duration::from_secs(30);

/// Webhook HTTP client bounds (README, "Delivery").
pub(crate) const DEFAULT_HOOK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(15);
pub(crate) const DEFAULT_HOOK_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Idle keep-alive connections kept per hook host.
pub(crate) const HOOK_POOL_IDLE_PER_HOST: usize = 256;
/// A `text/plain` hook body up to this size becomes the error's `<text>` (README, "How the response
/// becomes the reply", rule 5).
pub(crate) const ERROR_TEXT_MAX_BYTES: usize = 256;

/// Stanzas waiting for the single socket writer.
pub(crate) const OUTBOUND_QUEUE: usize = 1024;
/// Stanzas read from the socket and waiting for the router. Small: what is read but not yet in
/// the queue is what a crash loses.
pub(crate) const INBOUND_QUEUE: usize = 64;

/// Stanzas and bytes (of their XML) the queue holds by default, waiting or in flight; past
/// either, new stanzas are refused with `wait/resource-constraint` (README, "Delivery"). The queue
/// is held in memory too, so these also bound memory.
pub(crate) const DEFAULT_QUEUE_MAX_STANZAS: usize = 10_000;
pub(crate) const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Retries: first backoff ceiling, default cap and default give-up time (README, "Delivery").
pub(crate) const RETRY_INITIAL: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_RETRY_MAX_INTERVAL: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// Writes waiting for the queue's writer thread; when full, reading from the server waits for
/// the disk.
pub(crate) const QUEUE_WRITE_BACKLOG: usize = 4096;
/// Most writes committed in one transaction (one fsync).
pub(crate) const QUEUE_GROUP_COMMIT_MAX: usize = 4096;
/// Under load (more than one write waiting) but with fewer than this many, the queue's writer
/// waits `QUEUE_GROUP_COMMIT_LINGER` for more before committing: fewer, larger commits cost
/// less CPU per stanza. A lone write is committed at once.
pub(crate) const QUEUE_GROUP_COMMIT_LINGER_BELOW: usize = 64;
pub(crate) const QUEUE_GROUP_COMMIT_LINGER: Duration = Duration::from_millis(1);
/// After a failed commit the queue file is opened again before the next one, at most this
/// often: while the disk stays full, a batch of stanzas is refused at most this long after
/// it arrived.
pub(crate) const QUEUE_REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// A shared PostgreSQL queue (`queue = "postgres"`): how long an instance that stopped renewing
/// its lease keeps its conversations before another takes them over (`queue_lease`). The lease
/// is renewed three times per period; a process that dies outright is noticed at once instead,
/// by its database session ending.
pub(crate) const DEFAULT_QUEUE_LEASE: Duration = Duration::from_secs(15);
/// Connections to the shared queue's database: the writer, the reads, the lease, LISTEN.
pub(crate) const POSTGRES_CONNECTIONS: u32 = 6;
/// How long a connection to the shared queue's database may take to open.
pub(crate) const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The queue database's page cache.
pub(crate) const QUEUE_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// A dead-letters command over the control socket: its largest request, and how long either
/// side waits for the other.
pub(crate) const CONTROL_REQUEST_BYTES: u64 = 64 * 1024;
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stop (SIGTERM, SIGINT, SIGHUP) waits for in-flight deliveries (README, "Stopping").
pub(crate) const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// When the drain's time is up, calls still in flight are abandoned; how long their stanzas
/// then get to be answered (or left stored).
pub(crate) const SHUTDOWN_ABANDON: Duration = Duration::from_secs(1);
/// After the drain, how long a stop may take to commit the queue, hand over what is left, and
/// write the last replies and the stream's end: a server that stops reading cannot hold a stop
/// up for longer.
pub(crate) const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);
/// How long the reader may wait, at a stop, to hand its last stanza to the router.
pub(crate) const SHUTDOWN_HANDOVER: Duration = Duration::from_secs(1);

/// What the configuration accepts (README, "Configuration reference"). Each range keeps the
/// value away from what would overflow a timer or a counter, or make a bound meaningless.
pub(crate) const KEEPALIVE_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
pub(crate) const IQ_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
pub(crate) const RETRY_FOR_RANGE: RangeInclusive<Duration> =
    Duration::ZERO..=Duration::from_secs(366 * 24 * 3600);
pub(crate) const RETRY_MAX_INTERVAL_RANGE: RangeInclusive<Duration> =
    RETRY_INITIAL..=Duration::from_secs(24 * 3600);
pub(crate) const HOOK_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);
pub(crate) const MAX_IN_FLIGHT_RANGE: RangeInclusive<usize> = 1..=65_536;
pub(crate) const MAX_STANZA_BYTES_RANGE: RangeInclusive<usize> = 1024..=(64 << 20);
/// Element trees are dropped and written recursively; 256 levels stay far from any stack limit.
pub(crate) const MAX_DEPTH_RANGE: RangeInclusive<usize> = 2..=256;
pub(crate) const QUEUE_LEASE_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(3)..=Duration::from_secs(3600);
pub(crate) const QUEUE_MAX_STANZAS_RANGE: RangeInclusive<usize> = 1..=10_000_000;
pub(crate) const QUEUE_MAX_BYTES_RANGE: RangeInclusive<usize> = 1024..=(64 << 30);
pub(crate) const HOOK_MAX_RESPONSE_BYTES_RANGE: RangeInclusive<usize> = 1..=(64 << 20);
/// Extra `[webhook] headers`; far more than any hook needs, far below what the HTTP client
/// can hold.
pub(crate) const MAX_HOOK_HEADERS: usize = 100;

/// The HTTP API (README, "The HTTP API").
/// Shortest token accepted: a guessable token would open the API to anyone who can reach it.
pub(crate) const MIN_API_TOKEN_BYTES: usize = 16;
/// How long an iq get/set sent through the API waits for its answer by default, and at most.
pub(crate) const API_IQ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
pub(crate) const API_IQ_TIMEOUT_MAX: Duration = Duration::from_secs(120);
/// How long an API request waits for room in the writer's queue before `503`.
pub(crate) const API_OUTBOX_WAIT: Duration = Duration::from_secs(5);
/// How long a request may take to send its headers and body.
pub(crate) const API_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The `Retry-After` of a `503` for a full queue or a full writer.
pub(crate) const API_RETRY_AFTER: Duration = Duration::from_secs(5);
/// iq get/set sent through the API and waiting for their answer at once.
pub(crate) const API_IQ_WAITING_MAX: usize = 1024;
/// How long an answer is remembered under its `Idempotency-Key`.
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest `Idempotency-Key` accepted.
pub(crate) const IDEMPOTENCY_KEY_MAX_BYTES: usize = 255;
/// How often expired answers are forgotten.
pub(crate) const IDEMPOTENCY_PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Answers a memory queue remembers at most.
pub(crate) const MEMORY_REMEMBERED_MAX: usize = 100_000;
/// How long after a room let the component out it joins again (README, "Rooms").
pub(crate) const ROOM_REJOIN_DELAY: Duration = Duration::from_secs(5);
