//! The consumer thread: polls the group consumer and the retry-topic consumer, hands what
//! it reads to the forwarder without ever waiting for the pipeline, stores the positions
//! that became final, pauses and resumes partitions around the backlog bound, releases
//! retry records when due, and drains on shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message as _;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::lag::LagReporter;
use super::offsets::{Ticket, Tp, Tracker};
use super::rebalance::{commit, MainContext, RetryContext};
use super::retry::{self, RetryMap};
use super::source::{Handover, Shared};
use super::KafkaError;
use crate::source::{Ack, Message, Settle};

/// Messages taken from the consumers per poll round, before the housekeeping runs again.
const BATCH: usize = 500;
/// The smallest backlog share of a partition, however many partitions are owned.
const MIN_SHARE: usize = 32;
/// How long a poll waits when nothing is there.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How often the retry group's positions are committed again even when they did not
/// move: the group has no members, so the broker would expire positions left untouched
/// for `offsets.retention.minutes`.
const RETRY_COMMIT_REFRESH: Duration = Duration::from_secs(60);

/// The consumer thread's state.
pub(crate) struct Poller {
    pub(crate) main: Arc<BaseConsumer<MainContext>>,
    pub(crate) retry: Arc<BaseConsumer<RetryContext>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) topics: Vec<String>,
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
}

impl Poller {
    /// Runs until shutdown (then drains) or a fatal error.
    pub(crate) fn run(mut self) -> Result<(), KafkaError> {
        let Some(map) = self.prepare()? else {
            return Ok(());
        };
        tracing::info!(topics = ?self.topics, retry_topic = %self.shared.retry_topic, source_partitions = map.needed(), "kafka source connected");
        let _ = self.shared.map.set(map);
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.main.subscribe(&topics).map_err(KafkaError::Settings)?;
        self.shared.set_ready();
        self.lag = Some(LagReporter::start(self.main.clone(), self.shared.main.clone()));
        let mut last_refresh = Instant::now();
        while !self.shutdown.is_cancelled() && !self.fwd.is_closed() {
            self.store_positions();
            self.flow_control();
            self.release_due();
            self.poll_main()?;
            self.poll_retry();
            if last_refresh.elapsed() >= RETRY_COMMIT_REFRESH {
                last_refresh = Instant::now();
                commit_async(&*self.retry, &self.shared.retry);
            }
        }
        self.drain();
        Ok(())
    }

    /// Learns the partitions of the source topics and makes sure the retry topic has one
    /// partition for each; waits for the brokers (and for missing topics) until shutdown.
    fn prepare(&mut self) -> Result<Option<RetryMap>, KafkaError> {
        let mut delay = Duration::from_millis(500);
        loop {
            let attempt = (|| {
                let mut counts = Vec::new();
                for topic in &self.topics {
                    let n = retry::partition_count(&*self.main, topic)?;
                    if n == 0 {
                        return Err(KafkaError::Metadata {
                            topic: topic.clone(),
                            message: "the topic does not exist (yet)".into(),
                        });
                    }
                    counts.push((topic.clone(), n));
                }
                let needed = RetryMap::new(&counts, 0).needed();
                let available = retry::ensure_topic(&*self.main, &self.admin, &self.shared.retry_topic, needed)?;
                Ok(RetryMap::new(&counts, available))
            })();
            match attempt {
                Ok(map) => return Ok(Some(map)),
                // Rights or settings, not a passing state: say so and stop.
                Err(e @ KafkaError::RetryTopic { .. }) | Err(e @ KafkaError::Settings(_)) => return Err(e),
                Err(e) => self.errors.warn(&e.to_string(), "kafka source not ready; retrying"),
            }
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.shutdown.is_cancelled() {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Stores the positions that moved; librdkafka commits them every second.
    fn store_positions(&self) {
        store(&*self.main, &self.shared.main);
        store(&*self.retry, &self.shared.retry);
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
        let mut wait = POLL_WAIT;
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
        let message = Message {
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: headers_of(m),
            coords: json!({"type": "kafka", "topic": m.topic(), "partition": m.partition(), "offset": m.offset()}),
            ack: ack(ticket),
            retry: None,
        };
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
            return;
        };
        let returned = match retry::decode(headers_of(m)) {
            Ok(r) => r,
            Err(e) => {
                // Handed over as it is: the pipeline dead-letters it with the reason.
                let message = Message {
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers: headers_of(m),
                    coords: json!({"type": "kafka", "topic": m.topic(), "partition": m.partition(), "offset": m.offset()}),
                    ack: ack(ticket),
                    retry: Some(Err(e)),
                };
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
        let message = Message {
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: returned.headers,
            coords: returned.origin.coords(m.topic(), m.partition(), m.offset()),
            ack: ack(ticket),
            retry: Some(Ok(returned.info)),
        };
        let handover = Handover { message, tracker: tracker.clone(), tp, generation, offset: m.offset() };
        if returned.not_before_ms <= chrono::Utc::now().timestamp_millis() {
            let _ = self.fwd.send(handover);
        } else {
            // Held here, not by pausing the partition: a record due in an hour must not
            // hold back one due in a second behind it.
            let mut waiting = self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.insert(returned.not_before_ms, m.partition(), m.offset(), handover);
        }
    }

    /// Shutdown: stop taking work, let what is in flight finish within
    /// `delivery.shutdown_timeout`, commit what is final, leave the group.
    fn drain(self) {
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
        let waiting = s.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
        drop(waiting);
        loop {
            self.store_positions();
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
        self.store_positions();
        let owned = s.main.owned();
        commit(&*self.main, &s.main, &owned, "source");
        let owned = s.retry.owned();
        commit(&*self.retry, &s.retry, &owned, "retry");
        tracing::info!("kafka source stopped; positions committed");
        // Dropping the consumers leaves the group at once, so the other replicas take the
        // partitions over without waiting for the session to time out.
        if let Some(lag) = self.lag {
            lag.stop();
        }
        drop(self.main);
        drop(self.retry);
    }
}

/// The acknowledgement of a message: final outcomes release its offset; anything else
/// (a redelivery request, or dropping it unsettled) keeps the position before it.
fn ack(ticket: Ticket) -> Ack {
    Ack::new(move |how| ticket.settle(how == Settle::Done))
}

fn headers_of(m: &BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    m.headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
        .unwrap_or_default()
}

fn store<C: ConsumerContext>(consumer: &impl Consumer<C>, tracker: &Tracker) {
    let positions = tracker.take_storable();
    if positions.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (tp, next) in &positions {
        // store_offsets takes the next offset to read (the last final one + 1), unlike
        // store_offset, which adds the 1 itself.
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next));
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // A partition revoked between the take and the store: its new owner commits it.
        tracing::debug!(error = %e, "storing kafka offsets failed");
    }
}

fn commit_async<C: ConsumerContext>(consumer: &impl Consumer<C>, tracker: &Tracker) {
    let positions = tracker.positions(None);
    if positions.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (tp, next) in &positions {
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next));
    }
    let _ = consumer.commit(&tpl, CommitMode::Async);
}

/// Pauses each partition whose share of the backlog is full and resumes it once its share
/// has drained by half. Every owned partition gets an equal share of `bound` (at least
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
        } else if paused.contains(&key) && n <= share / 2 {
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
    fn warn(&mut self, error: &str, what: &str) {
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
