//! Builds the pipeline of tasks (session → router → delivery → outbox → session's writer),
//! opens the durable queue and resumes what it holds, runs it all, and shuts it down in order:
//! stop reading and handle what was read, drain the hook calls in flight (up to
//! [`limits::SHUTDOWN_DRAIN`]), then commit the queue, flush the writer and close the stream
//! (up to [`limits::SHUTDOWN_FLUSH`]). Every step has a deadline, so no peer can hold a stop up.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::ControlSocket;
use crate::bridge::delivery::Delivery;
use crate::bridge::outbox::Outbox;
use crate::bridge::router::Router;
use crate::config::Config;
use crate::limits;
use crate::queue::{self, QueueError};
use crate::webhook::client::{ClientError, HookClient};
use crate::xmpp::session::{LinkState, Session};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Hook(#[from] ClientError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Runs the component until `shutdown` completes, then stops it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let config = Arc::new(config);
    let hook = HookClient::new(&config.webhook)?;
    let queue = queue::open(&config.queue)?;
    let (inbound_tx, inbound_rx) = mpsc::channel(limits::INBOUND_QUEUE);
    let (outbound_tx, outbound_rx) = mpsc::channel(limits::OUTBOUND_QUEUE);
    let (state_tx, _state_rx) = watch::channel(LinkState::Connecting);
    let stop_reading = CancellationToken::new();
    let finish = CancellationToken::new();
    let reading = Arc::new(tokio::sync::Mutex::new(()));

    let session = Session {
        config: config.clone(),
        inbound: inbound_tx,
        outbound: outbound_rx,
        state: state_tx,
        reading: reading.clone(),
        stop_reading: stop_reading.clone(),
        finish: finish.clone(),
    };
    let mut session_task = tokio::spawn(session.run());

    let outbox = Outbox::new(config.clone(), outbound_tx);
    let delivery = Delivery::new(
        config.clone(),
        hook,
        outbox.clone(),
        queue.clone(),
        stop_reading.clone(),
    );
    let mut control_task = None;
    if queue.durable() {
        let waiting = queue.pending().await?;
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
                    queue.clone(),
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
        reading,
    };
    let router_task = tokio::spawn(router.run(inbound_rx, stop_reading.clone()));

    info!(domain = %config.domain, server = %config.server, hook = %config.webhook.shown_url(), "component-http started");
    shutdown.await;
    info!("shutting down: no new stanzas are read; waiting for deliveries in flight");
    stop_reading.cancel();
    let drain_until = Instant::now() + limits::SHUTDOWN_DRAIN;
    if timeout_at(drain_until, router_task).await.is_err() {
        warn!(
            "stanzas read from the server could not be handed to delivery within {:?}",
            limits::SHUTDOWN_DRAIN
        );
    }
    if !delivery
        .drain(drain_until.saturating_duration_since(Instant::now()))
        .await
    {
        warn!(
            "deliveries still in flight after {:?} were abandoned",
            limits::SHUTDOWN_DRAIN
        );
    }
    let flush_until = Instant::now() + limits::SHUTDOWN_FLUSH;
    if timeout_at(flush_until, queue.flush()).await.is_err()
    {
        warn!("the queue file did not confirm its last commit in time");
    }
    finish.cancel();
    if timeout_at(flush_until, &mut session_task).await.is_err() {
        session_task.abort();
        warn!(
            "the XMPP server did not take the last replies within {:?}; they are not sent",
            limits::SHUTDOWN_FLUSH
        );
    }
    if let Some(task) = control_task {
        task.abort();
    }
    info!("stopped");
    Ok(())
}
