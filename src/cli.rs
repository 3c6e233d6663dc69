//! The command line (README, "Command line").

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
    /// Validate the configuration, bind the API's addresses, report each API token's source
    /// and each room, connect and authenticate to the server, reach the hook, open the queue;
    /// print what is wrong with its fix and exit non-zero if anything is.
    Check,
    /// Stanzas whose retries ran out: list them, deliver them again, or delete them. Works on a
    /// running instance (through its control socket) and on a stopped one.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Send a stanza through the running instance: prints its id, or an iq get/set's answer as
    /// JSON. Without --to or --stanza, reads the stanza as the HTTP API's JSON from stdin.
    Send(SendArgs),
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The recipient's JID.
    #[arg(long)]
    pub to: Option<String>,
    /// A localpart or a JID of the component's domain (default: the bare domain).
    #[arg(long)]
    pub from: Option<String>,
    /// The message body.
    #[arg(long)]
    pub body: Option<String>,
    /// The message type (chat, normal, headline, groupchat).
    #[arg(long = "type")]
    pub type_: Option<String>,
    /// The whole stanza as XML.
    #[arg(long, conflicts_with_all = ["to", "body", "type_"])]
    pub stanza: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// One line per dead letter: id, when it died, from, to, why.
    List {
        /// One JSON object per line, with the stanza.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back at the end of the queue, in their original order.
    Replay(Which),
    /// Delete dead letters for good.
    Purge(Which),
}

#[derive(Debug, clap::Args)]
pub struct Which {
    /// Ids as `list` shows them.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<u64>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
}
