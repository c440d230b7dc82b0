//! Subscriptions: a regular expression (`^…`, librdkafka's convention) takes topics created
//! while hookbridge runs, and a named topic that appears while running is read too; in both
//! cases the new partitions get their retry partitions (deliveries that fail are parked
//! there and come back), without a restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::bridge::{InProcess, Setup};
use crate::broker::{Broker, Record};
use crate::common::{wait_until, Receiver, Reply};
use crate::ticket;

/// Answers 503 to objects whose reference starts with `R-late` until `up` is set, 200 to
/// everything else: the late topic's deliveries get parked in the retry topic.
async fn receiver(up: Arc<AtomicBool>) -> Receiver {
    Receiver::scripted(Duration::from_millis(1), move |key, _, _| {
        if key.starts_with("R-late") && !up.load(Ordering::SeqCst) {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await
}

/// `per_object` events for each of `objects` objects named `{prefix}{n}`, keyed by object.
fn events(prefix: &str, objects: usize, per_object: i64) -> Vec<(String, Vec<u8>)> {
    (0..per_object)
        .flat_map(|seq| {
            (0..objects).map(move |o| {
                let key = format!("{prefix}{o}");
                let value = ticket(&format!("{key}-{seq}"), &key, json!({"ref": format!("R-{key}"), "seq": seq}));
                (key, value)
            })
        })
        .collect()
}

fn delivered_keys(rx: &Receiver) -> HashSet<(String, i64)> {
    rx.seen().into_iter().filter(|h| h.delivered()).map(|h| (h.key, h.seq)).collect()
}

/// The partitions of the retry records of `topic`, as (retry partition, origin partition).
fn parked(records: &[Record], topic: &str) -> BTreeMap<i64, HashSet<i32>> {
    let mut out: BTreeMap<i64, HashSet<i32>> = BTreeMap::new();
    for r in records {
        let Some(origin) = r.header("hookbridge-retry-origin").and_then(|h| serde_json::from_slice::<Value>(h).ok())
        else {
            continue;
        };
        if origin["topic"] == topic {
            out.entry(origin["partition"].as_i64().unwrap()).or_default().insert(r.partition);
        }
    }
    out
}

/// Waits until each partition of `topic` that holds events has parked deliveries in the
/// retry topic, and checks each is in retry partition `base + partition`.
async fn wait_parked(broker: &Broker, retry_topic: &str, topic: &str, base: i32) {
    let with_events: Vec<i64> =
        broker.end_offsets(topic).into_iter().filter(|(_, e)| *e > 0).map(|(p, _)| p as i64).collect();
    let mut reader = broker.reader(retry_topic);
    reader
        .until(&format!("deliveries of every partition of {topic} parked"), Duration::from_secs(60), |rs| {
            parked(rs, topic).keys().copied().collect::<Vec<_>>() == with_events
        })
        .await;
    for (origin, retry_partitions) in parked(&reader.records, topic) {
        assert_eq!(retry_partitions, HashSet::from([base + origin as i32]), "retry partition of {topic}/{origin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_expression_takes_topics_created_while_running() {
    let broker = Broker::start();
    broker.create_topics(&["changes.early"], 2);
    broker.create_topics(&["other"], 1);
    broker.create_topics(&["retry"], 16);
    broker.create_topics(&["responses", "dead-letter"], 1);
    let up = Arc::new(AtomicBool::new(false));
    let rx = receiver(up.clone()).await;
    broker.produce_many("changes.early", &events("early", 4, 5)).await;
    broker.produce_many("other", &events("other", 2, 5)).await;
    let setup = Setup {
        topics: &[r"^changes\..*"],
        source: json!({"retry_topic": "retry"}),
        properties: json!({"topic.metadata.refresh.interval.ms": "1000"}),
        ..Setup::webhook(
            &broker.addr,
            "pattern",
            json!({"quick_attempts": 1, "retry": {"max_attempts": 100, "initial": "200ms", "max": "200ms", "jitter": 0}}),
            &rx.url("/hook"),
        )
    };
    let bridge = InProcess::start(&setup.config());
    wait_until(
        "the existing topic's 20 events",
        Duration::from_secs(30),
        || delivered_keys(&rx).len() >= 20,
        String::new,
    )
    .await;

    // A new topic matching the expression, while running.
    broker.create_topics(&["changes.late"], 4);
    broker.produce_many("changes.late", &events("late", 8, 5)).await;
    // Layout: changes.early on retry partitions 0-1, changes.late (sorted after it) on 2-5.
    wait_parked(&broker, "retry", "changes.late", 2).await;
    up.store(true, Ordering::SeqCst);
    wait_until(
        "the new topic's 40 events",
        Duration::from_secs(60),
        || delivered_keys(&rx).len() >= 60,
        || format!("{} of 60 delivered", delivered_keys(&rx).len()),
    )
    .await;
    let (committed, ends) = broker.committed_to_the_end("pattern", "changes.late", Duration::from_secs(20)).await;
    assert_eq!(committed, ends, "the new topic's offsets, committed by the running bridge");
    bridge.stop().await;

    let delivered = delivered_keys(&rx);
    assert!(
        delivered.iter().all(|(k, _)| !k.starts_with("R-other")),
        "a topic the expression does not match is not read"
    );
    assert_eq!(delivered.len(), 60);
    assert_eq!(broker.committed("pattern", "changes.early"), broker.end_offsets("changes.early"));
    assert_eq!(broker.committed("pattern", "changes.late"), broker.end_offsets("changes.late"));
    assert!(parked(&broker.read_all("retry").await, "changes.early").is_empty(), "nothing of the first topic failed");
    let retry_ends: BTreeMap<i32, i64> = broker.end_offsets("retry").into_iter().filter(|(_, e)| *e > 0).collect();
    let retry_committed: BTreeMap<i32, i64> =
        broker.committed("pattern.retry", "retry").into_iter().filter(|(p, _)| retry_ends.contains_key(p)).collect();
    assert_eq!(retry_committed, retry_ends, "retry positions committed to the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_topic_that_appears_while_running_is_read_with_its_retry_partitions() {
    let broker = Broker::start();
    broker.create_topics(&["changes"], 4);
    broker.create_topics(&["changes.retry"], 8);
    broker.create_topics(&["responses", "dead-letter"], 1);
    let up = Arc::new(AtomicBool::new(false));
    let rx = receiver(up.clone()).await;
    broker.produce_many("changes", &events("first", 4, 5)).await;
    let setup = Setup {
        topics: &["changes", "later"],
        properties: json!({"topic.metadata.refresh.interval.ms": "1000"}),
        ..Setup::webhook(
            &broker.addr,
            "appears",
            json!({"quick_attempts": 1, "retry": {"max_attempts": 100, "initial": "200ms", "max": "200ms", "jitter": 0}}),
            &rx.url("/hook"),
        )
    };
    let bridge = InProcess::start(&setup.config());
    wait_until("the first topic's 20 events", Duration::from_secs(30), || delivered_keys(&rx).len() >= 20, String::new)
        .await;

    // `later` had no partitions; now it has 4, after those of `changes` in the layout.
    broker.create_topics(&["later"], 4);
    broker.produce_many("later", &events("late", 8, 5)).await;
    wait_parked(&broker, "changes.retry", "later", 4).await;
    up.store(true, Ordering::SeqCst);
    wait_until(
        "the new topic's 40 events",
        Duration::from_secs(60),
        || delivered_keys(&rx).len() >= 60,
        || format!("{} of 60 delivered", delivered_keys(&rx).len()),
    )
    .await;
    let (committed, ends) = broker.committed_to_the_end("appears", "later", Duration::from_secs(20)).await;
    assert_eq!(committed, ends);
    bridge.stop().await;
    assert_eq!(broker.committed("appears", "changes"), broker.end_offsets("changes"));
    assert!(parked(&broker.read_all("changes.retry").await, "changes").is_empty(), "nothing of the first topic failed");
    let retry_ends = broker.end_offsets("changes.retry");
    assert_eq!(
        broker
            .committed("appears.retry", "changes.retry")
            .into_iter()
            .filter(|(p, _)| *p >= 4)
            .collect::<BTreeMap<_, _>>(),
        retry_ends.into_iter().filter(|(p, _)| *p >= 4).collect::<BTreeMap<_, _>>()
    );
}
