//! What operators and their monitoring read of a running instance (README, "Observability"):
//! `GET /health` (no token), `GET /metrics` (Prometheus text, no token) and `GET /v1/status`
//! (token); and the count of every API request by route and status.

use std::time::{Duration, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::warn;

use crate::api::{ApiState, Problem, auth};
use crate::metrics::QueueSnapshot;
use crate::queue;

/// `/health`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `unavailable` with the reason.
    status: &'static str,
    /// What is wrong: the link down since when and why, the queue not writable and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Whether the component can do its work: `200` when the XMPP link is up and the queue
/// writable, else `503` with the reason.
#[utoipa::path(
    get,
    path = "/health",
    security(()),
    responses(
        (status = 200, description = "linked and writable", body = Health),
        (status = 503, description = "the link is down or the queue not writable", body = Health),
    )
)]
pub(crate) async fn health(State(state): State<ApiState>) -> Response {
    let link = state.metrics.link();
    let mut reasons = Vec::new();
    if !link.up {
        reasons.push(format!(
            "xmpp link down since {}: {}",
            humantime::format_rfc3339_seconds(link.since),
            link.reason.unwrap_or_default()
        ));
    }
    if let Some(why) = state.queue.unwritable() {
        reasons.push(format!("queue not writable: {why}"));
    }
    let (status, health) = if reasons.is_empty() {
        (
            StatusCode::OK,
            Health {
                status: "ok",
                reason: None,
            },
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "unavailable",
                reason: Some(reasons.join("; ")),
            },
        )
    };
    (status, axum::Json(health)).into_response()
}

/// Prometheus' text format (names under `component_http_`).
#[utoipa::path(
    get,
    path = "/metrics",
    security(()),
    responses((status = 200, description = "the metrics", body = String, content_type = "text/plain"))
)]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.metrics.encode(queue_snapshot(&state).await);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `/v1/status`: the state of one instance at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Status {
    version: &'static str,
    uptime_seconds: u64,
    domain: String,
    server: String,
    link: LinkInfo,
    webhook: WebhookInfo,
    queue: QueueInfo,
    rooms: RoomsInfo,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LinkInfo {
    up: bool,
    /// When the link came up or went down (RFC 3339).
    since: String,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookInfo {
    /// Without credentials or query.
    url: String,
    /// The last call that got no 2xx, if any.
    last_error: Option<LastError>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LastError {
    /// RFC 3339.
    time: String,
    /// The HTTP status, when the hook answered.
    status: Option<u16>,
    message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct QueueInfo {
    /// `durable`, `memory` or `postgres`: the `queue` setting.
    kind: &'static str,
    /// Stanzas held until their final outcome.
    pending: usize,
    /// Of those, the ones waiting for a retry.
    retrying: usize,
    dead_letters: usize,
    /// Age of the oldest stored stanza waiting, if any.
    oldest_pending_seconds: Option<u64>,
    bytes: usize,
    max_stanzas: usize,
    max_bytes: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RoomsInfo {
    configured: Vec<String>,
    joined: Vec<String>,
}

/// The state of this instance: link, hook, queue, rooms (token required).
#[utoipa::path(
    get,
    path = "/v1/status",
    responses(
        (status = 200, description = "the state of this instance", body = Status),
        (status = 401, description = "no or unknown token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn status(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(error) = auth::authenticate(&headers, &state.api.tokens) {
        return Problem::new(StatusCode::UNAUTHORIZED, error.detail()).into_response();
    }
    let snapshot = queue_snapshot(&state).await;
    let link = state.metrics.link();
    let config = &state.config;
    axum::Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.metrics.uptime().as_secs(),
        domain: config.domain.clone(),
        server: config.server.to_string(),
        link: LinkInfo {
            up: link.up,
            since: rfc3339(link.since),
            reason: link.reason,
        },
        webhook: WebhookInfo {
            url: config.webhook.shown_url(),
            last_error: state.metrics.last_hook_error().map(|error| LastError {
                time: rfc3339(error.time),
                status: error.status,
                message: error.message,
            }),
        },
        queue: QueueInfo {
            kind: config.queue.backend.name(),
            pending: snapshot.stanzas,
            retrying: state.metrics.retrying_now(),
            dead_letters: snapshot.dead_letters,
            oldest_pending_seconds: snapshot.oldest_pending.map(|age| age.as_secs()),
            bytes: snapshot.bytes,
            max_stanzas: snapshot.max_stanzas,
            max_bytes: snapshot.max_bytes,
        },
        rooms: RoomsInfo {
            configured: config.rooms.iter().map(|room| room.jid.clone()).collect(),
            joined: state.rooms.joined(),
        },
    })
    .into_response()
}

/// Counts each request to a route by its route and status.
pub(crate) async fn count_request(
    State(state): State<ApiState>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    state
        .metrics
        .api_request(route.as_str(), response.status().as_u16());
    response
}

/// What no route answers: counted under the route `unmatched`.
pub(crate) async fn not_found(State(state): State<ApiState>) -> Problem {
    state
        .metrics
        .api_request("unmatched", StatusCode::NOT_FOUND.as_u16());
    Problem::new(
        StatusCode::NOT_FOUND,
        "no such route: the API has POST /v1/stanzas, POST /msg/{to}, GET /v1/status, GET /health, GET /metrics and GET /v1/openapi.json",
    )
}

/// The queue as the metrics and the status show it: what the bounds hold, and what the queue
/// itself says of its dead letters and oldest stanza.
async fn queue_snapshot(state: &ApiState) -> QueueSnapshot {
    let held = state.bounds.held();
    let stats = state.queue.stats().await.unwrap_or_else(|error| {
        warn!("cannot read the queue's counts: {error}");
        queue::QueueStats::default()
    });
    QueueSnapshot {
        stanzas: held.stanzas,
        bytes: held.bytes,
        max_stanzas: state.config.queue.max_stanzas,
        max_bytes: state.config.queue.max_bytes,
        dead_letters: stats.dead_letters,
        oldest_pending: stats
            .oldest_received_ms
            .map(|ms| Duration::from_millis(queue::now_ms().saturating_sub(ms))),
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
