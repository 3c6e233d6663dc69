//! Faults of the environment, over real sockets and a real file system: a disk that fills up
//! and frees again, a hook that dribbles its answer, a server that stops reading, a link that
//! goes silent (half-open). Each ends with an exact count per message id: delivered plus
//! answered with an error equals sent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";

fn sender(i: usize) -> String {
    format!("user{}@localhost/r", i % 20)
}

/// What came back for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Echoed,
    Error(String),
}

/// Reads the answers to `ids` until each has one, or `within` has passed; returns them by id.
async fn outcomes(conn: &mut Conn, ids: &[String], within: Duration) -> HashMap<String, Outcome> {
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while seen.len() < ids.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(answer) = conn
            .try_stanza_where(left, |e| {
                e.attr("id").is_some_and(|id| ids.iter().any(|i| i == id))
            })
            .await
        else {
            break;
        };
        let id = answer.attr("id").unwrap_or_default().to_owned();
        let outcome = match stanza_error(&answer) {
            Some(error) => Outcome::Error(format!("{}/{}", error.type_, error.condition)),
            None => Outcome::Echoed,
        };
        assert!(
            seen.insert(id.clone(), outcome).is_none(),
            "{id} was answered twice"
        );
    }
    seen
}

/// A tmpfs of `size` mounted for the test's lifetime (unmounted when dropped).
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    /// `None` (with a notice) when not root outside CI, where mounting is not allowed.
    fn mount(size: &str) -> Option<SmallDisk> {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the full-disk test mounts a tmpfs and must run as root in CI"
            );
            eprintln!("notice: not root; the full-disk test is skipped");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("the mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Some(SmallDisk { _dir: dir, path })
    }

    /// Fills the disk up to all but `leave` bytes with a file; returns its path.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        use std::io::Write;
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        let size = std::fs::metadata(&filler).expect("filler size").len();
        file.set_len(size.saturating_sub(leave))
            .expect("shrink the filler");
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

fn config_with_data_dir(server: &XmppServer, hook: &Hook, dir: &Path) -> BridgeConfig {
    BridgeConfig::new(server, &hook.url())
        .data_dir(dir)
        .key("retry_for = \"1h\"")
        .key("retry_max_interval = \"1s\"")
}

#[tokio::test]
async fn a_full_disk_refuses_at_once_recovers_by_itself_and_never_resends_the_delivered() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let hook_up = Arc::new(AtomicBool::new(false));
    let up = hook_up.clone();
    let hook = Hook::start(move |r: &Request| {
        if up.load(Ordering::SeqCst) {
            Reply::echo(r)
        } else {
            Reply::status(503)
        }
    })
    .await;
    let mut server = XmppServer::start().await;
    let data = disk.path.join("data");
    let config = config_with_data_dir(&server, &hook, &data);
    let mut bridge = config.spawn();
    let mut conn = server.accept().await;
    let filler = disk.fill(128 * 1024);

    // The hook is down and the disk fills: what cannot be stored is refused at once.
    let body = "d".repeat(2000);
    let ids: Vec<String> = (0..400).map(|i| format!("m{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        conn.send(&chat(&sender(i), ECHO, id, &body)).await;
    }
    let refused = outcomes(&mut conn, &ids, Duration::from_secs(8)).await;
    assert!(
        refused
            .values()
            .all(|o| *o == Outcome::Error("wait/internal-server-error".into())),
        "while the hook is down, only refusals come back: {refused:?}"
    );
    assert!(
        !refused.is_empty(),
        "the disk filled, so some commits must have failed"
    );
    let stored: Vec<String> = ids
        .iter()
        .filter(|id| !refused.contains_key(*id))
        .cloned()
        .collect();

    // The hook returns while the disk is still full: the stored ones are delivered (their
    // removals may fail and are retried later).
    hook_up.store(true, Ordering::SeqCst);
    let delivered = outcomes(&mut conn, &stored, Duration::from_secs(30)).await;
    assert_eq!(
        delivered.len(),
        stored.len(),
        "every stored stanza is delivered"
    );
    assert!(delivered.values().all(|o| *o == Outcome::Echoed));
    assert_eq!(
        refused.len() + delivered.len(),
        ids.len(),
        "delivered + refused = sent"
    );

    // Space comes back: the queue works again without a restart.
    std::fs::remove_file(&filler).expect("free the disk");
    let later: Vec<String> = (0..50).map(|i| format!("later{i}")).collect();
    for (i, id) in later.iter().enumerate() {
        conn.send(&chat(&sender(i), ECHO, id, "after")).await;
    }
    let after = outcomes(&mut conn, &later, Duration::from_secs(20)).await;
    assert_eq!(after.len(), later.len());
    assert!(
        after.values().all(|o| *o == Outcome::Echoed),
        "after the disk frees, stanzas are stored and delivered again: {after:?}"
    );

    // A restart does not deliver again what was delivered.
    let calls_before = hook.requests().len();
    bridge.terminate();
    bridge.exit_within(WAIT).await.expect("the bridge stops");
    let _bridge = config.spawn();
    let _conn = server.accept().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let repeated: Vec<String> = hook.requests()[calls_before..]
        .iter()
        .filter_map(|r| r.field("id").map(str::to_owned))
        .collect();
    assert!(
        repeated.is_empty(),
        "delivered stanzas were posted again after the restart: {repeated:?}"
    );
}

/// A hook that answers the status line and headers, then one body byte every 200 ms.
async fn dribbling_hook() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stream.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}/hook")
}

#[tokio::test]
async fn a_hook_that_dribbles_its_answer_times_out_and_every_sender_is_told() {
    let mut server = XmppServer::start().await;
    let url = dribbling_hook().await;
    let _bridge = BridgeConfig::new(&server, &url)
        .key("retry_for = \"0s\"")
        .table("[webhook]\ntimeout = \"1s\"")
        .spawn();
    let mut conn = server.accept().await;
    let ids: Vec<String> = (0..30).map(|i| format!("d{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        conn.send(&chat(&sender(i), ECHO, id, "slow")).await;
    }
    let seen = outcomes(&mut conn, &ids, Duration::from_secs(15)).await;
    assert_eq!(seen.len(), ids.len(), "every sender is answered");
    assert!(
        seen.values()
            .all(|o| *o == Outcome::Error("wait/remote-server-timeout".into())),
        "{seen:?}"
    );
    assert_eq!(server.connections(), 1, "the link stays up");
}

#[tokio::test]
async fn a_server_that_stops_reading_for_a_while_gets_every_reply_once() {
    let big = "r".repeat(50_000);
    let mut stack = Stack::start(
        move |r: &Request| {
            let said = r.field("body").unwrap_or_default();
            Reply::json(serde_json::json!({ "body": format!("{said}{big}") }))
        },
        |c| c,
    )
    .await;
    stack.conn.pause_reading();
    let ids: Vec<String> = (0..300).map(|i| format!("p{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack.conn.send(&chat(&sender(i), ECHO, id, id)).await;
    }
    stack.hook.wait_requests(100).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.conn.resume_reading();
    let seen = outcomes(&mut stack.conn, &ids, Duration::from_secs(60)).await;
    assert_eq!(seen.len(), ids.len(), "every reply arrives once");
    assert!(seen.values().all(|o| *o == Outcome::Echoed));
    assert_eq!(
        stack.hook.requests().len(),
        ids.len(),
        "each delivered once"
    );
    assert_eq!(stack.server.connections(), 1);
}

#[tokio::test]
async fn a_link_that_goes_silent_is_replaced_and_nothing_read_is_lost() {
    let mut stack = Stack::start(Reply::echo, |c| c.key("keepalive_interval = \"1s\"")).await;
    let before: Vec<String> = (0..50).map(|i| format!("b{i}")).collect();
    for (i, id) in before.iter().enumerate() {
        stack.conn.send(&chat(&sender(i), ECHO, id, "x")).await;
    }
    // Half-open: the server neither reads nor answers pings from now on.
    stack.conn.pause_reading();
    let mut conn = stack.server.accept().await;
    let after: Vec<String> = (0..50).map(|i| format!("a{i}")).collect();
    for (i, id) in after.iter().enumerate() {
        conn.send(&chat(&sender(i), ECHO, id, "y")).await;
    }
    let seen = outcomes(&mut conn, &after, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), after.len());
    let requests = stack.hook.requests();
    for id in before.iter().chain(&after) {
        let calls = requests
            .iter()
            .filter(|r| r.field("id") == Some(id.as_str()))
            .count();
        assert_eq!(calls, 1, "{id} reached the hook {calls} times");
    }
}
