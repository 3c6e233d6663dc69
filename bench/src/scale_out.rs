//! The rows of scaling out (README, "Scaling out"): the shared queue on a throwaway PostgreSQL
//! (fsync on, as in production), and the end-to-end rows through ejabberd, which unlike
//! Prosody takes several connections for one component domain: its trivial-component ceiling,
//! the bridge as one instance, and three instances behind `domain_balancing` on one shared
//! queue.
//!
//! What PostgreSQL and ejabberd spend is read from /proc for the server's whole process tree
//! (PostgreSQL's backends are processes of their own) and reported as notes beside the table.

use std::time::Duration;

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

/// CPU seconds PostgreSQL has used so far: the postmaster, its backends and its helpers.
pub fn postgres_cpu_seconds(postgres: &Postgres) -> f64 {
    postgres.pid().map(process::tree_cpu_seconds).unwrap_or(0.0)
}

fn ejabberd_cpu_seconds(ejabberd: &Ejabberd) -> f64 {
    ejabberd.pid().map(process::tree_cpu_seconds).unwrap_or(0.0)
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
    let ceiling = ceiling_row(&ejabberd, 1, per_client).await?;
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
    let ceiling = ceiling_row(&ejabberd, INSTANCES as usize, per_client).await?;
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
) -> anyhow::Result<Measured> {
    let logins = ejabberd.component_logins();
    let mut connected = Vec::new();
    for _ in 0..components {
        connected.push(e2e::trivial_component(ejabberd.component_port).await?);
    }
    wait_routed(ejabberd, logins + components).await?;
    let before = ejabberd_cpu_seconds(ejabberd);
    let mut measured = e2e::drive_clients(ejabberd.c2s_port, CLIENTS, per_client, WINDOW).await?;
    measured.cpu_seconds = Some(ejabberd_cpu_seconds(ejabberd) - before);
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
    let ejabberd_before = ejabberd_cpu_seconds(ejabberd);
    let postgres_before = postgres.map(postgres_cpu_seconds);
    let mut measured = e2e::drive_clients(ejabberd.c2s_port, CLIENTS, per_client, WINDOW).await?;
    measured.cpu_seconds = Some(bridges_cpu(&bridges) - before);
    measured.peak_rss_kib = bridges
        .iter()
        .map(|bridge| bridge.stats().peak_rss_kib)
        .max();
    let ejabberd_spent = ejabberd_cpu_seconds(ejabberd) - ejabberd_before;
    let mut note = format!(
        "ejabberd, {} instance(s), queue={}: ejabberd {:.2} CPU-s / 10k",
        instances.len(),
        if postgres.is_some() {
            "postgres"
        } else {
            "durable"
        },
        per_10k(ejabberd_spent, &measured)
    );
    if let (Some(postgres), Some(before)) = (postgres, postgres_before) {
        let spent = postgres_cpu_seconds(postgres) - before;
        note.push_str(&format!(
            ", PostgreSQL {:.2} CPU-s / 10k",
            per_10k(spent, &measured)
        ));
    }
    notes.push(note);
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
