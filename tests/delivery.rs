//! Delivery against real HTTP receivers on port 0: retries, Retry-After, final answers,
//! isolation, per-object order, callbacks, signatures, limits and the destination policy.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{event, fast_retry, lines, webhook, ClosedPort, Receiver, Reply, Run};
use serde_json::{json, Value};

/// The payload of the `hook` action.
const PAYLOAD: &str = r#"{"ref": "$this->ref$", "title": "$this->title$"}"#;

/// The `hook` action (sending [`PAYLOAD`]) on `url`, fired by every created Ticket.
fn hook_on(url: &str) -> Value {
    webhook(json!({"url": url}), json!({"payload": PAYLOAD}))
}

/// Runs one event through the webhook action towards `url`, with fast retries.
async fn one_event_through(url: &str) -> Run {
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    run.run(&run.config(fast_retry(), hook_on(url))).await;
    run
}

#[tokio::test]
async fn success_after_two_500s_with_one_webhook_id() {
    let rx = Receiver::start(|n, _| {
        if n < 2 {
            Reply::Status(500, vec![], "boom".into())
        } else {
            Reply::Status(200, vec![], "ok".into())
        }
    })
    .await;
    let run = one_event_through(&rx.url("/hook")).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 3);
    let ids: Vec<_> = seen.iter().map(|s| s.header("webhook-id").unwrap().to_string()).collect();
    assert!(ids.iter().all(|i| i == &ids[0] && i.starts_with("msg_")), "{ids:?}");
    assert_eq!(seen[2].json()["ref"], "R-1");
    let results = run.responses();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["status"], "delivered");
    assert_eq!(results[0]["attempts"], 3);
    assert_eq!(results[0]["http_status"], 200);
    assert_eq!(results[0]["webhook_id"], ids[0].as_str());
    assert!(run.dead_letters().is_empty());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rx = Receiver::start(|n, _| {
        if n == 0 {
            Reply::Status(429, vec![("retry-after", "1".into())], "slow down".into())
        } else {
            Reply::Status(200, vec![], "ok".into())
        }
    })
    .await;
    let run = one_event_through(&rx.url("/hook")).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(run.responses()[0]["status"], "delivered");
}

#[tokio::test]
async fn a_400_is_final_and_dead_lettered() {
    let rx = Receiver::start(|_, _| Reply::Status(400, vec![], "bad request: missing field".into())).await;
    let run = one_event_through(&rx.url("/hook")).await;
    assert_eq!(rx.seen().len(), 1);
    let r = &run.responses()[0];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["http_status"], 400);
    assert_eq!(r["error"]["reason"], "http_400");
    assert_eq!(r["response_excerpt"], "bad request: missing field");
    let dl = run.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason"], "http_400");
    assert_eq!(dl[0]["action"], "hook");
    assert_eq!(dl[0]["event_id"], "e1");
}

#[tokio::test]
async fn per_object_order_holds_while_a_receiver_fails_at_random() {
    let steady = Receiver::ok().await;
    let flaky_count = Arc::new(AtomicUsize::new(0));
    let fc = flaky_count.clone();
    let flaky = Receiver::start(move |_, s| {
        // Deterministic pseudo-random failures: about one in four.
        let h = s
            .body
            .iter()
            .fold(fc.fetch_add(1, Ordering::SeqCst) as u64, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64));
        if h % 4 == 0 {
            Reply::Status(503, vec![], "unavailable".into())
        } else {
            Reply::Status(200, vec![], "ok".into())
        }
    })
    .await;
    let run = Run::new();
    let mut events = Vec::new();
    for seq in 0..50 {
        for obj in 0..64 {
            events.push(event(
                &format!("e-{obj}-{seq}"),
                &obj.to_string(),
                json!({"object": {"ref": format!("R-{obj}"), "seq": seq}}),
            ));
        }
    }
    run.write_events(&lines(&events));
    let payload = r#"{"key": "$this->ref$", "seq": "$this->seq$"}"#;
    let config = run.config(
        json!({"concurrency": 64, "retry": {"max_attempts": 20, "initial": "5ms", "max": "20ms"}}),
        json!({
            "connections": {"steady": {"url": steady.url("/")}, "flaky": {"url": flaky.url("/")}},
            "actions": [
                {"name": "steady", "type": "webhook", "connection": "steady", "payload": payload},
                {"name": "flaky", "type": "webhook", "connection": "flaky", "payload": payload},
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["steady", "flaky"]}],
        }),
    );
    run.run(&config).await;
    for (name, rx, only_ok) in [("steady", &steady, false), ("flaky", &flaky, true)] {
        let mut last: HashMap<String, i64> = HashMap::new();
        let mut delivered = 0;
        let seen = rx.seen();
        let mut flaky_n = 0usize;
        for s in &seen {
            let _ = only_ok;
            let v = s.json();
            let key = v["key"].as_str().unwrap().to_string();
            let seq = v["seq"].as_i64().unwrap();
            let prev = last.get(&key).copied().unwrap_or(-1);
            // A retry repeats the same seq; never an earlier one.
            assert!(seq >= prev, "{name}: {key} got seq {seq} after {prev}");
            if seq > prev {
                delivered += 1;
            } else {
                flaky_n += 1;
            }
            last.insert(key, seq);
        }
        assert_eq!(delivered, 64 * 50, "{name}");
        if name == "flaky" {
            assert!(flaky_n > 100, "the flaky receiver should have caused retries, saw {flaky_n}");
        }
    }
    let results = run.responses();
    assert_eq!(results.len(), 2 * 64 * 50);
    assert!(results.iter().all(|r| r["status"] == "delivered"), "every delivery succeeds in the end");
}

#[tokio::test]
async fn callback_update_from_an_itop_answer_and_none_after_a_refused_connection() {
    let itop = Receiver::start(|_, s| {
        let body = String::from_utf8_lossy(&s.body).to_string();
        assert!(body.starts_with("version=1.3&json_data="), "{body}");
        Reply::Status(
            200,
            vec![("content-type", "application/json".into())],
            r#"{"objects":{"UserRequest::45":{"code":0,"message":"created","class":"UserRequest","key":"45","fields":{"ref":"R-000045"}}},"code":0,"message":null}"#.into(),
        )
    })
    .await;
    // A port that refuses connections, held for the test so nothing else can take it.
    let closed = ClosedPort::new();
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    let config = run.config(
        json!({"retry": {"max_attempts": 2, "initial": "10ms", "max": "20ms"}}),
        json!({
            "connections": {
                "itop": {"url": itop.url("/webservices/rest.php"), "auth": {"type": "basic", "user": "rest", "password": "secret"}},
                "down": {"url": format!("http://127.0.0.1:{}/rest.php", closed.port)},
            },
            "actions": [
                {
                    "name": "mirror", "type": "itop", "connection": "itop",
                    "json_data": r#"{"operation": "core/create", "class": "UserRequest", "fields": {"title": "$this->title$"}}"#,
                    "callback": {"when": "success", "fields": {
                        "remote_ref": "response.body.objects.map(k, response.body.objects[k].fields.ref)[0]",
                        "http": "response.status",
                    }},
                },
                {
                    "name": "mirror-down", "type": "itop", "connection": "down",
                    "json_data": r#"{"operation": "core/create"}"#,
                    "callback": {"when": "any_response", "fields": {"remote_ref": "response.status"}},
                },
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["mirror", "mirror-down"]}],
        }),
    );
    run.run(&config).await;
    let seen = itop.seen();
    assert_eq!(seen[0].header("content-type"), Some("application/x-www-form-urlencoded"));
    assert!(seen[0].header("authorization").unwrap().starts_with("Basic "));
    let out = run.responses();
    let updates: Vec<&Value> = out.iter().filter(|m| m["kind"] == "object_update").collect();
    assert_eq!(updates.len(), 1, "{out:#?}");
    assert_eq!(updates[0]["action"], "mirror");
    assert_eq!(updates[0]["class"], "UserRequest");
    assert_eq!(updates[0]["key"], "1");
    assert_eq!(updates[0]["fields"], json!({"remote_ref": "R-000045", "http": 200}));
    let down = out.iter().find(|m| m["action"] == "mirror-down" && m["kind"] == "delivery").unwrap();
    assert_eq!(down["status"], "failed");
    assert_eq!(down["error"]["reason"], "network");
    assert!(down["http_status"].is_null());
}

#[tokio::test]
async fn itop_code_other_than_zero_is_a_failure() {
    let itop = Receiver::start(|_, _| {
        Reply::Status(200, vec![], r#"{"code":100,"message":"Error: Missing argument 'class'"}"#.into())
    })
    .await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    let config = run.config(
        fast_retry(),
        json!({
            "connections": {"itop": {"url": itop.url("/rest.php")}},
            "actions": [{"name": "mirror", "type": "itop", "connection": "itop", "json_data": {"operation": "core/create"}}],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["mirror"]}],
        }),
    );
    run.run(&config).await;
    let r = &run.responses()[0];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["reason"], "itop_error");
    assert!(r["error"]["detail"].as_str().unwrap().contains("Missing argument 'class'"));
    assert_eq!(itop.seen().len(), 1);
}

#[tokio::test]
async fn signature_verifies_with_an_independent_implementation() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({"object": {"ref": "R-1", "title": "Ünïcode \"quoted\""}}))]));
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rotated = "whsec_dGhpcyBpcyBhIHNlY29uZCBrZXkgb2YgMzJieXQ=";
    let connection = json!({"url": rx.url("/hook"), "signing_secret": format!("{secret} {rotated}")});
    run.run(&run.config(fast_retry(), webhook(connection, json!({"payload": PAYLOAD})))).await;
    let s = &rx.seen()[0];
    let id = s.header("webhook-id").unwrap();
    let ts = s.header("webhook-timestamp").unwrap();
    let sig = s.header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body");
    std::fs::write(&body_path, &s.body).unwrap();
    // Standard Webhooks verification, written from the specification in Python.
    let script = r#"
import base64, hashlib, hmac, sys
secret, msg_id, ts, sigs, body_path = sys.argv[1:]
key = base64.b64decode(secret.split('_', 1)[1])
body = open(body_path, 'rb').read()
expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
ok = any(s.split(',', 1)[1] == expected for s in sigs.split(' ') if s.startswith('v1,'))
print('valid' if ok else 'invalid')
"#;
    for key in [secret, rotated] {
        let out = std::process::Command::new("python3")
            .args(["-c", script, key, id, ts, sig, body_path.to_str().unwrap()])
            .output()
            .expect("python3 runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid", "{}", String::from_utf8_lossy(&out.stderr));
    }
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts.parse::<i64>().unwrap()).abs() < 60);
}

#[tokio::test]
async fn a_request_over_max_request_bytes_is_refused() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    // Within the file source's 1 MiB line limit, over a 512 KiB request limit.
    let big = "x".repeat(900 * 1024);
    run.write_events(&lines(&[event("e1", "1", json!({"object": {"ref": "R-1", "title": big}}))]));
    let mut delivery = fast_retry();
    delivery["max_request_bytes"] = json!("512KiB");
    run.run(&run.config(delivery, hook_on(&rx.url("/hook")))).await;
    assert!(rx.seen().is_empty());
    let r = &run.responses()[0];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["reason"], "too_large");
    assert_eq!(r["attempts"], 0);
}

#[tokio::test]
async fn metadata_and_private_destinations_are_refused() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    let mut delivery = fast_retry();
    delivery["allow_private_networks"] = json!(false);
    let config = run.config(
        delivery,
        json!({
            "connections": {
                "metadata": {"url": "http://169.254.169.254/latest/meta-data/"},
                "local": {"url": rx.url("/")},
                "byname": {"url": format!("http://localhost:{}/", rx.addr.port())},
            },
            "actions": [
                {"name": "metadata", "type": "webhook", "connection": "metadata"},
                {"name": "local", "type": "webhook", "connection": "local"},
                {"name": "byname", "type": "webhook", "connection": "byname"},
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["metadata", "local", "byname"]}],
        }),
    );
    run.run(&config).await;
    assert!(rx.seen().is_empty(), "nothing may reach a loopback receiver");
    let out = run.responses();
    for action in ["metadata", "local", "byname"] {
        let r = out.iter().find(|r| r["action"] == action).unwrap();
        assert_eq!(r["status"], "failed", "{action}");
        assert_eq!(r["error"]["reason"], "destination_refused", "{action}: {r}");
    }
    let md = out.iter().find(|r| r["action"] == "metadata").unwrap();
    assert!(md["error"]["detail"].as_str().unwrap().contains("cloud metadata"), "{md}");
}

#[tokio::test]
async fn malformed_lines_are_dead_lettered_and_good_ones_delivered() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    let good = |i: u32| serde_json::to_vec(&event(&format!("g{i}"), &i.to_string(), json!({}))).unwrap();
    let mut missing_key = event("bad-schema", "9", json!({}));
    missing_key.as_object_mut().unwrap().remove("key");
    let events = vec![
        good(1),
        br#"{"id": "trunc", "time": "2026-11-28T09:00:00Z", "operation": "cre"#.to_vec(),
        good(2),
        b"{'id': 'single', 'operation': 'create'}".to_vec(),
        serde_json::to_vec(&missing_key).unwrap(),
        b"\xff\xfe not utf-8 \xc3\x28".to_vec(),
        b"[1, 2, 3]".to_vec(),
        good(3),
    ];
    run.write_events(&events);
    run.run(&run.config(fast_retry(), hook_on(&rx.url("/hook")))).await;
    let delivered: Vec<String> = rx.seen().iter().map(|s| s.json()["ref"].as_str().unwrap().to_string()).collect();
    assert_eq!(delivered.len(), 3);
    for r in ["R-1", "R-2", "R-3"] {
        assert!(delivered.contains(&r.to_string()));
    }
    let dl = run.dead_letters();
    let by_line: HashMap<u64, &Value> = dl.iter().map(|d| (d["source"]["line"].as_u64().unwrap(), d)).collect();
    assert_eq!(dl.len(), 5, "{dl:#?}");
    assert_eq!(by_line[&2]["reason"], "invalid_json");
    assert_eq!(by_line[&4]["reason"], "invalid_json");
    assert!(by_line[&4]["detail"].as_str().unwrap().contains("single quotes"));
    assert_eq!(by_line[&5]["reason"], "schema_violation");
    assert!(by_line[&5]["detail"].as_str().unwrap().contains("key"));
    assert_eq!(by_line[&6]["reason"], "not_utf8");
    assert_eq!(by_line[&6]["raw_encoding"], "base64");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(by_line[&6]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw, events[5]);
    assert_eq!(by_line[&7]["reason"], "schema_violation");
    assert_eq!(by_line[&2]["raw"].as_str().unwrap().as_bytes(), &events[1][..]);
    assert!(dl.iter().all(|d| d["kind"] == "dead_letter" && d["source"]["type"] == "file"));
}

#[tokio::test]
async fn test_and_disabled_statuses() {
    let live = Receiver::ok().await;
    let test = Receiver::ok().await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    let config = run.config(
        fast_retry(),
        json!({
            "connections": {"live": {"url": live.url("/")}, "test": {"url": test.url("/")}},
            "actions": [
                {"name": "a-test", "type": "webhook", "status": "test", "connection": "live", "test_connection": "test"},
                {"name": "a-test-none", "type": "webhook", "status": "test", "connection": "live"},
                {"name": "a-off", "type": "webhook", "status": "disabled", "connection": "live"},
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["a-test", "a-test-none", "a-off"]}],
        }),
    );
    run.run(&config).await;
    assert!(live.seen().is_empty());
    assert_eq!(test.seen().len(), 1);
    let out = run.responses();
    let by: HashMap<&str, &Value> = out.iter().map(|r| (r["action"].as_str().unwrap(), r)).collect();
    assert_eq!(by["a-test"]["status"], "delivered");
    assert_eq!(by["a-test-none"]["status"], "skipped");
    assert_eq!(by["a-test-none"]["error"]["reason"], "no_test_connection");
    assert_eq!(by["a-off"]["status"], "skipped");
    assert_eq!(by["a-off"]["error"]["reason"], "disabled");
}

#[test]
fn results_match_the_response_schema() {
    let schema: Value = serde_json::from_str(hookbridge::schema::RESPONSE).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let rx = Receiver::start(|n, _| {
            if n == 0 {
                Reply::Status(400, vec![], "no".into())
            } else {
                Reply::Status(200, vec![], "{\"id\": 7}".into())
            }
        })
        .await;
        let run = Run::new();
        let mut evs = lines(&[event("e1", "1", json!({})), event("e2", "2", json!({}))]);
        evs.push(b"not json".to_vec());
        run.write_events(&evs);
        let action = json!({
            "payload": PAYLOAD,
            "callback": {"when": "any_response", "fields": {"remote_id": "response.status"}},
        });
        run.run(&run.config(fast_retry(), webhook(json!({"url": rx.url("/hook")}), action))).await;
        let all: Vec<Value> = run.responses().into_iter().chain(run.dead_letters()).collect();
        assert!(all.len() >= 5, "{all:#?}");
        for m in &all {
            let errors: Vec<String> = validator.iter_errors(m).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{m}\n{errors:#?}");
        }
    });
}

#[tokio::test]
async fn a_cloudevents_traceparent_is_passed_on_as_a_child_span() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    let data = event("e1", "1", json!({}));
    let envelope = json!({
        "specversion": "1.0",
        "id": "e1",
        "source": "https://itop.example.com",
        "type": "itop.object.changed",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "data": data,
    });
    run.write_events(&lines(&[envelope]));
    run.run(&run.config(fast_retry(), hook_on(&rx.url("/hook")))).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    let tp = seen[0].header("traceparent").expect("traceparent passed on");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"), "{tp}");
    assert_ne!(parts[2], "00f067aa0ba902b7", "a new span, child of the caller's");
    assert_eq!(parts[2].len(), 16);
}

#[tokio::test]
async fn a_redirect_is_a_final_failure_that_names_where_it_points() {
    let rx = Receiver::start(|_, _| {
        Reply::Status(301, vec![("location", "https://hooks.example.com/moved?token=s3cr3t".into())], String::new())
    })
    .await;
    let run = one_event_through(&rx.url("/hook")).await;
    assert_eq!(rx.seen().len(), 1, "a redirect is not retried, nor followed");
    let r = &run.responses()[0];
    assert_eq!((r["status"].as_str(), r["error"]["reason"].as_str()), (Some("failed"), Some("http_301")));
    let detail = r["error"]["detail"].as_str().unwrap();
    assert!(detail.contains("https://hooks.example.com/moved"), "{detail}");
    assert!(!detail.contains("s3cr3t"), "the Location is masked like every shown URL: {detail}");
}
