//! Timers: a binary heap of deadlines with lazy cancellation.
//!
//! Insertion is O(log n); cancellation is O(1) (the heap entry is left behind
//! and skipped when it surfaces); the heap is rebuilt when dead entries
//! outnumber live ones, so memory stays within twice the live count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Identifies a timer, for [`Ctx::cancel`](crate::Ctx::cancel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(pub(crate) u64);

/// What a timer runs: once, or every period.
pub(crate) enum Task<F, R> {
    Once(F),
    Every { period: Duration, f: R },
}

pub(crate) struct Timers<F, R> {
    /// (deadline, insertion order, id): equal deadlines fire in the order the
    /// timers were added.
    heap: BinaryHeap<Reverse<(Instant, u64, TimerId)>>,
    live: HashMap<TimerId, (Instant, Task<F, R>)>,
    seq: u64,
}

impl<F, R> Timers<F, R> {
    pub(crate) fn new() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            seq: 0,
        }
    }

    pub(crate) fn insert(&mut self, id: TimerId, deadline: Instant, task: Task<F, R>) {
        self.seq += 1;
        self.heap.push(Reverse((deadline, self.seq, id)));
        self.live.insert(id, (deadline, task));
    }

    /// Removes a pending timer; false if it already ran or was cancelled.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        let found = self.live.remove(&id).is_some();
        if found && self.heap.len() > 64 && self.heap.len() > 2 * self.live.len() {
            let live = &self.live;
            self.heap
                .retain(|Reverse((d, _, id))| live.get(id).is_some_and(|(dl, _)| dl == d));
        }
        found
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_dead();
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Takes the earliest timer if its deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(TimerId, Instant, Task<F, R>)> {
        self.skip_dead();
        let Reverse((deadline, _, id)) = *self.heap.peek()?;
        if deadline > now {
            return None;
        }
        self.heap.pop();
        let (_, task) = self
            .live
            .remove(&id)
            .expect("skip_dead left a live entry on top");
        Some((id, deadline, task))
    }

    /// The number of pending timers.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Drops heap entries whose timer was cancelled (or rescheduled).
    fn skip_dead(&mut self) {
        while let Some(Reverse((d, _, id))) = self.heap.peek() {
            match self.live.get(id) {
                Some((deadline, _)) if deadline == d => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }
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

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut t = T::new();
        let at = Instant::now();
        for i in 0..5 {
            t.insert(TimerId(10 - i), at, Task::Once(i as u32));
        }
        let order: Vec<_> = std::iter::from_fn(|| t.pop_expired(at))
            .map(|(id, _, _)| id.0)
            .collect();
        assert_eq!(order, [10, 9, 8, 7, 6]);
    }

    #[test]
    fn nothing_fires_before_its_deadline() {
        let mut t = T::new();
        let now = Instant::now();
        t.insert(TimerId(1), now + Duration::from_millis(5), Task::Once(1));
        assert!(t.pop_expired(now).is_none());
        assert!(t.pop_expired(now + Duration::from_millis(5)).is_some());
    }

    #[test]
    fn cancel_says_whether_the_timer_was_pending() {
        let mut t = T::new();
        let now = Instant::now();
        t.insert(TimerId(1), now, Task::Once(1));
        assert!(t.cancel(TimerId(1)));
        assert!(!t.cancel(TimerId(1)));
        assert!(t.pop_expired(now).is_none());
        assert_eq!(t.next_deadline(), None);
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

    /// Random inserts, cancels and expiries against a BTreeMap model.
    #[test]
    fn timers_match_a_sorted_map_model() {
        let base = Instant::now();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut t = T::new();
        let mut model: BTreeMap<(u64, u64), TimerId> = BTreeMap::new();
        let mut seq = 0;
        let mut next_id = 0;
        let mut now = 0u64;
        for _ in 0..20_000 {
            match rand() % 4 {
                0 | 1 => {
                    next_id += 1;
                    seq += 1;
                    let at = now + rand() % 100;
                    t.insert(
                        TimerId(next_id),
                        base + Duration::from_micros(at),
                        Task::Once(0),
                    );
                    model.insert((at, seq), TimerId(next_id));
                }
                2 => {
                    let id = TimerId(rand() % (next_id + 1));
                    let key = model.iter().find(|(_, v)| **v == id).map(|(k, _)| *k);
                    assert_eq!(t.cancel(id), key.is_some());
                    if let Some(k) = key {
                        model.remove(&k);
                    }
                }
                _ => {
                    now += rand() % 30;
                    let at = base + Duration::from_micros(now);
                    while let Some((id, _, _)) = t.pop_expired(at) {
                        let (&k, &want) = model.iter().next().expect("model has an expired timer");
                        assert!(k.0 <= now);
                        assert_eq!(id, want);
                        model.remove(&k);
                    }
                    assert!(model.keys().next().is_none_or(|k| k.0 > now));
                }
            }
            assert_eq!(t.len(), model.len());
        }
    }
}
