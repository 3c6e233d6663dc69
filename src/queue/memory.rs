//! `queue = "memory"`: the queue interface with nothing written anywhere. Every append is
//! committed at once, nothing is pending at start, and no dead letters are kept: a stanza whose
//! retries run out is answered with its error and dropped, as the module does. The delivery stage
//! holds the stanzas themselves (and their bounds) while they wait; a stop answers those not
//! delivered, since nothing survives the process.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::queue::{Backend, Committed, DeadLetter, Entry, ProcessIds, QueueError, Selection};

pub struct MemoryQueue {
    ids: ProcessIds,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self {
            ids: ProcessIds::new(),
        }
    }
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Backend for MemoryQueue {
    fn durable(&self) -> bool {
        false
    }

    fn allocate(&self) -> u64 {
        self.ids.allocate()
    }

    fn webhook_id(&self, id: u64) -> String {
        self.ids.webhook_id(id)
    }

    async fn append(&self, _entry: Entry) -> Committed {
        Committed::ready(Ok(()))
    }

    async fn remove(&self, _position: u64) {}

    async fn bury(&self, _position: u64, _reason: String) -> Result<(), String> {
        Err("queue = \"memory\" keeps no dead letters".into())
    }

    async fn flush(&self) {}

    fn failed_appends(&self) -> Option<mpsc::UnboundedReceiver<Vec<u64>>> {
        None
    }

    async fn pending(&self) -> Result<Vec<Entry>, QueueError> {
        Ok(Vec::new())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(Vec::new())
    }

    async fn revive(&self, _selection: Selection) -> Result<Vec<Entry>, QueueError> {
        Ok(Vec::new())
    }

    async fn purge(&self, _selection: Selection) -> Result<usize, QueueError> {
        Ok(0)
    }
}
