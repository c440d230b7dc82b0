//! The per-event and per-delivery steps of the hot path, one by one, on the end-to-end
//! benchmark's own event (~1 KiB) and config (3 triggers, a webhook with 17 placeholders and
//! a Slack notification): parsing with schema validation (against plain JSON parsing),
//! trigger matching, rendering, and building and serializing a delivery result.
//!
//! `cargo bench --bench hot_path`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookbridge::internals::dispatch::{Answer, Dispatcher, InFlight, Job, Outcome, Report};
use hookbridge::internals::publish::Publisher;
use hookbridge::internals::render::{plan, Planned};
use hookbridge::internals::sink::FileSink;
use hookbridge::internals::source::{Ack, Coords, Message, RetryStage};
use hookbridge::internals::trigger::{match_event, Match};
use hookbridge::parse_event;
use hookbridge::Config;
use tokio_util::sync::CancellationToken;

#[allow(dead_code)]
#[path = "e2e/workload.rs"]
mod workload;

/// The benchmark's config; `without_condition` drops the CEL condition of the Slack trigger,
/// to tell the condition's cost from the rest of matching.
fn bench_config(without_condition: bool) -> Arc<Config> {
    let mut yaml = workload::config(
        &workload::Broker::Nats { url: "nats://127.0.0.1:4222" },
        "127.0.0.1:9".parse().expect("address"),
        &workload::Delivery { concurrency: 64, max_in_flight: Some(64) },
        9464,
    );
    if without_condition {
        yaml = yaml.replace("    condition: 'object.priority == \"1\"'\n", "");
        assert!(!yaml.contains("condition:"), "the condition is gone");
    }
    Arc::new(Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")))
}

fn rendered(config: &Config, event: &hookbridge::Event, m: &Match) -> (hookbridge::internals::request::Request, usize) {
    match plan(config, event, m) {
        Planned::Send { request, connection, .. } => (request, connection),
        Planned::Skip(reason) => panic!("the benchmark's actions are sent, not skipped ({reason})"),
    }
}

fn bench(c: &mut Criterion) {
    let config = bench_config(false);
    let plain = bench_config(true);
    let raw = workload::event(42, 42, workload::now_us());
    let event = parse_event(&raw, None).expect("the benchmark event is valid");
    let (matches, errors) = match_event(&config.triggers, &event);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(matches.len(), 2, "two actions match every event");
    let by_action = |name: &str| *matches.iter().find(|m| config.actions[m.action].name == name).expect("matches");
    let (webhook, slack) = (by_action("ticket-webhook"), by_action("slack-ops"));

    let mut group = c.benchmark_group("hot_path");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("parse JSON only (serde_json::Value, baseline)", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&raw)).expect("JSON"))
    });
    group.bench_function("parse + validate event", |b| b.iter(|| parse_event(black_box(&raw), None).expect("valid")));
    group.throughput(Throughput::Elements(1));
    group.bench_function("match 3 triggers (one CEL condition)", |b| {
        b.iter(|| match_event(&config.triggers, black_box(&event)))
    });
    group.bench_function("match 3 triggers (no condition)", |b| {
        b.iter(|| match_event(&plain.triggers, black_box(&event)))
    });
    group.bench_function("render webhook (JSON payload, 17 placeholders)", |b| {
        b.iter(|| rendered(&config, black_box(&event), &webhook).0.body.len())
    });
    group.bench_function("render slack (blocks)", |b| {
        b.iter(|| rendered(&config, black_box(&event), &slack).0.body.len())
    });

    // Result building as the dispatcher does it for a delivered webhook.
    let sink = Arc::new(FileSink::open("/dev/null").expect("/dev/null"));
    let publisher = Publisher::new(sink.clone(), sink, 256 * 1024);
    let dispatcher = Dispatcher::new(config.clone(), publisher, RetryStage::InProcess, CancellationToken::new())
        .expect("a dispatcher");
    let (request, connection) = rendered(&config, &event, &webhook);
    let message = Message {
        payload: raw.clone(),
        headers: Vec::new(),
        coords: Coords::Nats {
            stream: "CHANGES".into(),
            subject: "changes".into(),
            sequence: 42,
            delivered: None,
            retry: None,
        },
        ack: Ack::none(),
        retry: None,
    };
    let job = Job {
        inflight: Arc::new(InFlight::new(event.clone(), message, 1, None)),
        matched: webhook,
        request,
        connection,
        missing: Vec::new(),
        invalid: Vec::new(),
        attempts_before: 0,
        first_attempt_ms: None,
        returning: false,
    };
    let report = Report {
        status: Outcome::Delivered,
        attempts: 1,
        error: None,
        exhausted: false,
        answer: Some(Answer {
            status: 200,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: b"ok".to_vec(),
        }),
        duration: Duration::from_millis(3),
        due_ms: 0,
    };
    let result = dispatcher.result_message(&job, &report);
    group.bench_function("build result (Dispatcher::result_message)", |b| {
        b.iter(|| dispatcher.result_message(black_box(&job), black_box(&report)))
    });
    group.bench_function("serialize result (serde_json::to_vec)", |b| {
        b.iter(|| serde_json::to_vec(black_box(&result)).expect("serializes").len())
    });
    group.bench_function("whole event: parse, match, render both, two results", |b| {
        b.iter(|| {
            let event = parse_event(black_box(&raw), None).expect("valid");
            let (matches, _) = match_event(&config.triggers, &event);
            let mut bytes = 0;
            for m in &matches {
                bytes += rendered(&config, &event, m).0.body.len();
                bytes += serde_json::to_vec(&dispatcher.result_message(&job, &report)).expect("serializes").len();
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
