//! End-to-end benchmark of `hookbridge run`, against the ceiling of the same receiver in the
//! same run. Run it through `scripts/bench.sh` (it installs wrk and builds with the
//! `profiling` profile); `--help` lists the options.
//!
//! For each source (NATS JetStream, Kafka):
//! 1. start the broker (nats-server of our own, or librdkafka's mock cluster in this
//!    process) and preload N events of ~1 KiB over 4 partitions / subject buckets;
//! 2. measure the ceiling: wrk posts hookbridge's own webhook request to the receiver over
//!    `concurrency` connections;
//! 3. run the release `hookbridge run` until all 2 × N deliveries are in (two matching actions
//!    per event, results and dead letters published to the broker, acknowledgements after
//!    the outcomes): deliveries/s, its CPU time and peak RSS from /proc;
//! 4. with the backlog gone, publish events at half that rate for a while: publish-to-receipt
//!    latency (p50, p99);
//! 5. SIGTERM, then check what the guarantees promise: one result per delivery on the
//!    broker, no dead letter, every source message acknowledged / offset committed.
//!
//! Figures go to stdout as a table and to `--out` as JSON.

mod ceiling;
mod kafka;
mod nats;
mod procs;
mod receiver;
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::json;

use ceiling::Ceiling;
use procs::{cpu_seconds, free_port, vm_mib, Proc};
use receiver::{quantile, Receiver, Recorder};
use workload::{now_us, Broker, Delivery};

#[derive(Parser, Debug, Serialize)]
#[command(
    about = "End-to-end benchmark of hookbridge run against the HTTP ceiling of the same receiver",
    args_override_self = true
)]
struct Args {
    /// Passed by `cargo bench`; without it (`cargo test --all-targets` runs bench targets
    /// in test mode) the benchmark does nothing.
    #[arg(long, hide = true)]
    bench: bool,
    /// Events preloaded per source (each causes two deliveries).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// `delivery.concurrency`, and wrk's connection count.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// `max_in_flight` of each connection; default: the concurrency, so the global limit
    /// binds; 0: hookbridge's default share (concurrency / 8 per connection).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Which sources to run.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    source: Which,
    /// Distinct objects the events are spread over (order is kept per object and action).
    #[arg(long, default_value_t = 10_000)]
    objects: u64,
    /// `fetch.wait.max.ms` of hookbridge's Kafka consumers; 0: librdkafka's default (500).
    /// The mock cluster holds a fetch that finds no data for this long even when records
    /// arrive meanwhile (a real broker answers as soon as they do), which would otherwise
    /// dominate the Kafka latency figures; with a backlog every fetch finds data.
    #[arg(long, default_value_t = 10)]
    kafka_fetch_wait_ms: u64,
    /// Partitions of the Kafka topics. The mock cluster answers a fetch with one record batch
    /// per partition, which caps a consumer of 4 partitions near 3,500 records a second here.
    #[arg(long, default_value_t = 16)]
    kafka_partitions: i32,
    /// More librdkafka properties of hookbridge's Kafka clients, `KEY=VALUE`, repeatable
    /// (`source.properties`): to try a setting against the same baseline.
    #[arg(long = "kafka-property", value_parser = key_value)]
    kafka_properties: Vec<(String, String)>,
    /// Seconds of wrk load for the ceiling.
    #[arg(long, default_value_t = 10)]
    ceiling_secs: u64,
    /// Seconds of paced publishing for the latency figures.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Where the JSON figures go; logs and configs go next to it, in e2e-<source>/.
    #[arg(long, default_value = "target/bench/e2e.json")]
    out: PathBuf,
    /// Record a perf profile (`perf record -g`) of hookbridge during the throughput phase,
    /// into this directory (perf-<source>.data).
    #[arg(long)]
    perf: Option<PathBuf>,
    /// The hookbridge binary; default: the one cargo built with this benchmark.
    #[arg(long)]
    hookbridge: Option<PathBuf>,
}

/// `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Which {
    Nats,
    Kafka,
    Both,
}

/// Publishing at a steady rate: how many events are due by now.
#[derive(Clone, Copy)]
pub struct Pace {
    start: Instant,
    rate: f64,
    total: u64,
}

impl Pace {
    /// Events due by now.
    pub fn due(&self) -> u64 {
        ((self.start.elapsed().as_secs_f64() * self.rate) as u64).min(self.total)
    }

    /// Events in all.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A broker of one run.
enum Side {
    Nats(Box<nats::Nats>),
    Kafka(kafka::Kafka),
}

impl Side {
    fn name(&self) -> &'static str {
        match self {
            Side::Nats(_) => "nats",
            Side::Kafka(_) => "kafka",
        }
    }

    fn broker(&self, args: &Args) -> Broker<'_> {
        match self {
            Side::Nats(n) => Broker::Nats { url: &n.url },
            Side::Kafka(k) => {
                let mut properties = args.kafka_properties.clone();
                if args.kafka_fetch_wait_ms > 0 {
                    properties.push(("fetch.wait.max.ms".into(), args.kafka_fetch_wait_ms.to_string()));
                }
                Broker::Kafka { brokers: &k.brokers, properties }
            }
        }
    }

    async fn preload(&self, n: u64) {
        match self {
            Side::Nats(s) => s.preload(n).await,
            Side::Kafka(s) => s.preload(n).await,
        }
    }

    async fn paced(&self, first: u64, pace: Pace) -> u64 {
        match self {
            Side::Nats(s) => s.paced(first, pace).await,
            Side::Kafka(s) => s.paced(first, pace).await,
        }
    }

    async fn results(&self) -> u64 {
        match self {
            Side::Nats(s) => s.results().await,
            Side::Kafka(s) => s.results(),
        }
    }

    async fn dead_letters(&self) -> u64 {
        match self {
            Side::Nats(s) => s.dead_letters().await,
            Side::Kafka(s) => s.dead_letters(),
        }
    }

    async fn unsettled(&self) -> u64 {
        match self {
            Side::Nats(s) => s.unsettled().await,
            Side::Kafka(s) => s.unsettled(),
        }
    }

    /// Stops the broker's own process, if it has one, by its pid.
    fn stop(&mut self) {
        if let Side::Nats(s) = self {
            s.server.stop("TERM", Duration::from_secs(20));
        }
    }

    /// The broker's own process, when it has one (the mock cluster lives in this process).
    fn broker_pid(&self) -> Option<String> {
        match self {
            Side::Nats(s) => Some(s.server.pid_str()),
            Side::Kafka(_) => None,
        }
    }
}

/// Publish-to-receipt latency at a steady rate.
#[derive(Debug, Serialize)]
struct Latency {
    /// Events published per second (half the measured maximum: deliveries/s / 4).
    events_per_s: f64,
    /// Events published.
    events: u64,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Deliveries of those events that had not arrived when measuring stopped.
    missing: usize,
}

/// What the run checked of the guarantees, after SIGTERM.
#[derive(Debug, Serialize)]
struct Checks {
    results: u64,
    results_expected: u64,
    dead_letters: u64,
    /// Source messages not acknowledged / records after the committed offsets.
    unsettled: u64,
    /// Deliveries received more than once.
    duplicates: u64,
    exit_status: Option<i32>,
    passed: bool,
}

/// The figures of one source.
#[derive(Debug, Serialize)]
struct Figures {
    source: &'static str,
    events: u64,
    deliveries: u64,
    concurrency: usize,
    max_in_flight: Option<usize>,
    /// Seconds to preload the events.
    preload_s: f64,
    /// From the start of the process to the first delivery.
    startup_s: f64,
    /// From the first to the last of the 2 × N deliveries.
    drain_s: f64,
    deliveries_per_s: f64,
    ceiling: Ceiling,
    /// Requests of the load generator the receiver handled (checks the ceiling hit it).
    ceiling_requests_received: u64,
    ratio_to_ceiling: f64,
    latency: Option<Latency>,
    /// VmHWM after the backlog, MiB.
    peak_rss_mib: Option<f64>,
    /// VmRSS at 10 %, 20 %, … of the backlog, MiB.
    rss_by_progress_mib: Vec<(u32, f64)>,
    /// hookbridge's utime + stime from its start to the last delivery of the backlog.
    cpu_s: Option<f64>,
    cpu_s_per_10k_deliveries: Option<f64>,
    cpu_us_per_delivery: Option<f64>,
    /// The same span: CPU of nats-server, and of this process (receiver, and for Kafka the
    /// mock cluster).
    broker_cpu_s: Option<f64>,
    harness_cpu_s: Option<f64>,
    /// hookbridge's CPU time over the wall time of the same span: cores it used on average.
    cpu_cores_used: Option<f64>,
    /// Share of the machine's CPU time that was busy over that span, all processes.
    machine_busy_pct: Option<f64>,
    load_average_before: String,
    checks: Checks,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let mem = vm_line("/proc/meminfo", "MemTotal:");
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": model,
        "memory_gib": mem.map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

fn vm_line(file: &str, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

fn self_cpu() -> Option<f64> {
    cpu_seconds("self")
}

fn delta(after: Option<f64>, before: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// One source: broker, preload, ceiling, hookbridge, latency, checks.
async fn run_source(mut side: Side, args: &Args, receiver: &Receiver, dir: &Path) -> Figures {
    let name = side.name();
    let n = args.events;
    let deliveries = 2 * n;
    let recorder: std::sync::Arc<Recorder> = receiver.reset(2 * n as usize);
    let max_in_flight = match args.max_in_flight {
        Some(0) => None,
        Some(m) => Some(m),
        None => Some(args.concurrency),
    };
    let delivery = Delivery { concurrency: args.concurrency, max_in_flight };
    let metrics_port = free_port();
    let yaml = workload::config(&side.broker(args), receiver.addr, &delivery, metrics_port);
    let config_path = dir.join("hookbridge.yaml");
    std::fs::write(&config_path, &yaml).expect("write the config");

    eprintln!("[{name}] preloading {n} events");
    let t = Instant::now();
    side.preload(n).await;
    let preload_s = t.elapsed().as_secs_f64();

    eprintln!("[{name}] ceiling: wrk, {} connections, {} s", args.concurrency, args.ceiling_secs);
    let (script, url, body_bytes) = ceiling::prepare(&yaml, dir);
    let ceiling = tokio::task::block_in_place(|| {
        ceiling::measure(&script, &url, body_bytes, args.concurrency, args.ceiling_secs)
    });

    let ceiling_requests_received = recorder.other();
    let load_average_before = load_average();
    eprintln!("[{name}] hookbridge run: {deliveries} deliveries (load average {load_average_before})");
    let binary = args.hookbridge.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hookbridge")));
    let mut cmd = Command::new(&binary);
    cmd.args(["run", "--config"]).arg(&config_path);
    let harness_before = self_cpu();
    let broker_before = side.broker_pid().and_then(|p| cpu_seconds(&p));
    let machine_before = procs::machine_jiffies();
    let spawned_us = now_us();
    let mut bridge = Proc::spawn("hookbridge", cmd, &dir.join("hookbridge.log"));
    let pid = bridge.pid_str();
    // perf attaches once the first delivery is in: by then every long-lived thread exists
    // (tokio workers, librdkafka's threads), and `perf record -p` follows the threads that
    // exist when it attaches.
    let mut perf: Option<Proc> = None;
    // Throughput: until every delivery of the backlog is in.
    let mut rss_by_progress = Vec::new();
    let mut next_mark = 1u32;
    let (mut last_seen, mut last_change) = (0, Instant::now());
    let progress_every = Duration::from_secs(10);
    let mut next_progress = Instant::now() + progress_every;
    loop {
        let got = recorder.unique();
        while next_mark <= 10 && got * 10 >= deliveries * u64::from(next_mark) {
            if let Some(rss) = vm_mib(&pid, "VmRSS:") {
                rss_by_progress.push((next_mark * 10, round(rss, 1)));
            }
            next_mark += 1;
        }
        if got >= deliveries {
            break;
        }
        if let (Some(perf_dir), None, true) = (&args.perf, &perf, got > 0) {
            std::fs::create_dir_all(perf_dir).expect("perf directory");
            let mut cmd = Command::new("perf");
            cmd.args(["record", "-g", "-F", "999", "-p", &pid, "-o"]).arg(perf_dir.join(format!("perf-{name}.data")));
            perf = Some(Proc::spawn("perf", cmd, &perf_dir.join(format!("perf-{name}.log"))));
        }
        if got != last_seen {
            (last_seen, last_change) = (got, Instant::now());
        }
        if let Some(status) = bridge.exited() {
            panic!("[{name}] hookbridge exited with {status} after {got} deliveries:\n{}", bridge.log_tail(40));
        }
        if last_change.elapsed() > Duration::from_secs(60) {
            panic!(
                "[{name}] no delivery for 60 s, {got} of {deliveries} in; metrics:\n{}\nlog:\n{}",
                metrics(metrics_port).await,
                bridge.log_tail(40)
            );
        }
        if Instant::now() > next_progress {
            eprintln!("[{name}]   {got} of {deliveries}");
            next_progress += progress_every;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_s = cpu_seconds(&pid);
    let wall_s = now_us().saturating_sub(spawned_us) as f64 / 1e6;
    let machine_busy_pct = match (machine_before, procs::machine_jiffies()) {
        (Some((idle0, total0)), Some((idle1, total1))) if total1 > total0 => {
            Some(round(100.0 * (1.0 - (idle1 - idle0) as f64 / (total1 - total0) as f64), 1))
        }
        _ => None,
    };
    let peak_rss_mib = vm_mib(&pid, "VmHWM:");
    let harness_cpu_s = delta(self_cpu(), harness_before);
    let broker_cpu_s = delta(side.broker_pid().and_then(|p| cpu_seconds(&p)), broker_before);
    if let Some(perf) = perf.as_mut() {
        perf.stop("INT", Duration::from_secs(60));
    }
    let (first_us, last_us) = recorder.first_last_us();
    let drain_s = (last_us - first_us) as f64 / 1e6;
    let deliveries_per_s = deliveries as f64 / drain_s.max(1e-6);
    let startup_s = first_us.saturating_sub(spawned_us) as f64 / 1e6;

    // Latency: publish at half the measured rate (in events: deliveries/s / 2 / 2), the
    // backlog gone.
    let events_per_s = deliveries_per_s / 4.0;
    let paced_total = ((events_per_s * args.latency_secs as f64) as u64).min(n);
    let latency = if paced_total > 0 {
        eprintln!("[{name}] latency: {paced_total} events at {events_per_s:.0}/s");
        let pace = Pace { start: Instant::now(), rate: events_per_s, total: paced_total };
        let limit = Duration::from_secs(2 * args.latency_secs + 60);
        let sent = tokio::time::timeout(limit, side.paced(n, pace))
            .await
            .unwrap_or_else(|_| panic!("[{name}] paced publishing did not finish within {limit:?}"));
        let target = 2 * (n + sent);
        let deadline = Instant::now() + Duration::from_secs(60);
        while recorder.unique() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (sorted, missing) = recorder.latencies(n as usize, (n + sent) as usize);
        let ms = |q: f64| quantile(&sorted, q).map(|us| round(f64::from(us) / 1000.0, 2));
        Some(Latency {
            events_per_s: round(events_per_s, 1),
            events: sent,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
            missing,
        })
    } else {
        None
    };
    let paced = latency.as_ref().map_or(0, |l| l.events);

    // Shutdown and the guarantees.
    let exit = bridge.stop("TERM", Duration::from_secs(45));
    let results_expected = 2 * (n + paced);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut results = side.results().await;
    while results < results_expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        results = side.results().await;
    }
    let dead_letters = side.dead_letters().await;
    let unsettled = side.unsettled().await;
    let duplicates = recorder.total().saturating_sub(recorder.unique());
    let exit_status = exit.and_then(|s| s.code());
    let passed = results == results_expected && dead_letters == 0 && unsettled == 0 && exit_status == Some(0);
    if !passed {
        eprintln!("[{name}] CHECKS FAILED; hookbridge log:\n{}", bridge.log_tail(30));
    }
    side.stop();
    let per_delivery = |cpu: f64| cpu / deliveries as f64;
    Figures {
        source: name,
        events: n,
        deliveries,
        concurrency: args.concurrency,
        max_in_flight,
        preload_s: round(preload_s, 2),
        startup_s: round(startup_s, 2),
        drain_s: round(drain_s, 2),
        deliveries_per_s: round(deliveries_per_s, 0),
        ratio_to_ceiling: round(deliveries_per_s / ceiling.requests_per_s, 3),
        ceiling,
        ceiling_requests_received,
        latency,
        peak_rss_mib: peak_rss_mib.map(|m| round(m, 1)),
        rss_by_progress_mib: rss_by_progress,
        cpu_s: cpu_s.map(|c| round(c, 2)),
        cpu_s_per_10k_deliveries: cpu_s.map(|c| round(per_delivery(c) * 10_000.0, 3)),
        cpu_us_per_delivery: cpu_s.map(|c| round(per_delivery(c) * 1e6, 1)),
        broker_cpu_s: broker_cpu_s.map(|c| round(c, 2)),
        harness_cpu_s: harness_cpu_s.map(|c| round(c, 2)),
        cpu_cores_used: cpu_s.map(|c| round(c / wall_s.max(1e-6), 2)),
        machine_busy_pct,
        load_average_before,
        checks: Checks { results, results_expected, dead_letters, unsettled, duplicates, exit_status, passed },
    }
}

/// hookbridge's own metrics (without the help lines), for a run that stalls.
async fn metrics(port: u16) -> String {
    let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return format!("unavailable: {e}"),
    };
    text.lines().filter(|l| l.starts_with("hookbridge_") && !l.contains("_bucket{")).collect::<Vec<_>>().join("\n")
}

fn opt(v: Option<f64>, places: usize) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.places$}"))
}

fn print_table(runs: &[Figures]) {
    println!();
    println!(
        "{:<6} {:>12} {:>12} {:>6} {:>8} {:>8} {:>10} {:>9} {:>11} {:>9} {:>6} {:>7}",
        "source",
        "deliveries/s",
        "ceiling r/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "at ev/s",
        "peak MiB",
        "CPU s/10k",
        "CPU µs/d",
        "cores",
        "checks"
    );
    for f in runs {
        let l = f.latency.as_ref();
        println!(
            "{:<6} {:>12.0} {:>12.0} {:>6.3} {:>8} {:>8} {:>10} {:>9} {:>11} {:>9} {:>6} {:>7}",
            f.source,
            f.deliveries_per_s,
            f.ceiling.requests_per_s,
            f.ratio_to_ceiling,
            opt(l.and_then(|l| l.p50_ms), 1),
            opt(l.and_then(|l| l.p99_ms), 1),
            opt(l.map(|l| l.events_per_s), 0),
            opt(f.peak_rss_mib, 1),
            opt(f.cpu_s_per_10k_deliveries, 2),
            opt(f.cpu_us_per_delivery, 0),
            opt(f.cpu_cores_used, 2),
            if f.checks.passed { "ok" } else { "FAILED" },
        );
    }
    println!();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if !args.bench {
        eprintln!(
            "e2e: a benchmark, run by scripts/bench.sh (cargo bench --bench e2e); nothing to do under cargo test"
        );
        return;
    }
    assert!(args.events > 0 && args.concurrency > 0, "--events and --concurrency must be positive");
    let base = args.out.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&base).expect("output directory");
    let receiver = Receiver::start().await;
    let started = chrono::Utc::now();
    eprintln!(
        "hookbridge end to end: {} events per source, 2 deliveries each, concurrency {}, receiver at {}",
        args.events, args.concurrency, receiver.addr
    );
    let mut runs = Vec::new();
    let sources: &[Which] = match args.source {
        Which::Both => &[Which::Nats, Which::Kafka],
        Which::Nats => &[Which::Nats],
        Which::Kafka => &[Which::Kafka],
    };
    for which in sources {
        let store = tempfile::tempdir().expect("temporary directory");
        let side = match which {
            Which::Nats => Side::Nats(Box::new(nats::Nats::start(store.path(), args.objects).await)),
            _ => Side::Kafka(kafka::Kafka::start(args.objects, args.kafka_partitions)),
        };
        let dir = base.join(format!("e2e-{}", side.name()));
        std::fs::create_dir_all(&dir).expect("run directory");
        let figures = run_source(side, &args, &receiver, &dir).await;
        runs.push(figures);
    }
    print_table(&runs);
    let report = json!({
        "date": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "machine": machine(),
        "event_bytes": workload::event(args.events, args.objects - 1, now_us()).len(),
        "args": args,
        "runs": runs,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report).expect("serialize") + "\n").expect("write JSON");
    println!("figures written to {}", args.out.display());
    if runs.iter().any(|f| !f.checks.passed) {
        eprintln!("some guarantee checks failed: see the JSON and the logs in {}", base.display());
        std::process::exit(1);
    }
}
