//! The ceiling: the same receiver driven by wrk with the request hookbridge sends for the
//! webhook action (same URL, headers and body, rendered by hookbridge's own code) over as
//! many connections as `delivery.concurrency`.

use std::path::Path;
use std::process::Command;

use hookbridge::parse_event;
use hookbridge::render_event;
use hookbridge::Config;
use serde::Serialize;

use crate::procs::find_binary;
use crate::workload::{event, now_us, CEILING_SEQ};

/// What wrk measured.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Requests per second over the run.
    pub requests_per_s: f64,
    /// wrk's latency percentiles, milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Connections and threads.
    pub connections: usize,
    pub threads: usize,
    /// Seconds of load.
    pub seconds: u64,
    /// Bytes of the body posted.
    pub body_bytes: usize,
}

/// Writes wrk's Lua script (and the body it posts) into `dir`; returns the script and the URL.
pub fn prepare(yaml: &str, dir: &Path) -> (std::path::PathBuf, String, usize) {
    let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("the benchmark config is valid: {e}\n{yaml}"));
    let raw = event(CEILING_SEQ, 1, now_us());
    let parsed = parse_event(&raw, None).expect("the benchmark event is valid");
    let out = render_event(&config, &parsed, Some("ticket-webhook"));
    let request = out.matched.first().and_then(|m| m.request.as_ref()).expect("the webhook action matches the event");
    let body_path = dir.join("ceiling-body.json");
    std::fs::write(&body_path, &request.body).expect("write the body");
    let mut lua = format!("wrk.method = {:?}\n", request.method);
    for (name, value) in &request.headers {
        let value = value.as_str().unwrap_or_default();
        if name != "host" && name != "content-length" {
            lua.push_str(&format!("wrk.headers[ [==[{name}]==] ] = [==[{value}]==]\n"));
        }
    }
    lua.push_str(&format!(
        "local f = assert(io.open([==[{}]==], \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()\n",
        body_path.display()
    ));
    let script = dir.join("ceiling.lua");
    std::fs::write(&script, lua).expect("write the script");
    (script, request.url.clone(), request.body.len())
}

/// Runs wrk for `seconds` against `url` with `connections` connections.
pub fn measure(script: &Path, url: &str, body_bytes: usize, connections: usize, seconds: u64) -> Ceiling {
    let wrk =
        find_binary("wrk", &[]).expect("wrk not found: scripts/bench.sh installs it (Debian: apt-get install wrk)");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(connections).max(1);
    let out = Command::new(wrk)
        .args(["--latency", "-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("Non-2xx"), "the receiver refused wrk's requests:\n{text}");
    let requests_per_s = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    let percentile = |p: &str| {
        text.lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(p)).then(|| parts.next().and_then(duration_ms)).flatten()
        })
    };
    Ceiling {
        requests_per_s,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
        connections,
        threads,
        seconds,
        body_bytes,
    }
}

/// wrk's durations (`812.00us`, `1.20ms`, `1.02s`) in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    match unit {
        "us" => Some(n / 1000.0),
        "ms" => Some(n),
        "s" => Some(n * 1000.0),
        "m" => Some(n * 60_000.0),
        _ => None,
    }
}
