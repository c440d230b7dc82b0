//! NATS JetStream end to end, against a real nats-server started here and the real
//! `hookbridge` binary: ordered delivery with and without crashes, replicas and a server
//! restart; malformed messages dead-lettered; CloudEvents binary mode; long retries through
//! the retry stream, one record per failing delivery; startup errors; authentication and
//! mutual TLS.

#[path = "../common/mod.rs"]
mod common;

mod bridge;
mod guarantees;
mod orphans;
mod server;
mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::AckPolicy;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use base64::Engine as _;
use bridge::Bridge;
use common::Seen;
use common::{event, wait_until, webhook, with_keys, Receiver, Reply, KEY_SEQ};
use serde_json::{json, Value};
use server::NatsServer;

const RESULTS: &str = "hookbridge.responses";
const DEAD: &str = "hookbridge.dead-letter";
const CONSUMER: &str = "hookbridge";

/// The throughput runs share two cores with everything else: one at a time, so their
/// figures mean something.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A config: NATS source on `changes.>` of stream CHANGES, results and dead letters on NATS
/// subjects, one webhook action on every created Ticket.
fn config(nats: &str, hook: &str, delivery: Value) -> Value {
    config_on(nats, CONSUMER, "changes.>", hook, delivery)
}

/// The same, for one consumer filtered on `filter`.
fn config_on(nats: &str, consumer: &str, filter: &str, hook: &str, delivery: Value) -> Value {
    bridge_config(nats, consumer, filter, delivery, webhook(json!({"url": hook}), json!({"payload": KEY_SEQ})))
}

/// What every config here is made of: the NATS source (consumer `consumer` filtered on
/// `filter`), the result and dead-letter subjects, the ops server on a port of its choosing,
/// `delivery`'s keys set in the delivery settings, and `body` (connections, actions,
/// triggers).
fn bridge_config(nats: &str, consumer: &str, filter: &str, delivery: Value, body: Value) -> Value {
    let config = json!({
        "source": {"type": "nats", "url": nats, "stream": "CHANGES", "subjects": [filter], "consumer": consumer},
        "responses": {"type": "nats", "subject": RESULTS},
        "dead_letter": {"type": "nats", "subject": DEAD},
        "server": {"listen": "127.0.0.1:0"},
        "delivery": with_keys(json!({"allow_private_networks": true, "shutdown_timeout": "20s"}), delivery),
    });
    with_keys(config, body)
}

/// The input stream and the two output streams a deployment creates before starting.
async fn create_streams(js: &Context) {
    for (name, subject) in [("CHANGES", "changes.>"), ("RESULTS", RESULTS), ("DEAD", DEAD)] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// The operator's own durable consumer `name` on `stream`, filtered on `filter`, which the
/// bridge binds as it is: explicit acks, and a short `ack_wait` so that what a killed
/// replica held comes back within a test. `max_ack_pending` 0 is the server's default.
async fn operator_consumer(stream: &Stream, name: &str, filter: &str, ack_wait: Duration, max_ack_pending: i64) {
    stream
        .create_consumer(PullConfig {
            durable_name: Some(name.into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            filter_subject: filter.into(),
            max_ack_pending,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Publishes and returns the stream sequence.
async fn publish(js: &Context, subject: &str, headers: HeaderMap, payload: Vec<u8>) -> u64 {
    js.publish_with_headers(subject.to_string(), headers, payload.into()).await.unwrap().await.unwrap().sequence
}

/// Every message of a stream: (headers, payload as JSON).
async fn read_stream(js: &Context, name: &str) -> Vec<(HeaderMap, Value)> {
    let stream = js.get_stream(name).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((m.headers, serde_json::from_slice(&m.payload).unwrap()));
        }
    }
    out
}

/// Polls `read_stream` until it holds `n` messages.
async fn wait_stream(js: &Context, name: &str, n: usize, limit: Duration) -> Vec<(HeaderMap, Value)> {
    let deadline = Instant::now() + limit;
    loop {
        let all = read_stream(js, name).await;
        if all.len() >= n || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn consumer_counts(js: &Context) -> (u64, usize) {
    counts_of(js, CONSUMER).await
}

async fn counts_of(js: &Context, consumer: &str) -> (u64, usize) {
    let stream = js.get_stream("CHANGES").await.unwrap();
    let info = stream.consumer_info(consumer).await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

/// Waits for the consumer to have nothing pending and nothing unacknowledged.
async fn wait_consumer_drained(js: &Context, limit: Duration) {
    wait_drained(js, CONSUMER, limit).await
}

async fn wait_drained(js: &Context, consumer: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), counts_of(js, consumer)).await {
            Ok((0, 0)) => return,
            Ok(counts) => assert!(Instant::now() < deadline, "consumer not drained after {limit:?}: {counts:?}"),
            Err(_) => assert!(Instant::now() < deadline, "consumer info unavailable for {limit:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ----------------------------------------------------------------------------------------
// 1. Ordered events: a clean run, then crashes, replicas and a server restart.

const OBJECTS: usize = 50;
const PER_OBJECT: usize = 40;
const EVENTS: usize = OBJECTS * PER_OBJECT;
const RECEIVER_DELAY: Duration = Duration::from_millis(50);

/// The delivery settings of the ordering runs.
fn ordered_delivery() -> Value {
    json!({"concurrency": 64, "timeout": "10s", "retry": {"max_attempts": 20, "initial": "100ms", "max": "2s"}})
}

/// 2,000 events, 40 per object over 50 objects, interleaved in stream order, each on the
/// subject `subject(object)`.
async fn publish_ordered(js: &Context, subject: impl Fn(usize) -> String) {
    let mut acks = Vec::with_capacity(EVENTS);
    for seq in 0..PER_OBJECT {
        for obj in 0..OBJECTS {
            let e = event(
                &format!("e-{obj}-{seq}"),
                &obj.to_string(),
                json!({"object": {"ref": format!("R-{obj}"), "seq": seq}}),
            );
            acks.push(js.publish(subject(obj), serde_json::to_vec(&e).unwrap().into()).await.unwrap());
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// What a receiver saw, as a user would count it.
#[derive(Debug)]
struct Stats {
    /// Distinct events delivered.
    unique: usize,
    /// Extra deliveries of an event already delivered.
    duplicates: usize,
    /// Deliveries of an event after a later event of the same object (duplicates included).
    order_violations: usize,
    /// First deliveries that came after a later event of the same object.
    late_first: usize,
}

fn stats(hits: &[Seen]) -> Stats {
    let mut seen = HashSet::new();
    let mut highest: HashMap<&str, i64> = HashMap::new();
    let mut s = Stats { unique: 0, duplicates: 0, order_violations: 0, late_first: 0 };
    for h in hits {
        let first = seen.insert((h.key.as_str(), h.seq));
        if first {
            s.unique += 1;
        } else {
            s.duplicates += 1;
        }
        let top = highest.entry(h.key.as_str()).or_insert(-1);
        if h.seq < *top {
            s.order_violations += 1;
            if first {
                s.late_first += 1;
            }
        } else {
            *top = h.seq;
        }
    }
    s
}

/// The delivery counts of a run, for the test log. Throughput is not measured here: the
/// end-to-end benchmark (`scripts/bench.sh`, BENCHMARKS.md) does that on a quiet machine.
/// Waits until a third of the ordered events were delivered: when the crash tests kill.
async fn wait_for_a_third(rx: &Receiver) {
    wait_until(
        "a third of the events",
        Duration::from_secs(60),
        || stats(&rx.seen()).unique >= EVENTS / 3,
        String::new,
    )
    .await;
}

fn report(label: &str, s: &Stats) {
    eprintln!(
        "nats run | {label}: {} events delivered; duplicates {}; order violations {} (first deliveries out of order: {})",
        s.unique, s.duplicates, s.order_violations, s.late_first
    );
}

/// One replica, no faults: all events through a receiver answering after `delay`, SIGTERM
/// as soon as the last one arrived, then the checks every clean run must pass.
async fn single_replica_run(delay: Duration, label: &str) -> Stats {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    publish_ordered(&js, |obj| format!("changes.{obj}")).await;
    let rx = Receiver::slow(delay).await;
    let dir = tempfile::tempdir().unwrap();
    // No consumer exists: the bridge creates it.
    let mut bridge =
        Bridge::start(dir.path(), "single", &config(&nats.url(), &rx.url("/hook"), ordered_delivery()), &[]);
    wait_until("every event delivered", Duration::from_secs(90), || stats(&rx.seen()).unique == EVENTS, String::new)
        .await;
    // SIGTERM right away: the last deliveries and their acks are still in flight.
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "bridge exited with {status}:\n{}", bridge.log());
    let s = stats(&rx.seen());
    report(label, &s);
    assert_eq!(consumer_counts(&js).await, (0, 0), "nothing pending or unacked after SIGTERM");
    let results = read_stream(&js, "RESULTS").await;
    assert_eq!(results.len(), EVENTS, "one result per event, each acknowledged by the stream");
    assert!(results.iter().all(|(_, r)| r["status"] == "delivered"));
    let created = js.get_stream("CHANGES").await.unwrap().consumer_info(CONSUMER).await.unwrap();
    assert_eq!(created.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(created.config.durable_name.as_deref(), Some(CONSUMER));
    assert_eq!(created.config.filter_subject, "changes.>");
    assert!(created.config.max_ack_pending >= 10_000, "{}", created.config.max_ack_pending);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_events_without_faults_arrive_in_order() {
    let _heavy = HEAVY.lock().await;
    let s = single_replica_run(RECEIVER_DELAY, "no faults, 1 replica, receiver answering after 50 ms").await;
    assert_eq!(s.order_violations, 0, "{s:?}");
    assert_eq!(s.duplicates, 0, "{s:?}");
}

/// The bridge's own pace: the same run against a receiver that answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_events_with_an_immediate_receiver() {
    let _heavy = HEAVY.lock().await;
    let s = single_replica_run(Duration::ZERO, "no faults, 1 replica, receiver answering at once").await;
    assert_eq!(s.order_violations, 0, "{s:?}");
    assert_eq!(s.duplicates, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_events_survive_kill_replicas_and_server_restart() {
    let _heavy = HEAVY.lock().await;
    let mut nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    // The operator's own consumer, with a short ack_wait so the killed replica's messages
    // come back within the test: the bridge binds it as it is.
    let changes = js.get_stream("CHANGES").await.unwrap();
    operator_consumer(&changes, CONSUMER, "changes.>", Duration::from_secs(5), 10_000).await;
    publish_ordered(&js, |obj| format!("changes.{obj}")).await;
    let rx = Receiver::slow(RECEIVER_DELAY).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&nats.url(), &rx.url("/hook"), ordered_delivery());
    let started = Instant::now();
    let mut first = Bridge::start(dir.path(), "first", &config, &[]);
    wait_for_a_third(&rx).await;
    first.kill9();
    let (at_kill, killed_after) = (stats(&rx.seen()).unique, started.elapsed());
    let mut a = Bridge::start(dir.path(), "replica-a", &config, &[]);
    let mut b = Bridge::start(dir.path(), "replica-b", &config, &[]);
    wait_until(
        "two thirds of the events",
        Duration::from_secs(60),
        || stats(&rx.seen()).unique >= 2 * EVENTS / 3,
        String::new,
    )
    .await;
    let (at_restart, restarted_after) = (stats(&rx.seen()).unique, started.elapsed());
    nats.restart().await;
    wait_until("every event delivered", Duration::from_secs(90), || stats(&rx.seen()).unique == EVENTS, String::new)
        .await;
    let s = stats(&rx.seen());
    report("kill -9 at 1/3, 2 replicas, nats-server restart at 2/3", &s);
    eprintln!(
        "nats run |   killed after {at_kill} events ({killed_after:.1?}); nats-server restarted after {at_restart} ({restarted_after:.1?}); consumer ack_wait 5 s, so the new replicas wait 5.5 s before their first pull"
    );
    // The killed replica's messages come back after ack_wait; then everything is acked.
    wait_consumer_drained(&js, Duration::from_secs(60)).await;
    for bridge in [&mut a, &mut b] {
        let status = bridge.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "replica exited with {status}:\n{}", bridge.log());
    }
    assert_eq!(consumer_counts(&js).await, (0, 0), "nothing pending or unacked after SIGTERM");
    assert_eq!(s.unique, EVENTS, "every event delivered at least once");
    for bridge in [&a, &b] {
        let log = bridge.log();
        // Three connections (source, results, dead letters), each reconnected once.
        assert!(log.contains("nats: disconnected") && log.matches("nats: connected").count() >= 6, "{log}");
    }
}

/// The deployment for strict per-object order: objects hashed into subject buckets, one
/// consumer per bucket, one replica per consumer. A crashed replica's successor waits for
/// the orphaned messages before pulling, so no event is delivered for the first time after
/// a later event of its object, through a kill -9 and a server restart.
/// JetStream redelivers the orphans in the order their ack deadlines expire, not in stream
/// order; the successor takes them back in one pull and hands them over sorted
/// (`orphans.rs` proves that step alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_subjects_keep_per_object_order_across_a_crash() {
    let _heavy = HEAVY.lock().await;
    let mut nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let stream = js.get_stream("CHANGES").await.unwrap();
    const ACK_WAIT: Duration = Duration::from_secs(5);
    for bucket in 0..2 {
        let (name, filter) = (format!("hookbridge-p{bucket}"), format!("changes.{bucket}.>"));
        operator_consumer(&stream, &name, &filter, ACK_WAIT, 10_000).await;
    }
    publish_ordered(&js, |obj| format!("changes.{}.{obj}", obj % 2)).await;
    let rx = Receiver::slow(RECEIVER_DELAY).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |bucket: usize| {
        config_on(
            &nats.url(),
            &format!("hookbridge-p{bucket}"),
            &format!("changes.{bucket}.>"),
            &rx.url("/hook"),
            ordered_delivery(),
        )
    };
    let started = Instant::now();
    let mut p0 = Bridge::start(dir.path(), "p0", &config(0), &[]);
    let mut p1 = Bridge::start(dir.path(), "p1", &config(1), &[]);
    wait_for_a_third(&rx).await;
    p0.kill9();
    let (at_kill, killed_after) = (stats(&rx.seen()).unique, started.elapsed());
    // What the killed replica held and did not ack: the restarted one must wait for it.
    let (_, orphans) = counts_of(&js, "hookbridge-p0").await;
    let restarted = Instant::now();
    let mut p0 = Bridge::start(dir.path(), "p0-restarted", &config(0), &[]);
    // Restart the server while the restarted replica is delivering (after its wait).
    let in_bucket0 = |h: &Seen| h.key.trim_start_matches("R-").parse::<usize>().is_ok_and(|o| o % 2 == 0);
    let bucket0 = |hits: &[Seen]| {
        let even: Vec<Seen> = hits.iter().filter(|h| in_bucket0(h)).cloned().collect();
        stats(&even).unique
    };
    wait_until("two thirds of bucket 0", Duration::from_secs(60), || bucket0(&rx.seen()) >= EVENTS / 3, String::new)
        .await;
    let (at_restart, restarted_after) = (stats(&rx.seen()).unique, started.elapsed());
    nats.restart().await;
    wait_until("every event delivered", Duration::from_secs(90), || stats(&rx.seen()).unique == EVENTS, String::new)
        .await;
    let s = stats(&rx.seen());
    // The restarted replica's first delivery (the killed one sent nothing after the kill).
    let resumed = rx.seen().iter().filter(|h| in_bucket0(h) && h.at > restarted).map(|h| h.at - restarted).min();
    let resumed = resumed.expect("the restarted replica delivered");
    report("2 subject buckets x 1 replica, kill -9 of one, nats-server restart", &s);
    eprintln!(
        "nats run |   bucket 0 killed after {at_kill} events ({killed_after:.1?}) with {orphans} unacknowledged, restarted, first delivery {resumed:.1?} later; nats-server restarted after {at_restart} ({restarted_after:.1?}), when bucket 0 was two thirds done; consumer ack_wait 5 s"
    );
    for bucket in 0..2 {
        wait_drained(&js, &format!("hookbridge-p{bucket}"), Duration::from_secs(30)).await;
    }
    for bridge in [&mut p0, &mut p1] {
        let status = bridge.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "replica exited with {status}:\n{}", bridge.log());
    }
    // The wait happens only when the kill left messages unacknowledged (on a loaded machine
    // the replica may have had none in hand at that instant): then the restarted replica
    // pulls nothing before their ack_wait is over, so bucket 0 gets no delivery before.
    if orphans > 0 {
        assert!(
            resumed >= ACK_WAIT,
            "{orphans} orphans, yet bucket 0 resumed {resumed:?} after the restart\n{}",
            p0.log()
        );
    }
    assert_eq!(s.unique, EVENTS);
    assert_eq!(s.late_first, 0, "no event first delivered after a later one of its object: {s:?}");
    for bucket in 0..2 {
        assert_eq!(counts_of(&js, &format!("hookbridge-p{bucket}")).await, (0, 0));
    }
}

// ----------------------------------------------------------------------------------------
// 2. Malformed messages.

#[tokio::test]
async fn malformed_messages_are_dead_lettered_with_sequence_and_raw_bytes() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"{\"id\": \"x\", oops".to_vec()),
        ("schema_violation", br#"{"id": "x", "operation": "explode"}"#.to_vec()),
        ("not_utf8", vec![0xff, 0xfe, b'{', b'}']),
    ];
    let mut sequences = Vec::new();
    for (_, payload) in &bad {
        sequences.push(publish(&js, "changes.bad", HeaderMap::new(), payload.clone()).await);
    }
    let good = event("good-1", "1", json!({}));
    publish(&js, "changes.good", HeaderMap::new(), serde_json::to_vec(&good).unwrap()).await;
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start(dir.path(), "malformed", &config(&nats.url(), &rx.url("/hook"), json!({})), &[]);
    let letters = wait_stream(&js, "DEAD", 3, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 3, "{}", bridge.log());
    for (((reason, raw), seq), (_, letter)) in bad.iter().zip(&sequences).zip(&letters) {
        assert_eq!(letter["kind"], "dead_letter");
        assert_eq!(letter["reason"], *reason, "{letter}");
        assert_eq!(
            letter["source"],
            json!({"type": "nats", "stream": "CHANGES", "subject": "changes.bad", "sequence": seq, "delivered": 1})
        );
        let got = match letter["raw_encoding"].as_str() {
            Some("base64") => {
                base64::engine::general_purpose::STANDARD.decode(letter["raw"].as_str().unwrap()).unwrap()
            }
            _ => letter["raw"].as_str().unwrap().as_bytes().to_vec(),
        };
        assert_eq!(&got, raw, "the dead letter carries the original bytes");
    }
    assert_eq!(letters[2].1["raw_encoding"], "base64");
    // The consumer did not stop: the good event behind them is delivered.
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results[0].1["event_id"], "good-1");
    assert_eq!(rx.seen().len(), 1);
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", bridge.log());
    assert_eq!(consumer_counts(&js).await, (0, 0), "dead-lettered messages are acked");
}

// ----------------------------------------------------------------------------------------
// 3. CloudEvents binary mode, readiness and metrics.

#[tokio::test]
async fn cloudevents_binary_mode_from_ce_headers() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let mut data = event("unused", "7", json!({}));
    let data_obj = data.as_object_mut().unwrap();
    data_obj.remove("id");
    data_obj.remove("time");
    let mut headers = HeaderMap::new();
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", "ce-42");
    headers.insert("ce-type", "com.combodo.itop.object-change");
    headers.insert("ce-source", "https://itop.example.com/");
    headers.insert("ce-time", "2026-11-28T09:00:00Z");
    headers.insert("content-type", "application/json");
    publish(&js, "changes.7", headers, serde_json::to_vec(&data).unwrap()).await;
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start(dir.path(), "ce", &config(&nats.url(), &rx.url("/hook"), json!({})), &[]);
    bridge.wait_ready().await;
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    let (headers, result) = &results[0];
    assert_eq!(result["event_id"], "ce-42", "the event id comes from ce-id: {result}");
    assert_eq!(result["status"], "delivered");
    assert_eq!(headers.get(hookbridge::internals::sink::KEY_HEADER).map(|v| v.as_str()), Some("UserRequest::7"));
    assert!(headers.get("Nats-Msg-Id").is_some());
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].json()["key"], "R-7");
    assert!(read_stream(&js, "DEAD").await.is_empty());
    // What an operator checks: ready, events counted, lag exported for the consumer.
    assert_eq!(bridge.metric("hookbridge_events_received_total{source=\"nats\"}").await, Some(1.0));
    let lag = format!("hookbridge_nats_consumer_pending{{consumer=\"{CONSUMER}\",stream=\"CHANGES\"}}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while bridge.metric(&lag).await != Some(0.0) {
        assert!(Instant::now() < deadline, "lag never reached 0:\n{}", bridge.metrics().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", bridge.log());
    assert_eq!(consumer_counts(&js).await, (0, 0));
}

// ----------------------------------------------------------------------------------------
// 4. Long retries: one record per failing delivery in the retry stream.

const RETRY_STREAM: &str = "CHANGES_RETRY";
const RETRY_SUBJECT: &str = "hookbridge.retry.hookbridge";
const RETRY_CONSUMER: &str = "hookbridge-retry";

async fn counts_in(js: &Context, stream: &str, consumer: &str) -> (u64, usize) {
    let info = js.get_stream(stream).await.unwrap().consumer_info(consumer).await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

/// Records still in the retry stream (work-queue retention: acked ones are removed).
async fn retry_records(js: &Context) -> u64 {
    js.get_stream(RETRY_STREAM).await.unwrap().get_info().await.unwrap().state.messages
}

/// Both consumers drained and the retry stream empty.
async fn wait_all_settled(js: &Context, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let main = counts_in(js, "CHANGES", CONSUMER).await;
        let retry = counts_in(js, RETRY_STREAM, RETRY_CONSUMER).await;
        let records = retry_records(js).await;
        if main == (0, 0) && retry == (0, 0) && records == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {limit:?}: main {main:?}, retry {retry:?}, records {records}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config with one trigger linked to two webhook actions, `ok` and `down`, each on its own
/// receiver; the payload names the event (its id is the object's title).
fn two_actions(nats: &str, ok: &str, down: &str, delivery: Value) -> Value {
    let payload = r#"{"event": "$this->title$"}"#;
    let body = json!({
        "connections": {"ok": {"url": ok}, "down": {"url": down}},
        "actions": [
            {"name": "ok", "type": "webhook", "connection": "ok", "payload": payload},
            {"name": "down", "type": "webhook", "connection": "down", "payload": payload},
        ],
        "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["ok", "down"]}],
    });
    bridge_config(nats, CONSUMER, "changes.>", delivery, body)
}

/// Publishes event `id` of object `key`; returns its stream sequence.
async fn publish_event(js: &Context, id: &str, key: &str) -> u64 {
    let e = event(id, key, json!({"object": {"ref": format!("R-{key}"), "title": id}}));
    publish(js, &format!("changes.{key}"), HeaderMap::new(), serde_json::to_vec(&e).unwrap()).await
}

/// Requests per event (by the `event` field of the payload), in arrival order.
fn by_event(seen: &[common::Seen]) -> HashMap<String, Vec<common::Seen>> {
    let mut out: HashMap<String, Vec<common::Seen>> = HashMap::new();
    for s in seen {
        out.entry(s.json()["event"].as_str().unwrap_or_default().to_string()).or_default().push(s.clone());
    }
    out
}

/// The attempts a dead letter reports: its `attempts` field, or the "(after N attempts)" of
/// its detail.
fn letter_attempts(letter: &Value) -> u64 {
    if let Some(n) = letter["attempts"].as_u64() {
        return n;
    }
    let detail = letter["detail"].as_str().unwrap_or_default();
    let tail = detail.rsplit("(after ").next().unwrap_or_default();
    tail.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no attempts in {letter}"))
}

/// Defects 3 and 7 of the delivery guarantees: an always-503 action next to a 200 action on
/// the same trigger. Only the failing delivery is retried (one record per delivery in the
/// retry stream); the 200 endpoint gets each event exactly once, and every count of attempts
/// is the number of requests the receiver saw. Two events per object: the second waits
/// behind the first in the retry stream, so the 503 endpoint sees them in event order.
#[tokio::test]
async fn a_failing_action_is_retried_alone_and_the_other_is_sent_once() {
    const MAX_ATTEMPTS: usize = 4;
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let mut sequences = HashMap::new();
    for n in 0..2 {
        for key in ["1", "2", "3"] {
            let id = format!("e-{key}-{n}");
            sequences.insert(id.clone(), publish_event(&js, &id, key).await);
        }
    }
    let ok = Receiver::ok().await;
    let down = Receiver::start(|_, _| Reply::Status(503, vec![], "down".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let delivery =
        json!({"quick_attempts": 1, "retry": {"max_attempts": 4, "initial": "50ms", "max": "200ms", "jitter": 0}});
    let config = two_actions(&nats.url(), &ok.url("/ok"), &down.url("/down"), delivery);
    let mut bridge = Bridge::start(dir.path(), "one-fails", &config, &[]);
    wait_until(
        "every attempt at the 503 endpoint",
        Duration::from_secs(60),
        || down.seen().len() >= 6 * MAX_ATTEMPTS,
        String::new,
    )
    .await;
    // Room for a late duplicate to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The 200 endpoint: each event exactly once.
    let ok_seen = ok.seen();
    let ids: HashSet<&str> = ok_seen.iter().filter_map(|s| s.header("webhook-id")).collect();
    assert_eq!(
        (ok_seen.len(), ids.len()),
        (6, 6),
        "each event once at the 200 endpoint: {:?}",
        by_event(&ok_seen).keys()
    );
    let letters = wait_stream(&js, "DEAD", 6, Duration::from_secs(30)).await;
    assert_eq!(letters.len(), 6, "{}", bridge.log());
    wait_all_settled(&js, Duration::from_secs(20)).await;
    // The 503 endpoint: max_attempts requests per event, one webhook-id per event, and the
    // second event of an object only after the first gave up.
    let down_seen = down.seen();
    let per_event = by_event(&down_seen);
    assert_eq!(per_event.len(), 6);
    for (id, requests) in &per_event {
        assert_eq!(requests.len(), MAX_ATTEMPTS, "{id}: {} requests", requests.len());
        let hooks: HashSet<_> = requests.iter().map(|r| r.header("webhook-id")).collect();
        assert_eq!(hooks.len(), 1, "{id}: one webhook-id across retries");
    }
    for key in ["1", "2", "3"] {
        let first_done = per_event[&format!("e-{key}-0")].iter().map(|r| r.at).max().unwrap();
        let second_starts = per_event[&format!("e-{key}-1")].iter().map(|r| r.at).min().unwrap();
        assert!(first_done < second_starts, "object {key}: the later event overtook the retried one");
    }
    // Results: one per event and action; never a `delivered` twice.
    let results: Vec<Value> = read_stream(&js, "RESULTS").await.into_iter().map(|(_, r)| r).collect();
    let mut outcomes: HashMap<(String, String), Vec<Value>> = HashMap::new();
    for r in &results {
        outcomes
            .entry((r["event_id"].as_str().unwrap().into(), r["action"].as_str().unwrap().into()))
            .or_default()
            .push(r.clone());
    }
    assert_eq!(outcomes.len(), 12, "{results:#?}");
    for ((event_id, action), rs) in &outcomes {
        assert_eq!(rs.len(), 1, "{event_id}/{action}: {rs:#?}");
        let r = &rs[0];
        match action.as_str() {
            "ok" => assert_eq!((r["status"].as_str(), r["attempts"].as_u64()), (Some("delivered"), Some(1)), "{r}"),
            _ => {
                assert_eq!(r["status"], "failed", "{r}");
                assert_eq!(r["attempts"], per_event[event_id].len() as u64, "{r}");
            }
        }
    }
    // Dead letters: one per event, for the failing action, with the attempts the receiver
    // saw and the coordinates of the original message and of the last record.
    let mut lettered = HashSet::new();
    for (_, letter) in &letters {
        let id = letter["event_id"].as_str().unwrap().to_string();
        assert_eq!(
            (letter["action"].as_str(), letter["reason"].as_str()),
            (Some("down"), Some("http_503")),
            "{letter}"
        );
        assert_eq!(letter_attempts(letter), per_event[&id].len() as u64, "{letter}");
        let source = &letter["source"];
        assert_eq!(source["stream"], "CHANGES", "{letter}");
        assert_eq!(source["sequence"], sequences[&id], "{letter}");
        assert_eq!(source["subject"], format!("changes.{}", &id[2..3]), "{letter}");
        assert_eq!(source["retry"]["stream"], RETRY_STREAM, "{letter}");
        assert!(source["retry"]["sequence"].as_u64().is_some(), "{letter}");
        assert!(lettered.insert(id), "one dead letter per event: {letters:#?}");
    }
    // The retry stream hookbridge created: work queue on disk, on its own subject, empty now.
    let info = js.get_stream(RETRY_STREAM).await.unwrap().get_info().await.unwrap();
    assert_eq!(info.config.retention, async_nats::jetstream::stream::RetentionPolicy::WorkQueue);
    assert_eq!(info.config.storage, async_nats::jetstream::stream::StorageType::File);
    assert_eq!(info.config.subjects, vec![RETRY_SUBJECT.to_string()]);
    assert_eq!(info.state.messages, 0);
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", bridge.log());
    assert_eq!(counts_in(&js, "CHANGES", CONSUMER).await, (0, 0));
    assert_eq!(counts_in(&js, RETRY_STREAM, RETRY_CONSUMER).await, (0, 0));
}

/// kill -9 while deliveries wait in the retry stream, then a restart. The events themselves
/// were all acked before the kill (each had its 200 delivered and its 503 stored as a retry
/// record), so nothing makes the 200 endpoint see an event again, and nothing delivered is
/// dead-lettered. Attempts are carried in the records, so the final count is what was sent,
/// with one exception: the request made from a record whose ack was not confirmed when the
/// process died (the request sent, and its next record stored or not) is made again when
/// that record comes back, and only one of the two is counted. Hence, per event, the
/// receiver saw the attempts of the result, or one more.
#[tokio::test]
async fn a_crash_with_retries_pending_loses_nothing_and_resends_nothing_delivered() {
    const EVENTS: usize = 4;
    const MAX_ATTEMPTS: u64 = 6;
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    // The operator's consumers with a short ack_wait, so that what the killed process held
    // comes back within the test; the bridge binds them (and the retry stream) as they are.
    let changes = js.get_stream("CHANGES").await.unwrap();
    operator_consumer(&changes, CONSUMER, "changes.>", Duration::from_secs(2), 0).await;
    let retry = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: RETRY_STREAM.into(),
            subjects: vec![RETRY_SUBJECT.into()],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    operator_consumer(&retry, RETRY_CONSUMER, RETRY_SUBJECT, Duration::from_secs(2), -1).await;
    for n in 0..EVENTS {
        publish_event(&js, &format!("e-{n}"), &n.to_string()).await;
    }
    let ok = Receiver::ok().await;
    let down = Receiver::start(|_, _| Reply::Status(503, vec![], "down".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let delivery =
        json!({"quick_attempts": 1, "retry": {"max_attempts": 6, "initial": "300ms", "max": "300ms", "jitter": 0}});
    let config = two_actions(&nats.url(), &ok.url("/ok"), &down.url("/down"), delivery);
    let mut first = Bridge::start(dir.path(), "before-kill", &config, &[]);
    wait_until("two attempts per event", Duration::from_secs(30), || down.seen().len() >= 2 * EVENTS, String::new)
        .await;
    // Every event acked: what remains is in the retry stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts_in(&js, "CHANGES", CONSUMER).await != (0, 0) {
        assert!(Instant::now() < deadline, "events not acked:\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    let at_kill = down.seen().len();
    assert!(retry_records(&js).await > 0, "retries were pending at the kill");
    assert!(at_kill < EVENTS * MAX_ATTEMPTS as usize, "killed before the retries ran out");
    let mut second = Bridge::start(dir.path(), "after-kill", &config, &[]);
    let letters = wait_stream(&js, "DEAD", EVENTS, Duration::from_secs(60)).await;
    assert!(letters.len() >= EVENTS, "{}", second.log());
    wait_all_settled(&js, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let letters = read_stream(&js, "DEAD").await;
    let status = second.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", second.log());

    let ok_seen = by_event(&ok.seen());
    for n in 0..EVENTS {
        assert_eq!(ok_seen[&format!("e-{n}")].len(), 1, "e-{n} sent again to the 200 endpoint");
    }
    assert!(letters.iter().all(|(_, l)| l["action"] == "down"), "a delivered action was dead-lettered: {letters:#?}");
    let results: Vec<Value> = read_stream(&js, "RESULTS").await.into_iter().map(|(_, r)| r).collect();
    assert_eq!(results.iter().filter(|r| r["action"] == "ok" && r["status"] == "delivered").count(), EVENTS);
    assert!(results.iter().all(|r| r["action"] == "down" || r["status"] == "delivered"), "{results:#?}");
    let down_seen = by_event(&down.seen());
    for n in 0..EVENTS {
        let id = format!("e-{n}");
        let finals: Vec<&Value> =
            results.iter().filter(|r| r["event_id"] == id.as_str() && r["action"] == "down").collect();
        // One final result: when the kill fell after a delivery's next record was stored but
        // before the ack of the record it came from was confirmed, that one comes back too;
        // its attempt is made again, but the record it leads to is the one already stored
        // (same Nats-Msg-Id), so a single chain of records carries the delivery to its end.
        assert_eq!(finals.len(), 1, "{id}: {finals:#?}");
        assert_eq!(
            (finals[0]["status"].as_str(), finals[0]["attempts"].as_u64()),
            (Some("failed"), Some(MAX_ATTEMPTS))
        );
        let sent = down_seen[&id].len() as u64;
        assert!(
            sent == MAX_ATTEMPTS || sent == MAX_ATTEMPTS + 1,
            "{id}: the receiver saw {sent} requests, the result counts {MAX_ATTEMPTS}"
        );
        let lettered = letters.iter().filter(|(_, l)| l["event_id"] == id.as_str()).count();
        assert_eq!(lettered, finals.len(), "{id}: one dead letter per final failure");
    }
    eprintln!(
        "at the kill the 503 endpoint had seen {at_kill} requests; {} after the restart",
        down.seen().len() - at_kill
    );
}

/// A record in the retry stream whose headers cannot be read is dead-lettered with the
/// reason and its own coordinates: never dropped, and never run as a new event (its other
/// actions were already delivered).
#[tokio::test]
async fn a_broken_retry_record_is_dead_lettered() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let ok = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = two_actions(&nats.url(), &ok.url("/ok"), &ok.url("/down"), json!({}));
    let mut bridge = Bridge::start(dir.path(), "broken-record", &config, &[]);
    bridge.wait_ready().await;
    let payload = serde_json::to_vec(&event("e-1", "1", json!({"object": {"ref": "R-1", "title": "e-1"}}))).unwrap();
    // Retry headers that do not parse, and an event published to the retry subject by hand.
    let mut headers = HeaderMap::new();
    headers.insert("hookbridge-retry", "not json");
    headers.insert("hookbridge-retry-not-before", "0");
    let broken = publish(&js, RETRY_SUBJECT, headers, payload.clone()).await;
    let plain = publish(&js, RETRY_SUBJECT, HeaderMap::new(), payload.clone()).await;
    let letters = wait_stream(&js, "DEAD", 2, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 2, "{}", bridge.log());
    for (seq, why) in [(broken, "hookbridge-retry: "), (plain, "no hookbridge-retry header")] {
        let (_, letter) = letters.iter().find(|(_, l)| l["source"]["sequence"] == seq).expect("a letter per record");
        assert_eq!(letter["reason"], "invalid_retry_record", "{letter}");
        assert!(letter["detail"].as_str().unwrap().contains(why), "{letter}");
        assert_eq!(letter["source"]["stream"], RETRY_STREAM, "{letter}");
        assert_eq!(letter["source"]["subject"], RETRY_SUBJECT, "{letter}");
        assert_eq!(letter["raw"].as_str().unwrap().as_bytes(), payload.as_slice());
    }
    wait_all_settled(&js, Duration::from_secs(10)).await;
    assert!(ok.seen().is_empty(), "the record was run as an event");
    assert!(bridge.terminate(Duration::from_secs(30)).await.success());
}

/// One action that comes back: its retries go through the retry stream, and the final
/// result counts every request sent (the count travels in the records).
#[tokio::test]
async fn a_receiver_down_past_the_quick_retries_gets_the_event_through_the_retry_stream() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let up = Arc::new(AtomicBool::new(false));
    let is_up = up.clone();
    let rx = Receiver::start(move |_, _| {
        if is_up.load(Ordering::SeqCst) {
            Reply::Status(200, vec![], "ok".into())
        } else {
            Reply::Status(503, vec![], "down for maintenance".into())
        }
    })
    .await;
    publish(&js, "changes.1", HeaderMap::new(), serde_json::to_vec(&event("e1", "1", json!({}))).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let delivery =
        json!({"quick_attempts": 2, "retry": {"max_attempts": 30, "initial": "100ms", "max": "400ms", "jitter": 0}});
    let mut bridge = Bridge::start(dir.path(), "down", &config(&nats.url(), &rx.url("/hook"), delivery), &[]);
    // Two quick attempts from the event, then two from each retry record: two records so far.
    wait_until("six attempts", Duration::from_secs(20), || rx.seen().len() >= 6, String::new).await;
    let durable = bridge.metric("hookbridge_retries_scheduled_total{action=\"hook\",stage=\"durable\"}").await;
    assert!(durable.unwrap_or(0.0) >= 2.0, "records stored: {durable:?}\n{}", bridge.metrics().await);
    let seen = rx.seen();
    // Attempt 2 -> a record due in 200 ms (retry.initial x 2) -> attempt 3 from the record.
    let gap = seen[2].at - seen[1].at;
    assert!(gap >= Duration::from_millis(180), "the record was tried after {gap:?}, before it was due");
    up.store(true, Ordering::SeqCst);
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    let result = &results[0].1;
    let requests = rx.seen().len();
    assert_eq!(result["status"], "delivered", "{result}");
    // Attempts continue across records: every request sent is counted, none twice.
    assert_eq!(result["attempts"], requests as u64, "{result}");
    assert!(requests > 2);
    assert!(read_stream(&js, "DEAD").await.is_empty());
    wait_all_settled(&js, Duration::from_secs(10)).await;
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", bridge.log());
    assert_eq!(consumer_counts(&js).await, (0, 0));
    // Every NAK and ack was confirmed by the server at the first try.
    assert!(!bridge.log().contains("ack not confirmed"), "{}", bridge.log());
}

#[tokio::test]
async fn retries_exhausted_in_the_retry_stream_are_dead_lettered_and_acked() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let rx = Receiver::start(|_, _| Reply::Status(503, vec![], "down".into())).await;
    let seq =
        publish(&js, "changes.1", HeaderMap::new(), serde_json::to_vec(&event("e1", "1", json!({}))).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let delivery =
        json!({"quick_attempts": 2, "retry": {"max_attempts": 5, "initial": "50ms", "max": "200ms", "jitter": 0}});
    let mut bridge = Bridge::start(dir.path(), "exhausted", &config(&nats.url(), &rx.url("/hook"), delivery), &[]);
    let letters = wait_stream(&js, "DEAD", 1, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 1, "{}", bridge.log());
    let letter = &letters[0].1;
    assert_eq!(letter["reason"], "http_503");
    assert_eq!(letter["action"], "hook");
    assert_eq!(letter["event_id"], "e1");
    // 5 attempts = 2 from the event + 2 and 1 from two retry records; the dead letter names
    // the original message (delivered once) and the last record.
    assert_eq!(letter["source"]["stream"], "CHANGES", "{letter}");
    assert_eq!(letter["source"]["sequence"], seq, "{letter}");
    assert_eq!(letter["source"]["retry"]["stream"], RETRY_STREAM, "{letter}");
    assert_eq!(letter_attempts(letter), 5, "{letter}");
    assert_eq!(rx.seen().len(), 5);
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(10)).await;
    assert_eq!(results[0].1["status"], "failed");
    assert_eq!(results[0].1["attempts"], 5);
    wait_all_settled(&js, Duration::from_secs(10)).await;
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", bridge.log());
}

// ----------------------------------------------------------------------------------------
// 5. Startup errors and authentication.

#[tokio::test]
async fn startup_fails_clearly_without_the_stream_or_an_output_stream() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&nats.url(), "http://127.0.0.1:9/hook", json!({}));
    // Outputs captured, input stream missing.
    for (name, subject) in [("RESULTS", RESULTS), ("DEAD", DEAD)] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut bridge = Bridge::start(dir.path(), "no-stream", &config, &[]);
    let status = bridge.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success());
    assert!(bridge.log().contains("stream \"CHANGES\" does not exist"), "{}", bridge.log());
    // Input present, dead-letter subject captured by no stream.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "CHANGES".into(),
        subjects: vec!["changes.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.delete_stream("DEAD").await.unwrap();
    let mut bridge = Bridge::start(dir.path(), "no-output", &config, &[]);
    let status = bridge.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success());
    let log = bridge.log();
    assert!(
        log.contains("dead_letter") && log.contains(&format!("no JetStream stream captures subject \"{DEAD}\"")),
        "{log}"
    );
    // Several filter subjects on a server that knows only one (2.9): refused, and the
    // consumer of the whole stream the server made instead is not left behind.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "DEAD".into(),
        subjects: vec![DEAD.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut two = config.clone();
    two["source"]["subjects"] = json!(["changes.a.>", "changes.b.>"]);
    let mut bridge = Bridge::start(dir.path(), "two-subjects", &two, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge.exited().is_none() && !bridge.log().contains("consumer bound") {
        assert!(Instant::now() < deadline, "{}", bridge.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = js.get_stream("CHANGES").await.unwrap();
    match bridge.exited() {
        Some(status) => {
            assert!(!status.success());
            assert!(bridge.log().contains("several subjects need NATS Server 2.10"), "{}", bridge.log());
            assert!(stream.consumer_info(CONSUMER).await.is_err(), "the unfiltered consumer was deleted");
        }
        // NATS 2.10 or later filters on both subjects.
        None => assert_eq!(stream.consumer_info(CONSUMER).await.unwrap().config.filter_subjects.len(), 2),
    }
}

/// The retry stream is created by the bridge; without the right to, or with its subject taken
/// by another stream, the bridge stops at start and says which stream and which key.
#[tokio::test]
async fn startup_fails_clearly_when_the_retry_stream_cannot_be_made() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        r#"authorization {
  users = [
    {user: admin, password: admin-pw}
    {user: bridge, password: bridge-pw, permissions: {publish: {deny: ["$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>"]}}}
  ]
}
"#,
    )
    .unwrap();
    let nats = NatsServer::start_with(&["-c", conf.to_str().unwrap()]).await;
    let client = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-pw".into())
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    create_streams(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&nats.url(), "http://127.0.0.1:9/hook", json!({}));
    config["source"]["credentials"] = json!({"user": "bridge", "password": "bridge-pw"});
    let mut bridge = Bridge::start(dir.path(), "no-create-right", &config, &[]);
    let status = bridge.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success());
    let log = bridge.log();
    assert!(
        log.contains(&format!(
            "retry stream \"{RETRY_STREAM}\" (source.retry_stream) does not exist and could not be created"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("--subjects '{RETRY_SUBJECT}' --retention work")), "{log}");
    // Created by the operator as the message says, it is used as it is.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: RETRY_STREAM.into(),
        subjects: vec![RETRY_SUBJECT.into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut bridge = Bridge::start(dir.path(), "operator-made", &config, &[]);
    bridge.wait_ready().await;
    assert!(bridge.terminate(Duration::from_secs(30)).await.success(), "{}", bridge.log());
    assert!(counts_in(&js, RETRY_STREAM, RETRY_CONSUMER).await == (0, 0));
    // A retry subject that another stream captures would send the records there.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "OTHER".into(),
        subjects: vec!["elsewhere.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut taken = config.clone();
    taken["source"]["retry_subject"] = json!("elsewhere.retry");
    let mut bridge = Bridge::start(dir.path(), "subject-taken", &taken, &[]);
    let status = bridge.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(
        bridge.log().contains("its subject \"elsewhere.retry\" is already captured by stream \"OTHER\""),
        "{}",
        bridge.log()
    );
}

#[tokio::test]
async fn user_and_password_authentication() {
    let nats = NatsServer::start_with(&["--user", "bridge", "--pass", "s3cret-pw"]).await;
    let client = async_nats::ConnectOptions::with_user_and_password("bridge".into(), "s3cret-pw".into())
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    create_streams(&js).await;
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&nats.url(), &rx.url("/hook"), json!({}));
    config["source"]["credentials"] = json!({"user": "bridge", "password": {"env": "NATS_TEST_PASSWORD"}});
    let mut bridge = Bridge::start(dir.path(), "auth", &config, &[("NATS_TEST_PASSWORD", "s3cret-pw")]);
    bridge.wait_ready().await;
    publish(&js, "changes.1", HeaderMap::new(), serde_json::to_vec(&event("e1", "1", json!({}))).unwrap()).await;
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    assert!(!bridge.log().contains("s3cret-pw"), "the password never appears in logs");
    assert!(bridge.terminate(Duration::from_secs(30)).await.success());
    let mut wrong = Bridge::start(dir.path(), "wrong", &config, &[("NATS_TEST_PASSWORD", "nope")]);
    let status = wrong.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success());
    assert!(wrong.log().to_lowercase().contains("authorization"), "{}", wrong.log());
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let pki = tls::Pki::create();
    let nats = NatsServer::start_with(&[
        "--tlsverify",
        "--tlscert",
        &pki.path("server.pem"),
        "--tlskey",
        &pki.path("server.key"),
        "--tlscacert",
        &pki.path("ca.pem"),
    ])
    .await;
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.file("ca.pem"))
        .add_client_certificate(pki.file("client.pem"), pki.file("client.key"))
        .require_tls(true)
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    create_streams(&js).await;
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let base = config(&nats.url(), &rx.url("/hook"), json!({}));
    let with = |credentials: Value| {
        let mut config = base.clone();
        config["source"]["credentials"] = credentials;
        config
    };
    let full = json!({
        "ca_file": pki.path("ca.pem"),
        "client_cert": pki.path("client.pem"),
        "client_key": pki.path("client.key"),
        "tls_required": true,
    });
    let mut bridge = Bridge::start(dir.path(), "tls", &with(full), &[]);
    bridge.wait_ready().await;
    publish(&js, "changes.1", HeaderMap::new(), serde_json::to_vec(&event("e1", "1", json!({}))).unwrap()).await;
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    assert!(bridge.terminate(Duration::from_secs(30)).await.success());
    // Without the client certificate the server refuses the handshake: a clear startup error.
    let ca_only = json!({"ca_file": pki.path("ca.pem")});
    let mut refused = Bridge::start(dir.path(), "tls-no-cert", &with(ca_only), &[]);
    let status = refused.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(refused.log().contains("cannot connect to"), "{}", refused.log());
}
