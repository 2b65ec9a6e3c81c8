//! The handle other threads use to reach the loop.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rouse_poll::Waker;

use crate::queue::{Pushed, Queue};
use crate::timer::state::TimerStates;
use crate::timer::{Task, TimerId, period_nanos};
use crate::{Ctx, Error};

/// A functor queued from any thread: runs once on the loop thread with the
/// loop's context.
pub(crate) type Functor = Box<dyn FnOnce(&mut Ctx) + Send>;

/// A timer's task made by a handle, on its way to the loop.
pub(crate) type SendTask = Task<Box<dyn FnOnce(&mut Ctx) + Send>, Box<dyn FnMut(&mut Ctx) + Send>>;

/// What the loop shares with its handles.
pub(crate) struct Shared {
    pub(crate) queue: Queue<Functor>,
    pub(crate) waker: Waker,
    pub(crate) quit: AtomicBool,
    /// The id (see [`thread_id`]) of the loop thread.
    pub(crate) loop_thread: u64,
    /// Calls to `Waker::wake` the queue asked for.
    pub(crate) wake_calls: AtomicU64,
    /// Functors the loop holds and has not yet run: taken from the queue (or
    /// queued on the loop thread) and not yet run. Grows before they arrive
    /// and shrinks after they have run, so it never undercounts.
    pub(crate) held: AtomicUsize,
    pub(crate) timers: Arc<TimerStates>,
    /// Tasks woken on the loop thread, to be polled (only the loop thread
    /// touches it: the lock is never contended).
    pub(crate) local_tasks: Mutex<std::collections::VecDeque<u64>>,
    /// Numbers tasks, from any thread.
    pub(crate) next_task: AtomicU64,
    /// Tasks spawned and woken from other threads: a queue of its own, with
    /// the same coalesced wake as the functor queue's, so that neither
    /// costs an allocation per item.
    pub(crate) task_inbox: Queue<crate::task::Remote>,
}

impl Shared {
    /// Queues `f`, waking the loop if it is the first functor since the last
    /// drain.
    ///
    /// If the wake fails, `f` is taken back (and dropped here) unless the
    /// loop has taken it meanwhile: an error means it will not run, and a
    /// retry works.
    pub(crate) fn push(&self, f: Functor) -> Result<(), Error> {
        self.push_to(&self.queue, f)
    }

    /// Puts a spawned task or a wake in the task inbox, as [`push`](Shared::push)
    /// queues a functor.
    pub(crate) fn push_task(&self, item: crate::task::Remote) -> Result<(), Error> {
        self.push_to(&self.task_inbox, item)
    }

    fn push_to<T>(&self, queue: &Queue<T>, item: T) -> Result<(), Error> {
        match queue.push(item) {
            Pushed::Queued => Ok(()),
            Pushed::Wake(ticket) => {
                self.wake_for_functor()
                    .or_else(|e| match queue.retract(ticket) {
                        Some(item) => {
                            drop(item);
                            Err(e)
                        }
                        // The loop took it, so it is awake and will run it.
                        None if !queue.is_closed() => Ok(()),
                        None => Err(Error::LoopGone),
                    })
            }
            Pushed::Closed(item) => {
                drop(item);
                Err(Error::LoopGone)
            }
        }
    }

    /// Wakes the loop on behalf of a queued functor, and counts it.
    fn wake_for_functor(&self) -> Result<(), Error> {
        self.wake_calls.fetch_add(1, Ordering::Relaxed);
        self.wake()
    }

    pub(crate) fn wake(&self) -> Result<(), Error> {
        self.waker.wake().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotConnected => Error::LoopGone,
            _ => Error::Io(e),
        })
    }

    /// Whether the loop has been dropped: once true, every call answers
    /// [`Error::LoopGone`].
    pub(crate) fn queue_closed(&self) -> bool {
        self.queue.is_closed()
    }

    pub(crate) fn in_loop_thread(&self) -> bool {
        self.loop_thread == thread_id()
    }

    /// Cancels a timer from any thread: see [`LoopHandle::cancel`].
    pub(crate) fn cancel(&self, id: TimerId) -> bool {
        let Some((word, slot, generation)) = id.word(&self.timers) else {
            return false;
        };
        if !self.timers.cancel(word, generation) {
            return false;
        }
        // The timer will not run; the loop frees its memory at its next
        // iteration.
        self.timers.reap_later(slot, generation);
        true
    }
}

/// A small, process-unique id for the calling thread; cheaper to compare than
/// `std::thread::ThreadId`, and never 0.
pub(crate) fn thread_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: Cell<u64> = const { Cell::new(0) };
    }
    ID.with(|id| {
        if id.get() == 0 {
            id.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        id.get()
    })
}

/// Reaches an [`EventLoop`](crate::EventLoop) from any thread.
///
/// `Send + Sync + Clone`. What it is given crosses threads, so it must be
/// `Send`; callbacks added on the loop thread through [`Ctx`] need not be.
/// Every call returns [`Error::LoopGone`] at once once the loop has been
/// dropped (and, once one call has, every later one does); the functor or
/// timer callback it was given is then dropped on the calling thread.
///
/// # Examples
///
/// ```
/// use rouse_loop::EventLoop;
///
/// let mut lp = EventLoop::new()?;
/// let handle = lp.handle();
/// std::thread::spawn(move || {
///     handle.queue_in_loop(|cx| cx.quit()).unwrap();
/// });
/// lp.run()?; // returns once the functor has run
/// # Ok::<(), rouse_loop::Error>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
}

impl LoopHandle {
    /// Queues `f` to run on the loop thread, in the loop's next functor phase.
    ///
    /// Functors run in the order they were queued. One queued while the loop
    /// runs functors runs in the next iteration, without the loop blocking in
    /// between. Only the first functor queued since the loop last took the
    /// queue wakes it, and that wake costs a system call only if the loop is
    /// blocked.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped (`f` is dropped); the
    /// OS error if the wake failed, in which case `f` is not queued either
    /// (see [`rouse_poll::Waker::wake`]).
    pub fn queue_in_loop(&self, f: impl FnOnce(&mut Ctx) + Send + 'static) -> Result<(), Error> {
        self.shared.push(Box::new(f))
    }

    /// Runs `f` now if called on the loop thread, and queues it otherwise.
    ///
    /// # Errors
    ///
    /// As [`queue_in_loop`](LoopHandle::queue_in_loop).
    pub fn run_in_loop(&self, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        if self.shared.in_loop_thread() && !self.shared.queue_closed() {
            f();
            Ok(())
        } else {
            self.queue_in_loop(move |_| f())
        }
    }

    /// Whether the caller is on the loop thread: the thread that made the
    /// loop (which, not being `Send`, runs there).
    pub fn is_in_loop_thread(&self) -> bool {
        self.shared.in_loop_thread()
    }

    /// Makes [`run`](crate::EventLoop::run) return after the current
    /// iteration.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped.
    pub fn quit(&self) -> Result<(), Error> {
        if self.shared.queue_closed() {
            return Err(Error::LoopGone);
        }
        self.shared.quit.store(true, Ordering::Release);
        self.shared.wake()
    }

    /// Runs `f` on the loop thread once `delay` has passed. A delay past
    /// what [`Instant`] can hold means never (the timer can still be
    /// cancelled).
    ///
    /// The id can be passed to [`cancel`](LoopHandle::cancel) at once.
    ///
    /// # Errors
    ///
    /// As [`queue_in_loop`](LoopHandle::queue_in_loop).
    pub fn run_after(
        &self,
        delay: Duration,
        f: impl FnOnce(&mut Ctx) + Send + 'static,
    ) -> Result<TimerId, Error> {
        self.add_timer(Instant::now().checked_add(delay), Task::Once(Box::new(f)))
    }

    /// Runs `f` on the loop thread at `deadline` (never before).
    ///
    /// # Errors
    ///
    /// As [`queue_in_loop`](LoopHandle::queue_in_loop).
    pub fn run_at(
        &self,
        deadline: Instant,
        f: impl FnOnce(&mut Ctx) + Send + 'static,
    ) -> Result<TimerId, Error> {
        self.add_timer(Some(deadline), Task::Once(Box::new(f)))
    }

    /// Runs `f` on the loop thread after `first`, then every `period` (see
    /// [`Ctx::run_every`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with [`io::ErrorKind::InvalidInput`] for a zero
    /// `period`; otherwise as [`queue_in_loop`](LoopHandle::queue_in_loop).
    pub fn run_every(
        &self,
        first: Duration,
        period: Duration,
        f: impl FnMut(&mut Ctx) + Send + 'static,
    ) -> Result<TimerId, Error> {
        check_period(period)?;
        let task = Task::Every {
            period: period_nanos(period),
            f: Box::new(f) as Box<dyn FnMut(&mut Ctx) + Send>,
        };
        self.add_timer(Instant::now().checked_add(first), task)
    }

    fn add_timer(&self, deadline: Option<Instant>, task: SendTask) -> Result<TimerId, Error> {
        if self.shared.queue_closed() {
            return Err(Error::LoopGone);
        }
        let timers = &self.shared.timers;
        let (slot, word) = timers.alloc_remote(matches!(task, Task::Every { .. }));
        let id = TimerId::remote(timers, slot, word);
        let pushed = self.shared.push(Box::new(move |cx: &mut Ctx| {
            cx.insert_remote_timer(id, deadline, task);
        }));
        match pushed {
            Ok(()) => Ok(id),
            Err(e) => {
                timers.free_remote(slot);
                Err(e)
            }
        }
    }

    /// Cancels a timer, from any thread: returns whether it was stopped
    /// before it ran (for a repeating timer, before its next run). Exact:
    /// `true` means it will not run (again), whatever the loop is doing and
    /// however many functors are queued; `false` means it has run or is
    /// running (for a timer that fires once), was cancelled already, or is
    /// not a timer of this loop. On the loop thread, it takes effect at
    /// once, as [`Ctx::cancel`] does.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped.
    pub fn cancel(&self, id: TimerId) -> Result<bool, Error> {
        if self.shared.queue_closed() {
            return Err(Error::LoopGone);
        }
        Ok(self.shared.cancel(id))
    }

    /// Functors queued and not yet run: waiting in the queue, or taken by
    /// the loop (or queued on its thread) and not yet run. Never less than
    /// the true count; more, by up to a batch, while the loop is running
    /// functors. Zero means none is waiting. For watching a runaway
    /// producer.
    pub fn pending_functors(&self) -> usize {
        self.shared.queue.len() + self.shared.held.load(Ordering::Relaxed)
    }

    /// Timers that exist and may still run: made and not yet fired for
    /// good, cancelled, or (repeating) stopped.
    pub fn pending_timers(&self) -> usize {
        self.shared.timers.pending.load(Ordering::Relaxed)
    }

    /// Calls to the loop's waker made on behalf of queued functors (timers
    /// added through a handle included, which travel as functors): only the
    /// first functor queued after each take of the queue makes one. A
    /// [`quit`](LoopHandle::quit) is not counted.
    pub fn functor_wakes(&self) -> u64 {
        self.shared.wake_calls.load(Ordering::Relaxed)
    }

    /// The counters of the loop's poller: wakes, and the system calls they
    /// cost.
    pub fn poller_stats(&self) -> rouse_poll::Stats {
        self.shared.waker.stats()
    }
}

/// A repeating timer needs a period above zero.
pub(crate) fn check_period(period: Duration) -> io::Result<()> {
    if period.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "run_every: a period of zero would run the timer in every iteration; \
             use a period above zero (or a functor that queues itself)",
        ));
    }
    Ok(())
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("pending_functors", &self.pending_functors())
            .field("pending_timers", &self.pending_timers())
            .finish_non_exhaustive()
    }
}
