//! `component-http dead-letters list | replay | purge` (README, "Command line"), on a stopped or a
//! running instance.
//!
//! The queue file can be open in one process only, so a running instance listens on a Unix
//! socket in its `data_dir` (`control.sock`, owner-only) and runs the command itself: a replay
//! then goes straight back into its delivery. With no instance answering there, the command opens
//! the queue file directly. One JSON request line, one JSON response line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge::delivery::Delivery;
use crate::limits;
use crate::queue::redb::{FILE_NAME, RedbQueue};
use crate::queue::{Backend, DeadLetter, Queue, QueueError, Selection};
use crate::xmpp::codec::{ReadLimits, parse_stanza};

/// The socket's file inside `data_dir`.
pub(crate) const SOCKET_NAME: &str = "control.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    List,
    Replay { ids: Vec<u64>, all: bool },
    Purge { ids: Vec<u64>, all: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Letters { letters: Vec<Letter> },
    Done { count: usize, unknown: Vec<u64> },
    Error { message: String },
}

/// A dead letter as the command shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    /// What `replay` and `purge` take.
    pub(crate) id: u64,
    pub(crate) webhook_id: String,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    /// RFC 3339, UTC.
    pub(crate) received: String,
    pub(crate) died: String,
    pub(crate) reason: String,
    pub(crate) stanza: String,
}

/// Runs `request` against the queue of `data_dir`: through the running instance if one answers
/// on its socket, else on the file itself.
pub async fn run(data_dir: &Path, request: Request) -> Response {
    let socket = data_dir.join(SOCKET_NAME);
    if let Ok(stream) = UnixStream::connect(&socket).await {
        return match tokio::time::timeout(limits::CONTROL_TIMEOUT, ask(stream, &request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => Response::Error {
                message: format!(
                    "the running instance did not answer on {}: {error}",
                    socket.display()
                ),
            },
            Err(_) => Response::Error {
                message: format!(
                    "the running instance did not answer on {} within {:?}",
                    socket.display(),
                    limits::CONTROL_TIMEOUT
                ),
            },
        };
    }
    let file = data_dir.join(FILE_NAME);
    if !file.exists() {
        return Response::Error {
            message: format!(
                "there is no queue at {}: no instance has run with this data_dir and queue = \"durable\" (with queue = \"memory\" nothing is kept)",
                file.display()
            ),
        };
    }
    match RedbQueue::open(data_dir) {
        Ok(queue) => execute(&queue, None, request).await,
        Err(error @ QueueError::InUse { .. }) => Response::Error {
            message: format!(
                "{error}, and nothing answers on its control socket {}",
                socket.display()
            ),
        },
        Err(error) => Response::Error {
            message: error.to_string(),
        },
    }
}

async fn ask(stream: UnixStream, request: &Request) -> std::io::Result<Response> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

/// Runs one command on an open queue; a replay inside a running instance also hands the revived
/// stanzas to its `delivery`.
pub(crate) async fn execute(
    queue: &dyn Backend,
    delivery: Option<&Delivery>,
    request: Request,
) -> Response {
    let result = async {
        Ok(match request {
            Request::List => Response::Letters {
                letters: queue
                    .dead_letters()
                    .await?
                    .iter()
                    .map(|l| letter(queue, l))
                    .collect(),
            },
            Request::Replay { ids, all } => {
                let (selection, unknown) = selection(queue, ids, all).await?;
                let revived = queue.revive(selection).await?;
                let count = revived.len();
                match delivery {
                    Some(delivery) => delivery.resume(revived),
                    None => info!(
                        count,
                        "replayed dead letters will be delivered at the next start"
                    ),
                }
                Response::Done { count, unknown }
            }
            Request::Purge { ids, all } => {
                let (selection, unknown) = selection(queue, ids, all).await?;
                let count = queue.purge(selection).await?;
                Response::Done { count, unknown }
            }
        })
    };
    result
        .await
        .unwrap_or_else(|error: QueueError| Response::Error {
            message: error.to_string(),
        })
}

/// The selection, and the asked-for ids that are not dead letters.
async fn selection(
    queue: &dyn Backend,
    ids: Vec<u64>,
    all: bool,
) -> Result<(Selection, Vec<u64>), QueueError> {
    if all {
        return Ok((Selection::All, Vec::new()));
    }
    let known: Vec<u64> = queue
        .dead_letters()
        .await?
        .iter()
        .map(|l| l.entry.position)
        .collect();
    let unknown = ids
        .iter()
        .copied()
        .filter(|id| !known.contains(id))
        .collect();
    Ok((Selection::Positions(ids), unknown))
}

fn letter(queue: &dyn Backend, dead: &DeadLetter) -> Letter {
    let element = parse_stanza(&dead.entry.raw, ReadLimits::default()).ok();
    let attr = |name| {
        element
            .as_ref()
            .and_then(|e| e.element.attr(name))
            .map(str::to_owned)
    };
    Letter {
        id: dead.entry.position,
        webhook_id: queue.webhook_id(dead.entry.id),
        from: attr("from"),
        to: attr("to"),
        received: rfc3339(dead.entry.received_ms),
        died: rfc3339(dead.died_ms),
        reason: dead.reason.clone(),
        stanza: dead.entry.raw.clone(),
    }
}

fn rfc3339(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The running instance's end of the control socket.
pub(crate) struct ControlSocket {
    listener: UnixListener,
    _cleanup: RemoveOnDrop,
}

impl ControlSocket {
    /// Listens in `data_dir`. A socket file left over is replaced: this process holds the
    /// queue's lock, so no other instance can be using it.
    pub(crate) fn bind(data_dir: &Path) -> std::io::Result<ControlSocket> {
        let path = data_dir.join(SOCKET_NAME);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        restrict_to_owner(&path)?;
        Ok(ControlSocket {
            listener,
            _cleanup: RemoveOnDrop(path),
        })
    }

    /// Answers dead-letter commands until `stop` is cancelled.
    pub(crate) async fn serve(self, queue: Queue, delivery: Delivery, stop: CancellationToken) {
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        warn!("control socket: {error}");
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let (queue, delivery) = (queue.clone(), delivery.clone());
            tokio::spawn(async move {
                if let Err(error) = answer(stream, queue, delivery).await {
                    warn!("control socket: {error}");
                }
            });
        }
    }
}

async fn answer(stream: UnixStream, queue: Queue, delivery: Delivery) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(limits::CONTROL_REQUEST_BYTES);
    tokio::time::timeout(limits::CONTROL_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no request within the time limit"))??;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => execute(queue.as_ref(), Some(&delivery), request).await,
        Err(error) => Response::Error {
            message: format!("not a dead-letters request: {error}"),
        },
    };
    let mut line = serde_json::to_vec(&response)?;
    line.push(b'\n');
    write.write_all(&line).await
}

/// The response as the command prints it, and whether it is a success.
pub fn render(response: &Response, json: bool) -> (String, bool) {
    match response {
        Response::Error { message } => (format!("component-http: {message}"), false),
        Response::Letters { letters } if json => (
            letters
                .iter()
                .filter_map(|l| serde_json::to_string(l).ok())
                .collect::<Vec<_>>()
                .join("\n"),
            true,
        ),
        Response::Letters { letters } if letters.is_empty() => ("no dead letters".into(), true),
        Response::Letters { letters } => {
            let mut text = String::from("ID\tDIED\tFROM\tTO\tREASON");
            for l in letters {
                text.push_str(&format!(
                    "\n{}\t{}\t{}\t{}\t{}",
                    l.id,
                    l.died,
                    l.from.as_deref().unwrap_or("-"),
                    l.to.as_deref().unwrap_or("-"),
                    l.reason
                ));
            }
            (text, true)
        }
        Response::Done { count, unknown } => {
            let mut text = format!("{count} dead letter(s)");
            if !unknown.is_empty() {
                let ids: Vec<String> = unknown.iter().map(u64::to_string).collect();
                text.push_str(&format!("; no dead letter has id {}", ids.join(", ")));
            }
            (text, unknown.is_empty())
        }
    }
}

fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
