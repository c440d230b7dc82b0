//! librdkafka settings: hookbridge's defaults first, then the user's `properties` as they
//! are, except the few settings that at-least-once delivery depends on. Also the client
//! context that sends librdkafka's own logs to `tracing`.

use std::collections::BTreeMap;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError as RdError;

/// Settings that only make sense for consumers: not inherited by producers, so a producer
/// built from the source's properties does not warn about each of them.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "enable.partition.eof",
    "check.crcs",
    "isolation.level",
    "allow.auto.create.topics",
    "statistics.interval.ms",
];

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
        .set("enable.partition.eof", "false");
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

/// The source's properties, minus those only consumers understand.
pub fn inherited_by_producers(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .filter(|(k, _)| !CONSUMER_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
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

/// librdkafka's log lines, at a level that matches theirs.
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "hookbridge::kafka::librdkafka", facility = fac, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "hookbridge::kafka::librdkafka", facility = fac, "{message}")
        }
        RDKafkaLogLevel::Notice => tracing::info!(target: "hookbridge::kafka::librdkafka", facility = fac, "{message}"),
        RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "hookbridge::kafka::librdkafka", facility = fac, "{message}")
        }
    }
}

/// A client-level error: librdkafka retries on its own (brokers down, a connection lost),
/// so this is a warning, not a failure of the bridge.
pub fn client_error(error: &RdError, reason: &str) {
    tracing::warn!(target: "hookbridge::kafka::librdkafka", error = %error, "{reason}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
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
    fn producers_inherit_security_but_not_consumer_settings() {
        let inherited = inherited_by_producers(&props(&[
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("session.timeout.ms", "6000"),
            ("group.instance.id", "x"),
        ]));
        assert_eq!(inherited, props(&[("sasl.mechanism", "SCRAM-SHA-512")]));
        let p = producer(&["a:9092".into()], &props(&[("linger.ms", "50")]));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("linger.ms"), Some("50"));
    }
}
