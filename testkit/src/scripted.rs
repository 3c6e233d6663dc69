//! Fixtures shared by the integration tests: a scripted XEP-0114 server (it accepts the bridge's
//! connections, checks its stream header and handshake digest, then lets a test write raw bytes
//! and read what the bridge writes), a scripted webhook that records every request, the bridge
//! binary run with a generated configuration in a temporary directory, and the bridge's memory
//! as the kernel reports it.
//!
//! Everything listens on 127.0.0.1 port 0. Every wait has a deadline and fails with what was
//! seen so far; nothing waits for readiness with a fixed sleep.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use minidom::Element;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

/// The component's domain in every test.
pub const DOMAIN: &str = "bot.localhost";
/// Throwaway component secret shared by the scripted server and the bridge.
pub const SECRET: &str = "throwaway-component-secret";
/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(10);

pub const NS_COMPONENT: &str = "jabber:component:accept";
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_VERSION: &str = "jabber:iq:version";

/// The path of the webhook's URL.
pub const HOOK_PATH: &str = "/hook";

// ---------------------------------------------------------------------------------------------
// XML helpers

/// Escapes text for an attribute value quoted with `'` or for character data: the bridge's own
/// escaper, which also keeps line ends and tabs intact through XML's normalisation.
pub use component_http::xmpp::write::escape_attr as escape;

/// A chat message as a server would send it to the component.
pub fn chat(from: &str, to: &str, id: &str, body: &str) -> String {
    format!(
        "<message from='{}' to='{}' id='{}' type='chat'><body>{}</body></message>",
        escape(from),
        escape(to),
        escape(id),
        escape(body)
    )
}

/// An iq get or set with one payload element.
pub fn iq(type_: &str, from: &str, to: &str, id: &str, payload: &str) -> String {
    format!(
        "<iq type='{type_}' from='{}' to='{}' id='{}'>{payload}</iq>",
        escape(from),
        escape(to),
        escape(id)
    )
}

/// Parses one top-level element written in a component stream: its default namespace is
/// `jabber:component:accept` and the `stream` prefix is bound.
pub fn parse_in_stream(xml: &str) -> Result<Element, String> {
    let wrapped =
        format!("<wrapper xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAMS}'>{xml}</wrapper>");
    let wrapper: Element = wrapped
        .parse()
        .map_err(|e| format!("not well-formed ({e}): {xml}"))?;
    let mut children = wrapper.children();
    match (children.next(), children.next()) {
        (Some(element), None) => Ok(element.clone()),
        _ => Err(format!("not exactly one element: {xml}")),
    }
}

/// Serialises an element (for failure messages).
pub fn to_xml(element: &Element) -> String {
    let mut out = Vec::new();
    let _ = element.write_to(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of the stanza's `<body>`, if any.
pub fn body_of(element: &Element) -> Option<String> {
    element.get_child("body", NS_COMPONENT).map(Element::text)
}

/// What a stanza error carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaErrorSeen {
    pub type_: String,
    pub condition: String,
    pub text: Option<String>,
    pub by: Option<String>,
}

/// The `<error>` child of an error stanza, decoded.
pub fn stanza_error(element: &Element) -> Option<StanzaErrorSeen> {
    let error = element.get_child("error", NS_COMPONENT)?;
    let condition = error
        .children()
        .find(|c| c.ns() == NS_STANZAS && c.name() != "text")?
        .name()
        .to_owned();
    Some(StanzaErrorSeen {
        type_: error.attr("type").unwrap_or_default().to_owned(),
        condition,
        text: error.get_child("text", NS_STANZAS).map(Element::text),
        by: error.attr("by").map(str::to_owned),
    })
}

/// Lowercase hex SHA-1 of the stream id followed by the secret (XEP-0114 §3).
pub fn digest(stream_id: &str, secret: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(stream_id.as_bytes());
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

// ---------------------------------------------------------------------------------------------
// The scripted XEP-0114 server

static STREAM_IDS: AtomicUsize = AtomicUsize::new(1);

/// A component port that a test drives step by step.
pub struct XmppServer {
    addr: SocketAddr,
    listener: Option<TcpListener>,
    accepted: usize,
}

/// How the scripted server answers the bridge's handshake.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// `<handshake/>`: the component is online.
    Accept,
    /// `<stream:error>` with this condition, then the stream is closed.
    StreamError(&'static str),
}

impl XmppServer {
    pub async fn start() -> XmppServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the scripted server on 127.0.0.1:0");
        let addr = listener.local_addr().expect("scripted server address");
        XmppServer {
            addr,
            listener: Some(listener),
            accepted: 0,
        }
    }

    /// `host:port` for the bridge's `server` key.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted
    }

    /// Stops listening: new connections are refused, as when the server is down.
    pub fn stop_listening(&mut self) {
        self.listener = None;
    }

    /// Listens again on the same port, as a restarted server does.
    pub async fn listen_again(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.listener = Some(listener);
                    return;
                }
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("cannot listen again on {}: {error}", self.addr),
            }
        }
    }

    /// The next TCP connection, before anything is read, if one comes within `within`.
    pub async fn try_accept_raw(&mut self, within: Duration) -> Option<Conn> {
        let listener = self
            .listener
            .as_ref()
            .expect("the scripted server is not listening");
        let (stream, _) = timeout(within, listener.accept())
            .await
            .ok()?
            .expect("accept a connection");
        self.accepted += 1;
        Some(Conn::new(stream))
    }

    /// The next TCP connection, before anything is read.
    pub async fn accept_raw(&mut self) -> Conn {
        match self.try_accept_raw(WAIT).await {
            Some(conn) => conn,
            None => panic!(
                "the bridge did not connect to the scripted server within {WAIT:?} ({} connections so far)",
                self.accepted
            ),
        }
    }

    /// The next connection, authenticated: the bridge's stream header and handshake are checked
    /// against [`DOMAIN`] and [`SECRET`], and `<handshake/>` is answered.
    pub async fn accept(&mut self) -> Conn {
        self.accept_with(SECRET, Answer::Accept).await
    }

    /// The next connection, its handshake checked against `secret` and answered with `answer`.
    pub async fn accept_with(&mut self, secret: &str, answer: Answer) -> Conn {
        let mut conn = self.accept_raw().await;
        conn.handshake(secret, answer).await;
        conn
    }
}

/// What the bridge sent as its stream header.
#[derive(Debug, Clone)]
pub struct HeaderSeen {
    pub raw: String,
    pub to: Option<String>,
}

impl HeaderSeen {
    /// Whether the header declares `name` = `value`, whichever quotes it uses.
    pub fn declares(&self, name: &str, value: &str) -> bool {
        self.raw.contains(&format!("{name}='{value}'"))
            || self.raw.contains(&format!("{name}=\"{value}\""))
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    /// The condition of the `<stream:error>` the bridge sent, if any.
    pub stream_error: Option<String>,
    /// Whether the bridge closed the stream with `</stream:stream>`.
    pub close_tag: bool,
}

#[derive(Default)]
struct InboxState {
    bytes: Vec<u8>,
    first_chunk: Option<Vec<u8>>,
    eof: bool,
}

#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    changed: Notify,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One item of what the bridge writes.
#[derive(Debug, Clone)]
enum Item {
    Whitespace(usize),
    Declaration,
    Header(String),
    Close,
    Element(String),
    Text(String),
}

#[derive(Debug)]
enum WaitError {
    Timeout,
    Ended,
}

/// One connection from the bridge. A background task reads everything the bridge writes, so
/// the bridge never blocks on this side unless a test wants it to.
pub struct Conn {
    writer: OwnedWriteHalf,
    inbox: Arc<Inbox>,
    reader: JoinHandle<()>,
    /// While true, the background task does not read: the bridge's writes back up.
    paused: tokio::sync::watch::Sender<bool>,
    pos: usize,
    pending: VecDeque<Element>,
    whitespace: usize,
    saw_close_tag: bool,
    stream_errors: Vec<String>,
    pub stream_id: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    fn new(stream: tokio::net::TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        let (mut read, writer) = stream.into_split();
        let inbox = Arc::new(Inbox::default());
        let (paused, mut paused_rx) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn({
            let inbox = inbox.clone();
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    if paused_rx.wait_for(|paused| !paused).await.is_err() {
                        return;
                    }
                    let n = read.read(&mut buf).await.unwrap_or(0);
                    {
                        let mut state = inbox.lock();
                        if n == 0 {
                            state.eof = true;
                        } else {
                            if state.first_chunk.is_none() {
                                state.first_chunk = Some(buf[..n].to_vec());
                            }
                            state.bytes.extend_from_slice(&buf[..n]);
                        }
                    }
                    inbox.changed.notify_waiters();
                    if n == 0 {
                        return;
                    }
                }
            }
        });
        Conn {
            writer,
            inbox,
            reader,
            paused,
            pos: 0,
            pending: VecDeque::new(),
            whitespace: 0,
            saw_close_tag: false,
            stream_errors: Vec::new(),
            stream_id: format!("it-stream-{}", STREAM_IDS.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// Stops reading what the bridge writes (after the read in progress), as a server that is
    /// stuck would: the bridge's writes fill the socket's buffers and then block.
    pub fn pause_reading(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume_reading(&self) {
        self.paused.send_replace(false);
    }

    /// Everything the bridge wrote on this connection so far, as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.inbox.lock().bytes).into_owned()
    }

    /// Everything the bridge wrote on this connection so far, as bytes.
    pub fn output_bytes(&self) -> Vec<u8> {
        self.inbox.lock().bytes.clone()
    }

    /// The bytes of the first read on this connection.
    pub fn first_chunk(&self) -> Option<Vec<u8>> {
        self.inbox.lock().first_chunk.clone()
    }

    /// Whitespace bytes the bridge wrote between top-level elements so far.
    pub fn whitespace_seen(&self) -> usize {
        self.whitespace
    }

    /// Whether the bridge closed the TCP connection (as far as has been observed).
    pub fn is_closed(&self) -> bool {
        self.inbox.lock().eof
    }

    async fn next_item(&mut self, deadline: Instant) -> Result<Item, WaitError> {
        let inbox = self.inbox.clone();
        loop {
            let notified = inbox.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = inbox.lock();
                if let Some((item, len)) = scan(&state.bytes[self.pos..]) {
                    self.pos += len;
                    match &item {
                        Item::Whitespace(n) => self.whitespace += n,
                        Item::Close => self.saw_close_tag = true,
                        _ => {}
                    }
                    return Ok(item);
                }
                if state.eof {
                    return Err(WaitError::Ended);
                }
            }
            if timeout_at(deadline, notified).await.is_err() {
                return Err(WaitError::Timeout);
            }
        }
    }

    async fn next_element(&mut self, deadline: Instant) -> Result<Element, WaitError> {
        loop {
            match self.next_item(deadline).await? {
                Item::Element(raw) => {
                    let element = parse_in_stream(&raw).unwrap_or_else(|e| {
                        panic!("the bridge wrote XML that does not parse: {e}")
                    });
                    if element.is("error", NS_STREAMS) {
                        let condition = element
                            .children()
                            .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() != "text")
                            .map(|c| c.name().to_owned())
                            .unwrap_or_default();
                        self.stream_errors.push(condition);
                    }
                    return Ok(element);
                }
                Item::Text(text) => panic!("the bridge wrote text outside any element: {text:?}"),
                Item::Close => return Err(WaitError::Ended),
                Item::Whitespace(_) | Item::Declaration | Item::Header(_) => {}
            }
        }
    }

    /// The first stanza (in arrival order) that satisfies `matches`; others are kept for later.
    pub async fn stanza_where(
        &mut self,
        what: &str,
        matches: impl Fn(&Element) -> bool,
    ) -> Element {
        match self.try_stanza_where(WAIT, &matches).await {
            Some(element) => element,
            None => panic!(
                "expected {what} within {WAIT:?}; the bridge wrote:\n{}",
                self.output()
            ),
        }
    }

    /// Like [`Conn::stanza_where`], `None` if nothing matches within `within`.
    pub async fn try_stanza_where(
        &mut self,
        within: Duration,
        matches: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        if let Some(index) = self.pending.iter().position(&matches) {
            return self.pending.remove(index);
        }
        let deadline = Instant::now() + within;
        loop {
            let element = self.next_element(deadline).await.ok()?;
            if matches(&element) {
                return Some(element);
            }
            self.pending.push_back(element);
        }
    }

    /// The next stanza addressed to `jid`, in arrival order among those addressed to `jid`.
    pub async fn next_to(&mut self, jid: &str) -> Element {
        self.stanza_where(&format!("a stanza to {jid}"), |e| e.attr("to") == Some(jid))
            .await
    }

    /// The stanza with this id (replies keep the request's id).
    pub async fn with_id(&mut self, id: &str) -> Element {
        self.stanza_where(&format!("a stanza with id {id}"), |e| {
            e.attr("id") == Some(id)
        })
        .await
    }

    /// Waits until the bridge closes the connection and says how; stanzas written on the way
    /// out stay readable with [`Conn::stanza_where`].
    pub async fn ended(&mut self) -> Ending {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_element(deadline).await {
                Ok(element) => self.pending.push_back(element),
                Err(WaitError::Ended) => {
                    // After `</stream:stream>`, the TCP close must follow.
                    if self.is_closed() || self.wait_eof(deadline).await {
                        break;
                    }
                    panic!("the bridge closed the stream but not the connection within {WAIT:?}");
                }
                Err(WaitError::Timeout) => panic!(
                    "the bridge did not close the connection within {WAIT:?}; it wrote:\n{}",
                    self.output()
                ),
            }
        }
        Ending {
            stream_error: self.stream_errors.last().cloned(),
            close_tag: self.saw_close_tag,
        }
    }

    async fn wait_eof(&self, deadline: Instant) -> bool {
        loop {
            let notified = self.inbox.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inbox.lock().eof {
                return true;
            }
            if timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Whether the bridge closes the connection within `within`.
    pub async fn closes_within(&self, within: Duration) -> bool {
        self.wait_eof(Instant::now() + within).await
    }

    /// Writes raw bytes to the bridge.
    pub async fn send(&mut self, xml: &str) {
        self.send_bytes(xml.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        match timeout(WAIT, self.writer.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("cannot write to the bridge: {e}"),
            Err(_) => panic!("writing to the bridge blocked for {WAIT:?}"),
        }
    }

    /// Writes raw bytes; `Ok(false)` if the write did not complete within `within`.
    pub async fn send_within(&mut self, bytes: &[u8], within: Duration) -> std::io::Result<bool> {
        match timeout(within, self.writer.write_all(bytes)).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Reads the bridge's stream header.
    pub async fn read_stream_header(&mut self) -> HeaderSeen {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_item(deadline).await {
                Ok(Item::Declaration) | Ok(Item::Whitespace(_)) => {}
                Ok(Item::Header(raw)) => {
                    let element = format!("{raw}</stream:stream>")
                        .parse::<Element>()
                        .unwrap_or_else(|e| {
                            panic!("the bridge's stream header does not parse ({e}): {raw}")
                        });
                    assert!(
                        element.is("stream", NS_STREAMS),
                        "the bridge's stream root is not <stream:stream>: {raw}"
                    );
                    return HeaderSeen {
                        to: element.attr("to").map(str::to_owned),
                        raw,
                    };
                }
                Ok(other) => panic!("expected the bridge's stream header, got {other:?}"),
                Err(why) => panic!(
                    "no stream header from the bridge ({why:?}); it wrote: {:?}",
                    self.output()
                ),
            }
        }
    }

    /// Sends the server's stream header with this connection's id.
    pub async fn open_stream(&mut self) {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='{NS_STREAMS}' xmlns='{NS_COMPONENT}' from='{DOMAIN}' id='{}'>",
            self.stream_id
        );
        self.send(&header).await;
    }

    /// Reads the bridge's `<handshake>` and returns its text.
    pub async fn read_handshake(&mut self) -> String {
        let element = match self.next_element(Instant::now() + WAIT).await {
            Ok(element) => element,
            Err(why) => panic!(
                "no <handshake> from the bridge ({why:?}); it wrote: {:?}",
                self.output()
            ),
        };
        assert!(
            element.is("handshake", NS_COMPONENT),
            "expected <handshake>, got {}",
            to_xml(&element)
        );
        element.text()
    }

    /// The whole XEP-0114 exchange: checks the bridge's header names [`DOMAIN`], answers a
    /// header with an id, checks the digest against `secret`, and answers with `answer`.
    pub async fn handshake(&mut self, secret: &str, answer: Answer) {
        let header = self.read_stream_header().await;
        assert_eq!(
            header.to.as_deref(),
            Some(DOMAIN),
            "the bridge's stream header must name the domain: {}",
            header.raw
        );
        self.open_stream().await;
        let sent = self.read_handshake().await;
        assert_eq!(
            sent,
            digest(&self.stream_id, secret),
            "the handshake must be the lowercase hex SHA-1 of the stream id and the secret"
        );
        match answer {
            Answer::Accept => self.send("<handshake/>").await,
            Answer::StreamError(condition) => {
                self.send(&stream_error(condition)).await;
                let _ = self.writer.shutdown().await;
            }
        }
    }

    /// Closes the connection from the server's side.
    pub async fn close(mut self) {
        let _ = self.writer.write_all(b"</stream:stream>").await;
        let _ = self.writer.shutdown().await;
    }
}

/// A stream error as a server writes it, closing the stream.
pub fn stream_error(condition: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/></stream:error></stream:stream>"
    )
}

/// The next complete item at the start of `buf` and its length, `None` if more bytes are needed.
fn scan(buf: &[u8]) -> Option<(Item, usize)> {
    let first = *buf.first()?;
    if first.is_ascii_whitespace() {
        let n = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        return Some((Item::Whitespace(n), n));
    }
    if first != b'<' {
        let n = buf.iter().position(|&b| b == b'<').unwrap_or(buf.len());
        return Some((
            Item::Text(String::from_utf8_lossy(&buf[..n]).into_owned()),
            n,
        ));
    }
    if buf.starts_with(b"<?") {
        let end = find(buf, b"?>")? + 2;
        return Some((Item::Declaration, end));
    }
    if buf.starts_with(b"</stream:stream") {
        let end = find(buf, b">")? + 1;
        return Some((Item::Close, end));
    }
    if buf.starts_with(b"<stream:stream") {
        let end = tag_end(buf, 0)? + 1;
        return Some((
            Item::Header(String::from_utf8_lossy(&buf[..end]).into_owned()),
            end,
        ));
    }
    let mut depth = 0usize;
    let mut i = 0usize;
    loop {
        let lt = i + buf[i..].iter().position(|&b| b == b'<')?;
        let rest = &buf[lt..];
        if rest.len() < 2 {
            return None;
        }
        if rest.starts_with(b"<![CDATA[") {
            i = lt + find(rest, b"]]>")? + 3;
            continue;
        }
        if rest.starts_with(b"<!--") {
            i = lt + find(rest, b"-->")? + 3;
            continue;
        }
        if rest.starts_with(b"<?") {
            i = lt + find(rest, b"?>")? + 2;
            continue;
        }
        let end = tag_end(buf, lt)?;
        if rest[1] == b'/' {
            depth = depth.saturating_sub(1);
        } else if buf[end - 1] != b'/' {
            depth += 1;
        }
        i = end + 1;
        if depth == 0 {
            return Some((
                Item::Element(String::from_utf8_lossy(&buf[..i]).into_owned()),
                i,
            ));
        }
    }
}

/// The index of the `>` ending the tag that starts at `start`, skipping quoted values.
fn tag_end(buf: &[u8], start: usize) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (i, &b) in buf.iter().enumerate().skip(start + 1) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'>' => return Some(i),
            None => {}
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The scripted webhook

/// What the webhook answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub held: bool,
}

impl Reply {
    /// A response with this status, no body and no headers.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            held: false,
        }
    }

    /// `200 application/json` with this value.
    pub fn json(value: Value) -> Reply {
        Reply::status(200)
            .content_type("application/json")
            .body(value.to_string())
    }

    /// The classic echo bot's answer to a request.
    pub fn echo(request: &Request) -> Reply {
        let said = request.json["body"].as_str().unwrap_or_default();
        Reply::json(json!({ "body": echo_text(said) }))
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn content_type(self, value: &str) -> Reply {
        self.header("content-type", value)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Answers only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Answers only once the test calls [`Hook::release`].
    pub fn held(mut self) -> Reply {
        self.held = true;
        self
    }
}

/// The echo bot's reply text.
pub fn echo_text(said: &str) -> String {
    format!("Did you say {said}?")
}

/// One request the webhook received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub raw: Bytes,
    /// The body as JSON, `Value::Null` when it is not JSON.
    pub json: Value,
    pub arrived: Instant,
    pub answered: Option<Instant>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// A string field of the JSON body.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }

    /// Its `webhook-id` header, which every call must carry.
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id")
            .unwrap_or_else(|| panic!("a call without webhook-id: {}", self.json))
    }
}

type Responder = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

struct HookState {
    responder: Responder,
    requests: Mutex<Vec<Request>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    gate: watch::Sender<bool>,
    changed: Notify,
}

/// A webhook on 127.0.0.1 whose answers the test scripts; it records every request.
pub struct Hook {
    addr: SocketAddr,
    state: Arc<HookState>,
    server: JoinHandle<()>,
}

/// A port on 127.0.0.1 that refuses connections and that no other test can take: a socket
/// bound to it but not listening (the kernel answers a connection with a reset). A hook that is
/// "down" uses one, and [`Hook::start_on`] starts listening on the same socket, so no other
/// test's server can take the port in between.
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let port = socket.local_addr().expect("local addr").port();
        ClosedPort { socket, port }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hook {
    pub async fn start(responder: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook on 127.0.0.1:0");
        Self::serve(listener, responder)
    }

    /// The webhook of a hook that was down and comes up, on the port `down` kept for it.
    pub fn start_on(
        down: ClosedPort,
        responder: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Hook {
        let listener = down
            .socket
            .listen(1024)
            .expect("webhook: listen on the kept port");
        Self::serve(listener, responder)
    }

    fn serve(
        listener: TcpListener,
        responder: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Hook {
        let addr = listener.local_addr().expect("webhook address");
        let (gate, _) = watch::channel(false);
        let state = Arc::new(HookState {
            responder: Box::new(responder),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            gate,
            changed: Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(handle_hook)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hook {
            addr,
            state,
            server,
        }
    }

    /// The echo bot.
    pub async fn echo() -> Hook {
        Hook::start(Reply::echo).await
    }

    /// The URL the bridge posts to.
    pub fn url(&self) -> String {
        format!("http://{}{HOOK_PATH}", self.addr)
    }

    /// A URL on the same server, another path.
    pub fn url_of(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Lets every held request (and every later one) be answered.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Waits until the hook has received at least `n` requests; returns them all.
    pub async fn wait_requests(&self, n: usize) -> Vec<Request> {
        self.wait_requests_within(n, WAIT)
            .await
            .unwrap_or_else(|got| {
                panic!(
                    "the webhook expected {n} requests within {WAIT:?}, got {}: {:#?}",
                    got.len(),
                    got.iter().map(|r| r.json.to_string()).collect::<Vec<_>>()
                )
            })
    }

    /// Like [`Hook::wait_requests`]; `Err` with what was received on timeout.
    pub async fn wait_requests_within(
        &self,
        n: usize,
        within: Duration,
    ) -> Result<Vec<Request>, Vec<Request>> {
        self.wait_for(within, |requests| requests.len() >= n).await
    }

    /// Waits until at least `n` requests have been answered; returns every request.
    pub async fn wait_answered(&self, n: usize) -> Vec<Request> {
        self.wait_for(WAIT, |requests| {
            requests.iter().filter(|r| r.answered.is_some()).count() >= n
        })
        .await
        .unwrap_or_else(|_| panic!("the webhook did not answer {n} requests within {WAIT:?}"))
    }

    /// Waits until the requests received so far satisfy `done`; returns them.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        self.wait_for(WAIT, done).await.unwrap_or_else(|requests| {
            panic!(
                "the webhook never saw {what} within {WAIT:?}; it received: {:#?}",
                requests
                    .iter()
                    .map(|r| format!("{} {} {}", r.method, r.path, r.json))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// The requests once they satisfy `done`, or `Err` with what came within `within`.
    async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[Request]) -> bool,
    ) -> Result<Vec<Request>, Vec<Request>> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let requests = self.requests();
            if done(&requests) {
                return Ok(requests);
            }
            if timeout_at(deadline, notified).await.is_err() {
                return Err(self.requests());
            }
        }
    }

    /// The requests received so far for the stanza with this id, in arrival order.
    pub fn requests_with_id(&self, id: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.field("id") == Some(id))
            .collect()
    }

    /// The first request that satisfies `matches`.
    pub async fn request_where(&self, what: &str, matches: impl Fn(&Request) -> bool) -> Request {
        let deadline = Instant::now() + WAIT;
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(request) = self.requests().into_iter().find(|r| matches(r)) {
                return request;
            }
            if timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "the webhook never received {what}; it received: {:#?}",
                    self.requests()
                        .iter()
                        .map(|r| format!("{} {} {}", r.method, r.path, r.json))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// The request whose stanza has this id.
    pub async fn request_with_id(&self, id: &str) -> Request {
        self.request_where(&format!("a stanza with id {id}"), |r| {
            r.field("id") == Some(id)
        })
        .await
    }
}

async fn handle_hook(
    State(state): State<Arc<HookState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let request = Request {
        method: method.to_string(),
        path: uri.path().to_owned(),
        json: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        headers,
        raw,
        arrived: Instant::now(),
        answered: None,
    };
    let reply = (state.responder)(&request);
    let index = {
        let mut requests = state.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests.push(request);
        requests.len() - 1
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    state.changed.notify_waiters();

    if reply.held {
        let mut gate = state.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }

    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    if let Some(request) = state
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(index)
    {
        request.answered = Some(Instant::now());
    }
    state.changed.notify_waiters();

    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response
        .body(Body::from(reply.body))
        .expect("a valid scripted response")
}

// ---------------------------------------------------------------------------------------------
// The bridge process

/// Builds the bridge's configuration file and environment.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    server: String,
    hook_url: String,
    secret: bool,
    keys: Vec<String>,
    tables: Vec<String>,
    env: Vec<(String, String)>,
    files: Vec<(String, String)>,
    rust_log: String,
}

impl BridgeConfig {
    /// Domain [`DOMAIN`], the server's address, secret [`SECRET`], `component_post_url`.
    pub fn new(server: &XmppServer, hook_url: &str) -> BridgeConfig {
        BridgeConfig::at(&server.address(), hook_url)
    }

    pub fn at(server: &str, hook_url: &str) -> BridgeConfig {
        BridgeConfig {
            server: server.to_owned(),
            hook_url: hook_url.to_owned(),
            secret: true,
            keys: Vec::new(),
            tables: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            rust_log: "info".to_owned(),
        }
    }

    /// A top-level line such as `iq_timeout = "1s"`.
    pub fn key(mut self, line: &str) -> BridgeConfig {
        self.keys.push(line.to_owned());
        self
    }

    /// A table appended at the end, such as `[webhook]\ntimeout = "1s"`.
    pub fn table(mut self, text: &str) -> BridgeConfig {
        self.tables.push(text.to_owned());
        self
    }

    /// Leaves `secret` out of the file.
    pub fn without_secret(mut self) -> BridgeConfig {
        self.secret = false;
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> BridgeConfig {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `data_dir` set to `dir`, so that successive processes (a restarted bridge) share one
    /// queue.
    pub fn data_dir(self, dir: &Path) -> BridgeConfig {
        let path = toml::Value::String(dir.display().to_string());
        self.key(&format!("data_dir = {path}"))
    }

    /// A file written next to the configuration.
    pub fn file(mut self, name: &str, contents: &str) -> BridgeConfig {
        self.files.push((name.to_owned(), contents.to_owned()));
        self
    }

    pub fn rust_log(mut self, filter: &str) -> BridgeConfig {
        self.rust_log = filter.to_owned();
        self
    }

    /// The configuration file's text.
    pub fn text(&self) -> String {
        let mut text = format!("domain = \"{DOMAIN}\"\nserver = \"{}\"\n", self.server);
        if self.secret {
            text.push_str(&format!("secret = \"{SECRET}\"\n"));
        }
        text.push_str(&format!("component_post_url = \"{}\"\n", self.hook_url));
        for key in &self.keys {
            text.push_str(key);
            text.push('\n');
        }
        for table in &self.tables {
            text.push('\n');
            text.push_str(table);
            text.push('\n');
        }
        text
    }

    /// Runs `component-http run` with this configuration.
    pub fn spawn(&self) -> Bridge {
        self.spawn_with_args(&[])
    }

    /// Runs the bridge with these command-line arguments as well (e.g. `--log-format json`).
    pub fn spawn_with_args(&self, args: &[&str]) -> Bridge {
        let text = self.text();
        Bridge::spawn_with(&text, &self.files, &self.env, &self.rust_log, args)
    }

    /// Runs `component-http check` with this configuration and waits for it to exit.
    pub async fn check(&self) -> Finished {
        let text = self.text();
        let mut bridge =
            Bridge::spawn_with(&text, &self.files, &self.env, &self.rust_log, &["check"]);
        bridge.finished().await
    }
}

/// The configuration file's name inside a bridge's temporary directory.
const CONFIG_FILE: &str = "component-http.toml";

/// A process that has exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// The bridge binary, killed (SIGKILL) and reaped when dropped. Its stdout and stderr go to files next to its
/// configuration; a failing test prints the end of its log.
pub struct Bridge {
    child: Child,
    _dir: TempDir,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- bridge log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Bridge {
    /// Runs the binary with this configuration text.
    pub fn spawn_with(
        config: &str,
        files: &[(String, String)],
        env: &[(String, String)],
        rust_log: &str,
        args: &[&str],
    ) -> Bridge {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config_path = dir.path().join(CONFIG_FILE);
        std::fs::write(&config_path, config).expect("write the configuration");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write a configuration file");
        }
        let (mut command, stdout, stderr) =
            bridge_command(&config_path, args, dir.path(), rust_log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start the component-http binary");
        Bridge {
            child,
            _dir: dir,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory of its configuration file: relative paths of the configuration (such as
    /// the default `data_dir = "data"`) are under it. It lives as long as the `Bridge`.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The configuration file it runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join(CONFIG_FILE)
    }

    /// Runs `component-http --config FILE dead-letters ARGS` with this bridge's configuration
    /// file, as an operator would next to this instance (running or stopped), and waits for it.
    pub async fn dead_letters(&self, args: &[&str]) -> Finished {
        let mut all = vec!["dead-letters"];
        all.extend_from_slice(args);
        run_cli(&self.config_path(), &all).await
    }

    /// `dead-letters list --json` (which must succeed), one JSON object per dead letter.
    pub async fn dead_letter_list(&self) -> Vec<Value> {
        let listed = self.dead_letters(&["list", "--json"]).await;
        assert_eq!(
            listed.code(),
            Some(0),
            "dead-letters list --json failed: {listed:?}"
        );
        listed
            .stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON dead letter ({e}): {line}"))
            })
            .collect()
    }

    /// Sends SIGKILL and reaps the process: a crash, with no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().expect("send SIGKILL to the bridge");
        self.child.wait().expect("reap the killed bridge");
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits until a line of the log satisfies `matches`; returns that line.
    pub async fn log_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log().lines().find(|l| matches(l)) {
                return line.to_owned();
            }
            if Instant::now() >= deadline {
                panic!("the bridge never logged {what}; its log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit within `within`.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the bridge") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the process to exit (deadline [`WAIT`]) and collects its output.
    pub async fn finished(&mut self) -> Finished {
        let Some(status) = self.exit_within(WAIT).await else {
            panic!(
                "the bridge did not exit within {WAIT:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.log()
            );
        };
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.log(),
        }
    }

    /// Its memory as the kernel reports it.
    pub fn memory(&self) -> Memory {
        memory_of(self.pid())
    }
}

/// The bridge binary with `--config config` and `args`, run in `dir` without the bridge's
/// environment variables of the test process; its stdout and stderr go to files in `dir`,
/// returned with the command.
fn bridge_command(
    config: &Path,
    args: &[&str],
    dir: &Path,
    rust_log: &str,
) -> (Command, PathBuf, PathBuf) {
    let stdout = dir.join("stdout.log");
    let stderr = dir.join("stderr.log");
    let mut command = Command::new(crate::bridge_binary());
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env_remove("COMPONENT_HTTP_SECRET")
        .env_remove("COMPONENT_HTTP_WEBHOOK_AUTHORIZATION")
        .env_remove("COMPONENT_HTTP_WEBHOOK_SIGNING_SECRET")
        .env_remove("COMPONENT_HTTP_CONFIG")
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("create the stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("create the stderr file"));
    (command, stdout, stderr)
}

/// Runs the binary with `--config config` and `args` (a command that exits, such as
/// `dead-letters list`) and waits for it to exit, at most [`WAIT`].
pub async fn run_cli(config: &Path, args: &[&str]) -> Finished {
    run_cli_with_input(config, args, "").await
}

/// [`run_cli`] with `input` on the command's stdin.
pub async fn run_cli_with_input(config: &Path, args: &[&str], input: &str) -> Finished {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut command, stdout, stderr) = bridge_command(config, args, dir.path(), "info");
    command.stdin(Stdio::piped());
    let mut child = command.spawn().expect("start the component-http binary");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("write the command's stdin");
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`component-http {}` did not exit within {WAIT:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&stdout).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
    }
}

/// Runs the binary with a configuration text and waits for it to exit (for configuration
/// errors, which must stop it at once).
pub async fn run_config(config: &str, env: &[(&str, &str)]) -> Finished {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut bridge = Bridge::spawn_with(config, &[], &env, "info", &[]);
    bridge.finished().await
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmHWM`: the peak resident set since the process started.
    pub peak_kib: u64,
    /// `VmRSS`: the resident set now.
    pub current_kib: u64,
}

/// Reads `VmHWM` and `VmRSS` from `/proc/PID/status`.
pub fn memory_of(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read the status of process {pid}: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Memory {
        peak_kib: field("VmHWM:"),
        current_kib: field("VmRSS:"),
    }
}

// ---------------------------------------------------------------------------------------------
// The usual arrangement

/// A scripted server, a webhook, the bridge, and its first authenticated connection.
pub struct Stack {
    pub server: XmppServer,
    pub hook: Hook,
    pub bridge: Bridge,
    pub conn: Conn,
}

impl Stack {
    /// Starts everything with the webhook's `responder` and the configuration `configure`
    /// makes of the default one.
    pub async fn start(
        responder: impl Fn(&Request) -> Reply + Send + Sync + 'static,
        configure: impl FnOnce(BridgeConfig) -> BridgeConfig,
    ) -> Stack {
        let mut server = XmppServer::start().await;
        let hook = Hook::start(responder).await;
        let bridge = configure(BridgeConfig::new(&server, &hook.url())).spawn();
        let conn = server.accept().await;
        Stack {
            server,
            hook,
            bridge,
            conn,
        }
    }

    /// The echo bot and the default configuration.
    pub async fn echo() -> Stack {
        Stack::start(Reply::echo, |c| c).await
    }

    /// Sends a chat message from `from` and returns the bridge's reply to it.
    pub async fn round_trip(&mut self, from: &str, id: &str, body: &str) -> Element {
        self.conn
            .send(&chat(from, "echo@bot.localhost", id, body))
            .await;
        self.conn.with_id(id).await
    }
}

/// Asserts that the echo bot's reply to `body` came back.
pub fn assert_echo(reply: &Element, body: &str) {
    assert_eq!(
        body_of(reply).as_deref(),
        Some(echo_text(body).as_str()),
        "expected the echo of {body:?}, got {}",
        to_xml(reply)
    );
}

/// A webhook responder that answers by the stanza's id, and as the echo bot otherwise.
pub fn by_id<'a>(
    replies: impl IntoIterator<Item = (&'a str, Reply)>,
) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let replies: HashMap<String, Reply> = replies
        .into_iter()
        .map(|(id, reply)| (id.to_owned(), reply))
        .collect();
    move |request| {
        request
            .field("id")
            .and_then(|id| replies.get(id))
            .cloned()
            .unwrap_or_else(|| Reply::echo(request))
    }
}

static MARKERS: AtomicUsize = AtomicUsize::new(1);

/// Sends `stanza`, then a chat message from `sender` to `to` (the same conversation, so it is
/// handled after `stanza` is finished); returns what the bridge sent to `sender` before the
/// echo of that marker. The webhook must echo the marker.
pub async fn sent_before_marker(
    conn: &mut Conn,
    sender: &str,
    to: &str,
    stanza: &str,
) -> Vec<Element> {
    let marker = format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
    conn.send(stanza).await;
    conn.send(&chat(sender, to, &marker, "marker")).await;
    let mut before = Vec::new();
    loop {
        let next = conn.next_to(sender).await;
        if next.attr("id") == Some(marker.as_str()) {
            return before;
        }
        before.push(next);
    }
}

/// Asserts that the bridge sent nothing back for `stanza` (see [`sent_before_marker`]).
pub async fn assert_no_answer(conn: &mut Conn, sender: &str, to: &str, stanza: &str, why: &str) {
    let sent = sent_before_marker(conn, sender, to, stanza).await;
    assert!(
        sent.is_empty(),
        "{why}: expected no answer to {stanza}, got {:?}",
        sent.iter().map(to_xml).collect::<Vec<_>>()
    );
}

/// Asserts that `reply` is a stanza error answering `original_from` → `original_to` with `id`:
/// addresses swapped, same id, `by` naming the component; returns the error.
pub fn assert_error_reply(
    reply: &Element,
    original_from: &str,
    original_to: &str,
    id: &str,
) -> StanzaErrorSeen {
    let xml = to_xml(reply);
    assert_eq!(reply.attr("type"), Some("error"), "{xml}");
    assert_eq!(reply.attr("to"), Some(original_from), "{xml}");
    assert_eq!(reply.attr("from"), Some(original_to), "{xml}");
    assert_eq!(reply.attr("id"), Some(id), "{xml}");
    let error = stanza_error(reply).unwrap_or_else(|| panic!("no stanza error in {xml}"));
    let by = error.by.as_deref();
    assert!(
        by == Some(DOMAIN) || by == Some(original_to),
        "the error carries `by` (the component): {xml}"
    );
    error
}
