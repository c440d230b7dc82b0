//! Source positions. For each owned partition, the offsets handed to the pipeline whose
//! outcomes are not all final yet; the position that may be committed is the first of them
//! (or just past the last offset read when none is open). This is the one place where a
//! bug loses events: a position is never moved past an offset that is not final.
//!
//! A position comes with what is known past it ([`Progress`]): offsets read after it that are
//! final already. It is committed with the position, and a later assignment skips them.
//!
//! Each assignment of a partition gets a new generation. A message remembers the
//! generation it was read under, and its outcome is ignored when the partition has since
//! been revoked (and maybe assigned again): the new owner, or the new assignment, reads
//! it again from the committed position, so nothing is lost and nothing is committed on
//! behalf of a partition this replica no longer owns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::progress::Progress;

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tp {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl Tp {
    /// A topic partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Tp {
        Tp { topic: topic.into(), partition }
    }
}

impl fmt::Display for Tp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Positions of the partitions one consumer owns.
#[derive(Default)]
pub struct Tracker {
    inner: Mutex<Inner>,
    /// Signalled whenever a message settles, for the revoke and shutdown waits.
    settled: Condvar,
}

#[derive(Default)]
struct Inner {
    parts: HashMap<Tp, Part>,
    next_generation: u64,
}

struct Part {
    generation: u64,
    /// Revoked or shutting down: no new work is taken, outcomes still count.
    revoking: bool,
    /// Offsets read whose outcomes are not final.
    open: BTreeMap<i64, State>,
    last_read: Option<i64>,
    /// What the committed position said past itself when the partition was taken.
    earlier: Option<Progress>,
    /// Something changed since the last [`Tracker::take_storable`].
    changed: bool,
    /// Read and not settled.
    in_flight: usize,
    /// Handed to the pipeline and not settled: what a revoke waits for.
    handed: usize,
    /// Offsets held by lane parking: still open, no longer counted in `in_flight`.
    held: BTreeSet<i64>,
}

/// Where a message that is not final is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Read, not yet handed to the pipeline (queued, or a retry record not yet due).
    Read,
    /// In the pipeline.
    Handed,
    /// Dropped unsettled: to be read again after a restart or rebalance.
    Abandoned,
}

impl Part {
    /// The next offset to read after a restart: the first one not final.
    fn position(&self) -> Option<i64> {
        self.open.keys().next().copied().or(self.last_read.map(|o| o + 1))
    }

    /// The position and what is known past it.
    fn committable(&self) -> Option<Position> {
        let next = self.position()?;
        let own = Progress::new(next, self.last_read.unwrap_or(next - 1), self.open.keys().copied());
        let progress = match &self.earlier {
            Some(earlier) => own.extended_by(earlier),
            None => own,
        };
        Some(Position { next, progress })
    }
}

/// A position to commit: the next offset to read, and what is known past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The first offset not final.
    pub next: i64,
    /// Offsets past it that are final.
    pub progress: Progress,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Arc<Tracker> {
        Arc::new(Tracker::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts owning `tp`; returns the generation of this assignment.
    pub fn assign(&self, tp: Tp) -> u64 {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let part = Part {
            generation,
            revoking: false,
            open: BTreeMap::new(),
            last_read: None,
            earlier: None,
            changed: false,
            in_flight: 0,
            handed: 0,
            held: BTreeSet::new(),
        };
        inner.parts.insert(tp, part);
        generation
    }

    /// The generation under which new messages of `tp` may be taken; `None` when `tp` is
    /// not owned or is being revoked.
    pub fn current(&self, tp: &Tp) -> Option<u64> {
        self.lock().parts.get(tp).filter(|p| !p.revoking).map(|p| p.generation)
    }

    /// Notes what the committed position of `tp` said past itself: those offsets are final
    /// and [`Tracker::read`] skips them.
    pub fn resume(&self, tp: &Tp, earlier: Progress) {
        if let Some(part) = self.lock().parts.get_mut(tp) {
            part.earlier = Some(earlier);
        }
    }

    /// Records that `offset` was read and is now in flight. `None` when the partition is not
    /// owned under `generation` any more, or when the message is final already (a commit
    /// said so: it was read before, by this replica or another, and must not be delivered
    /// again).
    pub fn read(self: &Arc<Self>, tp: &Tp, generation: u64, offset: i64) -> Option<Ticket> {
        let mut inner = self.lock();
        let part = inner.parts.get_mut(tp).filter(|p| p.generation == generation && !p.revoking)?;
        part.last_read = Some(part.last_read.map_or(offset, |l| l.max(offset)));
        part.changed = true;
        if part.earlier.as_ref().is_some_and(|e| e.is_final(offset)) {
            return None;
        }
        part.open.insert(offset, State::Read);
        part.in_flight += 1;
        Some(Ticket { tracker: Arc::clone(self), tp: tp.clone(), generation, offset, done: false })
    }

    /// Takes back a message let go unsettled (lane parking kept only a reference to it), to
    /// be handed over again: its generation and a new ticket. `None` when the partition is not
    /// owned any more or the message is not waiting to be read again (settled since, or taken
    /// back already), so one message is never in the pipeline twice.
    pub fn read_again(self: &Arc<Self>, tp: &Tp, offset: i64) -> Option<(u64, Ticket)> {
        let mut inner = self.lock();
        let part = inner.parts.get_mut(tp).filter(|p| !p.revoking)?;
        let state = part.open.get_mut(&offset).filter(|s| **s == State::Abandoned)?;
        *state = State::Read;
        part.in_flight += 1;
        let generation = part.generation;
        Some((generation, Ticket { tracker: Arc::clone(self), tp: tp.clone(), generation, offset, done: false }))
    }

    /// Records that the message at `offset` goes into the pipeline now; `false` when its
    /// partition was revoked since it was read (then it must be dropped: the new owner reads
    /// it again). Checked and recorded under one lock, so a revoke either waits for the
    /// message or never sees it handed over.
    pub fn hand_over(&self, tp: &Tp, generation: u64, offset: i64) -> bool {
        let mut inner = self.lock();
        let Some(part) = inner.parts.get_mut(tp).filter(|p| p.generation == generation && !p.revoking) else {
            return false;
        };
        match part.open.get_mut(&offset) {
            Some(state @ State::Read) => {
                *state = State::Handed;
                part.handed += 1;
                true
            }
            _ => false,
        }
    }

    fn release(&self, tp: &Tp, generation: u64, offset: i64, is_final: bool) {
        let mut inner = self.lock();
        // A settle from an earlier assignment: the partition was revoked since, and its
        // new owner reads the message again; moving this position would be wrong.
        let Some(part) = inner.parts.get_mut(tp).filter(|p| p.generation == generation) else {
            return;
        };
        let was = if is_final { part.open.remove(&offset) } else { part.open.insert(offset, State::Abandoned) };
        part.changed = true;
        if was == Some(State::Handed) {
            part.handed = part.handed.saturating_sub(1);
        }
        if !part.held.remove(&offset) {
            part.in_flight = part.in_flight.saturating_sub(1);
        }
        drop(inner);
        self.settled.notify_all();
    }

    /// The message at `offset` waits in lane parking: it stays open (its position is not
    /// released) but leaves the partition's read-ahead count, which the poller compares with
    /// the partition's share of the backlog. Parking bounds what it holds by itself; counting
    /// it here too would pause the retry partition whose next records are the ones that free
    /// the held messages, and the lanes would wait for their stale limit.
    fn hold(&self, tp: &Tp, generation: u64, offset: i64) {
        let mut inner = self.lock();
        let Some(part) = inner.parts.get_mut(tp).filter(|p| p.generation == generation) else {
            return;
        };
        if part.open.contains_key(&offset) && part.held.insert(offset) {
            part.in_flight = part.in_flight.saturating_sub(1);
        }
    }

    /// Stops taking work from `tps`; outcomes of what is in flight still count.
    pub fn begin_revoke(&self, tps: &[Tp]) {
        let mut inner = self.lock();
        for tp in tps {
            if let Some(p) = inner.parts.get_mut(tp) {
                p.revoking = true;
            }
        }
    }

    /// Stops taking work from every partition (shutdown).
    pub fn begin_revoke_all(&self) {
        for p in self.lock().parts.values_mut() {
            p.revoking = true;
        }
    }

    /// Waits until nothing of `tps` (every partition when `None`) is in the pipeline, or
    /// until `deadline`; returns how many messages are still there. Messages read and not
    /// handed over are not waited for: they are dropped, and read again.
    pub fn wait_settled(&self, tps: Option<&[Tp]>, deadline: Instant) -> usize {
        let mut inner = self.lock();
        loop {
            let in_flight: usize =
                inner.parts.iter().filter(|(tp, _)| tps.is_none_or(|t| t.contains(tp))).map(|(_, p)| p.handed).sum();
            let now = Instant::now();
            if in_flight == 0 || now >= deadline {
                return in_flight;
            }
            inner = self.settled.wait_timeout(inner, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Positions of the partitions where something was read or settled since the last call.
    pub fn take_storable(&self) -> Vec<(Tp, Position)> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for (tp, part) in inner.parts.iter_mut() {
            if std::mem::take(&mut part.changed) {
                if let Some(pos) = part.committable() {
                    out.push((tp.clone(), pos));
                }
            }
        }
        out
    }

    /// The committable position of each of `tps` (every partition when `None`) that has one.
    pub fn positions(&self, tps: Option<&[Tp]>) -> Vec<(Tp, Position)> {
        let inner = self.lock();
        inner
            .parts
            .iter()
            .filter(|(tp, _)| tps.is_none_or(|t| t.contains(tp)))
            .filter_map(|(tp, p)| p.committable().map(|pos| (tp.clone(), pos)))
            .collect()
    }

    /// Forgets `tps`: later outcomes of their messages are ignored.
    pub fn remove(&self, tps: &[Tp]) {
        let mut inner = self.lock();
        for tp in tps {
            inner.parts.remove(tp);
        }
    }

    /// Messages read and not settled, all partitions together.
    #[cfg(test)]
    pub fn backlog(&self) -> usize {
        self.lock().parts.values().map(|p| p.in_flight).sum()
    }

    /// Per owned partition: its generation and how many of its messages are read and not
    /// settled.
    pub fn backlog_by_partition(&self) -> Vec<(Tp, u64, usize)> {
        self.lock().parts.iter().map(|(tp, p)| (tp.clone(), p.generation, p.in_flight)).collect()
    }

    /// The partitions owned.
    pub fn owned(&self) -> Vec<Tp> {
        let mut tps: Vec<Tp> = self.lock().parts.keys().cloned().collect();
        tps.sort();
        tps
    }
}

/// One message in flight; settling it (or dropping it) tells the tracker.
pub struct Ticket {
    tracker: Arc<Tracker>,
    tp: Tp,
    generation: u64,
    offset: i64,
    done: bool,
}

impl Ticket {
    /// The message's outcomes are all final (`true`), or it must be read again (`false`).
    pub fn settle(mut self, is_final: bool) {
        self.done = true;
        self.tracker.release(&self.tp, self.generation, self.offset, is_final);
    }

    /// What tells the tracker that the message is held by lane parking
    /// ([`crate::source::Ack::with_hold`]).
    pub fn holder(&self) -> impl FnOnce() + Send + 'static {
        let (tracker, tp, generation, offset) =
            (Arc::clone(&self.tracker), self.tp.clone(), self.generation, self.offset);
        move || tracker.hold(&tp, generation, offset)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            // Dropped unsettled (shutdown, revoke): not final, so the position stays before it.
            self.tracker.release(&self.tp, self.generation, self.offset, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tp() -> Tp {
        Tp::new("t", 0)
    }

    fn nexts(positions: Vec<(Tp, Position)>) -> Vec<(Tp, i64)> {
        positions.into_iter().map(|(tp, p)| (tp, p.next)).collect()
    }

    #[test]
    fn the_position_waits_for_the_first_offset_not_final() {
        let t = Tracker::new();
        let g = t.assign(tp());
        let a = t.read(&tp(), g, 10).unwrap();
        let b = t.read(&tp(), g, 11).unwrap();
        let c = t.read(&tp(), g, 13).unwrap();
        assert_eq!(nexts(t.take_storable()), vec![(tp(), 10)]);
        c.settle(true);
        b.settle(true);
        assert_eq!(nexts(t.take_storable()), vec![(tp(), 10)], "10 is still in flight");
        a.settle(true);
        // 12 was never read (a gap in the log, e.g. a transaction marker): the position
        // goes just past the last offset read.
        assert_eq!(nexts(t.take_storable()), vec![(tp(), 14)]);
        assert!(t.take_storable().is_empty(), "nothing changed since");
        assert_eq!(t.backlog(), 0);
    }

    #[test]
    fn a_held_message_keeps_the_position_but_leaves_the_read_ahead_count() {
        let t = Tracker::new();
        let g = t.assign(tp());
        let a = t.read(&tp(), g, 0).unwrap();
        let b = t.read(&tp(), g, 1).unwrap();
        let hold = a.holder();
        hold();
        assert_eq!(t.backlog(), 1, "only the one being worked on counts");
        let again = b.holder();
        again();
        assert_eq!(t.backlog(), 0);
        b.settle(true);
        assert_eq!(t.backlog(), 0, "settling a held message does not count it twice");
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 0)], "the held one still holds the position");
        a.settle(true);
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 2)]);
        let c = t.read(&tp(), g, 2).unwrap();
        assert_eq!(t.backlog(), 1);
        drop(c);
    }

    #[test]
    fn an_abandoned_message_holds_the_position_but_is_not_in_flight() {
        let t = Tracker::new();
        let g = t.assign(tp());
        let a = t.read(&tp(), g, 0).unwrap();
        let b = t.read(&tp(), g, 1).unwrap();
        drop(a);
        b.settle(true);
        assert_eq!(t.backlog(), 0);
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 0)]);
        let start = Instant::now();
        assert_eq!(t.wait_settled(None, start + Duration::from_secs(5)), 0);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_message_let_go_is_taken_back_once_and_holds_the_position_meanwhile() {
        let t = Tracker::new();
        let g = t.assign(tp());
        let first = t.read(&tp(), g, 0).unwrap();
        let let_go = t.read(&tp(), g, 1).unwrap();
        let third = t.read(&tp(), g, 2).unwrap();
        assert!(t.read_again(&tp(), 1).is_none(), "still in flight: not taken twice");
        drop(let_go);
        first.settle(true);
        third.settle(true);
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 1)], "the message let go holds the position");
        assert_eq!(t.backlog(), 0, "and is not in the read-ahead");
        let (generation, again) = t.read_again(&tp(), 1).unwrap();
        assert_eq!(generation, g);
        assert!(t.read_again(&tp(), 1).is_none(), "taken back once");
        assert!(t.read_again(&tp(), 0).is_none(), "final messages are not taken back");
        assert!(t.hand_over(&tp(), g, 1));
        again.settle(true);
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 3)]);
    }

    #[test]
    fn outcomes_from_an_earlier_assignment_are_ignored() {
        let t = Tracker::new();
        let g1 = t.assign(tp());
        let old = t.read(&tp(), g1, 5).unwrap();
        t.begin_revoke(&[tp()]);
        assert!(t.current(&tp()).is_none(), "no new work while revoking");
        assert!(t.read(&tp(), g1, 6).is_none());
        t.remove(&[tp()]);
        let g2 = t.assign(tp());
        assert_ne!(g1, g2);
        let fresh = t.read(&tp(), g2, 3).unwrap();
        old.settle(true);
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 3)], "the old settle must not move the new assignment");
        fresh.settle(true);
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 4)]);
    }

    #[test]
    fn revoke_waits_for_what_the_pipeline_has_until_the_deadline() {
        let t = Tracker::new();
        let g = t.assign(tp());
        let a = t.read(&tp(), g, 0).unwrap();
        let _b = t.read(&tp(), g, 1).unwrap();
        let _queued = t.read(&tp(), g, 2).unwrap();
        assert!(t.hand_over(&tp(), g, 0));
        assert!(t.hand_over(&tp(), g, 1));
        t.begin_revoke(&[tp()]);
        assert!(!t.hand_over(&tp(), g, 2), "nothing is handed over once revoking");
        let settler = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            a.settle(true);
        });
        let left = t.wait_settled(Some(&[tp()]), Instant::now() + Duration::from_millis(300));
        settler.join().unwrap();
        assert_eq!(left, 1, "offset 1 never settles; offset 2 is not waited for");
        assert_eq!(nexts(t.positions(Some(&[tp()]))), vec![(tp(), 1)]);
    }

    #[test]
    fn what_a_commit_knew_past_its_position_is_skipped_and_carried_on() {
        let t = Tracker::new();
        let g = t.assign(tp());
        let a = t.read(&tp(), g, 10).unwrap();
        let _b = t.read(&tp(), g, 11).unwrap();
        t.read(&tp(), g, 12).unwrap().settle(true);
        t.read(&tp(), g, 13).unwrap().settle(true);
        let _e = t.read(&tp(), g, 14).unwrap();
        a.settle(true);
        let committed = t.positions(None).pop().unwrap().1;
        assert_eq!(committed.next, 11);
        let metadata = committed.progress.encode(committed.next);
        assert_eq!(metadata, "hb1:3:3", "read up to 14; 14 is open, 12 and 13 are final");

        // Another assignment (after a crash) starts at 11 with that metadata.
        let t = Tracker::new();
        let g = t.assign(tp());
        t.resume(&tp(), Progress::decode(11, &metadata).unwrap());
        let b = t.read(&tp(), g, 11).expect("11 was not final");
        assert!(t.read(&tp(), g, 12).is_none(), "12 was final");
        assert!(t.read(&tp(), g, 13).is_none(), "13 was final");
        assert_eq!(t.backlog(), 1);
        // Not read yet: 14. What the earlier commit knew is committed on.
        let again = t.positions(None).pop().unwrap().1;
        assert_eq!((again.next, again.progress.encode(again.next)), (11, "hb1:3:3".to_string()));
        b.settle(true);
        let e = t.read(&tp(), g, 14).expect("14 was not final");
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 14)]);
        e.settle(true);
        assert_eq!(nexts(t.positions(None)), vec![(tp(), 15)]);
    }
}
