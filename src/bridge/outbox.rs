//! The one way the bridge sends a stanza: check it ([`Outbound::check`]), then queue it for the
//! socket's writer. A refused stanza is logged with the reason and dropped; the link stays up.

use std::sync::Arc;

use minidom::Element;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Config;
use crate::xmpp::stanza::{Outbound, Stanza, StanzaError, error_reply};

#[derive(Clone)]
pub(crate) struct Outbox {
    config: Arc<Config>,
    queue: mpsc::Sender<Outbound>,
}

impl Outbox {
    pub(crate) fn new(config: Arc<Config>, queue: mpsc::Sender<Outbound>) -> Self {
        Self { config, queue }
    }

    /// Checks and queues `element`; waits while the writer's queue is full.
    pub(crate) async fn send(&self, element: Element) {
        match Outbound::check(element, &self.config.domain, self.config.max_stanza_bytes) {
            Ok(out) => {
                // The writer only goes away at shutdown, when there is nobody left to tell.
                let _ = self.queue.send(out).await;
            }
            Err(reason) => {
                warn!("reply not sent, the server would close the stream over it: {reason}")
            }
        }
    }

    /// Sends `error` back to the sender of `original`, unless `original` must not be answered.
    pub(crate) async fn bounce(&self, original: &Stanza, error: &StanzaError) {
        if let Some(reply) = error_reply(original, error, &self.config.domain) {
            self.send(reply).await;
        }
    }
}
