//! A throwaway PostgreSQL for the shared-queue tests and the benchmark: Debian's server
//! binaries, a cluster made by `initdb` in its own temp dir, listening on a loopback port the
//! OS picked, trusted local connections, killed when its guard drops.
//!
//! PostgreSQL refuses to run as root; as root the cluster belongs to the `postgres` user that
//! Debian's package creates, and the server runs as that user (`setpriv`, which execs, so that
//! the guard holds the server process itself).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::e2e::{ChildGuard, free_ports, port_open, require, tail};

/// How a test PostgreSQL is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresOptions {
    /// Keep `fsync` on, as in production: for measurements. Tests run without it, which only
    /// matters if the machine itself crashes.
    pub durable: bool,
}

pub struct Postgres {
    child: ChildGuard,
    dir: TempDir,
    port: u16,
}

/// Between the columns of [`Postgres::psql_rows`]: ASCII's unit separator, which XML forbids.
const FIELD_SEPARATOR: &str = "\u{1f}";

/// Deadline for the server to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Postgres {
    /// Whether the server binaries are installed; when they are not, skips with a notice or
    /// fails when `CI=true` (see [`require`]).
    pub fn available() -> bool {
        require(
            bin_dir().is_some(),
            "PostgreSQL's server (initdb, postgres)",
            "apt-get install -y postgresql",
        )
    }

    /// Whether the server binaries are installed, without [`Self::available`]'s skip or
    /// failure: for a caller that decides itself what a missing server means (the benchmark).
    pub fn installed() -> bool {
        bin_dir().is_some()
    }

    /// A new cluster, started and accepting connections, with a database `queue`.
    pub async fn start(options: PostgresOptions) -> Postgres {
        let bin = bin_dir().expect("PostgreSQL's server binaries (apt-get install -y postgresql)");
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let as_root = is_root();
        if as_root {
            // The server's user must reach its data directory.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("open the temp dir to the postgres user");
            std::fs::create_dir(&data).expect("data dir");
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .status()
                .expect("chown");
            assert!(status.success(), "chown postgres {}", data.display());
        }
        let initdb = as_user(as_root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let [port] = free_ports::<1>();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log file");
        let mut server = as_user(as_root, &bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ]);
        if !options.durable {
            server.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
        }
        let child = server
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut postgres = Postgres {
            child: ChildGuard::new(child),
            dir,
            port,
        };
        postgres.wait_ready().await;
        postgres
            .psql_in("postgres", "CREATE DATABASE queue")
            .unwrap_or_else(|error| panic!("CREATE DATABASE queue: {error}"));
        postgres
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.exited() {
                panic!(
                    "postgres exited with {status}:\n{}",
                    tail(&self.log_path(), 30)
                );
            }
            // The port opens before the server takes queries; psql says when it does.
            if port_open(self.port) && self.psql_in("postgres", "SELECT 1").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready after {STARTUP_TIMEOUT:?}:\n{}",
                tail(&self.log_path(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL of the database `queue`, as the bridge's `postgres_url`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/queue", self.port)
    }

    /// Runs `sql` in the database `queue` with psql; panics with psql's error if it fails.
    /// Returns what psql printed (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("queue", sql)
            .unwrap_or_else(|error| panic!("psql {sql:?}: {error}"))
    }

    /// Runs the query `sql` in the database `queue`, like [`Self::psql`]; returns its rows,
    /// each as its columns' text (NULL as empty). Columns are split on a control character
    /// that stanzas and names cannot hold, so any text may be selected; only a newline inside
    /// a value would split its row. It waits for psql without blocking the runtime, so that a
    /// webhook served by the same runtime keeps answering (and recording) meanwhile.
    pub async fn psql_rows(&self, sql: &str) -> Vec<Vec<String>> {
        let output = tokio::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "queue", "-X", "-A", "-t", "-q"])
            .args(["-F", FIELD_SEPARATOR, "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            output.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split(FIELD_SEPARATOR).map(str::to_owned).collect())
            .collect()
    }

    fn psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database, "-X", "-A", "-t", "-q"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// The server's process id (the postmaster's; its backends and helpers are its children),
    /// while it runs: for the CPU it spends.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- postgres log (tail) ---\n{}",
                tail(&self.log_path(), 20)
            );
        }
        self.child.kill();
    }
}

/// Where Debian keeps the server binaries: `/usr/lib/postgresql/<version>/bin`, newest first.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

/// `program`, run as the `postgres` user when this process is root.
fn as_user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}
