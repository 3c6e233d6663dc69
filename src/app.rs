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

use crate::admin::{ControlSocket, Running};
use crate::api::{ApiState, Listeners};
use crate::bridge::delivery::Delivery;
use crate::bridge::outbox::Outbox;
use crate::bridge::outgoing::Outgoing;
use crate::bridge::rooms::Rooms;
use crate::bridge::router::Router;
use crate::config::Config;
use crate::limits;
use crate::metrics::Metrics;
use crate::queue::{self, Direction, QueueError};
use crate::webhook::client::{ClientError, HookClient};
use crate::xmpp::codec::ReadLimits;
use crate::xmpp::session::{LinkState, Session};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Hook(#[from] ClientError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Api(std::io::Error),
}

/// Runs the component until `shutdown` completes, then stops it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let hook = HookClient::new(&config.webhook)?;
    let queue = queue::open(&config.queue).await?;
    let api_listeners = match &config.api {
        Some(api) => Some(Listeners::bind(api).await.map_err(StartError::Api)?),
        None => None,
    };
    let (written_tx, written_rx) = mpsc::unbounded_channel();
    let (inbound_tx, inbound_rx) = mpsc::channel(limits::INBOUND_QUEUE);
    let (outbound_tx, outbound_rx) = mpsc::channel(limits::OUTBOUND_QUEUE);
    let (state_tx, mut state_rx) = watch::channel(LinkState::Connecting);
    let stop_reading = CancellationToken::new();
    let finish = CancellationToken::new();
    let reading = Arc::new(tokio::sync::Mutex::new(()));
    let outbox = Outbox::new(config.clone(), outbound_tx, metrics.clone());
    let rooms = Rooms::new(config.clone(), outbox.clone());
    tokio::spawn({
        let rooms = rooms.clone();
        async move {
            while state_rx.changed().await.is_ok() {
                match *state_rx.borrow_and_update() {
                    LinkState::Up => rooms.link_up(),
                    _ => rooms.link_down(),
                }
            }
        }
    });

    let session = Session {
        config: config.clone(),
        inbound: inbound_tx,
        outbound: outbound_rx,
        greeting: rooms.greeting(),
        written: written_tx,
        state: state_tx.clone(),
        metrics: metrics.clone(),
        reading: reading.clone(),
        stop_reading: stop_reading.clone(),
        finish: finish.clone(),
    };
    let mut session_task = tokio::spawn(session.run());

    let delivery = Delivery::new(
        config.clone(),
        hook,
        outbox.clone(),
        queue.clone(),
        stop_reading.clone(),
        metrics.clone(),
    );
    let outgoing = Outgoing::new(
        outbox.clone(),
        queue.clone(),
        delivery.bounds(),
        delivery.pending_iqs(),
        ReadLimits {
            max_stanza_bytes: config.max_stanza_bytes,
            max_depth: config.max_depth,
        },
        written_rx,
    );
    if queue.durable() {
        let (to_hook, to_server): (Vec<_>, Vec<_>) = queue
            .pending()
            .await?
            .into_iter()
            .partition(|entry| entry.direction == Direction::ToHook);
        if !to_hook.is_empty() || !to_server.is_empty() {
            info!(
                for_the_hook = to_hook.len(),
                for_the_server = to_server.len(),
                "resuming the stanzas the queue holds"
            );
        }
        outgoing.resume(to_server);
        delivery.resume(to_hook);
    }
    if let Some(mut arrivals) = queue.arrivals() {
        let (delivery, outgoing) = (delivery.clone(), outgoing.clone());
        tokio::spawn(async move {
            while let Some(entries) = arrivals.recv().await {
                let (to_hook, to_server) = entries
                    .into_iter()
                    .partition(|entry| entry.direction == Direction::ToHook);
                outgoing.resume(to_server);
                delivery.resume(to_hook);
            }
        });
    }
    // Without the socket the component still works; `send` needs it, and `dead-letters` while
    // this instance runs.
    let control_task = match ControlSocket::bind(&config.queue.data_dir).await {
        Ok(socket) => Some(tokio::spawn(socket.serve(
            Running {
                config: config.clone(),
                queue: queue.clone(),
                delivery: delivery.clone(),
                outgoing: outgoing.clone(),
            },
            finish.clone(),
        ))),
        Err(error) => {
            warn!(
                "cannot listen on the control socket in {}: {error}; `send` will not work, and `dead-letters` only while this instance is stopped",
                config.queue.data_dir.display()
            );
            None
        }
    };
    let api_stop = CancellationToken::new();
    let api_task = api_listeners
        .zip(config.api.clone())
        .map(|(listeners, api)| {
            let state = ApiState {
                config: config.clone(),
                api: Arc::new(api),
                outgoing: outgoing.clone(),
                queue: queue.clone(),
                in_progress: Default::default(),
                rooms: rooms.clone(),
                metrics: metrics.clone(),
                bounds: delivery.bounds(),
            };
            tokio::spawn(listeners.serve(state, api_stop.clone()))
        });
    let router = Router {
        config: config.clone(),
        delivery: delivery.clone(),
        outbox,
        outgoing,
        rooms,
        metrics,
        reading,
    };
    let router_task = tokio::spawn(router.run(inbound_rx, stop_reading.clone()));

    info!(domain = %config.domain, server = %config.server, hook = %config.webhook.shown_url(), "component-http started");
    let supervisor = tokio::spawn(tell_systemd(state_tx.subscribe()));
    shutdown.await;
    supervisor.abort();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    info!("shutting down: no new stanzas are read; waiting for deliveries in flight");
    stop_reading.cancel();
    api_stop.cancel();
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
    if timeout_at(flush_until, queue.flush()).await.is_err() {
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
    if let Some(task) = api_task {
        task.abort();
    }
    info!("stopped");
    Ok(())
}

/// Under systemd (`Type=notify`): READY once the queue is open and the first connection attempt
/// has ended, either way (a server that is down is the link's business, not a failed start); then
/// a watchdog ping at half the interval systemd asks for, from this runtime, so a process whose
/// runtime hangs is restarted. Outside systemd both are no-ops.
async fn tell_systemd(mut link: watch::Receiver<LinkState>) {
    let _ = link.wait_for(|state| *state != LinkState::Connecting).await;
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("cannot tell systemd the component is ready: {error}");
    }
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        ticks.tick().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}
