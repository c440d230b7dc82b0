//! Every input accounted for, nothing frozen, nothing sent that would hit another resource:
//! the intake's settle paths one by one, and the delivery defects that once broke them.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{event, fast_retry, lines, read_config, webhook, with_keys, Receiver, Reply, Run};
use hookbridge::internals::dispatch::Dispatcher;
use hookbridge::internals::pipeline::{Intake, Intaker};
use hookbridge::internals::publish::Publisher;
use hookbridge::internals::sink::{PublishError, Sink};
use hookbridge::internals::source::{Ack, Coords, Message, RetryInfo, RetryStage, ScheduleError, Settle};
use hookbridge::Config;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A sink that keeps what it takes, or refuses everything for good.
#[derive(Default)]
struct Memory {
    taken: Mutex<Vec<Value>>,
    refuse: bool,
}

#[async_trait]
impl Sink for Memory {
    async fn publish(&self, _key: &str, payload: &[u8]) -> Result<(), PublishError> {
        if self.refuse {
            return Err(PublishError::Refused("not authorised".into()));
        }
        self.taken.lock().unwrap().push(serde_json::from_slice(payload).unwrap());
        Ok(())
    }
}

fn intake_config() -> Arc<Config> {
    let config = json!({
        "source": {"type": "file", "path": "-"},
        "responses": {"type": "file", "path": "-"},
        "dead_letter": {"type": "file", "path": "-"},
        "server": {"listen": null},
        "delivery": {"dry_run": true},
        "connections": {"hook": {"url": "https://hooks.example.com/in"}},
        "actions": [
            {"name": "hook", "type": "webhook", "connection": "hook"},
            {"name": "off", "type": "webhook", "connection": "hook", "status": "disabled"},
        ],
        "triggers": [
            {"name": "created", "on": "create", "class": "Ticket", "actions": ["hook"]},
            {"name": "urgent", "on": "update", "class": "Ticket", "condition": r#"object.priority == "1""#, "actions": ["hook"]},
            {"name": "deleted", "on": "delete", "class": "Ticket", "actions": ["off"]},
        ],
    });
    Arc::new(common::load(&config))
}

/// A message whose settlement is recorded.
fn message(payload: Vec<u8>, retry: Option<Result<RetryInfo, String>>) -> (Message, Arc<Mutex<Vec<Settle>>>) {
    let settled = Arc::new(Mutex::new(Vec::new()));
    let s = settled.clone();
    let m = Message {
        payload,
        headers: Vec::new(),
        coords: Coords::File { path: "t".into(), line: 1, truncated_at: None, line_bytes: None },
        ack: Ack::new(move |how| s.lock().unwrap().push(how)),
        retry,
    };
    (m, settled)
}

fn ticket(id: &str, operation: &str, object: Value) -> Vec<u8> {
    let mut e = event(id, "7", json!({"object": object}));
    e["operation"] = json!(operation);
    serde_json::to_vec(&e).unwrap()
}

/// Runs one message through the intake; returns what it said, how the message was settled,
/// the results and the dead letters.
async fn intake(
    payload: Vec<u8>,
    retry: Option<Result<RetryInfo, String>>,
    refuse_dead_letters: bool,
    redelivers: bool,
) -> (Intake, Vec<Settle>, Vec<Value>, Vec<Value>) {
    let config = intake_config();
    let responses = Arc::new(Memory::default());
    let dead = Arc::new(Memory { refuse: refuse_dead_letters, ..Default::default() });
    let publisher = Publisher::new(responses.clone(), dead.clone(), 1024);
    let cancel = CancellationToken::new();
    let dispatcher = Dispatcher::new(config.clone(), publisher.clone(), RetryStage::InProcess, cancel.clone()).unwrap();
    let intaker =
        Intaker { config: &config, dispatcher: &dispatcher, publisher: &publisher, cancel: &cancel, redelivers };
    let room = Arc::new(tokio::sync::Semaphore::new(1));
    let (m, settled) = message(payload, retry);
    let said = intaker.handle(m, room.clone().acquire_owned().await.unwrap()).await;
    // Dispatched jobs settle when their outcome is published: wait for the room to free.
    let _ = tokio::time::timeout(Duration::from_secs(10), room.acquire()).await;
    let settled = settled.lock().unwrap().clone();
    let r = responses.taken.lock().unwrap().clone();
    let d = dead.taken.lock().unwrap().clone();
    (said, settled, r, d)
}

fn retry_info(trigger: &str, action: &str) -> RetryInfo {
    RetryInfo { trigger: trigger.into(), action: action.into(), mention: None, attempts: 3, first_attempt_ms: 1 }
}

#[tokio::test]
async fn a_traceparent_transport_header_is_passed_on() {
    let config = intake_config();
    let responses = Arc::new(Memory::default());
    let publisher = Publisher::new(responses.clone(), Arc::new(Memory::default()), 1024);
    let cancel = CancellationToken::new();
    let dispatcher = Dispatcher::new(config.clone(), publisher.clone(), RetryStage::InProcess, cancel.clone()).unwrap();
    let intaker =
        Intaker { config: &config, dispatcher: &dispatcher, publisher: &publisher, cancel: &cancel, redelivers: false };
    let (mut m, _) = message(ticket("t1", "create", json!({"ref": "R-1"})), None);
    m.headers = vec![("traceparent".into(), b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec())];
    let room = Arc::new(tokio::sync::Semaphore::new(1));
    intaker.handle(m, room.clone().acquire_owned().await.unwrap()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), room.acquire()).await;
    let r = responses.taken.lock().unwrap().clone();
    let tp = r[0]["request"]["headers"]["traceparent"].as_str().unwrap().to_string();
    assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && tp.ends_with("-01"), "{tp}");
}

#[tokio::test]
async fn every_settled_message_has_a_result_or_a_dead_letter_that_says_why() {
    // Not JSON: dead letter, settled.
    let (said, settled, r, d) = intake(b"{oops".to_vec(), None, false, false).await;
    assert_eq!((said, settled.as_slice(), r.len()), (Intake::DeadLettered("invalid_json"), &[Settle::Done][..], 0));
    assert_eq!(d[0]["reason"], "invalid_json");

    // A retry record whose retry headers cannot be read: dead letter, never run as a new event.
    let good = ticket("e1", "create", json!({"ref": "R-1"}));
    let (said, settled, r, d) =
        intake(good.clone(), Some(Err("no hookbridge-retry header".into())), false, false).await;
    assert_eq!(
        (said, settled.as_slice(), r.len()),
        (Intake::DeadLettered("invalid_retry_record"), &[Settle::Done][..], 0)
    );
    assert_eq!(d[0]["event_id"], "e1");

    // A retry for a trigger or action no longer configured (or no longer linked).
    for (trigger, action) in [("gone", "hook"), ("created", "gone"), ("deleted", "hook")] {
        let (said, settled, r, d) = intake(good.clone(), Some(Ok(retry_info(trigger, action))), false, false).await;
        assert_eq!(
            (said, settled.as_slice(), r.len()),
            (Intake::DeadLettered("not_configured"), &[Settle::Done][..], 0)
        );
        assert_eq!((d[0]["trigger"].as_str(), d[0]["action"].as_str()), (Some(trigger), Some(action)));
        assert!(d[0]["detail"].as_str().unwrap().contains("no longer configured"), "{}", d[0]);
    }

    // A condition that cannot be evaluated (no `priority`): a skipped result that says why.
    let update = ticket("e2", "update", json!({"ref": "R-2"}));
    let (said, settled, r, d) = intake(update, None, false, false).await;
    assert_eq!((said, settled.as_slice(), d.len()), (Intake::Reported, &[Settle::Done][..], 0));
    assert_eq!((r[0]["status"].as_str(), r[0]["error"]["reason"].as_str()), (Some("skipped"), Some("condition_error")));
    assert_eq!((r[0]["trigger"].as_str(), r[0]["action"].as_str()), (Some("urgent"), Some("hook")));
    assert!(!r[0]["error"]["detail"].as_str().unwrap().is_empty());

    // Matched, but the action is disabled: a skipped result.
    let delete = ticket("e3", "delete", json!({"ref": "R-3"}));
    let (said, settled, r, _) = intake(delete, None, false, false).await;
    assert_eq!((said, settled.as_slice()), (Intake::Reported, &[Settle::Done][..]));
    assert_eq!(r[0]["error"]["reason"], "disabled");

    // Matched nothing: settled with no output (counted in hookbridge_events_unmatched_total).
    let mut other = serde_json::from_slice::<Value>(&good).unwrap();
    other["class"] = json!("Server");
    other["ancestors"] = json!([]);
    let (said, settled, r, d) = intake(serde_json::to_vec(&other).unwrap(), None, false, false).await;
    assert_eq!((said, settled.as_slice(), r.len(), d.len()), (Intake::Unmatched, &[Settle::Done][..], 0, 0));

    // Dispatched: settled once the result is out.
    let (said, settled, r, _) = intake(good.clone(), None, false, false).await;
    assert_eq!((said, settled.as_slice()), (Intake::Dispatched(1), &[Settle::Done][..]));
    assert_eq!(r[0]["status"], "dry_run");
    assert_eq!(r[0]["webhook_id"].as_str().map(|s| s.starts_with("msg_")), Some(true));
    assert!(r[0]["request"]["headers"].get("traceparent").is_none(), "no trace, no traceparent");

    // A dead letter the destination refuses for good: logged and counted; the message stays
    // unacknowledged only where the broker offers it again, and never blocks the rest.
    let (said, settled, _, _) = intake(b"{oops".to_vec(), None, true, true).await;
    assert_eq!(said, Intake::Unsettled);
    assert!(matches!(settled.as_slice(), [Settle::Redeliver(_)]), "{settled:?}");
    let (said, settled, _, _) = intake(b"{oops".to_vec(), None, true, false).await;
    assert_eq!((said, settled.as_slice()), (Intake::DeadLettered("invalid_json"), &[Settle::Done][..]));
}

#[tokio::test]
async fn a_control_character_in_a_header_value_is_dropped_not_retried() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({"object": {"title": "a\u{1}b\u{7f}c"}}))]));
    let connection = json!({"url": rx.url("/hook"), "headers": {"X-Title": "$this->title$"}});
    run.run(&run.config(fast_retry(), webhook(connection, json!({})))).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-title"), Some("abc"));
    assert_eq!(run.responses()[0]["attempts"], 1);
    // Written into the config itself, it is a `check` error.
    let bad = json!({"url": "https://x.example.com", "headers": {"X-A": "a\u{1}b"}});
    let err = read_config(&run.config(json!({}), webhook(bad, json!({})))).unwrap_err().to_string();
    assert!(err.contains("connections.hook.headers.X-A") && err.contains("control character"), "{err}");
}

#[tokio::test]
async fn a_path_value_that_is_a_dot_segment_or_empty_sends_nothing() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    let events: Vec<Value> = ["..", ".", "", "R-4"]
        .iter()
        .enumerate()
        .map(|(i, r)| event(&format!("e{i}"), &i.to_string(), json!({"object": {"ref": r}})))
        .collect();
    run.write_events(&lines(&events));
    let action = json!({"method": "DELETE", "path": "/items/$this->ref$"});
    run.run(&run.config(fast_retry(), webhook(json!({"url": rx.url("/api")}), action))).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 1, "only the real ref is sent: {:?}", seen.iter().map(|s| &s.path).collect::<Vec<_>>());
    assert_eq!(seen[0].path, "/api/items/R-4");
    let results = run.responses();
    let failed: Vec<_> = results.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|r| r["error"]["reason"] == "invalid_request" && r["attempts"] == 0), "{failed:?}");
    assert_eq!(run.dead_letters().len(), 3);
}

#[tokio::test]
async fn two_stalled_endpoints_do_not_delay_a_healthy_one() {
    // concurrency 4: each connection may hold an eighth (here 1) by default. Before, each
    // could hold half, so two hanging endpoints took every slot until their timeouts.
    let stalled_a = Receiver::start(|_, _| Reply::Hang).await;
    let stalled_b = Receiver::start(|_, _| Reply::Hang).await;
    let healthy = Receiver::ok().await;
    let run = Run::new();
    let events: Vec<Value> = (0..3).map(|i| event(&format!("e{i}"), &i.to_string(), json!({}))).collect();
    run.write_events(&lines(&events));
    let config = run.config(
        json!({"concurrency": 4, "retry": {"max_attempts": 1}}),
        json!({
            "connections": {
                "a": {"url": stalled_a.url("/"), "timeout": "4s"},
                "b": {"url": stalled_b.url("/"), "timeout": "4s"},
                "ok": {"url": healthy.url("/")},
            },
            "actions": [
                {"name": "a", "type": "webhook", "connection": "a"},
                {"name": "b", "type": "webhook", "connection": "b"},
                {"name": "ok", "type": "webhook", "connection": "ok"},
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["a", "b", "ok"]}],
        }),
    );
    let started = Instant::now();
    run.run(&config).await;
    let healthy_seen = healthy.seen();
    assert_eq!(healthy_seen.len(), 3);
    // Causal, not a speed figure: every healthy delivery arrived before the first stalled
    // request could even time out.
    let last_healthy = healthy_seen.iter().map(|s| s.at).max().unwrap() - started;
    assert!(last_healthy < Duration::from_secs(4), "healthy deliveries waited for the stalled ones: {last_healthy:?}");
    let timeouts = run.responses().iter().filter(|r| r["error"]["reason"] == "timeout").count();
    assert_eq!(timeouts, 6);
}

#[tokio::test]
async fn a_dead_letter_sink_that_never_comes_back_does_not_block_shutdown() {
    // /dev/full: every write fails with "no space left", a passing error retried with backoff.
    let rx = Receiver::ok().await;
    let run = Run::new();
    let mut events = vec![b"not json".to_vec()];
    events.extend(lines(&[event("e1", "1", json!({}))]));
    run.write_events(&events);
    let mut config = run.config(json!({"shutdown_timeout": "1s"}), webhook(json!({"url": rx.url("/")}), json!({})));
    config["source"]["follow"] = json!(true);
    config["dead_letter"]["path"] = json!("/dev/full");
    let config = Arc::new(common::load(&config));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hookbridge::run(config, shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(1 + 2), task).await;
    assert!(ended.is_ok(), "still running {:?} after SIGTERM", asked.elapsed());
    ended.unwrap().unwrap().unwrap();
}

#[test]
fn check_refuses_every_limit_run_could_not_honour() {
    let run = Run::new();
    let url = "https://x.example.com";
    for (connection, delivery, place) in [
        (json!({"url": url, "rate_limit": {"per_second": 1e10}}), json!({}), "connections.hook.rate_limit.per_second"),
        (json!({"url": url, "timeout": "0s"}), json!({}), "connections.hook.timeout"),
        (json!({"url": url}), json!({"timeout": "0s"}), "delivery.timeout"),
        (json!({"url": url}), json!({"shutdown_timeout": "100000000h"}), "delivery.shutdown_timeout"),
        (json!({"url": url}), json!({"retry": {"max": "0s", "initial": "0s"}}), "delivery.retry.max"),
        (json!({"url": url}), json!({"concurrency": 100000000}), "delivery.concurrency"),
        (json!({"url": url}), json!({"max_request_bytes": 0}), "delivery.max_request_bytes"),
    ] {
        let config = run.config(delivery, webhook(connection, json!({})));
        let err = read_config(&config).err().unwrap_or_else(|| panic!("accepted: {config}")).to_string();
        assert!(err.contains(place), "{place} not named in: {err}");
    }
    // YAML's infinity has no JSON form: the same config as a YAML document holding `.inf`,
    // which the schema refuses at the limit itself.
    let config = run.config(json!({}), webhook(json!({"url": url, "rate_limit": {"per_second": 1}}), json!({})));
    let mut document = serde_norway::to_value(&config).unwrap();
    document["connections"]["hook"]["rate_limit"]["per_second"] = f64::INFINITY.into();
    let yaml = serde_norway::to_string(&document).unwrap();
    assert!(yaml.contains("per_second: .inf"), "{yaml}");
    let err = Config::from_yaml(&yaml).err().unwrap_or_else(|| panic!("accepted: {yaml}")).to_string();
    assert!(err.contains("connections.hook.rate_limit"), "connections.hook.rate_limit not named in: {err}");
}

/// A durable retry stage in memory: what is scheduled comes back through the intake after
/// its delay, as a retry record does from a Kafka retry topic or a JetStream retry stream.
struct MemoryStage {
    tx: tokio::sync::mpsc::UnboundedSender<(Message, Duration)>,
    written: std::sync::atomic::AtomicUsize,
}

impl hookbridge::internals::source::DurableRetry for MemoryStage {
    fn schedule<'a, 'b, 'c>(
        &'a self,
        message: &'b Message,
        info: RetryInfo,
        delay: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ScheduleError>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let record = Message {
            payload: message.payload.clone(),
            headers: message.headers.clone(),
            coords: message.coords.clone(),
            ack: Ack::none(),
            retry: Some(Ok(info)),
        };
        self.written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sent = self.tx.send((record, delay)).map_err(|e| ScheduleError::Other(e.to_string()));
        Box::pin(async move { sent })
    }
}

/// What a run through the in-memory stage produced.
struct StageRun {
    results: Vec<Value>,
    dead_letters: Vec<Value>,
    written: usize,
}

/// Runs `events` (JSON) through the intake and dispatcher of `config` with a durable retry
/// stage in memory, until `expected` results are out.
async fn through_memory_stage(config: &Value, events: Vec<Value>, expected: usize) -> StageRun {
    let config = Arc::new(common::load(config));
    let responses = Arc::new(Memory::default());
    let dead = Arc::new(Memory::default());
    let publisher = Publisher::new(responses.clone(), dead.clone(), 1024);
    let (tx, mut back) = tokio::sync::mpsc::unbounded_channel();
    let stage = Arc::new(MemoryStage { tx, written: Default::default() });
    let cancel = CancellationToken::new();
    let dispatcher =
        Dispatcher::new(config.clone(), publisher.clone(), RetryStage::Handoff(stage.clone()), cancel.clone()).unwrap();
    let (intake_tx, mut intake_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let intake = {
        let (config, dispatcher, publisher, cancel) =
            (config.clone(), dispatcher.clone(), publisher.clone(), cancel.clone());
        tokio::spawn(async move {
            let room = Arc::new(tokio::sync::Semaphore::new(1000));
            let intaker = Intaker {
                config: &config,
                dispatcher: &dispatcher,
                publisher: &publisher,
                cancel: &cancel,
                redelivers: false,
            };
            while let Some(m) = intake_rx.recv().await {
                intaker.handle(m, room.clone().acquire_owned().await.unwrap()).await;
            }
        })
    };
    // The stage hands records back when due.
    let returner = {
        let intake_tx = intake_tx.clone();
        tokio::spawn(async move {
            while let Some((record, delay)) = back.recv().await {
                let intake_tx = intake_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = intake_tx.send(record);
                });
            }
        })
    };
    for (offset, e) in events.iter().enumerate() {
        intake_tx
            .send(Message {
                payload: serde_json::to_vec(e).unwrap(),
                headers: Vec::new(),
                coords: Coords::Kafka {
                    topic: "changes".into(),
                    partition: 0,
                    offset: 100 + offset as i64,
                    retry: None,
                },
                ack: Ack::none(),
                retry: None,
            })
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while responses.taken.lock().unwrap().len() < expected {
        assert!(Instant::now() < deadline, "results: {:?}", responses.taken.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing more comes once every result is out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    intake.abort();
    returner.abort();
    let results = responses.taken.lock().unwrap().clone();
    let dead_letters = dead.taken.lock().unwrap().clone();
    StageRun { results, dead_letters, written: stage.written.load(std::sync::atomic::Ordering::SeqCst) }
}

/// A config for [`through_memory_stage`], which feeds the intake and keeps the outputs itself
/// (the file source and outputs are never opened): one quick attempt, then the stage.
fn stage_config(delivery: Value, rest: Value) -> Value {
    let config = json!({
        "source": {"type": "file", "path": "-"},
        "responses": {"type": "file", "path": "-"},
        "dead_letter": {"type": "file", "path": "-"},
        "server": {"listen": null},
        "delivery": with_keys(json!({"allow_private_networks": true, "quick_attempts": 1}), delivery),
    });
    with_keys(config, rest)
}

#[tokio::test]
async fn long_retries_keep_an_objects_order_and_write_each_follower_once() {
    // The first event of the object fails six times; the 19 behind it must wait, be written
    // to the stage once each, and come back in source order whatever their due times.
    let rx = Receiver::start(|_, seen| {
        let seq = seen.json()["seq"].as_i64().unwrap_or(-1);
        static FAILURES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if seq == 0 && FAILURES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 6 {
            Reply::Status(500, vec![], "not yet".into())
        } else {
            Reply::Status(200, vec![], "ok".into())
        }
    })
    .await;
    let config = stage_config(
        json!({"retry": {"max_attempts": 10, "initial": "30ms", "max": "150ms", "jitter": 0.5}}),
        webhook(json!({"url": rx.url("/hook")}), json!({"payload": r#"{"seq": "$this->seq$"}"#})),
    );
    let events = (0..20).map(|seq| event(&format!("e{seq}"), "1", json!({"object": {"seq": seq}}))).collect();
    let run = through_memory_stage(&config, events, 20).await;
    let mut first = Vec::new();
    for s in rx.seen() {
        let seq = s.json()["seq"].as_i64().unwrap();
        if !first.contains(&seq) {
            first.push(seq);
        }
    }
    assert_eq!(first, (0..20).collect::<Vec<_>>(), "first deliveries out of source order");
    assert_eq!(rx.seen().len(), 20 + 6, "no follower attempted before its turn, none twice");
    assert!(run.results.iter().all(|r| r["status"] == "delivered"), "{:?}", run.results);
    assert_eq!(run.results.iter().find(|r| r["event_id"] == "e0").unwrap()["attempts"], 7);
    assert!(run.results.iter().filter(|r| r["event_id"] != "e0").all(|r| r["attempts"] == 1));
    // Six long retries of the first event, and each follower written once.
    assert_eq!(run.written, 6 + 19);
    assert!(run.dead_letters.is_empty());
}

#[tokio::test]
async fn a_failing_action_never_sends_the_succeeding_one_again() {
    let ok = Receiver::ok().await;
    let failing = Receiver::start(|_, _| Reply::Status(500, vec![], "down".into())).await;
    let config = stage_config(
        json!({"retry": {"max_attempts": 3, "initial": "20ms", "max": "50ms", "jitter": 0}}),
        json!({
            "connections": {"ok": {"url": ok.url("/")}, "failing": {"url": failing.url("/")}},
            "actions": [
                {"name": "ok", "type": "webhook", "connection": "ok"},
                {"name": "failing", "type": "webhook", "connection": "failing"},
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["ok", "failing"]}],
        }),
    );
    let events = (0..10).map(|i| event(&format!("e{i}"), &i.to_string(), json!({}))).collect();
    let run = through_memory_stage(&config, events, 20).await;
    let ids: Vec<String> = ok.seen().iter().map(|s| s.header("webhook-id").unwrap().to_string()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (10, 10), "the 200 endpoint got each event exactly once");
    assert_eq!(failing.seen().len(), 30, "three attempts per event, counted per action");
    let delivered = run.results.iter().filter(|r| r["action"] == "ok" && r["status"] == "delivered").count();
    let failed: Vec<_> = run.results.iter().filter(|r| r["action"] == "failing").collect();
    assert_eq!((delivered, failed.len(), run.results.len()), (10, 10, 20));
    assert!(failed.iter().all(|r| r["status"] == "failed" && r["attempts"] == 3), "{failed:?}");
    assert_eq!(run.dead_letters.len(), 10);
    assert!(run.dead_letters.iter().all(|d| d["action"] == "failing"));
}
