//! The one way the bridge sends a stanza: check it ([`Outbound::check`]), then queue it for the
//! socket's writer. A refused reply is logged with the reason and dropped; the link stays up.
//! Replies wait for room in the writer's queue (that is backpressure on the hook calls); the API
//! waits a bounded time ([`Outbox::send_within`]) and tells its client when there is none.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Config;
use crate::metrics::{Metrics, refused};
use crate::xmpp::stanza::{Origin, Outbound, OutboundError, Stanza, StanzaError, error_reply};

/// The writer's queue stayed full for the whole wait: the link is down or the server slow.
#[derive(Debug)]
pub(crate) struct WriterBusy;

#[derive(Clone)]
pub(crate) struct Outbox {
    config: Arc<Config>,
    queue: mpsc::Sender<Outbound>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    pub(crate) fn new(
        config: Arc<Config>,
        queue: mpsc::Sender<Outbound>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            queue,
            metrics,
        }
    }

    /// Checks `element` as everything sent must be: what the server would close the stream
    /// over is refused (and counted).
    pub(crate) fn check(
        &self,
        element: Element,
        origin: Origin,
    ) -> Result<Outbound, OutboundError> {
        let checked = Outbound::check(element, &self.config.domain, self.config.max_stanza_bytes);
        match checked {
            Ok(mut out) => {
                out.origin = origin;
                Ok(out)
            }
            Err(reason) => {
                self.metrics.refused(refused::OUTBOUND_CHECK);
                Err(reason)
            }
        }
    }

    /// Checks and queues `element`; waits while the writer's queue is full.
    pub(crate) async fn send(&self, element: Element, origin: Origin) {
        match self.check(element, origin) {
            Ok(out) => self.send_checked(out).await,
            Err(reason) => {
                warn!("reply not sent, the server would close the stream over it: {reason}")
            }
        }
    }

    /// Queues a checked stanza; waits while the writer's queue is full.
    pub(crate) async fn send_checked(&self, out: Outbound) {
        // The writer only goes away at shutdown, when there is nobody left to tell.
        let _ = self.queue.send(out).await;
    }

    /// Queues a checked stanza if the writer's queue has room within `wait`.
    pub(crate) async fn send_within(
        &self,
        out: Outbound,
        wait: Duration,
    ) -> Result<(), WriterBusy> {
        match tokio::time::timeout(wait, self.queue.reserve()).await {
            Ok(Ok(room)) => {
                room.send(out);
                Ok(())
            }
            _ => Err(WriterBusy),
        }
    }

    /// Sends `error` back to the sender of `original`, unless `original` must not be answered.
    pub(crate) async fn bounce(&self, original: &Stanza, error: &StanzaError) {
        if let Some(reply) = error_reply(original, error, &self.config.domain) {
            self.send(reply, Origin::Local).await;
        }
    }
}
