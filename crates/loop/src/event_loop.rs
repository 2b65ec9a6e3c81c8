//! The loop, and the context every callback gets.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rouse_poll::{Events, Interest, Poller, Token, Waker};

use crate::Error;
use crate::handle::{Functor, LoopHandle, Shared, thread_id};
use crate::queue::Queue;
use crate::sources::{Ready, Slot, SourceId};
use crate::timer::state::TimerStates;
use crate::timer::{Task, TimerId, Timers};

/// The waker's token; source tokens are slot ids, far below it.
const WAKE: Token = Token(usize::MAX - 16);
/// The timerfd of a nested loop (see `impl AsFd for EventLoop`).
const NEST_TIMER: Token = Token(usize::MAX - 17);
/// The most functors run in one iteration, so that a flood of them cannot
/// starve I/O and timers. The rest run in the next iterations, without the
/// loop blocking.
pub(crate) const FUNCTOR_BATCH: usize = 1024;
const EVENTS: usize = 1024;

/// What stays on the loop thread need not be `Send`.
pub(crate) type OnceFn = Box<dyn FnOnce(&mut Ctx)>;
pub(crate) type EveryFn = Box<dyn FnMut(&mut Ctx)>;
/// A functor on the loop thread: queued through [`Ctx`], or taken from the
/// shared queue.
pub(crate) type LocalFunctor = Box<dyn FnOnce(&mut Ctx)>;
/// Vectors and queues keep at most this much room once a burst has drained.
pub(crate) const SPARE: usize = 1024;

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
    pub(crate) poller: Poller,
    /// Taken while a poll's events are dispatched (callbacks need `&mut
    /// Ctx`); a callback that panics leaves `None`, and the next iteration
    /// allocates afresh.
    pub(crate) events: Option<Events>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sources: Vec<Slot>,
    pub(crate) free: Vec<u32>,
    pub(crate) timers: Timers<OnceFn, EveryFn>,
    /// Timers taken as due, not yet run (kept to reuse its allocation).
    pub(crate) due: Vec<(TimerId, crate::timer::Nanos, Task<OnceFn, EveryFn>)>,
    /// Functors taken from the queue and not yet run.
    pub(crate) backlog: VecDeque<LocalFunctor>,
    /// Functors queued on the loop thread since the last take.
    pub(crate) local: Vec<LocalFunctor>,
    /// Functors run and not yet taken off `Shared::held`.
    pub(crate) ran: usize,
    /// Swapped with the queue's vector on every take (see `Queue::take`).
    pub(crate) spare: Vec<Functor>,
    /// A poll has run (and may have consumed a functor wake) since the queue
    /// was last taken: set only between a poll and its functor phase.
    pub(crate) queue_unseen: bool,
    /// Completions of jobs spawned from the loop thread, by job number.
    pub(crate) completions: HashMap<u64, crate::pool::JobDone>,
    pub(crate) next_job: u64,
    /// The source whose I/O callback is running.
    pub(crate) current_source: Option<SourceId>,
    /// Another loop polls this one's fd: see `impl AsFd for EventLoop`.
    pub(crate) nested: std::cell::Cell<bool>,
    /// For a nested loop: a timerfd, armed for the next thing due, so that
    /// the fd is readable then; and what it is armed for.
    pub(crate) nest_timer: Option<rustix::fd::OwnedFd>,
    pub(crate) nest_armed: Option<Instant>,
    /// Operations in flight, and their callbacks.
    pub(crate) ops: crate::ops::Ops,
    /// Async tasks.
    pub(crate) tasks: crate::task::Tasks,
    pub(crate) quit: bool,
    pub(crate) iterations: u64,
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
            local_tasks: std::sync::Mutex::new(VecDeque::new()),
            next_task: AtomicU64::new(1),
            task_inbox: Queue::new(),
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
                ops: Default::default(),
                tasks: Default::default(),
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
        // Tasks first, on this thread: their futures cancel what they wait
        // on while the loop is still whole.
        self.cx.drop_tasks();
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

    /// Iterations run so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Makes [`EventLoop::run`] return after this iteration.
    pub fn quit(&mut self) {
        self.quit = true;
    }

    /// Whether this is the context of `handle`'s loop.
    pub(crate) fn is_loop_of(&self, handle: &LoopHandle) -> bool {
        Arc::ptr_eq(&self.shared, &handle.shared)
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
        if !self.backlog.is_empty()
            || !self.local.is_empty()
            || self.quit
            || self.completions_waiting()
            || self.tasks_waiting()
        {
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
            let mut completions = false;
            for ev in &events {
                if ev.is_completions() {
                    completions = true;
                } else if ev.token() == NEST_TIMER {
                    self.expire_nest_timer();
                } else if ev.token() != WAKE {
                    let ready = Ready {
                        readable: ev.is_readable(),
                        writable: ev.is_writable(),
                        error: ev.is_error(),
                        hangup: ev.is_hangup(),
                    };
                    self.dispatch(SourceId::from_token(ev.token()), ready);
                }
            }
            completions
        });
        let completions = match &result {
            Ok(c) => *c,
            Err(_) => false,
        };
        self.events = Some(events);
        result?;
        if completions || self.completions_waiting() {
            self.run_completions();
        }
        self.run_functors();
        self.run_tasks();
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
