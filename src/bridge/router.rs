//! Decides, stanza by stanza, what happens to what the server sends: forward it to the hook
//! (through [`Delivery`]), answer it here ([`builtin`]), or drop it with a log line. It reads
//! the inbound channel one stanza at a time, so when delivery waits (for the queue's disk
//! writer, or for room to write a reply) it stops reading and the reader behind it stops
//! reading the socket. At a stop it still handles every stanza the reader had read: it waits
//! until no reader holds the session's reading lock, then empties the channel.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::bridge::builtin;
use crate::bridge::delivery::Delivery;
use crate::bridge::outbox::Outbox;
use crate::bridge::outgoing::Outgoing;
use crate::bridge::rooms::Rooms;
use crate::config::Config;
use crate::logging::excerpt;
use crate::metrics::{Metrics, refused};
use crate::xmpp::stanza::{Kind, Origin, Stanza};

pub(crate) struct Router {
    pub(crate) config: Arc<Config>,
    pub(crate) delivery: Delivery,
    pub(crate) outbox: Outbox,
    /// Waits for the answers of iq sent through the API.
    pub(crate) outgoing: Outgoing,
    /// Takes the presence of the joined rooms.
    pub(crate) rooms: Rooms,
    pub(crate) metrics: Arc<Metrics>,
    /// Held by the session's reader while it runs (see [`crate::xmpp::session::Session`]).
    pub(crate) reading: Arc<Mutex<()>>,
}

/// What to do with one stanza.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Forward,
    AnswerLocally,
    Drop(&'static str),
}

/// The routing rule (README, "The webhook contract" and "What the component answers itself").
pub(crate) fn route(stanza: &Stanza, config: &Config) -> Route {
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
    /// Routes stanzas until `stop` is cancelled and the stanzas read before it are handled.
    pub(crate) async fn run(self, mut inbound: mpsc::Receiver<Stanza>, stop: CancellationToken) {
        loop {
            tokio::select! {
                stanza = inbound.recv() => match stanza {
                    Some(stanza) => self.handle(stanza).await,
                    None => return,
                },
                _ = stop.cancelled() => break,
            }
        }
        // The reader stops at the same signal, handing over the stanza it holds; once it has
        // let go of the reading lock, nothing more can arrive.
        loop {
            tokio::select! {
                biased;
                stanza = inbound.recv() => match stanza {
                    Some(stanza) => self.handle(stanza).await,
                    None => return,
                },
                _ = self.reading.lock() => break,
            }
        }
        while let Ok(stanza) = inbound.try_recv() {
            self.handle(stanza).await;
        }
    }

    async fn handle(&self, stanza: Stanza) {
        self.metrics.received(stanza.kind.as_str());
        let Some(stanza) = self.rooms.take(stanza) else {
            return;
        };
        let stanza =
            if stanza.kind == Kind::Iq && matches!(stanza.type_(), Some("result" | "error")) {
                match self.outgoing.take_answer(stanza) {
                    Some(stanza) => stanza,
                    None => return,
                }
            } else {
                stanza
            };
        match route(&stanza, &self.config) {
            Route::Forward => self.delivery.submit(stanza).await,
            Route::AnswerLocally => {
                for reply in builtin::answer(&stanza, &self.config) {
                    self.outbox.send(reply, Origin::Local).await;
                }
                debug!(
                    kind = stanza.kind.as_str(),
                    from = stanza.from(),
                    "answered locally"
                );
            }
            Route::Drop(why) => {
                self.metrics.refused(refused::UNADDRESSED);
                warn!(kind = stanza.kind.as_str(), stanza = %excerpt(&stanza.raw), "stanza dropped: {why}")
            }
        }
    }
}
