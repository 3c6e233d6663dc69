//! The inbound HTTP API (README, "The HTTP API"): services send stanzas the other way. Off unless
//! `[api] listen` is set. This module owns the listeners, the routes and the error bodies (RFC
//! 9457 problem details); [`auth`] says who calls, [`compose`] turns bodies into stanzas,
//! [`stanzas`] handles the routes, and [`crate::bridge::outgoing`] sends.

pub(crate) mod auth;
pub(crate) mod compose;
pub(crate) mod idempotency;
pub(crate) mod observe;
pub(crate) mod openapi;
pub(crate) mod stanzas;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge::bounds::Bounds;
use crate::bridge::outgoing::Outgoing;
use crate::bridge::rooms::Rooms;
use crate::config::{ApiConfig, Config};
use crate::limits;
use crate::metrics::Metrics;
use crate::queue::Queue;

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) config: Arc<Config>,
    pub(crate) api: Arc<ApiConfig>,
    pub(crate) outgoing: Outgoing,
    /// Where answers are remembered by idempotency key.
    pub(crate) queue: Queue,
    pub(crate) in_progress: idempotency::InProgress,
    /// The rooms groupchat may be posted into.
    pub(crate) rooms: Rooms,
    pub(crate) metrics: Arc<Metrics>,
    /// What the queue holds, for the metrics and the status.
    pub(crate) bounds: Arc<Bounds>,
}

/// The API's listeners, bound before the component connects so that a taken port stops the start.
pub(crate) struct Listeners(Vec<TcpListener>);

impl Listeners {
    pub(crate) async fn bind(api: &ApiConfig) -> std::io::Result<Listeners> {
        let mut listeners = Vec::new();
        for address in &api.listen {
            let listener = listen_on(*address).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {address} for [api]: {e}"),
                )
            })?;
            info!(address = %listener.local_addr()?, "HTTP API listening");
            listeners.push(listener);
        }
        Ok(Listeners(listeners))
    }

    /// Serves until `stop` is cancelled; requests in progress then get up to the drain to end.
    pub(crate) async fn serve(self, state: ApiState, stop: CancellationToken) {
        let mut servers = tokio::task::JoinSet::new();
        servers.spawn({
            let (queue, stop) = (state.queue.clone(), stop.clone());
            async move {
                tokio::select! {
                    _ = idempotency::forget_expired(queue) => {}
                    _ = stop.cancelled() => {}
                }
            }
        });
        let app = routes(state);
        for listener in self.0 {
            let (app, stop) = (app.clone(), stop.clone());
            servers.spawn(async move {
                let server = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(error) = server.await {
                    warn!("HTTP API listener ended: {error}");
                }
            });
        }
        while servers.join_next().await.is_some() {}
    }
}

/// One listener of `[api] listen`, bound as the running instance binds it: `check` binds each
/// address this way (and drops it at once) to tell whether the start would succeed.
pub(crate) async fn listen_on(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v1/stanzas", post(stanzas::post_stanza))
        .route("/msg/{to}", post(stanzas::post_msg))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/status", get(observe::status))
        .route("/health", get(observe::health))
        .route("/metrics", get(observe::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::count_request,
        ))
        .fallback(observe::not_found)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits::API_REQUEST_READ_TIMEOUT + limits::API_IQ_TIMEOUT_MAX,
        ))
        .with_state(state)
}

/// An RFC 9457 problem: `detail` says what was wrong and what to do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    type_: &'static str,
    title: String,
    status: u16,
    /// What was wrong and what to do.
    detail: String,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            type_: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// A `503` that asks the client to come back.
    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(limits::API_RETRY_AFTER.as_secs()),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"component-http\", Basic realm=\"component-http\"",
                ),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
