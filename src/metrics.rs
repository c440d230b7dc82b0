//! Every metric, declared once. Names are `hookbridge_<noun>_total` / `_seconds`; labels
//! come from bounded sets only (trigger, action, type, outcome, reason, answer class,
//! source partition) — never an object id or a URL.

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The registry and its metrics.
pub struct Metrics {
    /// Registry rendered on /metrics.
    pub registry: Registry,
    /// Messages read from the source.
    pub events_received: IntCounterVec,
    /// Messages that were not valid events, by reason.
    pub events_invalid: IntCounterVec,
    /// (trigger, action) pairs matched.
    pub trigger_matches: IntCounterVec,
    /// Conditions that failed to evaluate.
    pub condition_errors: IntCounterVec,
    /// Final delivery outcomes.
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
    /// Source lag: Kafka consumer lag per partition, JetStream pending messages.
    pub source_lag: IntGaugeVec,
    /// Mentioned contacts not notified because an event had more than `max_mentions`.
    pub mentions_skipped: IntCounterVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new_custom(Some("hookbridge".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let events_received = counter("events_received_total", "Messages read from the source.", &["source"]);
        let events_invalid =
            counter("events_invalid_total", "Messages that were not valid events, by reason.", &["reason"]);
        let trigger_matches =
            counter("trigger_matches_total", "(trigger, action) pairs matched by events.", &["trigger", "action"]);
        let condition_errors =
            counter("condition_errors_total", "Trigger conditions that failed to evaluate.", &["trigger"]);
        let deliveries = counter(
            "deliveries_total",
            "Final delivery outcomes (delivered, failed, skipped, dry_run).",
            &["action", "type", "outcome"],
        );
        let attempts = counter(
            "attempts_total",
            "HTTP attempts by answer class (2xx, 3xx, 4xx, 5xx, timeout, network, refused).",
            &["action", "class"],
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
                "delivery_duration_seconds",
                "Time from the first attempt to the final outcome of a delivery.",
            )
            .buckets(exponential_buckets(0.005, 2.0, 16).expect("valid buckets")),
            &["action"],
        )
        .expect("valid metric");
        registry.register(Box::new(delivery_duration.clone())).expect("registered once");
        let in_flight = IntGauge::new("deliveries_in_flight", "HTTP requests in flight.").expect("valid metric");
        registry.register(Box::new(in_flight.clone())).expect("registered once");
        let events_pending =
            IntGauge::new("events_pending", "Events read whose outcomes are not all final yet.").expect("valid metric");
        registry.register(Box::new(events_pending.clone())).expect("registered once");
        let source_lag = IntGaugeVec::new(
            Opts::new("source_lag", "Kafka consumer lag per partition, or JetStream messages pending."),
            &["source", "partition"],
        )
        .expect("valid metric");
        registry.register(Box::new(source_lag.clone())).expect("registered once");
        Metrics {
            registry,
            events_received,
            events_invalid,
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
            mentions_skipped,
        }
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
