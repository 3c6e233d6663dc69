//! An `https://` hook (README, "Configuration reference", `[webhook] tls_ca_file`): with the
//! hook's self-signed certificate in `webhook.tls_ca_file` the bridge trusts it, and speaks
//! HTTP/2 when the hook offers it by ALPN, HTTP/1.1 when it offers only that; with the system's
//! roots the same hook is not trusted, and the sender gets the connection failure's stanza error;
//! a `webhook.tls_ca_file` without a certificate is a bad configuration.
//!
//! The hook here is served over TLS by the test itself (rustls and hyper's server), with a
//! certificate made for the test, so that it sees which HTTP version each request came in.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout_at};

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";
const SENDER: &str = "alice@localhost/phone";
/// A failure comes back at once as the sender's error, instead of after the retries.
const BOUNCE_AT_ONCE: &str = "retry_for = \"0s\"";
/// The hook's certificate, written next to the bridge's configuration.
const HOOK_CA_FILE: &str = "hook-ca.pem";

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

/// One request the TLS hook received.
#[derive(Debug, Clone)]
struct Received {
    version: Version,
    method: String,
    path: String,
    json: Value,
}

/// What the TLS hook saw: the requests, and the TLS handshakes that failed.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Received>>,
    failed_handshakes: AtomicUsize,
    changed: Notify,
}

impl Seen {
    fn requests(&self) -> Vec<Received> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The echo bot over TLS on 127.0.0.1, with a fresh self-signed certificate for that address,
/// offering the ALPN protocols it was started with.
struct TlsHook {
    addr: SocketAddr,
    /// The certificate, in PEM: what `webhook.tls_ca_file` names to trust this hook.
    ca_pem: String,
    seen: Arc<Seen>,
    server: JoinHandle<()>,
}

impl Drop for TlsHook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TlsHook {
    async fn start(alpn: &[&[u8]]) -> TlsHook {
        component_http::tls::install_crypto_provider();
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a self-signed certificate for 127.0.0.1");
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .expect("the certificate's key");
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("the hook's TLS configuration");
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the TLS hook on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the TLS hook's address");
        let seen = Arc::new(Seen::default());
        let server = tokio::spawn(serve(listener, acceptor, seen.clone()));
        TlsHook {
            addr,
            ca_pem: certified.cert.pem(),
            seen,
            server,
        }
    }

    /// The URL the bridge posts to.
    fn url(&self) -> String {
        format!("https://{}{HOOK_PATH}", self.addr)
    }

    fn requests(&self) -> Vec<Received> {
        self.seen.requests()
    }

    /// Waits until what the hook saw satisfies `done`, at most [`WAIT`].
    async fn wait_until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let notified = self.seen.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.seen) {
                return;
            }
            if timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "the TLS hook never saw {what} within {WAIT:?}; it received {:?}",
                    self.requests()
                );
            }
        }
    }
}

/// Accepts connections until aborted; dropping the set with it ends the connections too.
async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, seen: Arc<Seen>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        while connections.try_join_next().is_some() {}
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(_) => {
                    seen.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    seen.changed.notify_waiters();
                    return;
                }
            };
            let service = service_fn(move |request| answer(request, seen.clone()));
            // HTTP/1.1 or HTTP/2, whichever the client speaks (after the ALPN it negotiated).
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Records the request, and answers as the classic echo bot.
async fn answer(
    request: hyper::Request<Incoming>,
    seen: Arc<Seen>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let version = request.version();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let said = json["body"].as_str().unwrap_or_default().to_owned();
    seen.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            version,
            method,
            path,
            json,
        });
    seen.changed.notify_waiters();
    let reply = json!({ "body": echo_text(&said) }).to_string();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply)))
        .expect("a valid response"))
}

/// A bridge whose `webhook.tls_ca_file` holds `hook`'s certificate sends a message to it;
/// the echo comes back to the sender. Returns the one request the hook received.
async fn round_trip_trusting(hook: &TlsHook, id: &str, body: &str) -> Received {
    let mut server = XmppServer::start().await;
    let _bridge = BridgeConfig::new(&server, &hook.url())
        .key(BOUNCE_AT_ONCE)
        .table(&format!("[webhook]\ntls_ca_file = \"{HOOK_CA_FILE}\""))
        .file(HOOK_CA_FILE, &hook.ca_pem)
        .spawn();
    let mut conn = server.accept().await;
    conn.send(&chat(SENDER, ECHO, id, body)).await;
    let reply = conn.with_id(id).await;
    assert_echo(&reply, body);
    assert_eq!(reply.attr("to"), Some(SENDER), "{}", to_xml(&reply));
    assert_eq!(reply.attr("from"), Some(ECHO), "{}", to_xml(&reply));
    // The hook recorded the request before it answered.
    let requests = hook.requests();
    assert_eq!(requests.len(), 1, "one call for one message: {requests:?}");
    let request = requests[0].clone();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", HOOK_PATH)
    );
    assert_eq!(request.json["body"], body, "{}", request.json);
    assert_eq!(request.json["id"], id, "{}", request.json);
    assert_eq!(request.json["from"], SENDER, "{}", request.json);
    request
}

#[tokio::test]
async fn a_hook_trusted_through_tls_ca_file_is_called_over_http2_when_it_offers_h2() {
    let hook = TlsHook::start(&[H2, HTTP1]).await;
    let request = round_trip_trusting(&hook, "tls-h2", "over TLS").await;
    assert_eq!(
        request.version,
        Version::HTTP_2,
        "the hook offers h2 by ALPN, so the call is HTTP/2"
    );
}

#[tokio::test]
async fn a_hook_that_offers_only_http1_is_called_over_http1() {
    let hook = TlsHook::start(&[HTTP1]).await;
    let request = round_trip_trusting(&hook, "tls-h1", "over TLS, HTTP/1.1").await;
    assert_eq!(
        request.version,
        Version::HTTP_11,
        "the hook offers only http/1.1 by ALPN"
    );
}

#[tokio::test]
async fn with_the_system_roots_a_self_signed_hook_is_not_trusted_and_the_sender_is_told() {
    let hook = TlsHook::start(&[H2, HTTP1]).await;
    let mut server = XmppServer::start().await;
    let _bridge = BridgeConfig::new(&server, &hook.url())
        .key(BOUNCE_AT_ONCE)
        .spawn();
    let mut conn = server.accept().await;
    conn.send(&chat(SENDER, ECHO, "untrusted", "anyone?")).await;
    let reply = conn.with_id("untrusted").await;
    let error = assert_error_reply(&reply, SENDER, ECHO, "untrusted");
    assert_eq!(
        (
            error.type_.as_str(),
            error.condition.as_str(),
            error.text.as_deref()
        ),
        (
            "cancel",
            "remote-server-timeout",
            Some("Connection failure")
        ),
        "{}",
        to_xml(&reply)
    );
    // The bridge did reach the hook, and refused its certificate in the handshake.
    hook.wait_until("the bridge's TLS handshake fail", |seen| {
        seen.failed_handshakes.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(
        hook.requests().is_empty(),
        "no request may reach a hook whose certificate is not trusted: {:?}",
        hook.requests()
    );
}

#[tokio::test]
async fn check_refuses_a_webhook_tls_ca_file_without_a_certificate_naming_the_key() {
    let server = XmppServer::start().await;
    let config = || {
        BridgeConfig::new(&server, "https://127.0.0.1:9/hook")
            .table(&format!("[webhook]\ntls_ca_file = \"{HOOK_CA_FILE}\""))
    };
    let no_certificate = config()
        .file(HOOK_CA_FILE, "this file holds no certificate\n")
        .check()
        .await;
    let missing = config().check().await;
    for (finished, what) in [(no_certificate, "no certificate"), (missing, "no file")] {
        assert_eq!(
            finished.code(),
            Some(2),
            "{what}: a bad configuration; stdout:\n{}\nstderr:\n{}",
            finished.stdout,
            finished.stderr
        );
        assert!(
            finished.stderr.contains("`webhook.tls_ca_file`"),
            "{what}: the message names the key:\n{}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains(HOOK_CA_FILE),
            "{what}: the message names the file:\n{}",
            finished.stderr
        );
    }
    assert_eq!(
        server.connections(),
        0,
        "a bad configuration never connects"
    );
}
