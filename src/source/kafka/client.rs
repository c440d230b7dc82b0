//! librdkafka settings: hookbridge's defaults first, then the user's `properties` as they
//! are, except the few settings that at-least-once delivery depends on. Also the client
//! context that sends librdkafka's own logs to `tracing`.

use std::collections::BTreeMap;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError as RdError;

/// Settings of the consumer group that reads `topics`; `instance` is the static member id
/// (`group.instance.id`), when the replica has a stable one.
///
/// hookbridge commits offsets itself, only up to the messages whose outcomes are all final,
/// as they become final ([`super::commit`]); so librdkafka's automatic commits and offset
/// store are forced off whatever the properties say: either would commit offsets of messages
/// still in flight, and a crash would lose them.
pub fn consumer(
    brokers: &[String],
    group_id: &str,
    instance: Option<&str>,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    for key in ["enable.auto.offset.store", "enable.auto.commit"] {
        if properties.get(key).is_some_and(|v| v != "false") {
            tracing::warn!(
                "kafka property {key} is ignored: hookbridge commits offsets itself once outcomes are final"
            );
        }
    }
    let mut c = consumer_settings(brokers, group_id, properties);
    if let Some(instance) = instance {
        if properties.get("group.instance.id").is_some_and(|v| v != instance) {
            tracing::warn!("kafka property group.instance.id is overridden by source.group_instance_id");
        }
        c.set("group.instance.id", instance);
    }
    c
}

fn consumer_settings(brokers: &[String], group_id: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers.join(","))
        .set("group.id", group_id)
        .set("client.id", "hookbridge")
        // After a broker outage, reconnect within a second rather than librdkafka's ten: a
        // coordinator back within the session timeout then keeps the assignment.
        .set("reconnect.backoff.max.ms", "1000")
        // A new group reads what is already there: skipping it would drop notifications.
        .set("auto.offset.reset", "earliest")
        // Cooperative rebalancing moves only the partitions that change owner; the others
        // keep flowing while a replica joins or leaves.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.partition.eof", "false")
        // hookbridge bounds its own read-ahead (in events and bytes); librdkafka's default
        // prefetch of up to 64 MiB per consumer would otherwise be most of the process's
        // memory. 8 MiB is still thousands of events ahead of the pipeline.
        .set("queued.max.messages.kbytes", "8192");
    for (k, v) in properties {
        c.set(k, v);
    }
    c.remove("auto.commit.interval.ms");
    c.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    c
}

/// Settings of the consumer of the retry topic.
///
/// It is assigned partitions by hookbridge (the retry partitions of the source partitions
/// this replica owns), so it is not a member of the source's group: its positions are
/// committed under a group of their own, `<group_id>.retry`. It always starts from the
/// earliest retry record, because every record there is a delivery someone waits for.
pub fn retry_consumer(brokers: &[String], group_id: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = consumer_settings(brokers, &retry_group(group_id), properties);
    c.set("group.id", retry_group(group_id));
    c.set("auto.offset.reset", "earliest");
    c.remove("group.instance.id");
    c.remove("partition.assignment.strategy");
    c
}

/// The group under which retry-topic positions are committed.
pub fn retry_group(group_id: &str) -> String {
    format!("{group_id}.retry")
}

/// Settings of a producer: idempotent with `acks=all`, so a record acknowledged once is
/// there exactly once even when librdkafka had to resend it.
pub fn producer(brokers: &[String], properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers.join(","))
        .set("client.id", "hookbridge")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("reconnect.backoff.max.ms", "1000")
        // Results are small and latency matters more than batching.
        .set("linger.ms", "5");
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// A client context that logs through `tracing` and ignores statistics.
#[derive(Clone, Default)]
pub struct Logging;

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn stats(&self, _: rdkafka::Statistics) {}

    fn error(&self, error: RdError, reason: &str) {
        client_error(&error, reason);
    }
}

/// librdkafka's log lines. Its `Error` level mostly reports what it retries on its own (a
/// broker refusing connections, a connection lost), so it becomes a warning here; only
/// `Critical` and above are errors. Each (level, facility) is rate-limited: a broker
/// outage otherwise floods the log with the same lines several times a second.
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let Some(suppressed) = admit(&format!("{level:?}/{fac}")) else {
        return;
    };
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(target: "hookbridge::kafka::librdkafka", facility = fac, suppressed, "{message}")
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "hookbridge::kafka::librdkafka", facility = fac, suppressed, "{message}")
        }
        RDKafkaLogLevel::Notice => {
            tracing::info!(target: "hookbridge::kafka::librdkafka", facility = fac, suppressed, "{message}")
        }
        RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "hookbridge::kafka::librdkafka", facility = fac, suppressed, "{message}")
        }
    }
}

/// A client-level error: librdkafka retries on its own (brokers down, a connection lost),
/// so this is a warning, not a failure of the bridge. Rate-limited per error kind.
pub fn client_error(error: &RdError, reason: &str) {
    let Some(suppressed) = admit(&format!("error/{:?}", error.rdkafka_error_code())) else {
        return;
    };
    tracing::warn!(target: "hookbridge::kafka::librdkafka", error = %error, suppressed, "{reason}");
}

/// Lines of one kind let through per window.
const LOG_BURST: u32 = 3;
/// The window of [`LOG_BURST`].
const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a line of kind `key` is logged now; `Some(n)`: yes, and `n` lines of that kind
/// were dropped before it.
fn admit(key: &str) -> Option<u64> {
    use std::sync::{Mutex, OnceLock};
    static LIMITER: OnceLock<Mutex<RateLimiter>> = OnceLock::new();
    let limiter = LIMITER.get_or_init(|| Mutex::new(RateLimiter::new(LOG_BURST, LOG_WINDOW)));
    limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(key, std::time::Instant::now())
}

/// At most `burst` lines per key and window; the first line after a dropped run says how
/// many were dropped.
struct RateLimiter {
    burst: u32,
    window: std::time::Duration,
    /// key -> (window start, lines let through in it, lines dropped since the last one logged)
    keys: std::collections::HashMap<String, (std::time::Instant, u32, u64)>,
}

impl RateLimiter {
    fn new(burst: u32, window: std::time::Duration) -> RateLimiter {
        RateLimiter { burst, window, keys: std::collections::HashMap::new() }
    }

    fn admit(&mut self, key: &str, now: std::time::Instant) -> Option<u64> {
        let entry = self.keys.entry(key.to_string()).or_insert((now, 0, 0));
        if now.duration_since(entry.0) >= self.window {
            entry.0 = now;
            entry.1 = 0;
        }
        if entry.1 < self.burst {
            entry.1 += 1;
            Some(std::mem::take(&mut entry.2))
        } else {
            entry.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn repeated_log_lines_are_limited_per_kind_and_window() {
        let start = std::time::Instant::now();
        let mut limiter = RateLimiter::new(3, std::time::Duration::from_secs(30));
        // 132 lines of one kind in 12 s (what an unreachable broker produced): 3 logged.
        let logged: Vec<u64> = (0..132)
            .filter_map(|i| limiter.admit("Error/FAIL", start + std::time::Duration::from_millis(i * 90)))
            .collect();
        assert_eq!(logged, vec![0, 0, 0]);
        // Another kind is not held back by the first.
        assert_eq!(limiter.admit("Warning/REQTMOUT", start), Some(0));
        // The next window's first line says how many were dropped.
        assert_eq!(limiter.admit("Error/FAIL", start + std::time::Duration::from_secs(31)), Some(129));
        assert_eq!(limiter.admit("Error/FAIL", start + std::time::Duration::from_secs(32)), Some(0));
    }

    #[test]
    fn user_properties_override_defaults_except_the_commits() {
        let c = consumer(
            &["a:9092".into(), "b:9092".into()],
            "g",
            None,
            &props(&[
                ("auto.offset.reset", "latest"),
                ("enable.auto.offset.store", "true"),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "5000"),
                ("security.protocol", "SASL_SSL"),
            ]),
        );
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("auto.offset.reset"), Some("latest"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("auto.commit.interval.ms"), None);
        assert_eq!(c.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        assert_eq!(c.get("group.instance.id"), None);
    }

    #[test]
    fn the_static_member_id_goes_to_the_group_consumer_only() {
        let c = consumer(&["a:9092".into()], "g", Some("hookbridge-0"), &props(&[("group.instance.id", "x")]));
        assert_eq!(c.get("group.instance.id"), Some("hookbridge-0"));
        let r = retry_consumer(&["a:9092".into()], "g", &props(&[]));
        assert_eq!(r.get("group.instance.id"), None);
    }

    #[test]
    fn the_retry_consumer_has_its_own_group_and_reads_from_the_start() {
        let c = retry_consumer(
            &["a:9092".into()],
            "g",
            &props(&[("auto.offset.reset", "latest"), ("group.instance.id", "r1")]),
        );
        assert_eq!(c.get("group.id"), Some("g.retry"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(c.get("group.instance.id"), None);
    }

    #[test]
    fn producers_keep_the_settings_delivery_depends_on() {
        let p = producer(&["a:9092".into()], &props(&[("linger.ms", "50")]));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("linger.ms"), Some("50"));
    }
}
