//! Lane parking past its memory: deliveries that come back from the retry topic while the
//! first one of their lane is still failing, more of them than parking holds in memory, are
//! kept by reference and read again at their turn, not written to the retry topic again
//! every time the first one fails once more.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::bridge::{InProcess, Setup};
use crate::broker::{Broker, Record};
use crate::common::{wait_until, Receiver, Reply};
use crate::ticket;

/// Parking holds 2,048 deliveries in memory at concurrency 64 (its floor); 300 more are
/// kept by reference.
const EVENTS: i64 = 2_348;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_past_parking_memory_are_written_to_the_retry_topic_once_and_delivered_in_order() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry", "responses", "dead-letter"], 1);
    // The lane's first delivery fails until every follower is parked and has come back a
    // few rounds of the first one's retries later.
    let failing = Arc::new(AtomicBool::new(true));
    let fail = failing.clone();
    let rx = Receiver::scripted(Duration::ZERO, move |_, seq, _| {
        if seq == 0 && fail.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let delivery = json!({
        "concurrency": 64,
        "quick_attempts": 1,
        "retry": {"max_attempts": 1000, "initial": "300ms", "max": "300ms", "multiplier": 1, "jitter": 0},
    });
    let setup = Setup::webhook(&broker.addr, "spill", delivery, &rx.url("/hook"));
    let records: Vec<(String, Vec<u8>)> = (0..EVENTS)
        .map(|seq| ("A".to_string(), ticket(&format!("a{seq}"), "A", json!({"ref": "R-A", "seq": seq}))))
        .collect();
    broker.produce_many("changes", &records).await;
    let bridge = InProcess::start(&setup.config());
    let mut retry = broker.reader("changes.retry");
    let seq_of = |r: &Record| r.json()["object"]["seq"].as_i64().unwrap();
    let first_failures = |rs: &[Record]| rs.iter().filter(|r| seq_of(r) == 0).count();
    retry
        .until("every follower parked behind the first delivery", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| seq_of(r) != 0).count() as i64 >= EVENTS - 1
        })
        .await;
    // Five more failures of the first delivery after the last follower was parked: each
    // is a round in which the followers that came back wait for it.
    let before = first_failures(&retry.records);
    retry
        .until("five more rounds of the first delivery", Duration::from_secs(60), |rs| first_failures(rs) >= before + 5)
        .await;
    failing.store(false, Ordering::SeqCst);
    wait_until(
        "every event delivered",
        Duration::from_secs(120),
        || rx.distinct_delivered() as i64 >= EVENTS,
        || format!("{} of {EVENTS} delivered", rx.distinct_delivered()),
    )
    .await;
    let (committed, ends) = broker.committed_to_the_end("spill.retry", "changes.retry", Duration::from_secs(30)).await;
    bridge.stop().await;
    assert_eq!(committed, ends, "no retry record is left unsettled");

    retry.drain();
    let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &retry.records {
        *copies.entry(seq_of(r)).or_default() += 1;
    }
    let rewritten: Vec<(i64, usize)> =
        copies.iter().filter(|(s, n)| **s != 0 && **n != 1).map(|(s, n)| (*s, *n)).collect();
    assert!(
        rewritten.is_empty(),
        "each follower is written to the retry topic once; {} were written again: {:?}",
        rewritten.len(),
        &rewritten[..rewritten.len().min(10)]
    );
    assert_eq!(copies.len() as i64, EVENTS, "every follower was parked");
    let mut first_seen = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in rx.seen().iter().filter(|h| h.delivered()) {
        if seen.insert(s.seq) {
            first_seen.push(s.seq);
        }
    }
    assert_eq!(first_seen, (0..EVENTS).collect::<Vec<_>>(), "the lane's deliveries in source order");
}
