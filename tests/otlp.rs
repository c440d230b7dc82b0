//! OpenTelemetry export (feature `otlp`): each delivery becomes one span on an OTLP/HTTP
//! collector, with the ids of the `traceparent` the request carried and the event's span as
//! its parent. Run with `cargo test --features otlp --test otlp`.
#![cfg(feature = "otlp")]

mod common;

use common::{event, lines, Receiver, Reply, Run};
use hookbridge::telemetry::{Export, Telemetry};
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_is_a_span_under_the_events_trace_with_the_ids_the_receiver_saw() {
    let collector = Receiver::start(|_, _| Reply::Status(200, vec![], String::new())).await;
    // The second delivery fails for good: its span carries the error.
    let hooks = Receiver::start(|n, _| Reply::Status(if n == 0 { 200 } else { 404 }, vec![], "x".into())).await;
    let telemetry =
        Telemetry::start(Export::Otlp { traces_endpoint: Some(collector.url("/v1/traces")) }).expect("exporter");

    let run = Run::new();
    let traced = |id: &str, key: &str| {
        json!({
            "specversion": "1.0", "id": id, "source": "https://itop.example.com", "type": "itop.object.changed",
            "traceparent": format!("00-{TRACE_ID}-{CALLER_SPAN}-01"),
            "data": event(id, key, json!({})),
        })
    };
    run.write_events(&lines(&[traced("e1", "1"), traced("e2", "2")]));
    let config = run.config(
        json!({"retry": {"max_attempts": 1}}),
        json!({
            "connections": {"hook": {"url": hooks.url("/hook")}},
            "actions": [{"name": "notify", "type": "webhook", "connection": "hook", "payload": r#"{"ref": "$this->ref$"}"#}],
            "triggers": [{"name": "created", "on": "create", "class": "UserRequest", "actions": ["notify"]}],
        }),
    );
    run.run(&config).await;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();

    let sent: Vec<String> = hooks
        .seen()
        .iter()
        .map(|s| s.header("traceparent").expect("traceparent sent").split('-').nth(2).unwrap().to_string())
        .collect();
    assert_eq!(sent.len(), 2);
    let exported: Vec<u8> = collector
        .seen()
        .iter()
        .inspect(|s| assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/v1/traces")))
        .flat_map(|s| s.body.clone())
        .collect();
    // OTLP/HTTP protobuf carries ids as raw bytes and strings as UTF-8: look for them.
    for span in &sent {
        assert!(contains(&exported, &hex(span)), "no span with the id the receiver saw ({span})");
    }
    assert!(contains(&exported, &hex(TRACE_ID)), "the event's trace id");
    assert!(contains(&exported, &hex(CALLER_SPAN)), "the caller's span as parent");
    for text in ["deliver notify", "hookbridge.outcome", "delivered", "failed", "http_404", "hookbridge"] {
        assert!(contains(&exported, text.as_bytes()), "{text} not exported");
    }
}
