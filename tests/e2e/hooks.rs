//! The example hooks of `examples/hooks/` (README, "Signed calls"), each built and started the
//! way `examples/hooks/README.md` says, with a throwaway `whsec_` secret: a real user's message
//! reaches the hook through the server and the bridge signing with the same secret, and the hook's
//! echo comes back. A bridge that signs with another secret is refused with `401`, which the user
//! sees as `auth/not-authorized` with the hook's text (README, "How the response becomes the
//! reply", rule 5).
//!
//! Each hook is a child process killed when its [`ExampleHook`] is dropped. A missing language
//! tool or package skips the test with a notice, and fails it when `CI=true`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::harness::ServerKind;
use crate::harness::{
    Bridge, ChildGuard, Server, body, require, require_tool, stanza_error, to_xml,
};

/// The bot the user writes to.
const BOT: &str = "echo@bot.localhost";
/// What the user says: non-ASCII, and every character XML or JSON escapes.
const SAID: &str = "hi <&> ✓ \"quoted\" 'single' \\ ünïcödé";
/// How long a hook may take to print its `listening on` line once started.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `go build` or `npm ci` may take (`npm ci` downloads when its cache is cold).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(180);

/// A throwaway signing secret in the `whsec_` form the hooks and the bridge read.
fn secret(seed: &str) -> String {
    format!(
        "whsec_{}",
        BASE64.encode(format!("throwaway key of the {seed} test, 32+ bytes"))
    )
}

fn example_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/hooks")
        .join(name);
    assert!(dir.is_dir(), "{} is missing", dir.display());
    dir
}

/// One example hook running as a child process, listening on a port it chose itself. Dropping
/// it kills the process, then removes its scratch directory.
struct ExampleHook {
    // Field order is drop order: the process goes before the directory it may run from.
    child: ChildGuard,
    port: u16,
    stderr: PathBuf,
    _scratch: TempDir,
}

impl ExampleHook {
    /// `command` (a program and its working directory), started with `WEBHOOK_SECRET` and
    /// `PORT=0`; returns once it printed `listening on 127.0.0.1:PORT`.
    async fn start(mut command: Command, secret: &str, scratch: TempDir) -> ExampleHook {
        let stderr = scratch.path().join("hook.stderr");
        let log = std::fs::File::create(&stderr).expect("the hook's stderr file");
        let mut child = command
            .env("WEBHOOK_SECRET", secret)
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("the hook's stdout");
        let mut hook = ExampleHook {
            child: ChildGuard::new(child),
            port: 0,
            stderr,
            _scratch: scratch,
        };
        // A thread reads stdout to its end, so the hook never blocks on a full pipe; the first
        // `listening on` line is the port. The thread ends when the hook is killed.
        let (listening, heard) = oneshot::channel();
        std::thread::spawn(move || {
            let mut listening = Some(listening);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("listening on ")
                    && let Some(sender) = listening.take()
                {
                    let _ = sender.send(address.trim().to_owned());
                }
            }
        });
        let address = match tokio::time::timeout(LISTEN_TIMEOUT, heard).await {
            Ok(Ok(address)) => address,
            Ok(Err(_)) => panic!(
                "{command:?} closed its stdout without `listening on`; its stderr:\n{}",
                hook.stderr_text()
            ),
            Err(_) => panic!(
                "{command:?} did not print `listening on` within {LISTEN_TIMEOUT:?}; its stderr:\n{}",
                hook.stderr_text()
            ),
        };
        hook.port = address
            .strip_prefix("127.0.0.1:")
            .and_then(|port| port.parse().ok())
            .filter(|&port| port != 0)
            .unwrap_or_else(|| panic!("`listening on {address}` is not 127.0.0.1 and a port"));
        hook
    }

    /// `examples/hooks/python-flask`: `python3 app.py`.
    async fn python(secret: &str) -> ExampleHook {
        let scratch = scratch("python-flask");
        let mut command = Command::new("python3");
        command
            .arg("app.py")
            .current_dir(example_dir("python-flask"))
            // Nothing written into the repository.
            .env("PYTHONDONTWRITEBYTECODE", "1");
        Self::start(command, secret, scratch).await
    }

    /// `examples/hooks/node-express`: `npm ci` in a copy of its directory (so no
    /// `node_modules` in the repository), then `node server.js` there.
    async fn node(secret: &str) -> ExampleHook {
        let scratch = scratch("node-express");
        let source = example_dir("node-express");
        for file in ["package.json", "package-lock.json", "server.js"] {
            std::fs::copy(source.join(file), scratch.path().join(file))
                .unwrap_or_else(|e| panic!("copy {file} of the Node hook: {e}"));
        }
        let mut npm = tokio::process::Command::new("npm");
        npm.args([
            "ci",
            "--ignore-scripts",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(scratch.path());
        prepare("npm ci", npm).await;
        let mut command = Command::new("node");
        command.arg("server.js").current_dir(scratch.path());
        Self::start(command, secret, scratch).await
    }

    /// `examples/hooks/go-nethttp`: `go build -o SCRATCH/echo-hook .`, then the binary (not
    /// `go run`, whose server would outlive it when killed).
    async fn go(secret: &str) -> ExampleHook {
        let scratch = scratch("go-nethttp");
        let binary = scratch.path().join("echo-hook");
        let mut go = tokio::process::Command::new("go");
        go.arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(".")
            .current_dir(example_dir("go-nethttp"));
        // Go keeps its build cache under $HOME; without one, a cache of this test's own.
        if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
            go.env("GOCACHE", scratch.path().join("go-cache"));
        }
        prepare("go build", go).await;
        let mut command = Command::new(&binary);
        command.current_dir(scratch.path());
        Self::start(command, secret, scratch).await
    }

    /// The URL the bridge posts to.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/xmpp", self.port)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_else(|e| format!("(cannot read: {e})"))
    }
}

impl Drop for ExampleHook {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- example hook's stderr -----\n{}\n---------------------------------",
                self.stderr_text()
            );
        }
    }
}

fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("hook-{name}-"))
        .tempdir()
        .expect("temp dir")
}

/// Runs a build step to its end within [`PREPARE_TIMEOUT`]; panics with its output if it fails.
async fn prepare(what: &str, mut command: tokio::process::Command) {
    command.stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(PREPARE_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PREPARE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What the Python hook needs: python3 with Flask and the Standard Webhooks library.
fn require_python_hook() -> bool {
    require_tool("python3", "python3")
        && require(
            python_has("flask, standardwebhooks"),
            "the Python packages `flask` and `standardwebhooks`",
            "python3 -m pip install -r examples/hooks/python-flask/requirements.txt",
        )
}

/// The bridge's configuration: it signs every call with `secret`.
fn signing(secret: &str) -> String {
    format!("[webhook]\nsigning_secret = \"{secret}\"")
}

/// The user says [`SAID`] to the bot through a bridge signing with the hook's own secret, and
/// gets the hook's echo.
async fn assert_echoes(hook: ExampleHook, server: Server, secret: &str, id: &str) {
    let _bridge = Bridge::start(&server, &hook.url(), &signing(secret)).await;
    let mut user = server.client("user1").await;

    let reply = user.chat(BOT, id, SAID).await;

    let expected = format!("You said: {SAID}");
    assert_eq!(
        body(&reply).as_deref(),
        Some(expected.as_str()),
        "{}",
        to_xml(&reply)
    );
    assert_eq!(reply.attr("from"), Some(BOT), "{}", to_xml(&reply));
    assert_eq!(reply.attr("type"), Some("chat"), "{}", to_xml(&reply));
    assert_eq!(reply.attr("id"), Some(id), "{}", to_xml(&reply));
    user.close().await;
}

async fn the_python_flask_hook_verifies_the_signature_and_echoes(kind: ServerKind) {
    if !kind.require() || !require_python_hook() {
        return;
    }
    let secret = secret("python");
    let (hook, server) = tokio::join!(ExampleHook::python(&secret), Server::start(kind));
    assert_echoes(hook, server, &secret, "flask-1").await;
}
on_both_servers!(the_python_flask_hook_verifies_the_signature_and_echoes);

async fn the_node_express_hook_verifies_the_signature_and_echoes(kind: ServerKind) {
    if !kind.require() || !require_tool("node", "nodejs") || !require_tool("npm", "npm") {
        return;
    }
    let secret = secret("node");
    let (hook, server) = tokio::join!(ExampleHook::node(&secret), Server::start(kind));
    assert_echoes(hook, server, &secret, "express-1").await;
}
on_both_servers!(the_node_express_hook_verifies_the_signature_and_echoes);

async fn the_go_nethttp_hook_verifies_the_signature_and_echoes(kind: ServerKind) {
    if !kind.require() || !require_tool("go", "golang-go") {
        return;
    }
    let secret = secret("go");
    let (hook, server) = tokio::join!(ExampleHook::go(&secret), Server::start(kind));
    assert_echoes(hook, server, &secret, "nethttp-1").await;
}
on_both_servers!(the_go_nethttp_hook_verifies_the_signature_and_echoes);

async fn a_call_signed_with_another_secret_is_refused_and_the_user_gets_not_authorized(
    kind: ServerKind,
) {
    if !kind.require() || !require_python_hook() {
        return;
    }
    let (hook_secret, bridge_secret) = (secret("hook's own"), secret("bridge's other"));
    let (hook, server) = tokio::join!(ExampleHook::python(&hook_secret), Server::start(kind));
    let _bridge = Bridge::start(&server, &hook.url(), &signing(&bridge_secret)).await;
    let mut user = server.client("user1").await;

    let reply = user.chat(BOT, "wrong-key-1", SAID).await;

    let xml = to_xml(&reply);
    assert_eq!(reply.attr("type"), Some("error"), "{xml}");
    assert_eq!(reply.attr("from"), Some(BOT), "{xml}");
    assert_eq!(
        reply.attr("to"),
        Some(user.jid.to_string().as_str()),
        "{xml}"
    );
    assert_eq!(reply.attr("id"), Some("wrong-key-1"), "{xml}");
    assert_eq!(body(&reply), None, "no echo in a refusal: {xml}");
    let error = stanza_error(&reply).unwrap_or_else(|| panic!("no stanza error in {xml}"));
    assert_eq!(error.type_, "auth", "{xml}");
    assert_eq!(error.condition, "not-authorized", "{xml}");
    assert_eq!(
        error.text.as_deref(),
        Some("invalid signature"),
        "the hook's text/plain answer is the error's text: {xml}"
    );
    assert_eq!(error.by.as_deref(), Some("bot.localhost"), "{xml}");
    user.close().await;
}
on_both_servers!(a_call_signed_with_another_secret_is_refused_and_the_user_gets_not_authorized);
