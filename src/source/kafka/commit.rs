//! Offset commits. A position is committed as soon as it became final, at a bounded rate
//! (at most every [`INTERVAL`]), and at once, synchronously, when partitions are revoked and
//! at shutdown. After a crash, the events replayed are those whose outcomes became final
//! in the last interval, plus those in flight: the shorter the interval, the fewer
//! duplicates, for one small commit request per interval and consumer.
//!
//! A commit that fails (coordinator moving or down, a timeout) is not lost: the next turn
//! commits every position again. Each commit carries what is known past its position
//! ([`super::progress`]), so that a replica taking the partition over skips what was final.
//!
//! One asynchronous commit per consumer is in flight at a time: librdkafka sends a commit
//! that timed out again by itself, after a back-off, so with two in flight the older
//! positions could land last and move the group's committed position back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::offsets::{Position, Tp, Tracker};

/// The shortest time between two commits of one consumer.
pub const INTERVAL: Duration = Duration::from_millis(150);
/// Attempts of a synchronous commit (revoke, shutdown) before giving up on it.
const SYNC_ATTEMPTS: u32 = 4;
/// How long an asynchronous commit may go unanswered before the next one goes out anyway
/// (librdkafka answers every commit, at the latest when its request times out; this only
/// keeps a lost answer from stopping commits for good).
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);

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

    /// The positions to commit at `now`, if any are pending, the last commit is at least one
    /// interval ago and is answered (or has waited for its answer longer than
    /// [`ANSWER_WAIT`]); `owned` filters out partitions given away since they moved (their
    /// new owner commits them).
    pub fn due(&mut self, now: Instant, unanswered: bool, owned: impl Fn(&Tp) -> bool) -> Option<Vec<(Tp, Position)>> {
        let since_last = self.last.map(|l| now.duration_since(l));
        if self.pending.is_empty() || since_last.is_some_and(|d| d < self.interval || (unanswered && d < ANSWER_WAIT)) {
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

/// The answers to one consumer's asynchronous commits, as its commit callback gets them:
/// whether one failed (the next turn commits every position again) and whether one is
/// still unanswered (the next waits for it).
#[derive(Debug, Default)]
pub struct Answers {
    failed: AtomicBool,
    sent: AtomicU64,
    answered: AtomicU64,
}

impl Answers {
    /// Records the outcome of a commit, as the commit callback gets it: the request's
    /// result and each partition's; returns whether it failed.
    pub fn record_commit(&self, which: &str, result: &KafkaResult<()>, offsets: &TopicPartitionList) -> bool {
        self.answered.fetch_add(1, Ordering::SeqCst);
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
            // Nothing to commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => false,
            Err(e) => {
                tracing::warn!(consumer = which, error = %e, "kafka offset commit failed; committing again");
                self.failed.store(true, Ordering::SeqCst);
                true
            }
        }
    }

    /// Whether a commit failed since the last call.
    pub fn take_failed(&self) -> bool {
        self.failed.swap(false, Ordering::SeqCst)
    }

    /// Whether a commit sent is not answered yet.
    pub fn unanswered(&self) -> bool {
        self.sent.load(Ordering::SeqCst) > self.answered.load(Ordering::SeqCst)
    }

    fn sent(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops waiting for the answers of the commits sent so far (see [`ANSWER_WAIT`]).
    fn forget_unanswered(&self) {
        self.answered.store(self.sent.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Commits what `pacer` holds if it is due, one commit in flight at a time.
pub fn commit_due<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    pacer: &mut Pacer,
    answers: &Answers,
    now: Instant,
    owned: impl Fn(&Tp) -> bool,
    which: &str,
) {
    let unanswered = answers.unanswered();
    if let Some(positions) = pacer.due(now, unanswered, owned) {
        if unanswered {
            tracing::warn!(consumer = which, "kafka offset commit unanswered; committing again");
            answers.forget_unanswered();
        }
        tracing::trace!(consumer = which, ?positions, "committing positions");
        commit_async(consumer, &positions, answers);
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

/// Commits `positions` without waiting; the answer arrives in the consumer's commit
/// callback, served by its poll.
///
/// Not with `Consumer::commit(.., CommitMode::Async)`: rdkafka sends that commit with no
/// queue to answer on, so its answer never reaches the commit callback (rust-rdkafka issue
/// 856) and a failed commit would go unnoticed until the next position moved, which after
/// the last event of a quiet topic is never. `rd_kafka_commit_queue` names the consumer's
/// own queue for the answer (the fix proposed upstream does the same).
#[allow(unsafe_code)]
fn commit_async<C: ConsumerContext>(consumer: &impl Consumer<C>, positions: &[(Tp, Position)], answers: &Answers) {
    if positions.is_empty() {
        return;
    }
    let tpl = list(positions);
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live handle of `consumer`, borrowed for the call. The queue handle
    // taken here is released before returning; librdkafka keeps its own reference to the
    // queue for the answer. `tpl` is copied by librdkafka before `rd_kafka_commit_queue`
    // returns, which does not wait when given a queue.
    let err = unsafe {
        let queue = rdsys::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            // No group: never the case for hookbridge's consumers, which all have one.
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__UNKNOWN_GROUP
        } else {
            let err = rdsys::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(queue);
            err
        }
    };
    if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        answers.sent();
    } else {
        tracing::warn!(error = %RDKafkaErrorCode::from(err), "kafka offset commit not sent; committing again");
        answers.failed.store(true, Ordering::SeqCst);
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
        assert_eq!(out(pacer.due(ms(0), false, |_| true)), None, "nothing moved");
        pacer.moved([(tp(0), at(5))]);
        assert_eq!(
            out(pacer.due(ms(0), false, |_| true)),
            Some(vec![(tp(0), 5)]),
            "the first position goes out at once"
        );
        pacer.moved([(tp(0), at(7)), (tp(1), at(3))]);
        pacer.moved([(tp(0), at(9))]);
        assert_eq!(out(pacer.due(ms(100), false, |_| true)), None, "within the interval");
        assert_eq!(out(pacer.due(ms(150), false, |_| true)), Some(vec![(tp(0), 9), (tp(1), 3)]), "the latest of each");
        assert_eq!(out(pacer.due(ms(400), false, |_| true)), None, "nothing moved since");
        pacer.moved([(tp(1), at(4))]);
        assert_eq!(
            out(pacer.due(ms(400), false, |_| true)),
            Some(vec![(tp(1), 4)]),
            "idle for longer than the interval"
        );
    }

    #[test]
    fn partitions_given_away_are_not_committed() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(INTERVAL);
        pacer.moved([(tp(0), at(5)), (tp(1), at(6))]);
        assert_eq!(out(pacer.due(t0, false, |t| t.partition == 1)), Some(vec![(tp(1), 6)]));
        pacer.moved([(tp(0), at(8))]);
        assert_eq!(out(pacer.due(t0 + INTERVAL, false, |_| false)), None);
    }

    #[test]
    fn a_failed_commit_is_reported_once() {
        let failed = Answers::default();
        assert!(!failed.record("source", &Ok(())));
        assert!(!failed.record("source", &Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))));
        assert!(!failed.take_failed());
        assert!(failed
            .record("source", &Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::RequestTimedOut))));
        assert!(failed.take_failed());
        assert!(!failed.take_failed());
    }

    #[test]
    fn the_next_commit_waits_for_the_answer_to_the_last() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pacer = Pacer::new(INTERVAL);
        pacer.moved([(tp(0), at(5))]);
        assert!(pacer.due(ms(0), false, |_| true).is_some());
        pacer.moved([(tp(0), at(9))]);
        assert_eq!(out(pacer.due(ms(1_000), true, |_| true)), None, "the last commit is not answered");
        assert_eq!(out(pacer.due(ms(1_000), false, |_| true)), Some(vec![(tp(0), 9)]), "answered");
        pacer.moved([(tp(0), at(12))]);
        let lost = ms(1_000) + ANSWER_WAIT;
        assert_eq!(out(pacer.due(lost, true, |_| true)), Some(vec![(tp(0), 12)]), "an answer that never comes");
    }

    #[test]
    fn answers_are_counted_against_commits_sent() {
        let answers = Answers::default();
        assert!(!answers.unanswered());
        answers.sent();
        assert!(answers.unanswered());
        answers.record_commit("source", &Ok(()), &TopicPartitionList::new());
        assert!(!answers.unanswered());
        answers.sent();
        answers.forget_unanswered();
        assert!(!answers.unanswered());
    }
}
