//! Timers: a slab of pending timers, a binary heap for the ones due soon,
//! and coarse buckets for the rest.
//!
//! Time is cut into buckets of 2^26 ns (about 67 ms), counted
//! from the moment the timers were created. A timer whose bucket has
//! started goes into the heap, ordered by exact deadline; a later one is
//! appended to its bucket's list. When the clock reaches a bucket, the
//! whole list moves into the heap. So the heap holds only the timers due
//! within about one bucket, however many are pending further out, and:
//!
//! * inserting a far timer is an append, cancelling any timer is O(1) (a
//!   bucketed one is swap-removed from its list; a heap entry is left
//!   behind, skipped when it surfaces, and the heap is compacted once dead
//!   entries outnumber live ones);
//! * a timer made on the loop thread carries its slab index in its
//!   [`TimerId`], so no lookup is hashed; one made through a handle is
//!   found through a map from the handle's id;
//! * [`Timers::next_deadline`] is exact when a heap timer comes first, and
//!   otherwise the start of the first bucket, at or before any deadline in
//!   it: the loop then wakes up once early, the bucket moves into the heap,
//!   and the next wait is exact.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Identifies a timer, for [`Ctx::cancel`](crate::Ctx::cancel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    /// The slab index of a timer made on the loop thread, or [`REMOTE`].
    slot: u32,
    /// Unique among the loop's ids of the same kind.
    seq: u64,
}

/// The `slot` of an id made by a handle, before the loop has seen the timer.
const REMOTE: u32 = u32::MAX;

impl TimerId {
    /// An id made off the loop thread, from the handle's counter.
    pub(crate) fn remote(n: u64) -> TimerId {
        TimerId {
            slot: REMOTE,
            seq: n,
        }
    }
}

/// What a timer runs: once, or every period.
pub(crate) enum Task<F, R> {
    Once(F),
    Every { period: Duration, f: R },
}

/// log2 of the bucket width in nanoseconds.
const BUCKET_SHIFT: u32 = 26;
/// The width of a bucket: about 67 ms.
#[cfg(test)]
const BUCKET: Duration = Duration::from_nanos(1 << BUCKET_SHIFT);

/// The end of the slab's free list.
const NONE: u32 = u32::MAX;

enum Slot<F, R> {
    Vacant {
        next_free: u32,
    },
    Pending(Entry<F, R>),
    /// Taken by `pop_expired`, not yet finished or rescheduled.
    Fired {
        seq: u64,
        remote: u64,
    },
}

struct Entry<F, R> {
    /// The id's `seq` (a handle's id maps to this through `remote`).
    seq: u64,
    /// The handle's id number, or 0.
    remote: u64,
    deadline: Instant,
    /// Insertion order, for equal deadlines; new on every (re)insertion.
    order: u64,
    place: Place,
    task: Task<F, R>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Heap,
    Bucket { bucket: u64, index: u32 },
}

pub(crate) struct Timers<F, R> {
    slab: Vec<Slot<F, R>>,
    free: u32,
    /// (deadline, order, slot): equal deadlines fire in insertion order.
    heap: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    /// Pending timers whose entry in `heap` is live.
    heap_live: usize,
    buckets: BTreeMap<u64, Vec<u32>>,
    /// Buckets up to this one have moved into the heap.
    reached: u64,
    base: Instant,
    /// Handle-made id number to slot.
    remote: HashMap<u64, u32>,
    pending: usize,
    next_seq: u64,
    next_order: u64,
}

impl<F, R> Timers<F, R> {
    pub(crate) fn new() -> Self {
        Timers {
            slab: Vec::new(),
            free: NONE,
            heap: BinaryHeap::new(),
            heap_live: 0,
            buckets: BTreeMap::new(),
            reached: 0,
            base: Instant::now(),
            remote: HashMap::new(),
            pending: 0,
            next_seq: 0,
            next_order: 0,
        }
    }

    /// Adds a timer made on the loop thread.
    pub(crate) fn insert(&mut self, deadline: Instant, task: Task<F, R>) -> TimerId {
        let (slot, seq) = self.add(0, deadline, task);
        TimerId { slot, seq }
    }

    /// Adds a timer whose id a handle made.
    pub(crate) fn insert_remote(&mut self, id: TimerId, deadline: Instant, task: Task<F, R>) {
        debug_assert_eq!(id.slot, REMOTE);
        let (slot, _) = self.add(id.seq, deadline, task);
        self.remote.insert(id.seq, slot);
    }

    fn add(&mut self, remote: u64, deadline: Instant, task: Task<F, R>) -> (u32, u64) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let slot = match self.free {
            NONE => {
                let slot = u32::try_from(self.slab.len())
                    .ok()
                    .filter(|&s| s != NONE)
                    .expect("fewer than 2^32 - 1 pending timers");
                self.slab.push(Slot::Vacant { next_free: NONE });
                slot
            }
            slot => {
                let Slot::Vacant { next_free } = self.slab[slot as usize] else {
                    unreachable!("the free list holds vacant slots")
                };
                self.free = next_free;
                slot
            }
        };
        self.schedule(slot, seq, remote, deadline, task);
        (slot, seq)
    }

    /// Makes `slot` (vacant or fired) the pending timer `seq`, due at
    /// `deadline`.
    fn schedule(&mut self, slot: u32, seq: u64, remote: u64, deadline: Instant, task: Task<F, R>) {
        self.next_order += 1;
        let order = self.next_order;
        let bucket = self.bucket_of(deadline);
        let place = if bucket <= self.reached {
            self.heap.push(Reverse((deadline, order, slot)));
            self.heap_live += 1;
            Place::Heap
        } else {
            let list = self.buckets.entry(bucket).or_default();
            list.push(slot);
            Place::Bucket {
                bucket,
                index: (list.len() - 1) as u32,
            }
        };
        self.slab[slot as usize] = Slot::Pending(Entry {
            seq,
            remote,
            deadline,
            order,
            place,
            task,
        });
        self.pending += 1;
    }

    /// The slot of `id`, if it is pending or fired.
    fn resolve(&self, id: TimerId) -> Option<u32> {
        if id.slot == REMOTE {
            return self.remote.get(&id.seq).copied();
        }
        match self.slab.get(id.slot as usize)? {
            Slot::Pending(e) if e.seq == id.seq => Some(id.slot),
            Slot::Fired { seq, .. } if *seq == id.seq => Some(id.slot),
            _ => None,
        }
    }

    /// Removes a pending timer; false if it already fired or was cancelled.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        let Some(slot) = self.resolve(id) else {
            return false;
        };
        let (remote, place) = match &self.slab[slot as usize] {
            Slot::Pending(e) => (e.remote, e.place),
            // Fired: due in this iteration, past cancelling.
            _ => return false,
        };
        let cancelled = self.vacate(slot, remote);
        self.pending -= 1;
        match place {
            Place::Heap => {
                self.heap_live -= 1;
                if self.heap.len() > 64 && self.heap.len() > 2 * self.heap_live {
                    let slab = &self.slab;
                    self.heap
                        .retain(|&Reverse((_, order, s))| is_live(slab, s, order));
                }
            }
            Place::Bucket { bucket, index } => self.unlink(bucket, index),
        }
        // The task is dropped last, with the timers consistent again.
        drop(cancelled);
        true
    }

    /// Takes slot `index` out of `bucket`'s list.
    fn unlink(&mut self, bucket: u64, index: u32) {
        let list = self
            .buckets
            .get_mut(&bucket)
            .expect("a bucketed timer's bucket exists");
        list.swap_remove(index as usize);
        if let Some(&moved) = list.get(index as usize) {
            let Slot::Pending(e) = &mut self.slab[moved as usize] else {
                unreachable!("bucket lists hold pending slots")
            };
            e.place = Place::Bucket { bucket, index };
        } else if list.is_empty() {
            self.buckets.remove(&bucket);
        }
    }

    /// The earliest live deadline, or the start of the first bucket if that
    /// comes first (never later than the earliest deadline).
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_dead();
        let heap = self.heap.peek().map(|Reverse((d, _, _))| *d);
        let bucket = self
            .buckets
            .first_key_value()
            .map(|(&b, _)| self.bucket_start(b));
        match (heap, bucket) {
            (Some(h), Some(b)) => Some(h.min(b)),
            (h, b) => h.or(b),
        }
    }

    /// Takes the earliest timer if its deadline is at or before `now`. Its
    /// id stays valid, and nothing else can take its slot, until
    /// [`finish`](Timers::finish) or [`reschedule`](Timers::reschedule).
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(TimerId, Instant, Task<F, R>)> {
        self.reach(now);
        self.skip_dead();
        let &Reverse((deadline, _, slot)) = self.heap.peek()?;
        if deadline > now {
            return None;
        }
        self.heap.pop();
        self.heap_live -= 1;
        self.pending -= 1;
        let (seq, remote) = match &self.slab[slot as usize] {
            Slot::Pending(e) => (e.seq, e.remote),
            _ => unreachable!("skip_dead left a live entry on top"),
        };
        let Slot::Pending(entry) =
            std::mem::replace(&mut self.slab[slot as usize], Slot::Fired { seq, remote })
        else {
            unreachable!("checked above")
        };
        let id = match remote {
            0 => TimerId { slot, seq },
            n => TimerId::remote(n),
        };
        Some((id, deadline, entry.task))
    }

    /// Schedules a fired timer again, under the same id.
    pub(crate) fn reschedule(&mut self, id: TimerId, deadline: Instant, task: Task<F, R>) {
        let (slot, seq, remote) = self.fired(id);
        self.schedule(slot, seq, remote, deadline, task);
    }

    /// Releases a fired timer that will not run again.
    pub(crate) fn finish(&mut self, id: TimerId) {
        let (slot, _, remote) = self.fired(id);
        self.vacate(slot, remote);
    }

    /// The slot, seq and handle id number of the fired timer `id`.
    fn fired(&self, id: TimerId) -> (u32, u64, u64) {
        match self
            .resolve(id)
            .map(|slot| (slot, &self.slab[slot as usize]))
        {
            Some((slot, &Slot::Fired { seq, remote })) => (slot, seq, remote),
            _ => panic!("{id:?} is not a fired timer"),
        }
    }

    /// Frees `slot` (and the handle id number `remote`, if not 0), returning
    /// what it held.
    fn vacate(&mut self, slot: u32, remote: u64) -> Slot<F, R> {
        if remote != 0 {
            self.remote.remove(&remote);
        }
        let vacant = Slot::Vacant {
            next_free: self.free,
        };
        self.free = slot;
        std::mem::replace(&mut self.slab[slot as usize], vacant)
    }

    /// The number of pending timers.
    pub(crate) fn len(&self) -> usize {
        self.pending
    }

    /// Moves every bucket that has started by `now` into the heap.
    fn reach(&mut self, now: Instant) {
        let now_bucket = self.bucket_of(now);
        if now_bucket <= self.reached {
            return;
        }
        self.reached = now_bucket;
        while let Some(first) = self.buckets.first_entry() {
            if *first.key() > now_bucket {
                break;
            }
            let slots = first.remove();
            self.heap_live += slots.len();
            let slab = &mut self.slab;
            let entries: Vec<_> = slots
                .into_iter()
                .map(|slot| {
                    let Slot::Pending(e) = &mut slab[slot as usize] else {
                        unreachable!("bucket lists hold pending slots")
                    };
                    e.place = Place::Heap;
                    Reverse((e.deadline, e.order, slot))
                })
                .collect();
            // A large bucket is heapified in O(n) rather than pushed entry
            // by entry (`append` picks whichever is cheaper).
            self.heap.append(&mut BinaryHeap::from(entries));
        }
    }

    fn bucket_of(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos >> BUCKET_SHIFT).unwrap_or(u64::MAX >> BUCKET_SHIFT)
    }

    fn bucket_start(&self, bucket: u64) -> Instant {
        let offset = Duration::from_nanos(bucket.min(u64::MAX >> BUCKET_SHIFT) << BUCKET_SHIFT);
        self.base + offset
    }

    /// Drops heap entries whose timer was cancelled, fired or rescheduled.
    fn skip_dead(&mut self) {
        while let Some(&Reverse((_, order, slot))) = self.heap.peek() {
            if is_live(&self.slab, slot, order) {
                return;
            }
            self.heap.pop();
        }
    }
}

/// Whether the heap entry (`order`, `slot`) is its timer's current one.
fn is_live<F, R>(slab: &[Slot<F, R>], slot: u32, order: u64) -> bool {
    matches!(&slab[slot as usize], Slot::Pending(e) if e.order == order && e.place == Place::Heap)
}

/// The next deadline of a repeating timer that was due at `due` and ran at
/// `now`: one period on, or if that is already past, one period from now, so
/// that an overdue timer fires once rather than in a burst.
pub(crate) fn next_period(due: Instant, period: Duration, now: Instant) -> Instant {
    let next = due + period;
    if next > now { next } else { now + period }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    type T = Timers<u32, ()>;

    fn pop_all(t: &mut T, at: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((id, _, task)) = t.pop_expired(at) {
            t.finish(id);
            match task {
                Task::Once(v) => out.push(v),
                Task::Every { .. } => unreachable!(),
            }
        }
        out
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut t = T::new();
        let near = Instant::now();
        let far = near + 3 * BUCKET;
        for i in 0..5 {
            t.insert(near, Task::Once(i));
            t.insert(far, Task::Once(10 + i));
        }
        assert_eq!(pop_all(&mut t, near), [0, 1, 2, 3, 4]);
        assert_eq!(pop_all(&mut t, far), [10, 11, 12, 13, 14]);
    }

    #[test]
    fn nothing_fires_before_its_deadline() {
        let mut t = T::new();
        let now = Instant::now();
        for at in [now + Duration::from_millis(5), now + 5 * BUCKET] {
            t.insert(at, Task::Once(1));
            assert!(t.pop_expired(at - Duration::from_nanos(1)).is_none());
            assert!(t.pop_expired(at).is_some());
        }
    }

    #[test]
    fn cancel_says_whether_the_timer_was_pending() {
        let mut t = T::new();
        let now = Instant::now();
        for at in [now, now + 2 * BUCKET] {
            let id = t.insert(at, Task::Once(1));
            assert!(t.cancel(id));
            assert!(!t.cancel(id));
            assert!(t.pop_expired(at).is_none());
            assert_eq!(t.next_deadline(), None);
            assert_eq!(t.len(), 0);
        }
    }

    #[test]
    fn a_stale_id_does_not_cancel_the_timer_that_reuses_its_slot() {
        let mut t = T::new();
        let now = Instant::now();
        let old = t.insert(now, Task::Once(1));
        assert!(t.cancel(old));
        let new = t.insert(now, Task::Once(2));
        assert_eq!(new.slot, old.slot, "the slot is reused");
        assert!(!t.cancel(old));
        assert_eq!(pop_all(&mut t, now), [2]);
    }

    #[test]
    fn a_handle_made_id_cancels_its_timer_and_fires_under_the_same_id() {
        let mut t = T::new();
        let now = Instant::now();
        t.insert_remote(TimerId::remote(7), now + BUCKET * 2, Task::Once(7));
        t.insert_remote(TimerId::remote(8), now, Task::Once(8));
        assert!(t.cancel(TimerId::remote(7)));
        assert!(!t.cancel(TimerId::remote(7)));
        let (id, _, _) = t.pop_expired(now).unwrap();
        assert_eq!(id, TimerId::remote(8));
        assert!(!t.cancel(id), "a fired timer is past cancelling");
        t.finish(id);
        assert!(t.remote.is_empty());
        assert!(!t.cancel(id));
    }

    #[test]
    fn a_rescheduled_timer_keeps_its_id() {
        let mut t = T::new();
        let now = Instant::now();
        let id = t.insert(now, Task::Once(1));
        let (fired, _, task) = t.pop_expired(now).unwrap();
        assert_eq!(fired, id);
        t.reschedule(id, now + 4 * BUCKET, task);
        assert_eq!(t.len(), 1);
        assert!(t.cancel(id));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_first_bucket_bounds_the_next_deadline_until_it_is_reached() {
        let mut t = T::new();
        let due = t.base + 10 * BUCKET + Duration::from_millis(3);
        t.insert(due, Task::Once(1));
        // Only a bucketed timer: the wait ends at its bucket's start.
        assert_eq!(t.next_deadline(), Some(t.base + 10 * BUCKET));
        assert!(t.pop_expired(t.base + 10 * BUCKET).is_none());
        // Reached: the bucket is in the heap and the deadline is exact.
        assert_eq!(t.next_deadline(), Some(due));
        assert_eq!(pop_all(&mut t, due), [1]);
    }

    #[test]
    fn cancelled_heap_entries_are_compacted() {
        let mut t = T::new();
        let now = Instant::now();
        let ids: Vec<_> = (0..10_000).map(|i| t.insert(now, Task::Once(i))).collect();
        for id in &ids[..9_990] {
            assert!(t.cancel(*id));
        }
        assert!(t.heap.len() <= 2 * 10 + 64, "heap of {}", t.heap.len());
        assert_eq!(pop_all(&mut t, now), (9_990..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn an_overdue_repeating_timer_is_not_caught_up_in_a_burst() {
        let due = Instant::now();
        let period = Duration::from_millis(10);
        assert_eq!(
            next_period(due, period, due + Duration::from_millis(3)),
            due + period
        );
        let late = due + Duration::from_millis(95);
        assert_eq!(next_period(due, period, late), late + period);
    }

    /// Random inserts, cancels, reschedules and expiries against a sorted
    /// map, with deadlines `unit` apart: within one bucket, or spread over
    /// many.
    fn against_a_sorted_map(unit: Duration) {
        let mut t = T::new();
        let base = t.base;
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // (deadline in units, order) -> (id, value)
        let mut model: BTreeMap<(u64, u64), (TimerId, u32)> = BTreeMap::new();
        let mut ids = Vec::new();
        let mut order = 0;
        let mut now = 0u64;
        let at = |n: u64| base + unit * n as u32;
        for step in 0..20_000u32 {
            match rand() % 8 {
                0..=2 => {
                    order += 1;
                    let due = now + rand() % 100;
                    let id = if rand() % 4 == 0 {
                        let id = TimerId::remote(u64::from(step) + 1);
                        t.insert_remote(id, at(due), Task::Once(step));
                        id
                    } else {
                        t.insert(at(due), Task::Once(step))
                    };
                    model.insert((due, order), (id, step));
                    ids.push(id);
                }
                3 | 4 => {
                    // Half the time any id ever made, half a pending one.
                    let id = if rand() % 2 == 0 {
                        ids.get(rand() as usize % ids.len().max(1)).copied()
                    } else {
                        let n = rand() as usize % model.len().max(1);
                        model.values().nth(n).map(|v| v.0)
                    };
                    if let Some(id) = id {
                        let key = model.iter().find(|(_, v)| v.0 == id).map(|(k, _)| *k);
                        assert_eq!(t.cancel(id), key.is_some(), "step {step}");
                        if let Some(k) = key {
                            model.remove(&k);
                        }
                    }
                }
                _ => {
                    now += rand() % 30;
                    let earliest = model.keys().next().map(|k| at(k.0));
                    if let Some(e) = earliest {
                        let next = t.next_deadline().expect("a pending timer");
                        assert!(next <= e, "step {step}: next deadline after the earliest");
                    }
                    while let Some((id, deadline, task)) = t.pop_expired(at(now)) {
                        let (&k, &(want, value)) = model.iter().next().expect("model expired");
                        assert!(k.0 <= now);
                        assert_eq!((id, deadline), (want, at(k.0)), "step {step}");
                        assert!(matches!(task, Task::Once(v) if v == value));
                        model.remove(&k);
                        if rand() % 4 == 0 {
                            // Reschedule under the same id, as a repeating timer.
                            order += 1;
                            let due = now + 1 + rand() % 100;
                            t.reschedule(id, at(due), Task::Once(value));
                            model.insert((due, order), (id, value));
                        } else {
                            t.finish(id);
                        }
                    }
                    assert!(model.keys().next().is_none_or(|k| k.0 > now));
                }
            }
            assert_eq!(t.len(), model.len(), "step {step}");
        }
    }

    #[test]
    fn timers_within_one_bucket_match_a_sorted_map_model() {
        against_a_sorted_map(Duration::from_micros(1));
    }

    #[test]
    fn timers_across_many_buckets_match_a_sorted_map_model() {
        against_a_sorted_map(BUCKET / 7);
    }

    #[test]
    fn crowded_buckets_match_a_sorted_map_model() {
        against_a_sorted_map(BUCKET / 64);
    }
}
