//! A minimal XMPP client for the demo: logs in over plain TCP (loopback test servers only),
//! sends one chat message, prints the body of the reply and exits.
//!
//! ```text
//! cargo run --example xmpp_client -- --jid user@localhost --password P \
//!     --to echo@bot.localhost --message hello [--server 127.0.0.1:5222] [--timeout 10s]
//! ```
//! Exits 0 with the reply's body on stdout; 1 with a message on stderr when login fails, the
//! reply is an error, or nothing comes back in time.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

#[derive(Debug, Parser)]
#[command(about = "Send one XMPP chat message and print the reply")]
struct Args {
    /// The account to log in with, e.g. user@localhost.
    #[arg(long)]
    jid: String,
    /// Its password.
    #[arg(long)]
    password: String,
    /// Who to send the message to, e.g. echo@bot.localhost.
    #[arg(long)]
    to: String,
    /// The message's text.
    #[arg(long)]
    message: String,
    /// The server's client port (plain TCP, no TLS).
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: String,
    /// How long to wait for the login and for the reply.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("xmpp_client: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<String, String> {
    let jid = BareJid::from_str(&args.jid).map_err(|e| format!("bad --jid {}: {e}", args.jid))?;
    let to = Jid::from_str(&args.to).map_err(|e| format!("bad --to {}: {e}", args.to))?;
    let mut client = Client::new_plaintext(
        jid,
        args.password.clone(),
        DnsConfig::addr(&args.server),
        Timeouts::tight(),
    );

    tokio::time::timeout(args.timeout, async {
        loop {
            match client.next().await {
                Some(Event::Online { .. }) => return Ok(()),
                Some(Event::Disconnected(error)) => {
                    return Err(format!(
                        "cannot log in as {} at {}: {error}",
                        args.jid, args.server
                    ));
                }
                Some(Event::Stanza(_)) => {}
                None => return Err("the connection ended before login".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| format!("no login at {} within {:?}", args.server, args.timeout))??;

    let mut message = Message::new(Some(to.clone()));
    message.type_ = MessageType::Chat;
    message.id = Some(tokio_xmpp::parsers::message::Id("demo-1".to_owned()));
    message.bodies.insert(Lang::default(), args.message.clone());
    client
        .send_stanza(message.into())
        .await
        .map_err(|e| format!("cannot send: {e}"))?;

    let reply = tokio::time::timeout(args.timeout, async {
        loop {
            match client.next().await {
                Some(Event::Stanza(Stanza::Message(reply)))
                    if reply.from.as_ref().map(Jid::to_bare) == Some(to.to_bare()) =>
                {
                    return Ok(reply);
                }
                Some(Event::Disconnected(error)) => {
                    return Err(format!("disconnected while waiting for the reply: {error}"));
                }
                Some(_) => {}
                None => return Err("the connection ended before the reply".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| format!("no reply from {} within {:?}", args.to, args.timeout))??;

    let _ = tokio::time::timeout(Duration::from_secs(2), client.send_end()).await;

    if reply.type_ == MessageType::Error {
        let error = tokio_xmpp::minidom::Element::from(reply);
        return Err(format!(
            "{} answered with an error: {}",
            args.to,
            String::from(&error)
        ));
    }
    reply
        .bodies
        .get("")
        .or_else(|| reply.bodies.values().next())
        .cloned()
        .ok_or_else(|| format!("the reply from {} has no body", args.to))
}
