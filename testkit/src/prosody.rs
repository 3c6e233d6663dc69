//! A throwaway Prosody per test: foreground, its own temp dir for configuration, data and log,
//! loopback ports picked by the OS, the test accounts, `Component "bot.localhost"` and a MUC
//! service. What every server shares (the bridge, the client, the helpers) is in
//! [`crate::e2e`]; this module only knows how to run Prosody.
//!
//! The process is killed when its guard is dropped; every wait polls with a deadline. When a
//! test panics, the tail of Prosody's log is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use tempfile::TempDir;

use crate::e2e::{
    ChildGuard, DOMAIN, HOST, MUC, POLL, STARTUP_TIMEOUT, USERS, free_ports, port_open, tail,
};

// Public here too: the benchmark's end-to-end rows take the secret from beside the Prosody they
// start.
pub use crate::e2e::COMPONENT_SECRET;

/// How to set up a test Prosody besides the defaults of [`Prosody::start`].
#[derive(Debug, Clone, Default)]
pub struct ProsodyOptions {
    /// Lines added to the users' `VirtualHost` section.
    pub host_lines: String,
    /// Accounts besides [`USERS`]: (user, password).
    pub accounts: Vec<(String, String)>,
    /// Log only at `info` (what the harness reads: component logins), not every stanza at
    /// `debug`; for measurements, where logging would slow Prosody down.
    pub quiet: bool,
}

/// The log line Prosody writes when an external component has authenticated.
const COMPONENT_AUTHENTICATED: &str = "External component successfully authenticated";

/// A throwaway Prosody running in the foreground with its own config, data and log.
pub struct Prosody {
    child: ChildGuard,
    dir: TempDir,
    pub c2s_port: u16,
    pub component_port: u16,
}

impl Prosody {
    /// Starts Prosody with the test users registered, `Component "bot.localhost"` and a MUC
    /// service on [`MUC`], and waits until both its client and component ports accept
    /// connections.
    pub async fn start() -> Prosody {
        Self::start_with_options(&ProsodyOptions::default()).await
    }

    /// [`Self::start`] as `options` say.
    pub async fn start_with_options(options: &ProsodyOptions) -> Prosody {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(options).await {
                Ok(prosody) => return prosody,
                Err(error) => {
                    eprintln!("Prosody did not start, trying again: {error}");
                    last_error = error;
                }
            }
        }
        panic!("Prosody did not start: {last_error}");
    }

    async fn try_start(options: &ProsodyOptions) -> Result<Prosody, String> {
        let host_lines = &options.host_lines;
        let log_level = if options.quiet { "info" } else { "debug" };
        let dir = tempfile::Builder::new()
            .prefix("prosody-")
            .tempdir()
            .expect("temp dir");
        let [c2s_port, component_port] = free_ports::<2>();
        let data = dir.path().join("data");
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        register_users(&data);
        for (user, password) in &options.accounts {
            write_account(&data, user, password);
        }
        let config = format!(
            r#"-- throwaway Prosody for end-to-end tests
daemonize = false
pidfile = "{pidfile}"
data_path = "{data}"
certificates = "{certs}"
log = {{ {log_level} = "{log}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping" }}
-- mod_posix is loaded automatically on Linux and refuses root (racily: sometimes the
-- client port is closed again a moment after startup); nothing here needs it.
modules_disabled = {{ "s2s"; "posix" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"

VirtualHost "{HOST}"
{host_lines}

Component "{DOMAIN}"
    component_secret = "{COMPONENT_SECRET}"

Component "{MUC}" "muc"
    muc_room_locking = false
    muc_room_default_persistent = true
"#,
            pidfile = dir.path().join("prosody.pid").display(),
            data = data.display(),
            certs = certs.display(),
            log = dir.path().join("prosody.log").display(),
        );
        std::fs::write(dir.path().join("prosody.cfg.lua"), config).expect("write prosody config");
        let mut prosody = Prosody {
            child: ChildGuard::new(spawn_prosody(dir.path())),
            dir,
            c2s_port,
            component_port,
        };
        prosody.wait_ready().await?;
        Ok(prosody)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let (c2s, component) = (self.c2s_port, self.component_port);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.exited() {
                return Err(format!(
                    "prosody exited with {status}; output:\n{}\nlog:\n{}",
                    tail(&self.dir.path().join("prosody.out"), 30),
                    tail(&self.log_path(), 30)
                ));
            }
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.contains("Failed to open server port") {
                return Err(format!("a port was taken:\n{}", tail(&self.log_path(), 30)));
            }
            if port_open(c2s) && port_open(component) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ports {c2s}/{component} not open after {STARTUP_TIMEOUT:?}; log:\n{}",
                    tail(&self.log_path(), 30)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs Prosody (no goodbye to anybody) and starts it again with the same config and
    /// ports; returns when the ports accept connections again, with the instant they did.
    pub async fn kill_and_restart(&mut self) -> Instant {
        self.kill();
        self.start_again().await
    }

    /// SIGKILLs Prosody and leaves it down.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts Prosody again after [`Self::kill`], with the same config and ports; returns when
    /// the ports accept connections again, with the instant they did.
    pub async fn start_again(&mut self) -> Instant {
        self.child = ChildGuard::new(spawn_prosody(self.dir.path()));
        if let Err(error) = self.wait_ready().await {
            panic!("Prosody did not come back: {error}");
        }
        Instant::now()
    }

    /// Prosody's process id, while it runs (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// How many times an external component has authenticated so far.
    pub fn component_logins(&self) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .matches(COMPONENT_AUTHENTICATED)
            .count()
    }

    /// Creates one more account (besides [`USERS`]) on the running server.
    pub fn register(&self, user: &str, password: &str) {
        write_account(&self.dir.path().join("data"), user, password);
    }
}

fn spawn_prosody(dir: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("prosody.out"))
        .expect("prosody output file");
    let err = out.try_clone().expect("clone output file");
    Command::new("prosody")
        .arg("--config")
        .arg(dir.join("prosody.cfg.lua"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn prosody")
}

/// Creates the accounts of [`USERS`] the way Prosody's `internal_plain` storage keeps them
/// (`DATA/HOST/accounts/USER.dat`, a Lua table). Writing them directly works whatever user the
/// tests run as; `prosodyctl register` would need the data dir owned by the `prosody` user.
fn register_users(data: &Path) {
    for (user, password) in USERS {
        write_account(data, user, password);
    }
}

fn write_account(data: &Path, user: &str, password: &str) {
    let accounts = data.join(HOST).join("accounts");
    std::fs::create_dir_all(&accounts).expect("accounts dir");
    std::fs::write(
        accounts.join(format!("{user}.dat")),
        format!("return {{\n\t[\"password\"] = \"{password}\";\n}};\n"),
    )
    .expect("write account");
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- prosody log (tail) -----\n{}\n------------------------------",
                tail(&self.log_path(), 60)
            );
        }
    }
}
