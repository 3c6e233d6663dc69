//! The one exponential backoff with full jitter, used by reconnection to the server and by the
//! retries of a webhook call: delay number n is uniform in `[0, min(cap, initial·2ⁿ)]`, so that
//! many parties failing together do not come back together.

use std::time::Duration;

use rand::Rng;

/// The largest delay number `attempt` (0 for the first) may take: `initial·2^attempt`, capped.
pub(crate) fn ceiling(initial: Duration, cap: Duration, attempt: u32) -> Duration {
    initial
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(cap)
}

/// Delay number `attempt`: `random_unit` (a uniform draw from `[0, 1]`) of its ceiling.
pub(crate) fn full_jitter(
    initial: Duration,
    cap: Duration,
    attempt: u32,
    random_unit: f64,
) -> Duration {
    ceiling(initial, cap, attempt).mul_f64(random_unit.clamp(0.0, 1.0))
}

/// A backoff that counts its own attempts, for a loop that retries until it succeeds.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    #[cfg(test)]
    fn ceiling(&self) -> Duration {
        ceiling(self.initial, self.cap, self.attempt)
    }

    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let delay = full_jitter(self.initial, self.cap, self.attempt, rng.random());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// After a success: the next delay starts from `initial` again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_double_to_the_cap_with_full_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ceilings: Vec<_> = (0..9)
            .map(|_| {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay(&mut rng);
                assert!(delay <= ceiling);
                ceiling.as_millis()
            })
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000]
        );
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn no_attempt_count_overflows() {
        let cap = Duration::from_secs(300);
        assert_eq!(ceiling(Duration::from_secs(1), cap, u32::MAX), cap);
        assert_eq!(full_jitter(Duration::from_secs(1), cap, 40, 1.0), cap);
        assert_eq!(
            full_jitter(Duration::from_secs(1), cap, 3, 0.5),
            Duration::from_secs(4)
        );
    }
}
