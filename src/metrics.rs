//! Every metric, declared once. Names are `hookbridge_<noun>_total` / `_seconds`; labels
//! come from bounded sets only (trigger, action, type, outcome, reason, answer class,
//! topic and partition) — never an object id or a URL.
//!
//! Labelled families are exported at zero from the start for every label value known at
//! load (`Metrics::register_config`, in `config/metrics.rs`): a rate or ratio over a series that appears only at
//! its first increment misses that increment, and an alert on a family that is absent has
//! no data. `process_*` metrics (CPU, memory, file descriptors) come from the prometheus
//! crate's process collector.

use std::cell::RefCell;
use std::sync::OnceLock;

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Final delivery outcomes, the `outcome` label of `hookbridge_deliveries_total`. A retry
/// handed to the durable stage is not final: it is counted by `retries_scheduled_total`.
pub const OUTCOMES: &[&str] = &["delivered", "failed", "skipped", "dry_run"];
/// Why a message was not an event, the `reason` label of `hookbridge_events_invalid_total`.
pub const INVALID_REASONS: &[&str] = &["not_utf8", "invalid_json", "schema_violation", "invalid_cloudevent"];
/// Dead-letter reasons known in advance (invalid events, final delivery failures). HTTP
/// answers are counted by class (`http_4xx`, `http_5xx`), see [`dead_letter_reason`].
pub const DEAD_LETTER_REASONS: &[&str] = &[
    "not_utf8",
    "invalid_json",
    "schema_violation",
    "invalid_cloudevent",
    "http_4xx",
    "http_5xx",
    "timeout",
    "network",
    "destination_refused",
    "too_large",
    "invalid_request",
    "not_configured",
    "invalid_retry_record",
    "itop_error",
    "itop_invalid_answer",
];
/// What a failed publish carried, the `kind` label of `hookbridge_publish_errors_total`.
pub const PUBLISH_KINDS: &[&str] = &["response", "dead_letter"];

/// How one HTTP attempt ended: the `status_class` label of `hookbridge_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClass {
    /// A 2xx answer.
    Success,
    /// A 3xx answer (redirects are not followed).
    Redirect,
    /// A 4xx answer.
    ClientError,
    /// A 5xx answer (or any other status).
    ServerError,
    /// No answer within the timeout.
    Timeout,
    /// The connection failed.
    Network,
    /// The destination is in a refused range: nothing was sent.
    Refused,
    /// The request could not be built: nothing was sent.
    Invalid,
}

impl AttemptClass {
    /// Every class, in the order the metric is exported.
    pub const ALL: [AttemptClass; 8] = [
        AttemptClass::Success,
        AttemptClass::Redirect,
        AttemptClass::ClientError,
        AttemptClass::ServerError,
        AttemptClass::Timeout,
        AttemptClass::Network,
        AttemptClass::Refused,
        AttemptClass::Invalid,
    ];

    /// The class of an answered attempt.
    pub fn of_status(status: u16) -> AttemptClass {
        match status {
            200..=299 => AttemptClass::Success,
            300..=399 => AttemptClass::Redirect,
            400..=499 => AttemptClass::ClientError,
            _ => AttemptClass::ServerError,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptClass::Success => "2xx",
            AttemptClass::Redirect => "3xx",
            AttemptClass::ClientError => "4xx",
            AttemptClass::ServerError => "5xx",
            AttemptClass::Timeout => "timeout",
            AttemptClass::Network => "network",
            AttemptClass::Refused => "refused",
            AttemptClass::Invalid => "invalid",
        }
    }
}

/// Where a delivery waits for its next attempt: the `stage` label of
/// `hookbridge_retries_scheduled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryWait {
    /// In this process, after a delay.
    InProcess,
    /// In the source's durable retry stage.
    Durable,
    /// Handed to the durable stage behind an earlier delivery of its lane, without an attempt.
    Parked,
}

impl RetryWait {
    /// Every place, in the order the metric is exported.
    pub const ALL: [RetryWait; 3] = [RetryWait::InProcess, RetryWait::Durable, RetryWait::Parked];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryWait::InProcess => "in_process",
            RetryWait::Durable => "durable",
            RetryWait::Parked => "parked",
        }
    }
}

/// The registry and its metrics.
pub struct Metrics {
    /// Registry rendered on /metrics.
    pub registry: Registry,
    /// Messages read from the source.
    pub events_received: IntCounterVec,
    /// Messages that were not valid events, by reason.
    pub events_invalid: IntCounterVec,
    /// Events that matched no trigger.
    pub events_unmatched: prometheus::IntCounter,
    /// (trigger, action) pairs matched.
    pub trigger_matches: IntCounterVec,
    /// Conditions that failed to evaluate.
    pub condition_errors: IntCounterVec,
    /// Final delivery outcomes (never `retry_scheduled`).
    pub deliveries: IntCounterVec,
    /// HTTP attempts by answer class (2xx, 3xx, 4xx, 5xx, timeout, network, refused).
    pub attempts: IntCounterVec,
    /// Time from the first attempt to the final outcome.
    pub delivery_duration: HistogramVec,
    /// Retries scheduled, in process or handed to the durable retry stage.
    pub retries_scheduled: IntCounterVec,
    /// Requests in flight.
    pub in_flight: IntGauge,
    /// Events read and not yet final.
    pub events_pending: IntGauge,
    /// Callback updates published.
    pub callback_updates: IntCounterVec,
    /// Callback fields that failed to evaluate.
    pub callback_errors: IntCounterVec,
    /// Dead letters published, by reason.
    pub dead_letters: IntCounterVec,
    /// Placeholders that resolved to nothing.
    pub missing_placeholders: IntCounterVec,
    /// Publish failures (retried).
    pub publish_errors: IntCounterVec,
    /// Kafka consumer lag per owned partition (`source`, `topic`, `partition`).
    pub source_lag: IntGaugeVec,
    /// JetStream messages pending for the durable consumer (`stream`, `consumer`): the same
    /// consumer-wide figure on every replica, so aggregate it with `max`, never `sum`.
    pub nats_consumer_pending: IntGaugeVec,
    /// 1 while `/readyz` answers 200, 0 otherwise (set when scraped).
    pub ready: IntGauge,
    /// One series per action, value 1: its type, status and the connection it sends to,
    /// so that per-connection views join on `action`.
    pub action_info: IntGaugeVec,
    /// One series, value 1: the version and revision of the running binary.
    pub build_info: IntGaugeVec,
    /// Mentioned contacts not notified because an event had more than `max_mentions`.
    pub mentions_skipped: IntCounterVec,
    /// Names of every family registered, process collector included.
    families: Vec<String>,
}

/// The `reason` label of a dead letter: the reason itself, except that HTTP answers are
/// counted by class, so that the label stays within [`DEAD_LETTER_REASONS`] for every
/// reason hookbridge gives today.
pub fn dead_letter_reason(reason: &str) -> &str {
    match reason.strip_prefix("http_").and_then(|code| code.parse::<u16>().ok()) {
        Some(400..=499) => "http_4xx",
        Some(500..=599) => "http_5xx",
        Some(_) => "http_other",
        None => reason,
    }
}

impl Metrics {
    fn new() -> Metrics {
        // No registry prefix: the process collector's families are `process_*` by convention,
        // ours carry `hookbridge_` in their names.
        let registry = Registry::new();
        let families = RefCell::new(Vec::new());
        let register = |c: Box<dyn Collector>| {
            families.borrow_mut().extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(c).expect("registered once");
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(format!("hookbridge_{name}"), help), labels).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(format!("hookbridge_{name}"), help), labels).expect("valid metric");
            register(Box::new(g.clone()));
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(format!("hookbridge_{name}"), help).expect("valid metric");
            register(Box::new(g.clone()));
            g
        };
        let events_received = counter("events_received_total", "Messages read from the source.", &["source"]);
        let events_invalid =
            counter("events_invalid_total", "Messages that were not valid events, by reason.", &["reason"]);
        let events_unmatched = prometheus::IntCounter::new(
            "hookbridge_events_unmatched_total",
            "Events that matched no trigger (acknowledged with no output).",
        )
        .expect("valid metric");
        register(Box::new(events_unmatched.clone()));
        let trigger_matches =
            counter("trigger_matches_total", "(trigger, action) pairs matched by events.", &["trigger", "action"]);
        let condition_errors =
            counter("condition_errors_total", "Trigger conditions that failed to evaluate.", &["trigger"]);
        let deliveries = counter(
            "deliveries_total",
            "Final delivery outcomes (delivered, failed, skipped, dry_run); retries are in retries_scheduled_total.",
            &["action", "type", "outcome"],
        );
        let attempts = counter(
            "attempts_total",
            "HTTP attempts by answer class (2xx, 3xx, 4xx, 5xx, timeout, network, refused, invalid).",
            &["action", "status_class"],
        );
        let retries_scheduled = counter(
            "retries_scheduled_total",
            "Retries scheduled: in process, or handed to the durable retry stage.",
            &["action", "stage"],
        );
        let callback_updates = counter("callback_updates_total", "Callback updates published.", &["action"]);
        let callback_errors = counter("callback_errors_total", "Callback fields that failed to evaluate.", &["action"]);
        let dead_letters = counter("dead_letters_total", "Dead letters published, by reason.", &["reason"]);
        let missing_placeholders =
            counter("missing_placeholders_total", "Placeholders that resolved to nothing.", &["action"]);
        let mentions_skipped = counter(
            "mentions_skipped_total",
            "Mentioned contacts not notified because an event had more than delivery.max_mentions.",
            &["trigger"],
        );
        let publish_errors =
            counter("publish_errors_total", "Failed publish attempts (retried until they succeed).", &["kind"]);
        let delivery_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookbridge_delivery_duration_seconds",
                "Time from the first attempt to the final outcome of a delivery.",
            )
            .buckets(exponential_buckets(0.005, 2.0, 16).expect("valid buckets")),
            &["action"],
        )
        .expect("valid metric");
        register(Box::new(delivery_duration.clone()));
        let in_flight = gauge("deliveries_in_flight", "HTTP requests in flight.");
        let events_pending = gauge("events_pending", "Events read whose outcomes are not all final yet.");
        let source_lag = gauge_vec(
            "source_lag",
            "Kafka consumer lag of each partition this replica owns: events not final yet.",
            &["source", "topic", "partition"],
        );
        let nats_consumer_pending = gauge_vec(
            "nats_consumer_pending",
            "JetStream messages not yet delivered by the durable consumer; the same on every replica (aggregate with max).",
            &["stream", "consumer"],
        );
        let ready = gauge("ready", "1 while /readyz answers 200 (source connected), 0 otherwise.");
        let action_info = gauge_vec(
            "action_info",
            "Configured actions: type, status and the connection they send to (value 1).",
            &["action", "type", "status", "connection"],
        );
        let build_info = gauge_vec(
            "build_info",
            "The running binary: version and source revision (value 1).",
            &["version", "revision"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("HOOKBRIDGE_REVISION").unwrap_or("unknown")])
            .set(1);
        #[cfg(target_os = "linux")]
        register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        let families = families.into_inner();
        Metrics {
            registry,
            events_received,
            events_invalid,
            events_unmatched,
            trigger_matches,
            condition_errors,
            deliveries,
            attempts,
            delivery_duration,
            retries_scheduled,
            in_flight,
            events_pending,
            callback_updates,
            callback_errors,
            dead_letters,
            missing_placeholders,
            publish_errors,
            source_lag,
            nats_consumer_pending,
            ready,
            action_info,
            build_info,
            mentions_skipped,
            families,
        }
    }

    /// The name of every family this process can export (histograms by their base name),
    /// whether or not it has a series yet: what dashboards and alerts may refer to.
    pub fn family_names(&self) -> &[String] {
        &self.families
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn attempt_and_retry_labels_are_the_documented_ones() {
        // Dashboards and alerts select on these values: they never change.
        let classes = AttemptClass::ALL.map(AttemptClass::as_str);
        assert_eq!(classes, ["2xx", "3xx", "4xx", "5xx", "timeout", "network", "refused", "invalid"]);
        assert_eq!(RetryWait::ALL.map(RetryWait::as_str), ["in_process", "durable", "parked"]);
        let by_status = [204, 302, 429, 503].map(AttemptClass::of_status);
        assert_eq!(
            by_status,
            [AttemptClass::Success, AttemptClass::Redirect, AttemptClass::ClientError, AttemptClass::ServerError]
        );
    }

    #[test]
    fn http_reasons_are_counted_by_class() {
        assert_eq!(dead_letter_reason("http_404"), "http_4xx");
        assert_eq!(dead_letter_reason("http_503"), "http_5xx");
        assert_eq!(dead_letter_reason("http_302"), "http_other");
        assert_eq!(dead_letter_reason("too_large"), "too_large");
        assert_eq!(dead_letter_reason("http_x"), "http_x");
    }

    #[test]
    fn every_series_of_a_config_exists_before_its_first_use() {
        let config = Config::from_yaml(
            r#"
source: {type: file, path: "-"}
responses: {type: file, path: "-"}
dead_letter: {type: file, path: "-"}
connections:
  hook: {url: "http://127.0.0.1:1/x"}
actions:
  - {name: post, type: webhook, connection: hook, payload: "{}"}
triggers:
  - {name: created, "on": create, class: UserRequest, actions: [post]}
"#,
        )
        .expect("valid config");
        let m = get();
        m.register_config(&config);
        let text = m.render();
        for line in [
            "hookbridge_events_received_total{source=\"file\"} 0",
            "hookbridge_deliveries_total{action=\"post\",outcome=\"failed\",type=\"webhook\"} 0",
            "hookbridge_attempts_total{action=\"post\",status_class=\"5xx\"} 0",
            "hookbridge_retries_scheduled_total{action=\"post\",stage=\"durable\"} 0",
            "hookbridge_trigger_matches_total{action=\"post\",trigger=\"created\"} 0",
            "hookbridge_dead_letters_total{reason=\"http_4xx\"} 0",
            "hookbridge_publish_errors_total{kind=\"dead_letter\"} 0",
            "hookbridge_action_info{action=\"post\",connection=\"hook\",status=\"enabled\",type=\"webhook\"} 1",
            "hookbridge_delivery_duration_seconds_count{action=\"post\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("hookbridge_build_info{revision="), "{text}");
        assert!(!text.contains("retry_scheduled"), "{text}");
    }
}
