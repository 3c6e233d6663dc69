//! The HTTP client that calls the hook: one keep-alive connection pool (HTTP/1.1 and HTTP/2),
//! connect and total timeouts, no redirects, a cap on the response body, rustls with the
//! system's roots (README, "Delivery"). It turns every call into a [`HookOutcome`] and never fails.
//!
//! Every call carries the delivery's `webhook-id`; with signing configured, also
//! `webhook-timestamp` and `webhook-signature` over the exact body bytes sent (README, "Signed
//! calls").

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};

use crate::config::WebhookConfig;
use crate::limits;
use crate::webhook::outcome::{HookOutcome, parse_retry_after};
use crate::webhook::signing::{self, Signer};

pub(crate) const USER_AGENT: &str = concat!("component-http/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct ClientError(String);

#[derive(Clone)]
pub(crate) struct HookClient {
    http: reqwest::Client,
    url: reqwest::Url,
    /// The URL without credentials or query, for logs.
    shown_url: String,
    max_response_bytes: usize,
    signer: Option<Signer>,
}

impl HookClient {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| ClientError(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| ClientError(e.to_string()))?;
            headers.insert(name, value);
        }
        if let Some(authorization) = &config.authorization {
            let mut value = HeaderValue::from_str(authorization.expose()).map_err(|_| {
                ClientError("webhook.authorization is not a valid header value".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder();
        if config.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_max_idle_per_host(limits::HOOK_POOL_IDLE_PER_HOST)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Self {
            http,
            url: config.url.clone(),
            shown_url: config.shown_url(),
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
        let mut request = self
            .http
            .post(self.url.clone())
            .header(signing::HEADER_ID, webhook_id);
        if let Some(signer) = &self.signer {
            // Signed right before sending, so the timestamp is as fresh as it can be for the
            // hook's replay window.
            let timestamp = signing::now_secs();
            request = request.header(signing::HEADER_TIMESTAMP, timestamp).header(
                signing::HEADER_SIGNATURE,
                signer.sign(webhook_id, timestamp, &body),
            );
        }
        // An id that is not a valid header value surfaces here as a request error, not a panic.
        let response = match request.body(body).send().await {
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
        match self.http.head(self.url.clone()).send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(error) => Err(describe(&error)),
        }
    }

    /// The body, or `None` once it grows past the cap (the rest is not read).
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
    ) -> Result<Option<Bytes>, reqwest::Error> {
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            return Ok(None);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body.freeze()))
    }
}

fn failure(error: &reqwest::Error) -> HookOutcome {
    if error.is_timeout() {
        HookOutcome::Timeout
    } else if is_malformed_response(error) {
        HookOutcome::Malformed(describe(error))
    } else {
        HookOutcome::ConnectFailure(describe(error))
    }
}

/// Whether the hook answered, but not with valid HTTP: a response the HTTP parser refused
/// (a bad status line, too many headers, headers too large).
fn is_malformed_response(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(http) = cause.downcast_ref::<hyper::Error>() {
            return http.is_parse() || http.is_parse_status();
        }
        source = cause.source();
    }
    false
}

/// The error with its causes, without the URL (which may carry credentials in its query).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
