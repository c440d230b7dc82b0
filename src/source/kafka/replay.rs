//! Retry records read again after a crash. A retry partition is read again from the position
//! last committed under the retry group, skipping what that commit knew was final
//! ([`super::progress`]); what remains was not final at the last commit, or was written since.
//! Two kinds of those records must not be delivered:
//!
//! - **Replayed by the source.** A record whose original message lies at or past the
//!   committed position of its source partition: the source partition replays that message
//!   with all its actions, so the delivery happens there.
//! - **Superseded by a later copy.** A delivery parked again (it failed once more, or waited
//!   behind an earlier one of its lane) has a later record in the same partition; only the
//!   last one is live.
//!
//! Delivering either would deliver twice, and an old copy with its attempts nearly used up
//! could end in a dead letter for a delivery that succeeded. So when a replica takes a retry
//! partition, it notes the partition's end offset and where the linked source partition is
//! read from, and scans the records between the retry group's committed position and that
//! end ([`scan`]) for where the last copy of each delivery is: a [`ReplayFilter`]. Records
//! written after the partition was taken are all live.
//!
//! The same scan tells which deliveries are waiting in the partition ([`ReplayFilter::found`]):
//! the dispatcher parks their lanes behind them before the source partition's newer
//! messages are read, so an event read after a crash does not overtake an earlier delivery
//! of its object that waits here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message as _;

use super::offsets::Tp;
use super::progress::Progress;
use super::retry::{self, Origin};
use crate::source::FoundAway;

/// The longest a scan may take; what it did not reach is treated as live, and deliveries
/// waiting past it are not known, so newer events of their objects may overtake them. Long
/// enough for retry partitions of several 100,000 records (a debug build under load read
/// about 5,000 a second); well under librdkafka's `max.poll.interval.ms` (300 s), since the
/// scan runs in the rebalance callback.
pub const SCAN_LIMIT: Duration = Duration::from_secs(120);

/// One delivery, whatever copy of its retry record carries it: the original message, and
/// which trigger, action and mention.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    /// Where the original message is.
    pub origin: Origin,
    /// Trigger name.
    pub trigger: String,
    /// Action name.
    pub action: String,
    /// Mention index.
    pub mention: Option<usize>,
}

/// What a retry record read again is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// To be delivered (when due).
    Live,
    /// The source partition replays its message.
    ReplayedBySource,
    /// A later copy of the same delivery follows.
    SupersededByCopy,
}

/// Which records of a retry partition, written before it was taken, are live.
#[derive(Debug)]
pub struct ReplayFilter {
    /// End offset of the retry partition when it was taken.
    end: i64,
    /// The linked source partition and the committed offset its reading starts from, when
    /// it was just taken from there.
    source: Option<(Tp, i64)>,
    /// What the retry group's committed position knew was final past itself.
    final_past: Option<Progress>,
    /// The last copy of each delivery, as far as the scan reached.
    last: HashMap<DeliveryKey, ScannedCopy>,
    /// Records settled as replayed by the source, and as superseded by a later copy.
    pub dropped: (usize, usize),
}

/// One copy of a delivery seen by the scan.
#[derive(Debug, Clone)]
pub struct ScannedCopy {
    /// Its offset in the retry partition.
    pub offset: i64,
    /// The object, `class::key` (the record's key).
    pub object: String,
    /// When it is due (unix ms).
    pub due_ms: i64,
}

impl ReplayFilter {
    /// A filter for a retry partition ending at `end`, whose source partition (when given)
    /// is read from its committed offset; `final_past` is what the retry group's commit knew
    /// was final past its position.
    pub fn new(end: i64, source: Option<(Tp, i64)>, final_past: Option<Progress>) -> ReplayFilter {
        ReplayFilter { end, source, final_past, last: HashMap::new(), dropped: (0, 0) }
    }

    /// Notes a record seen by the scan.
    pub fn scanned(&mut self, key: DeliveryKey, copy: ScannedCopy) {
        if copy.offset < self.end {
            match self.last.get(&key) {
                Some(last) if last.offset >= copy.offset => {}
                _ => {
                    self.last.insert(key, copy);
                }
            }
        }
    }

    /// The deliveries waiting in the partition: the last copy of each, unless the source
    /// replays its message or the retry group's commit knew it was final.
    pub fn found(&self) -> Vec<FoundAway> {
        self.last
            .iter()
            .filter(|(key, copy)| {
                !self.replayed_by_source(key) && !self.final_past.as_ref().is_some_and(|p| p.is_final(copy.offset))
            })
            .map(|(key, copy)| FoundAway {
                object: copy.object.clone(),
                trigger: key.trigger.clone(),
                action: key.action.clone(),
                mention: key.mention,
                order: (i64::from(key.origin.partition), key.origin.offset),
                due_ms: copy.due_ms,
            })
            .collect()
    }

    fn replayed_by_source(&self, key: &DeliveryKey) -> bool {
        self.source.as_ref().is_some_and(|(tp, committed)| {
            let o = &key.origin;
            *o.topic == *tp.topic && o.partition == tp.partition && o.offset >= *committed
        })
    }

    /// Whether the filter has a say on records past `offset` no more.
    pub fn done_at(&self, offset: i64) -> bool {
        offset + 1 >= self.end
    }

    /// What the record at `offset` carrying `key` is.
    pub fn verdict(&mut self, offset: i64, key: &DeliveryKey) -> Verdict {
        if offset >= self.end {
            return Verdict::Live;
        }
        if self.replayed_by_source(key) {
            self.dropped.0 += 1;
            return Verdict::ReplayedBySource;
        }
        if self.last.get(key).is_some_and(|last| last.offset > offset) {
            self.dropped.1 += 1;
            return Verdict::SupersededByCopy;
        }
        Verdict::Live
    }
}

/// The delivery a retry record's headers name, and when it is due; none for a record
/// parked by another group than `group` (theirs to deliver).
pub fn key_of(headers: Vec<(String, Vec<u8>)>, group: &str) -> Option<(DeliveryKey, i64)> {
    let r = retry::decode(headers).ok()?;
    if r.group.as_ref().is_some_and(|g| g != group) {
        return None;
    }
    let key = DeliveryKey { origin: r.origin, trigger: r.info.trigger, action: r.info.action, mention: r.info.mention };
    Some((key, r.not_before_ms))
}

/// Reads each `(partition, start, filter)` of `topic` from `start` up to the filter's end,
/// with a consumer of its own built from `settings` (assigned by hand, committing nothing),
/// and notes in the filter where the last copy of each delivery of `group` is. Stops at [`SCAN_LIMIT`];
/// copies past what it read are not known, and the records before them stay live.
pub fn scan(settings: &ClientConfig, topic: &str, group: &str, partitions: &mut [(i32, i64, &mut ReplayFilter)]) {
    let mut tpl = TopicPartitionList::new();
    for (r, start, filter) in partitions.iter() {
        if *start < filter.end {
            let _ = tpl.add_partition_offset(topic, *r, Offset::Offset(*start));
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let mut settings = settings.clone();
    settings.set("enable.partition.eof", "true").set("enable.auto.commit", "false");
    let consumer: BaseConsumer = match settings.create() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot scan the retry partitions; every record read again is delivered");
            return;
        }
    };
    if let Err(e) = consumer.assign(&tpl) {
        tracing::warn!(error = %e, "cannot scan the retry partitions; every record read again is delivered");
        return;
    }
    let mut left: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    let started = Instant::now();
    let deadline = started + SCAN_LIMIT;
    let mut records = 0u64;
    while !left.is_empty() && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let (partition, reached) = match m {
            Ok(m) => {
                records += 1;
                let headers = m
                    .headers()
                    .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default();
                if let (Some((key, due_ms)), Some((_, _, filter))) =
                    (key_of(headers, group), partitions.iter_mut().find(|(r, _, _)| *r == m.partition()))
                {
                    let object = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                    filter.scanned(key, ScannedCopy { offset: m.offset(), object, due_ms });
                }
                (m.partition(), m.offset() + 1)
            }
            // The end of what the partition holds.
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => (p, i64::MAX),
            Err(e) => {
                tracing::debug!(error = %e, "scanning the retry partitions");
                continue;
            }
        };
        if partitions.iter().any(|(r, _, f)| *r == partition && reached >= f.end) {
            left.retain(|r| *r != partition);
        }
    }
    if !left.is_empty() {
        tracing::warn!(partitions = ?left, records, "retry partitions not scanned to the end in time; copies past the scan are not known");
    } else {
        tracing::info!(
            partitions = tpl.count(),
            records,
            ms = started.elapsed().as_millis() as u64,
            "retry partitions scanned"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(offset: i64, action: &str) -> DeliveryKey {
        DeliveryKey {
            origin: Origin { topic: "changes".into(), partition: 2, offset },
            trigger: "t".into(),
            action: action.into(),
            mention: None,
        }
    }

    fn copy(offset: i64) -> ScannedCopy {
        ScannedCopy { offset, object: "UserRequest::1".into(), due_ms: 1_000 + offset }
    }

    #[test]
    fn records_the_source_replays_and_earlier_copies_are_dropped() {
        // Source partition changes/2 is read from 40; the retry partition ended at 10.
        let mut f = ReplayFilter::new(10, Some((Tp::new("changes", 2), 40)), None);
        for (offset, k) in
            [(0, key(41, "a")), (1, key(12, "a")), (2, key(12, "b")), (3, key(13, "a")), (4, key(12, "a"))]
        {
            f.scanned(k, copy(offset));
        }
        assert_eq!(f.verdict(0, &key(41, "a")), Verdict::ReplayedBySource, "41 >= 40: the source replays it");
        assert_eq!(f.verdict(1, &key(12, "a")), Verdict::SupersededByCopy, "offset 4 carries it again");
        assert_eq!(f.verdict(2, &key(12, "b")), Verdict::Live, "another action");
        assert_eq!(f.verdict(3, &key(13, "a")), Verdict::Live);
        assert_eq!(f.verdict(4, &key(12, "a")), Verdict::Live, "the last copy");
        assert_eq!(f.verdict(10, &key(41, "a")), Verdict::Live, "written after the partition was taken");
        assert!(!f.done_at(8) && f.done_at(9));
        assert_eq!(f.dropped, (1, 1));
    }

    #[test]
    fn without_the_source_position_or_past_the_scan_records_are_live() {
        let mut f = ReplayFilter::new(10, None, None);
        f.scanned(key(99, "a"), copy(0));
        f.scanned(key(99, "a"), copy(1));
        f.scanned(key(98, "a"), copy(12));
        assert_eq!(f.verdict(0, &key(99, "a")), Verdict::SupersededByCopy);
        assert_eq!(f.verdict(1, &key(99, "a")), Verdict::Live);
        assert_eq!(f.verdict(5, &key(98, "a")), Verdict::Live, "a copy past the end does not count");
        assert_eq!(f.verdict(6, &key(41, "a")), Verdict::Live);
    }

    #[test]
    fn deliveries_waiting_are_the_live_last_copies_not_known_final() {
        // Source partition changes/2 is read from 40; the retry group's commit at 0 knew
        // that offset 3 was final.
        let final_past = Progress::new(0, 5, [1, 2, 4, 5]);
        let mut f = ReplayFilter::new(10, Some((Tp::new("changes", 2), 40)), Some(final_past));
        for (offset, k) in
            [(0, key(41, "a")), (1, key(12, "a")), (2, key(12, "b")), (3, key(13, "a")), (4, key(12, "a"))]
        {
            f.scanned(k, copy(offset));
        }
        let mut found: Vec<(String, (i64, i64), i64)> =
            f.found().into_iter().map(|w| (w.action, w.order, w.due_ms)).collect();
        found.sort();
        assert_eq!(
            found,
            vec![("a".to_string(), (2, 12), 1_004), ("b".to_string(), (2, 12), 1_002)],
            "41 is replayed by the source, 13 was final, 12/a's last copy is at 4"
        );
    }
}
