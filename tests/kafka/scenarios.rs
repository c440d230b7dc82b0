//! The scenarios every source must pass, on Kafka: malformed records, long retries through the
//! retry topic, CloudEvents binary mode, keys of results, and a hanging endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::bridge::{InProcess, Setup};
use crate::broker::{Broker, Record};
use crate::common::{event, wait_until, Receiver, Reply, KEY_SEQ};
use crate::{parsed, ticket};

/// Records that are not events go to the dead-letter topic with their coordinates and
///    raw bytes, and the records after them are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_and_consumption_goes_on() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry", "responses", "dead-letter"], 1);
    let rx = Receiver::ok().await;
    // One object: order is promised per object, so the good records must come in order; for
    // three objects they could go concurrently in any order.
    let good = |i: i64| ticket(&format!("g{i}"), "1", json!({"ref": format!("R-{i}"), "seq": i}));
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
    let setup = Setup::webhook(&broker.addr, "malformed", json!({"quick_attempts": 2}), &rx.url("/hook"));
    let bridge = InProcess::start(&setup.config());
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
    assert_eq!(broker.committed("malformed", "changes"), BTreeMap::from([(0, 6)]));
}

/// A receiver down for longer than the quick attempts: its deliveries wait in the retry
///    topic, later ones of the same object wait behind them without being attempted, the
///    partition keeps flowing for other objects, and everything arrives in order once the
///    receiver is back, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_does_not_hold_the_partition_and_gets_everything_in_order() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry", "responses", "dead-letter"], 1);
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
    let body = json!({
        "connections": {"flaky": {"url": flaky.url("/")}, "healthy": {"url": healthy.url("/")}},
        "actions": [
            {"name": "flaky", "type": "webhook", "connection": "flaky", "payload": KEY_SEQ},
            {"name": "healthy", "type": "webhook", "connection": "healthy", "payload": KEY_SEQ},
        ],
        "triggers": [
            {"name": "to-flaky", "on": "create", "class": "Ticket", "condition": r#"object.target == "flaky""#, "actions": ["flaky"]},
            {"name": "to-healthy", "on": "create", "class": "Ticket", "condition": r#"object.target == "healthy""#, "actions": ["healthy"]},
        ],
    });
    let setup = Setup::new(
        &broker.addr,
        "down",
        json!({"quick_attempts": 2, "retry": {"max_attempts": 100, "initial": "300ms", "max": "300ms", "multiplier": 1, "jitter": 0}}),
        body,
    );
    let a = |seq: i64| ticket(&format!("a{seq}"), "A", json!({"ref": "R-A", "seq": seq, "target": "flaky"}));
    let b = |n: i64| {
        ticket(&format!("b{n}"), &format!("B{n}"), json!({"ref": format!("R-B{n}"), "seq": n, "target": "healthy"}))
    };
    let producer = broker.producer();
    for record in [a(1), a(2), b(1), b(2), b(3), a(3), b(4), b(5)] {
        broker.produce(&producer, "changes", "same-partition", &record, &[]).await;
    }
    let bridge = InProcess::start(&setup.config());
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
    let bridge = InProcess::start(&setup.config());
    responses.until("A4 delivered after the restart", Duration::from_secs(30), |rs| delivered(rs, 4).is_some()).await;
    bridge.stop().await;
    let a4 = delivered(&responses.records, 4).unwrap();
    assert!(a4["attempts"].as_u64().unwrap() > 2, "{a4}");
    assert_eq!(broker.committed("down", "changes"), broker.end_offsets("changes"));
    assert_eq!(broker.committed("down.retry", "changes.retry"), broker.end_offsets("changes.retry"));
    assert!(
        !parsed(&broker.read_all("dead-letter").await).iter().any(|d| d["action"] == "flaky"),
        "nothing failed for good"
    );
}

/// CloudEvents binary mode: `ce_*` headers, the event in the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_binary_mode_is_accepted() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry", "responses", "dead-letter"], 1);
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
    let setup = Setup::webhook(&broker.addr, "ce", json!({"quick_attempts": 2}), &rx.url("/hook"));
    let bridge = InProcess::start(&setup.config());
    let mut responses = broker.reader("responses");
    responses.until("one result", Duration::from_secs(30), |rs| !rs.is_empty()).await;
    bridge.stop().await;
    let result = responses.records[0].json();
    assert_eq!(result["event_id"], "ce-42", "the id comes from the ce_id header: {result}");
    assert_eq!(result["status"], "delivered");
    assert_eq!(rx.seen().len(), 1);
    assert_eq!(rx.seen()[0].json(), json!({"key": "R-42", "seq": 1}));
    assert!(broker.read_all("dead-letter").await.is_empty());
}

/// Results, callback updates and dead letters of failed deliveries are keyed `class::key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_keyed_by_object() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry", "responses", "dead-letter"], 1);
    let api = Receiver::start(|_, _| {
        Reply::Status(200, vec![("content-type", "application/json".into())], r#"{"id": "REMOTE-7"}"#.into())
    })
    .await;
    let refusing = Receiver::start(|_, _| Reply::Status(400, vec![], "no such channel".into())).await;
    let body = json!({
        "connections": {"api": {"url": api.url("/")}, "refusing": {"url": refusing.url("/")}},
        "actions": [
            {
                "name": "api", "type": "webhook", "connection": "api", "payload": r#"{"ref": "$this->ref$"}"#,
                "callback": {"when": "success", "fields": {"remote_id": "response.body.id"}},
            },
            {"name": "refusing", "type": "webhook", "connection": "refusing"},
        ],
        "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["api", "refusing"]}],
    });
    let producer = broker.producer();
    broker.produce(&producer, "changes", "7", &ticket("e7", "7", json!({"ref": "R-7"})), &[]).await;
    let setup = Setup::new(&broker.addr, "keys", json!({"quick_attempts": 2}), body);
    let bridge = InProcess::start(&setup.config());
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

/// A delivery hanging for longer than `max.poll.interval.ms` while the pipeline is full:
///    the consumer keeps polling (its partitions paused, its thread never waiting for the
///    pipeline), so the replica stays in the group: every event arrives once, in order, and
///    nothing is replayed by a rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_get_the_replica_out_of_the_group() {
    const EVENTS: i64 = 500;
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry", "responses", "dead-letter"], 1);
    // The first request hangs until the 9 s attempt timeout; the others are answered.
    let rx = Receiver::start(|n, _| if n == 0 { Reply::Hang } else { Reply::Status(200, vec![], "ok".into()) }).await;
    let records: Vec<(String, Vec<u8>)> = (0..EVENTS)
        .map(|seq| ("1".to_string(), ticket(&format!("e{seq}"), "1", json!({"ref": "R-1", "seq": seq}))))
        .collect();
    broker.produce_many("changes", &records).await;
    // One request at a time: the pipeline takes 64 events, the source reads 320 and pauses.
    let setup = Setup {
        properties: json!({"max.poll.interval.ms": "7000"}),
        ..Setup::webhook(
            &broker.addr,
            "stalled",
            json!({"concurrency": 1, "timeout": "9s", "quick_attempts": 3, "retry": {"initial": "100ms", "max": "1s"}}),
            &rx.url("/hook"),
        )
    };
    let bridge = InProcess::start(&setup.config());
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
    assert_eq!(broker.committed("stalled", "changes"), BTreeMap::from([(0, EVENTS)]));
}

/// One trigger, two actions: one endpoint always answers 500, the other 200. Only the failing
/// delivery goes through the retry topic: the 200 endpoint gets each event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_action_never_sends_the_succeeding_one_again() {
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry", "responses", "dead-letter"], 2);
    let failing = Receiver::start(|_, _| Reply::Status(500, vec![], "down".into())).await;
    let ok = Receiver::ok().await;
    let body = json!({
        "connections": {"failing": {"url": failing.url("/")}, "ok": {"url": ok.url("/")}},
        "actions": [
            {"name": "failing", "type": "webhook", "connection": "failing"},
            {"name": "ok", "type": "webhook", "connection": "ok"},
        ],
        "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["ok", "failing"]}],
    });
    let setup = Setup::new(
        &broker.addr,
        "once",
        json!({"quick_attempts": 1, "retry": {"max_attempts": 3, "initial": "100ms", "max": "200ms", "jitter": 0}}),
        body,
    );
    let producer = broker.producer();
    let events = 10;
    for i in 0..events {
        let key = format!("K{}", i % 4);
        broker
            .produce(&producer, "changes", &key, &ticket(&format!("e{i}"), &key, json!({"ref": format!("R-{i}")})), &[])
            .await;
    }
    let bridge = InProcess::start(&setup.config());
    let mut responses = broker.reader("responses");
    responses.until("a result for every delivery", Duration::from_secs(60), |rs| parsed(rs).len() >= 2 * events).await;
    bridge.stop().await;
    let ids: Vec<String> = ok.seen().iter().map(|s| s.header("webhook-id").unwrap().to_string()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (events, events), "the 200 endpoint got each event exactly once");
    assert_eq!(failing.seen().len(), 3 * events, "three attempts per event, counted per action");
    let results = parsed(&responses.records);
    let delivered = results.iter().filter(|r| r["action"] == "ok" && r["status"] == "delivered").count();
    let failed: Vec<&Value> = results.iter().filter(|r| r["action"] == "failing").collect();
    assert_eq!((delivered, failed.len(), results.len()), (events, events, 2 * events), "{results:?}");
    assert!(failed.iter().all(|r| r["status"] == "failed" && r["attempts"] == 3), "{failed:?}");
    let letters = parsed(&broker.read_all("dead-letter").await);
    assert_eq!(letters.len(), events);
    assert!(letters.iter().all(|d| d["action"] == "failing"));
}

/// Deliveries held behind a failing first one (lane parking) must not stop the reading of
/// the retry partition: the record that frees them, the first one parked again, sits behind
/// them. With held messages counted in the partition's read-ahead share, the partition was
/// paused with the share full of held messages, and the lane waited for its 10-minute stale
/// limit (the full chaos soak delivered 9 events/s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_held_behind_a_failing_one_do_not_stall_the_retry_partition() {
    const EVENTS: i64 = 200;
    let broker = Broker::start();
    // Eight partitions: a read-ahead bound of 64 + 4 × 64 = 512 shared by eight retry
    // partitions is a share of 64, while parking may hold 128; the lane is in one partition.
    broker.create_topics(&["changes", "changes.retry"], 8);
    broker.create_topics(&["responses", "dead-letter"], 1);
    let failures_left = Arc::new(std::sync::atomic::AtomicUsize::new(4));
    let left = failures_left.clone();
    let rx = Receiver::scripted(Duration::ZERO, move |_, seq, _| {
        let fail = seq == 0 && left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if fail {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let setup = Setup::webhook(
        &broker.addr,
        "held",
        json!({"concurrency": 64, "quick_attempts": 1, "retry": {"max_attempts": 100, "initial": "300ms", "max": "300ms", "multiplier": 1, "jitter": 0}}),
        &rx.url("/hook"),
    );
    let producer = broker.producer();
    for seq in 0..EVENTS {
        let record = ticket(&format!("a{seq}"), "A", json!({"ref": "R-A", "seq": seq}));
        broker.produce(&producer, "changes", "A", &record, &[]).await;
    }
    let bridge = InProcess::start(&setup.config());
    wait_until(
        "every event of the lane delivered",
        Duration::from_secs(60),
        || rx.distinct_delivered() as i64 >= EVENTS,
        || format!("{} of {EVENTS} delivered", rx.distinct_delivered()),
    )
    .await;
    bridge.stop().await;
    assert_eq!(failures_left.load(Ordering::SeqCst), 0, "the first delivery failed 4 times");
    let delivered: Vec<i64> = rx.seen().iter().filter(|h| h.delivered()).map(|h| h.seq).collect();
    let mut first_seen = Vec::new();
    for s in delivered {
        if !first_seen.contains(&s) {
            first_seen.push(s);
        }
    }
    assert_eq!(first_seen, (0..EVENTS).collect::<Vec<_>>(), "the lane's deliveries in source order");
}
