//! Order and duplicates under a chaos receiver: it answers 30 % of requests with 500, 5 %
//! with 429 and `Retry-After: 1`, and leaves 2 % hanging past the timeout, while replicas
//! are killed with SIGKILL and started again, two of them for the last part. Asserted:
//! nothing is lost (every event delivered or dead-lettered), no event is both delivered and
//! dead-lettered for its action, and after SIGTERM the offsets are committed to the end.
//! Printed: duplicates, order violations of first deliveries (across crashes, and within a
//! replica), and retries sooner than a `Retry-After` asked.
//!
//! The short run is part of the suite; the full one (20,000 events over 200 objects, kills
//! at 25, 50 and 75 %) is opt-in:
//! `cargo test --test kafka chaos_soak_full -- --ignored --nocapture`.
//! Both also assert that the first deliveries of an object come in order within a replica.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bridge::{webhook_body_from, Process, Setup};
use crate::broker::{Broker, Reader};
use crate::common::{Receiver, Reply, Seen};
use crate::ticket;

/// Sixteen, not four: the mock cluster keeps at most 5 MiB or 100,000 records per partition
/// (it deletes older records, as retention would), and the retry records of the full run
/// pass that on four or eight retry partitions. The run checks that nothing was deleted.
const PARTITIONS: i32 = 16;

struct Plan {
    objects: i64,
    per_object: i64,
    /// Shares of the events with an outcome at which the running replicas are killed; after
    /// the last kill, two replicas start together.
    kills: &'static [usize],
    /// How long the whole run may take.
    limit: Duration,
}

/// How long before a SIGKILL a delivery counts as made in the crash window: the commit
/// interval, plus what is in flight, plus what the receiver saw before the replica's kill.
const CRASH_WINDOW: Duration = Duration::from_secs(2);

/// What the run saw.
struct Report {
    total: usize,
    delivered: usize,
    dead_lettered: usize,
    /// Delivered in the moments before a SIGKILL, attempted again after it, and dead-lettered.
    delivered_then_dead_lettered_across_a_crash: usize,
    duplicates: usize,
    /// First deliveries of an object after a later event of it, across replicas and crashes.
    order_violations: usize,
    /// The same, counted within the replica that made both deliveries.
    order_violations_within_a_replica: usize,
    /// Requests sooner than 0.9 s after a 429 with `Retry-After: 1` for the same event.
    early_after_429: usize,
    /// Records written to the retry topic in all.
    retry_records: i64,
    /// Of those, records of a delivery written again with no attempt since its previous
    /// record: a follower that came back before its lane's head was done and was parked
    /// once more.
    retry_records_without_attempt: usize,
    /// How often the replicas logged what explains a late or out-of-order delivery.
    telling_logs: Vec<(&'static str, usize)>,
    /// The first order violations within a replica, with when they happened and when the
    /// replicas were started and killed: what to look for in the logs.
    violations_seen: Vec<String>,
    /// The replicas' logs, kept when the run saw an order violation within a replica.
    logs_kept: Option<std::path::PathBuf>,
    seconds: f64,
}

/// The chaos receiver: 30 % 500, 5 % 429 with `Retry-After: 1`, 2 % hang, else 200.
async fn chaos_receiver() -> Receiver {
    Receiver::scripted(Duration::from_millis(2), |_, _, _| {
        let r: f64 = rand::random();
        if r < 0.30 {
            Reply::status(500)
        } else if r < 0.35 {
            Reply::too_many(1)
        } else if r < 0.37 {
            Reply::Hang
        } else {
            Reply::ok()
        }
    })
    .await
}

fn replica(broker: &Broker, dir: &Path, name: &str, url: &str) -> Process {
    let config = Setup::new(&broker.addr, "chaos", json!({"concurrency": 64, "timeout": "1s", "quick_attempts": 2, "retry": {"max_attempts": 8, "initial": "300ms", "max": "3s", "multiplier": 2, "jitter": 0.2}}), webhook_body_from(url, name))
    .config();
    Process::start(name, dir, &config)
}

/// Dead letters so far: (event id, action).
fn dead_letters(reader: &mut Reader) -> HashSet<(String, String)> {
    reader.drain();
    reader
        .records
        .iter()
        .map(|r| r.json())
        .map(|v| {
            (
                v["event_id"].as_str().unwrap_or_default().to_string(),
                v["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Events delivered (answered 2xx), as event ids `e-{object}-{seq}`.
fn delivered_ids(hits: &[Seen]) -> HashSet<String> {
    hits.iter().filter(|h| h.delivered()).map(|h| format!("e-{}-{}", &h.key[2..], h.seq)).collect()
}

async fn run(plan: Plan) -> Report {
    let total = (plan.objects * plan.per_object) as usize;
    let broker = Broker::start();
    broker.create_topics(&["changes", "changes.retry"], PARTITIONS);
    broker.create_topics(&["responses", "dead-letter"], 2);
    let rx = chaos_receiver().await;
    let mut records = Vec::new();
    for seq in 0..plan.per_object {
        for obj in 0..plan.objects {
            let value =
                ticket(&format!("e-{obj}-{seq}"), &obj.to_string(), json!({"ref": format!("R-{obj}"), "seq": seq}));
            records.push((obj.to_string(), value));
        }
    }
    broker.produce_many("changes", &records).await;
    let dir = tempfile::tempdir().unwrap();

    let mut dead = broker.reader("dead-letter");
    let started = Instant::now();
    let mut generation = 0;
    let mut running = vec![replica(&broker, dir.path(), "r0", &rx.url("/hook"))];
    // When each replica was killed.
    let mut killed: HashMap<String, Instant> = HashMap::new();
    // Events with an outcome so far: delivered or dead-lettered.
    let with_outcome = |dead: &mut Reader| {
        let mut ids = delivered_ids(&rx.seen());
        ids.extend(dead_letters(dead).into_iter().map(|(id, _)| id));
        ids
    };
    let outcomes = |dead: &mut Reader| with_outcome(dead).len();
    for (i, share) in plan.kills.iter().enumerate() {
        let target = total * share / 100;
        let deadline = Instant::now() + plan.limit;
        while outcomes(&mut dead) < target {
            assert!(Instant::now() < deadline, "no progress to {share} %: {}", running[0].log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for r in &mut running {
            r.kill();
            killed.insert(r.name.clone(), Instant::now());
        }
        let count = if i + 1 == plan.kills.len() { 2 } else { 1 };
        running = (0..count)
            .map(|_| {
                generation += 1;
                replica(&broker, dir.path(), &format!("r{generation}"), &rx.url("/hook"))
            })
            .collect();
    }
    let deadline = started + plan.limit;
    while outcomes(&mut dead) < total {
        if Instant::now() >= deadline {
            let seen = with_outcome(&mut dead);
            let missing: Vec<String> = (0..plan.objects)
                .flat_map(|o| (0..plan.per_object).map(move |s| format!("e-{o}-{s}")))
                .filter(|id| !seen.contains(id))
                .take(20)
                .collect();
            // Where the missing events wait: their records in the retry topic, against the
            // positions the replicas committed there.
            let retry = broker.read_all("changes.retry").await;
            let text = |r: &crate::broker::Record, h: &str| {
                String::from_utf8_lossy(r.header(h).unwrap_or_default()).into_owned()
            };
            let parked: Vec<String> = retry
                .iter()
                .filter(|r| missing.iter().any(|id| r.json()["id"] == id.as_str()))
                .map(|r| {
                    format!(
                        "{} at {}/{}: not before {} info {}",
                        r.json()["id"],
                        r.partition,
                        r.offset,
                        text(r, "hookbridge-retry-not-before"),
                        text(r, "hookbridge-retry")
                    )
                })
                .collect();
            panic!(
                "{} of {total} events have an outcome after {:?}; missing (first 20): {missing:?}\nretry records of those:\n{}\nretry topic ends {:?}, committed by the replicas {:?}; kept from offsets {:?} (above 0: the mock's size limit deleted records)\n{}",
                seen.len(),
                plan.limit,
                parked.join("\n"),
                broker.end_offsets("changes.retry"),
                broker.committed("chaos.retry", "changes.retry"),
                broker.start_offsets("changes.retry"),
                running.iter().map(|r| r.log_tail()).collect::<Vec<_>>().join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let deleted: i64 = broker.start_offsets("changes.retry").values().sum();
    assert_eq!(deleted, 0, "the mock's size limit deleted retry records: the run cannot tell a loss");
    // Everything has an outcome; what is still in the retry topic or in flight would only be
    // a duplicate. Stop, and check the offsets.
    for r in &running {
        r.terminate();
    }
    for r in &mut running {
        assert!(r.wait(Duration::from_secs(15)).await.success(), "{}", r.log_tail());
    }
    let ends = broker.end_offsets("changes");
    assert_eq!(broker.committed("chaos", "changes"), ends, "committed offsets vs end offsets");

    let hits = rx.seen();
    let delivered = delivered_ids(&hits);
    let letters = dead_letters(&mut dead);
    // An event delivered and also dead-lettered. One case cannot be told apart by anyone:
    // the receiver answered 2xx, and the replica was killed before that outcome was
    // committed; the event is attempted again after the crash and may run out of attempts.
    // Those are counted; any other is a defect.
    let (mut crash_window, mut both) = (0, Vec::new());
    for (id, action) in letters.iter().filter(|(id, action)| action == "hook" && delivered.contains(id)) {
        let last_ok = hits.iter().rfind(|h| h.delivered() && format!("e-{}-{}", &h.key[2..], h.seq) == *id).unwrap();
        match killed.get(&last_ok.replica) {
            Some(at) if *at >= last_ok.at && at.duration_since(last_ok.at) < CRASH_WINDOW => crash_window += 1,
            _ => {
                let letter = dead.records.iter().map(|r| r.json()).find(|v| v["event_id"] == id.as_str()).unwrap();
                let tries: Vec<(String, u16)> = hits
                    .iter()
                    .filter(|h| format!("e-{}-{}", &h.key[2..], h.seq) == *id)
                    .map(|h| (h.replica.clone(), h.status))
                    .collect();
                both.push(format!(
                    "{id}/{action}: requests {tries:?}; dead letter {} {}",
                    letter["detail"], letter["source"]
                ));
            }
        }
    }
    assert!(both.is_empty(), "delivered, then dead-lettered:\n{}", both.join("\n"));
    let all: HashSet<String> = delivered.iter().cloned().chain(letters.iter().map(|(id, _)| id.clone())).collect();
    assert_eq!(all.len(), total, "every event delivered or dead-lettered");

    // First deliveries, in arrival order: per object, a seq after a larger one is out of order.
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    let mut last_global: HashMap<String, i64> = HashMap::new();
    let mut last_in_replica: HashMap<(String, String), i64> = HashMap::new();
    let (mut order_violations, mut within) = (0, 0);
    let mut violations_seen = Vec::new();
    for h in hits.iter().filter(|h| h.delivered()) {
        if !seen.insert((h.key.clone(), h.seq)) {
            continue;
        }
        let last = last_global.entry(h.key.clone()).or_insert(-1);
        if h.seq < *last {
            order_violations += 1;
        }
        *last = (*last).max(h.seq);
        let last = last_in_replica.entry((h.replica.clone(), h.key.clone())).or_insert(-1);
        if h.seq < *last {
            within += 1;
            if violations_seen.len() < 20 {
                violations_seen.push(format!(
                    "{} at {:.3} s: object {} seq {} after seq {}",
                    h.replica,
                    h.at.duration_since(started).as_secs_f64(),
                    h.key,
                    h.seq,
                    *last
                ));
            }
        }
        *last = (*last).max(h.seq);
    }
    if within > 0 {
        let mut timeline: Vec<(f64, String)> =
            killed.iter().map(|(r, at)| (at.duration_since(started).as_secs_f64(), format!("{r} killed"))).collect();
        timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
        violations_seen.extend(timeline.into_iter().map(|(at, what)| format!("{at:.3} s: {what}")));
    }
    let delivered_requests = hits.iter().filter(|h| h.delivered()).count();
    let mut after_429: BTreeMap<(String, i64), Instant> = BTreeMap::new();
    let mut early_after_429 = 0;
    for h in &hits {
        let key = (h.key.clone(), h.seq);
        if let Some(at) = after_429.remove(&key) {
            if h.at.duration_since(at) < Duration::from_millis(900) {
                early_after_429 += 1;
            }
        }
        if h.status == 429 {
            after_429.insert(key, h.at);
        }
    }
    Report {
        total,
        delivered: delivered.len(),
        dead_lettered: letters.len(),
        delivered_then_dead_lettered_across_a_crash: crash_window,
        duplicates: delivered_requests - delivered.len(),
        order_violations,
        order_violations_within_a_replica: within,
        early_after_429,
        retry_records: broker.end_offsets("changes.retry").values().sum(),
        retry_records_without_attempt: rewritten_without_attempt(&broker.read_all("changes.retry").await),
        telling_logs: telling_logs(dir.path()),
        violations_seen,
        logs_kept: (within > 0).then(|| dir.keep()),
        seconds,
    }
}

/// Retry records of a delivery (origin and action) with the same attempt count as its
/// previous record.
fn rewritten_without_attempt(records: &[crate::broker::Record]) -> usize {
    let mut attempts: HashMap<(String, String), u64> = HashMap::new();
    let mut again = 0;
    for r in records {
        let text = |h: &str| String::from_utf8_lossy(r.header(h).unwrap_or_default()).into_owned();
        let info: serde_json::Value = serde_json::from_str(&text("hookbridge-retry")).unwrap_or_default();
        let key = (text("hookbridge-retry-origin"), info["action"].as_str().unwrap_or_default().to_string());
        let n = info["attempts"].as_u64().unwrap_or_default();
        if attempts.insert(key, n) == Some(n) {
            again += 1;
        }
    }
    again
}

/// Log lines of every replica of the run that explain a late or out-of-order delivery.
fn telling_logs(dir: &Path) -> Vec<(&'static str, usize)> {
    let logs: String = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    [
        "deliveries found waiting in the retry partitions taken",
        "retry partitions not scanned to the end in time",
        "a parked delivery did not come back in time",
        "parking a delivery behind an earlier one failed",
    ]
    .into_iter()
    .map(|line| (line, logs.matches(line).count()))
    .collect()
}

fn print(name: &str, r: &Report) {
    eprintln!(
        "kafka chaos soak ({name}): {} events in {:.0} s: {} delivered, {} dead-lettered ({} of them delivered just before a SIGKILL), lost 0; {} duplicates; first deliveries out of order per object: {} in all, {} within a replica; {} retries sooner than Retry-After; {} retry records written ({} of them again with no attempt since the last); replica logs: {:?}",
        r.total, r.seconds, r.delivered, r.dead_lettered, r.delivered_then_dead_lettered_across_a_crash, r.duplicates, r.order_violations, r.order_violations_within_a_replica, r.early_after_429, r.retry_records, r.retry_records_without_attempt, r.telling_logs
    );
    for line in &r.violations_seen {
        eprintln!("  {line}");
    }
    if let Some(dir) = &r.logs_kept {
        eprintln!("  replica logs kept in {}", dir.display());
    }
}

/// The short run: 1,500 events over 50 objects, killed at half, then two replicas; first
/// deliveries of an object must come in order within a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_short() {
    let report = run(Plan { objects: 50, per_object: 30, kills: &[50], limit: Duration::from_secs(150) }).await;
    print("short", &report);
    assert_eq!(report.order_violations_within_a_replica, 0, "first deliveries out of order within a replica");
}

/// The full run: 20,000 events over 200 objects, kills at 25, 50 and 75 %, two replicas for
/// the last quarter. First deliveries of an object must come in order within a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak, several minutes: run with --ignored"]
async fn chaos_soak_full() {
    let report =
        run(Plan { objects: 200, per_object: 100, kills: &[25, 50, 75], limit: Duration::from_secs(1800) }).await;
    print("full", &report);
    assert_eq!(report.order_violations_within_a_replica, 0, "first deliveries out of order within a replica");
}
