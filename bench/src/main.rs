//! The component-http benchmark: runs the bridge (a release build beside this binary) under
//! load and prints a table. See BENCHMARKS.md for what each row means.
//!
//! Isolated mode: this harness is the XMPP server and the webhook. End-to-end mode: real XMPP
//! clients send through a real Prosody, and through a real ejabberd with one bridge and with
//! several sharing a queue on PostgreSQL (`scale_out.rs`). Each mode has a ceiling row for
//! comparison. With `--soak MINUTES`, only the soak runs instead (steady load, hook failures
//! and server restarts, an exact account of every message; see `soak.rs`) and prints its own
//! report.

mod api;
mod e2e;
mod hook;
mod isolated;
mod process;
mod report;
mod scale_out;
mod soak;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

use testkit::postgres::{Postgres, PostgresOptions};

use hook::HookBehaviour;
use isolated::Load;
use process::{Bridge, BridgeOptions};
use report::{Measured, Row};

#[derive(Debug, Parser)]
#[command(about = "Benchmark component-http and print a table")]
struct Args {
    /// A quick run with small counts, to check that the harness works (numbers not meaningful).
    #[arg(long)]
    smoke: bool,
    /// Messages per isolated fast-hook row.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Skip the end-to-end rows through Prosody.
    #[arg(long)]
    no_prosody: bool,
    /// Skip the end-to-end rows through ejabberd.
    #[arg(long)]
    no_ejabberd: bool,
    /// Skip the rows on the shared queue (`queue = "postgres"`), which start a PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
    /// Only the rows of scaling out: the isolated ordering=conversation rows with the memory,
    /// durable and shared queues, and the rows through ejabberd.
    #[arg(long)]
    scale_out_only: bool,
    /// Only the rows of the hot path's targets: the HTTP-only ceiling, the isolated
    /// ordering=conversation rows (memory and durable queues), and the Prosody rows.
    #[arg(long)]
    hot_path_only: bool,
    /// Only the isolated API rows, with this many requests each (for profiling the API).
    #[arg(long, value_name = "REQUESTS")]
    api_only: Option<usize>,
    /// Run only the soak, for this many minutes: steady load with hook failures and server
    /// restarts mixed in, then an account of every message (exit status 1 if any is lost or
    /// memory or descriptors grew).
    #[arg(long, value_name = "MINUTES")]
    soak: Option<u64>,
    /// Messages per second in the soak, across its 50 senders.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 300.0)]
    soak_rate: f64,
}

struct Scale {
    fast: usize,
    slow: usize,
    stalled: usize,
    /// Messages per client in the end-to-end rows (20 clients).
    per_client: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(minutes) = args.soak {
        let failures = soak::run(soak::SoakOptions {
            minutes,
            rate: args.soak_rate,
        })
        .await?;
        if !failures.is_empty() {
            eprintln!("soak failed: {}", failures.join("; "));
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Some(requests) = args.api_only {
        let mut rows = Vec::new();
        api_rows(&mut rows, requests).await?;
        report::print_table(&rows);
        return Ok(());
    }
    let scale = if args.smoke {
        Scale {
            fast: 2_000,
            slow: 500,
            stalled: 5_000,
            per_client: 20,
        }
    } else {
        Scale {
            fast: args.messages,
            slow: args.messages / 5,
            stalled: 100_000,
            per_client: 2_000,
        }
    };
    let with_prosody = !args.no_prosody && !args.scale_out_only;
    let with_ejabberd = !args.no_ejabberd && !args.hot_path_only;
    let with_postgres = !args.no_postgres && !args.hot_path_only;
    // Before any row runs, so that a missing server does not cost the rows before it.
    ensure_installed(
        with_prosody,
        e2e::prosody_available(),
        "prosody",
        "prosody",
        "--no-prosody",
    )?;
    ensure_installed(
        with_ejabberd,
        testkit::ejabberd::installed(),
        "ejabberd",
        "ejabberd",
        "--no-ejabberd",
    )?;
    ensure_installed(
        with_postgres,
        Postgres::installed(),
        "PostgreSQL's server",
        "postgresql",
        "--no-postgres",
    )?;
    let postgres = if with_postgres {
        eprintln!("starting PostgreSQL (fsync on) for the shared-queue rows");
        Some(Postgres::start(PostgresOptions { durable: true }).await)
    } else {
        None
    };

    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let fast_hook = format!("http://{}/", hook::start(HookBehaviour::Fast).await?);
    let slow_hook = format!(
        "http://{}/",
        hook::start(HookBehaviour::Delay(Duration::from_millis(10))).await?
    );

    let load = Load {
        messages: scale.fast,
        senders: 100,
        window: 512,
    };
    if !args.scale_out_only {
        record(
            &mut rows,
            Row {
                mode: "isolated",
                name: "ceiling: HTTP client loop only, fast hook (CPU: the client)".into(),
                measured: isolated::http_only(&fast_hook, load).await?,
            },
        );
    }
    let orderings: &[&str] = if args.scale_out_only || args.hot_path_only {
        &["conversation"]
    } else {
        &["none", "conversation"]
    };
    let mut idle_rss = 0;
    for ordering in orderings {
        for queue in [Queue::Memory, Queue::Durable] {
            let run = bridge_row(&fast_hook, ordering, queue, load, false).await?;
            idle_rss = idle_rss.max(run.idle_rss_kib);
            if *ordering == "conversation" {
                notes.push(run.note(&format!("isolated, queue={}", queue.name())));
            }
            record(
                &mut rows,
                Row {
                    mode: "isolated",
                    name: format!(
                        "bridge, ordering={ordering}, queue={}, fast hook, 100 senders",
                        queue.name()
                    ),
                    measured: run.measured,
                },
            );
        }
    }
    if let Some(postgres) = &postgres {
        scale_out::empty_queue(postgres);
        let run = bridge_row(
            &fast_hook,
            "conversation",
            Queue::Postgres(postgres),
            load,
            false,
        )
        .await?;
        notes.push(run.note("isolated, queue=postgres"));
        let measured = run.measured;
        record(
            &mut rows,
            Row {
                mode: "isolated",
                name: "bridge, ordering=conversation, queue=postgres, fast hook, 100 senders"
                    .into(),
                measured,
            },
        );
    }

    let mut stalled = None;
    if !args.scale_out_only && !args.hot_path_only {
        other_isolated_rows(&mut rows, &fast_hook, &slow_hook, load, &scale).await?;
        stalled = Some(stalled_row(scale.stalled).await?);
    }

    if with_prosody {
        e2e_rows(&mut rows, &fast_hook, scale.per_client).await?;
    } else {
        println!("(end-to-end rows through Prosody skipped)");
    }
    if with_ejabberd {
        scale_out::ejabberd_rows(
            &mut rows,
            &mut notes,
            &fast_hook,
            scale.per_client,
            postgres.as_ref(),
        )
        .await?;
    } else {
        println!("(end-to-end rows through ejabberd skipped: --no-ejabberd)");
    }

    report::print_table(&rows);
    if !notes.is_empty() {
        println!();
        println!(
            "around the bridge (CPU-s per 10k stanzas from /proc; a server's whole process tree):"
        );
        for note in &notes {
            println!("- {note}");
        }
    }
    if let Some((written, stalled_rss)) = stalled {
        println!();
        println!(
            "memory: idle RSS {:.1} MiB; with a stalled hook, {written} stanzas pushed (the queue holds 10,000, the rest are refused with resource-constraint, and the bridge stops reading when its writes back block), peak RSS {:.1} MiB",
            idle_rss as f64 / 1024.0,
            stalled_rss as f64 / 1024.0
        );
    }
    print_targets(&rows, idle_rss, stalled.map(|(_, rss)| rss));
    Ok(())
}

/// Fails with what to install, or which flag skips the rows, when a server the run needs is
/// missing.
fn ensure_installed(
    wanted: bool,
    installed: bool,
    what: &str,
    package: &str,
    skip_flag: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !wanted || installed,
        "{what} is not installed: install Debian's {package} package, or pass {skip_flag}"
    );
    Ok(())
}

/// The isolated rows besides the queue comparison: the scrape-cost pair, HTTP/2, the slow hook
/// and the API.
async fn other_isolated_rows(
    rows: &mut Vec<Row>,
    fast_hook: &str,
    slow_hook: &str,
    load: Load,
    scale: &Scale,
) -> anyhow::Result<()> {
    let scraping = scrape_pair(fast_hook, load).await?;
    for (measured, what) in scraping.into_iter().zip([
        "[api] on, no scraping",
        "scraping /metrics every 100 ms",
        "one scrape of /metrics, idle (CPU per 10k scrapes)",
    ]) {
        record(
            rows,
            Row {
                mode: "isolated",
                name: format!(
                    "bridge, ordering=conversation, queue=durable, fast hook, 100 senders, {what}"
                ),
                measured,
            },
        );
    }
    let measured = bridge_row(fast_hook, "none", Queue::Memory, load, true)
        .await?
        .measured;
    record(
        rows,
        Row {
            mode: "isolated",
            name: "bridge, ordering=none, queue=memory, fast hook over HTTP/2 (h2c), 100 senders"
                .into(),
            measured,
        },
    );
    let slow = Load {
        messages: scale.slow,
        senders: 100,
        window: 512,
    };
    let measured = bridge_row(slow_hook, "none", Queue::Durable, slow, false)
        .await?
        .measured;
    record(
        rows,
        Row {
            mode: "isolated",
            name: "bridge, ordering=none, queue=durable, hook 10 ms, 100 senders".into(),
            measured,
        },
    );
    let measured = bridge_row(slow_hook, "conversation", Queue::Durable, slow, false)
        .await?
        .measured;
    record(
        rows,
        Row {
            mode: "isolated",
            name: "bridge, ordering=conversation, queue=durable, hook 10 ms, 100 senders".into(),
            measured,
        },
    );
    let one_sender = Load {
        messages: scale.slow / 10,
        senders: 1,
        window: 64,
    };
    let measured = bridge_row(slow_hook, "conversation", Queue::Durable, one_sender, false)
        .await?
        .measured;
    record(
        rows,
        Row {
            mode: "isolated",
            name: "bridge, ordering=conversation, queue=durable, hook 10 ms, 1 sender".into(),
            measured,
        },
    );

    api_rows(rows, scale.fast / 2).await
}

/// Adds a finished row, telling the person waiting which one it was.
fn record(rows: &mut Vec<Row>, row: Row) {
    eprintln!(
        "done: {} / {} ({:.0} stanzas/s)",
        row.mode,
        row.name,
        row.measured.per_second()
    );
    rows.push(row);
}

/// The queue a bridge row runs with.
#[derive(Clone, Copy)]
enum Queue<'a> {
    Memory,
    Durable,
    /// `queue = "postgres"` on this database, as its only instance.
    Postgres(&'a Postgres),
}

impl Queue<'_> {
    fn name(self) -> &'static str {
        match self {
            Queue::Memory => "memory",
            Queue::Durable => "durable",
            Queue::Postgres(_) => "postgres",
        }
    }
}

/// What one bridge row measured.
struct BridgeRun {
    measured: Measured,
    /// The bridge's RSS once connected, before the load.
    idle_rss_kib: u64,
    /// What was spent around the bridge, before and after the load.
    surroundings: [scale_out::Surroundings; 2],
    /// What the shared queue's PostgreSQL wrote for the load, if the row had one.
    written: Option<scale_out::Written>,
}

impl BridgeRun {
    /// What was spent around the bridge during the row, as a note beside the table.
    fn note(&self, label: &str) -> String {
        let [before, after] = &self.surroundings;
        before.note(after, label, &self.measured, self.written)
    }
}

/// One bridge run: spawn, accept, drive, measure the bridge's CPU and memory, and what was
/// spent around it (the PostgreSQL of the shared queue included).
async fn bridge_row(
    hook_url: &str,
    ordering: &str,
    queue: Queue<'_>,
    load: Load,
    http2: bool,
) -> anyhow::Result<BridgeRun> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let postgres = match queue {
        Queue::Postgres(postgres) => Some(postgres),
        Queue::Memory | Queue::Durable => None,
    };
    let bridge = Bridge::spawn(&BridgeOptions {
        ordering,
        http2,
        queue: queue.name(),
        shared_queue: postgres.map(|postgres| scale_out::shared_queue(postgres, "bench-isolated")),
        ..BridgeOptions::defaults(
            listener.local_addr()?.to_string(),
            isolated::SECRET,
            hook_url.to_owned(),
        )
    })?;
    let accepted = isolated::accept_bridge(&listener).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = bridge.stats();
    let around_before = scale_out::Surroundings::read(postgres, None);
    let written_before = postgres.map(scale_out::Written::read);
    let (mut measured, _) = isolated::drive(accepted, load).await?;
    let after = bridge.stats();
    let around_after = scale_out::Surroundings::read(postgres, None);
    measured.cpu_seconds = Some(after.cpu_seconds - before.cpu_seconds);
    measured.peak_rss_kib = Some(after.peak_rss_kib);
    let written = postgres
        .zip(written_before)
        .map(|(postgres, before)| before.since(scale_out::Written::read(postgres)));
    Ok(BridgeRun {
        measured,
        idle_rss_kib: before.rss_kib,
        surroundings: [around_before, around_after],
        written,
    })
}

/// A bridge with the API listening, connecting to the returned listener as its XMPP server.
async fn api_bridge(hook_url: &str) -> anyhow::Result<(Bridge, TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = api::free_address()?;
    let bridge = Bridge::spawn(&BridgeOptions {
        extra: api::api_table(address),
        ..BridgeOptions::defaults(
            listener.local_addr()?.to_string(),
            isolated::SECRET,
            hook_url.to_owned(),
        )
    })?;
    Ok((bridge, listener, address))
}

fn cpu_per_stanza(measured: &Measured) -> f64 {
    measured.cpu_seconds.unwrap_or(0.0) / measured.count.max(1) as f64
}

/// The fast-hook load with the API listening, without and with `/metrics` scraped every 100 ms:
/// what the metrics cost the hot path. A few percent is far inside this machine's run-to-run
/// noise between processes, so both rows come from one bridge: the load runs in
/// [`SCRAPE_WINDOWS`] windows, scraping in every other pair of them (off, on, on, off, …, so
/// that a drift of the machine's speed during the run weighs on both rows alike), and each row
/// sums its windows. A third row reads what one scrape costs, on the same bridge left idle.
async fn scrape_pair(hook_url: &str, load: Load) -> anyhow::Result<[Measured; 3]> {
    let (bridge, listener, address) = api_bridge(hook_url).await?;
    let mut accepted = isolated::accept_bridge(&listener).await?;
    process::wait_listening(address).await?;
    // Each row gets three times the load of the other rows: CPU time is counted in 10 ms ticks.
    let window = Load {
        messages: (3 * load.messages / (SCRAPE_WINDOWS / 2)).max(1),
        ..load
    };
    let [mut plain, mut scraped] = [Measured::default(), Measured::default()];
    for index in 0..SCRAPE_WINDOWS {
        let scrape = matches!(index % 4, 1 | 2);
        let scraper =
            scrape.then(|| tokio::spawn(api::scrape_every(address, Duration::from_millis(100))));
        let before = bridge.stats();
        let (measured, connection) = isolated::drive(accepted, window).await?;
        let after = bridge.stats();
        accepted = connection;
        if let Some(scraper) = scraper {
            if scraper.is_finished() {
                scraper.await?.context("scraping /metrics")?;
            } else {
                scraper.abort();
            }
        }
        let row = if scrape { &mut scraped } else { &mut plain };
        row.add(
            measured,
            after.cpu_seconds - before.cpu_seconds,
            after.peak_rss_kib,
        );
    }
    // What one scrape costs, read directly: the same bridge, idle now, scraped back to back.
    let scrapes = (load.messages / 10).max(100);
    let before = bridge.stats();
    let started = std::time::Instant::now();
    api::scrape_times(address, scrapes).await?;
    let after = bridge.stats();
    let one_scrape = Measured {
        count: scrapes,
        elapsed: started.elapsed(),
        cpu_seconds: Some(after.cpu_seconds - before.cpu_seconds),
        peak_rss_kib: Some(after.peak_rss_kib),
        ..Measured::default()
    };
    Ok([plain, scraped, one_scrape])
}

/// How many windows [`scrape_pair`] cuts the load into, half of them scraped.
const SCRAPE_WINDOWS: usize = 16;

/// Through a real Prosody: the trivial component's ceiling, then the bridge with each ordering.
async fn e2e_rows(rows: &mut Vec<Row>, hook_url: &str, per_client: usize) -> anyhow::Result<()> {
    const CLIENTS: usize = 20;
    const WINDOW: usize = 10;
    eprintln!("starting Prosody for the end-to-end rows");
    let prosody = e2e::start_prosody(CLIENTS).await;
    let prosody_pid = prosody.pid().unwrap_or_default();
    let component = e2e::trivial_component(prosody.component_port).await?;
    eprintln!("trivial component connected; waiting until Prosody routes to it");
    e2e::wait_routed(prosody.c2s_port).await?;
    let prosody_before = process::ProcStats::of(prosody_pid);
    let mut measured = e2e::drive_clients(prosody.c2s_port, CLIENTS, per_client, WINDOW).await?;
    measured.cpu_seconds =
        Some(process::ProcStats::of(prosody_pid).cpu_seconds - prosody_before.cpu_seconds);
    record(
        rows,
        Row {
            mode: "prosody",
            name: format!(
                "ceiling: trivial component, {CLIENTS} clients × window {WINDOW} (CPU: Prosody)"
            ),
            measured,
        },
    );
    component.abort();
    for ordering in ["conversation", "none"] {
        let bridge = Bridge::spawn(&BridgeOptions {
            ordering,
            ..BridgeOptions::defaults(
                format!("127.0.0.1:{}", prosody.component_port),
                e2e::SECRET,
                hook_url.to_owned(),
            )
        })?;
        e2e::wait_routed(prosody.c2s_port).await?;
        let before = bridge.stats();
        let mut measured =
            e2e::drive_clients(prosody.c2s_port, CLIENTS, per_client, WINDOW).await?;
        let after = bridge.stats();
        measured.cpu_seconds = Some(after.cpu_seconds - before.cpu_seconds);
        measured.peak_rss_kib = Some(after.peak_rss_kib);
        record(
            rows,
            Row {
                mode: "prosody",
                name: format!(
                    "bridge, ordering={ordering}, queue=durable, fast hook, {CLIENTS} clients × window {WINDOW}"
                ),
                measured,
            },
        );
    }

    // Messages to the clients: written by a trivial component, then posted to the API.
    let prosody_before = process::ProcStats::of(prosody_pid);
    let mut measured = api::to_clients(
        prosody.c2s_port,
        CLIENTS,
        per_client,
        WINDOW,
        api::Sender::Component(prosody.component_port),
    )
    .await?;
    measured.cpu_seconds =
        Some(process::ProcStats::of(prosody_pid).cpu_seconds - prosody_before.cpu_seconds);
    record(
        rows,
        Row {
            mode: "prosody",
            name: format!(
                "ceiling: trivial component writing to {CLIENTS} clients × window {WINDOW} (CPU: Prosody)"
            ),
            measured,
        },
    );
    let address = api::free_address()?;
    let bridge = Bridge::spawn(&BridgeOptions {
        extra: api::api_table(address),
        ..BridgeOptions::defaults(
            format!("127.0.0.1:{}", prosody.component_port),
            e2e::SECRET,
            hook_url.to_owned(),
        )
    })?;
    e2e::wait_routed(prosody.c2s_port).await?;
    process::wait_listening(address).await?;
    let before = bridge.stats();
    let mut measured = api::to_clients(
        prosody.c2s_port,
        CLIENTS,
        per_client,
        WINDOW,
        api::Sender::Api(format!("http://{address}")),
    )
    .await?;
    let after = bridge.stats();
    measured.cpu_seconds = Some(after.cpu_seconds - before.cpu_seconds);
    measured.peak_rss_kib = Some(after.peak_rss_kib);
    record(
        rows,
        Row {
            mode: "prosody",
            name: format!(
                "API → {CLIENTS} clients × window {WINDOW}, queue=durable (latency: POST to receipt)"
            ),
            measured,
        },
    );
    Ok(())
}

/// The API alone: the bridge's `POST /v1/stanzas` with the harness as its XMPP server, next to
/// a hyper server that answers `202` without doing anything.
async fn api_rows(rows: &mut Vec<Row>, requests: usize) -> anyhow::Result<()> {
    const IN_FLIGHT: usize = 64;
    let ceiling = api::ceiling_server().await?;
    record(
        rows,
        Row {
            mode: "isolated",
            name: format!("ceiling: hyper answering 202, no work, {IN_FLIGHT} requests in flight"),
            measured: api::post_messages(
                &format!("http://{ceiling}/v1/stanzas"),
                requests,
                IN_FLIGHT,
            )
            .await?,
        },
    );
    let (bridge, listener, address) = api_bridge("http://127.0.0.1:9/").await?;
    let (read, _write, codec) = isolated::accept_bridge(&listener).await?.into_parts();
    api::drain(read, codec);
    process::wait_listening(address).await?;
    let before = bridge.stats();
    let mut measured =
        api::post_messages(&format!("http://{address}/v1/stanzas"), requests, IN_FLIGHT).await?;
    let after = bridge.stats();
    measured.cpu_seconds = Some(after.cpu_seconds - before.cpu_seconds);
    measured.peak_rss_kib = Some(after.peak_rss_kib);
    record(
        rows,
        Row {
            mode: "isolated",
            name: format!("API: POST /v1/stanzas, queue=durable, {IN_FLIGHT} requests in flight"),
            measured,
        },
    );
    Ok(())
}

/// Pushes stanzas at a hook that never answers: the queue fills to its bound, the rest are
/// refused, and memory stays bounded.
async fn stalled_row(total: usize) -> anyhow::Result<(usize, u64)> {
    let hook = format!("http://{}/", hook::start(HookBehaviour::Stalled).await?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let bridge = Bridge::spawn(&BridgeOptions {
        hook_timeout: Duration::from_secs(300),
        ..BridgeOptions::defaults(listener.local_addr()?.to_string(), isolated::SECRET, hook)
    })?;
    let accepted = isolated::accept_bridge(&listener).await?;
    let (written, _accepted) = isolated::flood(accepted, total, 100).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((written, bridge.stats().peak_rss_kib))
}

fn print_targets(rows: &[Row], idle_rss_kib: u64, stalled_rss_kib: Option<u64>) {
    // A row by its mode and the start of its name; a target whose rows did not run (skipped
    // servers, a subset of rows) is not printed.
    let row = |mode: &str, name: &str| {
        rows.iter()
            .find(|r| r.mode == mode && r.name.starts_with(name))
            .map(|r| &r.measured)
    };
    let rate = |name: &str| row("isolated", name).map(Measured::per_second);
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!("targets:");
    let none = rate("bridge, ordering=none, queue=memory, fast hook, 100");
    if let Some(none) = none {
        println!(
            "- isolated, ordering=none, fast hook ≥ 40,000/s: {none:.0}/s — {}",
            check(none >= 40_000.0)
        );
    }
    if let (Some(none), Some(ceiling)) = (none, rate("ceiling: HTTP")) {
        println!(
            "- isolated, ordering=none ≥ 0.5 × HTTP-only ceiling ({ceiling:.0}/s): ratio {:.2} — {}",
            none / ceiling.max(1.0),
            check(none >= 0.5 * ceiling)
        );
    }
    let conversation = rate("bridge, ordering=conversation, queue=memory, fast hook, 100");
    if let Some(conversation) = conversation {
        println!(
            "- isolated, ordering=conversation, 100 senders ≥ 20,000/s: {conversation:.0}/s — {}",
            check(conversation >= 20_000.0)
        );
    }
    if let (Some(ceiling), Some(durable)) = (
        row("isolated", "ceiling: HTTP"),
        row(
            "isolated",
            "bridge, ordering=conversation, queue=durable, fast hook, 100",
        ),
    ) {
        let ratio = durable.per_second() / ceiling.per_second().max(1.0);
        println!(
            "- isolated, ordering=conversation, durable queue ≥ 0.8 × HTTP-only ceiling ({:.0}/s): {:.0}/s, ratio {ratio:.2} — {}",
            ceiling.per_second(),
            durable.per_second(),
            check(ratio >= 0.8)
        );
        let cpu = cpu_per_stanza(durable) * 1e4;
        println!(
            "- isolated, ordering=conversation, durable queue ≤ 0.40 CPU-s per 10k stanzas: {cpu:.2} (the ceiling's client alone: {:.2}) — {}",
            cpu_per_stanza(ceiling) * 1e4,
            check(cpu <= 0.40)
        );
    }
    for (queue, target) in [("durable", 0.7), ("postgres", 0.5)] {
        let queued = rate(&format!(
            "bridge, ordering=conversation, queue={queue}, fast hook, 100"
        ));
        if let (Some(conversation), Some(queued)) = (conversation, queued) {
            println!(
                "- isolated, ordering=conversation, 100 senders, {queue} queue ≥ {target} × in-memory ({conversation:.0}/s): {queued:.0}/s, ratio {:.2} — {}",
                queued / conversation.max(1.0),
                check(queued >= target * conversation)
            );
        }
    }
    if let (Some(ceiling), Some(bridge)) = (
        row("prosody", "ceiling: trivial component"),
        row(
            "prosody",
            "bridge, ordering=conversation, queue=durable, fast hook, 20",
        ),
    ) {
        let ratio = bridge.per_second() / ceiling.per_second().max(1.0);
        println!(
            "- through Prosody, bridge ≥ 0.85 × trivial-component ceiling ({:.0}/s): {:.0}/s, ratio {ratio:.2} — {}",
            ceiling.per_second(),
            bridge.per_second(),
            check(ratio >= 0.85)
        );
        let (p99, ceiling_p99) = (bridge.percentile(0.99), ceiling.percentile(0.99));
        println!(
            "- through Prosody, bridge p99 ≤ 1.5 × ceiling p99 ({:.2} ms): {:.2} ms — {}",
            ceiling_p99.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            check(p99 <= ceiling_p99 * 3 / 2)
        );
    }
    if let (Some(plain), Some(scraped)) = (
        row(
            "isolated",
            "bridge, ordering=conversation, queue=durable, fast hook, 100 senders, [api] on",
        ),
        row(
            "isolated",
            "bridge, ordering=conversation, queue=durable, fast hook, 100 senders, scraping",
        ),
    ) {
        let extra = cpu_per_stanza(scraped) / cpu_per_stanza(plain).max(f64::MIN_POSITIVE) - 1.0;
        println!(
            "- scraping /metrics every 100 ms costs < 2 % of the bridge's CPU: {:.3} vs {:.3} CPU-s per 10k, {:+.1} % — {}",
            cpu_per_stanza(scraped) * 1e4,
            cpu_per_stanza(plain) * 1e4,
            extra * 100.0,
            check(extra < 0.02)
        );
        if let Some(one) = row(
            "isolated",
            "bridge, ordering=conversation, queue=durable, fast hook, 100 senders, one scrape",
        ) {
            // Ten scrapes a second against the CPU the bridge spends per second under the load.
            let busy = cpu_per_stanza(plain) * plain.per_second();
            let share = 10.0 * cpu_per_stanza(one) / busy.max(f64::MIN_POSITIVE);
            println!(
                "  read directly: one scrape costs {:.0} µs of the bridge's CPU; ten a second are {:.2} % of its {busy:.2} CPU-s per second under that load — {}",
                cpu_per_stanza(one) * 1e6,
                share * 100.0,
                check(share < 0.02)
            );
        }
    }
    if let (Some(ceiling), Some(api)) = (
        row("isolated", "ceiling: hyper answering 202"),
        row("isolated", "API: POST"),
    ) {
        let ratio = api.per_second() / ceiling.per_second().max(1.0);
        println!(
            "- API alone ≥ 0.5 × hyper answering 202 ({:.0}/s): {:.0}/s, ratio {ratio:.2} — {}",
            ceiling.per_second(),
            api.per_second(),
            check(ratio >= 0.5)
        );
    }
    if let (Some(ceiling), Some(api)) = (
        row("prosody", "ceiling: trivial component writing"),
        row("prosody", "API → "),
    ) {
        let ratio = api.per_second() / ceiling.per_second().max(1.0);
        println!(
            "- API → Prosody → clients ≥ 0.8 × trivial component writing ({:.0}/s): {:.0}/s, ratio {ratio:.2} — {}",
            ceiling.per_second(),
            api.per_second(),
            check(ratio >= 0.8)
        );
    }
    if let Some(stalled_rss_kib) = stalled_rss_kib {
        println!(
            "- idle RSS ≤ 30 MiB: {:.1} MiB — {}",
            idle_rss_kib as f64 / 1024.0,
            check(idle_rss_kib <= 30 * 1024)
        );
        println!(
            "- RSS with a stalled hook ≤ 100 MiB: {:.1} MiB — {}",
            stalled_rss_kib as f64 / 1024.0,
            check(stalled_rss_kib <= 100 * 1024)
        );
    }
    print_ejabberd_ratios(rows);
}

/// Through ejabberd, each bridge row against the ceiling of the same server set-up (no target:
/// these rows say what scaling out costs and gains).
fn print_ejabberd_ratios(rows: &[Row]) {
    let ejabberd: Vec<&Row> = rows.iter().filter(|r| r.mode == "ejabberd").collect();
    if ejabberd.is_empty() {
        return;
    }
    println!();
    println!("through ejabberd, each bridge row against the ceiling before it:");
    let mut ceiling: Option<&Row> = None;
    for row in ejabberd {
        if row.name.starts_with("ceiling") {
            ceiling = Some(row);
            continue;
        }
        let Some(ceiling) = ceiling else {
            continue;
        };
        let (bridge, top) = (&row.measured, &ceiling.measured);
        println!(
            "- {}: {:.0}/s of {:.0}/s, ratio {:.2}; p50 {:.2} ms, p99 {:.2} ms (ceiling {:.2} / {:.2} ms)",
            row.name,
            bridge.per_second(),
            top.per_second(),
            bridge.per_second() / top.per_second().max(1.0),
            bridge.percentile(0.5).as_secs_f64() * 1e3,
            bridge.percentile(0.99).as_secs_f64() * 1e3,
            top.percentile(0.5).as_secs_f64() * 1e3,
            top.percentile(0.99).as_secs_f64() * 1e3,
        );
    }
}
