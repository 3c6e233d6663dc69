//! Builds the pipeline of tasks (session → router → delivery → outbox → session's writer),
//! opens the durable queue and resumes what it holds, runs it all, and shuts it down in order:
//! stop reading, drain the hook calls in flight (up to [`limits::SHUTDOWN_DRAIN`]), commit the
//! queue, then flush the writer and close the stream.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge::delivery::Delivery;
use crate::bridge::outbox::Outbox;
use crate::bridge::router::Router;
use crate::config::Config;
use crate::limits;
use crate::queue::control::ControlSocket;
use crate::queue::store::{Store, StoreError};
use crate::webhook::client::{ClientError, HookClient};
use crate::xmpp::session::{LinkState, Session};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Hook(#[from] ClientError),
    #[error(transparent)]
    Queue(#[from] StoreError),
}

/// Runs the component until `shutdown` completes, then stops it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let config = Arc::new(config);
    let hook = HookClient::new(&config.webhook)?;
    let store = if config.queue.durable {
        Some(Store::open(&config.queue.data_dir)?)
    } else {
        None
    };
    let (inbound_tx, inbound_rx) = mpsc::channel(limits::INBOUND_QUEUE);
    let (outbound_tx, outbound_rx) = mpsc::channel(limits::OUTBOUND_QUEUE);
    let (state_tx, _state_rx) = watch::channel(LinkState::Connecting);
    let stop_reading = CancellationToken::new();
    let finish = CancellationToken::new();

    let session = Session {
        config: config.clone(),
        inbound: inbound_tx,
        outbound: outbound_rx,
        state: state_tx,
        stop_reading: stop_reading.clone(),
        finish: finish.clone(),
    };
    let session_task = tokio::spawn(session.run());

    let outbox = Outbox::new(config.clone(), outbound_tx);
    let delivery = Delivery::new(
        config.clone(),
        hook,
        outbox.clone(),
        store.clone(),
        stop_reading.clone(),
    );
    let mut control_task = None;
    if let Some(store) = &store {
        let waiting = store.pending()?;
        if !waiting.is_empty() {
            info!(
                stanzas = waiting.len(),
                "resuming the stanzas the queue holds"
            );
        }
        delivery.resume(waiting);
        // Without the socket the component still works; only `dead-letters` needs it, and only
        // while this instance runs.
        match ControlSocket::bind(&config.queue.data_dir) {
            Ok(socket) => {
                control_task = Some(tokio::spawn(socket.serve(
                    store.clone(),
                    delivery.clone(),
                    finish.clone(),
                )))
            }
            Err(error) => warn!(
                "cannot listen on the control socket in {}: {error}; `dead-letters` commands will work only while this instance is stopped",
                config.queue.data_dir.display()
            ),
        }
    }
    let router = Router {
        config: config.clone(),
        delivery: delivery.clone(),
        outbox,
    };
    let router_task = tokio::spawn(router.run(inbound_rx, stop_reading.clone()));

    info!(domain = %config.domain, server = %config.server, hook = %config.webhook.url, "component-http started");
    shutdown.await;
    info!("shutting down: no new stanzas are read; waiting for deliveries in flight");
    stop_reading.cancel();
    let _ = router_task.await;
    if !delivery.drain(limits::SHUTDOWN_DRAIN).await {
        warn!(
            "deliveries still in flight after {:?} were abandoned",
            limits::SHUTDOWN_DRAIN
        );
    }
    if let Some(store) = &store {
        store.flush().await;
    }
    finish.cancel();
    let _ = session_task.await;
    if let Some(task) = control_task {
        let _ = task.await;
    }
    info!("stopped");
    Ok(())
}
