//! The command line (SPEC §7).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "component-http",
    version,
    about = "An XMPP component (XEP-0114) that forwards stanzas to an HTTP webhook"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "COMPONENT_HTTP_CONFIG",
        default_value = "component-http.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr; the filter comes from RUST_LOG (default "info").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the component (the default).
    Run,
    /// Validate the configuration, connect and authenticate to the server, reach the hook;
    /// print what is wrong and exit non-zero if anything is.
    Check,
}
