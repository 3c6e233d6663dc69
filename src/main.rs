//! The `component-http` binary: parse the command line, load the configuration, set up
//! logging, run. Exit codes: 0 clean stop, 1 failure (or `check` found a problem), 2 bad config,
//! 70 a panic in any thread or task (a bug): the process ends rather than run half alive, so
//! that a supervisor restarts it.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use component_http::admin::{self, Request};
use component_http::cli::{Cli, Command, DeadLetters, LogFormat, SendArgs};
use component_http::config::Config;
use tracing_subscriber::EnvFilter;

/// The exit code after a panic (sysexits' EX_SOFTWARE).
const EXIT_PANIC: i32 = 70;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    exit_on_panic();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("component-http: bad configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("component-http: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Check => {
                if component_http::check::run(&config).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Command::DeadLetters(command) => {
                let (request, json) = match command {
                    DeadLetters::List { json } => (Request::List, json),
                    DeadLetters::Replay(which) => (
                        Request::Replay {
                            ids: which.ids,
                            all: which.all,
                        },
                        false,
                    ),
                    DeadLetters::Purge(which) => (
                        Request::Purge {
                            ids: which.ids,
                            all: which.all,
                        },
                        false,
                    ),
                };
                report(&admin::run(&config.queue, request).await, json)
            }
            Command::Send(args) => {
                let stanza = match stanza_to_send(args) {
                    Ok(stanza) => stanza,
                    Err(message) => {
                        eprintln!("component-http: {message}");
                        return ExitCode::from(2);
                    }
                };
                report(
                    &admin::run(&config.queue, Request::Send { stanza }).await,
                    true,
                )
            }
            Command::Run => match component_http::app::run(config, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

/// Prints a control command's answer (stdout, or stderr for a failure) and its exit code.
fn report(response: &admin::Response, json: bool) -> ExitCode {
    let (text, ok) = admin::render(response, json);
    if ok {
        println!("{text}");
        ExitCode::SUCCESS
    } else {
        eprintln!("{text}");
        ExitCode::FAILURE
    }
}

/// The stanza `send` is to send, as the HTTP API's JSON: from the options, or from stdin.
fn stanza_to_send(args: SendArgs) -> Result<serde_json::Value, String> {
    use std::io::Read;
    let mut object = serde_json::Map::new();
    if let Some(xml) = args.stanza {
        object.insert("stanza".into(), xml.into());
    } else if let Some(to) = args.to {
        object.insert("to".into(), to.into());
        for (key, value) in [("body", args.body), ("type", args.type_)] {
            if let Some(value) = value {
                object.insert(key.into(), value.into());
            }
        }
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the stanza from stdin: {e}"))?;
        return serde_json::from_str(&text).map_err(|e| {
            format!("give --to (and --body) or --stanza, or the stanza as JSON on stdin; stdin is not JSON: {e}")
        });
    }
    if let Some(from) = args.from {
        object.insert("from".into(), from.into());
    }
    Ok(object.into())
}

/// A panic anywhere ends the process. tokio would otherwise catch a task's panic and leave the
/// rest running: a session that panicked stops writing while the hook is still called.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!("a bug ended component-http: {info}");
        std::process::exit(EXIT_PANIC);
    }));
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        // The current span's fields (a delivery's `webhook_id` and `conversation`) under "span".
        LogFormat::Json => builder.json().with_span_list(false).init(),
    }
}

/// Completes on SIGINT, SIGTERM or SIGHUP: each is a graceful stop (there is no reload; a
/// supervisor restarts the process to apply a new configuration). The handlers are installed
/// when this is called, not when the future is first polled, so a signal during start-up is a
/// clean stop and not the default action (death without draining).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = [
        ("SIGINT", SignalKind::interrupt()),
        ("SIGTERM", SignalKind::terminate()),
        ("SIGHUP", SignalKind::hangup()),
    ]
    .map(|(name, kind)| (name, signal(kind)));
    async move {
        let mut streams = Vec::new();
        for (name, stream) in signals {
            match stream {
                Ok(stream) => streams.push((name, stream)),
                Err(error) => tracing::warn!("cannot handle {name}: {error}"),
            }
        }
        if streams.is_empty() {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
        let received = futures::future::select_all(
            streams
                .iter_mut()
                .map(|(name, stream)| Box::pin(async move { stream.recv().await.map(|_| *name) })),
        );
        if let (Some(name), _, _) = received.await {
            tracing::info!("{name} received");
        }
    }
}
