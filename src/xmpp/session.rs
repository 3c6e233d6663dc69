//! The link to the XMPP server: make a connection ([`crate::xmpp::connect`]), then read stanzas
//! into the router and write everything others send, with keepalives, until the link fails;
//! then reconnect forever with capped, jittered backoff (README, "The XMPP link").
//!
//! Per connection one task reads and one writes. The writer is the only code that touches the
//! socket's write half; everyone else sends it [`Outbound`] stanzas through one bounded channel
//! that outlives connections, so replies produced while the link is down wait there. The reader
//! hands stanzas to the router through a bounded channel and simply stops reading while that
//! channel is full: a slow hook turns into TCP backpressure on the server, never into memory.
//! The session knows nothing of what stanzas mean beyond its own keepalive pings.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::{Config, QueueBackend};
use crate::limits;
use crate::metrics::Metrics;
use crate::xmpp::codec::{Frame, NS_STREAMS};
use crate::xmpp::connect::{BoxedIo, FrameReader, Link, LinkError, connect, parse_stream_error};
use crate::xmpp::stanza::{Kind, Outbound, Stanza};
use crate::xmpp::write::{escape_attr, stream_error_xml};

/// Ids of the component's own keepalive pings; answers with these ids never reach the router.
const PING_ID_PREFIX: &str = "component-http-ping-";

/// What the rest of the process may know about the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    Connecting,
    Up,
    Down { reason: String },
}

/// Messages from a connection's reader to its writer.
enum Control {
    PingAnswered(String),
    Ended(LinkError),
}

/// The long-lived session: owns the outbound queue's receiving end across reconnects.
pub(crate) struct Session {
    pub(crate) config: Arc<Config>,
    /// Stanzas read from the server, towards the router.
    pub(crate) inbound: mpsc::Sender<Stanza>,
    /// Stanzas to write, from everyone.
    pub(crate) outbound: mpsc::Receiver<Outbound>,
    /// Written first on every new connection, before anything queued (the rooms' joins).
    pub(crate) greeting: Vec<Outbound>,
    /// The receipts of written stanzas that asked for one, a batch per write. Unbounded, but
    /// only stanzas the queue holds (within its bounds) ask for a receipt.
    pub(crate) written: mpsc::UnboundedSender<Vec<u64>>,
    pub(crate) state: watch::Sender<LinkState>,
    /// Counts what is written and follows the link's state.
    pub(crate) metrics: Arc<Metrics>,
    /// Held by the reader while it runs, so that at a stop the router can tell when every
    /// stanza read has been handed over.
    pub(crate) reading: Arc<tokio::sync::Mutex<()>>,
    /// Shutdown, first step: stop taking new stanzas from the server.
    pub(crate) stop_reading: CancellationToken,
    /// Shutdown, last step: write what is queued, close the stream, return.
    pub(crate) finish: CancellationToken,
}

enum Ended {
    Finished,
    Failed(LinkError),
}

impl Session {
    /// Runs until `finish` is cancelled or every outbound sender is gone.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(limits::RECONNECT_INITIAL, limits::RECONNECT_MAX);
        let mut unsent: VecDeque<Outbound> = VecDeque::new();
        loop {
            if self.finish.is_cancelled() {
                return;
            }
            self.state.send_replace(LinkState::Connecting);
            let outcome = match connect(&self.config).await {
                Ok(link) => {
                    info!(domain = %self.config.domain, server = %self.config.server, "component online");
                    // Fault injection for the tests of what a panic does to the process; debug
                    // builds only.
                    #[cfg(debug_assertions)]
                    if std::env::var_os("COMPONENT_HTTP_TEST_PANIC_ONLINE").is_some() {
                        panic!("injected fault: COMPONENT_HTTP_TEST_PANIC_ONLINE is set");
                    }
                    self.state.send_replace(LinkState::Up);
                    self.metrics.link_changed(true, None);
                    let since = Instant::now();
                    let outcome = self.serve(link, &mut unsent).await;
                    if since.elapsed() >= limits::RECONNECT_STABLE_AFTER {
                        backoff.reset();
                    }
                    outcome
                }
                Err(error) => Ended::Failed(error),
            };
            let error = match outcome {
                Ended::Finished => {
                    self.state.send_replace(LinkState::Down {
                        reason: "shut down".into(),
                    });
                    self.metrics.link_changed(false, Some("shut down".into()));
                    return;
                }
                Ended::Failed(error) => error,
            };
            // With a shared queue a second instance is a standby, not a mistake: it takes the
            // domain over soon after the serving one's connection ends (README, "Scaling out").
            let standby = error.is_conflict()
                && matches!(self.config.queue.backend, QueueBackend::Postgres(_));
            let delay = match error.configuration_advice() {
                Some(_) if standby => {
                    info!(server = %self.config.server, domain = %self.config.domain, "another instance serves the domain; waiting as its standby");
                    limits::STANDBY_RETRY
                }
                Some(advice) => {
                    error!(server = %self.config.server, domain = %self.config.domain, "{error}: {advice}");
                    limits::RECONNECT_AFTER_CONFIGURATION_ERROR
                }
                None => {
                    let delay = backoff.next_delay(&mut rand::rng());
                    warn!(server = %self.config.server, "XMPP link down: {error}; reconnecting in {delay:.1?}");
                    delay
                }
            };
            self.state.send_replace(LinkState::Down {
                reason: error.to_string(),
            });
            self.metrics.link_changed(false, Some(error.to_string()));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.finish.cancelled() => return,
            }
        }
    }

    async fn serve(&mut self, link: Link, unsent: &mut VecDeque<Outbound>) -> Ended {
        let (control_tx, control_rx) = mpsc::channel(8);
        let reader = tokio::spawn(read_loop(
            link.reader,
            self.inbound.clone(),
            control_tx,
            self.reading.clone(),
            self.stop_reading.clone(),
        ));
        let outcome = self.write_loop(link.writer, control_rx, unsent).await;
        reader.abort();
        outcome
    }

    async fn write_loop(
        &mut self,
        mut writer: WriteHalf<BoxedIo>,
        mut control: mpsc::Receiver<Control>,
        unsent: &mut VecDeque<Outbound>,
    ) -> Ended {
        let interval = self.config.keepalive_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_write = Instant::now();
        let mut ping: Option<(String, Instant)> = None;
        let mut ping_counter: u64 = 0;
        let ping_target = ping_target(&self.config.domain);
        let mut batch = Vec::with_capacity(limits::READ_CHUNK_BYTES);

        for out in self.greeting.iter().rev() {
            unsent.push_front(out.clone());
        }
        if !unsent.is_empty()
            && let Err(error) = self.write_batch(&mut writer, unsent, &mut batch).await
        {
            return Ended::Failed(error);
        }
        // After `stop_reading` the reader is gone on purpose; the writer goes on until `finish`.
        let mut reader_alive = true;
        loop {
            tokio::select! {
                biased;
                message = control.recv(), if reader_alive => match message {
                    Some(Control::PingAnswered(id)) => {
                        if ping.as_ref().is_some_and(|(sent, _)| *sent == id) {
                            debug!("keepalive ping answered");
                            ping = None;
                        }
                    }
                    Some(Control::Ended(error)) => {
                        // Our side of the stream ends too: with the error for what we could not
                        // read, or with the closing tag the server's own close asks for
                        // (RFC 6120 §4.4). Unsent stanzas stay for the next connection.
                        let last_words = match &error {
                            LinkError::Unreadable(codec_error) => Some(stream_error_xml(
                                codec_error.stream_condition(),
                                &codec_error.to_string(),
                            )),
                            LinkError::Closed => Some("</stream:stream>".to_owned()),
                            _ => None,
                        };
                        if let Some(xml) = last_words {
                            let _ = timeout(Duration::from_secs(1), writer.write_all(xml.as_bytes())).await;
                        }
                        return Ended::Failed(error);
                    }
                    None if self.stop_reading.is_cancelled() => reader_alive = false,
                    None => return Ended::Failed(LinkError::Closed),
                },
                _ = self.finish.cancelled() => {
                    while let Ok(out) = self.outbound.try_recv() {
                        unsent.push_back(out);
                    }
                    let _ = self.write_batch(&mut writer, unsent, &mut batch).await;
                    return close(writer).await;
                }
                out = self.outbound.recv() => {
                    let Some(out) = out else { return close(writer).await };
                    // Take what else is ready, so that a burst costs one write.
                    let mut batch_bytes = unsent.iter().map(|o| o.bytes.len()).sum::<usize>() + out.bytes.len();
                    unsent.push_back(out);
                    while batch_bytes < limits::WRITE_BATCH_BYTES {
                        match self.outbound.try_recv() {
                            Ok(out) => {
                                batch_bytes += out.bytes.len();
                                unsent.push_back(out);
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = self.write_batch(&mut writer, unsent, &mut batch).await {
                        return Ended::Failed(error);
                    }
                    last_write = Instant::now();
                }
                _ = tick.tick() => {
                    if let Some((_, sent_at)) = &ping
                        && sent_at.elapsed() >= interval * 2 {
                            return Ended::Failed(LinkError::DeadLink);
                        }
                    let mut keepalive = String::new();
                    if last_write.elapsed() >= interval {
                        keepalive.push(' ');
                    }
                    if ping.is_none() {
                        ping_counter += 1;
                        let id = format!("{PING_ID_PREFIX}{ping_counter}");
                        keepalive.push_str(&format!(
                            "<iq type='get' id='{id}' from='{}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                            escape_attr(&self.config.domain),
                            escape_attr(&ping_target),
                        ));
                        ping = Some((id, Instant::now()));
                    }
                    if !keepalive.is_empty() {
                        if let Err(error) = write_timed(&mut writer, keepalive.as_bytes()).await {
                            return Ended::Failed(error);
                        }
                        last_write = Instant::now();
                    }
                }
            }
        }
    }
}

impl Session {
    /// Writes queued stanzas and reports their receipts; on failure they stay queued for the
    /// next connection.
    async fn write_batch(
        &self,
        writer: &mut WriteHalf<BoxedIo>,
        unsent: &mut VecDeque<Outbound>,
        batch: &mut Vec<u8>,
    ) -> Result<(), LinkError> {
        batch.clear();
        for out in unsent.iter() {
            batch.extend_from_slice(out.bytes.as_bytes());
        }
        write_timed(writer, batch).await?;
        for out in unsent.iter() {
            self.metrics.sent(out.kind.as_str(), out.origin.as_str());
        }
        let receipts: Vec<u64> = unsent.drain(..).filter_map(|out| out.receipt).collect();
        if !receipts.is_empty() {
            let _ = self.written.send(receipts);
        }
        Ok(())
    }
}

async fn write_timed(writer: &mut WriteHalf<BoxedIo>, bytes: &[u8]) -> Result<(), LinkError> {
    timeout(limits::XMPP_WRITE_TIMEOUT, async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    .map_err(|_| LinkError::Timeout("writing to the server"))??;
    Ok(())
}

async fn close(mut writer: WriteHalf<BoxedIo>) -> Ended {
    let _ = timeout(Duration::from_secs(1), async {
        writer.write_all(b"</stream:stream>").await?;
        writer.shutdown().await
    })
    .await;
    Ended::Finished
}

/// Where keepalive pings go: the parent domain of the component (the server's own host for the
/// usual `bot.example.org` under `example.org`), else the component's domain itself. Any answer,
/// result or error, proves the link alive.
fn ping_target(domain: &str) -> String {
    match domain.split_once('.') {
        Some((_, parent)) if parent.contains('.') || parent == "localhost" => parent.to_owned(),
        _ => domain.to_owned(),
    }
}

async fn read_loop(
    mut reader: FrameReader,
    inbound: mpsc::Sender<Stanza>,
    control: mpsc::Sender<Control>,
    reading: Arc<tokio::sync::Mutex<()>>,
    stop_reading: CancellationToken,
) {
    let _reading = reading.lock_owned().await;
    let ended = loop {
        // The stop first: once it is signalled, no further stanza is taken from the socket.
        let frame = tokio::select! {
            biased;
            _ = stop_reading.cancelled() => return,
            frame = reader.next() => frame,
        };
        let read = match frame {
            Ok(Frame::Element(read)) => read,
            Ok(Frame::Open(_)) => continue,
            Ok(Frame::Close) => break LinkError::Closed,
            Err(error) => break error,
        };
        if read.element.is("error", NS_STREAMS) {
            break parse_stream_error(&read.element);
        }
        let name = read.element.name().to_owned();
        let Some(stanza) = Stanza::from_read(*read) else {
            warn!(element = %name, "ignoring a top-level element that is not a stanza");
            continue;
        };
        let kind = stanza.kind;
        if kind == Kind::Iq
            && matches!(stanza.type_(), Some("result" | "error"))
            && let Some(id) = stanza.id().filter(|id| id.starts_with(PING_ID_PREFIX))
        {
            let _ = control.send(Control::PingAnswered(id.to_owned())).await;
            continue;
        }
        debug!(
            kind = kind.as_str(),
            from = stanza.from(),
            to = stanza.to(),
            "stanza received"
        );
        tokio::select! {
            biased;
            room = inbound.reserve() => match room {
                Ok(room) => room.send(stanza),
                Err(_) => return,
            },
            _ = stop_reading.cancelled() => {
                // The router empties the channel at a stop: hand over what was read.
                if let Ok(Ok(room)) = timeout(limits::SHUTDOWN_HANDOVER, inbound.reserve()).await {
                    room.send(stanza);
                } else {
                    warn!(from = stanza.from(), "stopping: one stanza read from the server could not be handed over");
                }
                return;
            }
        }
    };
    let _ = control.send(Control::Ended(ended)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_go_to_the_parent_domain() {
        assert_eq!(ping_target("bot.example.org"), "example.org");
        assert_eq!(ping_target("bot.localhost"), "localhost");
        assert_eq!(ping_target("example.org"), "example.org");
        assert_eq!(ping_target("bot"), "bot");
    }
}
