//! Offset commits. A position is committed as soon as it became final, at a bounded rate
//! (at most every [`INTERVAL`]), and at once, synchronously, when partitions are revoked and
//! at shutdown. After a crash, the events replayed are those whose outcomes became final
//! in the last interval, plus those in flight: the shorter the interval, the fewer
//! duplicates, for one small commit request per interval and consumer.
//!
//! A commit that fails (coordinator moving or down, a timeout) is not lost: the next turn
//! commits every position again. Each commit carries what is known past its position
//! ([`super::progress`]), so that a replica taking the partition over skips what was final.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::offsets::{Position, Tp, Tracker};

/// The shortest time between two commits of one consumer.
pub const INTERVAL: Duration = Duration::from_millis(150);
/// Attempts of a synchronous commit (revoke, shutdown) before giving up on it.
const SYNC_ATTEMPTS: u32 = 4;

/// Positions that moved and are not committed yet, and when the last commit went out.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    last: Option<Instant>,
    pending: BTreeMap<Tp, Position>,
}

impl Pacer {
    /// A pacer committing at most every `interval`.
    pub fn new(interval: Duration) -> Pacer {
        Pacer { interval, last: None, pending: BTreeMap::new() }
    }

    /// Notes positions that moved (or must be committed again); the latest of a partition
    /// replaces an earlier one.
    pub fn moved(&mut self, positions: impl IntoIterator<Item = (Tp, Position)>) {
        for (tp, pos) in positions {
            match self.pending.get(&tp) {
                Some(p) if p.next > pos.next => {}
                _ => {
                    self.pending.insert(tp, pos);
                }
            }
        }
    }

    /// The positions to commit at `now`, if any are pending and the last commit is at least
    /// one interval ago; `owned` filters out partitions given away since they moved (their
    /// new owner commits them).
    pub fn due(&mut self, now: Instant, owned: impl Fn(&Tp) -> bool) -> Option<Vec<(Tp, Position)>> {
        if self.pending.is_empty() || self.last.is_some_and(|l| now.duration_since(l) < self.interval) {
            return None;
        }
        let positions: Vec<(Tp, Position)> =
            std::mem::take(&mut self.pending).into_iter().filter(|(tp, _)| owned(tp)).collect();
        if positions.is_empty() {
            return None;
        }
        self.last = Some(now);
        Some(positions)
    }
}

/// Set when an asynchronous commit failed: the next turn commits every position again.
#[derive(Debug, Default)]
pub struct Failed(AtomicBool);

impl Failed {
    /// Records the outcome of a commit, as the commit callback gets it: the request's
    /// result and each partition's; returns whether it failed.
    pub fn record_commit(&self, which: &str, result: &KafkaResult<()>, offsets: &TopicPartitionList) -> bool {
        // A request may succeed with some partitions refused (a timeout per partition).
        let partition_error = offsets.elements().iter().find_map(|e| e.error().err());
        match (result, partition_error) {
            (Ok(()), Some(e)) => self.record(which, &Err(e)),
            _ => self.record(which, result),
        }
    }

    /// Records the outcome of a commit; returns whether it failed.
    pub fn record(&self, which: &str, result: &KafkaResult<()>) -> bool {
        match result {
            Ok(()) => false,
            // Nothing new since the last commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => false,
            Err(e) => {
                tracing::warn!(consumer = which, error = %e, "kafka offset commit failed; committing again");
                self.0.store(true, Ordering::SeqCst);
                true
            }
        }
    }

    /// Whether a commit failed since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

fn list(positions: &[(Tp, Position)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, pos) in positions {
        // The next offset to read: the first one not final; and what is final past it.
        let mut e = tpl.add_partition(&tp.topic, tp.partition);
        let _ = e.set_offset(Offset::Offset(pos.next));
        e.set_metadata(pos.progress.encode(pos.next));
    }
    tpl
}

/// Commits `positions` without waiting; the outcome arrives in the consumer's commit callback.
pub fn commit_async<C: ConsumerContext>(consumer: &impl Consumer<C>, positions: &[(Tp, Position)]) {
    if positions.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(&list(positions), CommitMode::Async) {
        tracing::debug!(error = %e, "kafka commit not sent");
    }
}

/// Commits the final positions of `tps` now and waits for the answer, trying again a few
/// times (a coordinator moving, a timeout) until `deadline`. A position left uncommitted is
/// not lost: the partition's next owner reads its events again.
pub fn commit_now<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    tracker: &Tracker,
    tps: &[Tp],
    which: &str,
    deadline: Instant,
) {
    let positions = tracker.positions(Some(tps));
    if positions.is_empty() {
        return;
    }
    let tpl = list(&positions);
    let mut attempt = 1;
    loop {
        // librdkafka writes each partition's outcome into the list of a synchronous commit.
        let result = consumer.commit(&tpl, CommitMode::Sync).and_then(|()| {
            match tpl.elements().iter().find_map(|e| e.error().err()) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        });
        match result {
            Ok(()) => return,
            Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return,
            Err(e) if attempt >= SYNC_ATTEMPTS || Instant::now() + Duration::from_millis(200) >= deadline => {
                tracing::warn!(consumer = which, error = %e, "kafka commit failed; the partitions' next owner reads their last events again");
                return;
            }
            Err(e) => {
                tracing::debug!(consumer = which, error = %e, attempt, "kafka commit failed; trying again");
                std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        Tp::new("t", p)
    }

    fn at(next: i64) -> Position {
        Position { next, progress: crate::source::kafka::progress::Progress::none(next) }
    }

    fn out(due: Option<Vec<(Tp, Position)>>) -> Option<Vec<(Tp, i64)>> {
        due.map(|ps| ps.into_iter().map(|(tp, p)| (tp, p.next)).collect())
    }

    #[test]
    fn positions_go_out_at_once_then_at_most_every_interval() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pacer = Pacer::new(INTERVAL);
        assert_eq!(out(pacer.due(ms(0), |_| true)), None, "nothing moved");
        pacer.moved([(tp(0), at(5))]);
        assert_eq!(out(pacer.due(ms(0), |_| true)), Some(vec![(tp(0), 5)]), "the first position goes out at once");
        pacer.moved([(tp(0), at(7)), (tp(1), at(3))]);
        pacer.moved([(tp(0), at(9))]);
        assert_eq!(out(pacer.due(ms(100), |_| true)), None, "within the interval");
        assert_eq!(out(pacer.due(ms(150), |_| true)), Some(vec![(tp(0), 9), (tp(1), 3)]), "the latest of each");
        assert_eq!(out(pacer.due(ms(400), |_| true)), None, "nothing moved since");
        pacer.moved([(tp(1), at(4))]);
        assert_eq!(out(pacer.due(ms(400), |_| true)), Some(vec![(tp(1), 4)]), "idle for longer than the interval");
    }

    #[test]
    fn partitions_given_away_are_not_committed() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(INTERVAL);
        pacer.moved([(tp(0), at(5)), (tp(1), at(6))]);
        assert_eq!(out(pacer.due(t0, |t| t.partition == 1)), Some(vec![(tp(1), 6)]));
        pacer.moved([(tp(0), at(8))]);
        assert_eq!(out(pacer.due(t0 + INTERVAL, |_| false)), None);
    }

    #[test]
    fn a_failed_commit_is_reported_once() {
        let failed = Failed::default();
        assert!(!failed.record("source", &Ok(())));
        assert!(!failed.record("source", &Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))));
        assert!(!failed.take());
        assert!(failed
            .record("source", &Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::RequestTimedOut))));
        assert!(failed.take());
        assert!(!failed.take());
    }
}
