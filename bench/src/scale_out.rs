//! The rows of scaling out (README, "Scaling out"): the shared queue on a throwaway PostgreSQL
//! (fsync on, as in production), and the end-to-end rows through ejabberd, which unlike
//! Prosody takes several connections for one component domain: its trivial-component ceiling,
//! the bridge as one instance, and three instances behind `domain_balancing` on one shared
//! queue.
//!
//! What is spent around the bridge in these rows is reported as notes beside the table, so
//! that a row's rate can be read against the machine's two cores: PostgreSQL's and ejabberd's
//! CPU (from /proc, for each server's whole process tree: PostgreSQL's backends are processes of
//! their own), this harness's (the clients and the hook), how busy the machine was, and how much
//! PostgreSQL wrote per stanza (write transactions and WAL bytes).

use std::time::{Duration, Instant};

use testkit::ejabberd::Ejabberd;
use testkit::postgres::Postgres;

use crate::e2e;
use crate::process::{self, Bridge, BridgeOptions, SharedQueue};
use crate::record;
use crate::report::{Measured, Row};

/// Clients and replies outstanding per client, as in the Prosody rows.
const CLIENTS: usize = 20;
const WINDOW: usize = 10;
/// Instances behind ejabberd's `domain_balancing`, and so its `component_number`.
const INSTANCES: u32 = 3;
/// How long ejabberd is given to drop the routes of connections the harness closed: a route
/// it still holds would take a slot, or a probe, from the next row's components.
const ROUTES_SETTLE: Duration = Duration::from_secs(1);

/// An instance's part of the shared queue in `postgres`.
pub fn shared_queue(postgres: &Postgres, instance: &str) -> SharedQueue {
    SharedQueue {
        postgres_url: postgres.url(),
        instance: instance.to_owned(),
    }
}

/// Empties the shared queue before a row, so that every row starts from the same state and no
/// instance of an earlier row (dead now) is left to take over from. The bridge makes the schema
/// again at its start.
pub fn empty_queue(postgres: &Postgres) {
    postgres.psql("DROP SCHEMA IF EXISTS component_http CASCADE");
}

/// What has been spent so far around the bridge: one reading before a row's load and one after
/// make the row's note.
#[derive(Debug, Clone, Copy)]
pub struct Surroundings {
    at: Instant,
    /// Ticks of all CPUs in /proc/stat: busy (neither idle nor waiting for I/O) and in all.
    machine_busy: u64,
    machine_total: u64,
    harness_cpu_seconds: f64,
    postgres_cpu_seconds: f64,
    ejabberd_cpu_seconds: f64,
}

impl Surroundings {
    pub fn read(postgres: Option<&Postgres>, ejabberd: Option<&Ejabberd>) -> Surroundings {
        let (machine_busy, machine_total) = machine_ticks();
        let tree = |pid: Option<u32>| pid.map(process::tree_cpu_seconds).unwrap_or(0.0);
        Surroundings {
            at: Instant::now(),
            machine_busy,
            machine_total,
            harness_cpu_seconds: process::ProcStats::of(std::process::id()).cpu_seconds,
            postgres_cpu_seconds: tree(postgres.and_then(Postgres::pid)),
            ejabberd_cpu_seconds: tree(ejabberd.and_then(Ejabberd::pid)),
        }
    }

    /// The note of a row measured between `self` and `after`; `written`: what PostgreSQL wrote
    /// in between, if the row had one.
    pub fn note(
        &self,
        after: &Surroundings,
        label: &str,
        measured: &Measured,
        written: Option<Written>,
    ) -> String {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let busy = (after.machine_busy - self.machine_busy) as f64
            / (after.machine_total - self.machine_total).max(1) as f64;
        let mut note = format!(
            "{label}: machine {:.0} % busy ({:.2} of {cores} cores over {:.1} s); the harness (clients, hook) {:.2} CPU-s / 10k",
            busy * 100.0,
            busy * cores as f64,
            (after.at - self.at).as_secs_f64(),
            per_10k(
                after.harness_cpu_seconds - self.harness_cpu_seconds,
                measured
            ),
        );
        if after.ejabberd_cpu_seconds > 0.0 {
            note.push_str(&format!(
                "; ejabberd {:.2}",
                per_10k(
                    after.ejabberd_cpu_seconds - self.ejabberd_cpu_seconds,
                    measured
                )
            ));
        }
        if after.postgres_cpu_seconds > 0.0 {
            note.push_str(&format!(
                "; PostgreSQL {:.2}",
                per_10k(
                    after.postgres_cpu_seconds - self.postgres_cpu_seconds,
                    measured
                )
            ));
        }
        if let Some(written) = written {
            note.push_str(&format!(
                ", {:.1} stanzas per write transaction, {:.0} bytes of WAL per stanza",
                measured.count as f64 / written.transactions.max(1) as f64,
                written.wal_bytes as f64 / measured.count.max(1) as f64
            ));
        }
        note
    }
}

/// Busy and total ticks of all CPUs so far (the first line of /proc/stat).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// What PostgreSQL has written so far, or between two readings.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Transaction ids handed out: one per transaction that wrote anything. Read from the
    /// current snapshot rather than the statistics, which an idle backend reports up to 10 s
    /// late.
    transactions: u64,
    wal_bytes: u64,
}

impl Written {
    pub fn read(postgres: &Postgres) -> Written {
        let answer = postgres.psql(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text, \
             (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
        );
        let mut values = answer
            .split('|')
            .map(|value| value.trim().parse().unwrap_or(0));
        Written {
            transactions: values.next().unwrap_or(0),
            wal_bytes: values.next().unwrap_or(0),
        }
    }

    /// What was written between `self` and `after`.
    pub fn since(self, after: Written) -> Written {
        Written {
            transactions: after.transactions.saturating_sub(self.transactions),
            wal_bytes: after.wal_bytes.saturating_sub(self.wal_bytes),
        }
    }
}

/// CPU seconds per 10,000 of a row's stanzas.
pub fn per_10k(cpu_seconds: f64, measured: &Measured) -> f64 {
    cpu_seconds / measured.count.max(1) as f64 * 10_000.0
}

/// Through ejabberd: the trivial component's ceiling and the bridge as one instance (the durable
/// queue, then the shared one when `postgres` is given) on a server without balancing; then, on
/// a server with `domain_balancing` over [`INSTANCES`] slots, the ceiling again with one trivial
/// component per slot and [`INSTANCES`] bridges on one shared queue.
pub async fn ejabberd_rows(
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    hook_url: &str,
    per_client: usize,
    postgres: Option<&Postgres>,
) -> anyhow::Result<()> {
    eprintln!("starting ejabberd for the end-to-end rows");
    let ejabberd = e2e::start_ejabberd(CLIENTS, None).await;
    let name =
        format!("ceiling: trivial component, {CLIENTS} clients × window {WINDOW} (CPU: ejabberd)");
    let ceiling = ceiling_row(&ejabberd, 1, per_client, notes).await?;
    record(rows, row(name, ceiling));

    let instance = [None];
    let measured = bridges_row(&ejabberd, &instance, hook_url, per_client, notes, None).await?;
    record(
        rows,
        row(
            format!(
                "bridge, 1 instance, ordering=conversation, queue=durable, fast hook, {CLIENTS} clients × window {WINDOW}"
            ),
            measured,
        ),
    );
    if let Some(postgres) = postgres {
        empty_queue(postgres);
        let instance = [Some(shared_queue(postgres, "bench-1"))];
        let measured = bridges_row(
            &ejabberd,
            &instance,
            hook_url,
            per_client,
            notes,
            Some(postgres),
        )
        .await?;
        record(
            rows,
            row(
                format!(
                    "bridge, 1 instance, ordering=conversation, queue=postgres, fast hook, {CLIENTS} clients × window {WINDOW}"
                ),
                measured,
            ),
        );
    }
    drop(ejabberd);

    eprintln!("starting ejabberd with domain_balancing over {INSTANCES} connections");
    let ejabberd = e2e::start_ejabberd(CLIENTS, Some(INSTANCES)).await;
    let ceiling = ceiling_row(&ejabberd, INSTANCES as usize, per_client, notes).await?;
    record(
        rows,
        row(
            format!(
                "ceiling: {INSTANCES} trivial components, domain_balancing bare_source × {INSTANCES}, {CLIENTS} clients × window {WINDOW} (CPU: ejabberd)"
            ),
            ceiling,
        ),
    );
    if let Some(postgres) = postgres {
        empty_queue(postgres);
        let instances: Vec<_> = (1..=INSTANCES)
            .map(|number| Some(shared_queue(postgres, &format!("bench-{number}"))))
            .collect();
        let measured = bridges_row(
            &ejabberd,
            &instances,
            hook_url,
            per_client,
            notes,
            Some(postgres),
        )
        .await?;
        record(
            rows,
            row(
                format!(
                    "bridge, {INSTANCES} instances, domain_balancing bare_source × {INSTANCES}, ordering=conversation, queue=postgres shared, fast hook, {CLIENTS} clients × window {WINDOW} (CPU: the {INSTANCES} bridges)"
                ),
                measured,
            ),
        );
    } else {
        notes.push(format!(
            "ejabberd: the {INSTANCES}-instance row needs the shared queue; skipped (--no-postgres)"
        ));
    }
    Ok(())
}

fn row(name: String, measured: Measured) -> Row {
    Row {
        mode: "ejabberd",
        name,
        measured,
    }
}

/// `components` trivial components connected at once (one per balancing slot), driven by the
/// clients; the CPU column is ejabberd's.
async fn ceiling_row(
    ejabberd: &Ejabberd,
    components: usize,
    per_client: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<Measured> {
    let logins = ejabberd.component_logins();
    let mut connected = Vec::new();
    for _ in 0..components {
        connected.push(e2e::trivial_component(ejabberd.component_port).await?);
    }
    wait_routed(ejabberd, logins + components).await?;
    let before = Surroundings::read(None, Some(ejabberd));
    let mut measured = e2e::drive_clients(ejabberd.c2s_port, CLIENTS, per_client, WINDOW).await?;
    let after = Surroundings::read(None, Some(ejabberd));
    measured.cpu_seconds = Some(after.ejabberd_cpu_seconds - before.ejabberd_cpu_seconds);
    notes.push(before.note(
        &after,
        &format!("ejabberd, ceiling, {components} trivial component(s)"),
        &measured,
        None,
    ));
    for component in connected {
        component.abort();
        // Cancelled is what an aborted task answers; the connection is closed either way.
        let _ = component.await;
    }
    tokio::time::sleep(ROUTES_SETTLE).await;
    Ok(measured)
}

/// One bridge per entry of `instances` (`None`: the durable queue; else its place in the shared
/// queue), all connected before the clients start; the CPU column is the bridges' together,
/// and what ejabberd and PostgreSQL spent goes to `notes`.
async fn bridges_row(
    ejabberd: &Ejabberd,
    instances: &[Option<SharedQueue>],
    hook_url: &str,
    per_client: usize,
    notes: &mut Vec<String>,
    postgres: Option<&Postgres>,
) -> anyhow::Result<Measured> {
    let logins = ejabberd.component_logins();
    let mut bridges = Vec::new();
    for shared_queue in instances {
        let queue = if shared_queue.is_some() {
            "postgres"
        } else {
            "durable"
        };
        bridges.push(Bridge::spawn(&BridgeOptions {
            queue,
            shared_queue: shared_queue.clone(),
            ..BridgeOptions::defaults(
                format!("127.0.0.1:{}", ejabberd.component_port),
                e2e::SECRET,
                hook_url.to_owned(),
            )
        })?);
    }
    wait_routed(ejabberd, logins + instances.len()).await?;
    let bridges_cpu = |bridges: &[Bridge]| -> f64 {
        bridges
            .iter()
            .map(|bridge| bridge.stats().cpu_seconds)
            .sum()
    };
    let before = bridges_cpu(&bridges);
    let around_before = Surroundings::read(postgres, Some(ejabberd));
    let written_before = postgres.map(Written::read);
    let mut measured = e2e::drive_clients(ejabberd.c2s_port, CLIENTS, per_client, WINDOW).await?;
    measured.cpu_seconds = Some(bridges_cpu(&bridges) - before);
    let around_after = Surroundings::read(postgres, Some(ejabberd));
    measured.peak_rss_kib = bridges
        .iter()
        .map(|bridge| bridge.stats().peak_rss_kib)
        .max();
    let written = postgres
        .zip(written_before)
        .map(|(postgres, before)| before.since(Written::read(postgres)));
    notes.push(around_before.note(
        &around_after,
        &format!(
            "ejabberd, {} bridge(s), queue={}",
            instances.len(),
            if postgres.is_some() {
                "postgres"
            } else {
                "durable"
            }
        ),
        &measured,
        written,
    ));
    drop(bridges);
    tokio::time::sleep(ROUTES_SETTLE).await;
    Ok(measured)
}

/// Waits until ejabberd has accepted `logins` component logins in all, then until a probe
/// from every client gets its answer: with balancing, each client's bare JID is hashed to a
/// slot, and a slot with no connection yet would drop the probe.
async fn wait_routed(ejabberd: &Ejabberd, logins: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        testkit::e2e::wait_until(Duration::from_secs(20), || ejabberd.component_logins()
            >= logins)
        .await,
        "ejabberd accepted {} of {logins} component logins within 20 s",
        ejabberd.component_logins()
    );
    // The log line comes as the handshake is accepted; the route is registered right after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    e2e::wait_routed(ejabberd.c2s_port).await?;
    let probe = e2e::drive_clients(ejabberd.c2s_port, CLIENTS, 1, 1).await?;
    anyhow::ensure!(
        probe.count == CLIENTS,
        "{} of {CLIENTS} probes through ejabberd were answered",
        probe.count
    );
    Ok(())
}
