//! The webhook the benchmark's bridge calls: a keep-alive HTTP/1.1 and HTTP/2 (prior knowledge)
//! server (hyper) answering the echo bot's JSON, immediately, after a fixed delay, or never (a
//! stalled hook).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy)]
pub enum HookBehaviour {
    Fast,
    Delay(Duration),
    Stalled,
}

/// Starts the hook on 127.0.0.1:0 and returns its address; it runs until the process ends.
pub async fn start(behaviour: HookBehaviour) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| answer(request, behaviour));
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
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match behaviour {
        HookBehaviour::Fast => {}
        HookBehaviour::Delay(delay) => tokio::time::sleep(delay).await,
        HookBehaviour::Stalled => std::future::pending::<()>().await,
    }
    let received = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("body").and_then(|b| b.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let reply = serde_json::json!({ "body": format!("Did you say {received}?") }).to_string();
    let response = Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(reply)))
        .unwrap_or_default();
    Ok(response)
}
