//! The consumer thread: polls the group consumer and the retry-topic consumer, hands what
//! it reads to the forwarder without ever waiting for the pipeline, commits the positions
//! that became final, pauses and resumes partitions around the backlog bound, catches up
//! retry partitions and releases retry records when due, keeps the retry layout up to date
//! ([`layout`]), and drains on shutdown.

pub(crate) mod layout;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::commit::{commit_due, commit_now, Pacer};
use super::lag::LagReporter;
use super::offsets::{Ticket, Tp, Tracker};
use super::rebalance::{MainContext, RetryContext};
use super::replay::{DeliveryKey, Verdict};
use super::retry;
use super::shared::{Handover, Shared};
use super::KafkaError;
use crate::config::kafka_topics::Subscription;
use crate::source::{Ack, Coords, Message, RetryInfo, Settle};
use layout::LayoutState;

/// Messages taken from the consumers per poll round, before the housekeeping runs again.
const BATCH: usize = 500;
/// The smallest backlog share of a partition, however many partitions are owned.
const MIN_SHARE: usize = 32;
/// How long a poll waits when nothing is there.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How long a poll waits while flow control holds partitions paused: the backlog drains in
/// milliseconds at full speed, and a resume that waits out [`POLL_WAIT`] leaves the pipeline
/// without work meanwhile.
const PAUSED_POLL_WAIT: Duration = Duration::from_millis(2);
/// How often the retry group's positions are committed again even when they did not
/// move: the group has no members, so the broker would expire positions left untouched
/// for `offsets.retention.minutes`.
const RETRY_COMMIT_REFRESH: Duration = Duration::from_secs(60);

/// The consumer thread's state.
pub(crate) struct Poller {
    pub(crate) main: Arc<BaseConsumer<MainContext>>,
    pub(crate) retry: Arc<BaseConsumer<RetryContext>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) subscription: Subscription,
    pub(crate) group: String,
    pub(crate) admin: ClientConfig,
    pub(crate) bound: usize,
    pub(crate) fwd: mpsc::UnboundedSender<Handover>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) errors: ErrorLog,
    pub(crate) lag: Option<LagReporter>,
    /// Partitions paused by flow control, with the generation they were paused under.
    pub(crate) paused_main: HashSet<(Tp, u64)>,
    pub(crate) paused_retry: HashSet<(Tp, u64)>,
    pub(crate) main_pacer: Pacer,
    pub(crate) retry_pacer: Pacer,
    pub(crate) layout: LayoutState,
}

impl Poller {
    /// Runs until shutdown (then drains) or a fatal error.
    pub(crate) fn run(mut self) -> Result<(), KafkaError> {
        let Some(map) = self.prepare()? else {
            return Ok(());
        };
        tracing::info!(topics = ?self.subscription.entries(), retry_topic = %self.shared.retry_topic, source_partitions = map.needed(), "kafka source connected");
        self.shared.map.set(map);
        self.main.subscribe(&self.subscription.entries()).map_err(KafkaError::Settings)?;
        self.shared.set_ready();
        self.lag = Some(LagReporter::start(self.main.clone(), self.shared.main.clone()));
        let mut last_refresh = Instant::now();
        while !self.shutdown.is_cancelled() && !self.fwd.is_closed() {
            self.commit_positions(Instant::now());
            self.flow_control();
            self.release_due();
            self.poll_main()?;
            self.poll_retry();
            self.keep_layout(Instant::now());
            if last_refresh.elapsed() >= RETRY_COMMIT_REFRESH {
                last_refresh = Instant::now();
                self.retry_pacer.moved(self.shared.retry.positions(None));
            }
        }
        self.drain();
        Ok(())
    }

    /// Commits the positions that moved, at most every [`super::commit::INTERVAL`], and
    /// every position again after a failed commit.
    fn commit_positions(&mut self, now: Instant) {
        let s = &self.shared;
        self.main_pacer.moved(s.main.take_storable());
        if s.main_answers.take_failed() {
            self.main_pacer.moved(s.main.positions(None));
        }
        commit_due(
            &*self.main,
            &mut self.main_pacer,
            &s.main_answers,
            now,
            |tp| s.main.current(tp).is_some(),
            "source",
        );
        self.retry_pacer.moved(s.retry.take_storable());
        if s.retry_answers.take_failed() {
            self.retry_pacer.moved(s.retry.positions(None));
        }
        commit_due(
            &*self.retry,
            &mut self.retry_pacer,
            &s.retry_answers,
            now,
            |tp| s.retry.current(tp).is_some(),
            "retry",
        );
    }

    /// Keeps the backlog (messages read and not settled) under the bound, by partition.
    fn flow_control(&mut self) {
        let s = &self.shared;
        throttle(&*self.main, &s.main, self.bound, &mut self.paused_main, "source");
        throttle(&*self.retry, &s.retry, self.bound, &mut self.paused_retry, "retry");
    }

    /// Hands over the retry records that are due.
    fn release_due(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let due = self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner()).take_due(now);
        for h in due {
            let _ = self.fwd.send(h);
        }
    }

    fn poll_main(&mut self) -> Result<(), KafkaError> {
        let mut wait =
            if self.paused_main.is_empty() && self.paused_retry.is_empty() { POLL_WAIT } else { PAUSED_POLL_WAIT };
        for _ in 0..BATCH {
            match self.main.poll(wait) {
                None => break,
                Some(Ok(m)) => self.take_main(&m),
                Some(Err(e)) => {
                    if let rdkafka::error::KafkaError::MessageConsumption(RDKafkaErrorCode::Fatal) = e {
                        return Err(KafkaError::Consumer(e));
                    }
                    self.errors.warn(&e.to_string(), "kafka consumer error");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        Ok(())
    }

    fn poll_retry(&mut self) {
        for _ in 0..BATCH {
            match self.retry.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => self.take_retry(&m),
                Some(Err(e)) => {
                    self.errors.warn(&e.to_string(), "kafka retry consumer error");
                    break;
                }
            }
        }
    }

    fn take_main(&self, m: &BorrowedMessage<'_>) {
        let tracker = &self.shared.main;
        let tp = Tp::new(m.topic(), m.partition());
        // Not owned (any more): it is someone else's to deliver.
        let Some(generation) = tracker.current(&tp) else {
            return;
        };
        let Some(ticket) = tracker.read(&tp, generation, m.offset()) else {
            return;
        };
        let message = as_message(m, ticket, None);
        let offset = m.offset();
        let _ = self.fwd.send(Handover { message, tracker: tracker.clone(), tp, generation, offset });
    }

    fn take_retry(&self, m: &BorrowedMessage<'_>) {
        let tracker = &self.shared.retry;
        let tp = Tp::new(m.topic(), m.partition());
        let Some(generation) = tracker.current(&tp) else {
            return;
        };
        let Some(ticket) = tracker.read(&tp, generation, m.offset()) else {
            // Final already (a commit said so): the replay filter has nothing to say on it.
            let mut filters = self.shared.lock_filters();
            if filters.get(&m.partition()).is_some_and(|f| f.done_at(m.offset())) {
                filters.remove(&m.partition());
            }
            return;
        };
        let returned = match retry::decode(headers_of(m)) {
            Ok(r) => r,
            Err(e) => {
                // Handed over as it is: the pipeline dead-letters it with the reason.
                let message = as_message(m, ticket, Some(Err(e)));
                let _ =
                    self.fwd.send(Handover { message, tracker: tracker.clone(), tp, generation, offset: m.offset() });
                return;
            }
        };
        if returned.group.as_ref().is_some_and(|g| *g != self.group) {
            // Parked by another deployment sharing the retry topic: theirs to deliver.
            ticket.settle(true);
            return;
        }
        let key = DeliveryKey {
            origin: returned.origin.clone(),
            trigger: returned.info.trigger.clone(),
            action: returned.info.action.clone(),
            mention: returned.info.mention,
        };
        if self.replay_verdict(m.partition(), m.offset(), &key) != Verdict::Live {
            // Its delivery happens elsewhere: in the source replay, or from its later copy.
            ticket.settle(true);
            return;
        }
        let not_before_ms = returned.not_before_ms;
        let message = returning(m, returned, ticket);
        let handover = Handover { message, tracker: tracker.clone(), tp, generation, offset: m.offset() };
        if not_before_ms <= chrono::Utc::now().timestamp_millis() {
            let _ = self.fwd.send(handover);
        } else {
            // Held here, not by pausing the partition: a record due in an hour must not
            // hold back one due in a second behind it.
            let mut waiting = self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.insert(not_before_ms, m.partition(), m.offset(), handover);
        }
    }

    /// What the retry record at `offset` of retry partition `partition`, read again after
    /// the partition was taken, is ([`super::replay::ReplayFilter`]).
    fn replay_verdict(&self, partition: i32, offset: i64, key: &DeliveryKey) -> Verdict {
        let mut filters = self.shared.lock_filters();
        let Some(f) = filters.get_mut(&partition) else {
            return Verdict::Live;
        };
        let verdict = f.verdict(offset, key);
        if f.done_at(offset) {
            let (by_source, by_copy) = f.dropped;
            if by_source + by_copy > 0 {
                tracing::info!(
                    partition,
                    replayed_by_source = by_source,
                    superseded_by_a_later_copy = by_copy,
                    "retry records read again were settled without delivery"
                );
            }
            filters.remove(&partition);
        }
        verdict
    }

    /// Shutdown: stop taking work, let what is in flight finish within
    /// `delivery.shutdown_timeout`, commit what is final, leave the group.
    fn drain(mut self) {
        let s = self.shared.clone();
        let deadline = Instant::now() + s.drain_timeout;
        *s.shutdown_deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(deadline);
        s.main.begin_revoke_all();
        s.retry.begin_revoke_all();
        if let Ok(a) = self.main.assignment() {
            let _ = self.main.pause(&a);
        }
        if let Ok(a) = self.retry.assignment() {
            let _ = self.retry.pause(&a);
        }
        s.lock_filters().clear();
        let waiting = s.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
        drop(waiting);
        loop {
            self.commit_positions(Instant::now());
            // What the pipeline has; what is still queued here is dropped with the forwarder.
            let left = s.main.wait_settled(None, Instant::now()) + s.retry.wait_settled(None, Instant::now());
            if left == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    not_final = left,
                    "shutdown deadline passed with kafka messages not final; they will be read again"
                );
                break;
            }
            // Keep serving the group (heartbeats are librdkafka's, rebalances are ours);
            // nothing new is taken, the partitions are revoking.
            let _ = self.main.poll(POLL_WAIT);
            let _ = self.retry.poll(Duration::ZERO);
        }
        // The answers to commits in flight first: one that librdkafka sends again could
        // otherwise land after the last commit below and move the position back.
        while (s.main_answers.unanswered() || s.retry_answers.unanswered()) && Instant::now() < deadline {
            let _ = self.main.poll(POLL_WAIT);
            let _ = self.retry.poll(Duration::ZERO);
        }
        // A last chance for a commit that failed meanwhile, within a second past the deadline.
        let until = deadline.max(Instant::now() + Duration::from_secs(1));
        let owned = s.main.owned();
        commit_now(&*self.main, &s.main, &owned, "source", until);
        let owned = s.retry.owned();
        commit_now(&*self.retry, &s.retry, &owned, "retry", until);
        tracing::info!("kafka source stopped; positions committed");
        // Dropping the consumers leaves the group at once (a static member, with
        // group_instance_id, stays until its session times out, to come back to its
        // partitions), so the other replicas take the partitions over without waiting.
        if let Some(lag) = self.lag.take() {
            lag.stop();
        }
        drop(self.main);
        drop(self.retry);
    }
}

/// The acknowledgement of a message: final outcomes release its offset; anything else
/// (a redelivery request, or dropping it unsettled) keeps the position before it.
fn ack(ticket: Ticket) -> Ack {
    let hold = ticket.holder();
    Ack::with_hold(move |how| ticket.settle(how == Settle::Done), hold)
}

/// A retry record as the pipeline sees it: the original message, its origin's coordinates
/// with the record's own, and the delivery it carries.
pub(crate) fn returning(m: &BorrowedMessage<'_>, returned: retry::Returned, ticket: Ticket) -> Message {
    Message {
        payload: m.payload().unwrap_or_default().to_vec(),
        headers: returned.headers,
        coords: returned.origin.coords(m.topic(), m.partition(), m.offset()),
        ack: ack(ticket),
        retry: Some(Ok(returned.info)),
    }
}

/// A record as the pipeline sees it, with its own coordinates.
pub(crate) fn as_message(m: &BorrowedMessage<'_>, ticket: Ticket, retry: Option<Result<RetryInfo, String>>) -> Message {
    Message {
        payload: m.payload().unwrap_or_default().to_vec(),
        headers: headers_of(m),
        coords: Coords::Kafka { topic: m.topic().into(), partition: m.partition(), offset: m.offset(), retry: None },
        ack: ack(ticket),
        retry,
    }
}

pub(crate) fn headers_of(m: &BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    m.headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
        .unwrap_or_default()
}

/// Pauses each partition whose share of the backlog is full and resumes it once its share
/// has drained by a quarter: a pause drops what librdkafka had fetched ahead for the
/// partition, so a resume must fetch again, and waiting for half the share to drain left the
/// pipeline idle while it did. Every owned partition gets an equal share of `bound` (at least
/// [`MIN_SHARE`]), so the total stays bounded and one busy partition cannot keep the others
/// waiting (librdkafka returns a fetch partition by partition). Partitions are known with
/// their generation: a partition assigned again starts unpaused, as librdkafka has it.
fn throttle<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    tracker: &Tracker,
    bound: usize,
    paused: &mut HashSet<(Tp, u64)>,
    which: &str,
) {
    let backlog = tracker.backlog_by_partition();
    paused.retain(|(tp, g)| backlog.iter().any(|(t, bg, _)| t == tp && bg == g));
    if backlog.is_empty() {
        return;
    }
    let share = (bound / backlog.len()).max(MIN_SHARE);
    let mut pause = TopicPartitionList::new();
    let mut resume = TopicPartitionList::new();
    for (tp, generation, n) in backlog {
        let key = (tp, generation);
        if !paused.contains(&key) && n >= share {
            let _ = pause.add_partition(&key.0.topic, key.0.partition);
            paused.insert(key);
        } else if paused.contains(&key) && n <= share * 3 / 4 {
            let _ = resume.add_partition(&key.0.topic, key.0.partition);
            paused.remove(&key);
        }
    }
    for (list, action) in [(&pause, "pause"), (&resume, "resume")] {
        if list.count() == 0 {
            continue;
        }
        let result = if action == "pause" { consumer.pause(list) } else { consumer.resume(list) };
        match result {
            Ok(()) => {
                tracing::debug!(consumer = which, partitions = list.count(), share, "kafka flow control: {action}")
            }
            Err(e) => tracing::warn!(consumer = which, error = %e, "kafka {action} failed"),
        }
    }
}

/// Warnings that repeat every poll (a broker down) are logged once per 30 seconds.
#[derive(Default)]
pub(crate) struct ErrorLog {
    last: Option<(String, Instant)>,
}

impl ErrorLog {
    pub(crate) fn warn(&mut self, error: &str, what: &str) {
        let now = Instant::now();
        if let Some((last, at)) = &self.last {
            if last == error && now.duration_since(*at) < Duration::from_secs(30) {
                return;
            }
        }
        tracing::warn!(error, "{what}");
        self.last = Some((error.to_string(), now));
    }
}
