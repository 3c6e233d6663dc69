//! `Idempotency-Key` (README, "The HTTP API"): a repeat of a request with the same key and token
//! within 24 hours gets the first answer again and sends nothing. Answers are remembered in the
//! queue (so across restarts with the durable queue); an accepted message or presence is
//! remembered in the same commit as the stanza itself, so a crash cannot separate the two. Only
//! successful answers are remembered: a client retrying after a `503` wants the retry to act.
//! A repeat that arrives while the first is still being handled gets `409`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};

use crate::api::Problem;
use crate::limits;
use crate::queue::{Queue, Remembered, now_ms};

const HEADER: &str = "idempotency-key";

/// The keys of requests being handled.
#[derive(Clone, Default)]
pub(crate) struct InProgress(Arc<Mutex<HashSet<String>>>);

/// A request's claim on its key; released when the request ends.
pub(crate) struct Claim {
    in_progress: InProgress,
    pub(crate) key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.in_progress.lock().remove(&self.key);
    }
}

impl InProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a request with an `Idempotency-Key` is to do.
pub(crate) enum Start {
    /// Go on, holding the claim; remember the answer under it.
    Fresh(Claim),
    /// Answer this, as the first request was answered.
    Repeat(Remembered),
}

/// Looks the request's key up; `None` when it carries none.
pub(crate) async fn start(
    headers: &HeaderMap,
    token: &str,
    queue: &Queue,
    in_progress: &InProgress,
) -> Result<Option<Start>, Problem> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= limits::IDEMPOTENCY_KEY_MAX_BYTES => key,
        _ => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Idempotency-Key must be 1 to {} visible ASCII characters, e.g. a UUID",
                    limits::IDEMPOTENCY_KEY_MAX_BYTES
                ),
            ));
        }
    };
    // Keys are per token: the name cannot hold a newline, so the pair is unambiguous.
    let key = format!("{token}\n{key}");
    if !in_progress.lock().insert(key.clone()) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "a request with this Idempotency-Key is still being handled; repeat it once that one is answered",
        ));
    }
    let claim = Claim {
        in_progress: in_progress.clone(),
        key,
    };
    match queue.recall(&claim.key).await {
        Ok(Some(remembered)) => Ok(Some(Start::Repeat(remembered))),
        Ok(None) => Ok(Some(Start::Fresh(claim))),
        Err(error) => Err(Problem::unavailable(format!(
            "the queue cannot be read to look the Idempotency-Key up ({error}); try again later"
        ))),
    }
}

/// Forgets expired answers now and then every [`limits::IDEMPOTENCY_PURGE_INTERVAL`].
pub(crate) async fn forget_expired(queue: Queue) {
    let mut every = tokio::time::interval(limits::IDEMPOTENCY_PURGE_INTERVAL);
    loop {
        every.tick().await;
        queue.forget_expired(now_ms()).await;
    }
}

/// The record of an answer to remember under `claim`.
pub(crate) fn record(claim: &Claim, status: StatusCode, body: String) -> Remembered {
    Remembered {
        key: claim.key.clone(),
        expires_ms: now_ms() + limits::IDEMPOTENCY_TTL.as_millis() as u64,
        status: status.as_u16(),
        body,
    }
}
