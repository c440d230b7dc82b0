//! What a platform team relies on, on the binary: every documented metric family on the
//! first scrape of a fresh process, `/metrics` and `/healthz` answering while a SIGTERM
//! drain is under way, a broker unreachable at start meaning "not ready" rather than a
//! crash loop, and dashboards and alerts that only use metrics hookbridge exports.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{event, http_get, wait_status, Output, Receiver, Reply};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A running `hookbridge run` and its directory; killed on drop if still running.
struct Bridge {
    dir: tempfile::TempDir,
    child: Child,
    stderr: Output,
    base: String,
}

impl Bridge {
    /// Starts the binary on [`file_config`] in a new directory, delivering to `receiver`, and
    /// waits for the address of its ops server (`server.listen` on port 0: the child picks it).
    async fn start(receiver: &str) -> Bridge {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, file_config(dir.path(), receiver).to_string()).unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap(), "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Output::collect(child.stderr.take().unwrap());
        let base = stderr.ops_base(Duration::from_secs(20)).await;
        Bridge { dir, child, stderr, base }
    }

    fn append(&self, events: &[serde_json::Value]) {
        let mut f = std::fs::OpenOptions::new().append(true).open(self.dir.path().join("events.jsonl")).unwrap();
        for e in events {
            writeln!(f, "{e}").unwrap();
        }
    }

    fn sigterm(&self) {
        common::sigterm(&self.child);
    }

    /// Waits for the exit; returns the status and stderr.
    async fn wait(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let status = common::exit_within(&mut self.child, within).await;
        let status = status.unwrap_or_else(|| panic!("hookbridge did not exit within {within:?}"));
        (status, self.stderr.finish())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Families the README's metrics table documents (first column of its rows).
fn documented_families() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let start = readme.find("### Metrics").expect("README has a Metrics section");
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| metric"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect()
}

/// Families present in an exposition (histograms by their base name).
fn exported_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

fn promtool_check_metrics(text: &str, dir: &Path) {
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is installed by scripts/test-deps.sh");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A followed events file and the outputs in `dir`, the ops server on a port of its
/// choosing, and one webhook action to `receiver` with a callback.
fn file_config(dir: &Path, receiver: &str) -> Value {
    json!({
        "source": {"type": "file", "path": dir.join("events.jsonl"), "follow": true},
        "responses": {"type": "file", "path": dir.join("responses.jsonl")},
        "dead_letter": {"type": "file", "path": dir.join("dead-letter.jsonl")},
        "server": {"listen": "127.0.0.1:0"},
        "delivery": {"allow_private_networks": true, "timeout": "60s", "shutdown_timeout": "4s"},
        "connections": {"api": {"url": receiver}},
        "actions": [{
            "name": "api", "type": "webhook", "connection": "api", "payload": r#"{"ref": "$this->ref$"}"#,
            "callback": {"when": "success", "fields": {"seen": "response.status"}},
        }],
        "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["api"]}],
    })
}

/// The first scrape of a process that has read nothing finds every documented family but
/// the Kafka lag (a series per owned partition, which appears at assignment and is checked
/// by the Kafka tests), with the labelled series at zero, and passes `promtool check metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_process_exports_every_documented_family() {
    let rx = Receiver::ok().await;
    let bridge = Bridge::start(&rx.url("/hook")).await;
    wait_status(&format!("{}/readyz", bridge.base), 200, Duration::from_secs(20)).await;
    let (status, text) = http_get(&format!("{}/metrics", bridge.base)).await.unwrap();
    assert_eq!(status, 200);
    let documented = documented_families();
    assert!(documented.len() >= 20, "README metrics table: {documented:?}");
    let exported = exported_families(&text);
    // Source-specific: exported by a Kafka or a NATS source only.
    let elsewhere: BTreeSet<String> =
        ["hookbridge_source_lag", "hookbridge_nats_consumer_pending"].into_iter().map(String::from).collect();
    let missing: Vec<&String> = documented.difference(&exported).filter(|f| !elsewhere.contains(*f)).collect();
    assert!(missing.is_empty(), "documented but not exported at start: {missing:?}\n{text}");
    for f in &elsewhere {
        assert!(documented.contains(f), "{f} is documented");
    }
    // The README names two process_* families and points to the others.
    let undocumented: Vec<&String> = exported.difference(&documented).filter(|f| !f.starts_with("process_")).collect();
    assert!(undocumented.is_empty(), "exported but not documented in the README: {undocumented:?}");
    for line in [
        "hookbridge_deliveries_total{action=\"api\",outcome=\"failed\",type=\"webhook\"} 0",
        "hookbridge_attempts_total{action=\"api\",status_class=\"5xx\"} 0",
        "hookbridge_publish_errors_total{kind=\"response\"} 0",
        "hookbridge_dead_letters_total{reason=\"http_4xx\"} 0",
        "hookbridge_events_received_total{source=\"file\"} 0",
        "hookbridge_callback_updates_total{action=\"api\"} 0",
        "hookbridge_ready 1",
        "hookbridge_action_info{action=\"api\",connection=\"api\",status=\"enabled\",type=\"webhook\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let version = format!("version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(text.lines().any(|l| l.starts_with("hookbridge_build_info{") && l.ends_with(&version)), "{text}");
    promtool_check_metrics(&text, bridge.dir.path());
}

/// SIGTERM with deliveries hanging on a slow receiver: during the drain `/readyz` answers
/// 503 while `/metrics` (with the in-flight requests) and `/healthz` keep answering 200;
/// the process exits 0 at the drain deadline.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_healthz_answer_during_the_drain() {
    let rx = Receiver::start(|_, _| Reply::Hang).await;
    let bridge = Bridge::start(&rx.url("/hook")).await;
    wait_status(&format!("{}/readyz", bridge.base), 200, Duration::from_secs(20)).await;
    bridge.append(&(0..3).map(|i| event(&format!("e{i}"), &i.to_string(), json!({}))).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.seen().len() < 3 {
        assert!(Instant::now() < deadline, "the receiver got {} requests", rx.seen().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    bridge.sigterm();
    wait_status(&format!("{}/readyz", bridge.base), 503, Duration::from_secs(2)).await;
    // Scrape across the drain (shutdown_timeout 4s), not just at its start.
    let mut scrapes = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let (status, text) =
            http_get(&format!("{}/metrics", bridge.base)).await.expect("/metrics answers during the drain");
        assert_eq!(status, 200);
        assert!(text.lines().any(|l| l == "hookbridge_deliveries_in_flight 3"), "{text}");
        assert!(text.lines().any(|l| l == "hookbridge_ready 0"), "{text}");
        let (status, _) =
            http_get(&format!("{}/healthz", bridge.base)).await.expect("/healthz answers during the drain");
        assert_eq!(status, 200);
        scrapes += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(scrapes >= 5, "{scrapes} scrapes");
    let (status, logs) = bridge.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}\n{logs}");
    assert!(started.elapsed() >= Duration::from_secs(4), "exited before the drain deadline");
}

/// Metric names used by an expression: identifiers starting with `hookbridge_` or
/// `process_`, histogram suffixes removed. Recording rules (`hookbridge:…`) are not metrics.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let rest = &expr[i..];
        if word_start && (rest.starts_with("hookbridge_") || rest.starts_with("process_")) {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..len];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                .unwrap_or(name);
            names.insert(base.to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr` (and templating query) in a Grafana dashboard.
fn dashboard_exprs(path: &Path) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    walk(&v, &mut out);
    out
}

fn rule_exprs(path: &Path) -> Vec<String> {
    let v: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect()
}

/// Every metric the dashboard and the alert rules query is a family hookbridge declares
/// (src/metrics.rs), and the chart ships the same dashboard and rules as monitoring/.
#[test]
fn dashboards_and_rules_use_only_exported_metrics() {
    let declared: BTreeSet<String> = hookbridge::metrics().family_names().iter().cloned().collect();
    assert!(declared.contains("process_resident_memory_bytes"), "{declared:?}");
    let root = PathBuf::from(ROOT);
    let dashboard = root.join("monitoring/grafana/hookbridge.json");
    let rules = root.join("monitoring/prometheus/hookbridge.rules.yaml");
    let mut used = BTreeSet::new();
    let exprs: Vec<(String, String)> = dashboard_exprs(&dashboard)
        .into_iter()
        .map(|e| ("dashboard".to_string(), e))
        .chain(rule_exprs(&rules).into_iter().map(|e| ("rules".to_string(), e)))
        .collect();
    assert!(exprs.len() > 20, "{} expressions", exprs.len());
    for (file, expr) in &exprs {
        for name in metric_names(expr) {
            assert!(declared.contains(&name), "{file}: {name} is not a hookbridge metric (in {expr})");
            used.insert(name);
        }
    }
    for family in ["hookbridge_deliveries_total", "hookbridge_delivery_duration_seconds", "hookbridge_source_lag"] {
        assert!(used.contains(family), "{family} is not used");
    }
    for (shipped, source) in [
        ("helm/hookbridge/files/hookbridge-dashboard.json", &dashboard),
        ("helm/hookbridge/files/hookbridge.rules.yaml", &rules),
    ] {
        assert_eq!(
            std::fs::read(root.join(shipped)).unwrap(),
            std::fs::read(source).unwrap(),
            "{shipped} differs from {}: copy it over",
            source.display()
        );
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        "histogram_quantile(0.9, rate(hookbridge_delivery_duration_seconds_bucket[5m])) / hookbridge:source_backlog:sum + process_cpu_seconds_total",
    );
    let want: BTreeSet<String> =
        ["hookbridge_delivery_duration_seconds", "process_cpu_seconds_total"].into_iter().map(String::from).collect();
    assert_eq!(names, want);
}
