//! The HTTP receiver: answers 200 `ok` at once, and for each request notes when it came and
//! how long after its event was published, without locks (one slot per event and action).
//!
//! The load generator of the ceiling hits the same handler with the same webhook body, so
//! the receiver's own work is the same in both measurements.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::Router;

use crate::workload::{now_us, PUBLISHED_KEY, SEQ_KEY};

/// Latency not recorded yet.
const NONE: u32 = u32::MAX;

/// What arrived, per (event sequence number, action) slot.
pub struct Recorder {
    /// Bit per slot: received at least once.
    seen: Vec<AtomicU64>,
    /// Per slot: publish-to-receipt of the first receipt, microseconds.
    latency_us: Vec<AtomicU32>,
    slots: usize,
    /// Distinct slots received.
    unique: AtomicU64,
    /// Requests with a slot, duplicates included.
    total: AtomicU64,
    /// Requests without a slot (the load generator's).
    other: AtomicU64,
    /// Unix µs of the first and the last first receipt.
    first_us: AtomicU64,
    last_us: AtomicU64,
}

impl Recorder {
    /// Room for events `0..events`, two actions each.
    pub fn new(events: usize) -> Recorder {
        let slots = events * 2;
        Recorder {
            seen: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            latency_us: (0..slots).map(|_| AtomicU32::new(NONE)).collect(),
            slots,
            unique: AtomicU64::new(0),
            total: AtomicU64::new(0),
            other: AtomicU64::new(0),
            first_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
        }
    }

    fn record(&self, slack: bool, body: &[u8]) {
        let now = now_us();
        let seq = number_after(body, SEQ_KEY);
        let published = number_after(body, PUBLISHED_KEY);
        let slot = seq.map(|s| s as usize * 2 + usize::from(slack)).filter(|s| *s < self.slots);
        let (Some(slot), Some(published)) = (slot, published) else {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.total.fetch_add(1, Ordering::Relaxed);
        let bit = 1u64 << (slot % 64);
        if self.seen[slot / 64].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
        let latency = now.saturating_sub(published).min(u64::from(NONE - 1)) as u32;
        self.latency_us[slot].store(latency, Ordering::Relaxed);
        let _ = self.first_us.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_us.fetch_max(now, Ordering::Relaxed);
        self.unique.fetch_add(1, Ordering::Release);
    }

    /// Distinct deliveries received.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Acquire)
    }

    /// Deliveries received, duplicates included.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Requests that carried no event of the run.
    pub fn other(&self) -> u64 {
        self.other.load(Ordering::Relaxed)
    }

    /// Unix µs of the first and the last first receipt.
    pub fn first_last_us(&self) -> (u64, u64) {
        (self.first_us.load(Ordering::Relaxed), self.last_us.load(Ordering::Relaxed))
    }

    /// Publish-to-receipt latencies (µs) of the events `from..to`, both actions, sorted;
    /// and how many of their deliveries are missing.
    pub fn latencies(&self, from: usize, to: usize) -> (Vec<u32>, usize) {
        let mut out: Vec<u32> = self.latency_us[from * 2..to * 2]
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .filter(|l| *l != NONE)
            .collect();
        out.sort_unstable();
        let missing = (to - from) * 2 - out.len();
        (out, missing)
    }
}

/// The value at quantile `q` of sorted values.
pub fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// The decimal number that follows `key` (after at most a few separator bytes such as
/// `": "` or a space).
fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &body[at..];
    let start = rest.iter().take(4).position(u8::is_ascii_digit)?;
    let digits = rest[start..].iter().take_while(|b| b.is_ascii_digit()).take(19);
    Some(digits.fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A receiver on 127.0.0.1, port 0.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    recorder: Arc<std::sync::RwLock<Arc<Recorder>>>,
}

impl Receiver {
    /// Starts the server on the current runtime.
    pub async fn start() -> Receiver {
        let recorder = Arc::new(std::sync::RwLock::new(Arc::new(Recorder::new(0))));
        let app = Router::new().fallback(handle).with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the receiver serves") });
        Receiver { addr, recorder }
    }

    /// Starts recording into a fresh recorder for events `0..events`.
    pub fn reset(&self, events: usize) -> Arc<Recorder> {
        let fresh = Arc::new(Recorder::new(events));
        *self.recorder.write().expect("lock") = fresh.clone();
        fresh
    }
}

async fn handle(State(current): State<Arc<std::sync::RwLock<Arc<Recorder>>>>, uri: Uri, body: Bytes) -> &'static str {
    let recorder = current.read().expect("lock").clone();
    recorder.record(uri.path().starts_with("/slack"), &body);
    "ok"
}
