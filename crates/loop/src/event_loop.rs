//! The loop, and the context every callback gets.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rouse_poll::{Events, Interest, Poller, Token, Waker};

use crate::Error;
use crate::handle::{Functor, LoopHandle, SendTask, Shared, check_period, thread_id};
use crate::queue::Queue;
use crate::timer::state::TimerStates;
use crate::timer::{Task, TimerId, Timers, next_period, period_nanos};

/// The waker's token; source tokens are slot ids, far below it.
const WAKE: Token = Token(usize::MAX - 16);
/// The timerfd of a nested loop (see `impl AsFd for EventLoop`).
const NEST_TIMER: Token = Token(usize::MAX - 17);
/// The most functors run in one iteration, so that a flood of them cannot
/// starve I/O and timers. The rest run in the next iterations, without the
/// loop blocking.
const FUNCTOR_BATCH: usize = 1024;
const EVENTS: usize = 1024;

/// What stays on the loop thread need not be `Send`.
type OnceFn = Box<dyn FnOnce(&mut Ctx)>;
type EveryFn = Box<dyn FnMut(&mut Ctx)>;
/// A functor on the loop thread: queued through [`Ctx`], or taken from the
/// shared queue.
type LocalFunctor = Box<dyn FnOnce(&mut Ctx)>;
/// A job's completion waiting on the loop thread for its result.
type Completion = Box<dyn FnOnce(Box<dyn Any + Send>, &mut Ctx)>;
/// Vectors and queues keep at most this much room once a burst has drained.
const SPARE: usize = 1024;

/// Identifies an I/O source registered with the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(u64);

impl SourceId {
    fn new(slot: u32, generation: u32) -> SourceId {
        SourceId(u64::from(generation) << 32 | u64::from(slot))
    }

    fn slot(self) -> usize {
        self.0 as u32 as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// The readiness an I/O callback is called with. Level-triggered: a source
/// that stays ready is called again in the next iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Data to read, end-of-file, or a peer's shutdown.
    pub readable: bool,
    /// Room to write.
    pub writable: bool,
    /// An error is pending on the file.
    pub error: bool,
    /// The peer hung up.
    pub hangup: bool,
}

/// An event loop: I/O callbacks, pending functors and timers, on one thread.
///
/// Each iteration waits for I/O (no longer than the nearest timer, and not at
/// all if functors are pending), then dispatches I/O callbacks, then runs the
/// pending functors (at most 1,024, in queue order), then the expired timers.
/// [`run`](EventLoop::run) iterates until [`quit`](Ctx::quit).
///
/// Timers never fire early. Those due within about 67 ms are kept in exact
/// deadline order; later ones wait in 67 ms buckets, where adding or
/// cancelling one costs the same however many are pending. When the first
/// thing due is a bucket, the wait ends at the bucket's start, and the next
/// wait is exact: a loop with only far-off timers wakes once early per
/// bucket, and an iteration may end with nothing to run.
///
/// The loop derefs to [`Ctx`], the context that callbacks get, so everything
/// a callback can do can be done on the loop before it runs.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rouse_loop::{Ctx, EventLoop};
///
/// let mut lp = EventLoop::new()?;
/// let handle = lp.handle();
/// let worker = std::thread::spawn(move || {
///     // From another thread: queued, and the loop is woken.
///     handle.queue_in_loop(|cx: &mut Ctx| {
///         cx.run_after(Duration::from_millis(1), |cx| cx.quit());
///     })
/// });
/// lp.run()?;
/// worker.join().unwrap()?;
/// # Ok::<(), rouse_loop::Error>(())
/// ```
///
/// # What must be `Send`
///
/// Only what crosses threads. Callbacks added on the loop thread, through
/// [`Ctx`] (I/O sources, timers, functors, [`WorkerPool::spawn_local`]
/// completions), run where they were made and may hold `Rc`, `RefCell` and
/// other thread-bound state; so the loop itself is not `Send` and stays on
/// the thread that made it. What comes from other threads, through a
/// [`LoopHandle`] or [`WorkerPool::spawn`], must be `Send`.
///
/// ```
/// use std::cell::RefCell;
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use rouse_loop::{EventLoop, Interest};
///
/// #[derive(Default)]
/// struct State {
///     bytes: usize,
///     ticks: u32,
/// }
///
/// let mut lp = EventLoop::new()?;
/// let state = Rc::new(RefCell::new(State::default()));
/// let (server, mut client) = UnixStream::pair()?;
/// server.set_nonblocking(true)?;
///
/// let s = Rc::clone(&state);
/// lp.add_source(server, Interest::READABLE, move |sock, _ready, _cx| {
///     let mut buf = [0; 64];
///     if let Ok(n) = sock.read(&mut buf) {
///         s.borrow_mut().bytes += n;
///     }
/// })?;
/// let s = Rc::clone(&state);
/// lp.run_every(Duration::from_millis(1), Duration::from_millis(1), move |cx| {
///     let mut st = s.borrow_mut();
///     st.ticks += 1;
///     if st.bytes == 5 && st.ticks >= 3 {
///         cx.quit();
///     }
/// })?;
/// client.write_all(b"hello")?;
/// lp.run()?;
/// assert_eq!(state.borrow().bytes, 5);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Panics
///
/// A panic in a callback unwinds out of [`run`](EventLoop::run) (or
/// [`run_once`](EventLoop::run_once)) with its payload unchanged. The loop
/// stays consistent: the source or repeating timer whose callback panicked
/// stays registered, the functors still queued stay queued, and `run` may be
/// called again.
///
/// [`WorkerPool::spawn_local`]: crate::WorkerPool::spawn_local
/// [`WorkerPool::spawn`]: crate::WorkerPool::spawn
pub struct EventLoop {
    cx: Ctx,
}

/// The loop's state, as callbacks see it: sources, timers, functors, quit.
///
/// Every callback that runs on the loop thread gets `&mut Ctx`.
pub struct Ctx {
    poller: Poller,
    /// Taken while a poll's events are dispatched (callbacks need `&mut
    /// Ctx`); a callback that panics leaves `None`, and the next iteration
    /// allocates afresh.
    events: Option<Events>,
    shared: Arc<Shared>,
    sources: Vec<Slot>,
    free: Vec<u32>,
    timers: Timers<OnceFn, EveryFn>,
    /// Timers taken as due, not yet run (kept to reuse its allocation).
    due: Vec<(TimerId, crate::timer::Nanos, Task<OnceFn, EveryFn>)>,
    /// Functors taken from the queue and not yet run.
    backlog: VecDeque<LocalFunctor>,
    /// Functors queued on the loop thread since the last take.
    local: Vec<LocalFunctor>,
    /// Functors run and not yet taken off `Shared::held`.
    ran: usize,
    /// Swapped with the queue's vector on every take (see `Queue::take`).
    spare: Vec<Functor>,
    /// A poll has run (and may have consumed a functor wake) since the queue
    /// was last taken: set only between a poll and its functor phase.
    queue_unseen: bool,
    /// Completions of jobs spawned from the loop thread, by job number.
    completions: HashMap<u64, Completion>,
    next_job: u64,
    /// The source whose I/O callback is running.
    current_source: Option<SourceId>,
    /// Another loop polls this one's fd: see `impl AsFd for EventLoop`.
    nested: std::cell::Cell<bool>,
    /// For a nested loop: a timerfd, armed for the next thing due, so that
    /// the fd is readable then; and what it is armed for.
    nest_timer: Option<rustix::fd::OwnedFd>,
    nest_armed: Option<Instant>,
    quit: bool,
    iterations: u64,
}

enum Slot {
    Vacant {
        generation: u32,
    },
    Occupied {
        generation: u32,
        interest: Interest,
        entry: Box<dyn AnySource>,
        /// A change of interest asked for in the source's own callback that
        /// failed when it was applied: the next `modify_source` returns it.
        failed: Option<io::Error>,
    },
    /// Its callback is running; what the callback asked for meanwhile.
    Running {
        generation: u32,
        /// The interest it is registered with.
        interest: Interest,
        removed: bool,
        reinterest: Option<Interest>,
    },
}

impl EventLoop {
    /// Creates a loop on [`Poller::new`]'s backend.
    ///
    /// # Errors
    ///
    /// The poller's errors.
    pub fn new() -> io::Result<EventLoop> {
        EventLoop::with_poller(Poller::new()?)
    }

    /// Creates a loop on the poller given (which should have no
    /// registrations).
    ///
    /// # Errors
    ///
    /// The waker's errors, e.g. if the poller already uses the loop's token.
    pub fn with_poller(poller: Poller) -> io::Result<EventLoop> {
        let waker = Waker::new(&poller, WAKE)?;
        let timers = Arc::new(TimerStates::default());
        let shared = Arc::new(Shared {
            queue: Queue::new(),
            waker,
            quit: AtomicBool::new(false),
            loop_thread: thread_id(),
            wake_calls: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            timers: Arc::clone(&timers),
        });
        Ok(EventLoop {
            cx: Ctx {
                poller,
                events: Some(Events::with_capacity(EVENTS)),
                shared,
                sources: Vec::new(),
                free: Vec::new(),
                timers: Timers::new(timers),
                due: Vec::new(),
                backlog: VecDeque::new(),
                local: Vec::new(),
                ran: 0,
                spare: Vec::new(),
                queue_unseen: true,
                completions: HashMap::new(),
                next_job: 0,
                current_source: None,
                nested: std::cell::Cell::new(false),
                nest_timer: None,
                nest_armed: None,
                quit: false,
                iterations: 0,
            },
        })
    }

    /// Runs iterations until [`Ctx::quit`] or [`LoopHandle::quit`].
    ///
    /// A quit requested before `run` makes it return after one iteration;
    /// `run` may be called again afterwards.
    ///
    /// # Errors
    ///
    /// The poller's errors, which end the run.
    pub fn run(&mut self) -> io::Result<()> {
        let cx = &mut self.cx;
        loop {
            cx.iterate(None)?;
            if cx.take_quit() {
                return Ok(());
            }
        }
    }

    /// Runs one iteration without waiting: what a loop nested in another
    /// calls when its fd is readable (see the `AsFd` impl).
    ///
    /// Returns whether a quit was asked for ([`Ctx::quit`] or
    /// [`LoopHandle::quit`]) before or during the iteration. The request is
    /// answered by this call and does not carry over: for a nested loop, a
    /// quit means "the outer loop may stop dispatching me", and what it does
    /// then is the outer loop's choice.
    ///
    /// # Errors
    ///
    /// The poller's errors.
    pub fn dispatch(&mut self) -> io::Result<bool> {
        self.run_once(Some(Duration::ZERO))
    }

    /// Runs one iteration, waiting at most `timeout` for I/O (`None`: until
    /// something happens).
    ///
    /// Returns whether a quit was asked for before or during the iteration;
    /// the request is answered by this call, as by
    /// [`dispatch`](EventLoop::dispatch), and does not carry over to a
    /// later [`run`](EventLoop::run).
    ///
    /// # Errors
    ///
    /// The poller's errors.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.cx.iterate(timeout)?;
        Ok(self.cx.take_quit())
    }
}

/// The fd another event loop polls for this one: readable when this loop
/// has something to do (ready I/O, a functor from another thread, a due
/// timer). Register it for readability in tokio (`AsyncFd`), calloop
/// (`Generic`), mio or another rouse loop, and call
/// [`dispatch`](EventLoop::dispatch) whenever it is readable.
///
/// * **Hand the outer loop a copy** of the fd
///   (`lp.as_fd().try_clone_to_owned()`), not the loop: tokio's `AsyncFd`
///   wants an owned `AsRawFd`, and calloop's `Generic` would give no
///   `&mut EventLoop` back. (The README shows both, as tested code.)
/// * **Call `dispatch` once right after registering**: what was queued
///   before the fd was first asked for (a functor, a timer) does not make it
///   readable, and would otherwise wait for the next event.
/// * **The loop stays on its thread**: it is not `Send`. In tokio, drive it
///   from a current-thread runtime or a `LocalSet`; in `tokio::spawn` it
///   does not compile ("future cannot be sent between threads safely").
/// * `dispatch` returns `true` when the loop asked to quit; what the outer
///   loop does then is its choice.
///
/// Functors from other threads wake the outer loop with one system call per
/// dispatch at most (see [`Poller`]'s `AsFd`); the loop's timers are kept in
/// a timerfd inside its poller, made on the first dispatch that has a timer
/// to arm, and re-armed only when the next deadline changes.
///
/// # Examples
///
/// Nested in a rouse poller (the same steps as in any other loop):
///
/// ```
/// use std::os::fd::AsFd;
/// use std::time::Duration;
/// use rouse_loop::{EventLoop, Interest, Poller};
/// use rouse_poll::{Events, Token};
///
/// let outer = Poller::new()?;
/// let mut lp = EventLoop::new()?;
/// let fd = lp.as_fd().try_clone_to_owned()?;
/// outer.register(&fd, Token(0), Interest::READABLE)?;
/// let handle = lp.handle();
/// std::thread::spawn(move || handle.queue_in_loop(|cx| cx.quit()));
///
/// let mut events = Events::with_capacity(4);
/// let mut quit = lp.dispatch()?; // once, after registering
/// while !quit {
///     outer.poll(&mut events, Some(Duration::from_secs(10)))?;
///     quit = lp.dispatch()?;
/// }
/// # std::io::Result::Ok(())
/// ```
impl AsFd for EventLoop {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.cx.nested.set(true);
        self.cx.poller.as_fd()
    }
}

impl Deref for EventLoop {
    type Target = Ctx;

    fn deref(&self) -> &Ctx {
        &self.cx
    }
}

impl DerefMut for EventLoop {
    fn deref_mut(&mut self) -> &mut Ctx {
        &mut self.cx
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // Functors still queued are dropped here, on the loop's thread.
        drop(self.cx.shared.queue.close());
        self.cx.backlog.clear();
        self.cx.local.clear();
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cx.fmt(f)
    }
}

impl Ctx {
    /// A handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The poller the loop runs on (for its backend and counters).
    pub fn poller(&self) -> &Poller {
        &self.poller
    }

    /// The source whose I/O callback is running, so that a callback can
    /// [`modify`](Ctx::modify_source) or [`remove`](Ctx::remove_source)
    /// itself; `None` outside I/O callbacks (in functors and timers).
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    /// use rouse_loop::{EventLoop, Interest};
    ///
    /// let mut lp = EventLoop::new()?;
    /// let (a, mut b) = UnixStream::pair()?;
    /// assert_eq!(lp.current_source(), None);
    /// lp.add_source(a, Interest::READABLE, |_a, _ready, cx| {
    ///     let me = cx.current_source().unwrap();
    ///     cx.remove_source(me).unwrap();
    ///     cx.quit();
    /// })?;
    /// b.write_all(b"x")?;
    /// lp.run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn current_source(&self) -> Option<SourceId> {
        self.current_source
    }

    /// The number of registered I/O sources.
    pub fn source_count(&self) -> usize {
        self.sources.len() - self.free.len()
    }

    /// Iterations run so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Calls to the waker made on behalf of queued functors (only the first
    /// functor queued after each drain makes one).
    pub fn functor_wakes(&self) -> u64 {
        self.shared.wake_calls.load(Ordering::Relaxed)
    }

    /// Makes [`EventLoop::run`] return after this iteration.
    pub fn quit(&mut self) {
        self.quit = true;
    }

    /// Queues `f` for the next functor phase (this one's, if functors are
    /// running now, is already closed). `f` stays on the loop thread, so it
    /// need not be `Send`; queuing it costs no lock and no wake.
    pub fn queue_in_loop(&mut self, f: impl FnOnce(&mut Ctx) + 'static) {
        self.local.push(Box::new(f));
        self.shared.held.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers `io` for `interest`; `callback` is called on the loop thread
    /// with `&mut io` each time it is ready (level-triggered).
    ///
    /// The loop owns `io` until [`take_source`](Ctx::take_source) hands it
    /// back or [`remove_source`](Ctx::remove_source) drops it. The callback is
    /// never called after its source is removed, even if the fd number is
    /// reused.
    ///
    /// # Errors
    ///
    /// The poller's: `EBADF`, `AlreadyExists` for an fd already registered,
    /// `EPERM` for a regular file on epoll.
    pub fn add_source<T, F>(
        &mut self,
        io: T,
        interest: Interest,
        callback: F,
    ) -> io::Result<SourceId>
    where
        T: AsFd + 'static,
        F: FnMut(&mut T, Ready, &mut Ctx) + 'static,
    {
        let (slot, generation) = match self.free.pop() {
            Some(slot) => match self.sources[slot as usize] {
                Slot::Vacant { generation } => (slot, generation),
                _ => unreachable!("a free slot is vacant"),
            },
            None => {
                self.sources.push(Slot::Vacant { generation: 0 });
                ((self.sources.len() - 1) as u32, 0)
            }
        };
        let id = SourceId::new(slot, generation);
        if let Err(e) = self
            .poller
            .register(io.as_fd(), Token(id.0 as usize), interest)
        {
            self.free.push(slot);
            return Err(e);
        }
        self.sources[slot as usize] = Slot::Occupied {
            generation,
            interest,
            entry: Box::new(Entry { io, callback }),
            failed: None,
        };
        Ok(id)
    }

    /// Changes a source's interest.
    ///
    /// From the source's own callback, the change is applied when the
    /// callback returns (its object is borrowed until then): the call checks
    /// only that the source is there and not being removed. If applying it
    /// fails, the interest stays as it was
    /// ([`source_interest`](Ctx::source_interest) tells), and the next
    /// `modify_source` for the source returns that error, once, and changes
    /// nothing; call it again to retry.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was removed; the
    /// poller's error if it refuses the change; the error of a change asked
    /// for in the source's own callback that failed when it was applied.
    pub fn modify_source(&mut self, id: SourceId, interest: Interest) -> io::Result<()> {
        match self.sources.get_mut(id.slot()) {
            Some(Slot::Occupied {
                generation,
                interest: current,
                entry,
                failed,
            }) if *generation == id.generation() => {
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                self.poller
                    .reregister(entry.fd(), Token(id.0 as usize), interest)?;
                *current = interest;
                Ok(())
            }
            Some(Slot::Running {
                generation,
                removed: false,
                reinterest,
                ..
            }) if *generation == id.generation() => {
                *reinterest = Some(interest);
                Ok(())
            }
            _ => Err(no_source(id)),
        }
    }

    /// The interest a source is registered with now; from its own callback,
    /// the interest it was called for (a change asked for there is applied
    /// when the callback returns).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was removed.
    pub fn source_interest(&self, id: SourceId) -> io::Result<Interest> {
        match self.sources.get(id.slot()) {
            Some(Slot::Occupied {
                generation,
                interest,
                ..
            }) if *generation == id.generation() => Ok(*interest),
            Some(Slot::Running {
                generation,
                removed: false,
                interest,
                ..
            }) if *generation == id.generation() => Ok(*interest),
            _ => Err(no_source(id)),
        }
    }

    /// Removes a source and drops its object. A source may remove itself from
    /// its own callback: it is then dropped when the callback returns.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was already removed.
    pub fn remove_source(&mut self, id: SourceId) -> io::Result<()> {
        match self.sources.get_mut(id.slot()) {
            Some(Slot::Running {
                generation,
                removed,
                ..
            }) if *generation == id.generation() && !*removed => {
                *removed = true;
                Ok(())
            }
            Some(Slot::Occupied {
                generation, entry, ..
            }) if *generation == id.generation() => {
                // Deregistered first: if that fails (in a forked child, say),
                // the source stays as it was.
                self.poller.deregister(entry.fd())?;
                drop(self.vacate(id.slot()));
                Ok(())
            }
            _ => Err(no_source(id)),
        }
    }

    /// Removes a source and hands its object back.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was removed;
    /// [`io::ErrorKind::InvalidInput`] if `T` is not the source's type (the
    /// source stays registered); [`io::ErrorKind::ResourceBusy`] from the
    /// source's own callback, whose object is borrowed (use
    /// [`remove_source`](Ctx::remove_source) there).
    pub fn take_source<T: AsFd + 'static>(&mut self, id: SourceId) -> io::Result<T> {
        match self.sources.get(id.slot()) {
            Some(Slot::Occupied {
                generation, entry, ..
            }) if *generation == id.generation() => {
                if entry.io_type() != TypeId::of::<T>() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "source {id:?} does not hold a {}",
                            std::any::type_name::<T>()
                        ),
                    ));
                }
            }
            Some(Slot::Running {
                generation,
                removed: false,
                ..
            }) if *generation == id.generation() => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "a source cannot take itself back from its own callback; use remove_source",
                ));
            }
            _ => return Err(no_source(id)),
        }
        if let Some(Slot::Occupied { entry, .. }) = self.sources.get(id.slot()) {
            self.poller.deregister(entry.fd())?;
        }
        let entry = self.vacate(id.slot());
        Ok(*entry
            .into_io()
            .downcast::<T>()
            .expect("the type was checked above"))
    }

    /// Runs `f` on the loop thread once `delay` has passed. A delay past what
    /// [`Instant`] can hold means never (the timer can still be cancelled).
    pub fn run_after(&mut self, delay: Duration, f: impl FnOnce(&mut Ctx) + 'static) -> TimerId {
        let deadline = self.timers.nanos(Instant::now().checked_add(delay));
        self.timers.insert(deadline, Task::Once(Box::new(f)))
    }

    /// Runs `f` on the loop thread at `deadline`, never before.
    pub fn run_at(&mut self, deadline: Instant, f: impl FnOnce(&mut Ctx) + 'static) -> TimerId {
        let deadline = self.timers.nanos(Some(deadline));
        self.timers.insert(deadline, Task::Once(Box::new(f)))
    }

    /// Runs `f` after `first`, then every `period`. A timer overdue by more
    /// than a period fires once and is rescheduled a period later, rather
    /// than catching up in a burst. A time past what [`Instant`] can hold
    /// means never.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a zero `period`, which would run
    /// the timer in every iteration.
    pub fn run_every(
        &mut self,
        first: Duration,
        period: Duration,
        f: impl FnMut(&mut Ctx) + 'static,
    ) -> io::Result<TimerId> {
        check_period(period)?;
        let deadline = self.timers.nanos(Instant::now().checked_add(first));
        let f: EveryFn = Box::new(f);
        let period = period_nanos(period);
        Ok(self.timers.insert(deadline, Task::Every { period, f }))
    }

    /// Cancels a timer, at once: returns whether it was stopped before it ran
    /// (for a repeating timer, before its next run; one may cancel itself
    /// from its callback). Works for ids made here and by handles.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    /// The number of timers that may still run (see
    /// [`LoopHandle::pending_timers`]).
    pub fn timer_count(&self) -> usize {
        self.shared.timers.pending.load(Ordering::Relaxed)
    }

    /// Functors waiting to run: queued here, taken from other threads, or
    /// still in the shared queue.
    pub fn pending_functors(&self) -> usize {
        self.backlog.len() + self.local.len() + self.shared.queue.len()
    }

    /// Adds a timer whose id a handle made.
    pub(crate) fn insert_remote_timer(
        &mut self,
        id: TimerId,
        deadline: Option<Instant>,
        task: SendTask,
    ) {
        let deadline = self.timers.nanos(deadline);
        let task = match task {
            Task::Once(f) => Task::Once(f as OnceFn),
            Task::Every { period, f } => Task::Every {
                period,
                f: f as EveryFn,
            },
        };
        self.timers.insert_remote(id, deadline, task);
    }

    /// Whether this is the context of `handle`'s loop.
    pub(crate) fn is_loop_of(&self, handle: &LoopHandle) -> bool {
        Arc::ptr_eq(&self.shared, &handle.shared)
    }

    /// Keeps a job's completion until its result comes back.
    pub(crate) fn await_completion(&mut self, done: Completion) -> u64 {
        self.next_job += 1;
        self.completions.insert(self.next_job, done);
        self.next_job
    }

    /// Runs the completion of job `job` with its result (if the job panicked,
    /// drops it and resumes the panic here).
    pub(crate) fn complete(&mut self, job: u64, result: std::thread::Result<Box<dyn Any + Send>>) {
        let done = self
            .completions
            .remove(&job)
            .expect("each job completes once");
        if self.completions.is_empty() && self.completions.capacity() > SPARE {
            self.completions = HashMap::new();
        }
        match result {
            Ok(value) => done(value, self),
            Err(panic) => {
                drop(done);
                resume_unwind(panic);
            }
        }
    }

    fn take_quit(&mut self) -> bool {
        // A load first: no write to the shared line on every iteration.
        let remote = self.shared.quit.load(Ordering::Relaxed)
            && self.shared.quit.swap(false, Ordering::Acquire);
        std::mem::take(&mut self.quit) | remote
    }

    /// One iteration: wait, I/O callbacks, functors, timers.
    fn iterate(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.iterations += 1;
        // Every functor phase takes the queue after the poll that consumed
        // its wake; only an I/O callback that panicked can have skipped that
        // phase. Take it then, before deciding whether the wait may block.
        if self.queue_unseen {
            self.take_queue();
        }
        // Memory of timers cancelled from other threads (one load if none).
        self.timers.reap();
        let mut wait = timeout;
        if !self.backlog.is_empty() || !self.local.is_empty() || self.quit {
            wait = Some(Duration::ZERO);
        } else if let Some(deadline) = self.timers.next_deadline() {
            let until = deadline.saturating_duration_since(Instant::now());
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        let mut events = self
            .events
            .take()
            .unwrap_or_else(|| Events::with_capacity(EVENTS));
        let polled = self.poller.poll(&mut events, wait);
        self.queue_unseen = true;
        let result = polled.map(|_| {
            for ev in &events {
                if ev.token() == NEST_TIMER {
                    self.expire_nest_timer();
                } else if ev.token() != WAKE {
                    let ready = Ready {
                        readable: ev.is_readable(),
                        writable: ev.is_writable(),
                        error: ev.is_error(),
                        hangup: ev.is_hangup(),
                    };
                    self.dispatch(SourceId(ev.token().0 as u64), ready);
                }
            }
        });
        self.events = Some(events);
        result?;
        self.run_functors();
        self.run_timers();
        if self.nested.get() {
            self.arm_nest_timer()?;
        }
        Ok(())
    }

    /// For a nested loop: arms the timerfd for the next thing due (at once,
    /// if functors wait), so that the loop's fd is readable then.
    fn arm_nest_timer(&mut self) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec};
        let now = Instant::now();
        let next = if !self.backlog.is_empty() || !self.local.is_empty() {
            Some(now)
        } else {
            self.timers.next_deadline()
        };
        if next == self.nest_armed {
            return Ok(());
        }
        let timer = match &self.nest_timer {
            Some(t) => t,
            None => {
                use rustix::time::{TimerfdClockId, TimerfdFlags};
                let t = rustix::time::timerfd_create(
                    TimerfdClockId::Monotonic,
                    TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
                )?;
                self.poller.register(&t, NEST_TIMER, Interest::READABLE)?;
                self.nest_timer.insert(t)
            }
        };
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = match next {
            None => zero,
            Some(at) => {
                // Never zero, which would disarm it: at least a nanosecond.
                let d = at
                    .saturating_duration_since(now)
                    .max(Duration::from_nanos(1));
                Timespec {
                    tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
                    tv_nsec: d.subsec_nanos().into(),
                }
            }
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        rustix::time::timerfd_settime(timer, TimerfdTimerFlags::empty(), &spec)?;
        self.nest_armed = next;
        Ok(())
    }

    /// The nested loop's timerfd fired: read it (so that it stops being
    /// readable), and arm it afresh at the end of this iteration.
    fn expire_nest_timer(&mut self) {
        if let Some(t) = &self.nest_timer {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(t, &mut buf);
        }
        self.nest_armed = None;
    }

    fn dispatch(&mut self, id: SourceId, ready: Ready) {
        let slot = id.slot();
        let (generation, interest) = match self.sources.get(slot) {
            Some(Slot::Occupied {
                generation,
                interest,
                ..
            }) if *generation == id.generation() => (*generation, *interest),
            // Removed earlier in this iteration: never called again.
            _ => return,
        };
        let running = Slot::Running {
            generation,
            interest,
            removed: false,
            reinterest: None,
        };
        let Slot::Occupied {
            mut entry, failed, ..
        } = std::mem::replace(&mut self.sources[slot], running)
        else {
            unreachable!("checked above")
        };
        self.current_source = Some(id);
        let outcome = catch_unwind(AssertUnwindSafe(|| entry.dispatch(ready, self)));
        self.current_source = None;
        // Put the source back (or drop it), whether or not the callback panicked.
        let Slot::Running {
            generation,
            removed,
            reinterest,
            ..
        } = std::mem::replace(&mut self.sources[slot], Slot::Vacant { generation: 0 })
        else {
            unreachable!("only dispatch changes a running slot's kind")
        };
        let token = Token(id.0 as usize);
        if removed {
            self.sources[slot] = Slot::Vacant {
                generation: generation.wrapping_add(1),
            };
            self.free.push(slot as u32);
            // The fd is still open (the entry owns it), so this cannot be EBADF.
            let _ = self.poller.deregister(entry.fd());
        } else {
            let mut interest = interest;
            let mut failed = failed;
            if let Some(new) = reinterest {
                match self.poller.reregister(entry.fd(), token, new) {
                    Ok(()) => interest = new,
                    Err(e) => failed = Some(deferred_failure(id, new, e)),
                }
            }
            self.sources[slot] = Slot::Occupied {
                generation,
                interest,
                entry,
                failed,
            };
        }
        if let Err(payload) = outcome {
            resume_unwind(payload);
        }
    }

    fn run_functors(&mut self) {
        // Always: this iteration's poll may have consumed the wake of what
        // is queued, so it must not wait behind a long backlog.
        self.take_queue();
        for _ in 0..FUNCTOR_BATCH {
            let Some(f) = self.backlog.pop_front() else {
                break;
            };
            // Counted before it runs: a panic in it leaves the count to the
            // next phase, and `held` overcounts meanwhile, never under.
            self.ran += 1;
            f(self);
        }
        self.shared
            .held
            .fetch_sub(std::mem::take(&mut self.ran), Ordering::Relaxed);
        // A drained burst gives its memory back.
        if self.backlog.is_empty() && self.backlog.capacity() > SPARE {
            self.backlog.shrink_to(SPARE);
        }
    }

    /// Moves everything queued, from other threads and then from this one,
    /// to the end of the backlog.
    fn take_queue(&mut self) {
        self.queue_unseen = false;
        // Functors run before a panic ended the last phase.
        if self.ran > 0 {
            self.shared
                .held
                .fetch_sub(std::mem::take(&mut self.ran), Ordering::Relaxed);
        }
        self.shared.queue.take(&mut self.spare, &self.shared.held);
        let taken = self.spare.len();
        self.backlog
            .extend(self.spare.drain(..).map(|f| f as LocalFunctor));
        self.backlog.extend(self.local.drain(..));
        if self.local.capacity() > SPARE {
            self.local.shrink_to(SPARE);
        }
        // The vector swapped out of the queue keeps its room for the next
        // burst, unless this take was small: then at most `SPARE` is kept,
        // and the queue's own vector is trimmed at the next take.
        if self.spare.capacity() > SPARE && taken < SPARE / 4 {
            self.spare = Vec::with_capacity(SPARE);
        }
    }

    fn run_timers(&mut self) {
        if self.shared.timers.pending.load(Ordering::Relaxed) == 0 {
            self.timers.shrink();
            return;
        }
        let now = Instant::now();
        // Only timers due now: one added by a timer callback waits for the
        // next iteration even if it is due already. Each is started (which
        // a cancel that came first prevents) only when its turn comes.
        let mut due = std::mem::take(&mut self.due);
        while let Some(t) = self.timers.pop_due(now) {
            due.push(t);
        }
        let mut batch = due.drain(..);
        while let Some((id, deadline, task)) = batch.next() {
            if !self.timers.start(id) {
                continue; // cancelled since it was taken
            }
            let outcome = match task {
                Task::Once(f) => {
                    self.timers.finish(id);
                    catch_unwind(AssertUnwindSafe(|| f(self)))
                }
                Task::Every { period, mut f } => {
                    let outcome = catch_unwind(AssertUnwindSafe(|| f(self)));
                    let now = self.timers.nanos(Some(Instant::now()));
                    let next = next_period(deadline, period, now);
                    self.timers.reschedule(id, next, Task::Every { period, f });
                    outcome
                }
            };
            if let Err(payload) = outcome {
                // The rest stay scheduled, as they were.
                for (id, deadline, task) in batch {
                    self.timers.put_back(id, deadline, task);
                }
                self.due = due;
                resume_unwind(payload);
            }
        }
        drop(batch);
        // A burst of due timers gives its room back, as a functor burst does.
        if due.capacity() > SPARE {
            due.shrink_to(SPARE);
        }
        self.due = due;
        self.timers.shrink();
    }

    fn vacate(&mut self, slot: usize) -> Box<dyn AnySource> {
        let generation = match self.sources[slot] {
            Slot::Occupied { generation, .. } => generation,
            _ => unreachable!("vacate is called on occupied slots"),
        };
        self.free.push(slot as u32);
        match std::mem::replace(
            &mut self.sources[slot],
            Slot::Vacant {
                generation: generation.wrapping_add(1),
            },
        ) {
            Slot::Occupied { entry, .. } => entry,
            _ => unreachable!(),
        }
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("poller", &self.poller)
            .field("sources", &(self.sources.len() - self.free.len()))
            .field("timers", &self.timer_count())
            .field("backlog", &(self.backlog.len() + self.local.len()))
            .field("queued", &self.shared.queue.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The error of a change of interest that a source's callback asked for and
/// that failed when the callback returned.
fn deferred_failure(id: SourceId, interest: Interest, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "the change of {id:?} to {interest:?}, asked for in its own callback, \
             failed when the callback returned (the interest stays as it was): {e}"
        ),
    )
}

fn no_source(id: SourceId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{id:?} is not registered with this loop"),
    )
}

/// A source with its type erased.
trait AnySource {
    fn fd(&self) -> BorrowedFd<'_>;
    fn dispatch(&mut self, ready: Ready, cx: &mut Ctx);
    fn io_type(&self) -> TypeId;
    fn into_io(self: Box<Self>) -> Box<dyn Any>;
}

struct Entry<T, F> {
    io: T,
    callback: F,
}

impl<T, F> AnySource for Entry<T, F>
where
    T: AsFd + 'static,
    F: FnMut(&mut T, Ready, &mut Ctx) + 'static,
{
    fn fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }

    fn dispatch(&mut self, ready: Ready, cx: &mut Ctx) {
        (self.callback)(&mut self.io, ready, cx);
    }

    fn io_type(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn into_io(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.io)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::LoopGone => {
                io::Error::new(io::ErrorKind::NotConnected, Error::LoopGone.to_string())
            }
        }
    }
}
