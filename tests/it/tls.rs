//! TLS to the XMPP server (`tls = true`): the bridge verifies the server's certificate against
//! `tls_ca_file` (or the system roots), then runs XEP-0114 over the encrypted stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{BridgeConfig, SECRET};

struct TlsServer {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
}

fn tls_server(listener: TcpListener) -> TlsServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_der = certified.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .expect("server config");
    TlsServer {
        listener,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_pem: certified.cert.pem(),
    }
}

/// Reads until `needle` appears in what the peer sent, with a deadline.
async fn read_until<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    seen: &mut String,
    needle: &str,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "the bridge closed the connection before sending {needle:?}; got {seen:?}"
            );
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} from the bridge within 10 s; got {seen:?}"));
}

fn bridge_config(port: u16) -> BridgeConfig {
    BridgeConfig::at(&format!("127.0.0.1:{port}"), "http://127.0.0.1:9/")
        .key("tls = true")
        .key("tls_server_name = \"localhost\"")
}

#[tokio::test]
async fn the_bridge_speaks_xep_0114_over_tls_with_a_private_ca() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tls_server(listener);
    let _bridge = bridge_config(port)
        .key("tls_ca_file = \"ca.pem\"")
        .file("ca.pem", &server.ca_pem)
        .spawn();

    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), server.listener.accept())
        .await
        .expect("the bridge connects within 10 s")
        .expect("accept");
    let mut tls = server
        .acceptor
        .accept(tcp)
        .await
        .expect("TLS handshake with the bridge");
    let mut seen = String::new();
    read_until(&mut tls, &mut seen, "to='bot.localhost'>").await;
    tls.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
          xmlns:stream='http://etherx.jabber.org/streams' from='bot.localhost' id='tls-stream-1'>",
    )
    .await
    .expect("write header");
    read_until(&mut tls, &mut seen, "</handshake>").await;
    let expected = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(
            format!("tls-stream-1{SECRET}").as_bytes(),
        ))
    };
    assert!(
        seen.contains(&format!("<handshake>{expected}</handshake>")),
        "wrong digest in {seen:?}"
    );
    tls.write_all(b"<handshake/>")
        .await
        .expect("write handshake");
    tls.write_all(
        b"<iq type='get' id='tls-ping' to='bot.localhost' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await
    .expect("write ping");
    let mut after = String::new();
    read_until(&mut tls, &mut after, "id='tls-ping'").await;
    assert!(
        after.contains("type='result'") || after.contains("type=\"result\""),
        "{after}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_check_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tls_server(listener);
    let accept = tokio::spawn(async move {
        if let Ok((tcp, _)) = server.listener.accept().await {
            let _ = server.acceptor.accept(tcp).await;
        }
    });
    let finished = tokio::time::timeout(Duration::from_secs(30), bridge_config(port).check())
        .await
        .expect("check finishes within 30 s");
    accept.abort();
    assert_ne!(
        finished.code(),
        Some(0),
        "check must fail on an untrusted certificate: {}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("TLS"),
        "check names the TLS failure: {}",
        finished.stdout
    );
}
