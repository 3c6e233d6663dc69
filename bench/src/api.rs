//! The HTTP API's rows (README, "The HTTP API"): requests through `POST /v1/stanzas`.
//!
//! - Isolated: this harness is the XMPP server (it reads and drops what the bridge writes) and
//!   the API's client, keeping a window of requests outstanding; the ceiling is a plain hyper
//!   server answering `202` with no work, driven by the same client.
//! - Through Prosody: the API's messages go to K logged-in clients, timed from the `POST` to
//!   their arrival at the client; the ceiling is a trivial component writing the same messages
//!   through the same Prosody.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use component_http::xmpp::codec::StreamReader;
use futures::StreamExt;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::{Client, Event};

use crate::report::Measured;

/// The bench's API token (throwaway).
pub const TOKEN: &str = "bench-throwaway-api-token";

/// The `[api]` table for a bridge listening on `address`, with one token for `alerts`.
pub fn api_table(address: SocketAddr) -> String {
    format!(
        "[api]\nlisten = \"{address}\"\n[[api.tokens]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\nfrom = [\"alerts\"]\n"
    )
}

/// A free loopback address for a listener started elsewhere.
pub fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `requests` POSTs of a chat message to `url`, `window` at a time; every answer must be `202`.
pub async fn post_messages(url: &str, requests: usize, window: usize) -> anyhow::Result<Measured> {
    component_http::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(window)
        .tcp_nodelay(true)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..window {
        let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= requests {
                    return anyhow::Ok(latencies);
                }
                let body = format!(
                    r#"{{"to":"user{}@localhost","body":"alert {seq}","id":"a{seq}"}}"#,
                    seq % 100
                );
                let begun = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let text = response.bytes().await?;
                anyhow::ensure!(
                    status.as_u16() == 202,
                    "the API answered {status}: {}",
                    String::from_utf8_lossy(&text)
                );
                latencies.push(begun.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(Measured {
        count: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
        ..Measured::default()
    })
}

/// Reads and drops everything an accepted bridge writes, counting its messages.
pub fn drain(mut read: tokio::net::tcp::OwnedReadHalf, mut codec: StreamReader) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = read.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            codec.feed(&buf[..n]);
            while codec.next_frame()?.is_some() {}
        }
    });
}

/// The ceiling: a hyper server answering `202 {"id":"x"}` to everything, doing nothing else.
pub async fn ceiling_server() -> anyhow::Result<SocketAddr> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let mut response =
                        hyper::Response::new(Full::new(Bytes::from_static(br#"{"id":"x"}"#)));
                    *response.status_mut() = hyper::StatusCode::ACCEPTED;
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// Who writes the messages the clients receive.
pub enum Sender {
    /// The bridge's API at this base URL.
    Api(String),
    /// A trivial component connected to Prosody's component port, writing them itself.
    Component(u16),
}

/// `per_client` messages to each of `clients` logged-in users, `window` outstanding per user,
/// each timed from its sending to its arrival.
pub async fn to_clients(
    c2s_port: u16,
    clients: usize,
    per_client: usize,
    window: usize,
    sender: Sender,
) -> anyhow::Result<Measured> {
    // tokio-xmpp's clients run on a current-thread runtime of their own (see e2e.rs).
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(to_clients_here(
                c2s_port, clients, per_client, window, sender,
            ))
    })
    .await?
}

type SentAt = Arc<Mutex<HashMap<String, Instant>>>;

async fn to_clients_here(
    c2s_port: u16,
    clients: usize,
    per_client: usize,
    window: usize,
    sender: Sender,
) -> anyhow::Result<Measured> {
    let mut logged_in = Vec::new();
    for user in 0..clients {
        logged_in.push(crate::e2e::login(c2s_port, user).await?);
    }
    let write: mpsc::Sender<(String, String)> = match sender {
        Sender::Api(base) => api_writer(base),
        Sender::Component(port) => component_writer(port).await?,
    };
    let sent_at: SentAt = Arc::default();
    let started = Instant::now();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (user, client) in logged_in.into_iter().enumerate() {
        let window = Arc::new(Semaphore::new(window));
        let (write, sent_at_here, permits) = (write.clone(), sent_at.clone(), window.clone());
        senders.push(tokio::spawn(async move {
            for seq in 0..per_client {
                permits.acquire().await?.forget();
                let id = format!("u{user}-{seq}");
                sent_at_here
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), Instant::now());
                write.send((format!("bench{user}@localhost"), id)).await?;
            }
            anyhow::Ok(())
        }));
        receivers.push(tokio::spawn(receive(
            client,
            per_client,
            window,
            sent_at.clone(),
        )));
    }
    for sender in senders {
        sender.await??;
    }
    let mut measured = Measured::default();
    for receiver in receivers {
        measured.latencies.extend(receiver.await??);
    }
    measured.elapsed = started.elapsed();
    measured.count = measured.latencies.len();
    Ok(measured)
}

/// Receives `expected` messages timed in `sent_at`, giving their window back; returns their
/// latencies.
async fn receive(
    mut client: Client,
    expected: usize,
    window: Arc<Semaphore>,
    sent_at: SentAt,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let event = tokio::time::timeout(Duration::from_secs(60), client.next())
            .await
            .context("no message within 60 s")?
            .context("the client stream ended")?;
        let Event::Stanza(stanza) = event else {
            continue;
        };
        let element = Element::from(stanza);
        if element.name() != "message" {
            continue;
        }
        let Some(id) = element.attr("id") else {
            continue;
        };
        let Some(sent) = sent_at.lock().unwrap_or_else(|e| e.into_inner()).remove(id) else {
            continue;
        };
        anyhow::ensure!(
            element.attr("type") != Some("error"),
            "an error came back: {}",
            String::from(&element)
        );
        latencies.push(sent.elapsed());
        window.add_permits(1);
    }
    let _ = client.send_end().await;
    Ok(latencies)
}

/// Posts each (recipient, id) to the API, 64 requests at most in flight.
fn api_writer(base: String) -> mpsc::Sender<(String, String)> {
    let (tx, mut rx) = mpsc::channel::<(String, String)>(1024);
    tokio::spawn(async move {
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let in_flight = Arc::new(Semaphore::new(64));
        let url = format!("{base}/v1/stanzas");
        while let Some((to, id)) = rx.recv().await {
            let permit = in_flight.clone().acquire_owned().await?;
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let body = format!(r#"{{"to":"{to}","type":"chat","id":"{id}","body":"alert"}}"#);
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().as_u16() == 202 => {}
                    Ok(r) => eprintln!("the API answered {}", r.status()),
                    Err(error) => eprintln!("the API did not answer: {error}"),
                }
            });
        }
        anyhow::Ok(())
    });
    tx
}

/// Writes each (recipient, id) as a message from `alerts@bot.localhost` on its own component
/// connection, batching what is ready; closes the connection when the sender is dropped. The
/// component connection of an earlier row may still be closing: Prosody then refuses this one
/// for a moment (one connection per component), so connecting is retried for 20 s.
async fn component_writer(port: u16) -> anyhow::Result<mpsc::Sender<(String, String)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match crate::e2e::connect_component(port).await {
            Ok((tcp, _reader)) => return Ok(write_messages(tcp)),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn write_messages(tcp: TcpStream) -> mpsc::Sender<(String, String)> {
    let (mut read, mut tcp_write) = tcp.into_split();
    // Whatever Prosody sends the component (errors, if any) is read and dropped.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while read.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let (tx, mut rx) = mpsc::channel::<(String, String)>(1024);
    tokio::spawn(async move {
        let mut out = String::new();
        while let Some(first) = rx.recv().await {
            out.clear();
            let mut next = Some(first);
            while let Some((to, id)) = next {
                out.push_str(&format!(
                    "<message to='{to}' from='alerts@bot.localhost' type='chat' id='{id}'><body>alert</body></message>"
                ));
                next = rx.try_recv().ok();
            }
            tcp_write.write_all(out.as_bytes()).await?;
        }
        tcp_write.write_all(b"</stream:stream>").await?;
        tcp_write.shutdown().await?;
        anyhow::Ok(())
    });
    tx
}

/// Reads `GET /metrics` from the bridge at `address` every `interval` until aborted, as a
/// Prometheus server would (only far more often).
pub async fn scrape_every(address: SocketAddr, interval: Duration) -> anyhow::Result<()> {
    let scraper = Scraper::new(address);
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        scraper.scrape().await?;
    }
}

/// Reads `GET /metrics` from the bridge at `address` `count` times, one after the other.
pub async fn scrape_times(address: SocketAddr, count: usize) -> anyhow::Result<()> {
    let scraper = Scraper::new(address);
    for _ in 0..count {
        scraper.scrape().await?;
    }
    Ok(())
}

/// A Prometheus-like reader of one bridge's `/metrics`.
struct Scraper {
    client: reqwest::Client,
    url: String,
}

impl Scraper {
    fn new(address: SocketAddr) -> Scraper {
        component_http::tls::install_crypto_provider();
        Scraper {
            client: reqwest::Client::new(),
            url: format!("http://{address}/metrics"),
        }
    }

    async fn scrape(&self) -> anyhow::Result<()> {
        let text = self.client.get(&self.url).send().await?.text().await?;
        anyhow::ensure!(
            text.contains("component_http_stanzas_received_total"),
            "/metrics did not answer its metrics"
        );
        Ok(())
    }
}
