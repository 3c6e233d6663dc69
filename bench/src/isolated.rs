//! Isolated mode: the harness plays the XMPP server. It accepts the bridge's XEP-0114
//! connection, pushes message stanzas from K senders keeping a window of replies outstanding,
//! and times every reply. Also the HTTP-only ceiling: the same webhook calls without XMPP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use component_http::xmpp::codec::{Frame, ReadLimits, StreamReader};
use component_http::xmpp::handshake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

use crate::report::Measured;

pub const SECRET: &str = "bench-throwaway-secret";
const STREAM_ID: &str = "bench-stream";

/// What to push.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub messages: usize,
    pub senders: usize,
    /// Replies outstanding at once, across all senders.
    pub window: usize,
}

pub struct Accepted {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    codec: StreamReader,
}

/// Accepts the bridge and completes the server side of the handshake.
pub async fn accept_bridge(listener: &TcpListener) -> anyhow::Result<Accepted> {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .context("the bridge did not connect within 20 s")??;
    tcp.set_nodelay(true)?;
    let (read, write) = tcp.into_split();
    let mut accepted = Accepted {
        read,
        write,
        codec: StreamReader::new(ReadLimits::default()),
    };
    let header = accepted.next_frame().await?;
    anyhow::ensure!(
        matches!(header, Frame::Open(_)),
        "expected the bridge's stream header"
    );
    accepted
        .write
        .write_all(
            format!(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                 xmlns:stream='http://etherx.jabber.org/streams' from='bot.localhost' id='{STREAM_ID}'>"
            )
            .as_bytes(),
        )
        .await?;
    let Frame::Element(handshake_element) = accepted.next_frame().await? else {
        anyhow::bail!("expected <handshake>");
    };
    anyhow::ensure!(
        handshake_element.element.text() == handshake::digest(STREAM_ID, SECRET),
        "wrong handshake digest"
    );
    accepted.write.write_all(b"<handshake/>").await?;
    Ok(accepted)
}

impl Accepted {
    /// The connection's halves and the reader's codec, for a caller that reads and writes
    /// concurrently on its own terms (the soak).
    pub fn into_parts(self) -> (OwnedReadHalf, OwnedWriteHalf, StreamReader) {
        (self.read, self.write, self.codec)
    }

    async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(frame) = self.codec.next_frame()? {
                return Ok(frame);
            }
            let n = self.read.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "the bridge closed the connection");
            self.codec.feed(&buf[..n]);
        }
    }
}

fn message(seq: usize, senders: usize) -> String {
    chat_message(seq as u64, seq % senders, "bench")
}

/// A chat message to `echo@bot.localhost` from `user{sender}@localhost/{resource}`, with id
/// `{seq}` and body `m{seq}`: the hook's echo of it is "Did you say m{seq}?".
pub fn chat_message(seq: u64, sender: usize, resource: &str) -> String {
    format!(
        "<message to='echo@bot.localhost' from='user{sender}@localhost/{resource}' type='chat' id='{seq}'><body>m{seq}</body></message>"
    )
}

/// Pushes `load` through an accepted bridge and times each reply (matched by id); gives the
/// connection back for more, once every reply has come.
pub async fn drive(accepted: Accepted, load: Load) -> anyhow::Result<(Measured, Accepted)> {
    let Accepted {
        mut read,
        write,
        mut codec,
    } = accepted;
    let started = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..load.messages).map(|_| AtomicU64::new(0)).collect());
    let window = Arc::new(Semaphore::new(load.window));

    let writer = {
        let sent_at = sent_at.clone();
        let window = window.clone();
        let mut write = write;
        tokio::spawn(async move {
            let mut batch = String::new();
            let mut seq = 0;
            while seq < load.messages {
                window.acquire().await?.forget();
                batch.clear();
                loop {
                    sent_at[seq].store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    batch.push_str(&message(seq, load.senders));
                    seq += 1;
                    if seq == load.messages || batch.len() > 32 * 1024 {
                        break;
                    }
                    match window.try_acquire() {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                write.write_all(batch.as_bytes()).await?;
            }
            anyhow::Ok(write)
        })
    };

    let mut latencies = Vec::with_capacity(load.messages);
    let mut errors = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Duration::from_secs(120);
    while latencies.len() + errors < load.messages {
        let n = tokio::time::timeout(deadline, read.read(&mut buf))
            .await
            .with_context(|| {
                format!(
                    "no reply for {deadline:?}; {} of {} done",
                    latencies.len() + errors,
                    load.messages
                )
            })??;
        anyhow::ensure!(n > 0, "the bridge closed the connection");
        codec.feed(&buf[..n]);
        while let Some(frame) = codec.next_frame()? {
            let Frame::Element(read) = frame else {
                continue;
            };
            let Some(seq) = read
                .element
                .attr("id")
                .and_then(|id| id.parse::<usize>().ok())
            else {
                continue;
            };
            let Some(sent) = sent_at.get(seq) else {
                continue;
            };
            if read.element.attr("type") == Some("error") {
                errors += 1;
            } else {
                let sent = Duration::from_nanos(sent.load(Ordering::Relaxed));
                latencies.push(started.elapsed().saturating_sub(sent));
            }
            window.add_permits(1);
        }
    }
    let elapsed = started.elapsed();
    let write = writer.await??;
    let measured = Measured {
        count: latencies.len(),
        errors,
        elapsed,
        latencies,
        cpu_seconds: None,
        peak_rss_kib: None,
    };
    Ok((measured, Accepted { read, write, codec }))
}

/// Pushes stanzas without waiting for replies until the bridge stops reading (TCP
/// backpressure) or `total` are written; returns how many were written.
pub async fn flood(
    accepted: Accepted,
    total: usize,
    senders: usize,
) -> anyhow::Result<(usize, Accepted)> {
    let mut accepted = accepted;
    let mut written = 0;
    let mut batch = String::new();
    while written < total {
        batch.clear();
        let end = (written + 256).min(total);
        for seq in written..end {
            batch.push_str(&message(seq, senders));
        }
        match tokio::time::timeout(
            Duration::from_secs(2),
            accepted.write.write_all(batch.as_bytes()),
        )
        .await
        {
            Ok(result) => result?,
            Err(_) => break, // The bridge stopped reading: backpressure.
        }
        written = end;
    }
    Ok((written, accepted))
}

/// The ceiling: the same webhook calls with the same concurrency, from a plain HTTP client
/// loop, with no XMPP at all. The loop runs on a runtime of its own, as many worker threads as
/// the bridge's, so that its CPU (the client side of the round trips, which every design pays)
/// is read from those threads alone, apart from the hook's.
pub async fn http_only(hook_url: &str, load: Load) -> anyhow::Result<Measured> {
    const THREAD_NAME: &str = "ceiling-client";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()?;
    let url = hook_url.to_owned();
    let run = runtime.spawn(async move { client_loop(&url, load).await });
    let result = run.await;
    let cpu_seconds = crate::process::threads_cpu_seconds(THREAD_NAME);
    runtime.shutdown_background();
    let mut measured = result??;
    measured.cpu_seconds = Some(cpu_seconds);
    Ok(measured)
}

async fn client_loop(hook_url: &str, load: Load) -> anyhow::Result<Measured> {
    component_http::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.window)
        .tcp_nodelay(true)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..load.window {
        let client = client.clone();
        let next = next.clone();
        let url = hook_url.to_owned();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= load.messages {
                    return anyhow::Ok(latencies);
                }
                let stanza = message(seq, load.senders);
                let body = serde_json::json!({
                    "to": "echo@bot.localhost", "from": format!("user{}@localhost/bench", seq % load.senders),
                    "kind": "message", "body": format!("m{seq}"), "stanza": stanza, "id": seq.to_string(), "type": "chat",
                });
                let begun = Instant::now();
                let response = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&body)?)
                    .send()
                    .await?;
                let reply: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
                anyhow::ensure!(reply.get("body").is_some(), "the hook gave no body");
                latencies.push(begun.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(load.messages);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(Measured {
        count: latencies.len(),
        errors: 0,
        elapsed: started.elapsed(),
        latencies,
        cpu_seconds: None,
        peak_rss_kib: None,
    })
}
