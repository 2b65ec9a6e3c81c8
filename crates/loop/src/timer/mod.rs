//! Timers: a slab of pending timers, a binary heap for the ones due soon,
//! and coarse buckets for the rest; and, shared with the handles, one word
//! of state per timer ([`state`]), which makes a cancel exact from any
//! thread.
//!
//! Time is cut into buckets of 2^26 ns (about 67 ms), counted from the
//! moment the timers were created. A timer whose bucket has started goes
//! into the heap, ordered by exact deadline (and, for equal deadlines, by
//! the order the timers were added); a later one is appended to its
//! bucket's list. When the clock reaches a bucket, the whole list moves
//! into the heap, in the order it was added. So the heap holds only the
//! timers due within about one bucket, however many are pending further
//! out, and:
//!
//! * adding a far timer is an append; cancelling any timer is O(1) (its
//!   heap or bucket entry is left behind and skipped later; a bucket list
//!   or the heap is compacted once dead entries outnumber live ones);
//! * [`Timers::next_deadline`] is exact when a heap timer comes first, and
//!   otherwise the start of the first bucket, at or before any deadline in
//!   it: the loop then wakes up once early, the bucket moves into the heap,
//!   and the next wait is exact;
//! * a deadline past what [`Instant`] can hold is "never": the timer waits
//!   in neither heap nor bucket, fires never, and can be cancelled;
//! * memory comes back: a cancelled or finished timer's task is dropped at
//!   once (by the loop's next iteration, for a cancel from another thread),
//!   and the slab and the lists shrink when most of them is empty.
//!
//! A timer lives in a slot. Slots made on the loop thread and slots made by
//! a handle are numbered apart (the top bit of the id's slot), so that the
//! loop's own path takes no lock.

mod ctx;
pub(crate) mod state;

use crate::sync::atomic::{AtomicU32, Ordering::Relaxed, Ordering::Release};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use state::TimerStates;

/// Identifies a timer, for [`Ctx::cancel`](crate::Ctx::cancel) and
/// [`LoopHandle::cancel`](crate::LoopHandle::cancel).
///
/// An id stays unique in the process: once its timer has fired for good or
/// been cancelled, the id cancels nothing, even after its slot is reused;
/// and it names a timer of one loop only, so that on any other loop it
/// cancels nothing (`cancel` returns `false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    /// The loop's timers (see [`TimerStates::owner`]).
    owner: u64,
    /// The slot; [`REMOTE`] set for a slot a handle made.
    slot: u32,
    /// The slot's generation when the timer was made.
    generation: u32,
}

/// The slot bit of ids made by a handle.
const REMOTE: u32 = 1 << 31;

impl TimerId {
    pub(crate) fn remote(states: &TimerStates, slot: u32, word: u32) -> TimerId {
        TimerId {
            owner: states.owner,
            slot: slot | REMOTE,
            generation: state::generation(word),
        }
    }

    /// The id's state word in `states`, with its slot and generation.
    pub(crate) fn word(self, states: &TimerStates) -> Option<(&AtomicU32, u32, u32)> {
        if self.owner != states.owner {
            return None;
        }
        let i = self.index() as u32;
        let w = if self.is_remote() {
            states.remote.get(i)
        } else {
            states.local.get(i)
        }?;
        Some((w, self.slot, self.generation))
    }

    fn is_remote(self) -> bool {
        self.slot & REMOTE != 0
    }

    fn index(self) -> usize {
        (self.slot & !REMOTE) as usize
    }
}

/// What a timer runs: once, or every `period` nanoseconds (kept as a `u64`,
/// not a `Duration`, so that an entry stays small).
pub(crate) enum Task<F, R> {
    Once(F),
    Every { period: Nanos, f: R },
}

/// A period in nanoseconds, saturating at [`NEVER`].
pub(crate) fn period_nanos(period: Duration) -> Nanos {
    u64::try_from(period.as_nanos()).unwrap_or(NEVER)
}

/// Nanoseconds since the timers' base; `NEVER` for no deadline at all.
pub(crate) type Nanos = u64;
pub(crate) const NEVER: Nanos = u64::MAX;

/// log2 of the bucket width in nanoseconds.
const BUCKET_SHIFT: u32 = 26;
/// The width of a bucket: about 67 ms.
#[cfg(test)]
const BUCKET: Duration = Duration::from_nanos(1 << BUCKET_SHIFT);

struct Entry<F, R> {
    deadline: Nanos,
    generation: u32,
    in_heap: bool,
    task: Task<F, R>,
}

#[derive(Default)]
struct Bucket {
    /// (slot, generation), in the order added; entries of timers cancelled
    /// since are skipped.
    items: Vec<(u32, u32)>,
    live: u32,
}

pub(crate) struct Timers<F, R> {
    states: Arc<TimerStates>,
    local: Vec<Option<Entry<F, R>>>,
    /// Free local slots, lowest first, so that the slab's tail empties and
    /// can be given back.
    local_free: BinaryHeap<Reverse<u32>>,
    /// Timers made by handles, by their slot index.
    remote: Vec<Option<Entry<F, R>>>,
    /// (deadline, order, slot, generation): equal deadlines fire in the
    /// order they were added.
    heap: BinaryHeap<Reverse<(Nanos, u64, u32, u32)>>,
    /// Heap entries whose timer is still there.
    heap_live: usize,
    buckets: BTreeMap<u64, Bucket>,
    /// Buckets up to this one have moved into the heap.
    reached: u64,
    base: Instant,
    next_order: u64,
    /// Timers in the slabs (scheduled, not running).
    scheduled: usize,
    local_scheduled: usize,
    reaped: Vec<(u32, u32)>,
}

impl<F, R> Timers<F, R> {
    pub(crate) fn new(states: Arc<TimerStates>) -> Self {
        Timers {
            states,
            local: Vec::new(),
            local_free: BinaryHeap::new(),
            remote: Vec::new(),
            heap: BinaryHeap::new(),
            heap_live: 0,
            buckets: BTreeMap::new(),
            reached: 0,
            base: Instant::now(),
            next_order: 0,
            scheduled: 0,
            local_scheduled: 0,
            reaped: Vec::new(),
        }
    }

    /// `at` in the timers' nanoseconds; `None` (or beyond 584 years) is
    /// [`NEVER`].
    pub(crate) fn nanos(&self, at: Option<Instant>) -> Nanos {
        at.map_or(NEVER, |t| {
            u64::try_from(t.saturating_duration_since(self.base).as_nanos())
                .unwrap_or(NEVER)
                .min(NEVER - 1)
        })
    }

    fn instant(&self, n: Nanos) -> Instant {
        self.base + Duration::from_nanos(n)
    }

    /// The id of this loop's timer in `slot`, of `generation`.
    fn id(&self, slot: u32, generation: u32) -> TimerId {
        TimerId {
            owner: self.states.owner,
            slot,
            generation,
        }
    }

    fn word(&self, id: TimerId) -> Option<&AtomicU32> {
        id.word(&self.states).map(|(w, ..)| w)
    }

    fn slab(&mut self, id: TimerId) -> &mut Vec<Option<Entry<F, R>>> {
        if id.is_remote() {
            &mut self.remote
        } else {
            &mut self.local
        }
    }

    fn entry(&self, slot: u32) -> Option<&Entry<F, R>> {
        let slab = if slot & REMOTE != 0 {
            &self.remote
        } else {
            &self.local
        };
        slab.get((slot & !REMOTE) as usize)?.as_ref()
    }

    /// Adds a timer made on the loop thread, due at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Nanos, task: Task<F, R>) -> TimerId {
        let index = match self.local_free.pop() {
            Some(Reverse(i)) => i,
            None => {
                let i = u32::try_from(self.local.len())
                    .ok()
                    .filter(|&i| i < REMOTE)
                    .expect("fewer than 2^31 timers made on the loop thread");
                self.local.push(None);
                i
            }
        };
        let word = self.states.local.get_or_grow(index);
        let w = state::pending_after(word.load(Relaxed), matches!(task, Task::Every { .. }));
        word.store(w, Release);
        self.states.pending.fetch_add(1, Relaxed);
        let id = TimerId {
            owner: self.states.owner,
            slot: index,
            generation: state::generation(w),
        };
        self.schedule(id, deadline, task);
        id
    }

    /// Adds a timer whose id (and slot) a handle made: unless it was
    /// cancelled meanwhile, in which case its slot is freed and the task
    /// dropped.
    pub(crate) fn insert_remote(&mut self, id: TimerId, deadline: Nanos, task: Task<F, R>) {
        debug_assert!(id.is_remote());
        let cancelled = self
            .word(id)
            .is_none_or(|w| state::is_cancelled(w, id.generation));
        if cancelled {
            self.states.free_remote(id.index() as u32);
            return;
        }
        self.schedule(id, deadline, task);
    }

    /// Puts the timer `id` (whose word is pending) in its slab, and in the
    /// heap or its bucket.
    fn schedule(&mut self, id: TimerId, deadline: Nanos, task: Task<F, R>) {
        let bucket = deadline >> BUCKET_SHIFT;
        let in_heap = deadline != NEVER && bucket <= self.reached;
        if in_heap {
            self.next_order += 1;
            self.heap
                .push(Reverse((deadline, self.next_order, id.slot, id.generation)));
            self.heap_live += 1;
        } else if deadline != NEVER {
            let b = self.buckets.entry(bucket).or_default();
            b.items.push((id.slot, id.generation));
            b.live += 1;
        }
        self.scheduled += 1;
        if !id.is_remote() {
            self.local_scheduled += 1;
        }
        let index = id.index();
        let slab = self.slab(id);
        if slab.len() <= index {
            slab.resize_with(index + 1, || None);
        }
        slab[index] = Some(Entry {
            deadline,
            generation: id.generation,
            in_heap,
            task,
        });
    }

    /// Cancels a timer from the loop thread: exact, and at once. Returns
    /// whether it was stopped before it ran (for a repeating timer, before
    /// its next run).
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        let Some(word) = self.word(id) else {
            return false;
        };
        if !self.states.cancel(word, id.generation) {
            return false;
        }
        // Scheduled: dropped now. Running (a repeating timer cancelling
        // itself), or a handle's timer not yet inserted: freed when the loop
        // gets to it.
        if let Some(task) = self.unschedule(id) {
            self.release(id);
            drop(task);
        }
        true
    }

    /// Frees the memory of timers cancelled from other threads (or through a
    /// handle) since the last call.
    #[inline]
    pub(crate) fn reap(&mut self) {
        if self.states.any_reaped() {
            self.reap_noted();
        }
    }

    fn reap_noted(&mut self) {
        let mut reaped = std::mem::take(&mut self.reaped);
        self.states.take_reaped(&mut reaped);
        for (slot, generation) in reaped.drain(..) {
            let id = self.id(slot, generation);
            let cancelled = self
                .word(id)
                .is_some_and(|w| state::is_cancelled(w, generation));
            if cancelled {
                if let Some(task) = self.unschedule(id) {
                    self.release(id);
                    drop(task);
                }
            }
        }
        if reaped.capacity() > 1024 {
            reaped = Vec::new();
        }
        self.reaped = reaped;
    }

    /// Takes `id`'s entry out of the slab, leaving its heap or bucket entry
    /// dead; `None` if it is not scheduled.
    fn unschedule(&mut self, id: TimerId) -> Option<Task<F, R>> {
        let index = id.index();
        let slot = self.slab(id).get_mut(index)?;
        if slot.as_ref().is_none_or(|e| e.generation != id.generation) {
            return None;
        }
        let e = slot.take().expect("checked above");
        self.scheduled -= 1;
        if !id.is_remote() {
            self.local_scheduled -= 1;
        }
        if e.in_heap {
            self.heap_live -= 1;
            if self.heap.len() > 64 && self.heap.len() > 2 * self.heap_live {
                self.compact_heap();
            }
        } else if e.deadline != NEVER {
            let key = e.deadline >> BUCKET_SHIFT;
            let b = self
                .buckets
                .get_mut(&key)
                .expect("a bucketed timer's bucket");
            b.live -= 1;
            if b.live == 0 {
                self.buckets.remove(&key);
            } else if b.items.len() >= 32 && (b.live as usize) * 2 < b.items.len() {
                let mut items = std::mem::take(&mut b.items);
                items.retain(|&(slot, g)| {
                    self.entry(slot)
                        .is_some_and(|e| e.generation == g && !e.in_heap)
                });
                items.shrink_to_fit();
                self.buckets.get_mut(&key).expect("still there").items = items;
            }
        }
        Some(e.task)
    }

    fn compact_heap(&mut self) {
        let heap = std::mem::take(&mut self.heap);
        let mut items = heap.into_vec();
        items.retain(|&Reverse((_, _, slot, g))| self.is_live(slot, g));
        items.shrink_to_fit();
        self.heap = BinaryHeap::from(items);
    }

    /// Frees `id`'s slot (its entry is already out of the slab).
    fn release(&mut self, id: TimerId) {
        if id.is_remote() {
            self.states.free_remote(id.index() as u32);
            return;
        }
        if let Some(w) = self.states.local.get(id.index() as u32) {
            state::vacate(w);
        }
        self.local_free.push(Reverse(id.index() as u32));
    }

    /// Gives back the memory of slabs that are mostly empty. Called between
    /// timer phases, when no timer is running: every local slot is then
    /// scheduled or free. (A running handle-made timer that is rescheduled
    /// grows its slab back.)
    pub(crate) fn shrink(&mut self) {
        let len = self.local.len();
        if len >= 1024 && self.local_scheduled * 4 < len {
            while self.local.last().is_some_and(Option::is_none) {
                self.local.pop();
            }
            let len = self.local.len() as u32;
            let free = std::mem::take(&mut self.local_free);
            self.local_free = free.into_iter().filter(|Reverse(i)| *i < len).collect();
            self.local.shrink_to_fit();
            self.local_free.shrink_to_fit();
        }
        let remote_scheduled = self.scheduled - self.local_scheduled;
        if self.remote.len() >= 1024 && remote_scheduled * 4 < self.remote.len() {
            while self.remote.last().is_some_and(Option::is_none) {
                self.remote.pop();
            }
            self.remote.shrink_to_fit();
        }
        if self.heap.capacity() > 1024 && self.heap.len() * 4 < self.heap.capacity() {
            self.heap.shrink_to_fit();
        }
    }

    /// The earliest live deadline, or the start of the first bucket if that
    /// comes first (never later than the earliest deadline).
    #[inline]
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        if self.heap.is_empty() && self.buckets.is_empty() {
            return None;
        }
        self.skip_dead();
        let heap = self.heap.peek().map(|Reverse((d, ..))| *d);
        let bucket = self
            .buckets
            .first_key_value()
            .map(|(&b, _)| b << BUCKET_SHIFT);
        let first = match (heap, bucket) {
            (Some(h), Some(b)) => h.min(b),
            (h, b) => h.or(b)?,
        };
        Some(self.instant(first))
    }

    /// Takes the earliest timer due at or before `now` out of the schedule.
    /// It has not started: [`start`](Timers::start) it, which fails if a
    /// cancel wins first, or [`put_back`](Timers::put_back) it. Timers
    /// found cancelled on the way are freed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, Nanos, Task<F, R>)> {
        let now = self.nanos(Some(now));
        self.reach(now);
        loop {
            self.skip_dead();
            let &Reverse((deadline, _, slot, generation)) = self.heap.peek()?;
            if deadline > now {
                return None;
            }
            self.heap.pop();
            let id = self.id(slot, generation);
            let index = id.index();
            let Entry { task, .. } = self.slab(id)[index].take().expect("skip_dead left it live");
            self.heap_live -= 1;
            self.scheduled -= 1;
            if !id.is_remote() {
                self.local_scheduled -= 1;
            }
            let word = self.word(id).expect("a scheduled timer has a word");
            if state::is_cancelled(word, generation) {
                // Cancelled from another thread, not yet reaped.
                self.release(id);
                drop(task);
                continue;
            }
            return Some((id, deadline, task));
        }
    }

    /// Marks a timer taken by [`pop_due`](Timers::pop_due) as running;
    /// false, and the timer freed, if a cancel came first.
    pub(crate) fn start(&mut self, id: TimerId) -> bool {
        let word = self.word(id).expect("a due timer has a word");
        if state::try_fire(word, id.generation) {
            return true;
        }
        self.release(id);
        false
    }

    /// Puts a timer taken by [`pop_due`](Timers::pop_due), and not started,
    /// back as it was.
    pub(crate) fn put_back(&mut self, id: TimerId, deadline: Nanos, task: Task<F, R>) {
        self.schedule(id, deadline, task);
    }

    /// Schedules a running repeating timer again, under the same id, unless
    /// it was cancelled while it ran (then it is freed, and false returned).
    pub(crate) fn reschedule(&mut self, id: TimerId, deadline: Nanos, task: Task<F, R>) -> bool {
        let word = self.word(id).expect("a running timer has a word");
        if state::try_rearm(word, id.generation) {
            self.schedule(id, deadline, task);
            true
        } else {
            self.release(id);
            drop(task);
            false
        }
    }

    /// Frees a timer that fires once, now that it has started.
    pub(crate) fn finish(&mut self, id: TimerId) {
        self.states.pending.fetch_sub(1, Relaxed);
        self.release(id);
    }

    /// Moves every bucket that has started by `now` into the heap.
    fn reach(&mut self, now: Nanos) {
        let now_bucket = now >> BUCKET_SHIFT;
        if now_bucket <= self.reached {
            return;
        }
        self.reached = now_bucket;
        while let Some(first) = self.buckets.first_entry() {
            if *first.key() > now_bucket {
                break;
            }
            let bucket = first.remove();
            let mut entries = Vec::with_capacity(bucket.live as usize);
            for (slot, g) in bucket.items {
                let (local, remote) = (&mut self.local, &mut self.remote);
                let slab = if slot & REMOTE != 0 { remote } else { local };
                let Some(Some(e)) = slab.get_mut((slot & !REMOTE) as usize) else {
                    continue;
                };
                if e.generation != g || e.in_heap {
                    continue;
                }
                e.in_heap = true;
                self.next_order += 1;
                entries.push(Reverse((e.deadline, self.next_order, slot, g)));
            }
            self.heap_live += entries.len();
            // A large bucket is heapified in O(n) rather than pushed entry
            // by entry (`append` picks whichever is cheaper).
            self.heap.append(&mut BinaryHeap::from(entries));
        }
    }

    fn is_live(&self, slot: u32, g: u32) -> bool {
        self.entry(slot)
            .is_some_and(|e| e.generation == g && e.in_heap)
    }

    /// Drops heap entries whose timer was cancelled, fired or rescheduled.
    fn skip_dead(&mut self) {
        while let Some(&Reverse((_, _, slot, g))) = self.heap.peek() {
            if self.is_live(slot, g) {
                return;
            }
            self.heap.pop();
        }
    }
}

/// The next deadline of a repeating timer that was due at `due` and ran at
/// `now`: one period on, or if that is already past, one period from now, so
/// that an overdue timer fires once rather than in a burst. [`NEVER`] if
/// that is beyond what the timers can hold.
pub(crate) fn next_period(due: Nanos, period: Nanos, now: Nanos) -> Nanos {
    let next = due.saturating_add(period);
    if next > now {
        next
    } else {
        now.saturating_add(period)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    type T = Timers<u32, ()>;

    fn timers() -> T {
        T::new(Arc::new(TimerStates::default()))
    }

    fn at(t: &T, i: Instant) -> Nanos {
        t.nanos(Some(i))
    }

    fn pop_all(t: &mut T, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((id, _, task)) = t.pop_due(now) {
            assert!(t.start(id));
            t.finish(id);
            match task {
                Task::Once(v) => out.push(v),
                Task::Every { .. } => unreachable!(),
            }
        }
        out
    }

    /// A handle's timer, as `LoopHandle::run_at` makes it.
    fn remote(t: &mut T, deadline: Nanos, v: u32) -> TimerId {
        let (slot, w) = t.states.alloc_remote(false);
        let id = TimerId::remote(&t.states, slot, w);
        t.insert_remote(id, deadline, Task::Once(v));
        id
    }

    /// A cancel as `LoopHandle::cancel` makes it, from any thread.
    fn cancel_from_afar(t: &T, id: TimerId) -> bool {
        let done = t
            .word(id)
            .is_some_and(|w| t.states.cancel(w, id.generation));
        if done {
            t.states.reap_later(id.slot, id.generation);
        }
        done
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut t = timers();
        let near = Instant::now();
        let far = near + 3 * BUCKET;
        for i in 0..5 {
            let (n, f) = (at(&t, near), at(&t, far));
            t.insert(n, Task::Once(i));
            t.insert(f, Task::Once(10 + i));
        }
        assert_eq!(pop_all(&mut t, near), [0, 1, 2, 3, 4]);
        assert_eq!(pop_all(&mut t, far), [10, 11, 12, 13, 14]);
    }

    #[test]
    fn nothing_fires_before_its_deadline() {
        let mut t = timers();
        let now = Instant::now();
        for when in [now + Duration::from_millis(5), now + 5 * BUCKET] {
            let n = at(&t, when);
            t.insert(n, Task::Once(1));
            assert!(t.pop_due(when - Duration::from_nanos(1)).is_none());
            assert!(t.pop_due(when).is_some());
        }
    }

    #[test]
    fn a_never_deadline_neither_fires_nor_bounds_the_wait_and_can_be_cancelled() {
        let mut t = timers();
        let id = t.insert(NEVER, Task::Once(1));
        assert_eq!(t.nanos(None), NEVER);
        assert_eq!(t.next_deadline(), None);
        assert!(t.pop_due(Instant::now() + 1000 * BUCKET).is_none());
        assert_eq!(t.states.pending.load(Relaxed), 1);
        assert!(t.cancel(id));
        assert_eq!(t.states.pending.load(Relaxed), 0);
        assert_eq!(next_period(5, period_nanos(Duration::MAX), 10), NEVER);
    }

    #[test]
    fn cancel_says_whether_the_timer_was_pending() {
        let mut t = timers();
        let now = Instant::now();
        for when in [now, now + 2 * BUCKET] {
            let n = at(&t, when);
            let id = t.insert(n, Task::Once(1));
            assert!(t.cancel(id));
            assert!(!t.cancel(id));
            assert!(t.pop_due(when).is_none());
            assert_eq!(t.next_deadline(), None);
            assert_eq!(t.states.pending.load(Relaxed), 0);
        }
    }

    #[test]
    fn a_stale_id_does_not_cancel_the_timer_that_reuses_its_slot() {
        let mut t = timers();
        let now = at(&t, Instant::now());
        let old = t.insert(now, Task::Once(1));
        assert!(t.cancel(old));
        let new = t.insert(now, Task::Once(2));
        assert_eq!(new.slot, old.slot, "the slot is reused");
        assert!(!t.cancel(old));
        assert!(!cancel_from_afar(&t, old));
        assert_eq!(pop_all(&mut t, Instant::now()), [2]);
    }

    #[test]
    fn a_cancel_from_afar_stops_the_timer_and_the_loop_frees_it() {
        let mut t = timers();
        let now = Instant::now();
        let n = at(&t, now + 2 * BUCKET);
        let local = t.insert(n, Task::Once(1));
        let far = remote(&mut t, n, 2);
        let n = at(&t, now);
        let near = remote(&mut t, n, 3);
        assert!(cancel_from_afar(&t, local));
        assert!(cancel_from_afar(&t, far));
        assert!(!cancel_from_afar(&t, far));
        assert_eq!(t.states.pending.load(Relaxed), 1);
        assert_eq!(t.scheduled, 3, "freed by the loop");
        t.reap();
        assert_eq!(t.scheduled, 1);
        let (id, deadline, task) = t.pop_due(now).unwrap();
        assert_eq!(id, near);
        // Due but not started: a cancel still wins.
        t.put_back(id, deadline, task);
        let (id, _, _) = t.pop_due(now).unwrap();
        assert!(t.start(id));
        assert!(!cancel_from_afar(&t, id), "running: past cancelling");
        t.finish(id);
        assert_eq!(t.states.pending.load(Relaxed), 0);
        // Cancelled before the loop inserted it: never scheduled.
        let (slot, w) = t.states.alloc_remote(false);
        let id = TimerId::remote(&t.states, slot, w);
        assert!(cancel_from_afar(&t, id));
        t.insert_remote(id, at(&t, now), Task::Once(4));
        assert_eq!(t.scheduled, 0);
        assert_eq!(t.states.pending.load(Relaxed), 0);
        // A cancel that is not reaped before its deadline: skipped there.
        let n = at(&t, now);
        let id = remote(&mut t, n, 5);
        assert!(cancel_from_afar(&t, id));
        assert_eq!(pop_all(&mut t, now), Vec::<u32>::new());
        assert_eq!(t.states.pending.load(Relaxed), 0);
        t.reap();
    }

    #[test]
    fn a_rescheduled_timer_keeps_its_id_unless_cancelled_while_it_ran() {
        let mut t = timers();
        let now = Instant::now();
        let n = at(&t, now);
        let id = t.insert(
            n,
            Task::Every {
                period: period_nanos(BUCKET),
                f: (),
            },
        );
        let (fired, due, task) = t.pop_due(now).unwrap();
        assert_eq!(fired, id);
        assert!(t.start(id));
        assert!(t.reschedule(id, due + (4 << BUCKET_SHIFT), task));
        assert!(t.cancel(id));
        assert_eq!(t.states.pending.load(Relaxed), 0);
        let id = t.insert(
            n,
            Task::Every {
                period: period_nanos(BUCKET),
                f: (),
            },
        );
        let (_, due, task) = t.pop_due(now).unwrap();
        assert!(t.start(id));
        assert!(
            t.cancel(id),
            "a repeating timer cancels itself from its callback"
        );
        assert!(!t.reschedule(id, due + 1, task));
        assert_eq!(t.states.pending.load(Relaxed), 0);
    }

    #[test]
    fn the_first_bucket_bounds_the_next_deadline_until_it_is_reached() {
        let mut t = timers();
        let due = t.base + 10 * BUCKET + Duration::from_millis(3);
        let n = at(&t, due);
        t.insert(n, Task::Once(1));
        // Only a bucketed timer: the wait ends at its bucket's start.
        assert_eq!(t.next_deadline(), Some(t.base + 10 * BUCKET));
        assert!(t.pop_due(t.base + 10 * BUCKET).is_none());
        // Reached: the bucket is in the heap and the deadline is exact.
        assert_eq!(t.next_deadline(), Some(due));
        assert_eq!(pop_all(&mut t, due), [1]);
    }

    #[test]
    fn cancelled_entries_are_compacted_and_memory_comes_back() {
        let mut t = timers();
        let now = Instant::now();
        let (near, far) = (at(&t, now), at(&t, now + 5 * BUCKET));
        let ids: Vec<_> = (0..10_000)
            .map(|i| t.insert(if i % 2 == 0 { near } else { far }, Task::Once(i)))
            .collect();
        for id in &ids[..9_990] {
            assert!(t.cancel(*id));
        }
        assert!(t.heap.len() <= 2 * 10 + 64, "heap of {}", t.heap.len());
        let bucketed: usize = t.buckets.values().map(|b| b.items.len()).sum();
        assert!(bucketed <= 2 * 10 + 32, "{bucketed} bucket entries");
        t.shrink();
        assert!(t.local.len() <= 10_000 && t.local.capacity() == t.local.len());
        let mut left = pop_all(&mut t, now + 5 * BUCKET);
        left.sort();
        assert_eq!(left, (9_990..10_000).collect::<Vec<_>>());
        t.shrink();
        assert_eq!(t.local.len(), 0);
        assert_eq!(t.states.pending.load(Relaxed), 0);
    }

    #[test]
    fn an_overdue_repeating_timer_is_not_caught_up_in_a_burst() {
        let ms = 1_000_000;
        let period = 10 * ms;
        assert_eq!(next_period(0, period, 3 * ms), 10 * ms);
        assert_eq!(next_period(0, period, 95 * ms), 105 * ms);
    }

    /// Random inserts (on the loop and by handles), cancels (on the loop and
    /// from afar), reaps, reschedules and expiries against a sorted map,
    /// with deadlines `unit` apart: within one bucket, or spread over many.
    fn against_a_sorted_map(unit: Duration) {
        let mut t = timers();
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
        let when = |n: u64| base + unit * n as u32;
        for step in 0..20_000u32 {
            match rand() % 10 {
                0..=2 => {
                    order += 1;
                    let due = now + rand() % 100;
                    let n = t.nanos(Some(when(due)));
                    let id = if rand() % 4 == 0 {
                        remote(&mut t, n, step)
                    } else {
                        t.insert(n, Task::Once(step))
                    };
                    model.insert((due, order), (id, step));
                    ids.push(id);
                }
                3..=5 => {
                    // Half the time any id ever made, half a pending one.
                    let id = if rand() % 2 == 0 {
                        ids.get(rand() as usize % ids.len().max(1)).copied()
                    } else {
                        let n = rand() as usize % model.len().max(1);
                        model.values().nth(n).map(|v| v.0)
                    };
                    if let Some(id) = id {
                        let key = model.iter().find(|(_, v)| v.0 == id).map(|(k, _)| *k);
                        let cancelled = if rand() % 2 == 0 {
                            t.cancel(id)
                        } else {
                            cancel_from_afar(&t, id)
                        };
                        assert_eq!(cancelled, key.is_some(), "step {step}");
                        if let Some(k) = key {
                            model.remove(&k);
                        }
                    }
                }
                6 => {
                    t.reap();
                    t.shrink();
                }
                _ => {
                    now += rand() % 30;
                    let earliest = model.keys().next().map(|k| when(k.0));
                    if let Some(e) = earliest {
                        let next = t.next_deadline().expect("a pending timer");
                        assert!(next <= e, "step {step}: next deadline after the earliest");
                    }
                    while let Some((id, deadline, task)) = t.pop_due(when(now)) {
                        assert!(t.start(id));
                        let (&k, &(want, value)) = model.iter().next().expect("model expired");
                        assert!(k.0 <= now);
                        assert_eq!(
                            (id, deadline),
                            (want, t.nanos(Some(when(k.0)))),
                            "step {step}"
                        );
                        assert!(matches!(task, Task::Once(v) if v == value));
                        model.remove(&k);
                        if rand() % 4 == 0 {
                            // Run again under the same id, as a repeating
                            // timer would.
                            order += 1;
                            let due = now + 1 + rand() % 100;
                            let n = t.nanos(Some(when(due)));
                            assert!(t.reschedule(id, n, Task::Once(value)));
                            model.insert((due, order), (id, value));
                        } else {
                            t.finish(id);
                        }
                    }
                    assert!(model.keys().next().is_none_or(|k| k.0 > now));
                }
            }
            assert_eq!(t.states.pending.load(Relaxed), model.len(), "step {step}");
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
