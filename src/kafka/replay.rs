//! Retry records read again after a crash. A retry partition is read from the position last
//! committed under the retry group, so after a crash it replays records that were already
//! handled, and two kinds of them must not be delivered again:
//!
//! - **Superseded by the source replay.** A record whose original message lies at or past the
//!   committed position of its source partition: the source partition replays that message
//!   with all its actions, so this record's delivery happens there.
//! - **Superseded by a later copy.** A delivery parked again (it failed once more, or waited
//!   behind an earlier one of its lane) has a later record in the same partition; only the
//!   last one is live. Delivering an earlier copy too would deliver twice, and may end in a
//!   dead letter for a delivery that succeeded.
//!
//! So when a replica takes a retry partition, it notes the partition's end offset and the
//! committed position of the linked source partition, and holds the records written before
//! that end (the catch-up) until it has read them all, keeping only the live ones; then they
//! go out when due, as usual. Records written after the assignment are never held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::offsets::Tp;
use super::retry::Origin;

/// The longest a catch-up holds its records, when the end is not reached (a huge backlog
/// that flow control pauses, or records deleted by retention).
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

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

/// The catch-up of one retry partition.
#[derive(Debug)]
pub struct CatchUp<T> {
    /// End offset of the retry partition when it was taken: records below it were written
    /// before.
    end: i64,
    /// The linked source partition and the committed position its replay starts from, when
    /// it had one.
    source: Option<(Tp, i64)>,
    started: Instant,
    /// Live records so far, by delivery: (offset, due time in unix ms, item).
    held: HashMap<DeliveryKey, (i64, i64, T)>,
    /// Records dropped as superseded by the source replay, and by a later copy.
    pub dropped: (usize, usize),
}

impl<T> CatchUp<T> {
    /// The catch-up of a retry partition whose end offset is `end`, linked to `source` whose
    /// replay starts at the given committed offset (`None`: no committed offset, so nothing
    /// is known to be replayed).
    pub fn new(end: i64, source: Option<(Tp, i64)>, now: Instant) -> CatchUp<T> {
        CatchUp { end, source, started: now, held: HashMap::new(), dropped: (0, 0) }
    }

    /// Whether the record at `offset` was written before the partition was taken.
    pub fn covers(&self, offset: i64) -> bool {
        offset < self.end
    }

    /// Whether reading `offset` completes the catch-up.
    pub fn complete_at(&self, offset: i64) -> bool {
        offset + 1 >= self.end
    }

    /// Whether the catch-up has held its records for [`CATCH_UP_LIMIT`] at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= CATCH_UP_LIMIT
    }

    /// Takes a record read during the catch-up; returns the items no longer live (this one,
    /// or an earlier copy of the same delivery), to be settled as final without delivery.
    pub fn take(&mut self, offset: i64, key: DeliveryKey, due_ms: i64, item: T) -> Option<T> {
        if let Some((tp, committed)) = &self.source {
            let o = &key.origin;
            if *o.topic == *tp.topic && o.partition == tp.partition && o.offset >= *committed {
                self.dropped.0 += 1;
                return Some(item);
            }
        }
        match self.held.get(&key) {
            // Read in offset order, so this cannot happen; keep the later one anyway.
            Some((earlier, _, _)) if *earlier > offset => {
                self.dropped.1 += 1;
                Some(item)
            }
            _ => {
                let older = self.held.insert(key, (offset, due_ms, item));
                older.map(|(_, _, t)| {
                    self.dropped.1 += 1;
                    t
                })
            }
        }
    }

    /// Ends the catch-up: the live records as (due time, offset, item), in offset order.
    pub fn finish(self) -> Vec<(i64, i64, T)> {
        let mut out: Vec<(i64, i64, T)> = self.held.into_values().map(|(offset, due, t)| (due, offset, t)).collect();
        out.sort_by_key(|(_, offset, _)| *offset);
        out
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

    #[test]
    fn records_whose_message_is_replayed_and_earlier_copies_are_dropped() {
        let now = Instant::now();
        // Source partition changes/2 replays from offset 40; the retry partition ends at 10.
        let mut c = CatchUp::new(10, Some((Tp::new("changes", 2), 40)), now);
        assert!(c.covers(9) && !c.covers(10));
        assert_eq!(c.take(0, key(41, "a"), 100, "replayed"), Some("replayed"), "41 >= 40: the source replays it");
        assert_eq!(c.take(1, key(12, "a"), 100, "first copy"), None);
        assert_eq!(c.take(2, key(12, "b"), 100, "other action"), None);
        assert_eq!(c.take(3, key(13, "a"), 500, "another event"), None);
        assert_eq!(c.take(4, key(12, "a"), 900, "second copy"), Some("first copy"));
        assert!(!c.complete_at(8) && c.complete_at(9));
        assert_eq!(c.dropped, (1, 1));
        assert_eq!(c.finish(), vec![(100, 2, "other action"), (500, 3, "another event"), (900, 4, "second copy")]);
    }

    #[test]
    fn without_a_committed_source_position_only_copies_are_dropped() {
        let now = Instant::now();
        let mut c = CatchUp::new(3, None, now);
        assert_eq!(c.take(0, key(99, "a"), 1, "x"), None);
        assert_eq!(c.take(1, key(99, "a"), 2, "y"), Some("x"));
        assert!(!c.expired(now + Duration::from_secs(9)));
        assert!(c.expired(now + CATCH_UP_LIMIT));
        assert_eq!(c.finish(), vec![(2, 1, "y")]);
    }
}
