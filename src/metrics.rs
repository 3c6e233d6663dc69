//! What the process counts and knows about itself, for `GET /metrics`, `GET /health` and
//! `GET /v1/status` (README, "Observability"). One [`Metrics`] is built at the start and handed
//! to each stage when the stage is built; the stages count at their seams (a stanza read, a hook
//! call, a final outcome, a stanza written, the link's state) and know nothing of how the numbers
//! are shown. Gauges of what the queue holds are read when scraped. A leaf module.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Webhook latencies from a few milliseconds (a hook on the same host) to the longest timeout
/// anyone should configure.
const HOOK_SECONDS_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SentLabels {
    pub(crate) kind: &'static str,
    pub(crate) origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabels {
    pub(crate) route: String,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Why a stanza was refused (`stanzas_refused_total{reason}`).
pub(crate) mod refused {
    /// The queue was at `queue_max_stanzas` or `queue_max_bytes`.
    pub(crate) const QUEUE_FULL: &str = "queue_full";
    /// Its commit to the queue file failed.
    pub(crate) const NOT_STORED: &str = "not_stored";
    /// From the server, without a `from` or `to`.
    pub(crate) const UNADDRESSED: &str = "unaddressed";
    /// Outgoing (a hook's reply or an API request), refused by the outgoing check.
    pub(crate) const OUTBOUND_CHECK: &str = "outbound_check";
}

/// The final outcome of a delivery (`deliveries_total{result}`).
pub(crate) mod delivered {
    pub(crate) const DELIVERED: &str = "delivered";
    pub(crate) const BOUNCED: &str = "bounced";
    pub(crate) const DEAD_LETTER: &str = "dead_letter";
}

/// The link as `/health` and `/v1/status` tell it.
#[derive(Clone, Debug)]
pub(crate) struct LinkStatus {
    pub(crate) up: bool,
    /// Since when it is in this state.
    pub(crate) since: SystemTime,
    /// Why it is down, when it is.
    pub(crate) reason: Option<String>,
}

/// The link's status, and whether it was ever up (the next time up is a reconnection).
struct Link {
    status: LinkStatus,
    ever_up: bool,
}

/// The last hook call that did not get a 2xx.
#[derive(Clone, Debug)]
pub(crate) struct HookError {
    pub(crate) time: SystemTime,
    pub(crate) status: Option<u16>,
    pub(crate) message: String,
}

/// What is read from the queue and the bounds when scraped.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QueueSnapshot {
    pub(crate) stanzas: usize,
    pub(crate) bytes: usize,
    pub(crate) max_stanzas: usize,
    pub(crate) max_bytes: usize,
    pub(crate) dead_letters: usize,
    pub(crate) oldest_pending: Option<Duration>,
}

pub(crate) struct Metrics {
    registry: Registry,
    received: Family<KindLabel, Counter>,
    sent: Family<SentLabels, Counter>,
    refused: Family<ReasonLabel, Counter>,
    hook_requests: Family<OutcomeLabel, Counter>,
    hook_seconds: Histogram,
    deliveries: Family<ResultLabel, Counter>,
    retries: Counter,
    api_requests: Family<ApiLabels, Counter>,
    link_up: Gauge,
    reconnects: Counter,
    queue_stanzas: Gauge,
    queue_bytes: Gauge,
    queue_max_stanzas: Gauge,
    queue_max_bytes: Gauge,
    dead_letters: Gauge,
    oldest_pending: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Stanzas whose last hook call failed and that wait for their next try.
    retrying: AtomicI64,
    started: Instant,
    link: Mutex<Link>,
    last_hook_error: Mutex<Option<HookError>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut metrics = Metrics {
            received: Family::default(),
            sent: Family::default(),
            refused: Family::default(),
            hook_requests: Family::default(),
            hook_seconds: Histogram::new(HOOK_SECONDS_BUCKETS),
            deliveries: Family::default(),
            retries: Counter::default(),
            api_requests: Family::default(),
            link_up: Gauge::default(),
            reconnects: Counter::default(),
            queue_stanzas: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_max_stanzas: Gauge::default(),
            queue_max_bytes: Gauge::default(),
            dead_letters: Gauge::default(),
            oldest_pending: Gauge::default(),
            retrying: AtomicI64::new(0),
            started: Instant::now(),
            link: Mutex::new(Link {
                status: LinkStatus {
                    up: false,
                    since: SystemTime::now(),
                    reason: Some("connecting".into()),
                },
                ever_up: false,
            }),
            last_hook_error: Mutex::new(None),
            registry: Registry::default(),
        };
        let mut registry = Registry::with_prefix("component_http");
        let r = &mut registry;
        r.register(
            "stanzas_received",
            "Stanzas read from the XMPP server",
            metrics.received.clone(),
        );
        r.register(
            "stanzas_sent",
            "Stanzas written to the XMPP server, by where they came from",
            metrics.sent.clone(),
        );
        r.register(
            "stanzas_refused",
            "Stanzas refused, by reason",
            metrics.refused.clone(),
        );
        r.register(
            "webhook_requests",
            "Webhook calls, by outcome",
            metrics.hook_requests.clone(),
        );
        r.register(
            "webhook_request_duration_seconds",
            "How long webhook calls took, to their outcome",
            metrics.hook_seconds.clone(),
        );
        r.register(
            "deliveries",
            "Stanzas that reached their final outcome, by outcome",
            metrics.deliveries.clone(),
        );
        r.register(
            "retries",
            "Webhook calls repeated after a failure",
            metrics.retries.clone(),
        );
        r.register(
            "api_requests",
            "HTTP API requests, by route and status",
            metrics.api_requests.clone(),
        );
        r.register(
            "xmpp_link_up",
            "1 while the component is connected to its XMPP server",
            metrics.link_up.clone(),
        );
        r.register(
            "xmpp_reconnects",
            "Connections made again after the link was lost",
            metrics.reconnects.clone(),
        );
        r.register(
            "queue_stanzas",
            "Stanzas held until their final outcome",
            metrics.queue_stanzas.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes of the stanzas held",
            metrics.queue_bytes.clone(),
        );
        r.register(
            "queue_max_stanzas",
            "queue_max_stanzas, the bound on queue_stanzas",
            metrics.queue_max_stanzas.clone(),
        );
        r.register(
            "queue_max_bytes",
            "queue_max_bytes, the bound on queue_bytes",
            metrics.queue_max_bytes.clone(),
        );
        r.register(
            "dead_letters",
            "Stanzas kept as dead letters",
            metrics.dead_letters.clone(),
        );
        r.register(
            "queue_oldest_pending_seconds",
            "Age of the oldest stored stanza waiting for its final outcome (0 when none)",
            metrics.oldest_pending.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "The running version", build_info);
        metrics.registry = registry;
        metrics
    }

    /// Prometheus' text format, with the queue's gauges as of `queue`.
    pub(crate) fn encode(&self, queue: QueueSnapshot) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue_stanzas.set(gauge(queue.stanzas));
        self.queue_bytes.set(gauge(queue.bytes));
        self.queue_max_stanzas.set(gauge(queue.max_stanzas));
        self.queue_max_bytes.set(gauge(queue.max_bytes));
        self.dead_letters.set(gauge(queue.dead_letters));
        self.oldest_pending
            .set(queue.oldest_pending.unwrap_or_default().as_secs_f64());
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The link came up or went down (`reason`).
    pub(crate) fn link_changed(&self, up: bool, reason: Option<String>) {
        self.link_up.set(i64::from(up));
        let mut link = lock(&self.link);
        if up && link.ever_up {
            self.reconnects.inc();
        }
        link.ever_up |= up;
        link.status = LinkStatus {
            up,
            since: SystemTime::now(),
            reason,
        };
    }

    pub(crate) fn link(&self) -> LinkStatus {
        lock(&self.link).status.clone()
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// One hook call's outcome class (`2xx` … `5xx`, `timeout`, `connect`) and duration; a
    /// failure is kept as the last hook error.
    pub(crate) fn hook_called(
        &self,
        outcome: &'static str,
        took: Duration,
        error: Option<HookError>,
    ) {
        self.hook_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.hook_seconds.observe(took.as_secs_f64());
        if let Some(error) = error {
            *lock(&self.last_hook_error) = Some(error);
        }
    }

    pub(crate) fn last_hook_error(&self) -> Option<HookError> {
        lock(&self.last_hook_error).clone()
    }

    pub(crate) fn received(&self, kind: &'static str) {
        self.received.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn sent(&self, kind: &'static str, origin: &'static str) {
        self.sent.get_or_create(&SentLabels { kind, origin }).inc();
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A hook call is about to be repeated after a failure.
    pub(crate) fn retried(&self) {
        self.retries.inc();
    }

    pub(crate) fn delivered(&self, result: &'static str) {
        self.deliveries.get_or_create(&ResultLabel { result }).inc();
    }

    /// A stanza starts or stops waiting for its next try.
    pub(crate) fn retrying(&self, delta: i64) {
        self.retrying.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn retrying_now(&self) -> usize {
        usize::try_from(self.retrying.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub(crate) fn api_request(&self, route: &str, status: u16) {
        self.api_requests
            .get_or_create(&ApiLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.received("message");
        metrics.sent("message", "reply");
        metrics.refused(refused::QUEUE_FULL);
        metrics.hook_called("5xx", Duration::from_millis(7), None);
        metrics.delivered(delivered::BOUNCED);
        metrics.retried();
        metrics.api_request("/v1/stanzas", 202);
        metrics.link_changed(true, None);
        metrics.link_changed(false, Some("gone".into()));
        metrics.link_changed(true, None);
        let text = metrics.encode(QueueSnapshot {
            stanzas: 3,
            max_stanzas: 10,
            oldest_pending: Some(Duration::from_secs(2)),
            ..QueueSnapshot::default()
        });
        for line in [
            "component_http_stanzas_received_total{kind=\"message\"} 1",
            "component_http_stanzas_sent_total{kind=\"message\",origin=\"reply\"} 1",
            "component_http_stanzas_refused_total{reason=\"queue_full\"} 1",
            "component_http_webhook_requests_total{outcome=\"5xx\"} 1",
            "component_http_webhook_request_duration_seconds_bucket{le=\"0.01\"} 1",
            "component_http_deliveries_total{result=\"bounced\"} 1",
            "component_http_retries_total 1",
            "component_http_api_requests_total{route=\"/v1/stanzas\",status=\"202\"} 1",
            "component_http_xmpp_link_up 1",
            "component_http_xmpp_reconnects_total 1",
            "component_http_queue_stanzas 3",
            "component_http_queue_max_stanzas 10",
            "component_http_dead_letters 0",
            "component_http_queue_oldest_pending_seconds 2.0",
            &format!(
                "component_http_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
