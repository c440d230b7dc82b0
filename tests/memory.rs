//! Memory per event is bounded: a 1 MB event with 50,000 mentions and 5,000 transitions runs
//! through the binary on a file source (mention trigger, Slack action with every transition
//! as a button, and a webhook), and the process's peak resident memory (VmHWM in
//! /proc/<pid>/status) stays under 128 MiB. Only `delivery.max_mentions` mentions are
//! notified; the rest are one skipped result per action.
//!
//! `HOOKBRIDGE_BIN` names the binary to measure (scripts/test.sh passes the release build);
//! without it, the one cargo built for this test run.

mod common;

use std::time::{Duration, Instant};

use common::{event, lines, Receiver, Run};
use serde_json::{json, Value};

const LIMIT_KIB: u64 = 128 * 1024;

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_big_event_with_many_mentions_stays_under_128_mib() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    let mentions: Vec<Value> = (0..50_000).map(|i| json!({"id": i})).collect();
    let transitions: Vec<Value> = (0..5_000).map(|i| json!({"code": format!("e{i}")})).collect();
    let mut big = event("e-big", "1", json!({"operation": "update", "mentions": mentions, "transitions": transitions}));
    // A long description makes up the rest of the megabyte.
    let size = lines(std::slice::from_ref(&big))[0].len();
    big["object"]["description"] = json!("d".repeat(1_010_000usize.saturating_sub(size)));
    let line = lines(&[big]).remove(0);
    assert!((1_000_000..1_048_576).contains(&line.len()), "{} bytes", line.len());
    run.write_events(&[line]);
    let config = run.config(
        json!({}),
        json!({
            "connections": {"slack": {"url": rx.url("/services/T0/B0/X")}, "api": {"url": rx.url("/api")}},
            "actions": [
                {"name": "slack", "type": "slack", "connection": "slack", "other_actions": "yes",
                 "message": "$mentioned->id$ was mentioned in $this->ref$: $this->description$"},
                {"name": "api", "type": "webhook", "connection": "api",
                 "payload": r#"{"who": "$mentioned->id$", "ref": "$this->ref$"}"#},
            ],
            "triggers": [{"name": "mentioned", "on": "mention", "class": "Ticket", "actions": ["slack", "api"]}],
        }),
    );
    let config_path = run.write_config(&config);
    let bin = std::env::var("HOOKBRIDGE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookbridge").to_string());
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--config", &config_path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        // VmHWM is the process's own high-water mark: sampling only has to catch it before exit.
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the bridge did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
    assert!(status.success(), "{stderr}");
    assert!(peak > 0, "VmHWM was never read");
    assert!(peak < LIMIT_KIB, "peak RSS {peak} KiB ({bin}) is over {LIMIT_KIB} KiB");
    let results = run.responses();
    for action in ["slack", "api"] {
        let of: Vec<&Value> = results.iter().filter(|r| r["action"] == action).collect();
        let delivered = of.iter().filter(|r| r["status"] == "delivered").count();
        let skipped: Vec<&&Value> = of.iter().filter(|r| r["status"] == "skipped").collect();
        assert_eq!(delivered, 100, "{action}");
        assert_eq!(skipped.len(), 1, "{action}");
        assert_eq!(skipped[0]["error"]["reason"], "too_many_mentions");
    }
    assert_eq!(rx.seen().len(), 200);
    let slack = rx.seen().into_iter().find(|s| s.path.starts_with("/services/")).unwrap().json();
    let buttons: usize = slack["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .map(|b| b["elements"].as_array().unwrap().len())
        .sum();
    assert_eq!(buttons, 100, "transition buttons are capped");
    assert!(stderr.contains("mentions beyond max_mentions"), "{stderr}");
    eprintln!("peak RSS: {peak} KiB");
}

#[test]
fn a_line_over_max_event_bytes_is_a_dead_letter() {
    let run = Run::new();
    let big = event("e-huge", "1", json!({"object": {"ref": "R-1", "title": "x".repeat(2_000_000)}}));
    let small = event("e-small", "2", json!({}));
    run.write_events(&lines(&[big, small]));
    let config = run.files_config(
        json!({"dry_run": true}),
        json!({
            "connections": {"c": {"url": "https://example.com/x"}},
            "actions": [{"name": "a", "type": "webhook", "connection": "c", "payload": "{}"}],
            "triggers": [{"name": "t", "on": "create", "class": "Ticket", "actions": ["a"]}],
        }),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["run", "--config", &run.write_config(&config)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dead = run.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["source"]["line"], 1);
    assert_eq!(dead[0]["source"]["truncated_at"], 1_048_576);
    assert!(dead[0]["source"]["line_bytes"].as_u64().unwrap() > 2_000_000);
    // The next line is read as usual.
    let results = run.responses();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["event_id"], "e-small");
}
