//! NATS JetStream end to end, against a real nats-server started here and the real
//! `hookbridge` binary: ordered delivery with and without crashes, replicas and a server
//! restart; malformed messages dead-lettered; CloudEvents binary mode; long retries through
//! delayed redelivery; startup errors; authentication and mutual TLS.

#[path = "../common/mod.rs"]
mod common;

mod bridge;
mod guarantees;
mod receiver;
mod server;
mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::AckPolicy;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use base64::Engine as _;
use bridge::Bridge;
use common::{event, Receiver, Reply};
use receiver::{Hit, SlowReceiver};
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
fn config(nats: &str, hook: &str, delivery: &str) -> String {
    config_on(nats, CONSUMER, "changes.>", hook, delivery)
}

/// The same, for one consumer filtered on `filter`.
fn config_on(nats: &str, consumer: &str, filter: &str, hook: &str, delivery: &str) -> String {
    format!(
        r#"source:
  type: nats
  url: "{nats}"
  stream: CHANGES
  subjects: ["{filter}"]
  consumer: {consumer}
responses: {{type: nats, subject: {RESULTS}}}
dead_letter: {{type: nats, subject: {DEAD}}}
server: {{listen: "127.0.0.1:{{metrics}}"}}
delivery: {{allow_private_networks: true, shutdown_timeout: 20s, {delivery}}}
connections:
  hook: {{url: "{hook}"}}
actions:
  - {{name: hook, type: webhook, connection: hook, payload: '{{"key": "$this->ref$", "seq": "$this->seq$"}}'}}
triggers:
  - {{name: created, on: create, class: Ticket, actions: [hook]}}
"#
    )
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

async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
const ORDERED_DELIVERY: &str = "concurrency: 64, timeout: 10s, retry: {max_attempts: 20, initial: 100ms, max: 2s}";

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
    /// When the last event was delivered for the first time.
    last_new: Option<Instant>,
}

fn stats(hits: &[Hit]) -> Stats {
    let mut seen = HashSet::new();
    let mut highest: HashMap<&str, i64> = HashMap::new();
    let mut s = Stats { unique: 0, duplicates: 0, order_violations: 0, late_first: 0, last_new: None };
    for h in hits {
        let first = seen.insert((h.key.as_str(), h.seq));
        if first {
            s.unique += 1;
            s.last_new = Some(h.at);
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

fn report(label: &str, s: &Stats, started: Instant) -> f64 {
    let secs = (s.last_new.expect("something was delivered") - started).as_secs_f64();
    let rate = s.unique as f64 / secs;
    eprintln!(
        "NATS FIGURES | {label}: {} events delivered in {secs:.2} s = {rate:.0} events/s end to end; duplicates {}; order violations {} (first deliveries out of order: {})",
        s.unique, s.duplicates, s.order_violations, s.late_first
    );
    rate
}

/// One replica, no faults: all events through a receiver answering after `delay`, SIGTERM
/// as soon as the last one arrived, then the checks every clean run must pass.
async fn single_replica_run(delay: Duration, label: &str) -> Stats {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    publish_ordered(&js, |obj| format!("changes.{obj}")).await;
    let rx = SlowReceiver::start(delay).await;
    let dir = tempfile::tempdir().unwrap();
    // No consumer exists: the bridge creates it.
    let started = Instant::now();
    let mut bridge = Bridge::start(dir.path(), "single", &config(&nats.url(), &rx.url(), ORDERED_DELIVERY), &[]);
    wait_until(Duration::from_secs(90), "every event delivered", || stats(&rx.hits()).unique == EVENTS).await;
    // SIGTERM right away: the last deliveries and their acks are still in flight.
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "bridge exited with {status}:\n{}", bridge.log());
    let s = stats(&rx.hits());
    report(label, &s, started);
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
    js.get_stream("CHANGES")
        .await
        .unwrap()
        .create_consumer(PullConfig {
            durable_name: Some(CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(5),
            filter_subject: "changes.>".into(),
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    publish_ordered(&js, |obj| format!("changes.{obj}")).await;
    let rx = SlowReceiver::start(RECEIVER_DELAY).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&nats.url(), &rx.url(), ORDERED_DELIVERY);
    let started = Instant::now();
    let mut first = Bridge::start(dir.path(), "first", &yaml, &[]);
    wait_until(Duration::from_secs(60), "a third of the events", || stats(&rx.hits()).unique >= EVENTS / 3).await;
    first.kill9();
    let (at_kill, killed_after) = (stats(&rx.hits()).unique, started.elapsed());
    let mut a = Bridge::start(dir.path(), "replica-a", &yaml, &[]);
    let mut b = Bridge::start(dir.path(), "replica-b", &yaml, &[]);
    wait_until(Duration::from_secs(60), "two thirds of the events", || stats(&rx.hits()).unique >= 2 * EVENTS / 3)
        .await;
    let (at_restart, restarted_after) = (stats(&rx.hits()).unique, started.elapsed());
    nats.restart().await;
    wait_until(Duration::from_secs(90), "every event delivered", || stats(&rx.hits()).unique == EVENTS).await;
    let s = stats(&rx.hits());
    let rate = report("kill -9 at 1/3, 2 replicas, nats-server restart at 2/3", &s, started);
    eprintln!(
        "NATS FIGURES |   killed after {at_kill} events ({killed_after:.1?}); nats-server restarted after {at_restart} ({restarted_after:.1?}); consumer ack_wait 5 s, so the new replicas wait 5.5 s before their first pull"
    );
    // The killed replica's messages come back after ack_wait; then everything is acked.
    wait_consumer_drained(&js, Duration::from_secs(60)).await;
    for bridge in [&mut a, &mut b] {
        let status = bridge.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "replica exited with {status}:\n{}", bridge.log());
    }
    assert_eq!(consumer_counts(&js).await, (0, 0), "nothing pending or unacked after SIGTERM");
    assert_eq!(s.unique, EVENTS, "every event delivered at least once");
    assert!(rate > 0.0);
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_subjects_keep_per_object_order_across_a_crash() {
    let _heavy = HEAVY.lock().await;
    let mut nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let stream = js.get_stream("CHANGES").await.unwrap();
    for bucket in 0..2 {
        stream
            .create_consumer(PullConfig {
                durable_name: Some(format!("hookbridge-p{bucket}")),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(5),
                filter_subject: format!("changes.{bucket}.>"),
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    publish_ordered(&js, |obj| format!("changes.{}.{obj}", obj % 2)).await;
    let rx = SlowReceiver::start(RECEIVER_DELAY).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = |bucket: usize| {
        config_on(
            &nats.url(),
            &format!("hookbridge-p{bucket}"),
            &format!("changes.{bucket}.>"),
            &rx.url(),
            ORDERED_DELIVERY,
        )
    };
    let started = Instant::now();
    let mut p0 = Bridge::start(dir.path(), "p0", &yaml(0), &[]);
    let mut p1 = Bridge::start(dir.path(), "p1", &yaml(1), &[]);
    wait_until(Duration::from_secs(60), "a third of the events", || stats(&rx.hits()).unique >= EVENTS / 3).await;
    p0.kill9();
    let (at_kill, killed_after) = (stats(&rx.hits()).unique, started.elapsed());
    let mut p0 = Bridge::start(dir.path(), "p0-restarted", &yaml(0), &[]);
    // Restart the server while the restarted replica is delivering (after its wait).
    let bucket0 = |hits: &[Hit]| {
        let even: Vec<Hit> = hits
            .iter()
            .filter(|h| h.key.trim_start_matches("R-").parse::<usize>().is_ok_and(|o| o % 2 == 0))
            .cloned()
            .collect();
        stats(&even).unique
    };
    wait_until(Duration::from_secs(60), "two thirds of bucket 0", || bucket0(&rx.hits()) >= EVENTS / 3).await;
    let (at_restart, restarted_after) = (stats(&rx.hits()).unique, started.elapsed());
    nats.restart().await;
    wait_until(Duration::from_secs(90), "every event delivered", || stats(&rx.hits()).unique == EVENTS).await;
    let s = stats(&rx.hits());
    report("2 subject buckets x 1 replica, kill -9 of one, nats-server restart", &s, started);
    eprintln!(
        "NATS FIGURES |   bucket 0 killed after {at_kill} events ({killed_after:.1?}) and restarted; nats-server restarted after {at_restart} ({restarted_after:.1?}), when bucket 0 was two thirds done; consumer ack_wait 5 s"
    );
    for bucket in 0..2 {
        wait_drained(&js, &format!("hookbridge-p{bucket}"), Duration::from_secs(30)).await;
    }
    for bridge in [&mut p0, &mut p1] {
        let status = bridge.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "replica exited with {status}:\n{}", bridge.log());
    }
    assert!(p0.log().contains("waiting for their redelivery before the first pull"), "{}", p0.log());
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
    let mut bridge = Bridge::start(dir.path(), "malformed", &config(&nats.url(), &rx.url("/hook"), ""), &[]);
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
    let mut bridge = Bridge::start(dir.path(), "ce", &config(&nats.url(), &rx.url("/hook"), ""), &[]);
    bridge.wait_ready().await;
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    let (headers, result) = &results[0];
    assert_eq!(result["event_id"], "ce-42", "the event id comes from ce-id: {result}");
    assert_eq!(result["status"], "delivered");
    assert_eq!(headers.get(hookbridge::nats::sink::KEY_HEADER).map(|v| v.as_str()), Some("UserRequest::7"));
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
// 4. Long retries: JetStream redelivery with delay is the durable retry stage.

#[tokio::test]
async fn a_receiver_down_past_the_quick_retries_gets_the_event_through_delayed_redelivery() {
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
    let delivery = "quick_attempts: 2, retry: {max_attempts: 30, initial: 100ms, max: 400ms, jitter: 0}";
    let mut bridge = Bridge::start(dir.path(), "down", &config(&nats.url(), &rx.url("/hook"), delivery), &[]);
    // Three deliveries of two quick attempts each: the message went back to JetStream twice.
    wait_until(Duration::from_secs(20), "six attempts", || rx.seen().len() >= 6).await;
    let durable = bridge.metric("hookbridge_retries_scheduled_total{action=\"hook\",stage=\"durable\"}").await;
    assert!(durable.unwrap_or(0.0) >= 2.0, "NAKs with delay: {durable:?}\n{}", bridge.metrics().await);
    let seen = rx.seen();
    // Attempt 2 -> NAK with a 200 ms delay (retry.initial x 2) -> attempt 3 on redelivery.
    let gap = seen[2].at - seen[1].at;
    assert!(gap >= Duration::from_millis(180), "redelivery came after {gap:?}, before the NAK delay");
    up.store(true, Ordering::SeqCst);
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    let result = &results[0].1;
    let requests = rx.seen().len();
    assert_eq!(result["status"], "delivered", "{result}");
    // Attempts continue across redeliveries (prior_attempts from the delivery count).
    assert_eq!(result["attempts"], requests as u64, "{result}");
    assert!(requests > 2);
    assert!(read_stream(&js, "DEAD").await.is_empty());
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", bridge.log());
    assert_eq!(consumer_counts(&js).await, (0, 0));
    // Every NAK and ack was confirmed by the server at the first try.
    assert!(!bridge.log().contains("ack not confirmed"), "{}", bridge.log());
}

#[tokio::test]
async fn retries_exhausted_across_redeliveries_are_dead_lettered_and_acked() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let rx = Receiver::start(|_, _| Reply::Status(503, vec![], "down".into())).await;
    let seq =
        publish(&js, "changes.1", HeaderMap::new(), serde_json::to_vec(&event("e1", "1", json!({}))).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let delivery = "quick_attempts: 2, retry: {max_attempts: 5, initial: 50ms, max: 200ms, jitter: 0}";
    let mut bridge = Bridge::start(dir.path(), "exhausted", &config(&nats.url(), &rx.url("/hook"), delivery), &[]);
    let letters = wait_stream(&js, "DEAD", 1, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 1, "{}", bridge.log());
    let letter = &letters[0].1;
    assert_eq!(letter["reason"], "http_503");
    assert_eq!(letter["action"], "hook");
    assert_eq!(letter["event_id"], "e1");
    // 5 attempts = 2 + 2 + 1 over three deliveries of the same stream message.
    assert_eq!(letter["source"]["sequence"], seq);
    assert_eq!(letter["source"]["delivered"], 3, "{letter}");
    assert_eq!(rx.seen().len(), 5);
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(10)).await;
    assert_eq!(results[0].1["status"], "failed");
    assert_eq!(results[0].1["attempts"], 5);
    wait_consumer_drained(&js, Duration::from_secs(10)).await;
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
    let yaml = config(&nats.url(), "http://127.0.0.1:9/hook", "");
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
    let mut bridge = Bridge::start(dir.path(), "no-stream", &yaml, &[]);
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
    let mut bridge = Bridge::start(dir.path(), "no-output", &yaml, &[]);
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
    let two = yaml.replace(r#"subjects: ["changes.>"]"#, r#"subjects: ["changes.a.>", "changes.b.>"]"#);
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
    let yaml = config(&nats.url(), &rx.url("/hook"), "").replace(
        "  consumer: hookbridge\n",
        "  consumer: hookbridge\n  credentials: {user: bridge, password: {env: NATS_TEST_PASSWORD}}\n",
    );
    let mut bridge = Bridge::start(dir.path(), "auth", &yaml, &[("NATS_TEST_PASSWORD", "s3cret-pw")]);
    bridge.wait_ready().await;
    publish(&js, "changes.1", HeaderMap::new(), serde_json::to_vec(&event("e1", "1", json!({}))).unwrap()).await;
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    assert!(!bridge.log().contains("s3cret-pw"), "the password never appears in logs");
    assert!(bridge.terminate(Duration::from_secs(30)).await.success());
    let mut wrong = Bridge::start(dir.path(), "wrong", &yaml, &[("NATS_TEST_PASSWORD", "nope")]);
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
    let base = config(&nats.url(), &rx.url("/hook"), "");
    let with = |credentials: &str| {
        base.replace("  consumer: hookbridge\n", &format!("  consumer: hookbridge\n  credentials: {credentials}\n"))
    };
    let full = format!(
        "{{ca_file: \"{}\", client_cert: \"{}\", client_key: \"{}\", tls_required: true}}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let mut bridge = Bridge::start(dir.path(), "tls", &with(&full), &[]);
    bridge.wait_ready().await;
    publish(&js, "changes.1", HeaderMap::new(), serde_json::to_vec(&event("e1", "1", json!({}))).unwrap()).await;
    let results = wait_stream(&js, "RESULTS", 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "{}", bridge.log());
    assert!(bridge.terminate(Duration::from_secs(30)).await.success());
    // Without the client certificate the server refuses the handshake: a clear startup error.
    let ca_only = format!("{{ca_file: \"{}\"}}", pki.path("ca.pem"));
    let mut refused = Bridge::start(dir.path(), "tls-no-cert", &with(&ca_only), &[]);
    let status = refused.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(refused.log().contains("cannot connect to"), "{}", refused.log());
}
