//! The wake protocol: when a wake must cost a system call, and when not.
//!
//! One word holds three bits and an epoch:
//!
//! * `PARKED`: the poller has declared that it is about to block in the kernel
//!   (or is blocked there);
//! * `NOTIFIED`: a waker has work for the poller that it has not yet seen;
//! * `CLOSED`: the poller is gone;
//! * the epoch, above the bits, counts parks, so that a notification can be
//!   taken back only in the park it was made in.
//!
//! A waker first marks its own slot pending, then calls [`WakeState::notify`],
//! which sets `NOTIFIED` with one read-modify-write and says whether a system
//! call is needed: only when the poller was `PARKED` and no one had notified
//! it yet. The poller calls [`WakeState::park`] before it blocks, which sets
//! `PARKED` only if nothing is `NOTIFIED` (otherwise it must not block), and
//! [`WakeState::unpark`] after, which clears both bits and says whether to
//! look at the wakers' slots.
//!
//! Both sides use read-modify-writes on the one word, so every notify is
//! ordered before or after every park: before, and the park fails; after, and
//! the notify sees `PARKED` and makes the system call. Either way the wake is
//! seen. `Release` on notify and `Acquire` on unpark carry the slots' pending
//! flags across; the kernel's own ordering is never relied on.
//!
//! Many wakes between two parks cost at most one system call (only the first
//! to set `NOTIFIED` makes it), and a wake while the poller is not parked costs
//! none.
//!
//! If that one system call fails, the poller stays blocked, and every wake
//! that found `NOTIFIED` already set relied on it. The failed waker then
//! [`retract`](WakeState::retract)s its notification, if the poller is still
//! in the same park: `NOTIFIED` is clear again, so the next wake (its own
//! retry, or anyone's) makes the call, and the poller then finds every slot
//! still pending. A wake whose slot is already pending therefore notifies
//! again whenever `NOTIFIED` is clear, rather than trusting that whoever set
//! the slot will.
//!
//! The loom models in this file check every interleaving of two wakers and
//! one poller, with and without a failing system call.

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

const PARKED: u64 = 1;
const NOTIFIED: u64 = 2;
const CLOSED: u64 = 4;
/// One park, in the epoch above the bits.
const EPOCH: u64 = 8;

/// What a notifier must do after [`WakeState::notify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notify {
    /// The poller is parked and this is the first notification: make the wake
    /// system call; if it fails, [`retract`](WakeState::retract) with this.
    Syscall(Ticket),
    /// The poller will see the notification without help.
    Nothing,
    /// The poller is gone.
    Closed,
}

/// The park a notification that must make the system call was made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

#[derive(Debug)]
pub(crate) struct WakeState {
    state: AtomicU64,
}

impl WakeState {
    pub(crate) fn new() -> WakeState {
        WakeState {
            state: AtomicU64::new(0),
        }
    }

    /// Tells the poller there is something to see.
    pub(crate) fn notify(&self) -> Notify {
        let prev = self.state.fetch_or(NOTIFIED, AcqRel);
        if prev & CLOSED != 0 {
            Notify::Closed
        } else if prev & (PARKED | NOTIFIED) == PARKED {
            Notify::Syscall(Ticket(prev))
        } else {
            Notify::Nothing
        }
    }

    /// Takes back a notification whose system call failed, if the poller is
    /// still in the park it was made in: the next notify then makes the call
    /// again. Otherwise the poller has woken (or closed) and will look at
    /// the slots anyway.
    pub(crate) fn retract(&self, ticket: Ticket) {
        let _ = self
            .state
            .compare_exchange(ticket.0 | NOTIFIED, ticket.0, AcqRel, Relaxed);
    }

    /// Whether a notification is waiting; cheap enough for a spin loop.
    pub(crate) fn is_notified(&self) -> bool {
        self.state.load(Acquire) & NOTIFIED != 0
    }

    /// Whether a notification is waiting or the poller is gone: either way
    /// a wake need do nothing more.
    pub(crate) fn is_notified_or_closed(&self) -> bool {
        self.state.load(Acquire) & (NOTIFIED | CLOSED) != 0
    }

    /// Whether the poller is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Acquire) & CLOSED != 0
    }

    /// Whether the poller is parked (about to block, or blocked).
    pub(crate) fn is_parked(&self) -> bool {
        self.state.load(Acquire) & PARKED != 0
    }

    /// Declares that the poller is about to block. Returns false, leaving the
    /// state alone, when a notification is already waiting: the poller must
    /// then not block.
    pub(crate) fn park(&self) -> bool {
        let s = self.state.load(Relaxed);
        if s & (PARKED | NOTIFIED | CLOSED) != 0 {
            return false;
        }
        // Only a notify can change the word meanwhile, and then the park
        // must fail.
        self.state
            .compare_exchange(s, s.wrapping_add(EPOCH) | PARKED, AcqRel, Acquire)
            .is_ok()
    }

    /// Ends a wait (whether or not it parked). Returns whether a notification
    /// arrived, in which case the poller must look at every slot.
    pub(crate) fn unpark(&self) -> bool {
        self.state.fetch_and(!(PARKED | NOTIFIED), AcqRel) & NOTIFIED != 0
    }

    /// Marks the poller gone: every later notify returns [`Notify::Closed`].
    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, AcqRel);
    }
}

/// One waker's pending flag.
#[derive(Debug)]
pub(crate) struct Pending {
    flag: AtomicBool,
}

impl Pending {
    pub(crate) fn new() -> Pending {
        Pending {
            flag: AtomicBool::new(false),
        }
    }

    /// Marks the slot pending; true if it was not already (the caller must
    /// then notify).
    pub(crate) fn set(&self) -> bool {
        !self.flag.swap(true, AcqRel)
    }

    /// Whether the slot is pending.
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(SeqCst)
    }

    /// Takes the pending mark; true if it was set.
    pub(crate) fn take(&self) -> bool {
        // Cheap check first: most slots are not pending when scanned.
        self.flag.load(Relaxed) && self.flag.swap(false, SeqCst)
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! `RUSTFLAGS="--cfg loom" cargo test -p rouse-poll --release --lib loom`
    use loom::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// The kernel side of the wake fd as epoll sees an edge-triggered,
    /// never-read eventfd: each write queues an edge, and a wait returns once
    /// an edge is queued (even one queued before the wait began), taking all
    /// queued edges.
    #[derive(Default)]
    struct Kernel {
        edges: Mutex<usize>,
        cond: Condvar,
        writes: loom::sync::atomic::AtomicUsize,
    }

    impl Kernel {
        fn write(&self) {
            self.writes.fetch_add(1, Relaxed);
            *self.edges.lock().unwrap() += 1;
            self.cond.notify_one();
        }

        fn wait(&self) {
            let mut edges = self.edges.lock().unwrap();
            while *edges == 0 {
                edges = self.cond.wait(edges).unwrap();
            }
            *edges = 0;
        }
    }

    struct World {
        state: WakeState,
        slots: [Pending; 2],
        kernel: Kernel,
    }

    /// One `Waker::wake`, as `waker.rs` makes it; `fail` makes its system
    /// call fail. Returns false for a failed wake, which the caller retries.
    fn try_wake(world: &World, slot: usize, fail: bool) -> bool {
        if !world.slots[slot].set() && world.state.is_notified_or_closed() {
            return true;
        }
        match world.state.notify() {
            Notify::Syscall(ticket) if fail => {
                world.state.retract(ticket);
                false
            }
            Notify::Syscall(_) => {
                world.kernel.write();
                true
            }
            Notify::Nothing | Notify::Closed => true,
        }
    }

    fn wake(world: &World, slot: usize) {
        assert!(try_wake(world, slot, false));
    }

    /// The poller: loops until it has seen both wakers' tokens, blocking in
    /// the kernel whenever the protocol lets it. A lost wake leaves it blocked
    /// forever, which loom reports as a deadlock. Returns how many times it
    /// blocked.
    fn poll_until_both_seen(world: &World) -> usize {
        let mut seen = [false; 2];
        let mut blocked = 0;
        while seen != [true, true] {
            if world.state.park() {
                blocked += 1;
                world.kernel.wait();
            }
            if world.state.unpark() {
                for (i, slot) in world.slots.iter().enumerate() {
                    if slot.take() {
                        seen[i] = true;
                    }
                }
            }
        }
        blocked
    }

    fn world() -> Arc<World> {
        Arc::new(World {
            state: WakeState::new(),
            slots: [Pending::new(), Pending::new()],
            kernel: Kernel::default(),
        })
    }

    #[test]
    fn loom_two_wakers_and_a_poller_never_lose_a_wake() {
        loom::model(|| {
            let world = world();
            let wakers: Vec<_> = (0..2)
                .map(|i| {
                    let world = Arc::clone(&world);
                    loom::thread::spawn(move || wake(&world, i))
                })
                .collect();
            let blocked = poll_until_both_seen(&world);
            for w in wakers {
                w.join().unwrap();
            }
            let writes = world.kernel.writes.load(Relaxed);
            // Never more system calls than times the poller parked.
            assert!(writes <= blocked, "{writes} writes, {blocked} parks");
        });
    }

    #[test]
    fn loom_repeated_wakes_from_one_waker_cost_at_most_one_syscall_per_park() {
        loom::model(|| {
            let world = world();
            let waker = {
                let world = Arc::clone(&world);
                loom::thread::spawn(move || {
                    wake(&world, 0);
                    wake(&world, 0);
                    wake(&world, 1);
                })
            };
            let blocked = poll_until_both_seen(&world);
            waker.join().unwrap();
            let writes = world.kernel.writes.load(Relaxed);
            assert!(writes <= blocked, "{writes} writes, {blocked} parks");
        });
    }

    /// Three threads and a retry: bounded to three preemptions, which still
    /// puts a failed call and its retract between every pair of the
    /// poller's steps.
    fn bounded() -> loom::model::Builder {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model
    }

    /// A waker on slot 0 whose system call fails once, and who then wakes
    /// again, as a caller of `wake` that got the error would.
    fn failing_then_retrying(world: &Arc<World>) -> loom::thread::JoinHandle<()> {
        let world = Arc::clone(world);
        loom::thread::spawn(move || {
            if !try_wake(&world, 0, true) {
                wake(&world, 0);
            }
        })
    }

    /// A waker whose system call fails retries; another waker's wake that
    /// coalesced onto the failed one is not lost either.
    #[test]
    fn loom_a_failed_wake_system_call_is_made_again_by_the_next_wake() {
        bounded().check(|| {
            let world = world();
            let failing = failing_then_retrying(&world);
            let other = {
                let world = Arc::clone(&world);
                loom::thread::spawn(move || wake(&world, 1))
            };
            let blocked = poll_until_both_seen(&world);
            failing.join().unwrap();
            other.join().unwrap();
            let writes = world.kernel.writes.load(Relaxed);
            assert!(writes <= blocked, "{writes} writes, {blocked} parks");
        });
    }

    /// Two clones of one waker (one slot): the second finds the slot
    /// pending while the first's system call fails; whichever retries, the
    /// poller is woken.
    #[test]
    fn loom_a_wake_on_a_slot_left_pending_by_a_failed_call_notifies_again() {
        bounded().check(|| {
            let world = world();
            let failing = failing_then_retrying(&world);
            let clone = {
                let world = Arc::clone(&world);
                loom::thread::spawn(move || {
                    wake(&world, 0);
                    wake(&world, 1);
                })
            };
            poll_until_both_seen(&world);
            failing.join().unwrap();
            clone.join().unwrap();
        });
    }

    #[test]
    fn loom_a_wake_after_close_reports_closed() {
        loom::model(|| {
            let world = world();
            let closer = {
                let world = Arc::clone(&world);
                loom::thread::spawn(move || world.state.close())
            };
            let first = world.state.notify();
            closer.join().unwrap();
            assert_eq!(world.state.notify(), Notify::Closed);
            assert!(!matches!(first, Notify::Syscall(_)));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_while_not_parked_needs_no_syscall_and_stops_the_next_park() {
        let s = WakeState::new();
        assert_eq!(s.notify(), Notify::Nothing);
        assert!(s.is_notified());
        assert!(!s.park());
        assert!(s.unpark());
        assert!(s.park());
    }

    #[test]
    fn only_the_first_notify_of_a_park_needs_a_syscall() {
        let s = WakeState::new();
        assert!(s.park());
        assert!(matches!(s.notify(), Notify::Syscall(_)));
        for _ in 0..10 {
            assert_eq!(s.notify(), Notify::Nothing);
        }
        assert!(s.unpark());
        assert!(!s.unpark());
    }

    #[test]
    fn a_retracted_notify_makes_the_next_one_call_again_but_only_in_its_park() {
        let s = WakeState::new();
        assert!(s.park());
        let Notify::Syscall(ticket) = s.notify() else {
            panic!("the first notify of a park calls")
        };
        s.retract(ticket);
        assert!(!s.is_notified());
        assert!(matches!(s.notify(), Notify::Syscall(_)));
        // A ticket from an earlier park changes nothing.
        assert!(s.unpark());
        assert!(s.park());
        assert!(matches!(s.notify(), Notify::Syscall(_)));
        s.retract(ticket);
        assert!(s.is_notified());
    }

    #[test]
    fn close_survives_unpark() {
        let s = WakeState::new();
        s.close();
        assert!(!s.unpark());
        assert_eq!(s.notify(), Notify::Closed);
    }

    #[test]
    fn pending_is_set_once_and_taken_once() {
        let p = Pending::new();
        assert!(p.set());
        assert!(!p.set());
        assert!(p.take());
        assert!(!p.take());
    }
}
