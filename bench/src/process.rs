//! The bridge as a child process: a config file, the spawn, and what /proc says about it
//! (CPU time, resident memory, open file descriptors).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Bridge {
    _child: Child,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

pub struct BridgeOptions<'a> {
    pub server: String,
    pub secret: &'a str,
    pub hook_url: String,
    pub ordering: &'a str,
    pub max_in_flight: usize,
    pub hook_timeout: Duration,
    pub http2: bool,
    /// `queue = "durable"`, `"memory"` or `"postgres"`.
    pub queue: &'a str,
    /// With `queue = "postgres"`: the shared database and this instance's name in it.
    pub shared_queue: Option<SharedQueue>,
    /// `retry_for`; `None` leaves the bridge's default (24 h).
    pub retry_for: Option<Duration>,
    /// `retry_max_interval`; `None` leaves the bridge's default (5 min).
    pub retry_max_interval: Option<Duration>,
    /// Tables appended to the configuration (e.g. `[api]`).
    pub extra: String,
}

/// What an instance on the shared queue is told besides `queue = "postgres"`.
#[derive(Debug, Clone)]
pub struct SharedQueue {
    pub postgres_url: String,
    pub instance: String,
}

impl<'a> BridgeOptions<'a> {
    /// The bridge as every row runs it unless the row says otherwise: ordering per
    /// conversation, 256 calls in flight, a 15 s hook timeout, HTTP/1.1, the durable queue and
    /// its default retries, nothing else configured.
    pub fn defaults(server: String, secret: &'a str, hook_url: String) -> Self {
        BridgeOptions {
            server,
            secret,
            hook_url,
            ordering: "conversation",
            max_in_flight: 256,
            hook_timeout: Duration::from_secs(15),
            http2: false,
            queue: "durable",
            shared_queue: None,
            retry_for: None,
            retry_max_interval: None,
            extra: String::new(),
        }
    }
}

/// The bridge binary sits beside the harness's own binary (both built by one cargo command).
pub fn bridge_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("component-http");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --release --workspace`",
        path.display()
    );
    Ok(path)
}

impl Bridge {
    pub fn spawn(options: &BridgeOptions<'_>) -> anyhow::Result<Bridge> {
        let dir = tempfile::tempdir()?;
        // Top-level keys; the tables come after them.
        let mut top_level = String::new();
        if let Some(retry_for) = options.retry_for {
            top_level.push_str(&format!("retry_for = \"{}s\"\n", retry_for.as_secs()));
        }
        if let Some(interval) = options.retry_max_interval {
            top_level.push_str(&format!(
                "retry_max_interval = \"{}s\"\n",
                interval.as_secs().max(1)
            ));
        }
        if let Some(shared) = &options.shared_queue {
            top_level.push_str(&format!(
                "postgres_url = \"{}\"\ninstance = \"{}\"\n",
                shared.postgres_url, shared.instance
            ));
        }
        let config = format!(
            "domain = \"bot.localhost\"\nserver = \"{}\"\nsecret = \"{}\"\nordering = \"{}\"\nmax_in_flight = {}\nqueue = \"{}\"\n{top_level}\
             [webhook]\nurl = \"{}\"\ntimeout = \"{}s\"\nhttp2_prior_knowledge = {}\n{}\n",
            options.server,
            options.secret,
            options.ordering,
            options.max_in_flight,
            options.queue,
            options.hook_url,
            options.hook_timeout.as_secs().max(1),
            options.http2,
            options.extra,
        );
        let path = dir.path().join("bench.toml");
        std::fs::write(&path, config)?;
        let child = Command::new(bridge_binary()?)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the bridge exited at once"))?;
        Ok(Bridge {
            _child: child,
            pid,
            _dir: dir,
        })
    }

    pub fn stats(&self) -> ProcStats {
        ProcStats::of(self.pid)
    }
}

/// Waits until something accepts TCP connections on `address` (a bridge's API starting up).
pub async fn wait_listening(address: std::net::SocketAddr) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "nothing listens on {address} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// How many file descriptors the process has open (entries of /proc/PID/fd); `None` once it is
/// gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    let entries = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")).ok()?;
    Some(entries.count())
}

/// How many of the process's sockets are TCP connections to `remote_port` (on any address),
/// matched by inode between /proc/PID/fd and /proc/PID/net/tcp{,6}.
pub fn connections_to(pid: u32, remote_port: u16) -> usize {
    let dir = Path::new("/proc").join(pid.to_string());
    let Ok(entries) = std::fs::read_dir(dir.join("fd")) else {
        return 0;
    };
    let inodes: std::collections::HashSet<String> = entries
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let port = format!(":{remote_port:04X}");
    let matching = |table: String| {
        table
            .lines()
            .skip(1)
            .filter(|line| {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(2).is_some_and(|remote| remote.ends_with(&port))
                    && fields.get(9).is_some_and(|inode| inodes.contains(*inode))
            })
            .count()
    };
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(dir.join("net").join(table)).ok())
        .map(matching)
        .sum()
}

/// CPU seconds used so far by this process's threads of the given name (`comm`, which the
/// kernel cuts to 15 bytes).
pub fn threads_cpu_seconds(name: &str) -> f64 {
    let ticks = clock_ticks();
    let short = &name[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            if comm != short {
                return None;
            }
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// CPU seconds used so far and resident memory, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

impl ProcStats {
    pub fn of(pid: u32) -> ProcStats {
        let dir = Path::new("/proc").join(pid.to_string());
        let ticks = clock_ticks();
        let cpu_seconds = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised command name; utime and stime are 14 and 15.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = fields.get(11)?.parse().ok()?;
                let stime: f64 = fields.get(12)?.parse().ok()?;
                Some((utime + stime) / ticks)
            })
            .unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_default()
        };
        ProcStats {
            cpu_seconds,
            rss_kib: field("VmRSS:"),
            peak_rss_kib: field("VmHWM:"),
        }
    }
}

/// CPU seconds used so far by a server and every process under it (a PostgreSQL's backends
/// and helpers, an Erlang VM's port programs): each one's own time and that of the children it
/// has reaped, so that a backend which ended between two readings still counts.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let ticks = clock_ticks();
    // (pid, parent, own and reaped children's CPU ticks) of every process.
    let processes: Vec<(u32, u32, f64)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // After the command name: state, ppid (field 4), …, utime, stime, cutime, cstime
            // (fields 14 to 17).
            let parent = fields.get(1)?.parse().ok()?;
            let ticks: f64 = fields
                .get(11..15)?
                .iter()
                .map(|value| value.parse::<f64>().unwrap_or_default())
                .sum();
            Some((pid, parent, ticks))
        })
        .collect();
    let mut inside = vec![root];
    let mut total = 0.0;
    while let Some(pid) = inside.pop() {
        for (child, parent, child_ticks) in &processes {
            if *child == pid {
                total += child_ticks;
            }
            if *parent == pid {
                inside.push(*child);
            }
        }
    }
    total / ticks
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
