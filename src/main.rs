//! The `component-http` binary: parse the command line, load the configuration, set up
//! logging, run. Exit codes: 0 clean stop, 1 failure (or `check` found a problem), 2 bad config.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use component_http::cli::{Cli, Command, DeadLetters, LogFormat};
use component_http::config::Config;
use component_http::queue::control::{self, Request};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
                let response = control::run(&config.queue.data_dir, request).await;
                let (text, ok) = control::render(&response, json);
                if ok {
                    println!("{text}");
                    ExitCode::SUCCESS
                } else {
                    eprintln!("{text}");
                    ExitCode::FAILURE
                }
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

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal during start-up is a clean stop and not the default
/// action (death without draining).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
