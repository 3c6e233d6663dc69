//! The component-http benchmark: runs the bridge (a release build beside this binary) under
//! load and prints a table. See BENCHMARKS.md for what each row means.
//!
//! Isolated mode: this harness is the XMPP server and the webhook. End-to-end mode: real XMPP
//! clients send through a real Prosody. Each mode has a ceiling row for comparison. With
//! `--soak MINUTES`, only the soak runs instead (steady load, hook failures and server
//! restarts, an exact account of every message; see `soak.rs`) and prints its own report.

mod api;
mod e2e;
mod hook;
mod isolated;
mod process;
mod report;
mod soak;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

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
    let mut rows = Vec::new();

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
    record(
        &mut rows,
        Row {
            mode: "isolated",
            name: "ceiling: HTTP client loop only, fast hook".into(),
            measured: isolated::http_only(&fast_hook, load).await?,
        },
    );
    let mut idle_rss = 0;
    for ordering in ["none", "conversation"] {
        for queue in ["memory", "durable"] {
            let (measured, idle) = bridge_row(&fast_hook, ordering, queue, load, false).await?;
            idle_rss = idle_rss.max(idle);
            record(
                &mut rows,
                Row {
                    mode: "isolated",
                    name: format!(
                        "bridge, ordering={ordering}, queue={queue}, fast hook, 100 senders"
                    ),
                    measured,
                },
            );
        }
    }
    let scraping = scrape_pair(&fast_hook, load).await?;
    for (measured, what) in scraping
        .into_iter()
        .zip(["[api] on, no scraping", "scraping /metrics every 100 ms"])
    {
        record(
            &mut rows,
            Row {
                mode: "isolated",
                name: format!(
                    "bridge, ordering=conversation, queue=durable, fast hook, 100 senders, {what}"
                ),
                measured,
            },
        );
    }
    let (measured, _) = bridge_row(&fast_hook, "none", "memory", load, true).await?;
    record(
        &mut rows,
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
    let (measured, _) = bridge_row(&slow_hook, "none", "durable", slow, false).await?;
    record(
        &mut rows,
        Row {
            mode: "isolated",
            name: "bridge, ordering=none, queue=durable, hook 10 ms, 100 senders".into(),
            measured,
        },
    );
    let (measured, _) = bridge_row(&slow_hook, "conversation", "durable", slow, false).await?;
    record(
        &mut rows,
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
    let (measured, _) =
        bridge_row(&slow_hook, "conversation", "durable", one_sender, false).await?;
    record(
        &mut rows,
        Row {
            mode: "isolated",
            name: "bridge, ordering=conversation, queue=durable, hook 10 ms, 1 sender".into(),
            measured,
        },
    );

    api_rows(&mut rows, scale.fast / 2).await?;

    let (written, stalled_rss) = stalled_row(scale.stalled).await?;

    if args.no_prosody {
        println!("(end-to-end rows skipped: --no-prosody)");
    } else if !e2e::prosody_available() {
        anyhow::bail!(
            "prosody is not installed: install Debian's prosody package, or pass --no-prosody"
        );
    } else {
        e2e_rows(&mut rows, &fast_hook, scale.per_client).await?;
    }

    report::print_table(&rows);
    println!();
    println!(
        "memory: idle RSS {:.1} MiB; with a stalled hook, {written} stanzas pushed (the queue holds 10,000, the rest are refused with resource-constraint, and the bridge stops reading when its writes back block), peak RSS {:.1} MiB",
        idle_rss as f64 / 1024.0,
        stalled_rss as f64 / 1024.0
    );
    print_targets(&rows, idle_rss, stalled_rss);
    Ok(())
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

/// One bridge run: spawn, accept, drive, measure the bridge's CPU and memory.
async fn bridge_row(
    hook_url: &str,
    ordering: &str,
    queue: &str,
    load: Load,
    http2: bool,
) -> anyhow::Result<(Measured, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let bridge = Bridge::spawn(&BridgeOptions {
        ordering,
        http2,
        queue,
        ..BridgeOptions::defaults(
            listener.local_addr()?.to_string(),
            isolated::SECRET,
            hook_url.to_owned(),
        )
    })?;
    let accepted = isolated::accept_bridge(&listener).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = bridge.stats();
    let (mut measured, _) = isolated::drive(accepted, load).await?;
    let after = bridge.stats();
    measured.cpu_seconds = Some(after.cpu_seconds - before.cpu_seconds);
    measured.peak_rss_kib = Some(after.peak_rss_kib);
    Ok((measured, before.rss_kib))
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
/// sums its windows.
async fn scrape_pair(hook_url: &str, load: Load) -> anyhow::Result<[Measured; 2]> {
    let (bridge, listener, address) = api_bridge(hook_url).await?;
    let mut accepted = isolated::accept_bridge(&listener).await?;
    process::wait_listening(address).await?;
    // Each row gets three times the load of the other rows: CPU time is counted in 10 ms ticks.
    let window = Load {
        messages: (3 * load.messages / (SCRAPE_WINDOWS / 2)).max(1),
        ..load
    };
    let mut rows: [Measured; 2] = Default::default();
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
        rows[usize::from(scrape)].add(
            measured,
            after.cpu_seconds - before.cpu_seconds,
            after.peak_rss_kib,
        );
    }
    Ok(rows)
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

fn print_targets(rows: &[Row], idle_rss_kib: u64, stalled_rss_kib: u64) {
    let rate = |name: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| r.measured.per_second())
            .unwrap_or(0.0)
    };
    let ceiling = rate("ceiling: HTTP");
    let none = rate("bridge, ordering=none, queue=memory, fast hook, 100");
    let conversation = rate("bridge, ordering=conversation, queue=memory, fast hook, 100");
    let durable = rate("bridge, ordering=conversation, queue=durable, fast hook, 100");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| &r.measured)
    };
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!("targets:");
    println!(
        "- isolated, ordering=none, fast hook ≥ 40,000/s: {none:.0}/s — {}",
        check(none >= 40_000.0)
    );
    println!(
        "- isolated, ordering=none ≥ 0.5 × HTTP-only ceiling ({ceiling:.0}/s): ratio {:.2} — {}",
        none / ceiling.max(1.0),
        check(none >= 0.5 * ceiling)
    );
    println!(
        "- isolated, ordering=conversation, 100 senders ≥ 20,000/s: {conversation:.0}/s — {}",
        check(conversation >= 20_000.0)
    );
    println!(
        "- isolated, ordering=conversation, 100 senders, durable queue ≥ 0.7 × in-memory ({conversation:.0}/s): {durable:.0}/s, ratio {:.2} — {}",
        durable / conversation.max(1.0),
        check(durable >= 0.7 * conversation)
    );
    if let (Some(ceiling), Some(bridge)) = (
        row("ceiling: trivial component"),
        row("bridge, ordering=conversation, queue=durable, fast hook, 20"),
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
            "- through Prosody, bridge p99 ≤ 2 × ceiling p99 ({:.2} ms): {:.2} ms — {}",
            ceiling_p99.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            check(p99 <= ceiling_p99 * 2)
        );
    }
    if let (Some(plain), Some(scraped)) = (
        row("bridge, ordering=conversation, queue=durable, fast hook, 100 senders, [api] on"),
        row("bridge, ordering=conversation, queue=durable, fast hook, 100 senders, scraping"),
    ) {
        let extra = cpu_per_stanza(scraped) / cpu_per_stanza(plain).max(f64::MIN_POSITIVE) - 1.0;
        println!(
            "- scraping /metrics every 100 ms costs < 2 % of the bridge's CPU: {:.3} vs {:.3} CPU-s per 10k, {:+.1} % — {}",
            cpu_per_stanza(scraped) * 1e4,
            cpu_per_stanza(plain) * 1e4,
            extra * 100.0,
            check(extra < 0.02)
        );
    }
    if let (Some(ceiling), Some(api)) = (row("ceiling: hyper answering 202"), row("API: POST")) {
        let ratio = api.per_second() / ceiling.per_second().max(1.0);
        println!(
            "- API alone ≥ 0.5 × hyper answering 202 ({:.0}/s): {:.0}/s, ratio {ratio:.2} — {}",
            ceiling.per_second(),
            api.per_second(),
            check(ratio >= 0.5)
        );
    }
    if let (Some(ceiling), Some(api)) = (row("ceiling: trivial component writing"), row("API → "))
    {
        let ratio = api.per_second() / ceiling.per_second().max(1.0);
        println!(
            "- API → Prosody → clients ≥ 0.8 × trivial component writing ({:.0}/s): {:.0}/s, ratio {ratio:.2} — {}",
            ceiling.per_second(),
            api.per_second(),
            check(ratio >= 0.8)
        );
    }
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
