//! End-to-end mode: K real XMPP clients (tokio-xmpp) send messages through a real Prosody or
//! ejabberd to `echo@bot.localhost`, each keeping a window of replies outstanding, and time
//! every reply. What answers is either the bridge (with the fast hook behind it) or, for the
//! ceiling rows, a trivial component written here that answers every message itself, without
//! HTTP: the most any external component can get through that server on this machine.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use component_http::xmpp::codec::{Frame, ReadLimits, StreamReader};
use component_http::xmpp::handshake;
use component_http::xmpp::write;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::stanza::Stanza;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event};

use testkit::e2e::ServerOptions;
use testkit::ejabberd::{self, Ejabberd};
use testkit::prosody::{Prosody, ProsodyOptions};

use crate::report::Measured;

/// The test servers' component secret (Prosody's and ejabberd's).
pub const SECRET: &str = testkit::prosody::COMPONENT_SECRET;
pub const PASSWORD: &str = "bench-throwaway-password";

/// The test suite's throwaway Prosody ([`testkit::prosody`]), with `users` accounts
/// `bench{i}` and logging only what the harness needs.
pub async fn start_prosody(users: usize) -> Prosody {
    Prosody::start_with_options(&ProsodyOptions {
        accounts: (0..users)
            .map(|user| (format!("bench{user}"), PASSWORD.to_owned()))
            .collect(),
        quiet: true,
        ..ProsodyOptions::default()
    })
    .await
}

/// The test suite's throwaway ejabberd ([`testkit::ejabberd`]) with the accounts of
/// [`start_prosody`]. With `component_number`, the README's `domain_balancing` for the
/// component's domain ("Scaling out"): each sender's bare JID hashed onto that many
/// connection slots.
pub async fn start_ejabberd(users: usize, component_number: Option<u32>) -> Ejabberd {
    let balancing = component_number
        .map(|number| ejabberd::domain_balancing_yaml("bot.localhost", "bare_source", number))
        .unwrap_or_default();
    Ejabberd::start_with_yaml(
        &ServerOptions {
            accounts: (0..users)
                .map(|user| (format!("bench{user}"), PASSWORD.to_owned()))
                .collect(),
            quiet: true,
            ..ServerOptions::default()
        },
        &balancing,
    )
    .await
}

/// Whether a `prosody` executable is on the PATH (`prosody` has no harmless flag to probe with:
/// any invocation starts a server).
pub fn prosody_available() -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("prosody").is_file()))
        .unwrap_or(false)
}

/// The ceiling's component: authenticates, then answers every message with the echo bot's reply.
pub async fn trivial_component(
    port: u16,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let (mut tcp, mut reader) = connect_component(port).await?;
    let mut buf = vec![0u8; 64 * 1024];
    Ok(tokio::spawn(async move {
        let mut out = String::new();
        loop {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            reader.feed(&buf[..n]);
            out.clear();
            while let Some(frame) = reader.next_frame()? {
                let Frame::Element(read) = frame else {
                    continue;
                };
                let e = &read.element;
                if e.name() != "message" || e.attr("type") == Some("error") {
                    continue;
                }
                let body = e
                    .children()
                    .find(|c| c.name() == "body")
                    .map(|b| b.text())
                    .unwrap_or_default();
                out.push_str(&format!(
                    "<message to='{}' from='{}' type='chat' id='{}'><body>Did you say {}?</body></message>",
                    write::escape_attr(e.attr("from").unwrap_or_default()),
                    write::escape_attr(e.attr("to").unwrap_or_default()),
                    write::escape_attr(e.attr("id").unwrap_or_default()),
                    write::escape_attr(&body),
                ));
            }
            if !out.is_empty() {
                tcp.write_all(out.as_bytes()).await?;
            }
        }
    }))
}

/// Logs in `clients` users, then each sends `per_client` messages with `window` outstanding.
///
/// The clients run on a current-thread runtime of their own: on a multi-thread runtime
/// tokio-xmpp's client can stop reading its socket under load (replies sit unread), which
/// would stall a run for reasons that have nothing to do with the component measured.
pub async fn drive_clients(
    c2s_port: u16,
    clients: usize,
    per_client: usize,
    window: usize,
) -> anyhow::Result<Measured> {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(drive_clients_here(c2s_port, clients, per_client, window))
    })
    .await?
}

async fn drive_clients_here(
    c2s_port: u16,
    clients: usize,
    per_client: usize,
    window: usize,
) -> anyhow::Result<Measured> {
    let mut logged_in = Vec::new();
    for user in 0..clients {
        logged_in.push(login(c2s_port, user).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = logged_in
        .into_iter()
        .map(|client| tokio::spawn(client_loop(client, per_client, window)))
        .collect();
    let mut measured = Measured::default();
    for task in tasks {
        let (latencies, errors) = task.await??;
        measured.latencies.extend(latencies);
        measured.errors += errors;
    }
    measured.elapsed = started.elapsed();
    measured.count = measured.latencies.len();
    Ok(measured)
}

/// Connects to the server's component port as `bot.localhost` and completes the handshake; returns
/// the connection and its reader, inside the stream.
pub async fn connect_component(port: u16) -> anyhow::Result<(TcpStream, StreamReader)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(write::stream_header("bot.localhost").as_bytes())
        .await?;
    let mut reader = StreamReader::new(ReadLimits::default());
    let mut buf = vec![0u8; 4096];
    let mut authenticated = false;
    while !authenticated {
        let n = tcp.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "the server closed the component connection");
        reader.feed(&buf[..n]);
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Open(header) => {
                    let id = header.id.context("no stream id")?;
                    tcp.write_all(handshake::handshake_element(&id, SECRET).as_bytes())
                        .await?;
                }
                Frame::Element(e) if e.element.name() == "handshake" => authenticated = true,
                other => anyhow::bail!("unexpected before the handshake: {other:?}"),
            }
        }
    }
    Ok((tcp, reader))
}

/// Logs `bench{user}` in and makes it available (so messages to its bare JID reach it).
pub async fn login(c2s_port: u16, user: usize) -> anyhow::Result<Client> {
    let jid = BareJid::from_str(&format!("bench{user}@localhost"))?;
    let mut client = Client::new_plaintext(
        jid,
        PASSWORD,
        DnsConfig::addr(&format!("127.0.0.1:{c2s_port}")),
        Timeouts::tight(),
    );
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match client.next().await {
                Some(Event::Online { .. }) => return Ok(()),
                Some(Event::Disconnected(error)) => {
                    anyhow::bail!("bench{user} cannot log in: {error}")
                }
                Some(Event::Stanza(_)) => {}
                None => anyhow::bail!("bench{user}: stream ended before login"),
            }
        }
    })
    .await
    .context("login timed out")??;
    let presence = Element::from_str("<presence xmlns='jabber:client'/>")?;
    client
        .send_stanza(Stanza::try_from(presence).map_err(|e| anyhow::anyhow!("{e:?}"))?)
        .await?;
    Ok(client)
}

fn message(seq: usize) -> anyhow::Result<Stanza> {
    let element = Element::from_str(&format!(
        "<message xmlns='jabber:client' to='echo@bot.localhost' type='chat' id='{seq}'><body>m{seq}</body></message>"
    ))?;
    Stanza::try_from(element).map_err(|e| anyhow::anyhow!("{e:?}"))
}

async fn client_loop(
    mut client: Client,
    total: usize,
    window: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut sent_at = Vec::with_capacity(total);
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    while latencies.len() + errors < total {
        while sent_at.len() < total && sent_at.len() - (latencies.len() + errors) < window {
            let seq = sent_at.len();
            sent_at.push(Instant::now());
            client.send_stanza(message(seq)?).await?;
        }
        let event = tokio::time::timeout(Duration::from_secs(60), client.next())
            .await
            .context("no reply within 60 s")?
            .context("the client stream ended")?;
        let Event::Stanza(stanza) = event else {
            continue;
        };
        let element = Element::from(stanza);
        if element.name() != "message" {
            continue;
        }
        let Some(seq) = element.attr("id").and_then(|id| id.parse::<usize>().ok()) else {
            continue;
        };
        let Some(sent) = sent_at.get(seq) else {
            continue;
        };
        if element.attr("type") == Some("error") {
            errors += 1;
        } else {
            latencies.push(sent.elapsed());
        }
    }
    let _ = client.send_end().await;
    Ok((latencies, errors))
}

/// Waits until the server routes to the component: a probe message gets an answer.
pub async fn wait_routed(c2s_port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let measured = drive_clients(c2s_port, 1, 1, 1).await?;
        if measured.count == 1 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the component is not reachable through the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
