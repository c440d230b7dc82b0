//! Faults injected with the mock cluster's own API while events flow: brokers down and up,
//! produce errors on the results topic, the group coordinator moving, commits timing out.
//! Each run ends the same way: every event delivered and with a `delivered` result, first
//! deliveries in order per object, the group's committed offsets at the end offsets (while
//! running, and after the stop), and the duplicates counted and printed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;

use crate::bridge::{InProcess, Setup};
use crate::broker::Broker;
use crate::common::{wait_until, Receiver};
use crate::{check_order, parsed, ticket};

const OBJECTS: i64 = 20;
const PER_OBJECT: i64 = 60;
const PARTITIONS: i32 = 4;

/// 1,200 events over 20 objects, half of them produced before the bridge starts and half
/// while the fault is on.
struct FaultRun {
    broker: Broker,
    rx: Receiver,
    bridge: Option<InProcess>,
    group: &'static str,
}

fn event(obj: i64, seq: i64) -> (String, Vec<u8>) {
    (
        obj.to_string(),
        ticket(&format!("e-{obj}-{seq}"), &obj.to_string(), json!({"ref": format!("R-{obj}"), "seq": seq})),
    )
}

fn half(first: bool) -> Vec<(String, Vec<u8>)> {
    let range = if first { 0..PER_OBJECT / 2 } else { PER_OBJECT / 2..PER_OBJECT };
    range.flat_map(|seq| (0..OBJECTS).map(move |obj| event(obj, seq))).collect()
}

impl FaultRun {
    /// Produces the first half, starts the bridge and waits until it delivered a third.
    async fn start(group: &'static str) -> FaultRun {
        let broker = Broker::start();
        broker.create_topics(&["changes", "changes.retry"], PARTITIONS);
        broker.create_topics(&["responses", "dead-letter"], 2);
        let rx = Receiver::slow(Duration::from_millis(2)).await;
        broker.produce_many("changes", &half(true)).await;
        let setup = Setup {
            properties: json!({"enable.idempotence": "false"}),
            ..Setup::webhook(&broker.addr, group, json!({"concurrency": 32}), &rx.url("/hook"))
        };
        // librdkafka's mock acknowledges some retried batches of an idempotent producer
        // without writing them (a plain producer, after injected produce errors: 1,200 acks,
        // 1,196 to 1,200 records; none lost without idempotence). A real broker checks the
        // sequence numbers. So these runs, which make producers retry, produce without it:
        // results may then be written twice, never lost.
        let bridge = InProcess::start(&setup.config());
        let total = (OBJECTS * PER_OBJECT) as usize;
        wait_until("a third delivered", Duration::from_secs(60), || rx.count() >= total / 3, String::new).await;
        FaultRun { broker, rx, bridge: Some(bridge), group }
    }

    /// Produces the second half.
    async fn produce_the_rest(&self) {
        self.broker.produce_many("changes", &half(false)).await;
    }

    /// Waits for every event, checks results, order and offsets, stops the bridge and
    /// returns the duplicates. `refused` results are those the results topic refused for
    /// good: they are not produced again (the delivery stands, its result is logged and
    /// counted as lost), so those events may lack a result.
    async fn finish(mut self, fault: &str, refused: bool) -> usize {
        let total = (OBJECTS * PER_OBJECT) as usize;
        let started = Instant::now();
        wait_until(
            "every event delivered",
            Duration::from_secs(90),
            || self.rx.distinct_delivered() >= total,
            || {
                let m = hookbridge::metrics();
                format!(
                    "{} of {total} delivered, {} requests; pending {} in flight {} publish errors {:?}",
                    self.rx.distinct_delivered(),
                    self.rx.count(),
                    m.events_pending.get(),
                    m.in_flight.get(),
                    m.publish_errors.with_label_values(&["response"]).get()
                )
            },
        )
        .await;
        // Offsets committed to the end by the running bridge, at its own pace.
        let (committed, ends) = self.broker.committed_to_the_end(self.group, "changes", Duration::from_secs(20)).await;
        assert_eq!(
            committed,
            ends,
            "{fault}: committed offsets of the running bridge vs end offsets ({} of {total} delivered)",
            self.rx.distinct_delivered()
        );
        self.bridge.take().unwrap().stop().await;
        assert_eq!(self.broker.committed(self.group, "changes"), ends, "{fault}: committed offsets after the stop");
        assert_eq!(ends.values().sum::<i64>(), total as i64);

        let delivered = |rs: &[crate::broker::Record]| {
            parsed(rs)
                .iter()
                .filter(|v| v["status"] == "delivered")
                .map(|v| v["event_id"].as_str().unwrap_or_default().to_string())
                .collect::<HashSet<_>>()
                .len()
        };
        // Committed to the end: every result was acknowledged before.
        let results = delivered(&self.broker.read_all("responses").await);
        if !refused {
            assert_eq!(results, total, "{fault}: events with a delivered result");
        }
        assert!(parsed(&self.broker.read_all("dead-letter").await).is_empty(), "{fault}: nothing is dead-lettered");

        let hits = self.rx.seen();
        let mut per_object: HashMap<String, Vec<i64>> = HashMap::new();
        for h in &hits {
            per_object.entry(h.key.clone()).or_default().push(h.seq);
        }
        assert_eq!(per_object.len(), OBJECTS as usize);
        let duplicates: usize = per_object.iter().map(|(k, seqs)| check_order(k, seqs, PER_OBJECT)).sum();
        eprintln!(
            "kafka fault \"{fault}\": {total} events delivered, {} without a result, {duplicates} duplicates, {:.1} s from the end of the fault to the last delivery",
            total - results,
            started.elapsed().as_secs_f64()
        );
        duplicates
    }
}

/// Every broker down for 3 s (the group keeps its members), one broker down while the rest
/// flows, then every broker down for longer than the session timeout: the assignment is
/// lost and given again, and partitions that flow control had paused under the lost
/// assignment are read again (they were not, once: consumption stopped for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_and_up_mid_stream() {
    let run = FaultRun::start("down").await;
    run.broker.down(-1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.broker.up(-1);
    run.broker.down(1);
    // The rest of the events, while broker 1 is down for 2 s: its partitions wait for it.
    tokio::join!(run.produce_the_rest(), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        run.broker.up(1);
    });
    wait_until("half delivered", Duration::from_secs(60), || run.rx.count() >= 600, String::new).await;
    // A slow receiver fills the backlog, so flow control pauses partitions before the outage.
    run.rx.set_delay(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.broker.down(-1);
    tokio::time::sleep(Duration::from_secs(8)).await;
    run.broker.up(-1);
    run.rx.set_delay(Duration::from_millis(2));
    run.finish("brokers down and up", false).await;
}

/// Errors that pass: librdkafka produces again, every result arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_produce_errors_on_the_results_topic() {
    let run = FaultRun::start("produce-errors").await;
    run.produce_the_rest().await;
    // The second half is in; from here the only records produced are results.
    run.broker.fail_requests(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 8]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.broker.fail_requests(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    run.finish("retriable produce errors on the results topic", false).await;
}

/// Errors that do not pass: the results of the refused records are lost (logged and
/// counted), the events are not: each is delivered and its offset committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_on_the_results_topic_that_do_not_pass() {
    let run = FaultRun::start("refused").await;
    run.produce_the_rest().await;
    run.broker.fail_requests(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        ],
    );
    run.finish("produce errors on the results topic that do not pass", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_coordinator_moves_mid_stream() {
    let run = FaultRun::start("coordinator").await;
    for (i, broker) in [2, 3, 1].into_iter().enumerate() {
        run.broker.move_coordinator("coordinator", broker);
        run.broker.move_coordinator("coordinator.retry", broker);
        if i == 0 {
            run.produce_the_rest().await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    run.finish("the coordinator moves", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_time_out() {
    let run = FaultRun::start("timeouts").await;
    run.broker.fail_requests(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 12]);
    run.produce_the_rest().await;
    // Then answers that come late: every request of the cluster takes a second.
    run.broker.round_trip_time(-1, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.broker.round_trip_time(-1, Duration::ZERO);
    run.broker.fail_requests(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 6]);
    run.finish("commits time out", false).await;
}

/// The commit of the last event of a quiet topic is refused: nothing moves afterwards to
/// commit again, so the refusal itself must bring the commit back (an asynchronous commit's
/// answer was once never seen, and the group stayed behind by that event for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_after_the_last_event_is_sent_again() {
    let mut run = FaultRun::start("refused-commit").await;
    run.produce_the_rest().await;
    let total = (OBJECTS * PER_OBJECT) as usize;
    wait_until("every event delivered", Duration::from_secs(90), || run.rx.distinct_delivered() >= total, String::new)
        .await;
    let (committed, ends) = run.broker.committed_to_the_end(run.group, "changes", Duration::from_secs(20)).await;
    assert_eq!(committed, ends, "committed to the end before the fault");
    // Refused for good by the broker (librdkafka does not send these again by itself).
    run.broker
        .fail_requests(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3]);
    let (key, value) = event(0, PER_OBJECT);
    run.broker.produce_many("changes", &[(key, value)]).await;
    wait_until(
        "the last event delivered",
        Duration::from_secs(30),
        || run.rx.distinct_delivered() > total,
        String::new,
    )
    .await;
    let (committed, ends) = run.broker.committed_to_the_end(run.group, "changes", Duration::from_secs(20)).await;
    assert_eq!(committed, ends, "the refused commit was sent again");
    run.bridge.take().unwrap().stop().await;
}
