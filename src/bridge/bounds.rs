//! What the queue holds, counted against its bounds (`queue_max_stanzas`, `queue_max_bytes`).
//!
//! Every stanza the bridge holds for the hook holds a [`Reservation`] for its XML bytes, from
//! admission until nothing refers to it any more: delivered, bounced, left in the queue file at
//! a stop, or answered after a `202`. The reservation is released when it is dropped, so no
//! path through the delivery stage can leak one. It counts; it does not decide what to do when
//! the bounds are reached.

use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub(crate) struct Bounds {
    max_stanzas: usize,
    max_bytes: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) stanzas: usize,
    pub(crate) bytes: usize,
}

/// One stanza's share of the bounds; released on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    bounds: Arc<Bounds>,
    bytes: usize,
}

impl Bounds {
    pub(crate) fn new(max_stanzas: usize, max_bytes: usize) -> Arc<Bounds> {
        Arc::new(Bounds {
            max_stanzas,
            max_bytes,
            held: Mutex::new(Held::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reservation for one stanza of `bytes`, or `None` if it would pass either bound.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut held = self.lock();
        if held.stanzas + 1 > self.max_stanzas || held.bytes.saturating_add(bytes) > self.max_bytes
        {
            return None;
        }
        held.stanzas += 1;
        held.bytes += bytes;
        Some(Reservation {
            bounds: self.clone(),
            bytes,
        })
    }

    /// A reservation that is never refused: for stanzas accepted earlier (resumed at start, or
    /// dead letters replayed), which may briefly take the queue past its bounds.
    pub(crate) fn force(self: &Arc<Self>, bytes: usize) -> Reservation {
        let mut held = self.lock();
        held.stanzas += 1;
        held.bytes = held.bytes.saturating_add(bytes);
        Reservation {
            bounds: self.clone(),
            bytes,
        }
    }

    pub(crate) fn held(&self) -> Held {
        *self.lock()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.bounds.lock();
        held.stanzas = held.stanzas.saturating_sub(1);
        held.bytes = held.bytes.saturating_sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_until_dropped_and_refuse_past_either_bound() {
        let bounds = Bounds::new(2, 100);
        let a = bounds.reserve(60).unwrap();
        assert!(bounds.reserve(41).is_none(), "bytes bound");
        let b = bounds.reserve(40).unwrap();
        assert!(bounds.reserve(0).is_none(), "count bound");
        assert_eq!(
            bounds.held(),
            Held {
                stanzas: 2,
                bytes: 100
            }
        );
        drop(a);
        let forced = bounds.force(1000);
        assert_eq!(bounds.held().bytes, 1040);
        drop((b, forced));
        assert_eq!(bounds.held(), Held::default());
    }
}
