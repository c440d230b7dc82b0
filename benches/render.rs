//! Rendering throughput: a realistic ticket event through trigger matching and request
//! rendering (JSON webhook payload, iTop json_data and a Slack message), against a baseline
//! of parsing the same event, measured in the same run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookbridge::internals::render::{plan, Planned};
use hookbridge::internals::trigger::match_event;
use hookbridge::parse_event;
use hookbridge::Config;

fn bench(c: &mut Criterion) {
    let root = env!("CARGO_MANIFEST_DIR");
    let config = Config::load(std::path::Path::new(&format!("{root}/config/quickstart.yaml"))).unwrap();
    let raw = std::fs::read(format!("{root}/examples/ticket-assigned.json")).unwrap();
    let event = parse_event(&raw, None).unwrap();
    let (matches, _) = match_event(&config.triggers, &event);
    assert!(!matches.is_empty());
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    group
        .bench_function("baseline: parse + validate event", |b| b.iter(|| parse_event(black_box(&raw), None).unwrap()));
    group.bench_function("match triggers", |b| b.iter(|| match_event(&config.triggers, black_box(&event))));
    group.bench_function("render webhook request", |b| {
        let m = matches.iter().find(|m| config.actions[m.action].name == "ticket-webhook").unwrap();
        b.iter(|| match plan(&config, black_box(&event), m) {
            Planned::Send { request, .. } => request.body.len(),
            Planned::Skip(_) => 0,
        })
    });
    group.bench_function("render slack request", |b| {
        let m = matches.iter().find(|m| config.actions[m.action].name == "slack-ops").unwrap();
        b.iter(|| match plan(&config, black_box(&event), m) {
            Planned::Send { request, .. } => request.body.len(),
            Planned::Skip(_) => 0,
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
