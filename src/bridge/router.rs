//! Decides, stanza by stanza, what happens to what the server sends: forward it to the hook
//! (through [`Delivery`]), answer it here ([`builtin`]), or drop it with a log line. It reads
//! the inbound channel one stanza at a time, so when delivery waits (for the queue's disk
//! writer, or for room to write a reply) it stops reading and the reader behind it stops
//! reading the socket.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::bridge::builtin;
use crate::bridge::delivery::Delivery;
use crate::bridge::outbox::Outbox;
use crate::config::Config;
use crate::xmpp::stanza::{Kind, Stanza};

pub struct Router {
    pub config: Arc<Config>,
    pub delivery: Delivery,
    pub outbox: Outbox,
}

/// What to do with one stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Forward,
    AnswerLocally,
    Drop(&'static str),
}

/// The routing rule of SPEC §2 and §2a.
pub fn route(stanza: &Stanza, config: &Config) -> Route {
    if stanza.from().is_none() {
        return Route::Drop("it has no `from`, so nobody could be answered");
    }
    if stanza.to().is_none() {
        return Route::Drop("it has no `to`");
    }
    let forwarded = match stanza.kind {
        Kind::Message => config.forwarded.message,
        Kind::Presence => config.forwarded.presence,
        Kind::Iq => config.forwarded.iq,
    };
    if forwarded {
        Route::Forward
    } else {
        Route::AnswerLocally
    }
}

impl Router {
    /// Routes stanzas until the inbound channel closes or `stop` is cancelled.
    pub async fn run(self, mut inbound: mpsc::Receiver<Stanza>, stop: CancellationToken) {
        loop {
            let stanza = tokio::select! {
                stanza = inbound.recv() => match stanza {
                    Some(stanza) => stanza,
                    None => return,
                },
                _ = stop.cancelled() => return,
            };
            match route(&stanza, &self.config) {
                Route::Forward => {
                    // Waiting for the queue's writer must not hold up a shutdown: SIGTERM drains
                    // what is in flight, it does not wait for room for more.
                    tokio::select! {
                        _ = self.delivery.submit(stanza) => {}
                        _ = stop.cancelled() => {
                            warn!("shutting down while delivery was full: one stanza read from the server was not delivered");
                            return;
                        }
                    }
                }
                Route::AnswerLocally => {
                    for reply in builtin::answer(&stanza, &self.config) {
                        self.outbox.send(reply).await;
                    }
                    debug!(
                        kind = stanza.kind.as_str(),
                        from = stanza.from(),
                        "answered locally"
                    );
                }
                Route::Drop(why) => {
                    warn!(kind = stanza.kind.as_str(), stanza = %stanza.raw, "stanza dropped: {why}")
                }
            }
        }
    }
}
