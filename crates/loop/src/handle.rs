//! The handle other threads use to reach the loop.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rouse_poll::Waker;

use crate::queue::{Pushed, Queue};
use crate::timer::TimerId;
use crate::{Ctx, Error};

/// A queued functor: runs once on the loop thread with the loop's context.
pub(crate) type Functor = Box<dyn FnOnce(&mut Ctx) + Send>;

/// What the loop shares with its handles.
pub(crate) struct Shared {
    pub(crate) queue: Queue<Functor>,
    pub(crate) waker: Waker,
    pub(crate) quit: AtomicBool,
    /// The id (see [`thread_id`]) of the loop thread.
    pub(crate) loop_thread: AtomicU64,
    pub(crate) next_timer: AtomicU64,
    /// Calls to `Waker::wake` the queue asked for.
    pub(crate) wake_calls: AtomicU64,
}

impl Shared {
    /// Queues `f`, waking the loop if it is the first functor since the last
    /// drain.
    ///
    /// If the wake fails, `f` is taken back (and dropped here) unless the
    /// loop has taken it meanwhile: an error means it will not run, and a
    /// retry works.
    pub(crate) fn push(&self, f: Functor) -> Result<(), Error> {
        match self.queue.push(f) {
            Pushed::Queued => Ok(()),
            Pushed::Wake(ticket) => self.wake().or_else(|e| match self.queue.retract(ticket) {
                Some(f) => {
                    drop(f);
                    Err(e)
                }
                // The loop took it, so it is awake and will run it.
                None if !self.queue.is_closed() => Ok(()),
                None => Err(Error::LoopGone),
            }),
            Pushed::Closed(f) => {
                drop(f);
                Err(Error::LoopGone)
            }
        }
    }

    pub(crate) fn wake(&self) -> Result<(), Error> {
        self.wake_calls.fetch_add(1, Ordering::Relaxed);
        self.waker.wake().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotConnected => Error::LoopGone,
            _ => Error::Io(e),
        })
    }

    pub(crate) fn timer_id(&self) -> TimerId {
        // From 1: the timers take 0 to mean "not made by a handle".
        TimerId::remote(self.next_timer.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Whether the loop has been dropped: once true, every call answers
    /// [`Error::LoopGone`].
    pub(crate) fn queue_closed(&self) -> bool {
        self.queue.is_closed()
    }

    pub(crate) fn in_loop_thread(&self) -> bool {
        self.loop_thread.load(Ordering::Relaxed) == thread_id()
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
/// `Send + Sync + Clone`. Every call returns [`Error::LoopGone`] at once once
/// the loop has been dropped; the functor or timer callback it was given is
/// then dropped on the calling thread.
///
/// # Examples
///
/// ```
/// use rouse_loop::EventLoop;
///
/// let mut lp = EventLoop::new()?;
/// let handle = lp.handle();
/// std::thread::spawn(move || {
///     handle.queue_in_loop(|cx: &mut rouse_loop::Ctx| cx.quit()).unwrap();
/// });
/// lp.run()?; // returns once the functor has run
/// # Ok::<(), rouse_loop::Error>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
}

/// A functor the loop can run: either a plain `FnOnce()` or an
/// `FnOnce(&mut Ctx)` that reaches the loop.
///
/// The `Marker` parameter only tells the two kinds apart; callers never name
/// it.
pub trait IntoFunctor<Marker>: Send + 'static {
    #[doc(hidden)]
    fn into_functor(self) -> Box<dyn FnOnce(&mut Ctx) + Send>;
}

impl<F: FnOnce() + Send + 'static> IntoFunctor<()> for F {
    fn into_functor(self) -> Box<dyn FnOnce(&mut Ctx) + Send> {
        Box::new(move |_: &mut Ctx| self())
    }
}

impl<F: FnOnce(&mut Ctx) + Send + 'static> IntoFunctor<Ctx> for F {
    fn into_functor(self) -> Box<dyn FnOnce(&mut Ctx) + Send> {
        Box::new(self)
    }
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
    /// [`Error::LoopGone`] if the loop has been dropped (`f` is dropped).
    pub fn queue_in_loop<M>(&self, f: impl IntoFunctor<M>) -> Result<(), Error> {
        self.shared.push(f.into_functor())
    }

    /// Runs `f` now if called on the loop thread, and queues it otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped (`f` is dropped).
    pub fn run_in_loop(&self, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        if self.shared.in_loop_thread() && !self.shared.queue_closed() {
            f();
            Ok(())
        } else {
            self.queue_in_loop(f)
        }
    }

    /// Whether the caller is on the loop thread: the thread that created the
    /// loop until [`run`](crate::EventLoop::run) is called, and the thread
    /// running it from then on.
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

    /// Runs `f` on the loop thread once `delay` has passed.
    ///
    /// The timer exists once the loop has taken this request from its queue;
    /// the id can be passed to [`cancel`](LoopHandle::cancel) at once.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped.
    pub fn run_after(
        &self,
        delay: Duration,
        f: impl FnOnce(&mut Ctx) + Send + 'static,
    ) -> Result<TimerId, Error> {
        self.run_at(Instant::now() + delay, f)
    }

    /// Runs `f` on the loop thread at `deadline` (never before).
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped.
    pub fn run_at(
        &self,
        deadline: Instant,
        f: impl FnOnce(&mut Ctx) + Send + 'static,
    ) -> Result<TimerId, Error> {
        let id = self.shared.timer_id();
        self.shared.push(Box::new(move |cx: &mut Ctx| {
            cx.insert_once(id, deadline, Box::new(f))
        }))?;
        Ok(id)
    }

    /// Runs `f` on the loop thread after `first`, then every `period`.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped.
    pub fn run_every(
        &self,
        first: Duration,
        period: Duration,
        f: impl FnMut(&mut Ctx) + Send + 'static,
    ) -> Result<TimerId, Error> {
        let id = self.shared.timer_id();
        let deadline = Instant::now() + first;
        self.shared.push(Box::new(move |cx: &mut Ctx| {
            cx.insert_every(id, deadline, period, Box::new(f))
        }))?;
        Ok(id)
    }

    /// Cancels a timer from any thread, in queue order: a timer that has not
    /// fired by the time the loop takes this request never runs.
    ///
    /// On the loop thread, [`Ctx::cancel`] says at once whether the timer was
    /// still pending.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped.
    pub fn cancel(&self, id: TimerId) -> Result<(), Error> {
        self.shared.push(Box::new(move |cx: &mut Ctx| {
            cx.cancel(id);
        }))
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}
