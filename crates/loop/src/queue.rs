//! The pending-functor queue: a mutex-guarded vector whose push says whether
//! the loop needs waking.
//!
//! Only the first push after the loop takes the queue asks for a wake: every
//! later push finds an item that the loop has not yet taken, and the loop
//! takes all items at once, so the first pusher's wake covers them. The wake
//! itself is rouse-poll's coalesced waker, which costs no system call while
//! the loop is awake; so a burst of functors costs at most one wake call and
//! at most one system call. The loom model below checks that no functor is
//! stranded.
//!
//! If that one wake fails, its pusher [`retract`](Queue::retract)s its item
//! (unless the loop has taken it meanwhile, in which case the loop is awake
//! and the push stands), and the next push asks for a wake again: a failed
//! call leaves nothing half-done, and the items queued behind it go with the
//! next wake.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::sync::Mutex;

#[derive(Debug)]
pub(crate) struct Queue<T> {
    inner: Mutex<Inner<T>>,
    /// Set (under the lock) when the queue is closed: one answer for every
    /// caller, whether it reads this or pushes.
    closed: AtomicBool,
}

#[derive(Debug)]
struct Inner<T> {
    items: Vec<T>,
    closed: bool,
    /// A wake has been asked for since the loop last took the queue.
    woken: bool,
    /// Takes so far: a retract applies only before the next take.
    takes: u64,
}

/// The outcome of a push.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed<T> {
    /// Queued; the loop must be woken. If the wake fails, pass this to
    /// [`Queue::retract`].
    Wake(WakeTicket),
    /// Queued; a wake is already on its way.
    Queued,
    /// The loop is gone: the item is handed back.
    Closed(T),
}

/// Where the item whose push asked for a wake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WakeTicket {
    takes: u64,
    index: usize,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Queue<T> {
        Queue {
            inner: Mutex::new(Inner {
                items: Vec::new(),
                closed: false,
                woken: false,
                takes: 0,
            }),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Inner<T>> {
        // Every critical section leaves the queue whole: a poisoned lock
        // (which only a panicking allocator could cause) is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, item: T) -> Pushed<T> {
        let mut q = self.lock();
        if q.closed {
            return Pushed::Closed(item);
        }
        q.items.push(item);
        if q.woken {
            Pushed::Queued
        } else {
            q.woken = true;
            Pushed::Wake(WakeTicket {
                takes: q.takes,
                index: q.items.len() - 1,
            })
        }
    }

    /// After the wake a push asked for failed: takes its item back if the
    /// loop has not taken it (`None` if it has), and makes the next push ask
    /// for a wake again.
    pub(crate) fn retract(&self, ticket: WakeTicket) -> Option<T> {
        let mut q = self.lock();
        if q.takes != ticket.takes || q.closed {
            return None;
        }
        q.woken = false;
        Some(q.items.remove(ticket.index))
    }

    /// Takes every queued item: `spare` must be empty, and becomes the
    /// queue's vector, so the lock is held for a swap rather than for a copy
    /// of every item, and producers push into a vector that already has
    /// room; `spare` comes back holding the items.
    ///
    /// `held` (the loop's count of functors taken and not yet run), if
    /// given, grows by
    /// the number taken while the lock is held, so that the queue's length
    /// plus `held` never undercounts, whenever another thread reads them.
    pub(crate) fn take(&self, spare: &mut Vec<T>, held: Option<&AtomicUsize>) {
        debug_assert!(spare.is_empty());
        let mut q = self.lock();
        std::mem::swap(&mut q.items, spare);
        if let Some(held) = held {
            held.fetch_add(spare.len(), Ordering::Relaxed);
        }
        q.woken = false;
        q.takes += 1;
    }

    /// Moves every queued item to the end of `out` (`spare` as for
    /// [`take`](Queue::take); empty again on return).
    #[cfg(test)]
    pub(crate) fn drain_into(&self, out: &mut std::collections::VecDeque<T>, spare: &mut Vec<T>) {
        self.take(spare, None);
        out.extend(spare.drain(..));
    }

    /// The number of items queued now.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether the queue is closed; once true, every push is refused.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses every later push and returns what was queued.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut q = self.lock();
        q.closed = true;
        self.closed.store(true, Ordering::Release);
        std::mem::take(&mut q.items)
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! `cargo xtask loom`, or
    //! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p rouse-loop --release --lib loom_`
    use std::collections::VecDeque;

    use loom::sync::atomic::Ordering;
    use loom::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// A wake as rouse-poll's waker guarantees it (model-checked there): a
    /// wake after the loop's last look ends its next wait.
    #[derive(Default)]
    struct Wake {
        flag: Mutex<bool>,
        cond: Condvar,
        syscalls: loom::sync::atomic::AtomicUsize,
    }

    impl Wake {
        fn wake(&self) {
            self.syscalls.fetch_add(1, Ordering::Relaxed);
            *self.flag.lock().unwrap() = true;
            self.cond.notify_one();
        }

        fn wait(&self) {
            let mut f = self.flag.lock().unwrap();
            while !*f {
                f = self.cond.wait(f).unwrap();
            }
            *f = false;
        }
    }

    /// Two producers, the first pushing two functors and the second one,
    /// against the loop's drain-then-park. The preemption bound keeps the
    /// search to seconds; four preemptions cover every order in which a
    /// push can fall between the loop's drain and its park.
    #[test]
    fn loom_no_functor_is_stranded_and_a_burst_costs_one_wake_per_drain() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(4);
        model.check(|| {
            let q = Arc::new(Queue::new());
            let wake = Arc::new(Wake::default());
            let producers: Vec<_> = [(0, 2), (10, 1)]
                .into_iter()
                .map(|(base, n)| {
                    let (q, wake) = (Arc::clone(&q), Arc::clone(&wake));
                    loom::thread::spawn(move || {
                        for i in 0..n {
                            if matches!(q.push(base + i), Pushed::Wake(_)) {
                                wake.wake();
                            }
                        }
                    })
                })
                .collect();
            // The loop: drain, then park only if the drain found nothing.
            let mut got = VecDeque::new();
            let mut spare = Vec::new();
            let mut drains = 0;
            while got.len() < 3 {
                let before = got.len();
                q.drain_into(&mut got, &mut spare);
                drains += 1;
                if got.len() == before {
                    wake.wait();
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            let mut items: Vec<_> = got.into_iter().collect();
            items.sort();
            assert_eq!(items, [0, 1, 10], "a functor lost or run twice");
            assert!(wake.syscalls.load(Ordering::Relaxed) <= drains);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn only_the_first_push_after_a_take_asks_for_a_wake() {
        let q = Queue::new();
        assert!(matches!(q.push(1), Pushed::Wake(_)));
        assert_eq!(q.push(2), Pushed::Queued);
        let (mut out, mut spare) = (VecDeque::new(), Vec::with_capacity(8));
        q.drain_into(&mut out, &mut spare);
        assert_eq!(out, [1, 2]);
        assert!(spare.is_empty());
        assert!(matches!(q.push(3), Pushed::Wake(_)));
        q.drain_into(&mut out, &mut spare);
        assert_eq!(out, [1, 2, 3]);
        assert!(matches!(q.push(4), Pushed::Wake(_)));
        assert_eq!(q.push(5), Pushed::Queued);
        q.drain_into(&mut out, &mut spare);
        assert_eq!(out, [1, 2, 3, 4, 5]);
        assert!(matches!(q.push(3), Pushed::Wake(_)));
        assert!(!q.is_closed());
        assert_eq!(q.close(), vec![3]);
        assert!(q.is_closed());
        assert_eq!(q.push(6), Pushed::Closed(6));
    }

    #[test]
    fn a_retracted_push_is_gone_and_the_next_push_asks_for_a_wake_again() {
        let q = Queue::new();
        let Pushed::Wake(first) = q.push(1) else {
            panic!("the first push asks for a wake")
        };
        assert_eq!(q.push(2), Pushed::Queued); // relied on the first's wake
        assert_eq!(q.retract(first), Some(1));
        let Pushed::Wake(third) = q.push(3) else {
            panic!("after a retract the next push asks again")
        };
        assert_eq!(q.retract(third), Some(3));
        assert!(matches!(q.push(4), Pushed::Wake(_)));
        let (mut out, mut spare) = (VecDeque::new(), Vec::new());
        q.drain_into(&mut out, &mut spare);
        assert_eq!(out, [2, 4]);
        // Taken by the loop before the retract: it stands.
        let Pushed::Wake(late) = q.push(5) else {
            panic!("first push after a take")
        };
        q.drain_into(&mut out, &mut spare);
        assert_eq!(q.retract(late), None);
        assert_eq!(out, [2, 4, 5]);
    }
}
