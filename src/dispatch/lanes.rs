//! Lane parking: the order of deliveries of one object and action ("a lane") across long
//! retries, within a replica. Pure bookkeeping with the time passed in, so every rule is
//! tested without a clock or a broker.
//!
//! Once a delivery of a lane is handed to the durable retry stage, every later delivery of
//! that lane is handed there too, behind it, without being attempted, and written only once.
//! Deliveries coming back from the stage go strictly in source order (the order of the
//! original messages: partition and offset, or stream sequence), never in the order their
//! due times happen to fall: a delivery that comes back while an earlier one of its lane is
//! still away is held here until its turn (up to `max_held` held in all; beyond that it is
//! handed back to the stage once more). So the source keeps flowing for every other object
//! while one object's endpoint is failing, and that object's deliveries keep their order.
//!
//! A lane whose first delivery does not come back within `stale_ms` of its due time (its
//! partition moved to another replica, its record was consumed elsewhere) is released, so
//! that it cannot hold the lane forever.

use std::collections::{BTreeMap, HashMap};

/// A lane: the object (`class::key`) and the action index.
pub type LaneKey = (String, usize);

/// Where a message sits in its source: (partition, offset) for Kafka, (0, stream sequence)
/// for JetStream, (0, line) for a file. Only compared within one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub i64, pub i64);

/// One delivery within its lane: the message's place, then trigger and mention (one event
/// may bring several deliveries to the same action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId {
    /// The original message's place in the source.
    pub seq: Seq,
    /// Trigger index.
    pub trigger: usize,
    /// Mention index, for mention triggers.
    pub mention: Option<usize>,
}

enum Slot<T> {
    /// In the retry stage, due back at this time (unix ms).
    Away { due_ms: i64 },
    /// Back from the stage, waiting here for the deliveries before it.
    Held(T),
    /// Being attempted.
    Active,
}

/// What to do with a delivery that arrives at its lane.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<T> {
    /// Attempt it now.
    Go(T),
    /// Hand it to the retry stage without attempting it, due at `due_ms`; then call
    /// [`Parking::parked`].
    ParkBehind {
        /// The delivery.
        job: T,
        /// When it should come back (unix ms).
        due_ms: i64,
    },
    /// Kept here; [`Parking::finished`] or [`Parking::sweep`] hands it back at its turn.
    Held,
}

/// The parked lanes of a replica.
pub struct Parking<T> {
    lanes: HashMap<LaneKey, BTreeMap<DeliveryId, Slot<T>>>,
    held: usize,
    max_held: usize,
    stale_ms: i64,
}

impl<T> Parking<T> {
    /// At most `max_held` deliveries held in memory; a lane whose first delivery is `stale_ms`
    /// overdue is released.
    pub fn new(max_held: usize, stale_ms: i64) -> Parking<T> {
        Parking { lanes: HashMap::new(), held: 0, max_held, stale_ms }
    }

    /// A delivery read from the source for the first time.
    pub fn arrive_new(&mut self, key: &LaneKey, id: DeliveryId, job: T, now_ms: i64) -> Arrival<T> {
        self.release_stale(key, now_ms);
        match self.lanes.get(key) {
            Some(lane) if lane.range(..id).next().is_some() => {
                Arrival::ParkBehind { job, due_ms: due_behind(lane, now_ms) }
            }
            _ => Arrival::Go(job),
        }
    }

    /// A delivery coming back from the retry stage.
    pub fn arrive_returning(&mut self, key: &LaneKey, id: DeliveryId, job: T, now_ms: i64) -> Arrival<T> {
        self.release_stale(key, now_ms);
        let lane = self.lanes.entry(key.clone()).or_default();
        if lane.range(..id).next().is_none() {
            lane.insert(id, Slot::Active);
            return Arrival::Go(job);
        }
        if self.held < self.max_held {
            if let Some(Slot::Held(_)) = lane.insert(id, Slot::Held(job)) {
                // The same record read twice (a replay): keep one.
                self.held -= 1;
            }
            self.held += 1;
            return Arrival::Held;
        }
        let due_ms = due_behind(lane, now_ms);
        lane.insert(id, Slot::Away { due_ms });
        Arrival::ParkBehind { job, due_ms }
    }

    /// The retry stage took `id`, due back at `due_ms`: later deliveries of the lane wait.
    pub fn parked(&mut self, key: &LaneKey, id: DeliveryId, due_ms: i64) {
        if let Some(Slot::Held(_)) = self.lanes.entry(key.clone()).or_default().insert(id, Slot::Away { due_ms }) {
            self.held -= 1;
        }
    }

    /// `id` reached a final outcome; returns the next delivery of the lane that may go now
    /// (it is then being attempted).
    pub fn finished(&mut self, key: &LaneKey, id: DeliveryId, now_ms: i64) -> Option<T> {
        if let Some(lane) = self.lanes.get_mut(key) {
            if let Some(Slot::Held(_)) = lane.remove(&id) {
                self.held -= 1;
            }
        }
        self.release_stale(key, now_ms);
        self.next_ready(key)
    }

    /// Releases every lane whose first delivery is overdue by `stale_ms`; returns the held
    /// deliveries that may go now.
    pub fn sweep(&mut self, now_ms: i64) -> Vec<(LaneKey, T)> {
        let keys: Vec<LaneKey> = self.lanes.keys().cloned().collect();
        let mut ready = Vec::new();
        for key in keys {
            self.release_stale(&key, now_ms);
            if let Some(job) = self.next_ready(&key) {
                ready.push((key, job));
            }
        }
        ready
    }

    /// Whether any delivery of the lane is parked, held or being attempted after a return.
    #[cfg(test)]
    pub fn is_parked(&self, key: &LaneKey) -> bool {
        self.lanes.get(key).is_some_and(|l| !l.is_empty())
    }

    /// Deliveries held in memory.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// Drops the lane's first deliveries while they are away and long overdue.
    fn release_stale(&mut self, key: &LaneKey, now_ms: i64) {
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        while let Some(entry) = lane.first_entry() {
            match entry.get() {
                Slot::Away { due_ms } if now_ms > due_ms.saturating_add(self.stale_ms) => {
                    tracing::warn!(lane = %key.0, "a parked delivery did not come back in time; the deliveries behind it go on");
                    entry.remove();
                }
                _ => break,
            }
        }
        if lane.is_empty() {
            self.lanes.remove(key);
        }
    }

    /// The first delivery of the lane when it is held: it goes now.
    fn next_ready(&mut self, key: &LaneKey) -> Option<T> {
        let lane = self.lanes.get_mut(key)?;
        let Some(mut entry) = lane.first_entry() else {
            self.lanes.remove(key);
            return None;
        };
        if !matches!(entry.get(), Slot::Held(_)) {
            return None;
        }
        let Slot::Held(job) = std::mem::replace(entry.get_mut(), Slot::Active) else { unreachable!("checked above") };
        self.held -= 1;
        Some(job)
    }
}

/// When a delivery parked behind the lane's others should come back: when the last of them
/// is due (or now), so that it is rarely held long.
fn due_behind<T>(lane: &BTreeMap<DeliveryId, Slot<T>>, now_ms: i64) -> i64 {
    lane.values()
        .filter_map(|s| match s {
            Slot::Away { due_ms } => Some(*due_ms),
            _ => None,
        })
        .max()
        .unwrap_or(now_ms)
        .max(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(offset: i64) -> DeliveryId {
        DeliveryId { seq: Seq(0, offset), trigger: 0, mention: None }
    }

    fn key() -> LaneKey {
        ("UserRequest::1".into(), 0)
    }

    #[test]
    fn a_free_lane_goes_at_once() {
        let mut p: Parking<&str> = Parking::new(10, 600_000);
        assert_eq!(p.arrive_new(&key(), id(1), "e1", 0), Arrival::Go("e1"));
        assert!(!p.is_parked(&key()));
    }

    #[test]
    fn followers_park_once_and_come_back_in_source_order_whatever_their_due_times() {
        let mut p: Parking<&str> = Parking::new(10, 600_000);
        let k = key();
        // e1 failed its quick attempts: away until t=5000.
        assert_eq!(p.arrive_new(&k, id(1), "e1", 0), Arrival::Go("e1"));
        p.parked(&k, id(1), 5_000);
        // e2, e3 arrive: parked behind, due with e1, without being attempted.
        assert_eq!(p.arrive_new(&k, id(2), "e2", 10), Arrival::ParkBehind { job: "e2", due_ms: 5_000 });
        p.parked(&k, id(2), 5_000);
        assert_eq!(p.arrive_new(&k, id(3), "e3", 20), Arrival::ParkBehind { job: "e3", due_ms: 5_000 });
        p.parked(&k, id(3), 5_000);
        // e3 comes back first, then e2: both held, neither rewritten.
        assert_eq!(p.arrive_returning(&k, id(3), "e3", 5_001), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", 5_002), Arrival::Held);
        assert_eq!(p.held(), 2);
        // e1 comes back: it goes; fails again, away until t=9000; the others stay held.
        assert_eq!(p.arrive_returning(&k, id(1), "e1", 5_003), Arrival::Go("e1"));
        p.parked(&k, id(1), 9_000);
        assert_eq!(p.held(), 2);
        assert_eq!(p.arrive_returning(&k, id(1), "e1", 9_000), Arrival::Go("e1"));
        // e1 delivered: e2 goes, then e3, in source order.
        assert_eq!(p.finished(&k, id(1), 9_001), Some("e2"));
        assert_eq!(p.finished(&k, id(2), 9_002), Some("e3"));
        assert_eq!(p.finished(&k, id(3), 9_003), None);
        assert!(!p.is_parked(&k));
        assert_eq!(p.held(), 0);
        // A new event of the object goes at once again.
        assert_eq!(p.arrive_new(&k, id(4), "e4", 9_004), Arrival::Go("e4"));
    }

    #[test]
    fn a_new_event_waits_behind_a_held_one() {
        let mut p: Parking<&str> = Parking::new(10, 600_000);
        let k = key();
        p.parked(&k, id(1), 100);
        assert_eq!(p.arrive_returning(&k, id(1), "e1", 100), Arrival::Go("e1"));
        // While e1 is attempted, e2 arrives from the source: behind it.
        assert!(matches!(p.arrive_new(&k, id(2), "e2", 101), Arrival::ParkBehind { .. }));
    }

    #[test]
    fn beyond_the_memory_cap_a_follower_goes_back_to_the_stage() {
        let mut p: Parking<&str> = Parking::new(1, 600_000);
        let k = key();
        p.parked(&k, id(1), 1_000);
        p.parked(&k, id(2), 1_000);
        p.parked(&k, id(3), 1_000);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", 1_000), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, id(3), "e3", 1_000), Arrival::ParkBehind { job: "e3", due_ms: 1_000 });
        p.parked(&k, id(3), 1_000);
        assert_eq!(p.arrive_returning(&k, id(1), "e1", 1_001), Arrival::Go("e1"));
        assert_eq!(p.finished(&k, id(1), 1_002), Some("e2"));
        // e3 is away: the lane waits for it, then it goes.
        assert_eq!(p.finished(&k, id(2), 1_003), None);
        assert_eq!(p.arrive_returning(&k, id(3), "e3", 1_004), Arrival::Go("e3"));
    }

    #[test]
    fn a_lane_whose_head_never_comes_back_is_released() {
        let mut p: Parking<&str> = Parking::new(10, 60_000);
        let k = key();
        p.parked(&k, id(1), 1_000);
        p.parked(&k, id(2), 1_000);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", 1_000), Arrival::Held);
        assert!(p.sweep(30_000).is_empty(), "not stale yet");
        assert_eq!(p.sweep(61_001), vec![(k.clone(), "e2")]);
        assert_eq!(p.finished(&k, id(2), 61_002), None);
        assert!(!p.is_parked(&k));
    }

    #[test]
    fn a_return_unknown_here_takes_its_place_in_source_order() {
        // After a restart nothing is known: a record coming back goes unless an earlier
        // delivery of its lane is known to be away.
        let mut p: Parking<&str> = Parking::new(10, 600_000);
        let k = key();
        assert_eq!(p.arrive_returning(&k, id(7), "e7", 0), Arrival::Go("e7"));
        assert_eq!(p.arrive_returning(&k, id(9), "e9", 0), Arrival::Held);
        assert_eq!(p.finished(&k, id(7), 1), Some("e9"));
    }

    #[test]
    fn deliveries_of_one_event_to_the_same_action_keep_trigger_order() {
        let mut p: Parking<&str> = Parking::new(10, 600_000);
        let k = key();
        let a = DeliveryId { seq: Seq(0, 5), trigger: 0, mention: None };
        let b = DeliveryId { seq: Seq(0, 5), trigger: 1, mention: None };
        p.parked(&k, a, 10);
        p.parked(&k, b, 10);
        assert_eq!(p.arrive_returning(&k, b, "b", 10), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, a, "a", 10), Arrival::Go("a"));
        assert_eq!(p.finished(&k, a, 11), Some("b"));
    }
}
