//! The Kafka source, the retry topic and the producers, against a real Kafka-protocol
//! broker (tansu, one per test on a free port) and real HTTP receivers on port 0.

#[path = "../common/mod.rs"]
mod common;

mod bridge;
mod broker;
mod receiver;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bridge::{webhook_body, InProcess, Process, Setup};
use broker::{Broker, Record};
use common::{event, Receiver, Reply};
use receiver::SlowReceiver;
use serde_json::{json, Value};

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ticket(id: &str, key: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&event(id, key, json!({ "object": object }))).unwrap()
}

fn parsed(records: &[Record]) -> Vec<Value> {
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
fn check_order(object: &str, seqs: &[i64], count: i64) -> usize {
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
async fn source_lag(port: u16) -> BTreeMap<String, i64> {
    let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
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

/// 1. 2,000 ordered events over 50 objects; the first replica is killed with SIGKILL midway,
///    two replicas in the same group take over; every event arrives, in order per object,
///    and after SIGTERM the group's committed offsets are the end offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_and_two_new_ones_deliver_everything_in_order_per_object() {
    const OBJECTS: i64 = 50;
    const PER_OBJECT: i64 = 40;
    const PARTITIONS: i32 = 4;
    let total = (OBJECTS * PER_OBJECT) as usize;
    let broker = Broker::start();
    broker.create_topics(&["changes"], PARTITIONS).await;
    broker.create_topics(&["responses", "dead-letter"], 2).await;
    // A few milliseconds per answer, so the kill lands midway.
    let rx = SlowReceiver::start(Duration::from_millis(3)).await;
    let mut records = Vec::new();
    for seq in 0..PER_OBJECT {
        for obj in 0..OBJECTS {
            let value =
                ticket(&format!("e-{obj}-{seq}"), &obj.to_string(), json!({"ref": format!("R-{obj}"), "seq": seq}));
            records.push((obj.to_string(), value));
        }
    }
    broker.produce_many("changes", &records).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = |listen: Option<String>| {
        Setup {
            brokers: &broker.addr,
            group: "order",
            topic: "changes",
            delivery: "concurrency: 64",
            body: webhook_body(&rx.url()),
            listen,
        }
        .yaml()
    };
    let distinct =
        |log: &[(String, i64, Instant)]| log.iter().map(|(k, s, _)| (k.clone(), *s)).collect::<HashSet<_>>().len();

    let started = Instant::now();
    let mut a = Process::start("replica-a", dir.path(), &yaml(None));
    wait_until(
        "1,000 deliveries by the first replica",
        Duration::from_secs(60),
        || rx.count() >= 1000,
        || a.log_tail(),
    )
    .await;
    a.kill();
    let killed_at = Instant::now();
    let first_phase = rx.log();
    let (port_b, port_c) = (free_port(), free_port());
    let mut b = Process::start("replica-b", dir.path(), &yaml(Some(format!("127.0.0.1:{port_b}"))));
    let mut c = Process::start("replica-c", dir.path(), &yaml(Some(format!("127.0.0.1:{port_c}"))));
    wait_until(
        "every event delivered",
        Duration::from_secs(120),
        || distinct(&rx.log()) == total,
        || format!("{} of {total} delivered\n--- b\n{}\n--- c\n{}", distinct(&rx.log()), b.log_tail(), c.log_tail()),
    )
    .await;
    let all_delivered_at = Instant::now();

    // Lag per partition, from the replicas' metrics: zero everywhere once all is final.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lag = loop {
        let mut lag = source_lag(port_b).await;
        lag.extend(source_lag(port_c).await);
        lag.retain(|p, _| p.starts_with("changes/"));
        if (lag.len() == PARTITIONS as usize && lag.values().all(|v| *v == 0)) || Instant::now() > deadline {
            break lag;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let expected_lag: BTreeMap<String, i64> = (0..PARTITIONS).map(|p| (format!("changes/{p}"), 0)).collect();
    assert_eq!(lag, expected_lag, "hookbridge_source_lag of the two replicas");

    b.terminate();
    c.terminate();
    assert!(b.wait(Duration::from_secs(30)).success(), "{}", b.log_tail());
    assert!(c.wait(Duration::from_secs(30)).success(), "{}", c.log_tail());
    let committed = broker.committed("order", "changes", PARTITIONS);
    let ends = broker.end_offsets("changes", PARTITIONS);
    assert_eq!(committed, ends, "committed offsets of the group vs end offsets of the topic");
    assert_eq!(ends.values().sum::<i64>(), total as i64);

    let log = rx.log();
    let mut per_object: HashMap<String, Vec<i64>> = HashMap::new();
    for (key, seq, _) in &log {
        per_object.entry(key.clone()).or_default().push(*seq);
    }
    assert_eq!(per_object.len(), OBJECTS as usize);
    let duplicates: usize = per_object.iter().map(|(k, seqs)| check_order(k, seqs, PER_OBJECT)).sum();
    assert_eq!(log.len(), total + duplicates);

    // Every duplicate is an event the killed replica delivered after its last commit: the
    // hand-over between B and C (cooperative revoke: wait, then commit) replays nothing.
    let delivered_by_a: HashSet<(&str, i64)> = first_phase.iter().map(|(k, s, _)| (k.as_str(), *s)).collect();
    let not_by_a = log[first_phase.len()..].iter().filter(|(k, s, _)| !delivered_by_a.contains(&(k.as_str(), *s)));
    assert_eq!(not_by_a.count(), total - delivered_by_a.len(), "only the killed replica's deliveries are replayed");

    let first_at = first_phase.first().map(|x| x.2).unwrap();
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let phase_one = Duration::max(first_phase.last().unwrap().2 - first_at, Duration::from_millis(1));
    let resumed_at = log[first_phase.len()..].first().map(|x| x.2).unwrap_or(all_delivered_at);
    let phase_two = all_delivered_at - resumed_at;
    eprintln!(
        "\nKAFKA RESTART TEST: {total} events, {OBJECTS} objects, {PARTITIONS} partitions, {} build, receiver answering in 3 ms\n\
         - replica A delivered {} events in {:.2} s ({:.0} events/s), then SIGKILL\n\
         - replicas B and C started delivering {:.1} s after the kill (the dead member's session timeout, 6 s here),\n\
         - then sent the remaining {} requests in {:.2} s ({:.0} requests/s, their own rebalance included)\n\
         - end to end: {total} events in {:.1} s from the first start = {:.0} events/s, kill and takeover included\n\
         - duplicates: {duplicates} of {} requests ({:.1} %), all of them events A delivered after its last offset commit\n",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        first_phase.len(),
        phase_one.as_secs_f64(),
        rate(first_phase.len(), phase_one),
        (resumed_at - killed_at).as_secs_f64(),
        log.len() - first_phase.len(),
        phase_two.as_secs_f64(),
        rate(log.len() - first_phase.len(), phase_two),
        (all_delivered_at - started).as_secs_f64(),
        rate(total, all_delivered_at - started),
        log.len(),
        100.0 * duplicates as f64 / total as f64,
    );
}

/// 2. Records that are not events go to the dead-letter topic with their coordinates and
///    raw bytes, and the records after them are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_and_consumption_goes_on() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "responses", "dead-letter"], 1).await;
    let rx = Receiver::ok().await;
    let good = |i: i64| ticket(&format!("g{i}"), &i.to_string(), json!({"ref": format!("R-{i}"), "seq": i}));
    let mut missing_key = event("bad-schema", "9", json!({}));
    missing_key.as_object_mut().unwrap().remove("key");
    let records: Vec<Vec<u8>> = vec![
        good(1),
        br#"{"id": "trunc", "time": "2026-11-28T09:00:00Z", "operation": "cre"#.to_vec(),
        good(2),
        serde_json::to_vec(&missing_key).unwrap(),
        b"\xff\xfe not utf-8 \xc3\x28".to_vec(),
        good(3),
    ];
    let producer = broker.producer();
    for r in &records {
        broker.produce(&producer, "changes", "k", r, &[]).await;
    }
    let setup = Setup {
        brokers: &broker.addr,
        group: "malformed",
        topic: "changes",
        delivery: "quick_attempts: 2",
        body: webhook_body(&rx.url("/hook")),
        listen: None,
    };
    let bridge = InProcess::start(&setup.yaml());
    let mut dead = broker.reader("dead-letter");
    dead.until("three dead letters", Duration::from_secs(30), |r| r.len() >= 3).await;
    wait_until("three deliveries", Duration::from_secs(30), || rx.seen().len() >= 3, String::new).await;
    bridge.stop().await;

    let delivered: Vec<i64> = rx.seen().iter().map(|s| s.json()["seq"].as_i64().unwrap()).collect();
    assert_eq!(delivered, vec![1, 2, 3], "the good records, the last one after all the bad ones");
    let letters: BTreeMap<i64, (Value, Option<String>)> = dead
        .records
        .iter()
        .map(|r| {
            let v = r.json();
            (v["source"]["offset"].as_i64().unwrap(), (v, r.key.clone()))
        })
        .collect();
    assert_eq!(letters.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4], "{letters:#?}");
    for (offset, reason) in [(1, "invalid_json"), (3, "schema_violation"), (4, "not_utf8")] {
        let (v, key) = &letters[&offset];
        assert_eq!(key.as_deref().unwrap_or(""), "", "an unparseable message has the empty key");
        assert_eq!(v["kind"], "dead_letter");
        assert_eq!(v["reason"], reason, "{v}");
        assert_eq!(v["source"], json!({"type": "kafka", "topic": "changes", "partition": 0, "offset": offset}));
        let raw = match v["raw_encoding"].as_str() {
            Some("base64") => base64::engine::general_purpose::STANDARD.decode(v["raw"].as_str().unwrap()).unwrap(),
            _ => v["raw"].as_str().unwrap().as_bytes().to_vec(),
        };
        assert_eq!(raw, records[offset as usize], "raw bytes of offset {offset}");
    }
    assert_eq!(letters[&4].0["raw_encoding"], "base64");
    assert_eq!(broker.committed("malformed", "changes", 1), BTreeMap::from([(0, 6)]));
}

/// 3. A receiver down for longer than the quick attempts: its deliveries wait in the retry
///    topic, later ones of the same object wait behind them without being attempted, the
///    partition keeps flowing for other objects, and everything arrives in order once the
///    receiver is back, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_does_not_hold_the_partition_and_gets_everything_in_order() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "responses", "dead-letter"], 1).await;
    let up = Arc::new(AtomicBool::new(false));
    let is_up = up.clone();
    let flaky = Receiver::start(move |_, _| {
        if is_up.load(Ordering::SeqCst) {
            Reply::Status(200, vec![], "ok".into())
        } else {
            Reply::Status(503, vec![], "down for maintenance".into())
        }
    })
    .await;
    let healthy = Receiver::ok().await;
    let body = format!(
        "connections:\n  flaky: {{url: \"{}\"}}\n  healthy: {{url: \"{}\"}}\nactions:\n  - {{name: flaky, type: webhook, connection: flaky, payload: '{{\"key\": \"$this->ref$\", \"seq\": \"$this->seq$\"}}'}}\n  - {{name: healthy, type: webhook, connection: healthy, payload: '{{\"key\": \"$this->ref$\", \"seq\": \"$this->seq$\"}}'}}\ntriggers:\n  - {{name: to-flaky, on: create, class: Ticket, condition: 'object.target == \"flaky\"', actions: [flaky]}}\n  - {{name: to-healthy, on: create, class: Ticket, condition: 'object.target == \"healthy\"', actions: [healthy]}}\n",
        flaky.url("/"),
        healthy.url("/")
    );
    let setup = Setup {
        brokers: &broker.addr,
        group: "down",
        topic: "changes",
        delivery: "quick_attempts: 2, retry: {max_attempts: 100, initial: 300ms, max: 300ms, multiplier: 1, jitter: 0}",
        body,
        listen: None,
    };
    let a = |seq: i64| ticket(&format!("a{seq}"), "A", json!({"ref": "R-A", "seq": seq, "target": "flaky"}));
    let b = |n: i64| {
        ticket(&format!("b{n}"), &format!("B{n}"), json!({"ref": format!("R-B{n}"), "seq": n, "target": "healthy"}))
    };
    let producer = broker.producer();
    for record in [a(1), a(2), b(1), b(2), b(3), a(3), b(4), b(5)] {
        broker.produce(&producer, "changes", "same-partition", &record, &[]).await;
    }
    let bridge = InProcess::start(&setup.yaml());
    wait_until("the healthy receiver gets B1..B5", Duration::from_secs(30), || healthy.seen().len() >= 5, String::new)
        .await;
    let mut retry = broker.reader("changes.retry");
    let seq_of = |r: &Record| r.json()["object"]["seq"].as_i64().unwrap();
    retry
        .until("A1 parked twice, A2 and A3 parked behind it", Duration::from_secs(30), |rs| {
            rs.iter().filter(|r| seq_of(r) == 1).count() >= 2
                && rs.iter().any(|r| seq_of(r) == 2)
                && rs.iter().any(|r| seq_of(r) == 3)
        })
        .await;
    let flaky_seqs = |rx: &Receiver| rx.seen().iter().map(|s| s.json()["seq"].as_i64().unwrap()).collect::<Vec<_>>();
    let while_down = flaky_seqs(&flaky);
    assert!(
        while_down.len() >= 4 && while_down.iter().all(|s| *s == 1),
        "only A1 is attempted while down: {while_down:?}"
    );
    assert!(!up.load(Ordering::SeqCst), "B1..B5 arrived while the flaky receiver was still down");
    // The parked records: the original payload, the retry information and the origin.
    let parked = retry.records.iter().find(|r| seq_of(r) == 2).unwrap();
    assert_eq!(parked.key.as_deref(), Some("UserRequest::A"));
    let info: Value = serde_json::from_slice(parked.header("hookbridge-retry").unwrap()).unwrap();
    assert_eq!((info["action"].as_str(), info["attempts"].as_u64()), (Some("flaky"), Some(0)), "{info}");
    assert_eq!(parked.header("hookbridge-retry-group"), Some(&b"down"[..]));
    let origin: Value = serde_json::from_slice(parked.header("hookbridge-retry-origin").unwrap()).unwrap();
    assert_eq!(origin, json!({"topic": "changes", "partition": 0, "offset": 1}));
    let first = retry.records.iter().find(|r| seq_of(r) == 1).unwrap();
    let info: Value = serde_json::from_slice(first.header("hookbridge-retry").unwrap()).unwrap();
    assert_eq!(info["attempts"], 2, "A1 was parked after its two quick attempts");

    up.store(true, Ordering::SeqCst);
    let mut responses = broker.reader("responses");
    let delivered = |rs: &[Record], seq: i64| {
        parsed(rs)
            .into_iter()
            .find(|v| v["action"] == "flaky" && v["status"] == "delivered" && v["event_id"] == format!("a{seq}"))
    };
    responses
        .until("A1, A2 and A3 delivered", Duration::from_secs(30), |rs| (1..=3).all(|s| delivered(rs, s).is_some()))
        .await;
    let seqs = flaky_seqs(&flaky);
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "A1, A2, A3 in order: {seqs:?}");
    assert_eq!(seqs.iter().filter(|s| **s == 2).count(), 1, "A2 is attempted only once it is its turn: {seqs:?}");
    assert_eq!(seqs.iter().filter(|s| **s == 3).count(), 1, "{seqs:?}");
    let a1 = delivered(&responses.records, 1).unwrap();
    assert!(a1["attempts"].as_u64().unwrap() > 2, "attempts go on counting across the retry topic: {a1}");
    assert_eq!(delivered(&responses.records, 2).unwrap()["attempts"], 1);

    // Restart safety: a delivery parked when the bridge stops comes back after a restart.
    up.store(false, Ordering::SeqCst);
    broker.produce(&producer, "changes", "same-partition", &a(4), &[]).await;
    retry.until("A4 parked", Duration::from_secs(30), |rs| rs.iter().any(|r| seq_of(r) == 4)).await;
    bridge.stop().await;
    up.store(true, Ordering::SeqCst);
    let bridge = InProcess::start(&setup.yaml());
    responses.until("A4 delivered after the restart", Duration::from_secs(30), |rs| delivered(rs, 4).is_some()).await;
    bridge.stop().await;
    let a4 = delivered(&responses.records, 4).unwrap();
    assert!(a4["attempts"].as_u64().unwrap() > 2, "{a4}");
    assert_eq!(broker.committed("down", "changes", 1), broker.end_offsets("changes", 1));
    assert_eq!(broker.committed("down.retry", "changes.retry", 1), broker.end_offsets("changes.retry", 1));
    assert!(!parsed(&broker.read_all("dead-letter")).iter().any(|d| d["action"] == "flaky"), "nothing failed for good");
}

/// 4. CloudEvents binary mode: `ce_*` headers, the event in the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_binary_mode_is_accepted() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "responses", "dead-letter"], 1).await;
    let rx = Receiver::ok().await;
    let mut data = event("unused", "42", json!({"object": {"ref": "R-42", "seq": 1}}));
    data.as_object_mut().unwrap().remove("id");
    data.as_object_mut().unwrap().remove("time");
    let producer = broker.producer();
    let headers: [(&str, &[u8]); 6] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-42"),
        ("ce_source", b"/itop/demo"),
        ("ce_type", b"org.itop.object-change"),
        ("ce_time", b"2026-11-28T09:00:00Z"),
        ("content-type", b"application/json"),
    ];
    broker.produce(&producer, "changes", "42", &serde_json::to_vec(&data).unwrap(), &headers).await;
    let setup = Setup {
        brokers: &broker.addr,
        group: "ce",
        topic: "changes",
        delivery: "quick_attempts: 2",
        body: webhook_body(&rx.url("/hook")),
        listen: None,
    };
    let bridge = InProcess::start(&setup.yaml());
    let mut responses = broker.reader("responses");
    responses.until("one result", Duration::from_secs(30), |rs| !rs.is_empty()).await;
    bridge.stop().await;
    let result = responses.records[0].json();
    assert_eq!(result["event_id"], "ce-42", "the id comes from the ce_id header: {result}");
    assert_eq!(result["status"], "delivered");
    assert_eq!(rx.seen().len(), 1);
    assert_eq!(rx.seen()[0].json(), json!({"key": "R-42", "seq": 1}));
    assert!(broker.read_all("dead-letter").is_empty());
}

/// 5. Results, callback updates and dead letters of failed deliveries are keyed `class::key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_keyed_by_object() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "responses", "dead-letter"], 1).await;
    let api = Receiver::start(|_, _| {
        Reply::Status(200, vec![("content-type", "application/json".into())], r#"{"id": "REMOTE-7"}"#.into())
    })
    .await;
    let refusing = Receiver::start(|_, _| Reply::Status(400, vec![], "no such channel".into())).await;
    let body = format!(
        "connections:\n  api: {{url: \"{}\"}}\n  refusing: {{url: \"{}\"}}\nactions:\n  - name: api\n    type: webhook\n    connection: api\n    payload: '{{\"ref\": \"$this->ref$\"}}'\n    callback: {{when: success, fields: {{remote_id: 'response.body.id'}}}}\n  - {{name: refusing, type: webhook, connection: refusing}}\ntriggers:\n  - {{name: created, on: create, class: Ticket, actions: [api, refusing]}}\n",
        api.url("/"),
        refusing.url("/")
    );
    let producer = broker.producer();
    broker.produce(&producer, "changes", "7", &ticket("e7", "7", json!({"ref": "R-7"})), &[]).await;
    let setup = Setup {
        brokers: &broker.addr,
        group: "keys",
        topic: "changes",
        delivery: "quick_attempts: 2",
        body,
        listen: None,
    };
    let bridge = InProcess::start(&setup.yaml());
    let mut responses = broker.reader("responses");
    responses.until("two results and a callback update", Duration::from_secs(30), |rs| rs.len() >= 3).await;
    let mut dead = broker.reader("dead-letter");
    dead.until("the refused delivery's dead letter", Duration::from_secs(30), |rs| !rs.is_empty()).await;
    bridge.stop().await;
    for r in responses.records.iter().chain(&dead.records) {
        assert_eq!(r.key.as_deref(), Some("UserRequest::7"), "{:?}", r.json());
    }
    let out = parsed(&responses.records);
    let by =
        |kind: &str, action: &str| out.iter().find(|v| v["kind"] == kind && v["action"] == action).unwrap().clone();
    assert_eq!(by("delivery", "api")["status"], "delivered");
    assert_eq!(by("delivery", "refusing")["status"], "failed");
    assert_eq!(by("object_update", "api")["fields"], json!({"remote_id": "REMOTE-7"}));
    let letter = dead.records[0].json();
    assert_eq!((letter["reason"].as_str(), letter["action"].as_str()), (Some("http_400"), Some("refusing")));
    assert_eq!(letter["source"], json!({"type": "kafka", "topic": "changes", "partition": 0, "offset": 0}));
}

/// 6. A delivery hanging for longer than `max.poll.interval.ms` while the pipeline is full:
///    the consumer keeps polling (its partitions paused, its thread never waiting for the
///    pipeline), so the replica stays in the group: every event arrives once, in order, and
///    nothing is replayed by a rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_get_the_replica_out_of_the_group() {
    const EVENTS: i64 = 500;
    let broker = Broker::start();
    broker.create_topics(&["changes", "responses", "dead-letter"], 1).await;
    // The first request hangs until the 9 s attempt timeout; the others are answered.
    let rx = Receiver::start(|n, _| if n == 0 { Reply::Hang } else { Reply::Status(200, vec![], "ok".into()) }).await;
    let records: Vec<(String, Vec<u8>)> = (0..EVENTS)
        .map(|seq| ("1".to_string(), ticket(&format!("e{seq}"), "1", json!({"ref": "R-1", "seq": seq}))))
        .collect();
    broker.produce_many("changes", &records).await;
    let setup = Setup {
        brokers: &broker.addr,
        group: "stalled",
        topic: "changes",
        // One request at a time: the pipeline takes 64 events, the source reads 320 and pauses.
        delivery: "concurrency: 1, timeout: 9s, quick_attempts: 3, retry: {initial: 100ms, max: 1s}",
        body: webhook_body(&rx.url("/hook")),
        listen: None,
    };
    let bridge = InProcess::start(&setup.yaml_with("    max.poll.interval.ms: \"7000\"\n"));
    wait_until("every event", Duration::from_secs(60), || rx.seen().len() > EVENTS as usize, String::new).await;
    bridge.stop().await;
    let seqs: Vec<i64> = rx.seen().iter().map(|s| s.json()["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = std::iter::once(0).chain(0..EVENTS).collect();
    // The first event twice (its first attempt timed out), then each once and in order.
    let first_difference = seqs.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        seqs.len() == expected.len() && first_difference.is_none(),
        "{} requests for {EVENTS} events; first difference at {first_difference:?}: {:?}",
        seqs.len(),
        &seqs[first_difference.unwrap_or(0).saturating_sub(3)..seqs.len().min(first_difference.unwrap_or(0) + 10)]
    );
    assert_eq!(broker.committed("stalled", "changes", 1), BTreeMap::from([(0, EVENTS)]));
}
