//! The HTTP client that calls the hook: one keep-alive connection pool (HTTP/1.1 and HTTP/2),
//! connect and total timeouts, no redirects, a cap on the response body, rustls with the
//! system's roots or those of `webhook.tls_ca_file` (README, "Delivery"). It turns every call
//! into a [`HookOutcome`] and never fails.
//!
//! Every call carries the delivery's `webhook-id`; with signing configured, also
//! `webhook-timestamp` and `webhook-signature` over the exact body bytes sent (README, "Signed
//! calls").
//!
//! It is hyper's pooled client with a rustls connector and nothing between them and the
//! delivery: every layer of a general-purpose client (redirect policy, proxies, cookies, URL
//! parsing per call) is work per stanza this bridge does not need (BENCHMARKS.md, "Hot path").

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
    USER_AGENT as USER_AGENT_HEADER,
};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::WebhookConfig;
use crate::limits;
use crate::webhook::outcome::{HookOutcome, parse_retry_after};
use crate::webhook::signing::{self, Signer};

pub(crate) const USER_AGENT: &str = concat!("component-http/", env!("CARGO_PKG_VERSION"));

/// How long a pooled connection may stay idle before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct ClientError(String);

/// TCP, then TLS for `https://`, given up together after the connect timeout.
#[derive(Clone)]
struct Connector {
    https: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

type Connection = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Connection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.https.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                Err(elapsed) => Err(elapsed.into()),
            }
        })
    }
}

#[derive(Clone)]
pub(crate) struct HookClient {
    http: Client<Connector, Full<Bytes>>,
    /// A HEAD request has no body; a client of its own keeps the POST path monomorphic.
    probe: Client<Connector, Empty<Bytes>>,
    uri: Uri,
    /// The headers of every call: content type, user agent, `[webhook] headers`, credentials.
    headers: HeaderMap,
    /// The URL without credentials or query, for logs.
    shown_url: String,
    timeout: Duration,
    max_response_bytes: usize,
    signer: Option<Signer>,
}

impl HookClient {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let uri: Uri = config
            .url
            .as_str()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| ClientError(e.to_string()))?;
        let connector = connector(config)?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(limits::HOOK_POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(config.http2_prior_knowledge);
        Ok(Self {
            http: builder.build(connector.clone()),
            probe: builder.build(connector),
            uri,
            headers: default_headers(config)?,
            shown_url: config.shown_url(),
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
            signer: config.signing.clone(),
        })
    }

    /// The hook's URL as logs show it: without credentials or query.
    pub(crate) fn url(&self) -> &str {
        &self.shown_url
    }

    /// POSTs a JSON body to the hook as the delivery `webhook_id`, signed when a signer is
    /// configured.
    pub(crate) async fn post(&self, webhook_id: &str, body: Bytes) -> HookOutcome {
        let mut headers = self.headers.clone();
        // An id that is not a valid header value is an error of this call, not a panic.
        let Ok(id) = HeaderValue::from_str(webhook_id) else {
            return HookOutcome::ConnectFailure(format!(
                "the webhook-id {webhook_id:?} is not a valid header value"
            ));
        };
        headers.insert(signing::HEADER_ID, id);
        if let Some(signer) = &self.signer {
            // Signed right before sending, so the timestamp is as fresh as it can be for the
            // hook's replay window.
            let timestamp = signing::now_secs();
            let signature = signer.sign(webhook_id, timestamp, &body);
            headers.insert(signing::HEADER_TIMESTAMP, HeaderValue::from(timestamp));
            match HeaderValue::from_str(&signature) {
                Ok(value) => headers.insert(signing::HEADER_SIGNATURE, value),
                Err(_) => {
                    return HookOutcome::ConnectFailure(
                        "the signature is not a header value".into(),
                    );
                }
            };
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;
        match tokio::time::timeout(self.timeout, self.call(request)).await {
            Ok(outcome) => outcome,
            Err(_) => HookOutcome::Timeout,
        }
    }

    async fn call(&self, request: Request<Full<Bytes>>) -> HookOutcome {
        let response = match self.http.request(request).await {
            Ok(response) => response,
            Err(error) => return failure(&error),
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        match self.read_capped(response).await {
            Ok(Some(body)) => HookOutcome::Response {
                status,
                content_type,
                body,
                retry_after,
            },
            Ok(None) => HookOutcome::ResponseTooLarge {
                status,
                retry_after,
            },
            Err(error) => failure(&error),
        }
    }

    /// Sends a HEAD request, for `check`: any HTTP answer means the hook is reachable.
    pub(crate) async fn probe(&self) -> Result<u16, String> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::HEAD;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        match tokio::time::timeout(self.timeout, self.probe.request(request)).await {
            Ok(Ok(response)) => Ok(response.status().as_u16()),
            Ok(Err(error)) => Err(describe(&error)),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// The body, or `None` once it grows past the cap (the rest is not read).
    async fn read_capped(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Option<Bytes>, hyper::Error> {
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_response_bytes as u64) {
            return Ok(None);
        }
        let mut incoming = response.into_body();
        let mut body = BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            let Ok(chunk) = frame?.into_data() else {
                continue; // trailers
            };
            if body.len() + chunk.len() > self.max_response_bytes {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body.freeze()))
    }
}

/// TCP (no Nagle delay), then TLS for `https://` with the roots of `webhook.tls_ca_file` or
/// else the system's, offering HTTP/2 by ALPN; both within the connect timeout.
fn connector(config: &WebhookConfig) -> Result<Connector, ClientError> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let tls = crate::tls::client_config(config.tls_roots.as_ref())
        .map_err(|e| ClientError(format!("cannot load the system's TLS roots: {e}")))?;
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(Connector {
        https,
        timeout: config.connect_timeout,
    })
}

/// The headers every call carries. Credentials in the URL (`user:password@`) become a Basic
/// `Authorization` header, as clients do; the configuration refuses them beside
/// `webhook.authorization`.
fn default_headers(config: &WebhookConfig) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
    for (name, value) in &config.headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| ClientError(e.to_string()))?;
        let value = HeaderValue::from_str(value).map_err(|e| ClientError(e.to_string()))?;
        headers.insert(name, value);
    }
    let authorization = match &config.authorization {
        Some(authorization) => Some(authorization.expose().to_owned()),
        None if !config.url.username().is_empty() || config.url.password().is_some() => {
            Some(basic_authorization(&config.url))
        }
        None => None,
    };
    if let Some(authorization) = authorization {
        let mut value = HeaderValue::from_str(&authorization)
            .map_err(|_| ClientError("webhook.authorization is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

/// `Basic base64(user:password)` from the URL's percent-decoded credentials.
fn basic_authorization(url: &url::Url) -> String {
    use base64::Engine as _;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or(""))
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

fn failure(error: &(dyn std::error::Error + 'static)) -> HookOutcome {
    if is_timeout(error) {
        HookOutcome::Timeout
    } else if is_malformed_response(error) {
        HookOutcome::Malformed(describe(error))
    } else {
        HookOutcome::ConnectFailure(describe(error))
    }
}

/// Whether the connect timeout ran out (the total timeout is handled around the call).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|cause| cause.is::<tokio::time::error::Elapsed>())
}

/// Whether the hook answered, but not with valid HTTP: a response the HTTP parser refused
/// (a bad status line, too many headers, headers too large).
fn is_malformed_response(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error)
        .find_map(|cause| cause.downcast_ref::<hyper::Error>())
        .is_some_and(|http| http.is_parse() || http.is_parse_status())
}

/// The error and its causes, outermost first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |cause| cause.source())
}

/// The error with its causes. None of them carries the URL, which may hold credentials.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    causes(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
