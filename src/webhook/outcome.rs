//! What one webhook call came to ([`HookOutcome`]) and what that means: whether asking again
//! might help, one line that says what went wrong, and the hook's `Retry-After`. The client
//! produces outcomes; the retry policy and the reply rules read them.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// What came back from one webhook call.
#[derive(Debug, Clone)]
pub enum HookOutcome {
    Response {
        status: u16,
        content_type: Option<String>,
        body: Bytes,
        /// The `Retry-After` header, when the hook sent a valid one.
        retry_after: Option<Duration>,
    },
    /// The response body was larger than `max_response_bytes`.
    ResponseTooLarge {
        status: u16,
        retry_after: Option<Duration>,
    },
    ConnectFailure(String),
    /// The hook answered something that is not HTTP (headers too large or too many, a bad
    /// status line). It did receive the call, so this is final like any answer, not retried.
    Malformed(String),
    Timeout,
}

impl HookOutcome {
    /// The HTTP status, when the hook answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            HookOutcome::Response { status, .. } | HookOutcome::ResponseTooLarge { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The outcome's class as the metrics count it: `2xx` … `5xx` by status (an answer that is
    /// not HTTP counts as `5xx`), `timeout` or `connect`.
    pub(crate) fn class(&self) -> &'static str {
        match self {
            HookOutcome::Timeout => "timeout",
            HookOutcome::ConnectFailure(_) => "connect",
            _ => match self.status().unwrap_or(0) {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
        }
    }

    /// How long the hook asked the bridge to wait before the next try.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            HookOutcome::Response { retry_after, .. }
            | HookOutcome::ResponseTooLarge { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Whether the hook might take this stanza if asked again: it could not be reached, took too
/// long, or said so (408, 429, any 5xx but 501 Not Implemented, which will not change).
pub(crate) fn retryable(outcome: &HookOutcome) -> bool {
    match outcome {
        HookOutcome::ConnectFailure(_) | HookOutcome::Timeout => true,
        HookOutcome::Malformed(_) => false,
        HookOutcome::Response { status, .. } | HookOutcome::ResponseTooLarge { status, .. } => {
            matches!(status, 408 | 429) || ((500..600).contains(status) && *status != 501)
        }
    }
}

/// One line for the log and the dead letter: what went wrong with the last attempt.
pub(crate) fn describe(outcome: &HookOutcome) -> String {
    match outcome {
        HookOutcome::ConnectFailure(reason) => format!("cannot reach the hook: {reason}"),
        HookOutcome::Malformed(reason) => format!("the hook's response is malformed: {reason}"),
        HookOutcome::Timeout => "the hook did not answer in time".into(),
        HookOutcome::Response { status, .. } | HookOutcome::ResponseTooLarge { status, .. } => {
            format!("the hook answered HTTP {status}")
        }
    }
}

/// A `Retry-After` header value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An answer with this status, no body and no `Retry-After`.
    pub(crate) fn status(status: u16) -> HookOutcome {
        HookOutcome::Response {
            status,
            content_type: None,
            body: Bytes::new(),
            retry_after: None,
        }
    }

    #[test]
    fn exactly_the_spec_outcomes_are_retried() {
        assert!(retryable(&HookOutcome::Timeout));
        assert!(retryable(&HookOutcome::ConnectFailure("refused".into())));
        assert!(!retryable(&HookOutcome::Malformed(
            "message head is too large".into()
        )));
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(retryable(&status(s)), "{s}");
        }
        for s in [200, 202, 204, 301, 400, 401, 403, 404, 409, 413, 422, 501] {
            assert!(!retryable(&status(s)), "{s}");
        }
        assert!(retryable(&HookOutcome::ResponseTooLarge {
            status: 503,
            retry_after: None
        }));
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
