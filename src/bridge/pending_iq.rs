//! Forwarded iq requests the hook accepted with `202` (README, "How the response becomes the
//! reply", rule 4): they wait here for their answer until `iq_timeout`, and then their sender
//! gets `wait/remote-server-timeout`.
//!
//! A waiting iq keeps the queue reservation it was admitted with, so waiting iq count against
//! `queue_max_stanzas` and `queue_max_bytes` like everything else the bridge holds, and past them
//! new stanzas are refused at admission. One task keeps every deadline; nothing is spawned per
//! iq, and an answer that arrives in time removes its entry and so cancels its timeout
//! ([`PendingIqs::complete`]). This module keeps the waiting list; sending is the caller's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::bridge::bounds::Reservation;
use crate::xmpp::stanza::Stanza;

/// (sender, addressed JID, id): what an answer must match.
pub(crate) type Key = (String, String, String);

#[derive(Clone, Default)]
pub(crate) struct PendingIqs {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    waiting: HashMap<Key, Waiting>,
    deadlines: BTreeMap<(Instant, u64), Key>,
    sequence: u64,
    closed: bool,
}

struct Waiting {
    stanza: Stanza,
    deadline: (Instant, u64),
    _reservation: Reservation,
}

fn key_of(stanza: &Stanza) -> Key {
    let part = |value: Option<&str>| value.unwrap_or_default().to_owned();
    (part(stanza.from()), part(stanza.to()), part(stanza.id()))
}

impl PendingIqs {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an iq that waits up to `timeout` for its answer. Returns the stanzas whose sender
    /// must get the timeout error now: an earlier iq with the same sender, address and id
    /// (replaced, since an answer could not tell the two apart), or this one after [`close`].
    ///
    /// [`close`]: PendingIqs::close
    pub(crate) fn wait(
        &self,
        stanza: Stanza,
        reservation: Reservation,
        timeout: Duration,
    ) -> Vec<Stanza> {
        let mut state = self.lock();
        if state.closed {
            return vec![stanza];
        }
        state.sequence += 1;
        let deadline = (Instant::now() + timeout, state.sequence);
        let key = key_of(&stanza);
        let replaced = state.waiting.insert(
            key.clone(),
            Waiting {
                stanza,
                deadline,
                _reservation: reservation,
            },
        );
        state.deadlines.insert(deadline, key);
        let first = state.deadlines.keys().next() == Some(&deadline);
        let mut now_due = Vec::new();
        if let Some(old) = replaced {
            state.deadlines.remove(&old.deadline);
            now_due.push(old.stanza);
        }
        drop(state);
        if first {
            self.shared.wake.notify_one();
        }
        now_due
    }

    /// The waiting iq that `(sender, addressed, id)` answers, removed (its timeout cancelled).
    pub(crate) fn complete(&self, sender: &str, addressed: &str, id: &str) -> Option<Stanza> {
        let mut state = self.lock();
        let key = (sender.to_owned(), addressed.to_owned(), id.to_owned());
        let waiting = state.waiting.remove(&key)?;
        state.deadlines.remove(&waiting.deadline);
        Some(waiting.stanza)
    }

    /// How many iq wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns the iq whose time is up, and when the next one's will be.
    fn take_due(&self, now: Instant) -> (Vec<Stanza>, Option<Instant>) {
        let mut state = self.lock();
        let mut due = Vec::new();
        while let Some((&deadline, _)) = state.deadlines.first_key_value() {
            if deadline.0 > now {
                return (due, Some(deadline.0));
            }
            if let Some(key) = state.deadlines.remove(&deadline)
                && let Some(waiting) = state.waiting.remove(&key)
            {
                due.push(waiting.stanza);
            }
        }
        (due, None)
    }

    /// Hands each iq whose time is up to `expired`, until [`close`]. One task runs this.
    ///
    /// [`close`]: PendingIqs::close
    pub(crate) async fn run_timeouts<F: Future<Output = ()>>(
        &self,
        mut expired: impl FnMut(Stanza) -> F,
    ) {
        loop {
            let (due, next) = self.take_due(Instant::now());
            for stanza in due {
                expired(stanza).await;
            }
            if self.lock().closed {
                return;
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.shared.wake.notified() => {}
                    }
                }
                None => self.shared.wake.notified().await,
            }
        }
    }

    /// Stops taking iq and returns every one still waiting, oldest deadline first: at a stop,
    /// their senders must hear that no answer will come.
    pub(crate) fn close(&self) -> Vec<Stanza> {
        let mut state = self.lock();
        state.closed = true;
        let deadlines = std::mem::take(&mut state.deadlines);
        let mut left = Vec::new();
        for key in deadlines.into_values() {
            if let Some(waiting) = state.waiting.remove(&key) {
                left.push(waiting.stanza);
            }
        }
        drop(state);
        self.shared.wake.notify_one();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::bounds::Bounds;
    use crate::xmpp::stanza::tests::stanza;

    fn iq(id: &str) -> Stanza {
        stanza(&format!(
            "<iq type='get' id='{id}' from='u@localhost/r' to='bot.localhost'><q xmlns='urn:x'/></iq>"
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn each_iq_times_out_after_its_own_timeout_unless_answered() {
        let bounds = Bounds::new(10, 1 << 20);
        let pending = PendingIqs::default();
        let expired = Arc::new(Mutex::new(Vec::new()));
        let runner = {
            let (pending, expired) = (pending.clone(), expired.clone());
            tokio::spawn(async move {
                pending
                    .run_timeouts(|stanza| {
                        let at = Instant::now();
                        expired
                            .lock()
                            .unwrap()
                            .push((stanza.id().unwrap().to_owned(), at));
                        async {}
                    })
                    .await
            })
        };
        let start = Instant::now();
        for (id, seconds) in [("a", 30), ("b", 10), ("c", 20)] {
            let reservation = bounds.reserve(100).unwrap();
            assert!(
                pending
                    .wait(iq(id), reservation, Duration::from_secs(seconds))
                    .is_empty()
            );
        }
        assert_eq!(
            bounds.held().stanzas,
            3,
            "waiting iq keep their reservation"
        );
        let answered = pending.complete("u@localhost/r", "bot.localhost", "c");
        assert_eq!(
            answered.and_then(|s| s.id().map(str::to_owned)).as_deref(),
            Some("c")
        );
        assert!(
            pending
                .complete("u@localhost/r", "bot.localhost", "c")
                .is_none()
        );
        tokio::time::sleep(Duration::from_secs(31)).await;
        let seen: Vec<(String, u64)> = expired
            .lock()
            .unwrap()
            .iter()
            .map(|(id, at)| (id.clone(), (*at - start).as_secs()))
            .collect();
        assert_eq!(seen, [("b".to_owned(), 10), ("a".to_owned(), 30)]);
        assert_eq!(bounds.held().stanzas, 0, "reservations released");
        assert!(pending.is_empty());
        pending.close();
        runner.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn close_returns_what_waits_and_refuses_more() {
        let bounds = Bounds::new(10, 1 << 20);
        let pending = PendingIqs::default();
        pending.wait(
            iq("late"),
            bounds.reserve(1).unwrap(),
            Duration::from_secs(60),
        );
        pending.wait(
            iq("early"),
            bounds.reserve(1).unwrap(),
            Duration::from_secs(5),
        );
        let replaced = pending.wait(
            iq("late"),
            bounds.reserve(1).unwrap(),
            Duration::from_secs(90),
        );
        assert_eq!(replaced.len(), 1, "the same key replaces the earlier iq");
        let left: Vec<String> = pending
            .close()
            .iter()
            .map(|s| s.id().unwrap().to_owned())
            .collect();
        assert_eq!(left, ["early", "late"]);
        assert_eq!(
            pending
                .wait(
                    iq("after"),
                    bounds.reserve(1).unwrap(),
                    Duration::from_secs(5)
                )
                .len(),
            1
        );
    }
}
