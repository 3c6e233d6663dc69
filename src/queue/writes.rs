//! The group commit that the file and the database backends share: what their writer is asked
//! to commit ([`Write`]), the handle that asks and waits ([`Writes`]), and how a writer gathers
//! a batch and answers everyone in it once it is committed. How a batch is committed is each
//! backend's own.

use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use crate::limits;
use crate::queue::{Admitted, Committed, Entry, Remembered, written};

/// One write for the next commit.
pub(crate) enum Write {
    Append(
        Entry,
        Option<Remembered>,
        oneshot::Sender<Result<Admitted, String>>,
    ),
    Remember(Remembered, oneshot::Sender<Result<(), String>>),
    ForgetExpired(u64),
    Remove(u64),
    Bury(u64, String, oneshot::Sender<Result<(), String>>),
    /// Lets a conversation go (a shared backend's claims; the file has none).
    Release(String),
    Flush(oneshot::Sender<()>),
}

/// Hands writes to a backend's writer; each call returns once its write is queued, or, where
/// it says so, committed.
#[derive(Clone)]
pub(crate) struct Writes(mpsc::Sender<Write>);

impl Writes {
    /// The handle and the writer's end, holding up to [`limits::QUEUE_WRITE_BACKLOG`] writes.
    pub(crate) fn channel() -> (Writes, mpsc::Receiver<Write>) {
        let (writes, queue) = mpsc::channel(limits::QUEUE_WRITE_BACKLOG);
        (Writes(writes), queue)
    }

    async fn send(&self, write: Write) {
        // If the writer is gone, the write's reply channel is dropped and its waiter is told.
        let _ = self.0.send(write).await;
    }

    pub(crate) async fn append(&self, entry: Entry, remember: Option<Remembered>) -> Committed {
        let (done, committed) = oneshot::channel();
        self.send(Write::Append(entry, remember, done)).await;
        Committed(committed)
    }

    pub(crate) async fn remember(&self, remembered: Remembered) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.send(Write::Remember(remembered, done)).await;
        written(committed).await
    }

    pub(crate) async fn forget_expired(&self, now_ms: u64) {
        self.send(Write::ForgetExpired(now_ms)).await;
    }

    pub(crate) async fn remove(&self, position: u64) {
        self.send(Write::Remove(position)).await;
    }

    pub(crate) async fn bury(&self, position: u64, reason: String) -> Result<(), String> {
        let (done, buried) = oneshot::channel();
        self.send(Write::Bury(position, reason, done)).await;
        written(buried).await
    }

    pub(crate) async fn release(&self, conversation: String) {
        self.send(Write::Release(conversation)).await;
    }

    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.0.send(Write::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Adds what is queued to `batch`, up to the most one commit takes.
pub(crate) fn drain_into(batch: &mut Vec<Write>, queue: &mut mpsc::Receiver<Write>) {
    while batch.len() < limits::QUEUE_GROUP_COMMIT_MAX {
        match queue.try_recv() {
            Ok(write) => batch.push(write),
            Err(_) => break,
        }
    }
}

/// What a failed commit leaves to its writer.
#[derive(Default)]
pub(crate) struct Unwritten {
    /// Appends that were not stored: to report on the failed-appends channel.
    pub(crate) appends: Vec<u64>,
    /// Removals that were not written: to try again with the next commit.
    pub(crate) removals: Vec<u64>,
}

/// Tells everyone in `batch` how its commit went: on success each append gets what `admitted`
/// says of it; on failure everyone that waits gets the reason.
pub(crate) fn answer(
    batch: &mut Vec<Write>,
    result: &Result<(), String>,
    mut admitted: impl FnMut(&Entry) -> Admitted,
) -> Unwritten {
    let mut unwritten = Unwritten::default();
    for write in batch.drain(..) {
        match write {
            Write::Append(entry, _, done) => {
                let outcome = match result {
                    Ok(()) => Ok(admitted(&entry)),
                    Err(reason) => {
                        unwritten.appends.push(entry.position);
                        Err(reason.clone())
                    }
                };
                let _ = done.send(outcome);
            }
            Write::Bury(_, _, done) | Write::Remember(_, done) => {
                let _ = done.send(result.clone());
            }
            Write::Remove(position) => {
                if result.is_err() {
                    unwritten.removals.push(position);
                }
            }
            Write::Flush(done) => {
                let _ = done.send(());
            }
            Write::ForgetExpired(_) | Write::Release(_) => {}
        }
    }
    unwritten
}

/// A value that can be taken once, such as a receiver a backend hands out.
pub(crate) struct TakeOnce<T>(Mutex<Option<T>>);

impl<T> TakeOnce<T> {
    pub(crate) fn new(value: T) -> Self {
        TakeOnce(Mutex::new(Some(value)))
    }

    pub(crate) fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
