//! The state the consumer thread ([`super::poller`]), the rebalance callbacks
//! ([`super::rebalance`]), the forwarder and the acknowledgements share, in a file of its
//! own so that those modules depend on it and not on each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;

use super::commit::Answers;
use super::offsets::{Tp, Tracker};
use super::replay::ReplayFilter;
use super::retry::{MapCell, Waiting};
use crate::source::Message;

/// State shared by the consumer thread, the rebalance callbacks, the forwarder and the
/// acknowledgements.
pub struct Shared {
    /// Positions of the source partitions.
    pub(crate) main: Arc<Tracker>,
    /// Positions of the retry partitions.
    pub(crate) retry: Arc<Tracker>,
    /// Retry records read and not yet due.
    pub(crate) waiting: Mutex<Waiting<Handover>>,
    /// Retry partitions taken after a crash, by partition number: which of their records the
    /// source replays.
    pub(crate) filters: Mutex<HashMap<i32, ReplayFilter>>,
    /// Source partition -> retry partition: the current layout.
    pub(crate) map: Arc<MapCell>,
    /// Source partition -> the retry partition read for it now.
    pub(crate) links: Mutex<BTreeMap<Tp, i32>>,
    /// Set when a partition was assigned that the layout does not know, or knows differently.
    pub(crate) layout_stale: AtomicBool,
    /// The retry topic.
    pub(crate) retry_topic: Arc<str>,
    /// Settings of a consumer that scans retry partitions ([`super::replay::scan`]).
    pub(crate) scan_settings: ClientConfig,
    /// How long a revoke or a shutdown waits for in-flight work.
    pub(crate) drain_timeout: Duration,
    /// Set once shutting down: revokes do not wait past it.
    pub(crate) shutdown_deadline: Mutex<Option<Instant>>,
    /// The consumer group: retry records of other groups are theirs.
    pub(crate) group: String,
    /// Deliveries found waiting in retry partitions when they were taken, for the dispatcher.
    pub(crate) found: Arc<crate::source::FoundBook>,
    /// Answers to the group consumer's commits.
    pub(crate) main_answers: Answers,
    /// Answers to the retry consumer's commits.
    pub(crate) retry_answers: Arc<Answers>,
    pub(crate) ready: OnceLock<Arc<AtomicBool>>,
}

impl Shared {
    /// Until when a revoke may wait for in-flight work that starts now: the drain timeout,
    /// and never past the shutdown deadline once shutting down.
    pub(crate) fn drain_deadline(&self, now: Instant) -> Instant {
        let own = now + self.drain_timeout;
        match *self.shutdown_deadline.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(d) => own.min(d),
            None => own,
        }
    }

    /// Keeps the readiness flag the source sets once connected.
    pub(crate) fn attach_ready(&self, ready: Arc<AtomicBool>) {
        let _ = self.ready.set(ready);
    }

    /// The source is connected.
    pub(crate) fn set_ready(&self) {
        if let Some(r) = self.ready.get() {
            r.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn lock_links(&self) -> MutexGuard<'_, BTreeMap<Tp, i32>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_filters(&self) -> MutexGuard<'_, HashMap<i32, ReplayFilter>> {
        self.filters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the consumer thread to refresh the retry layout.
    pub(crate) fn mark_layout_stale(&self) {
        self.layout_stale.store(true, Ordering::SeqCst);
    }

    /// Whether a refresh was asked for since the last call.
    pub(crate) fn take_layout_stale(&self) -> bool {
        self.layout_stale.swap(false, Ordering::SeqCst)
    }
}

/// A message on its way to the pipeline, with what is needed to drop it if its partition
/// was revoked meanwhile.
pub struct Handover {
    pub(crate) message: Message,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) tp: Tp,
    pub(crate) generation: u64,
    pub(crate) offset: i64,
}
