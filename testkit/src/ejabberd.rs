//! A throwaway ejabberd per test, the counterpart of [`crate::prosody`]: Debian's ejabberd
//! started in the foreground from its own temp dir (configuration, Mnesia spool, logs, `HOME`),
//! on loopback ports picked by the OS, with the component listener of the README, the test
//! accounts and a MUC service. What every server shares is in [`crate::e2e`].
//!
//! The Erlang VM runs without distribution (no node name, no epmd, no cookie): nothing is
//! shared between instances, so tests in parallel threads, several test binaries and a system
//! ejabberd cannot collide, and it works as any user, root included (`ejabberdctl` would switch
//! to the `ejabberd` user and needs a named node). Accounts are created through ejabberd's
//! HTTP API (`mod_http_api`) on a loopback listener that allows `register` only.
//!
//! The process is killed when its guard is dropped; every wait polls with a deadline. When a
//! test panics, the tail of ejabberd's log is printed.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::e2e::{
    COMPONENT_SECRET, ChildGuard, DOMAIN, HOST, MUC, POLL, STARTUP_TIMEOUT, ServerOptions, USERS,
    free_ports, port_open, read_log, require, tail,
};

/// The console log line of ejabberd 23.01 when an external component has authenticated.
const COMPONENT_AUTHENTICATED: &str = "Accepted external component handshake authentication";
/// Console log lines that mean the start failed for good (a port taken, a bad option); the VM
/// exits soon after, but there is no need to wait for it.
const START_FAILED: &[&str] = &["Failed to start ejabberd application", "eaddrinuse"];
/// Where Debian's package puts the control script, which names the VM and ejabberd's libraries.
const EJABBERDCTL: &str = "ejabberdctl";
const EJABBERDCTL_FALLBACK: &str = "/usr/sbin/ejabberdctl";
/// Deadline for one HTTP API call.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// The `listen` entry of the component: the README's ejabberd snippet ("The XMPP server's
/// side") is this with port 5347, `bot.example.org` and `change-me`, so what the tests prove is
/// what the README tells administrators to write.
pub fn component_listener_yaml(port: u16, domain: &str, secret: &str) -> String {
    format!(
        r#"listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "{domain}":
        password: "{secret}"
"#
    )
}

/// The top-level `domain_balancing` entry of the README ("Scaling out"): ejabberd hashes each
/// stanza for `domain` by `kind` (`bare_source`: the sender's bare JID) onto `component_number`
/// connection slots. Both keys are needed: ejabberd 23.01 reads `component_number` without a
/// default, and a slot without a connection drops what is hashed to it.
pub fn domain_balancing_yaml(domain: &str, kind: &str, component_number: u32) -> String {
    format!(
        r#"domain_balancing:
  "{domain}":
    type: {kind}
    component_number: {component_number}
"#
    )
}

/// Whether ejabberd is installed, without [`require_ejabberd`]'s skip or failure: for a caller
/// that decides itself what a missing server means (the benchmark).
pub fn installed() -> bool {
    Installation::find().is_some()
}

/// Is ejabberd installed? Like [`crate::e2e::require_tool`] (skip with a notice, or fail when
/// `CI=true`), looking in `/usr/sbin` too, which is not on every user's `PATH`.
pub fn require_ejabberd() -> bool {
    require(
        Installation::find().is_some(),
        "ejabberd (`ejabberdctl`)",
        "apt-get install -y ejabberd",
    )
}

/// The Erlang VM and the library directory holding ejabberd, as the package's `ejabberdctl`
/// names them (`ERL=…`, `ERL_LIBS=…`), so the harness starts ejabberd exactly as it would,
/// minus the switch to the `ejabberd` user and the named node.
#[derive(Debug, Clone)]
struct Installation {
    erl: PathBuf,
    libs: OsString,
}

impl Installation {
    fn find() -> Option<Installation> {
        let script = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join(EJABBERDCTL))
            .chain([PathBuf::from(EJABBERDCTL_FALLBACK)])
            .find(|candidate| candidate.is_file())?;
        let text = std::fs::read_to_string(script).ok()?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix(&format!("{name}=")))
                .map(|value| {
                    value
                        .trim()
                        .trim_matches(|c| c == '"' || c == '\'')
                        .to_owned()
                })
                .filter(|value| !value.is_empty() && !value.contains('$'))
        };
        let erl = PathBuf::from(value("ERL")?);
        erl.is_file().then(|| Installation {
            erl,
            libs: value("ERL_LIBS").unwrap_or_default().into(),
        })
    }
}

/// A throwaway ejabberd running in the foreground with its own configuration, spool and logs.
pub struct Ejabberd {
    child: ChildGuard,
    dir: TempDir,
    installation: Installation,
    pub c2s_port: u16,
    pub component_port: u16,
    /// The loopback HTTP listener of `mod_http_api`, for creating accounts.
    api_port: u16,
}

impl Ejabberd {
    /// Starts ejabberd as `options` say, with [`USERS`] and `options.accounts` registered, and
    /// waits until its client and component ports accept connections.
    pub async fn start_with(options: &ServerOptions) -> Ejabberd {
        Self::start_with_yaml(options, "").await
    }

    /// [`Self::start_with`], with `top_level` (YAML at the top level of the configuration,
    /// such as [`domain_balancing_yaml`]) added to the configuration.
    pub async fn start_with_yaml(options: &ServerOptions, top_level: &str) -> Ejabberd {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(options, top_level).await {
                Ok(ejabberd) => return ejabberd,
                Err(error) => {
                    eprintln!("ejabberd did not start, trying again: {error}");
                    last_error = error;
                }
            }
        }
        panic!("ejabberd did not start: {last_error}");
    }

    async fn try_start(options: &ServerOptions, top_level: &str) -> Result<Ejabberd, String> {
        let installation = Installation::find()
            .ok_or("ejabberd is not installed (apt-get install -y ejabberd)")?;
        let dir = tempfile::Builder::new()
            .prefix("ejabberd-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("spool")).expect("spool dir");
        let [c2s_port, component_port, api_port] = free_ports::<3>();
        let log_level = if options.quiet { "info" } else { "debug" };
        let offline = if options.offline_messages {
            "  mod_offline: {}\n"
        } else {
            ""
        };
        let component_listener = component_listener_yaml(component_port, DOMAIN, COMPONENT_SECRET);
        let other_listeners = format!(
            r#"  - port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
  - port: {api_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
"#
        );
        let config = format!(
            r#"# throwaway ejabberd for end-to-end tests
hosts:
  - "{HOST}"
loglevel: {log_level}
# Test clients log in over plain TCP (no STARTTLS offered without certificates) with PLAIN
# or SCRAM; nothing here needs a certificate or ACME.
certfiles: []
acme:
  auto: false
auth_method: internal
auth_password_format: plain
{top_level}{component_listener}{other_listeners}
# The harness creates accounts over HTTP from loopback; nothing else is allowed there.
api_permissions:
  "accounts for the tests":
    from: mod_http_api
    who:
      ip: 127.0.0.1/32
    what: register
modules:
  mod_disco: {{}}
  mod_roster: {{}}
  mod_ping: {{}}
  mod_muc:
    host: "{MUC}"
    default_room_options:
      persistent: true
{offline}"#
        );
        std::fs::write(dir.path().join("ejabberd.yml"), config).expect("write ejabberd config");
        let mut ejabberd = Ejabberd {
            child: ChildGuard::new(spawn_ejabberd(dir.path(), &installation)),
            dir,
            installation,
            c2s_port,
            component_port,
            api_port,
        };
        ejabberd.wait_ready().await?;
        let accounts = USERS
            .iter()
            .map(|(user, password)| (user.to_string(), password.to_string()))
            .chain(options.accounts.iter().cloned());
        for (user, password) in accounts {
            ejabberd.try_register(&user, &password).await?;
        }
        Ok(ejabberd)
    }

    /// ejabberd's console output: its log at the configured level, written at once (the log
    /// file under `logs/` is written in batches, too late to poll).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ejabberd.out")
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let ports = [self.c2s_port, self.component_port, self.api_port];
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.exited() {
                return Err(format!(
                    "ejabberd exited with {status}; output:\n{}",
                    tail(&self.log_path(), 40)
                ));
            }
            let log = read_log(&self.log_path());
            if START_FAILED.iter().any(|line| log.contains(line)) {
                return Err(format!(
                    "ejabberd could not start (a port taken?):\n{}",
                    tail(&self.log_path(), 40)
                ));
            }
            if ports.iter().all(|port| port_open(*port)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ports {ports:?} not open after {STARTUP_TIMEOUT:?}; output:\n{}",
                    tail(&self.log_path(), 40)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs ejabberd and leaves it down.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts ejabberd again after [`Self::kill`], with the same configuration, spool (so the
    /// same accounts and rooms) and ports; returns when the ports accept connections again, with
    /// the instant they did.
    pub async fn start_again(&mut self) -> Instant {
        self.append_to_log("----- started again -----\n");
        self.child = ChildGuard::new(spawn_ejabberd(self.dir.path(), &self.installation));
        if let Err(error) = self.wait_ready().await {
            panic!("ejabberd did not come back: {error}");
        }
        Instant::now()
    }

    /// ejabberd's process id (the Erlang VM's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// How many times an external component has authenticated so far (over restarts too).
    pub fn component_logins(&self) -> usize {
        read_log(&self.log_path())
            .matches(COMPONENT_AUTHENTICATED)
            .count()
    }

    /// Creates one more account (besides [`USERS`]) on the running server.
    pub async fn register(&self, user: &str, password: &str) {
        if let Err(error) = self.try_register(user, password).await {
            panic!("{error}");
        }
    }

    async fn try_register(&self, user: &str, password: &str) -> Result<(), String> {
        let body = serde_json::json!({ "user": user, "host": HOST, "password": password });
        let port = self.api_port;
        let answer = tokio::task::spawn_blocking(move || api_call(port, "register", &body))
            .await
            .map_err(|e| format!("the HTTP API call panicked: {e}"))?;
        match answer {
            Ok((200, _)) => Ok(()),
            Ok((status, text)) => Err(format!(
                "ejabberd refused to register {user}@{HOST}: {status} {text}"
            )),
            Err(error) => Err(format!(
                "ejabberd's HTTP API did not register {user}@{HOST}: {error}"
            )),
        }
    }

    fn append_to_log(&self, line: &str) {
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
        {
            let _ = log.write_all(line.as_bytes());
        }
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- ejabberd log (tail) -----\n{}\n-------------------------------",
                tail(&self.log_path(), 60)
            );
        }
    }
}

/// One call of ejabberd's HTTP API (`POST /api/COMMAND` with a JSON body) over HTTP/1.1 with
/// `Connection: close`: the status code and the body.
fn api_call(port: u16, command: &str, body: &serde_json::Value) -> Result<(u16, String), String> {
    let body = body.to_string();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&address, API_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(API_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(API_TIMEOUT)))
        .map_err(|e| format!("timeouts: {e}"))?;
    let request = format!(
        "POST /api/{command} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, text))
}

/// Starts the Erlang VM with ejabberd as `ejabberdctl foreground` would, but unnamed (no
/// distribution) and with everything it writes under `dir`.
fn spawn_ejabberd(dir: &Path, installation: &Installation) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ejabberd.out"))
        .expect("ejabberd output file");
    let err = out.try_clone().expect("clone output file");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("ejabberd logs dir");
    Command::new(&installation.erl)
        .arg("-noinput")
        // Schedulers that spin while idle would take CPU from the tests and the other
        // instances running beside this one.
        .args(["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"])
        .args(["-mnesia", "dir"])
        .arg(erlang_string(&dir.join("spool")))
        .args(["-s", "ejabberd"])
        .env("HOME", dir)
        .env("ERL_LIBS", &installation.libs)
        .env("EJABBERD_CONFIG_PATH", dir.join("ejabberd.yml"))
        .env("EJABBERD_LOG_PATH", logs.join("ejabberd.log"))
        .env("ERL_CRASH_DUMP", logs.join("erl_crash.dump"))
        // No contributed modules from the machine's configuration.
        .env_remove("CONTRIB_MODULES_PATH")
        .env_remove("CONTRIB_MODULES_CONF_DIR")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn ejabberd (erl)")
}

/// `path` as an Erlang string literal, the form `-mnesia dir` takes.
fn erlang_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
