//! The Kafka source, the retry topic and the producers, end to end against librdkafka's mock
//! cluster (hosted in the test process, reached over loopback TCP by in-process bridges and by
//! `hookbridge run` processes alike) and real HTTP receivers on port 0.
//!
//! - `broker_checks`: the broker serves what the other tests rely on.
//! - `scenarios`: malformed records, retries through the retry topic, CloudEvents, keys, a
//!   hanging endpoint.
//! - `faults`: brokers down, produce errors, a coordinator move, commit timeouts.
//! - `crash`: replicas killed with SIGKILL and taken over; duplicates and takeover measured.
//! - `subscriptions`: regular-expression subscriptions and topics that appear while running.
//! - `soak`: a receiver that fails, throttles and hangs, with crashes.

#[path = "../common/mod.rs"]
mod common;

mod bridge;
mod broker;
mod broker_checks;
mod crash;
mod faults;
mod parking;
mod scenarios;
mod soak;
mod subscriptions;

use std::collections::{BTreeMap, HashSet};

use broker::Record;
use common::event;
use serde_json::{json, Value};

pub fn ticket(id: &str, key: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&event(id, key, json!({ "object": object }))).unwrap()
}

pub fn parsed(records: &[Record]) -> Vec<Value> {
    records.iter().map(Record::json).collect()
}

/// Checks the `seq` values one object received, in arrival order, and returns how many
/// were duplicates.
///
/// At-least-once delivery with per-object order means the values are runs of consecutive
/// numbers: the first run starts at 0, and every later run starts at or below the value
/// just before it. A run that starts lower is a replay of events already delivered (an HTTP
/// retry of the same event, or a redelivery from the last committed position after the
/// kill or a rebalance), which Kafka replays in order. So a value reaches the receiver for
/// the first time only as `max so far + 1`: no event of an object arrives before an earlier
/// one has, none is skipped, and with every value present at the end none is lost.
pub fn check_order(object: &str, seqs: &[i64], count: i64) -> usize {
    let mut prev = -1;
    let mut max = -1;
    for (i, &s) in seqs.iter().enumerate() {
        assert!(
            s == prev + 1 || (s <= prev && prev >= 0),
            "object {object}: seq {s} after {prev} at position {i} (neither the next one nor a replay): {seqs:?}"
        );
        max = max.max(s);
        prev = s;
    }
    assert_eq!(max, count - 1, "object {object}: not every event arrived: {seqs:?}");
    seqs.len() - seqs.iter().collect::<HashSet<_>>().len()
}

/// `hookbridge_source_lag` lines of a replica's /metrics: "topic/partition" -> lag.
pub async fn source_lag(ops: &str) -> BTreeMap<String, i64> {
    let Ok(resp) = reqwest::get(format!("{ops}/metrics")).await else {
        return BTreeMap::new();
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("hookbridge_source_lag{"))
        .filter_map(|l| {
            let label = |name: &str| Some(l.split(&format!("{name}=\"")).nth(1)?.split('"').next()?.to_string());
            let partition = format!("{}/{}", label("topic")?, label("partition")?);
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()? as i64;
            Some((partition, value))
        })
        .collect()
}
