//! Lane parking: the order of deliveries of one object and action ("a lane") across long
//! retries, within a replica. Pure bookkeeping with the time passed in, so every rule is
//! tested without a clock or a broker.
//!
//! Once a delivery of a lane is handed to the durable retry stage, every later delivery of
//! that lane is handed there too, behind it, without being attempted, and written only once.
//! Deliveries coming back from the stage go strictly in source order (the order of the
//! original messages: partition and offset, or stream sequence), never in the order their
//! due times happen to fall: a delivery that comes back while an earlier one of its lane is
//! still away is held here until its turn (up to `max_held` held in all). Beyond that, a
//! stage that can read a record again by reference keeps it where it is: only the reference
//! is kept here (a few hundred bytes, up to `max_spilled`), the delivery is let go unsettled,
//! and at its turn the stage reads it again. A stage that cannot, or past `max_spilled`, gets
//! it handed back once more. So the source keeps flowing for every other object while one
//! object's endpoint is failing, that object's deliveries keep their order, and a follower
//! is not written to the stage again every time the delivery it waits for fails once more.
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

enum Slot<T, R> {
    /// In the retry stage, due back at this time (unix ms).
    Away { due_ms: i64 },
    /// Back from the stage, waiting here for the deliveries before it.
    Held(T),
    /// Back from the stage and let go: the stage reads it again by this reference at its turn.
    Spilled(R),
    /// Asked from the stage again at this time (unix ms).
    Fetching { since_ms: i64 },
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
    /// Only its reference is kept: let the delivery go unsettled; [`Parking::finished`] or
    /// [`Parking::sweep`] names the reference to read it again by at its turn.
    Spilled(T),
}

/// What goes next in a lane whose delivery before it is done.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T, R> {
    /// A held delivery: attempt it now.
    Go(T),
    /// Spilled deliveries, the first of the lane and up to [`FETCH_RUN`] more right behind
    /// it: have the stage read them again (they come back as returning, the first goes and
    /// the others are held in its wake; read one at a time, a lane of thousands would wait
    /// for a read of the stage between any two of its deliveries).
    Fetch(Vec<R>),
}

/// How many spilled deliveries of a lane are fetched together, at most.
pub const FETCH_RUN: usize = 64;

/// The parked lanes of a replica: deliveries `T`, references `R` to records of the stage.
pub struct Parking<T, R> {
    lanes: HashMap<LaneKey, BTreeMap<DeliveryId, Slot<T, R>>>,
    held: usize,
    max_held: usize,
    spilled: usize,
    max_spilled: usize,
    stale_ms: i64,
}

impl<T, R> Parking<T, R> {
    /// At most `max_held` deliveries held in memory and `max_spilled` references; a lane whose
    /// first delivery is `stale_ms` overdue is released.
    pub fn new(max_held: usize, max_spilled: usize, stale_ms: i64) -> Parking<T, R> {
        Parking { lanes: HashMap::new(), held: 0, max_held, spilled: 0, max_spilled, stale_ms }
    }

    /// Puts `slot` at `id`, keeping the counts of what it replaces and of what it is.
    fn put(&mut self, key: &LaneKey, id: DeliveryId, slot: Slot<T, R>) {
        match &slot {
            Slot::Held(_) => self.held += 1,
            Slot::Spilled(_) => self.spilled += 1,
            _ => {}
        }
        let old = self.lanes.entry(key.clone()).or_default().insert(id, slot);
        self.forget(old);
    }

    /// Counts a slot out.
    fn forget(&mut self, slot: Option<Slot<T, R>>) {
        match slot {
            Some(Slot::Held(_)) => self.held -= 1,
            Some(Slot::Spilled(_)) => self.spilled -= 1,
            _ => {}
        }
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

    /// A delivery coming back from the retry stage; `reference` is how the stage could read
    /// it again, if it can.
    pub fn arrive_returning(
        &mut self,
        key: &LaneKey,
        id: DeliveryId,
        job: T,
        reference: Option<R>,
        now_ms: i64,
    ) -> Arrival<T> {
        self.release_stale(key, now_ms);
        let first = self.lanes.get(key).is_none_or(|lane| lane.range(..id).next().is_none());
        if first {
            self.put(key, id, Slot::Active);
            return Arrival::Go(job);
        }
        if self.held < self.max_held {
            // The same record read twice (a replay) replaces its copy.
            self.put(key, id, Slot::Held(job));
            return Arrival::Held;
        }
        if let Some(reference) = reference.filter(|_| self.spilled < self.max_spilled) {
            self.put(key, id, Slot::Spilled(reference));
            return Arrival::Spilled(job);
        }
        let due_ms = self.lanes.get(key).map_or(now_ms, |lane| due_behind(lane, now_ms));
        self.put(key, id, Slot::Away { due_ms });
        Arrival::ParkBehind { job, due_ms }
    }

    /// The retry stage took `id`, due back at `due_ms`: later deliveries of the lane wait.
    pub fn parked(&mut self, key: &LaneKey, id: DeliveryId, due_ms: i64) {
        self.put(key, id, Slot::Away { due_ms });
    }

    /// `id` reached a final outcome; returns what goes next in the lane, if anything may now
    /// (a held delivery is then being attempted, a spilled one being fetched).
    pub fn finished(&mut self, key: &LaneKey, id: DeliveryId, now_ms: i64) -> Option<Next<T, R>> {
        let old = self.lanes.get_mut(key).and_then(|lane| lane.remove(&id));
        self.forget(old);
        self.release_stale(key, now_ms);
        self.next_ready(key, now_ms)
    }

    /// Releases every lane whose first delivery is overdue by `stale_ms`; returns what may
    /// go next in each lane.
    pub fn sweep(&mut self, now_ms: i64) -> Vec<(LaneKey, Next<T, R>)> {
        let keys: Vec<LaneKey> = self.lanes.keys().cloned().collect();
        let mut ready = Vec::new();
        for key in keys {
            self.release_stale(&key, now_ms);
            if let Some(next) = self.next_ready(&key, now_ms) {
                ready.push((key, next));
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

    /// References kept for deliveries let go.
    #[cfg(test)]
    pub fn spilled(&self) -> usize {
        self.spilled
    }

    /// Drops the lane's first deliveries while they are away and long overdue.
    fn release_stale(&mut self, key: &LaneKey, now_ms: i64) {
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        while let Some(entry) = lane.first_entry() {
            match entry.get() {
                Slot::Away { due_ms: since_ms } | Slot::Fetching { since_ms }
                    if now_ms > since_ms.saturating_add(self.stale_ms) =>
                {
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

    /// The first delivery of the lane when it is held (it goes now) or spilled (it is
    /// fetched now).
    fn next_ready(&mut self, key: &LaneKey, now_ms: i64) -> Option<Next<T, R>> {
        let lane = self.lanes.get_mut(key)?;
        match lane.values().next() {
            None => {
                self.lanes.remove(key);
                None
            }
            Some(Slot::Held(_)) => {
                let mut entry = lane.first_entry()?;
                let Slot::Held(job) = std::mem::replace(entry.get_mut(), Slot::Active) else { unreachable!("matched") };
                self.held -= 1;
                Some(Next::Go(job))
            }
            Some(Slot::Spilled(_)) => {
                let mut run = Vec::new();
                for slot in lane.values_mut().take(FETCH_RUN + 1) {
                    if !matches!(slot, Slot::Spilled(_)) {
                        break;
                    }
                    let Slot::Spilled(reference) = std::mem::replace(slot, Slot::Fetching { since_ms: now_ms }) else {
                        unreachable!("matched")
                    };
                    run.push(reference);
                }
                self.spilled -= run.len();
                Some(Next::Fetch(run))
            }
            Some(_) => None,
        }
    }
}

/// When a delivery parked behind the lane's others should come back: when the last of them
/// is due (or now), so that it is rarely held long.
fn due_behind<T, R>(lane: &BTreeMap<DeliveryId, Slot<T, R>>, now_ms: i64) -> i64 {
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
        let mut p: Parking<&str, u32> = Parking::new(10, 100, 600_000);
        assert_eq!(p.arrive_new(&key(), id(1), "e1", 0), Arrival::Go("e1"));
        assert!(!p.is_parked(&key()));
    }

    #[test]
    fn followers_park_once_and_come_back_in_source_order_whatever_their_due_times() {
        let mut p: Parking<&str, u32> = Parking::new(10, 100, 600_000);
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
        assert_eq!(p.arrive_returning(&k, id(3), "e3", None, 5_001), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", None, 5_002), Arrival::Held);
        assert_eq!(p.held(), 2);
        // e1 comes back: it goes; fails again, away until t=9000; the others stay held.
        assert_eq!(p.arrive_returning(&k, id(1), "e1", None, 5_003), Arrival::Go("e1"));
        p.parked(&k, id(1), 9_000);
        assert_eq!(p.held(), 2);
        assert_eq!(p.arrive_returning(&k, id(1), "e1", None, 9_000), Arrival::Go("e1"));
        // e1 delivered: e2 goes, then e3, in source order.
        assert_eq!(p.finished(&k, id(1), 9_001), Some(Next::Go("e2")));
        assert_eq!(p.finished(&k, id(2), 9_002), Some(Next::Go("e3")));
        assert_eq!(p.finished(&k, id(3), 9_003), None);
        assert!(!p.is_parked(&k));
        assert_eq!(p.held(), 0);
        // A new event of the object goes at once again.
        assert_eq!(p.arrive_new(&k, id(4), "e4", 9_004), Arrival::Go("e4"));
    }

    #[test]
    fn a_new_event_waits_behind_a_held_one() {
        let mut p: Parking<&str, u32> = Parking::new(10, 100, 600_000);
        let k = key();
        p.parked(&k, id(1), 100);
        assert_eq!(p.arrive_returning(&k, id(1), "e1", None, 100), Arrival::Go("e1"));
        // While e1 is attempted, e2 arrives from the source: behind it.
        assert!(matches!(p.arrive_new(&k, id(2), "e2", 101), Arrival::ParkBehind { .. }));
    }

    #[test]
    fn beyond_the_memory_cap_a_follower_goes_back_to_the_stage() {
        let mut p: Parking<&str, u32> = Parking::new(1, 100, 600_000);
        let k = key();
        p.parked(&k, id(1), 1_000);
        p.parked(&k, id(2), 1_000);
        p.parked(&k, id(3), 1_000);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", None, 1_000), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, id(3), "e3", None, 1_000), Arrival::ParkBehind { job: "e3", due_ms: 1_000 });
        p.parked(&k, id(3), 1_000);
        assert_eq!(p.arrive_returning(&k, id(1), "e1", None, 1_001), Arrival::Go("e1"));
        assert_eq!(p.finished(&k, id(1), 1_002), Some(Next::Go("e2")));
        // e3 is away: the lane waits for it, then it goes.
        assert_eq!(p.finished(&k, id(2), 1_003), None);
        assert_eq!(p.arrive_returning(&k, id(3), "e3", None, 1_004), Arrival::Go("e3"));
    }

    #[test]
    fn beyond_the_memory_cap_a_follower_is_kept_by_reference_and_fetched_at_its_turn() {
        // One held in memory; e3 and e4 come back while e1 is still away: kept by reference,
        // not handed to the stage again, and fetched together at their turn, going in source
        // order whatever order they are read back in.
        let mut p: Parking<&str, u32> = Parking::new(1, 100, 600_000);
        let k = key();
        for o in 1..=4 {
            p.parked(&k, id(o), 1_000);
        }
        assert_eq!(p.arrive_returning(&k, id(2), "e2", Some(20), 1_000), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, id(4), "e4", Some(40), 1_000), Arrival::Spilled("e4"));
        assert_eq!(p.arrive_returning(&k, id(3), "e3", Some(30), 1_000), Arrival::Spilled("e3"));
        assert_eq!((p.held(), p.spilled()), (1, 2));
        // e1 comes back and fails again: everything stays where it is.
        assert_eq!(p.arrive_returning(&k, id(1), "e1", Some(10), 1_001), Arrival::Go("e1"));
        p.parked(&k, id(1), 5_000);
        assert_eq!((p.held(), p.spilled()), (1, 2));
        assert_eq!(p.arrive_returning(&k, id(1), "e1", Some(10), 5_000), Arrival::Go("e1"));
        assert_eq!(p.finished(&k, id(1), 5_001), Some(Next::Go("e2")));
        assert_eq!(p.finished(&k, id(2), 5_002), Some(Next::Fetch(vec![30, 40])));
        // While e3 is fetched, a new event of the lane waits behind it.
        assert!(matches!(p.arrive_new(&k, id(5), "e5", 5_003), Arrival::ParkBehind { .. }));
        p.parked(&k, id(5), 5_003);
        // Read back in any order: the first goes, the other is held in its wake.
        assert_eq!(p.arrive_returning(&k, id(4), "e4", Some(40), 5_010), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, id(3), "e3", Some(30), 5_010), Arrival::Go("e3"));
        assert_eq!(p.finished(&k, id(3), 5_011), Some(Next::Go("e4")));
        assert_eq!(p.finished(&k, id(4), 5_021), None, "e5 is away, due at its own time");
        assert_eq!(p.arrive_returning(&k, id(5), "e5", Some(50), 5_030), Arrival::Go("e5"));
        assert_eq!(p.finished(&k, id(5), 5_031), None);
        assert!(!p.is_parked(&k));
        assert_eq!((p.held(), p.spilled()), (0, 0));
    }

    #[test]
    fn without_a_reference_or_past_the_reference_cap_a_follower_goes_back_to_the_stage() {
        let mut p: Parking<&str, u32> = Parking::new(0, 1, 600_000);
        let k = key();
        p.parked(&k, id(1), 1_000);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", None, 1_000), Arrival::ParkBehind { job: "e2", due_ms: 1_000 });
        assert_eq!(p.arrive_returning(&k, id(3), "e3", Some(3), 1_000), Arrival::Spilled("e3"));
        assert_eq!(
            p.arrive_returning(&k, id(4), "e4", Some(4), 1_000),
            Arrival::ParkBehind { job: "e4", due_ms: 1_000 }
        );
        assert_eq!(p.spilled(), 1);
    }

    #[test]
    fn a_fetch_that_never_comes_back_releases_the_lane() {
        let mut p: Parking<&str, u32> = Parking::new(0, 10, 60_000);
        let k = key();
        p.parked(&k, id(1), 0);
        p.parked(&k, id(2), 0);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", Some(2), 0), Arrival::Spilled("e2"));
        assert_eq!(p.arrive_returning(&k, id(1), "e1", Some(1), 0), Arrival::Go("e1"));
        assert_eq!(p.finished(&k, id(1), 1), Some(Next::Fetch(vec![2])));
        assert!(p.sweep(30_000).is_empty(), "not stale yet");
        assert!(p.sweep(60_002).is_empty());
        assert!(!p.is_parked(&k), "released");
    }

    #[test]
    fn a_lane_whose_head_never_comes_back_is_released() {
        let mut p: Parking<&str, u32> = Parking::new(10, 100, 60_000);
        let k = key();
        p.parked(&k, id(1), 1_000);
        p.parked(&k, id(2), 1_000);
        assert_eq!(p.arrive_returning(&k, id(2), "e2", None, 1_000), Arrival::Held);
        assert!(p.sweep(30_000).is_empty(), "not stale yet");
        assert_eq!(p.sweep(61_001), vec![(k.clone(), Next::Go("e2"))]);
        assert_eq!(p.finished(&k, id(2), 61_002), None);
        assert!(!p.is_parked(&k));
    }

    #[test]
    fn a_return_unknown_here_takes_its_place_in_source_order() {
        // After a restart nothing is known: a record coming back goes unless an earlier
        // delivery of its lane is known to be away.
        let mut p: Parking<&str, u32> = Parking::new(10, 100, 600_000);
        let k = key();
        assert_eq!(p.arrive_returning(&k, id(7), "e7", None, 0), Arrival::Go("e7"));
        assert_eq!(p.arrive_returning(&k, id(9), "e9", None, 0), Arrival::Held);
        assert_eq!(p.finished(&k, id(7), 1), Some(Next::Go("e9")));
    }

    #[test]
    fn deliveries_of_one_event_to_the_same_action_keep_trigger_order() {
        let mut p: Parking<&str, u32> = Parking::new(10, 100, 600_000);
        let k = key();
        let a = DeliveryId { seq: Seq(0, 5), trigger: 0, mention: None };
        let b = DeliveryId { seq: Seq(0, 5), trigger: 1, mention: None };
        p.parked(&k, a, 10);
        p.parked(&k, b, 10);
        assert_eq!(p.arrive_returning(&k, b, "b", None, 10), Arrival::Held);
        assert_eq!(p.arrive_returning(&k, a, "a", None, 10), Arrival::Go("a"));
        assert_eq!(p.finished(&k, a, 11), Some(Next::Go("b")));
    }
}
