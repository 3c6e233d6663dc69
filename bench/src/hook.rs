//! The webhook the benchmark's bridge calls: a keep-alive HTTP/1.1 and HTTP/2 (prior knowledge)
//! server (hyper) answering the echo bot's JSON, immediately, after a fixed delay, never (a
//! stalled hook), or, for the soak, switchable at run time between the echo and `503`, with a
//! record of every call.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

#[derive(Clone)]
pub enum HookBehaviour {
    Fast,
    Delay(Duration),
    Stalled,
    /// Answers at once, with the echo or with `503` as the switch says, and records the call.
    Switchable(Arc<Switch>),
}

/// The soak's hook: whether it currently fails, and what it has seen, per stanza id (the JSON
/// `id` field, a number in the soak).
#[derive(Default)]
pub struct Switch {
    failing: AtomicBool,
    calls: Mutex<HashMap<u64, Calls>>,
    answered: AtomicU64,
    refused: AtomicU64,
}

/// The calls the hook received for one stanza.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    /// Answered 200 with the echo.
    pub answered: u32,
    /// Answered 503.
    pub refused: u32,
    /// The distinct `webhook-id` header values of those calls (a missing header counts as "").
    pub webhook_ids: Vec<String>,
}

impl Switch {
    /// From now on, answer `503` (true) or the echo (false).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Calls answered with the echo and with `503` so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.answered.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// What the hook has seen so far, per stanza id.
    pub fn calls(&self) -> HashMap<u64, Calls> {
        self.calls
            .lock()
            .map(|calls| calls.clone())
            .unwrap_or_default()
    }

    /// Records one call and says whether to answer it with the echo.
    fn record(&self, stanza_id: Option<u64>, webhook_id: &str) -> bool {
        let failing = self.failing.load(Ordering::SeqCst);
        if failing {
            self.refused.fetch_add(1, Ordering::Relaxed);
        } else {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(id), Ok(mut calls)) = (stanza_id, self.calls.lock()) {
            let calls = calls.entry(id).or_default();
            if failing {
                calls.refused += 1;
            } else {
                calls.answered += 1;
            }
            if !calls.webhook_ids.iter().any(|known| known == webhook_id) {
                calls.webhook_ids.push(webhook_id.to_owned());
            }
        }
        !failing
    }
}

/// Starts the hook on 127.0.0.1:0 and returns its address; it runs until the process ends.
pub async fn start(behaviour: HookBehaviour) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| answer(request, behaviour.clone()));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new());
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(1024);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    behaviour: HookBehaviour,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Only the soak's hook looks at the header: the other rows pay nothing for it.
    let webhook_id = match behaviour {
        HookBehaviour::Switchable(_) => request
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
    match behaviour {
        HookBehaviour::Fast => {}
        HookBehaviour::Delay(delay) => tokio::time::sleep(delay).await,
        HookBehaviour::Stalled => std::future::pending::<()>().await,
        HookBehaviour::Switchable(switch) => {
            let stanza_id = json
                .as_ref()
                .and_then(|v| v.get("id")?.as_str()?.parse().ok());
            if !switch.record(stanza_id, &webhook_id) {
                let response = Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("Content-Type", "text/plain")
                    .body(Full::new(Bytes::from_static(
                        b"soak: hook down for a while",
                    )))
                    .unwrap_or_default();
                return Ok(response);
            }
        }
    }
    let received = json
        .as_ref()
        .and_then(|v| v.get("body").and_then(|b| b.as_str()))
        .unwrap_or_default();
    let reply = serde_json::json!({ "body": format!("Did you say {received}?") }).to_string();
    let response = Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(reply)))
        .unwrap_or_default();
    Ok(response)
}
