//! One connection to the server: TCP, optional TLS, the stream header and the XEP-0114
//! handshake ([`connect`]); the bounded frame reader over it; and why a connection ends
//! ([`LinkError`]). The session supervises connections; this module makes one.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Config;
use crate::limits;
use crate::xmpp::codec::{CodecError, Frame, NS_COMPONENT, NS_STREAMS, ReadLimits, StreamReader};
use crate::xmpp::handshake;
use crate::xmpp::write::{NS_STREAM_ERRORS, stream_header};

/// Why a connection ended or could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("TLS with {server} failed: {message}")]
    Tls { server: String, message: String },
    #[error("timed out while {0}")]
    Timeout(&'static str),
    #[error("the server closed the connection")]
    Closed,
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server's stream header has no id; the handshake needs one")]
    NoStreamId,
    #[error("the server sent stream error <{condition}/>{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    StreamError {
        condition: String,
        text: Option<String>,
    },
    #[error("the server's stream cannot be read: {0}")]
    Unreadable(#[from] CodecError),
    #[error("no answer to a keepalive ping for two intervals: the link is dead")]
    DeadLink,
    #[error("the server sent <{0}> before the handshake completed")]
    UnexpectedBeforeHandshake(String),
}

impl LinkError {
    /// What the operator must change, for the errors that retrying cannot fix.
    pub(crate) fn configuration_advice(&self) -> Option<&'static str> {
        match self {
            LinkError::StreamError { condition, .. } => handshake::configuration_advice(condition),
            _ => None,
        }
    }

    /// Another connection serves the domain (Prosody's `conflict`).
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, LinkError::StreamError { condition, .. } if condition == "conflict")
    }
}

pub(crate) type BoxedIo = Box<dyn AsyncReadWrite>;
pub(crate) trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

/// Reads frames from the socket through the bounded codec.
pub(crate) struct FrameReader {
    io: ReadHalf<BoxedIo>,
    codec: StreamReader,
    buf: Box<[u8]>,
}

impl FrameReader {
    pub(crate) async fn next(&mut self) -> Result<Frame, LinkError> {
        loop {
            if let Some(frame) = self.codec.next_frame()? {
                return Ok(frame);
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            self.codec.feed(&self.buf[..n]);
        }
    }
}

/// An authenticated connection, ready to carry stanzas.
pub(crate) struct Link {
    pub(crate) reader: FrameReader,
    pub(crate) writer: WriteHalf<BoxedIo>,
}

/// Connects to the server, opens the stream and completes the handshake.
pub(crate) async fn connect(config: &Config) -> Result<Link, LinkError> {
    let tcp = timeout(
        limits::XMPP_CONNECT_TIMEOUT,
        TcpStream::connect(&config.server),
    )
    .await
    .map_err(|_| LinkError::Timeout("connecting to the server"))?
    .map_err(|source| LinkError::Connect {
        server: config.server.clone(),
        source,
    })?;
    // Stanzas are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let io: BoxedIo = if config.tls {
        Box::new(tls_wrap(config, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let (read, mut writer) = tokio::io::split(io);
    let mut reader = FrameReader {
        io: read,
        codec: StreamReader::new(ReadLimits {
            max_stanza_bytes: config.max_stanza_bytes,
            max_depth: config.max_depth,
        }),
        buf: vec![0; limits::READ_CHUNK_BYTES].into_boxed_slice(),
    };
    timeout(limits::HANDSHAKE_TIMEOUT, async {
        // One write for the whole header: some servers misread a header split across packets.
        writer
            .write_all(stream_header(&config.domain).as_bytes())
            .await?;
        writer.flush().await?;
        let header = match reader.next().await? {
            Frame::Open(header) => header,
            Frame::Element(e) => return Err(stream_error_or_unexpected(&e.element)),
            Frame::Close => return Err(LinkError::Closed),
        };
        let id = header.id.as_deref().ok_or(LinkError::NoStreamId)?;
        writer
            .write_all(handshake::handshake_element(id, config.secret.expose()).as_bytes())
            .await?;
        writer.flush().await?;
        loop {
            match reader.next().await? {
                Frame::Element(e) if e.element.is("handshake", NS_COMPONENT) => {
                    return Ok(());
                }
                Frame::Element(e) => return Err(stream_error_or_unexpected(&e.element)),
                Frame::Close => return Err(LinkError::Closed),
                Frame::Open(_) => {}
            }
        }
    })
    .await
    .map_err(|_| LinkError::Timeout("waiting for the stream header and handshake"))??;
    Ok(Link { reader, writer })
}

async fn tls_wrap(
    config: &Config,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, LinkError> {
    let tls_error = |message: String| LinkError::Tls {
        server: config.server.clone(),
        message,
    };
    let client_config = crate::tls::client_config(config.tls_roots.as_ref())
        .map_err(|e| tls_error(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(config.tls_server_name.clone())
        .map_err(|e| tls_error(format!("invalid tls_server_name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    timeout(limits::XMPP_CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| LinkError::Timeout("negotiating TLS"))?
        .map_err(|e| tls_error(e.to_string()))
}

fn stream_error_or_unexpected(element: &minidom::Element) -> LinkError {
    if element.is("error", NS_STREAMS) {
        parse_stream_error(element)
    } else {
        LinkError::UnexpectedBeforeHandshake(element.name().to_owned())
    }
}

pub(crate) fn parse_stream_error(element: &minidom::Element) -> LinkError {
    let mut condition = "undefined-condition".to_owned();
    let mut text = None;
    for child in element.children() {
        if child.ns() == NS_STREAM_ERRORS {
            if child.name() == "text" {
                text = Some(child.text());
            } else {
                condition = child.name().to_owned();
            }
        }
    }
    LinkError::StreamError { condition, text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::codec::parse_stanza;

    #[test]
    fn stream_errors_are_parsed_with_text() {
        let read = parse_stanza(
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced</text></stream:error>",
            ReadLimits::default(),
        )
        .unwrap();
        let error = parse_stream_error(&read.element);
        assert!(
            matches!(&error, LinkError::StreamError { condition, text } if condition == "conflict" && text.as_deref() == Some("Replaced"))
        );
        assert!(error.configuration_advice().is_some());
    }
}
