//! `queue = "memory"`: the queue interface with nothing written anywhere. Every append is
//! committed at once, nothing is pending at start, and no dead letters are kept: a stanza whose
//! retries run out is answered with its error and dropped, as the module does. The delivery stage
//! holds the stanzas themselves (and their bounds) while they wait; a stop answers those not
//! delivered, since nothing survives the process. Remembered API answers live in a map of at most
//! [`limits::MEMORY_REMEMBERED_MAX`] entries; past it the one that expires first is forgotten.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::limits;
use crate::queue::{
    Admitted, Backend, Committed, DeadLetter, Entry, ProcessIds, QueueError, QueueStats,
    Remembered, Selection, now_ms,
};

pub struct MemoryQueue {
    ids: ProcessIds,
    remembered: Mutex<HashMap<String, Remembered>>,
    /// When each waiting stanza was received, by position: only for the oldest one's age.
    waiting: Mutex<BTreeMap<u64, u64>>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self {
            ids: ProcessIds::new(),
            remembered: Mutex::new(HashMap::new()),
            waiting: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, remembered: Remembered) {
        let mut map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= limits::MEMORY_REMEMBERED_MAX {
            let now = now_ms();
            map.retain(|_, r| r.expires_ms > now);
        }
        if map.len() >= limits::MEMORY_REMEMBERED_MAX
            && let Some(first) = map
                .values()
                .min_by_key(|r| r.expires_ms)
                .map(|r| r.key.clone())
        {
            map.remove(&first);
        }
        map.insert(remembered.key.clone(), remembered);
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

    async fn append(&self, entry: Entry, remember: Option<Remembered>) -> Committed {
        self.lock_waiting()
            .insert(entry.position, entry.received_ms);
        if let Some(remembered) = remember {
            self.keep(remembered);
        }
        Committed::ready(Ok(Admitted::Here))
    }

    async fn remember(&self, remembered: Remembered) -> Result<(), String> {
        self.keep(remembered);
        Ok(())
    }

    async fn recall(&self, key: &str) -> Result<Option<Remembered>, QueueError> {
        let map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).filter(|r| r.expires_ms > now_ms()).cloned())
    }

    async fn forget_expired(&self, now_ms: u64) {
        let mut map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, r| r.expires_ms > now_ms);
    }

    async fn remove(&self, position: u64) {
        self.lock_waiting().remove(&position);
    }

    async fn bury(&self, position: u64, _reason: String) -> Result<(), String> {
        self.lock_waiting().remove(&position);
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

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        Ok(QueueStats {
            dead_letters: 0,
            oldest_received_ms: self.lock_waiting().values().next().copied(),
        })
    }

    fn unwritable(&self) -> Option<String> {
        None
    }
}
