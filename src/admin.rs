//! `component-http dead-letters list | replay | purge` and `component-http send` (README,
//! "Command line").
//!
//! The queue file can be open in one process only, so a running instance listens on a Unix
//! socket in its `data_dir` (`control.sock`, owner-only) and runs the command itself: a replay
//! then goes straight back into its delivery, a stanza to send into its outgoing queue. With no
//! instance answering there, `dead-letters` opens the queue file directly; `send` needs the
//! running instance. One JSON request line, one JSON response line. Whoever may open the socket
//! may send as any JID of the domain: it is the operator's, like the configuration file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::compose::{self, StanzaRequest};
use crate::bridge::delivery::Delivery;
use crate::bridge::outgoing::{Dispatched, Outgoing};
use crate::config::{Config, QueueBackend, QueueConfig};
use crate::limits;
use crate::queue::redb::{FILE_NAME, RedbQueue};
use crate::queue::{self, Backend, DeadLetter, Queue, QueueError, Selection};
use crate::xmpp::codec::{ReadLimits, parse_stanza};

/// The socket's file inside `data_dir`.
pub(crate) const SOCKET_NAME: &str = "control.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    List,
    Replay {
        ids: Vec<u64>,
        all: bool,
    },
    Purge {
        ids: Vec<u64>,
        all: bool,
    },
    /// A stanza as the API's JSON takes it; `from` defaults to the bare domain.
    Send {
        stanza: serde_json::Value,
    },
}

/// What a running instance hands the control socket.
#[derive(Clone)]
pub(crate) struct Running {
    pub(crate) config: std::sync::Arc<Config>,
    pub(crate) queue: Queue,
    pub(crate) delivery: Delivery,
    pub(crate) outgoing: Outgoing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Letters {
        letters: Vec<Letter>,
    },
    Done {
        count: usize,
        unknown: Vec<u64>,
    },
    /// A message or presence queued, or an iq answer sent: the stanza's id.
    Sent {
        id: String,
    },
    /// An iq get or set and its answer (the API's JSON of it).
    Answer {
        answer: serde_json::Value,
    },
    Error {
        message: String,
    },
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

/// Runs `request` against the queue `config` names: through the running instance if one
/// answers on its socket in `data_dir`, else on the queue itself.
pub async fn run(config: &QueueConfig, request: Request) -> Response {
    let data_dir = &config.data_dir;
    let socket = data_dir.join(SOCKET_NAME);
    // An iq sent waits for its answer as long as the API's does by default.
    let within = match request {
        Request::Send { .. } => limits::CONTROL_TIMEOUT + limits::API_IQ_TIMEOUT_DEFAULT,
        _ => limits::CONTROL_TIMEOUT,
    };
    if let Ok(stream) = UnixStream::connect(&socket).await {
        return match tokio::time::timeout(within, ask(stream, &request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => Response::Error {
                message: format!(
                    "the running instance did not answer on {}: {error}",
                    socket.display()
                ),
            },
            Err(_) => Response::Error {
                message: format!(
                    "the running instance did not answer on {} within {within:?}",
                    socket.display(),
                ),
            },
        };
    }
    if let Request::Send { .. } = request {
        return Response::Error {
            message: format!(
                "no component-http instance answers on {}: `send` goes through a running instance; start it (with this configuration), or use the HTTP API",
                socket.display()
            ),
        };
    }
    if let QueueBackend::Postgres(_) = &config.backend {
        return match queue::open(config).await {
            Ok(queue) => execute(queue.as_ref(), None, request).await,
            Err(error) => Response::Error {
                message: error.to_string(),
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
    running: Option<&Running>,
    request: Request,
) -> Response {
    let delivery = running.map(|r| &r.delivery);
    if !queue.durable() && !matches!(request, Request::Send { .. }) {
        return Response::Error {
            message: "this instance runs with queue = \"memory\", which keeps no dead letters: a stanza whose retries run out is bounced to its sender".into(),
        };
    }
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
            Request::Send { stanza } => match running {
                Some(running) => send(running, stanza).await,
                None => Response::Error {
                    message: "`send` needs the running instance".into(),
                },
            },
        })
    };
    result
        .await
        .unwrap_or_else(|error: QueueError| Response::Error {
            message: error.to_string(),
        })
}

/// Sends a stanza given as the API's JSON; a bare localpart `from` is one of the domain, and no
/// `from` is the bare domain.
async fn send(running: &Running, stanza: serde_json::Value) -> Response {
    let fail = |message: String| Response::Error { message };
    let request: StanzaRequest = match serde_json::from_value(stanza) {
        Ok(request) => request,
        Err(error) => return fail(format!("the stanza's JSON is not acceptable: {error}")),
    };
    let domain = &running.config.domain;
    let limits = ReadLimits {
        max_stanza_bytes: running.config.max_stanza_bytes,
        max_depth: running.config.max_depth,
    };
    let mut element = match compose::from_request(request, limits) {
        Ok(element) => element,
        Err(error) => return fail(error.to_string()),
    };
    let from = match element.attr("from") {
        None => domain.clone(),
        Some(localpart) if !localpart.contains(['@', '/']) && localpart != domain => {
            format!("{localpart}@{domain}")
        }
        Some(jid) => jid.to_owned(),
    };
    element.set_attr(
        rxml::Namespace::NONE,
        crate::xmpp::stanza::ncname("from"),
        from,
    );
    let id = element.attr("id").unwrap_or_default().to_owned();
    match running
        .outgoing
        .dispatch(element, limits::API_IQ_TIMEOUT_DEFAULT, None)
        .await
    {
        Ok(Dispatched::Queued | Dispatched::Answered) => Response::Sent { id },
        Ok(Dispatched::Reply(answer)) => Response::Answer {
            answer: serde_json::to_value(compose::iq_answer(&answer)).unwrap_or_default(),
        },
        Err(error) => fail(error.to_string()),
    }
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
    /// Listens in `data_dir` (created owner-only if missing). A socket file left over is
    /// replaced unless an instance answers on it (with the durable queue that cannot be: this
    /// process holds the queue file's lock).
    pub(crate) async fn bind(data_dir: &Path) -> std::io::Result<ControlSocket> {
        let path = data_dir.join(SOCKET_NAME);
        crate::queue::redb::create_private_dir(data_dir)?;
        if UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another instance answers on it; give each instance its own data_dir",
            ));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        restrict_to_owner(&path)?;
        Ok(ControlSocket {
            listener,
            _cleanup: RemoveOnDrop(path),
        })
    }

    /// Answers dead-letter commands until `stop` is cancelled.
    pub(crate) async fn serve(self, running: Running, stop: CancellationToken) {
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
            let running = running.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, running).await {
                    warn!("control socket: {error}");
                }
            });
        }
    }
}

async fn answer(stream: UnixStream, running: Running) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(limits::CONTROL_REQUEST_BYTES);
    tokio::time::timeout(limits::CONTROL_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no request within the time limit"))??;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => execute(running.queue.as_ref(), Some(&running), request).await,
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
        Response::Sent { id } => (id.clone(), true),
        Response::Answer { answer } => (answer.to_string(), true),
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
