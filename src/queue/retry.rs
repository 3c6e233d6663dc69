//! The retry policy (README, "Delivery"): which hook outcomes are worth another try, and how long
//! to wait before it (1 s doubling up to `retry_max_interval`, full jitter, `Retry-After`
//! honoured).
//!
//! [`until_final`] runs the attempts of one stanza; what to call and what to do with the final
//! outcome are the delivery stage's.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::limits;
use crate::webhook::outcome::{HookOutcome, retryable};

/// Calls `attempt` until its outcome is not worth retrying or `retry_until` has passed, waiting
/// [`delay`] between attempts (with `jitter()` as the random unit; `on_retry` hears each outcome
/// that will be retried, its attempt number from 1, and the wait). Returns the last outcome, or
/// `None` if `stop` was cancelled during a wait.
pub(crate) async fn until_final<Call, Attempt>(
    mut attempt: Call,
    retry_until: Instant,
    max_interval: Duration,
    stop: &CancellationToken,
    mut jitter: impl FnMut() -> f64,
    mut on_retry: impl FnMut(&HookOutcome, u32, Duration),
) -> Option<HookOutcome>
where
    Call: FnMut() -> Attempt,
    Attempt: Future<Output = HookOutcome>,
{
    let mut retries = 0;
    loop {
        let outcome = attempt().await;
        let now = Instant::now();
        if !retryable(&outcome) || now >= retry_until {
            return Some(outcome);
        }
        let wait =
            delay(retries, max_interval, outcome.retry_after(), jitter()).min(retry_until - now);
        retries += 1;
        on_retry(&outcome, retries, wait);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// The delay before retry number `attempt` (0 for the first retry): a uniformly random time up
/// to `min(max_interval, 1 s × 2^attempt)` ("full jitter", so that many conversations failing
/// together do not retry together), but never less than what the hook asked for in
/// `Retry-After`; never more than `max_interval` either, so one answer cannot park a
/// conversation for longer than the operator allows.
pub(crate) fn delay(
    attempt: u32,
    max_interval: Duration,
    retry_after: Option<Duration>,
    random_unit: f64,
) -> Duration {
    let jittered = backoff::full_jitter(limits::RETRY_INITIAL, max_interval, attempt, random_unit);
    match retry_after {
        Some(asked) => jittered.max(asked).min(max_interval),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::outcome::tests::status;
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};

    fn asking_to_wait(status: u16, seconds: u64) -> HookOutcome {
        HookOutcome::Response {
            status,
            content_type: None,
            body: Bytes::new(),
            retry_after: Some(Duration::from_secs(seconds)),
        }
    }

    /// Runs [`until_final`] against `script` (then 200s) with the given jitter; returns the
    /// seconds since the start at which each attempt was made, and the final status.
    async fn attempts_at(
        script: Vec<HookOutcome>,
        retry_for: Duration,
        max_interval: Duration,
        jitter: f64,
    ) -> (Vec<f64>, Option<u16>) {
        let start = Instant::now();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let times = Arc::new(Mutex::new(Vec::new()));
        let outcome = until_final(
            || {
                times.lock().unwrap().push(start.elapsed().as_secs_f64());
                let next = script.lock().unwrap().next().unwrap_or_else(|| status(200));
                async move { next }
            },
            start + retry_for,
            max_interval,
            &CancellationToken::new(),
            || jitter,
            |_, _, _| {},
        )
        .await;
        let times = times.lock().unwrap().clone();
        (times, outcome.and_then(|o| o.status()))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_doubling_until_the_hook_takes_the_stanza() {
        let failures = vec![
            status(503),
            HookOutcome::Timeout,
            HookOutcome::ConnectFailure("refused".into()),
            status(502),
            status(429),
        ];
        let day = Duration::from_secs(86_400);
        let (times, last) = attempts_at(failures, day, Duration::from_secs(300), 1.0).await;
        assert_eq!(times, [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]);
        assert_eq!(last, Some(200));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_capped_at_retry_max_interval() {
        let failures = vec![status(500); 8];
        let day = Duration::from_secs(86_400);
        let (times, _) = attempts_at(failures, day, Duration::from_secs(10), 1.0).await;
        let waits: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(waits, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_sets_the_wait_even_under_full_jitter() {
        let script = vec![asking_to_wait(503, 30), asking_to_wait(429, 2)];
        let day = Duration::from_secs(86_400);
        // Jitter 0 would retry at once; the hook asked for 30 s, then 2 s.
        let (times, last) = attempts_at(script, day, Duration::from_secs(300), 0.0).await;
        assert_eq!(times, [0.0, 30.0, 32.0]);
        assert_eq!(last, Some(200));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_for_ends_the_retries_with_the_last_outcome() {
        let failures = vec![status(503); 100];
        let (times, last) = attempts_at(
            failures,
            Duration::from_secs(20),
            Duration::from_secs(300),
            1.0,
        )
        .await;
        assert_eq!(
            times,
            [0.0, 1.0, 3.0, 7.0, 15.0, 20.0],
            "the last attempt is made when retry_for runs out, not after"
        );
        assert_eq!(last, Some(503));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_for_zero_means_one_attempt_and_final_outcomes_are_not_retried() {
        let (times, last) = attempts_at(
            vec![status(503)],
            Duration::ZERO,
            Duration::from_secs(300),
            1.0,
        )
        .await;
        assert_eq!((times, last), (vec![0.0], Some(503)));
        let day = Duration::from_secs(86_400);
        for final_status in [400, 404, 501] {
            let (times, last) = attempts_at(
                vec![status(final_status)],
                day,
                Duration::from_secs(300),
                1.0,
            )
            .await;
            assert_eq!((times, last), (vec![0.0], Some(final_status)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_without_another_attempt() {
        let stop = CancellationToken::new();
        let calls = Arc::new(Mutex::new(0));
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            stopper.cancel();
        });
        let outcome = until_final(
            || {
                *calls.lock().unwrap() += 1;
                async { status(503) }
            },
            Instant::now() + Duration::from_secs(86_400),
            Duration::from_secs(300),
            &stop,
            || 1.0,
            |_, _, _| {},
        )
        .await;
        assert!(outcome.is_none());
        // Attempts at 0, 1, 3, 7, 15, 31, 63 s; the next would be at 127 s.
        assert_eq!(*calls.lock().unwrap(), 7);
    }

    #[test]
    fn the_ceiling_doubles_from_one_second_to_the_maximum() {
        let max = Duration::from_secs(300);
        let ceilings: Vec<u64> = (0..12)
            .map(|a| delay(a, max, None, 1.0).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(
            delay(1000, max, None, 1.0),
            max,
            "no overflow on long outages"
        );
    }

    #[test]
    fn jitter_spreads_the_delay_over_zero_to_the_ceiling() {
        let max = Duration::from_secs(300);
        assert_eq!(delay(3, max, None, 0.0), Duration::ZERO);
        assert_eq!(delay(3, max, None, 0.5), Duration::from_secs(4));
    }

    #[test]
    fn retry_after_is_a_floor_capped_by_the_maximum() {
        let max = Duration::from_secs(300);
        let asked = Some(Duration::from_secs(30));
        assert_eq!(delay(0, max, asked, 0.3), Duration::from_secs(30));
        assert_eq!(
            delay(0, max, Some(Duration::from_secs(3600)), 0.3),
            max,
            "a hook cannot park a conversation past retry_max_interval"
        );
        assert_eq!(delay(9, max, Some(Duration::from_secs(1)), 1.0), max);
    }
}
