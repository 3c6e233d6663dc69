//! The end-to-end harness, whichever XMPP server runs underneath: [`Server`] is a throwaway
//! Prosody ([`crate::prosody`]) or ejabberd ([`crate::ejabberd`]) chosen by [`ServerKind`], so
//! one test body runs against both; [`Bridge`] is the bridge binary with a generated
//! configuration; [`XmppClient`] is a real XMPP client logged in as a local user. The webhook is
//! [`crate::scripted`]'s, re-exported here. Both servers are set up alike: the accounts of
//! [`USERS`], the component [`DOMAIN`] with [`COMPONENT_SECRET`], a MUC service on [`MUC`],
//! plain-text logins without TLS, loopback ports picked by the OS.
//!
//! Every child process is killed when its guard is dropped; every wait polls with a deadline.
//! When a test panics, the tails of the server's and the bridge's logs are printed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tempfile::TempDir;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::stanza::Stanza;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event};

use crate::ejabberd::Ejabberd;
use crate::prosody::{Prosody, ProsodyOptions};

/// The component's domain in every test.
pub const DOMAIN: &str = "bot.localhost";
/// The virtual host the test users live on.
pub const HOST: &str = "localhost";
/// The test servers' MUC service.
pub const MUC: &str = "conference.localhost";
/// Throwaway component secret shared by the test server and the bridge.
pub const COMPONENT_SECRET: &str = "throwaway-component-secret";
/// Throwaway accounts created in every test server.
pub const USERS: &[(&str, &str)] = &[
    ("user1", "throwaway-password-1"),
    ("user2", "throwaway-password-2"),
];

/// Bridge configuration for tests of the module's error table: the bridge retries retryable
/// hook failures first unless `retry_for` is zero, which bounces at once like the module.
pub const BOUNCE_AT_ONCE: &str = "retry_for = \"0s\"";

/// How long a test waits for a reply that must come.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for a process to start listening.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval between readiness polls.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Is `program` installed? When it is not: skip (return false) with a notice, or fail when the
/// environment says this is CI (`CI=true`), where a skipped end-to-end test would hide a defect.
pub fn require_tool(program: &str, package: &str) -> bool {
    require(
        find_in_path(program).is_some(),
        &format!("`{program}`"),
        &format!("apt-get install -y {package}"),
    )
}

/// Is `what` available (`present`)? When it is not: skip (return false) with a notice saying
/// how to `install` it, or fail when `CI=true`, like [`require_tool`]; for what is not a
/// program on the `PATH`, such as a Python package.
pub fn require(present: bool, what: &str, install: &str) -> bool {
    if present {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if ci {
        panic!("the end-to-end tests need {what} (CI=true): install it with `{install}`");
    }
    eprintln!(
        "notice: {what} not found, skipping this end-to-end test (install it with `{install}`)"
    );
    false
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// The exit status, if the process has already exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id, while the process is held.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ports the OS says are free on 127.0.0.1; all held until all are known so they differ.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<StdListener> = (0..N)
        .map(|_| StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().expect("local addr").port();
    }
    ports
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A log file as text, whatever bytes it holds (ejabberd's console log is not always UTF-8:
/// it prints some binaries as Latin-1); empty while it does not exist.
pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of a log file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(cannot read: {e})"),
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The XMPP server: Prosody or ejabberd
// ---------------------------------------------------------------------------------------------

/// Which XMPP server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Prosody,
    Ejabberd,
}

impl ServerKind {
    /// Is this server installed? When it is not: skip (false) with a notice, or fail when
    /// `CI=true`, like [`require_tool`].
    pub fn require(self) -> bool {
        match self {
            ServerKind::Prosody => require_tool("prosody", "prosody"),
            ServerKind::Ejabberd => crate::ejabberd::require_ejabberd(),
        }
    }
}

impl ServerKind {
    /// The error (type, condition) a user gets from this server for a stanza to the
    /// component's domain while no component is connected. Prosody answers
    /// `wait/remote-server-timeout` ("Component unavailable"); ejabberd has no route for the
    /// domain and tries it as a remote server, so `cancel/remote-server-not-found` ("DNS lookup
    /// failed") — a permanent error for what is a short outage, but that is ejabberd's answer.
    pub fn component_unavailable_error(self) -> (&'static str, &'static str) {
        match self {
            ServerKind::Prosody => ("wait", "remote-server-timeout"),
            ServerKind::Ejabberd => ("cancel", "remote-server-not-found"),
        }
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerKind::Prosody => "Prosody",
            ServerKind::Ejabberd => "ejabberd",
        })
    }
}

/// How to set up a test server besides the defaults of [`Server::start`], in terms both
/// servers understand.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Keep messages for offline users and deliver them at their next login (Prosody's
    /// `offline` module, ejabberd's `mod_offline`); without it they are bounced.
    pub offline_messages: bool,
    /// Accounts besides [`USERS`]: (user, password).
    pub accounts: Vec<(String, String)>,
    /// Log only what the harness reads (component logins), not every stanza; for
    /// measurements, where logging would slow the server down.
    pub quiet: bool,
    /// ejabberd only: serve the component's domain over this many connections, each sender's
    /// bare JID hashed onto a fixed one (README, "Scaling out"). Prosody allows one connection
    /// per component, so asking it for this is a mistake in the test.
    pub component_connections: Option<u32>,
}

/// A throwaway XMPP server of either kind; every method means the same on both.
pub enum Server {
    Prosody(Prosody),
    Ejabberd(Ejabberd),
}

impl Server {
    /// Starts a server of `kind` with [`USERS`], the component [`DOMAIN`] and a MUC service on
    /// [`MUC`], and waits until it accepts clients and components.
    pub async fn start(kind: ServerKind) -> Server {
        Self::start_with(kind, &ServerOptions::default()).await
    }

    /// [`Self::start`] as `options` say.
    pub async fn start_with(kind: ServerKind, options: &ServerOptions) -> Server {
        match kind {
            ServerKind::Prosody => {
                assert!(
                    options.component_connections.is_none(),
                    "Prosody serves a component over one connection only"
                );
                let host_lines = if options.offline_messages {
                    "    modules_enabled = { \"offline\" }"
                } else {
                    ""
                };
                Server::Prosody(
                    Prosody::start_with_options(&ProsodyOptions {
                        host_lines: host_lines.to_owned(),
                        accounts: options.accounts.clone(),
                        quiet: options.quiet,
                    })
                    .await,
                )
            }
            ServerKind::Ejabberd => {
                // Hashed on the sender's bare JID, so that a sender's stanzas keep their order.
                let balancing = options
                    .component_connections
                    .map(|n| crate::ejabberd::domain_balancing_yaml(DOMAIN, "bare_source", n))
                    .unwrap_or_default();
                Server::Ejabberd(Ejabberd::start_with_yaml(options, &balancing).await)
            }
        }
    }

    pub fn kind(&self) -> ServerKind {
        match self {
            Server::Prosody(_) => ServerKind::Prosody,
            Server::Ejabberd(_) => ServerKind::Ejabberd,
        }
    }

    /// The port clients log in on.
    pub fn c2s_port(&self) -> u16 {
        match self {
            Server::Prosody(server) => server.c2s_port,
            Server::Ejabberd(server) => server.c2s_port,
        }
    }

    /// The port of the XEP-0114 component listener.
    pub fn component_port(&self) -> u16 {
        match self {
            Server::Prosody(server) => server.component_port,
            Server::Ejabberd(server) => server.component_port,
        }
    }

    /// How many times an external component has authenticated so far.
    pub fn component_logins(&self) -> usize {
        match self {
            Server::Prosody(server) => server.component_logins(),
            Server::Ejabberd(server) => server.component_logins(),
        }
    }

    /// SIGKILLs the server (no goodbye to anybody) and starts it again with the same
    /// configuration, data and ports; returns when the ports accept connections again, with
    /// the instant they did.
    pub async fn kill_and_restart(&mut self) -> Instant {
        self.kill();
        self.start_again().await
    }

    /// SIGKILLs the server and leaves it down.
    pub fn kill(&mut self) {
        match self {
            Server::Prosody(server) => server.kill(),
            Server::Ejabberd(server) => server.kill(),
        }
    }

    /// Starts the server again after [`Self::kill`]; returns when its ports accept connections
    /// again, with the instant they did.
    pub async fn start_again(&mut self) -> Instant {
        match self {
            Server::Prosody(server) => server.start_again().await,
            Server::Ejabberd(server) => server.start_again().await,
        }
    }

    /// Creates one more account (besides [`USERS`]) on the running server.
    pub async fn register(&self, user: &str, password: &str) {
        match self {
            Server::Prosody(server) => server.register(user, password),
            Server::Ejabberd(server) => server.register(user, password).await,
        }
    }

    /// A logged-in client for an account made with [`Self::register`].
    pub async fn client_as(&self, user: &str, password: &str) -> XmppClient {
        XmppClient::connect(self.c2s_port(), user, password).await
    }

    /// A logged-in client for one of [`USERS`].
    pub async fn client(&self, user: &str) -> XmppClient {
        let password = USERS
            .iter()
            .find(|(name, _)| *name == user)
            .map(|(_, password)| *password)
            .unwrap_or_else(|| panic!("unknown test user {user}"));
        self.client_as(user, password).await
    }

    /// The server's process id, while it runs (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Server::Prosody(server) => server.pid(),
            Server::Ejabberd(server) => server.pid(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook: the scripted one of [`crate::scripted`]
// ---------------------------------------------------------------------------------------------

pub use crate::scripted::{ClosedPort, Hook, Reply, Request, echo_text};

/// The webhook's URL when it listens on `port`.
pub fn hook_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/hook")
}

// ---------------------------------------------------------------------------------------------
// Bridge
// ---------------------------------------------------------------------------------------------

/// The bridge's configuration file, inside its temp dir (so `data_dir` defaults to `DIR/data`).
const BRIDGE_CONFIG: &str = "component-http.toml";

/// The component-http binary under test, connected to a [`Server`].
pub struct Bridge {
    child: ChildGuard,
    dir: TempDir,
}

impl Bridge {
    /// Starts the bridge against `server` with `hook_url`; `extra` is appended to the generated
    /// TOML. Returns once the server logged the component's successful authentication.
    pub async fn start(server: &Server, hook_url: &str, extra: &str) -> Bridge {
        let logins_before = server.component_logins();
        let mut bridge = Self::start_unchecked(server, hook_url, extra);
        bridge.wait_logged_in(server, logins_before).await;
        bridge
    }

    /// Starts the bridge like [`Self::start`] but returns at once, without waiting for the
    /// server to accept it: for a bridge the server may refuse.
    pub fn start_unchecked(server: &Server, hook_url: &str, extra: &str) -> Bridge {
        let dir = tempfile::Builder::new()
            .prefix("component-http-")
            .tempdir()
            .expect("temp dir");
        let config = format!(
            "domain = \"{DOMAIN}\"\nserver = \"127.0.0.1:{port}\"\nsecret = \"{COMPONENT_SECRET}\"\ncomponent_post_url = \"{hook_url}\"\n{extra}\n",
            port = server.component_port(),
        );
        std::fs::write(dir.path().join(BRIDGE_CONFIG), config).expect("write bridge config");
        std::fs::File::create(dir.path().join("bridge.log")).expect("bridge log");
        let mut bridge = Bridge {
            child: ChildGuard { child: None },
            dir,
        };
        bridge.spawn_process();
        bridge
    }

    /// Makes the bridge post to `hook_url` from its next start on ([`Self::restart`]): so that
    /// the hook can tell the calls of a restarted process from its predecessor's.
    pub fn change_hook_url(&self, hook_url: &str) {
        let path = self.dir.path().join(BRIDGE_CONFIG);
        let config = std::fs::read_to_string(&path).expect("read the bridge's config");
        let config: String = config
            .lines()
            .map(|line| {
                if line.starts_with("component_post_url = ") {
                    format!("component_post_url = \"{hook_url}\"\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(&path, config).expect("write the bridge's config");
    }

    /// SIGKILLs the bridge: no shutdown, no last commit, nothing flushed.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts the bridge again (after [`Self::kill`]) with the same configuration, so on the
    /// same queue; returns once the server logged its authentication.
    pub async fn restart(&mut self, server: &Server) {
        self.child.kill();
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
            .expect("bridge log");
        let _ = std::io::Write::write_all(&mut log, b"----- started again -----\n");
        self.spawn(server).await;
    }

    async fn spawn(&mut self, server: &Server) {
        let logins_before = server.component_logins();
        self.spawn_process();
        self.wait_logged_in(server, logins_before).await;
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
            .expect("bridge log");
        let child = Command::new(crate::bridge_binary())
            .arg("--config")
            .arg(self.dir.path().join(BRIDGE_CONFIG))
            .arg("run")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,component_http=debug".into()),
            )
            .env_remove("COMPONENT_HTTP_SECRET")
            .env_remove("COMPONENT_HTTP_CONFIG")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn component-http");
        self.child = ChildGuard::new(child);
    }

    /// Waits until the server has logged one more component login than `logins_before`, or
    /// this process has said it is online: under a flood of stanzas ejabberd's logger sheds
    /// events (OTP's overload protection), and its login line may be among them.
    async fn wait_logged_in(&mut self, server: &Server, logins_before: usize) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if server.component_logins() > logins_before || self.online_since_last_start() {
                return;
            }
            if let Some(status) = self.child.exited() {
                panic!(
                    "component-http exited with {status} before connecting; its log:\n{}",
                    tail(&self.log_path(), 40)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "component-http did not authenticate to {} within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    server.kind(),
                    tail(&self.log_path(), 40)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the running process has logged that the server accepted it.
    fn online_since_last_start(&self) -> bool {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        log.rsplit("----- started again -----")
            .next()
            .is_some_and(|latest| latest.contains("component online"))
    }

    /// The base URL of its HTTP API (`[api] listen` on port 0), from its latest start-up line.
    pub async fn api_base(&self) -> String {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let started = log
                .rsplit("----- started again -----")
                .next()
                .unwrap_or_default();
            if let Some(address) = started
                .lines()
                .filter(|line| line.contains("HTTP API listening"))
                .find_map(|line| line.split("address=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return format!("http://{address}");
            }
            assert!(
                Instant::now() < deadline,
                "the bridge's API did not start listening; its log:\n{}",
                tail(&self.log_path(), 40)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the bridge has seen its link to the server go down.
    pub async fn wait_link_down(&self) {
        let seen = wait_until(STARTUP_TIMEOUT, || {
            std::fs::read_to_string(self.log_path())
                .unwrap_or_default()
                .rsplit("----- started again -----")
                .next()
                .is_some_and(|log| log.contains("XMPP link down"))
        })
        .await;
        assert!(seen, "the bridge did not notice its link going down");
    }

    /// The queue's directory when the configuration leaves `data_dir` at its default.
    pub fn default_data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The bridge's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.pid().expect("the bridge is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
        kib * 1024
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("bridge.log")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.exited().is_none()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- component-http log (tail) -----\n{}\n-------------------------------------",
                tail(&self.log_path(), 60)
            );
        }
    }
}

/// A server, a webhook and the bridge between them: what most tests need.
pub struct Stack {
    // Field order is drop order: the bridge goes first, then the hook, then the server.
    pub bridge: Bridge,
    pub hook: Hook,
    pub server: Server,
}

impl Stack {
    /// Everything up and connected; `None` (after a notice) when the server is not installed.
    pub async fn start(
        kind: ServerKind,
        responder: impl Fn(&Request) -> Reply + Send + Sync + 'static,
        extra_config: &str,
    ) -> Option<Stack> {
        if !kind.require() {
            return None;
        }
        let server = Server::start(kind).await;
        let hook = Hook::start(responder).await;
        let bridge = Bridge::start(&server, &hook.url(), extra_config).await;
        Some(Stack {
            bridge,
            hook,
            server,
        })
    }

    pub async fn client(&self, user: &str) -> XmppClient {
        self.server.client(user).await
    }
}

// ---------------------------------------------------------------------------------------------
// XMPP client
// ---------------------------------------------------------------------------------------------

/// A real XMPP client (plain TCP to the test server), logged in and available.
pub struct XmppClient {
    client: Client,
    pub jid: FullJid,
    /// Everything received and not yet consumed by a `recv`.
    pending: VecDeque<Element>,
}

impl XmppClient {
    pub async fn connect(c2s_port: u16, user: &str, password: &str) -> XmppClient {
        let jid = BareJid::from_str(&format!("{user}@{HOST}")).expect("test JID");
        let mut client = Client::new_plaintext(
            jid,
            password.to_owned(),
            DnsConfig::addr(&format!("127.0.0.1:{c2s_port}")),
            Timeouts::tight(),
        );
        let bound = tokio::time::timeout(REPLY_TIMEOUT, async {
            loop {
                match client.next().await {
                    Some(Event::Online { bound_jid, .. }) => break bound_jid,
                    Some(Event::Disconnected(error)) => {
                        panic!("{user} could not log in: {error}")
                    }
                    Some(Event::Stanza(_)) => {}
                    None => panic!("{user}: the client stream ended before login"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{user} did not log in within {REPLY_TIMEOUT:?}"));
        let jid = bound.try_into_full().expect("a bound JID is a full JID");
        let mut this = XmppClient {
            client,
            jid,
            pending: VecDeque::new(),
        };
        // Initial presence, so presence addressed to the bare JID reaches this resource.
        this.send_xml("<presence/>").await;
        this
    }

    /// Sends one stanza written as XML in the `jabber:client` namespace (no `xmlns` needed).
    pub async fn send_xml(&mut self, xml: &str) {
        let element = parse_stanza_xml(xml, "jabber:client");
        let stanza = Stanza::try_from(element)
            .unwrap_or_else(|e| panic!("not a stanza the client can send ({e}): {xml}"));
        tokio::time::timeout(REPLY_TIMEOUT, self.client.send_stanza(stanza))
            .await
            .expect("sending timed out")
            .expect("the client could not send");
    }

    /// Receives the next stanza for which `matches` holds; other stanzas are kept for later
    /// calls. Panics with everything seen when nothing matches within `timeout`.
    pub async fn recv_where(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Element) -> bool,
    ) -> Element {
        match self.try_recv_where(what, timeout, matches).await {
            Some(element) => element,
            None => panic!(
                "no {what} within {timeout:?}; received meanwhile:\n{}",
                self.describe_pending()
            ),
        }
    }

    /// Like [`Self::recv_where`], but `None` when nothing matched within `timeout`.
    pub async fn try_recv_where(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        if let Some(index) = self.pending.iter().position(&matches) {
            return self.pending.remove(index);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = match tokio::time::timeout_at(deadline, self.client.next()).await {
                Ok(Some(event)) => event,
                Ok(None) => panic!("the client stream ended while waiting for {what}"),
                Err(_) => return None,
            };
            match event {
                Event::Stanza(stanza) => {
                    let element = Element::from(stanza);
                    if matches(&element) {
                        return Some(element);
                    }
                    self.pending.push_back(element);
                }
                Event::Online { .. } => {}
                Event::Disconnected(error) => {
                    panic!("the client was disconnected while waiting for {what}: {error}")
                }
            }
        }
    }

    /// The next stanza (one kept by an earlier `recv_where` first) if one comes within
    /// `timeout`; with a zero `timeout` only what has already arrived. Panics if the client
    /// lost its session: what was addressed to the old one never arrives.
    pub async fn recv_any(&mut self, timeout: Duration) -> Option<Element> {
        if let Some(element) = self.pending.pop_front() {
            return Some(element);
        }
        match tokio::time::timeout(timeout, self.client.next()).await {
            Err(_) => None,
            Ok(Some(Event::Stanza(stanza))) => Some(Element::from(stanza)),
            Ok(Some(Event::Online { bound_jid, .. })) => panic!(
                "{} logged in again (as {bound_jid}): stanzas for its old session are lost",
                self.jid
            ),
            Ok(Some(Event::Disconnected(error))) => {
                panic!("{} was disconnected: {error}", self.jid)
            }
            Ok(None) => panic!("the stream of {} ended", self.jid),
        }
    }

    /// Stanzas received and not consumed yet, for assertions that something did not arrive.
    pub fn unconsumed(&self) -> &VecDeque<Element> {
        &self.pending
    }

    /// The next message from the component's domain (any JID in it).
    pub async fn recv_message_from_component(&mut self) -> Element {
        self.recv_where("message from the component", REPLY_TIMEOUT, |e| {
            e.name() == "message" && from_component(e)
        })
        .await
    }

    /// The iq answering `id`.
    pub async fn recv_iq(&mut self, id: &str) -> Element {
        self.recv_where(&format!("iq answer to id {id}"), REPLY_TIMEOUT, |e| {
            e.name() == "iq" && e.attr("id") == Some(id)
        })
        .await
    }

    /// Sends an iq of `type_` with `payload` (XML) to `to` and returns its answer.
    pub async fn iq(&mut self, to: &str, type_: &str, id: &str, payload: &str) -> Element {
        self.send_xml(&format!(
            "<iq to='{to}' type='{type_}' id='{id}'>{payload}</iq>"
        ))
        .await;
        self.recv_iq(id).await
    }

    /// Sends a chat message with `body` to `to` and returns the next message from the component.
    pub async fn chat(&mut self, to: &str, id: &str, body: &str) -> Element {
        self.send_xml(&format!(
            "<message to='{to}' type='chat' id='{id}'><body>{}</body></message>",
            xml_escape(body)
        ))
        .await;
        self.recv_message_from_component().await
    }

    /// Proves that nothing from the component was answered to what was sent before to `to`:
    /// sends a marker message to the same JID (same conversation, so delivered after it) and
    /// asserts that the first message coming back from the component is the marker's echo.
    /// The hook must answer bodies starting with `marker` like the echo bot.
    pub async fn assert_nothing_before_marker(&mut self, to: &str, after_what: &str) {
        let marker = format!("marker-{}", next_marker());
        let reply = self.chat(to, &marker, &marker).await;
        assert_eq!(
            body(&reply).as_deref(),
            Some(echo_text(&marker).as_str()),
            "expected no reply to {after_what}, but the component sent: {}",
            to_xml(&reply)
        );
    }

    /// Closes the stream cleanly (bounded in time).
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(3), self.client.send_end()).await;
    }

    fn describe_pending(&self) -> String {
        let mut out = String::new();
        for element in &self.pending {
            let _ = writeln!(out, "  {}", to_xml(element));
        }
        if out.is_empty() {
            out.push_str("  (nothing)");
        }
        out
    }
}

fn next_marker() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Parses one stanza written without a namespace as if it were inside a stream whose default
/// namespace is `ns`.
pub fn parse_stanza_xml(xml: &str, ns: &str) -> Element {
    let wrapped = format!("<wrapper xmlns='{ns}'>{xml}</wrapper>");
    let wrapper =
        Element::from_str(&wrapped).unwrap_or_else(|e| panic!("not well-formed XML ({e}): {xml}"));
    let mut children = wrapper.children().cloned();
    let first = children
        .next()
        .unwrap_or_else(|| panic!("no element in: {xml}"));
    assert!(children.next().is_none(), "more than one element in: {xml}");
    first
}

pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

pub fn to_xml(element: &Element) -> String {
    String::from(element)
}

/// Whether `from` is inside the component's domain.
pub fn from_component(element: &Element) -> bool {
    element.attr("from").is_some_and(|from| {
        let domain_part = from.split('/').next().unwrap_or("");
        let domain = domain_part.rsplit('@').next().unwrap_or("");
        domain == DOMAIN
    })
}

/// The text of the `<body>` without `xml:lang` (or the first one).
pub fn body(element: &Element) -> Option<String> {
    element
        .children()
        .find(|c| c.name() == "body")
        .map(Element::text)
}

/// A stanza error as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaErrorInfo {
    pub type_: String,
    pub condition: String,
    pub text: Option<String>,
    pub by: Option<String>,
}

pub const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The `<error/>` child of an error stanza, decoded.
pub fn stanza_error(element: &Element) -> Option<StanzaErrorInfo> {
    if element.attr("type") != Some("error") {
        return None;
    }
    let error = element.children().find(|c| c.name() == "error")?;
    let condition = error
        .children()
        .find(|c| c.ns() == STANZAS_NS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let text = error
        .children()
        .find(|c| c.ns() == STANZAS_NS && c.name() == "text")
        .map(Element::text);
    Some(StanzaErrorInfo {
        type_: error.attr("type").unwrap_or("").to_owned(),
        condition,
        text,
        by: error.attr("by").map(str::to_owned),
    })
}
