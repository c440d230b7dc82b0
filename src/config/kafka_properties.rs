//! librdkafka properties shared between the Kafka source and the producers that take the
//! source's settings (the retry topic's, and results and dead letters that give none of
//! their own): security and connection settings carry over, consumer-only ones do not.

use std::collections::BTreeMap;

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

/// The source's properties, minus those only consumers understand.
pub(crate) fn for_producers(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .filter(|(k, _)| !CONSUMER_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_take_security_but_not_consumer_settings() {
        let props = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let taken = for_producers(&props(&[
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("session.timeout.ms", "6000"),
            ("group.instance.id", "x"),
        ]));
        assert_eq!(taken, props(&[("sasl.mechanism", "SCRAM-SHA-512")]));
    }
}
