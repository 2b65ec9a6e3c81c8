//! The poller: one API over the epoll and io_uring backends.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, TryLockError};
use std::time::{Duration, Instant};

use rouse_sys::WakeFd;

use crate::event::{Event, Events};
use crate::op::{Completion, Op, OpId};
use crate::state::{Notify, Pending, WakeState};
use crate::sys::emulate::Emulator;
use crate::sys::epoll::{Epoll, EpollDriver};
use crate::sys::ops::OpTable;
use crate::sys::uring::{self, Uring, UringDriver, WakeVia};
use crate::sys::{MsgSender, Signal, WaitOutcome, current_forks, fork_generation};
use crate::{Interest, Token};

/// The environment variable that makes [`Poller::new`] use one backend:
/// `epoll`, `io_uring`, or `auto` (io_uring where the kernel offers it,
/// else epoll: see [`PollerBuilder::prefer_io_uring`]).
pub const BACKEND_ENV: &str = "ROUSE_BACKEND";

/// The environment variable that picks the io_uring wake path for
/// [`Poller::new`]: `eventfd` or `msg_ring`.
pub const URING_WAKE_ENV: &str = "ROUSE_URING_WAKE";

/// A kernel readiness interface.
///
/// Both backends keep registrations in an epoll set, so everything about an
/// fd's life (see [`Poller`]) is the same on both; they differ in how the
/// poller waits and is woken.
///
/// [`Poller::new`] uses **epoll**. It is what mio, polling and calloop use,
/// it needs nothing newer than Linux 5.11, and io_uring does not beat it.
/// Measured by `cargo xtask bench` on 2026-11-30 (2 vCPUs, AMD EPYC, Linux
/// 6.18; the README carries the latest full table), in rounds interleaved
/// with epoll's:
///
/// | io_uring against epoll | ratio (95% interval) |
/// |---|---|
/// | wake round trip, one CPU, eventfd wake | 0.98× (0.95 – 1.01) |
/// | wake round trip, one CPU, `MSG_RING` wake | 1.09× (1.06 – 1.16) |
/// | one zero-timeout poll beside 10 idle fds (criterion medians) | 1.29× |
///
/// On two CPUs both backends spend most of a round trip waiting for the
/// hypervisor to wake a vCPU, and their ratios swing from run to run. So
/// the io_uring wait, which adds a layer (a ring request that reads the
/// epoll set), is level with epoll where a wake dominates and dearer where
/// a poll finds work at once. Ask for io_uring with [`Poller::with_backend`]
/// or [`BACKEND_ENV`]`=io_uring`, for example to wake a poller by message
/// from other rings ([`UringWake::MsgRing`]), with no eventfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `epoll(7)`: one `epoll_pwait2` per wait (Linux 5.11 or later). The
    /// default.
    Epoll,
    /// `io_uring(7)`: one `io_uring_enter` per wait, which submits and waits
    /// together; readiness comes from an `IORING_OP_EPOLL_WAIT` on the
    /// poller's epoll set, kept in flight (Linux 6.15), or, on older
    /// kernels (or with `ROUSE_URING_EPOLL_WAIT=0`), from a multishot poll
    /// of the set's fd and an `epoll_wait` beside the enter; the wake from
    /// a multishot poll on an eventfd or from `IORING_OP_MSG_RING`. The
    /// ring is made with `IORING_SETUP_SINGLE_ISSUER |
    /// IORING_SETUP_DEFER_TASKRUN`, so the kernel completes requests only
    /// inside the polling thread's wait, and readiness is read at the wait,
    /// never earlier. Linux 6.1 or later: each feature is asked of the
    /// kernel, and where one is refused (a kernel too old, a seccomp
    /// filter, `kernel.io_uring_disabled`) [`Poller::with_backend`] fails
    /// with [`io::ErrorKind::Unsupported`] and the reason in words
    /// ([`PollerBuilder::prefer_io_uring`] takes epoll instead).
    IoUring,
}

/// How a wake reaches a poller on the io_uring backend.
///
/// | path | wake system call | kernel |
/// |---|---|---|
/// | [`EventFd`](UringWake::EventFd) | `write(2)` to an eventfd under a multishot poll | 6.1 (the backend's own minimum) |
/// | [`MsgRing`](UringWake::MsgRing) | `io_uring_enter(2)` on the waker's own small ring, posting straight to the poller's ring | 6.1 (`MSG_RING` is 5.18) |
///
/// Either way the polling side makes no system call of its own per wake, and
/// a wake costs a system call only when the poller is blocked.
///
/// `MsgRing` gives each [`Waker`](crate::Waker) a small ring of its own (one
/// more fd and a few pages), made by [`Waker::new`](crate::Waker::new), which
/// fails if it cannot be made (`EMFILE`, `ENOMEM`); a waker that exists can
/// always wake. `EventFd` needs no ring per waker and is the default; the
/// two measure within noise of each other (see the README's benchmark
/// table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UringWake {
    /// An eventfd (or pipe, under `ROUSE_FORCE_PIPE=1`) polled by the ring.
    #[default]
    EventFd,
    /// `IORING_OP_MSG_RING` from a ring owned by each waker. No eventfd,
    /// unless the poller's fd is handed to another loop to poll (see the
    /// `AsFd` impl of [`Poller`]): a wake must then make that fd readable,
    /// which a message to the ring does not, so one is made then.
    MsgRing,
}

/// Counters kept by a poller and its wakers.
///
/// Read them with [`Poller::stats`]; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls to [`Waker::wake`](crate::Waker::wake).
    pub wakes: u64,
    /// System calls made to wake the poller.
    pub wake_syscalls: u64,
    /// Calls to [`Poller::poll`] that got as far as waiting.
    pub polls: u64,
    /// Waits that were allowed to block in the kernel (some returned at once
    /// all the same, because an event was ready).
    pub polls_blocked: u64,
    /// Operations submitted.
    pub ops_submitted: u64,
    /// Completions reported (a multishot operation's each).
    pub completions: u64,
    /// io_uring: times completions overflowed the completion queue, were
    /// kept by the kernel (`IORING_FEAT_NODROP`) and flushed by the poller.
    pub overflow_flushes: u64,
    /// io_uring: multishot receives re-armed because the provided-buffer
    /// ring was empty (`ENOBUFS`).
    pub buffer_ring_rearms: u64,
}

/// The error a [`Poller`] or [`Waker`](crate::Waker) made before a `fork`
/// returns in the child, inside an [`io::Error`] of kind
/// [`io::ErrorKind::Other`].
///
/// A child shares its parent's epoll set and wake fd; if it used them it
/// would remove the parent's registrations and take the parent's wakes. So
/// every call in the child is refused, and changes nothing. Dropping the
/// poller and its wakers in the child is harmless: it closes the child's
/// copies of their descriptors. Make a new poller in the child.
///
/// ```no_run
/// # let poller = rouse_poll::Poller::new()?;
/// # let mut events = rouse_poll::Events::with_capacity(8);
/// if let Err(e) = poller.poll(&mut events, None) {
///     if e.get_ref().is_some_and(|e| e.is::<rouse_poll::Forked>()) {
///         // In a forked child: start afresh.
///     }
/// }
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug)]
pub struct Forked;

impl fmt::Display for Forked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this poller was made before a fork and belongs to the parent process; \
             make a new one in the child",
        )
    }
}

impl std::error::Error for Forked {}

pub(crate) fn forked() -> io::Error {
    io::Error::other(Forked)
}

/// Builds a [`Poller`] with options.
///
/// # Examples
///
/// ```
/// use rouse_poll::{Backend, Poller};
/// let poller = Poller::builder().backend(Backend::Epoll).build()?;
/// assert_eq!(poller.backend(), Backend::Epoll);
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct PollerBuilder {
    backend: Option<Backend>,
    prefer_uring: bool,
    uring_wake: Option<UringWake>,
    spin: Duration,
}

impl PollerBuilder {
    /// Asks for one backend; without this, epoll (or what [`BACKEND_ENV`]
    /// says).
    pub fn backend(mut self, backend: Backend) -> PollerBuilder {
        self.backend = Some(backend);
        self.prefer_uring = false;
        self
    }

    /// Asks for io_uring where the kernel offers it, and epoll where it
    /// does not (too old, a seccomp filter, `kernel.io_uring_disabled`, a
    /// missing feature): one call that works everywhere. Which one it got
    /// is [`Poller::backend`], and why io_uring was refused
    /// [`Poller::uring_refused`]. `ROUSE_BACKEND=auto` asks for the same.
    ///
    /// ```
    /// use rouse_poll::{Backend, Poller};
    /// let poller = Poller::builder().prefer_io_uring().build()?;
    /// match poller.uring_refused() {
    ///     None => assert_eq!(poller.backend(), Backend::IoUring),
    ///     Some(why) => {
    ///         assert_eq!(poller.backend(), Backend::Epoll);
    ///         println!("on epoll: {why}");
    ///     }
    /// }
    /// # std::io::Result::Ok(())
    /// ```
    pub fn prefer_io_uring(mut self) -> PollerBuilder {
        self.prefer_uring = true;
        self.backend = None;
        self
    }

    /// Picks the wake path on io_uring; without this, [`UringWake::EventFd`]
    /// (or what [`URING_WAKE_ENV`] says). Ignored on epoll.
    pub fn uring_wake(mut self, path: UringWake) -> PollerBuilder {
        self.uring_wake = Some(path);
        self
    }

    /// Spins for up to `spin`, watching for a wake, before blocking in the
    /// kernel. Off (zero) by default.
    ///
    /// Across CPUs a blocking wake-up costs tens of microseconds under a
    /// hypervisor; a waker that answers within the spin costs the poller no
    /// system call and the waker none either. The spin burns CPU while it
    /// lasts, and only a [`Waker`](crate::Waker) ends it early, not I/O.
    pub fn spin_before_park(mut self, spin: Duration) -> PollerBuilder {
        self.spin = spin;
        self
    }

    /// Creates the poller.
    ///
    /// # Errors
    ///
    /// * [`io::ErrorKind::Unsupported`] when io_uring is asked for and the
    ///   kernel does not offer what the backend needs (refused by a seccomp
    ///   filter or a sysctl, or too old), with the reason;
    /// * [`io::ErrorKind::InvalidInput`] when [`BACKEND_ENV`] or
    ///   [`URING_WAKE_ENV`] holds an unknown value;
    /// * the OS error when descriptors cannot be created (`EMFILE`).
    pub fn build(self) -> io::Result<Poller> {
        let uring_wake = match self.uring_wake {
            Some(path) => path,
            None => uring_wake_from_env()?.unwrap_or_default(),
        };
        let choice = match (self.backend, self.prefer_uring) {
            (Some(b), _) => Choice::Exactly(b),
            (None, true) => Choice::PreferUring,
            (None, false) => backend_from_env()?.unwrap_or(Choice::Exactly(Backend::Epoll)),
        };
        match choice {
            Choice::Exactly(Backend::Epoll) => Poller::epoll(self.spin),
            Choice::Exactly(Backend::IoUring) => Poller::uring(uring_wake, self.spin),
            Choice::PreferUring => match Poller::uring(uring_wake, self.spin) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    let mut p = Poller::epoll(self.spin)?;
                    p.uring_refused = Some(e);
                    Ok(p)
                }
                other => other,
            },
        }
    }
}

/// Waits for readiness on registered fds and for wakes from [`Waker`](crate::Waker)s.
///
/// Readiness is **level-triggered** on both backends: a registration that is
/// still ready is reported again by the next poll. Every call takes `&self`:
/// registrations may come from any thread, even while another is blocked in
/// [`poll`](Poller::poll), and take effect at once. One thread polls at a
/// time.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
/// use rouse_poll::{Events, Interest, Poller, Token};
///
/// let poller = Poller::new()?;
/// let (a, mut b) = UnixStream::pair()?;
/// poller.register(&a, Token(7), Interest::READABLE)?;
/// b.write_all(b"ping")?;
///
/// let mut events = Events::with_capacity(16);
/// poller.poll(&mut events, Some(Duration::from_secs(5)))?;
/// let ev = events.iter().next().unwrap();
/// assert_eq!(ev.token(), Token(7));
/// assert!(ev.is_readable());
/// poller.deregister(&a)?;
/// # std::io::Result::Ok(())
/// ```
///
/// # An fd's life
///
/// A registration belongs to a *file* (what `open`, `socket`, `pipe` or
/// `eventfd` made) seen through one descriptor *number*. The rules are the
/// same on both backends, because both keep registrations in an epoll set:
///
/// * **Closed without [`deregister`](Poller::deregister)**: when the last
///   descriptor of the file is closed, the file leaves the poller silently:
///   no event, no error, and its token and number are free for reuse. The
///   file is really closed (a socket's peer sees it hang up); the poller
///   holds no reference to it.
/// * **A new file on a reused number** (of any kind, anonymous-inode files
///   such as eventfd and timerfd included) is a new file:
///   [`register`](Poller::register) it afresh; no event of the old file is
///   ever reported under its token.
/// * **`dup`**: if a registered number is closed while a duplicate (from
///   `dup`, `fork`, or `SCM_RIGHTS`) keeps the file open, the registration
///   lives on and goes on reporting under its token, and it can no longer be
///   removed (the duplicate's number is not the registered one:
///   [`io::ErrorKind::NotFound`]). This is epoll's own rule. Deregister a
///   file before closing a number that may have duplicates.
/// * **Moving between threads**: a `Poller` is `Send + Sync`; it may be
///   polled from one thread and then another. On io_uring each polling
///   thread gets a ring of its own (made on its first poll, a few tens of
///   microseconds), and nothing the kernel does to the requests of a thread
///   that exits is ever reported.
/// * **fork**: in a child, every call on a poller or waker made before the
///   fork returns an error ([`Forked`]) and changes nothing the parent
///   shares; dropping them there is harmless. The check is one relaxed load
///   of a counter that an `at-fork` handler bumps.
/// * **Tokens** come back exactly as given, each at most once per
///   [`poll`](Poller::poll).
pub struct Poller {
    shared: Arc<Shared>,
    selector: Selector,
    driver: Mutex<Polling>,
    spin: Duration,
    /// Its fd has been handed out, for another loop to poll: see the `AsFd`
    /// impl.
    nested: AtomicBool,
    /// Why wakes cannot make the fd readable, if they cannot: reported by
    /// every poll.
    nest_failed: Mutex<Option<io::Error>>,
    /// Why io_uring was refused, when it was preferred and epoll taken.
    uring_refused: Option<io::Error>,
}

/// What a builder asks for.
enum Choice {
    Exactly(Backend),
    PreferUring,
}

enum Selector {
    Epoll(Epoll),
    Uring(Uring),
}

/// The polling thread's side, behind the poll lock.
struct Polling {
    driver: Driver,
    /// Numbers the polls, so that a waker is reported at most once in each.
    seq: u64,
    /// Operations in flight, and their completions not yet taken.
    ops: OpTable,
    /// The epoll backend's way of performing operations.
    emu: Emulator,
}

enum Driver {
    Epoll(EpollDriver),
    Uring(Box<UringDriver>),
}

/// What the poller shares with its wakers.
pub(crate) struct Shared {
    pub(crate) state: WakeState,
    pub(crate) signal: Signal,
    /// The process's fork count when the poller was made.
    pub(crate) forks: u64,
    wakers: RwLock<Vec<Arc<WakerSlot>>>,
    /// Tokens of live wakers.
    waker_tokens: Mutex<HashSet<Token>>,
    pub(crate) wake_syscalls: AtomicU64,
    /// Wakes counted by wakers that have since been dropped.
    retired_wakes: AtomicU64,
    polls: AtomicU64,
    polls_blocked: AtomicU64,
    /// Counters of operations, shared with the backend.
    pub(crate) op_counters: Arc<OpCounters>,
    /// Completions of file operations that the epoll backend's pool ran,
    /// not yet seen by a poll; `pool_ready` says there are some.
    pool_done: Mutex<Vec<Completion>>,
    pool_ready: AtomicBool,
}

/// Counters of operations (written by the polling thread, read by any).
#[derive(Debug, Default)]
pub(crate) struct OpCounters {
    pub(crate) submitted: AtomicU64,
    pub(crate) completions: AtomicU64,
    pub(crate) overflow_flushes: AtomicU64,
    pub(crate) buffer_ring_rearms: AtomicU64,
}

/// One waker's state, shared by its clones and read by the poller.
#[derive(Debug)]
pub(crate) struct WakerSlot {
    pub(crate) token: Token,
    pub(crate) pending: Pending,
    pub(crate) wakes: AtomicU64,
    /// The poll that last reported this waker (written by the poller only).
    reported: AtomicU64,
    /// Every handle is gone; the slot stays only until its last wake has
    /// been reported.
    dropped: AtomicBool,
}

impl Poller {
    /// Creates a poller on epoll.
    ///
    /// [`BACKEND_ENV`] (`ROUSE_BACKEND=epoll`, `io_uring` or `auto`)
    /// overrides the choice, so that a whole test suite can run on either
    /// backend.
    ///
    /// # Errors
    ///
    /// As [`PollerBuilder::build`].
    pub fn new() -> io::Result<Poller> {
        PollerBuilder::default().build()
    }

    /// Creates a poller on the backend asked for.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`], with the reason, when the kernel does
    /// not offer it; the OS error when descriptors cannot be created.
    pub fn with_backend(backend: Backend) -> io::Result<Poller> {
        PollerBuilder::default().backend(backend).build()
    }

    /// Options beyond the backend: the io_uring wake path, spinning.
    pub fn builder() -> PollerBuilder {
        PollerBuilder::default()
    }

    fn epoll(spin: Duration) -> io::Result<Poller> {
        let wake = WakeFd::new()?;
        let epoll = Epoll::new(Some(wake.as_fd()))?;
        Poller::assemble(
            Signal::Fd(wake),
            Selector::Epoll(epoll),
            Driver::Epoll(EpollDriver::default()),
            spin,
        )
    }

    fn uring(path: UringWake, spin: Duration) -> io::Result<Poller> {
        match path {
            UringWake::EventFd => {
                let wake = WakeFd::new()?;
                let (uring, driver) = Uring::new(WakeVia::Fd(wake.as_raw_fd()))?;
                Poller::assemble(
                    Signal::Fd(wake),
                    Selector::Uring(uring),
                    Driver::Uring(Box::new(driver)),
                    spin,
                )
            }
            UringWake::MsgRing => {
                let (uring, driver) = Uring::new(WakeVia::Msg)?;
                let target = RwLock::new(uring::dup_ring_fd(&driver)?);
                Poller::assemble(
                    Signal::MsgRing {
                        target,
                        nest: OnceLock::new(),
                    },
                    Selector::Uring(uring),
                    Driver::Uring(Box::new(driver)),
                    spin,
                )
            }
        }
    }

    fn assemble(
        signal: Signal,
        selector: Selector,
        mut driver: Driver,
        spin: Duration,
    ) -> io::Result<Poller> {
        let op_counters = Arc::new(OpCounters::default());
        if let Driver::Uring(d) = &mut driver {
            d.counters = Arc::clone(&op_counters);
        }
        Ok(Poller {
            shared: Arc::new(Shared {
                state: WakeState::new(),
                signal,
                forks: fork_generation()?,
                wakers: RwLock::new(Vec::new()),
                waker_tokens: Mutex::new(HashSet::new()),
                wake_syscalls: AtomicU64::new(0),
                retired_wakes: AtomicU64::new(0),
                polls: AtomicU64::new(0),
                polls_blocked: AtomicU64::new(0),
                pool_done: Mutex::new(Vec::new()),
                pool_ready: AtomicBool::new(false),
                op_counters,
            }),
            selector,
            driver: Mutex::new(Polling {
                driver,
                seq: 0,
                ops: OpTable::default(),
                emu: Emulator::default(),
            }),
            spin,
            nested: AtomicBool::new(false),
            nest_failed: Mutex::new(None),
            uring_refused: None,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.selector {
            Selector::Epoll(_) => Backend::Epoll,
            Selector::Uring(_) => Backend::IoUring,
        }
    }

    /// Why io_uring was refused, when it was preferred
    /// ([`PollerBuilder::prefer_io_uring`]) and epoll taken instead: the
    /// kernel's refusal, of kind [`io::ErrorKind::Unsupported`], with the
    /// reason in words. `None` otherwise.
    pub fn uring_refused(&self) -> Option<&io::Error> {
        self.uring_refused.as_ref()
    }

    /// On io_uring, whether readiness is read inside the ring by
    /// `IORING_OP_EPOLL_WAIT` (Linux 6.15), or else by a poll of the epoll
    /// set's fd and an `epoll_wait` beside each wait (older kernels, or
    /// [`URING_EPOLL_WAIT_ENV`](crate::URING_EPOLL_WAIT_ENV)`=0`); `None` on
    /// epoll.
    pub fn uring_epoll_wait(&self) -> Option<bool> {
        match &self.selector {
            Selector::Epoll(_) => None,
            Selector::Uring(u) => Some(u.epoll_wait),
        }
    }

    /// The io_uring wake path in use, or `None` on epoll.
    pub fn uring_wake(&self) -> Option<UringWake> {
        match (&self.selector, &self.shared.signal) {
            (Selector::Epoll(_), _) => None,
            (Selector::Uring(_), Signal::Fd(_)) => Some(UringWake::EventFd),
            (Selector::Uring(_), Signal::MsgRing { .. }) => Some(UringWake::MsgRing),
        }
    }

    /// Registers `fd` for `interest`; its events carry `token`.
    ///
    /// # Errors
    ///
    /// * `EBADF` (the OS error) for a closed fd;
    /// * [`io::ErrorKind::AlreadyExists`] if `fd` is already registered (a new
    ///   file on the number of a closed, registered one is not);
    /// * [`io::ErrorKind::InvalidInput`] for `Token(usize::MAX)`, which is
    ///   reserved, or for a token that a [`Waker`](crate::Waker) of this
    ///   poller uses;
    /// * [`Forked`] in a child process;
    /// * other OS errors, e.g. `EPERM` for a regular file.
    pub fn register(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        self.set_interest(fd.as_fd(), token, interest, false)
    }

    /// Changes the token and interest of a registered fd.
    ///
    /// No event of the old registration is reported after this returns.
    ///
    /// # Errors
    ///
    /// As [`register`](Poller::register), with [`io::ErrorKind::NotFound`]
    /// for an fd that is not registered.
    pub fn reregister(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        self.set_interest(fd.as_fd(), token, interest, true)
    }

    /// [`register`](Poller::register) (`modify` false) or
    /// [`reregister`](Poller::reregister) (`modify` true).
    fn set_interest(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        modify: bool,
    ) -> io::Result<()> {
        self.check_fork()?;
        check_token(token)?;
        // Held across the call, so that a waker cannot take the token meanwhile.
        let tokens = self.shared.waker_tokens();
        if tokens.contains(&token) {
            return Err(token_taken(token));
        }
        match &self.selector {
            Selector::Epoll(ep) if modify => ep.reregister(fd, token, interest),
            Selector::Epoll(ep) => ep.register(fd, token, interest),
            Selector::Uring(ring) if modify => ring.reregister(fd, token, interest),
            Selector::Uring(ring) => ring.register(fd, token, interest),
        }
    }

    /// Stops reporting events for `fd`.
    ///
    /// No event of the registration is reported after this returns.
    ///
    /// # Errors
    ///
    /// `EBADF` for a closed fd; [`io::ErrorKind::NotFound`] for an fd that is
    /// not registered (or whose number now holds another file);
    /// [`Forked`] in a child process.
    pub fn deregister(&self, fd: impl AsFd) -> io::Result<()> {
        self.check_fork()?;
        let fd = fd.as_fd();
        match &self.selector {
            Selector::Epoll(ep) => ep.deregister(fd),
            Selector::Uring(ring) => ring.deregister(fd),
        }
    }

    /// Waits until a registration is ready, a waker wakes, or `timeout`
    /// passes (`None`: no limit), and puts what happened in `events`.
    ///
    /// Returns the number of events. The previous contents of `events` are
    /// replaced, and no more than its capacity are reported; the rest wait for
    /// the next poll. Each token appears at most once. Without an event, it
    /// does not return before the timeout has passed, timeouts under a
    /// millisecond included. `EINTR` is retried with the time that remains.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::ResourceBusy`] if another thread is polling this
    /// poller; [`Forked`] in a child process; OS errors of the wait (on
    /// io_uring, `EMFILE` if this is a new thread and its ring cannot be
    /// made; a later poll retries).
    pub fn poll(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.clear();
        self.check_fork()?;
        if !self.nested.load(Relaxed) {
            return self.poll_inner(events, timeout);
        }
        // Driven by another loop: between polls the poller counts as parked
        // (see the `AsFd` impl), so that a wake makes the fd readable.
        if let Some(e) = &*self.nest_failed.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "this poller's fd was handed to another loop, but wakes cannot \
                     make it readable: its wake fd could not be put in the set: {e}"
                ),
            ));
        }
        let shared = &*self.shared;
        let result = self.poll_inner(events, timeout);
        if !shared.state.park() && shared.state.is_notified() {
            // Woken since this poll looked: make the fd readable now.
            if let Some(fd) = shared.signal.wake_fd() {
                shared.wake_syscalls.fetch_add(1, Relaxed);
                fd.wake()?;
            }
        }
        result
    }

    fn poll_inner(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let mut polling = match self.driver.try_lock() {
            Ok(d) => d,
            // A panic in a wait leaves nothing half-done in the driver.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "another thread is already polling this Poller",
                ));
            }
        };
        let polling = &mut *polling;
        polling.seq += 1;
        let seq = polling.seq;
        let shared = &*self.shared;
        if self.nested.load(Relaxed) && shared.state.is_parked() && shared.state.unpark() {
            // Parked since the last poll, as a nested poller is: a wake
            // came meanwhile.
            shared.collect_wakes(events, seq);
        }
        // The clock is read only for a timeout that can run out.
        let deadline = match timeout {
            Some(t) if !t.is_zero() => Instant::now().checked_add(t),
            _ => None,
        };
        if let (Selector::Uring(ring), Driver::Uring(d)) = (&self.selector, &mut polling.driver) {
            // The ring is made this thread's before the poller can park: a
            // waker that sees the park may message the ring at once, and a
            // ring not yet enabled would refuse the message (EBADFD).
            ring.prepare(d, &shared.signal, &polling.ops)?;
        }
        if let Selector::Epoll(ep) = &self.selector {
            // Operations submitted since the last poll start now.
            if polling.emu.has_pending() {
                let sink = || self.shared.pool_sink();
                polling.emu.start_pending(ep, &mut polling.ops, sink);
            }
        }
        let bump = |c: &AtomicU64| c.store(c.load(Relaxed) + 1, Relaxed);
        let mut reported = false;
        loop {
            let remaining = match (timeout, deadline) {
                (Some(Duration::ZERO), _) => Some(Duration::ZERO),
                (None, _) | (Some(_), None) => None,
                (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            };
            // Wakes already pending go first, so that ready fds (reported
            // again and again, being level-triggered) cannot crowd them out;
            // then completions already reaped.
            if shared.state.is_notified() && shared.state.unpark() {
                shared.collect_wakes(events, seq);
            }
            shared.report_completions(&mut polling.ops, events, &mut reported);
            let last_pass = remaining == Some(Duration::ZERO);
            let may_block = !last_pass && events.is_empty();
            if may_block && !self.spin.is_zero() {
                self.spin_for_wake(remaining);
            }
            let parked = may_block && shared.state.park();
            bump(&shared.polls);
            if parked {
                bump(&shared.polls_blocked);
            }
            let wait = if parked {
                remaining
            } else {
                Some(Duration::ZERO)
            };
            let result = match (&self.selector, &mut polling.driver) {
                _ if events.is_full() => Ok(WaitOutcome::default()),
                (Selector::Epoll(ep), Driver::Epoll(d)) => ep.wait(d, events, wait),
                (Selector::Uring(ring), Driver::Uring(d)) => {
                    ring.wait(d, &shared.signal, events, &mut polling.ops, wait)
                }
                _ => unreachable!("the selector and the driver are made together"),
            };
            let notified = shared.state.unpark();
            if notified {
                shared.collect_wakes(events, seq);
            }
            match result {
                Ok(outcome) => {
                    if outcome.woke {
                        shared.signal.after_wake()?;
                    }
                    if let (true, Selector::Epoll(ep)) = (outcome.ops, &self.selector) {
                        polling.emu.run_ready(ep, &mut polling.ops)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            shared.report_completions(&mut polling.ops, events, &mut reported);
            if !events.is_empty() || last_pass {
                return Ok(events.len());
            }
        }
    }

    /// Submits an operation: the kernel (io_uring) or the poller itself
    /// (epoll) performs it, and a later [`poll`](Poller::poll) reports its
    /// completion (see [`take_completions`](Poller::take_completions)).
    ///
    /// The operation owns its file and buffer until its last completion,
    /// which hands the buffer back; see [`op`](crate::op) for what each
    /// does. On io_uring it is queued, and sent to the kernel by the next
    /// poll's one `io_uring_enter`, which also waits; a full submission
    /// queue is submitted at once and refilled.
    ///
    /// Submit from the thread that polls, between polls (io_uring lets only
    /// that thread submit to its ring).
    ///
    /// # Errors
    ///
    /// Nothing is submitted, and the operation is dropped (its buffer with
    /// it), if:
    ///
    /// * [`io::ErrorKind::ResourceBusy`]: another thread is polling this
    ///   poller, or (io_uring) operations are in flight on the ring of the
    ///   thread that polled it until now;
    /// * [`Forked`] in a child process;
    /// * [`io::ErrorKind::InvalidInput`] for an [`Op::ReadInto`] whose range
    ///   is outside its buffer's length;
    /// * the OS error of the submission (io_uring), or of setting up what
    ///   the operation needs: a provided-buffer ring for a multishot receive
    ///   on io_uring, a thread for a file operation on epoll, `O_NONBLOCK`
    ///   on the socket of an accept or connect on epoll.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use rouse_poll::op::{Op, Output, SharedFd};
    /// use rouse_poll::{Events, Poller};
    ///
    /// let poller = Poller::new()?;
    /// let file = tempfile_with(b"hello, world")?;
    /// let op = Op::ReadAt { fd: SharedFd::new(file), offset: 7, buf: Vec::with_capacity(16) };
    /// let id = poller.submit(op)?;
    ///
    /// let mut events = Events::with_capacity(8);
    /// let mut done = Vec::new();
    /// while done.is_empty() {
    ///     poller.poll(&mut events, Some(Duration::from_secs(5)))?;
    ///     poller.take_completions(&mut done);
    /// }
    /// let c = done.pop().unwrap();
    /// assert_eq!(c.id(), id);
    /// let (n, out) = c.into_parts();
    /// assert_eq!(n?, 5);
    /// let Output::Buf(buf) = out else { unreachable!() };
    /// assert_eq!(buf, b"world");
    /// # fn tempfile_with(data: &[u8]) -> std::io::Result<std::fs::File> {
    /// #     let path = std::env::temp_dir().join(format!("rouse-doc-{}", std::process::id()));
    /// #     std::fs::write(&path, data)?;
    /// #     let f = std::fs::File::open(&path)?;
    /// #     std::fs::remove_file(&path)?;
    /// #     Ok(f)
    /// # }
    /// # std::io::Result::Ok(())
    /// ```
    pub fn submit(&self, op: Op) -> io::Result<OpId> {
        self.check_fork()?;
        if let Op::ReadInto { buf, at, len, .. } = &op {
            if at.checked_add(*len).is_none_or(|end| end > buf.len()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "read_into: {at}..{at}+{len} is outside the buffer's {} initialized bytes",
                        buf.len()
                    ),
                ));
            }
        }
        let mut polling = self.lock_for_ops()?;
        let polling = &mut *polling;
        let id = polling.ops.insert(op);
        let submitted = match (&self.selector, &mut polling.driver) {
            (Selector::Uring(_), Driver::Uring(d)) => d
                .own(&self.shared.signal, &polling.ops)
                .and_then(|()| d.submit_op(&mut polling.ops, id)),
            (Selector::Epoll(_), Driver::Epoll(_)) => {
                polling.emu.submit(id);
                Ok(())
            }
            _ => unreachable!("the selector and the driver are made together"),
        };
        if let Err(e) = submitted {
            polling.ops.remove(id);
            return Err(e);
        }
        let c = &self.shared.op_counters.submitted;
        c.store(c.load(Relaxed) + 1, Relaxed);
        Ok(id)
    }

    /// Asks that operation `id` stop. Its completion still comes: with
    /// `ECANCELED` if it was stopped before it took effect, otherwise with
    /// its result (a write that happened is reported as written). An id
    /// that has completed for good is ignored.
    ///
    /// # Errors
    ///
    /// As [`submit`](Poller::submit).
    pub fn cancel(&self, id: OpId) -> io::Result<()> {
        self.check_fork()?;
        let mut polling = self.lock_for_ops()?;
        let polling = &mut *polling;
        if !polling.ops.contains(id) {
            return Ok(());
        }
        match (&self.selector, &mut polling.driver) {
            (Selector::Uring(_), Driver::Uring(d)) => d.cancel_op(id),
            (Selector::Epoll(ep), Driver::Epoll(_)) => polling.emu.cancel(ep, &mut polling.ops, id),
            _ => unreachable!("the selector and the driver are made together"),
        }
    }

    /// Moves the completions that polls have reaped into `into`, oldest
    /// first. A poll that reaped some reports one event for them, whose
    /// [`Event::is_completions`] is true (it counts toward the capacity,
    /// as wakes do); completions are not otherwise limited by the capacity.
    ///
    /// Returns how many were moved. If another thread is polling, none are
    /// (they are taken after its poll).
    pub fn take_completions(&self, into: &mut Vec<Completion>) -> usize {
        match self.driver.try_lock() {
            Ok(mut p) => self.move_completions(&mut p, into),
            Err(TryLockError::Poisoned(p)) => self.move_completions(&mut p.into_inner(), into),
            Err(TryLockError::WouldBlock) => 0,
        }
    }

    fn move_completions(&self, polling: &mut Polling, into: &mut Vec<Completion>) -> usize {
        let n = polling.ops.ready.len();
        into.extend(polling.ops.ready.drain(..));
        let c = &self.shared.op_counters.completions;
        c.store(c.load(Relaxed) + n as u64, Relaxed);
        n
    }

    /// Operations submitted whose last completion has not yet been reaped.
    pub fn ops_in_flight(&self) -> usize {
        self.driver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ops
            .len()
    }

    /// The poll lock, for submitting or cancelling between polls.
    fn lock_for_ops(&self) -> io::Result<MutexGuard<'_, Polling>> {
        match self.driver.try_lock() {
            Ok(p) => Ok(p),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "another thread is polling this Poller: submit operations from the \
                 thread that polls, between polls",
            )),
        }
    }

    /// Spins until a wake is pending or `spin` (or the timeout) runs out.
    fn spin_for_wake(&self, remaining: Option<Duration>) {
        let limit = remaining.map_or(self.spin, |r| r.min(self.spin));
        let start = Instant::now();
        while !self.shared.state.is_notified() && start.elapsed() < limit {
            std::hint::spin_loop();
        }
    }

    /// The poller's counters, including those of its wakers.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn check_fork(&self) -> io::Result<()> {
        self.shared.check_fork()
    }
}

/// The fd another event loop polls for this poller: readable when a poll
/// would report something (a registration is ready, or a waker woke it).
///
/// This is how a rouse poller nests in tokio (`AsyncFd`), calloop
/// (`Generic`), mio, `polling` or another rouse poller: register the fd for
/// readability there, and when it is readable, [`poll`](Poller::poll) this
/// one with a zero timeout. From the first call on, the poller counts as
/// parked whenever it is not inside `poll`, so that a wake from another
/// thread costs one system call (coalesced: one per dispatch), which is
/// what wakes the outer loop. Readiness of registrations reaches the outer
/// loop through the kernel, with no system call of rouse's.
///
/// On epoll the fd is the epoll instance; on io_uring it is the epoll set
/// that holds the registrations, into which the wake fd is added on this
/// first call. With [`UringWake::MsgRing`], which has no wake fd, this
/// first call makes one (an eventfd, or a pipe where eventfd is missing)
/// and puts it in the set, and wakes write it from then on instead of
/// messaging the ring. If that fails (no descriptors left, say), every
/// later [`poll`](Poller::poll) returns the error, rather than leaving the
/// outer loop asleep.
impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        let set = match &self.selector {
            Selector::Epoll(ep) => ep,
            Selector::Uring(ring) => ring.set(),
        };
        let mut failed = self.nest_failed.lock().unwrap_or_else(|e| e.into_inner());
        if !self.nested.load(Relaxed) {
            if let Selector::Uring(_) = &self.selector {
                let added = self
                    .shared
                    .signal
                    .nest_fd()
                    .and_then(|wake| set.add_wake(wake));
                if let Err(e) = added {
                    *failed = Some(e);
                }
            }
            // Parked after the wake fd is in place, so that a waker that
            // sees the park writes it.
            self.shared.state.park();
            self.nested.store(true, Relaxed);
        }
        set.as_fd()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.shared.state.close();
        let polling = self.driver.get_mut().unwrap_or_else(|e| e.into_inner());
        if current_forks() != self.shared.forks {
            // A forked child's copy: the ring and the pool are the parent's.
            for (_, op) in polling.ops.drain() {
                std::mem::forget(op);
            }
            return;
        }
        match &mut polling.driver {
            // Memory the kernel may write is freed only once its completion
            // has been reaped (or leaked, if it cannot be).
            Driver::Uring(d) => d.shutdown(&mut polling.ops, Duration::from_secs(10)),
            Driver::Epoll(_) => polling.emu.shutdown(),
        }
    }
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("backend", &self.backend())
            .field("uring_wake", &self.uring_wake())
            .field("parked", &self.shared.state.is_parked())
            .field("notified", &self.shared.state.is_notified())
            .field(
                "pending_wakers",
                &self
                    .shared
                    .wakers
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|s| s.pending.is_set())
                    .count(),
            )
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn waker_tokens(&self) -> MutexGuard<'_, HashSet<Token>> {
        // Every change is complete before its guard drops.
        self.waker_tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In a forked child, [`Forked`]: one relaxed load.
    #[inline]
    pub(crate) fn check_fork(&self) -> io::Result<()> {
        if current_forks() != self.forks {
            return Err(forked());
        }
        Ok(())
    }

    /// Sets `NOTIFIED` and makes the wake system call if it is needed.
    ///
    /// If the call fails, the notification is taken back (see
    /// [`WakeState::retract`]), so that the next wake makes the call again,
    /// and the error is returned.
    #[inline]
    pub(crate) fn notify(&self, sender: Option<&MsgSender>) -> io::Result<Notify> {
        let n = self.state.notify();
        if let Notify::Syscall(ticket) = n {
            self.wake_syscalls.fetch_add(1, Relaxed);
            if let Err(e) = self.signal.send(sender) {
                self.state.retract(ticket);
                return Err(e);
            }
        }
        Ok(n)
    }

    /// Adds a waker; fails if its token is taken.
    pub(crate) fn add_waker(&self, token: Token) -> io::Result<Arc<WakerSlot>> {
        check_token(token)?;
        let mut tokens = self.waker_tokens();
        if !tokens.insert(token) {
            return Err(token_taken(token));
        }
        let slot = Arc::new(WakerSlot {
            token,
            pending: Pending::new(),
            wakes: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
        });
        self.wakers().push(Arc::clone(&slot));
        Ok(slot)
    }

    /// Called when a waker's last handle is gone. A wake it made that the
    /// poller has not yet reported is not lost: the slot is then removed by
    /// the poll that reports it.
    pub(crate) fn remove_waker(&self, slot: &Arc<WakerSlot>) {
        // SeqCst with `Pending::is_set` and the poller's `take` then `dropped`
        // load: one of the two sides always sees the other and purges.
        slot.dropped.store(true, SeqCst);
        if !slot.pending.is_set() {
            self.purge_dropped_wakers();
        }
    }

    /// Removes the slots of dropped wakers that have nothing left to report.
    fn purge_dropped_wakers(&self) {
        let mut tokens = self.waker_tokens();
        self.wakers().retain(|s| {
            let gone = s.dropped.load(SeqCst) && !s.pending.is_set();
            if gone {
                tokens.remove(&s.token);
                self.retired_wakes.fetch_add(s.wakes.load(Relaxed), Relaxed);
            }
            !gone
        });
    }

    fn wakers(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<WakerSlot>>> {
        self.wakers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the epoll backend's file pool delivers a completion: to
    /// `pool_done`, with a wake so that a blocked poll returns.
    fn pool_sink(self: &Arc<Self>) -> Arc<dyn Fn(Completion) + Send + Sync> {
        let shared = Arc::clone(self);
        Arc::new(move |c| {
            shared
                .pool_done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
            shared.pool_ready.store(true, SeqCst);
            // A poller that is gone, or a failed wake, leaves the completion
            // to the next poll, which looks at `pool_ready` first.
            let _ = shared.notify(None);
        })
    }

    /// Moves the pool's completions in, and reports completions waiting to
    /// be taken with one event per poll, as room allows.
    fn report_completions(&self, ops: &mut OpTable, events: &mut Events, reported: &mut bool) {
        if self.pool_ready.load(Relaxed) && self.pool_ready.swap(false, SeqCst) {
            let done =
                std::mem::take(&mut *self.pool_done.lock().unwrap_or_else(|e| e.into_inner()));
            for c in done {
                ops.returned(c);
            }
        }
        if !*reported && !ops.ready.is_empty() && !events.is_full() {
            events.push(Event::completions());
            *reported = true;
        }
    }

    /// Reports the tokens of pending wakers, as room allows, each at most
    /// once in poll `seq`; if some must wait, the next poll is told not to
    /// block.
    fn collect_wakes(&self, events: &mut Events, seq: u64) {
        let mut purge = false;
        let mut left = false;
        {
            let wakers = self.wakers.read().unwrap_or_else(|e| e.into_inner());
            for slot in wakers.iter() {
                if slot.reported.load(Relaxed) == seq {
                    // Woken again since this poll reported it: next poll.
                    left |= slot.pending.is_set();
                    continue;
                }
                if events.is_full() {
                    left = true;
                    break;
                }
                if slot.pending.take() {
                    events.push(Event::wake(slot.token));
                    slot.reported.store(seq, Relaxed);
                    purge |= slot.dropped.load(SeqCst);
                }
            }
        }
        if left {
            // Some slots were not reported: keep the notification.
            self.state.notify();
        }
        if purge {
            self.purge_dropped_wakers();
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let live: u64 = self
            .wakers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.wakes.load(Relaxed))
            .sum();
        let c = &self.op_counters;
        Stats {
            wakes: live + self.retired_wakes.load(Relaxed),
            wake_syscalls: self.wake_syscalls.load(Relaxed),
            polls: self.polls.load(Relaxed),
            polls_blocked: self.polls_blocked.load(Relaxed),
            ops_submitted: c.submitted.load(Relaxed),
            completions: c.completions.load(Relaxed),
            overflow_flushes: c.overflow_flushes.load(Relaxed),
            buffer_ring_rearms: c.buffer_ring_rearms.load(Relaxed),
        }
    }
}

fn check_token(token: Token) -> io::Result<()> {
    if token.is_reserved() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{token:?} is reserved by the poller (Token(usize::MAX - 15) and above)"),
        ));
    }
    Ok(())
}

fn token_taken(token: Token) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{token:?} is already used by a waker of this poller"),
    )
}

fn backend_from_env() -> io::Result<Option<Choice>> {
    match std::env::var(BACKEND_ENV).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("epoll") => Ok(Some(Choice::Exactly(Backend::Epoll))),
        Ok("io_uring" | "io-uring" | "uring") => Ok(Some(Choice::Exactly(Backend::IoUring))),
        Ok("auto") => Ok(Some(Choice::PreferUring)),
        Ok(other) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{BACKEND_ENV}={other:?}: expected `epoll`, `io_uring` or `auto`"),
        )),
    }
}

fn uring_wake_from_env() -> io::Result<Option<UringWake>> {
    match std::env::var(URING_WAKE_ENV).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("eventfd") => Ok(Some(UringWake::EventFd)),
        Ok("msg_ring" | "msg-ring") => Ok(Some(UringWake::MsgRing)),
        Ok(other) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{URING_WAKE_ENV}={other:?}: expected `eventfd` or `msg_ring`"),
        )),
    }
}
