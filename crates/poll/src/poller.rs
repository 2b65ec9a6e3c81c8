//! The poller: one API over the epoll and io_uring backends.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

use rouse_sys::WakeFd;

use crate::event::{Event, Events};
use crate::state::{Notify, Pending, WakeState};
use crate::sys::epoll::{Epoll, EpollDriver};
use crate::sys::uring::{self, Uring, UringDriver, WakeVia};
use crate::sys::{MsgSender, Signal, WaitOutcome};
use crate::{Interest, Token};

/// The environment variable that makes [`Poller::new`] use one backend:
/// `epoll` or `io_uring`.
pub const BACKEND_ENV: &str = "ROUSE_BACKEND";

/// The environment variable that picks the io_uring wake path for
/// [`Poller::new`]: `eventfd` or `msg_ring`.
pub const URING_WAKE_ENV: &str = "ROUSE_URING_WAKE";

/// A kernel readiness interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `epoll(7)`: one `epoll_pwait2` per wait (Linux 5.11 or later).
    Epoll,
    /// `io_uring(7)`: poll requests on a ring, one `io_uring_enter` per wait
    /// that submits and waits together (Linux 5.13 or later for multishot
    /// polls; 5.18 for the message wake path).
    IoUring,
}

/// How a wake reaches a poller on the io_uring backend.
///
/// | path | wake system call | kernel |
/// |---|---|---|
/// | [`EventFd`](UringWake::EventFd) | `write(2)` to an eventfd under a multishot poll | 5.13 |
/// | [`MsgRing`](UringWake::MsgRing) | `io_uring_enter(2)` on the waker's own small ring, posting straight to the poller's ring | 5.18 |
///
/// Either way the polling side makes no system call of its own per wake, and
/// a wake costs a system call only when the poller is blocked.
///
/// Without the kernel support, [`PollerBuilder::build`] on io_uring fails
/// with [`io::ErrorKind::Unsupported`] and [`Poller::new`] falls back to
/// epoll. `MsgRing` gives each [`Waker`](crate::Waker) a small ring of its
/// own (one more fd and a few pages), created on its first wake that has to
/// make a system call; if it cannot be created (`EMFILE`, `ENOMEM`), the
/// wake goes through the poller's own ring instead, and only if that fails
/// too does `wake` return the error.
///
/// # Cost
///
/// Measured with `cargo xtask bench` (2 vCPUs under KVM, Linux 6.18; the
/// full table is in the README), a wake round trip between two threads:
///
/// | | both threads on one CPU | on two CPUs |
/// |---|---|---|
/// | futex park/unpark (floor) | 2.62 µs | 57.6 µs |
/// | epoll backend | 2.86 µs, 1.07 wake syscalls | 70.5 µs, 1.99 wake syscalls |
/// | io_uring, `EventFd` | 2.74 µs, 1.13 wake syscalls | 63.1 µs, 2.00 wake syscalls |
/// | io_uring, `MsgRing` | 2.74 µs, 1.07 wake syscalls | 64.9 µs, 2.00 wake syscalls |
/// | mio `Poll` + `Waker` | 3.68 µs, 2 writes | 63.4 µs, 2 writes |
///
/// These are one run's medians. Between runs on this machine the io_uring
/// rows on one CPU ranged from 0.96× to 1.21× the epoll row, so neither
/// backend is reliably faster there; across CPUs all paths are within noise
/// of each other and of mio.
///
/// Wake syscalls are per round trip (two wakes), from [`Stats`]: each wake
/// costs at most one, and on one CPU often none, because the woken side has
/// not parked yet. By `perf stat`, a whole round trip costs about 3 system
/// calls on either path (the waits included). The two paths measure the
/// same within noise, so `EventFd`, which needs no ring per waker, is the
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UringWake {
    /// An eventfd (or pipe, under `ROUSE_FORCE_PIPE=1`) polled by the ring.
    #[default]
    EventFd,
    /// `IORING_OP_MSG_RING` from a ring owned by each waker, created on its
    /// first wake that needs a system call. No eventfd at all.
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
    /// System calls made to wake the poller: wakes from [`Waker`]s and
    /// registrations from other threads that had to interrupt a wait.
    ///
    /// [`Waker`]: crate::Waker
    pub wake_syscalls: u64,
    /// Calls to [`Poller::poll`] that got as far as waiting.
    pub polls: u64,
    /// Waits that were allowed to block in the kernel (some returned at once
    /// all the same, because an event was ready).
    pub polls_blocked: u64,
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
    uring_wake: Option<UringWake>,
    spin: Duration,
}

impl PollerBuilder {
    /// Asks for one backend; without this, io_uring where it works and epoll
    /// otherwise (or what [`BACKEND_ENV`] says).
    pub fn backend(mut self, backend: Backend) -> PollerBuilder {
        self.backend = Some(backend);
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
    /// * [`io::ErrorKind::Unsupported`] when the backend asked for is not
    ///   available on this kernel (with the reason);
    /// * [`io::ErrorKind::InvalidInput`] when [`BACKEND_ENV`] or
    ///   [`URING_WAKE_ENV`] holds an unknown value;
    /// * the OS error when descriptors cannot be created.
    pub fn build(self) -> io::Result<Poller> {
        let uring_wake = match self.uring_wake {
            Some(path) => path,
            None => uring_wake_from_env()?.unwrap_or_default(),
        };
        let backend = match self.backend {
            Some(b) => Some(b),
            None => backend_from_env()?,
        };
        match backend {
            Some(Backend::Epoll) => Poller::epoll(self.spin),
            Some(Backend::IoUring) => Poller::uring(uring_wake, self.spin),
            None => Poller::uring(uring_wake, self.spin).or_else(|_| Poller::epoll(self.spin)),
        }
    }
}

/// Waits for readiness on registered fds and for wakes from [`Waker`](crate::Waker)s.
///
/// Readiness is **level-triggered** on both backends: a registration that is
/// still ready is reported again by the next poll. Every call takes `&self`:
/// registrations may come from any thread, even while another is blocked in
/// [`poll`](Poller::poll), and take effect before that wait reports anything
/// more. One thread polls at a time.
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
/// # Implementation notes
///
/// On io_uring a registration holds a reference to the file while its poll
/// request is in the kernel: deregister an fd before closing it, or the file
/// stays open until the poller next runs.
pub struct Poller {
    shared: Arc<Shared>,
    selector: Selector,
    driver: Mutex<Driver>,
    spin: Duration,
}

enum Selector {
    Epoll(Epoll),
    Uring(Uring),
}

enum Driver {
    Epoll(EpollDriver),
    Uring(Box<UringDriver>),
}

/// What the poller shares with its wakers.
pub(crate) struct Shared {
    pub(crate) state: WakeState,
    pub(crate) signal: Signal,
    /// The poller's own sender, for registrations that interrupt a wait.
    internal: MsgSender,
    wakers: RwLock<Vec<Arc<WakerSlot>>>,
    registry: Mutex<Registry>,
    pub(crate) wake_syscalls: AtomicU64,
    /// Wakes counted by wakers that have since been dropped.
    retired_wakes: AtomicU64,
    polls: AtomicU64,
    polls_blocked: AtomicU64,
}

/// One waker's state, shared by its clones and read by the poller.
#[derive(Debug)]
pub(crate) struct WakerSlot {
    pub(crate) token: Token,
    pub(crate) pending: Pending,
    pub(crate) wakes: AtomicU64,
    /// Every handle is gone; the slot stays only until its last wake has
    /// been reported.
    dropped: AtomicBool,
}

/// Tokens in use, so that a waker's never collides with a registration's.
#[derive(Debug, Default)]
struct Registry {
    wakers: HashSet<Token>,
    fds: HashMap<RawFd, Token>,
}

impl Poller {
    /// Creates a poller on io_uring where the kernel allows it, and epoll
    /// otherwise.
    ///
    /// [`BACKEND_ENV`] (`ROUSE_BACKEND=epoll` or `io_uring`) forces the choice,
    /// so that a whole test suite can run on either backend.
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
        let epoll = Epoll::new(wake.as_fd())?;
        Ok(Poller::assemble(
            Signal::Fd(wake),
            Selector::Epoll(epoll),
            Driver::Epoll(EpollDriver::default()),
            spin,
        ))
    }

    fn uring(path: UringWake, spin: Duration) -> io::Result<Poller> {
        match path {
            UringWake::EventFd => {
                let wake = WakeFd::new()?;
                let (uring, driver) = Uring::new(WakeVia::Fd(wake.as_raw_fd()))?;
                Ok(Poller::assemble(
                    Signal::Fd(wake),
                    Selector::Uring(uring),
                    Driver::Uring(Box::new(driver)),
                    spin,
                ))
            }
            UringWake::MsgRing => {
                let (uring, driver) = Uring::new(WakeVia::Msg)?;
                let target = uring::dup_ring_fd(&driver)?;
                Ok(Poller::assemble(
                    Signal::MsgRing { target },
                    Selector::Uring(uring),
                    Driver::Uring(Box::new(driver)),
                    spin,
                ))
            }
        }
    }

    fn assemble(signal: Signal, selector: Selector, driver: Driver, spin: Duration) -> Poller {
        Poller {
            shared: Arc::new(Shared {
                state: WakeState::new(),
                signal,
                internal: MsgSender::default(),
                wakers: RwLock::new(Vec::new()),
                registry: Mutex::new(Registry::default()),
                wake_syscalls: AtomicU64::new(0),
                retired_wakes: AtomicU64::new(0),
                polls: AtomicU64::new(0),
                polls_blocked: AtomicU64::new(0),
            }),
            selector,
            driver: Mutex::new(driver),
            spin,
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.selector {
            Selector::Epoll(_) => Backend::Epoll,
            Selector::Uring(_) => Backend::IoUring,
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
    ///   file that reuses the number of a closed, registered one is not);
    /// * [`io::ErrorKind::InvalidInput`] for `Token(usize::MAX)`, which is
    ///   reserved, or for a token that a [`Waker`](crate::Waker) of this
    ///   poller uses;
    /// * other OS errors, e.g. `EPERM` for a regular file on epoll.
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
        check_token(token)?;
        let mut reg = self.registry();
        if reg.wakers.contains(&token) {
            return Err(token_taken(token));
        }
        match &self.selector {
            Selector::Epoll(ep) if modify => ep.reregister(fd, token, interest)?,
            Selector::Epoll(ep) => ep.register(fd, token, interest)?,
            Selector::Uring(ring) => {
                if modify {
                    ring.reregister(fd, token, interest)?;
                } else {
                    ring.register(fd, token, interest)?;
                }
                self.interrupt_wait()?;
            }
        }
        reg.fds.insert(fd.as_raw_fd(), token);
        Ok(())
    }

    /// Stops reporting events for `fd`.
    ///
    /// No event of the registration is reported after this returns.
    ///
    /// # Errors
    ///
    /// `EBADF` for a closed fd; [`io::ErrorKind::NotFound`] for an fd that is
    /// not registered.
    pub fn deregister(&self, fd: impl AsFd) -> io::Result<()> {
        let fd = fd.as_fd();
        let mut reg = self.registry();
        match &self.selector {
            Selector::Epoll(ep) => ep.deregister(fd)?,
            Selector::Uring(ring) => {
                ring.deregister(fd)?;
                self.interrupt_wait()?;
            }
        }
        reg.fds.remove(&fd.as_raw_fd());
        Ok(())
    }

    /// Waits until a registration is ready, a waker wakes, or `timeout`
    /// passes (`None`: no limit), and puts what happened in `events`.
    ///
    /// Returns the number of events. The previous contents of `events` are
    /// replaced, and no more than its capacity are reported; the rest wait for
    /// the next poll. Without an event, it does not return before the timeout
    /// has passed, timeouts under a millisecond included. `EINTR` is retried
    /// with the time that remains.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::ResourceBusy`] if another thread is polling this
    /// poller; OS errors of the wait.
    pub fn poll(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.clear();
        let mut driver = match self.driver.try_lock() {
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
        let shared = &*self.shared;
        // The clock is read only for a timeout that can run out.
        let deadline = match timeout {
            Some(t) if !t.is_zero() => Instant::now().checked_add(t),
            _ => None,
        };
        let bump = |c: &AtomicU64| c.store(c.load(Relaxed) + 1, Relaxed);
        loop {
            let remaining = match (timeout, deadline) {
                (Some(Duration::ZERO), _) => Some(Duration::ZERO),
                (None, _) | (Some(_), None) => None,
                (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            };
            // Wakes already pending go first, so that ready fds (reported
            // again and again, being level-triggered) cannot crowd them out.
            if shared.state.is_notified() && shared.state.unpark() {
                shared.collect_wakes(events);
            }
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
            let result = match (&self.selector, &mut *driver) {
                _ if events.is_full() => Ok(WaitOutcome::default()),
                (Selector::Epoll(ep), Driver::Epoll(d)) => ep.wait(d, events, wait),
                (Selector::Uring(ring), Driver::Uring(d)) => ring.wait(d, events, wait),
                _ => unreachable!("the selector and the driver are made together"),
            };
            let notified = shared.state.unpark();
            match result {
                Ok(outcome) if outcome.woke => shared.signal.after_wake()?,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if notified {
                shared.collect_wakes(events);
            }
            if !events.is_empty() || last_pass {
                return Ok(events.len());
            }
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

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.shared.registry()
    }

    /// After a registration change on io_uring: if the poller is blocked, wake
    /// it so that the change takes effect in this wait.
    fn interrupt_wait(&self) -> io::Result<()> {
        if self.shared.state.is_parked() {
            self.shared.notify(&self.shared.internal)?;
        }
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.shared.state.close();
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
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every registry change is complete before its guard drops.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets `NOTIFIED` and makes the wake system call if it is needed.
    pub(crate) fn notify(&self, sender: &MsgSender) -> io::Result<Notify> {
        let n = self.state.notify();
        if n == Notify::Syscall {
            self.wake_syscalls.fetch_add(1, Relaxed);
            // This notify is the one the parked poller waits for: later ones
            // make no call. So a failed send (a waker's own ring that cannot
            // be created, say) is retried through the poller's ring before
            // it is reported, and the wake is not left stranded.
            if let Err(e) = self.signal.send(sender) {
                if std::ptr::eq(sender, &self.internal) {
                    return Err(e);
                }
                self.signal.send(&self.internal).map_err(|_| e)?;
            }
        }
        Ok(n)
    }

    /// Adds a waker; fails if its token is taken.
    pub(crate) fn add_waker(&self, token: Token) -> io::Result<Arc<WakerSlot>> {
        check_token(token)?;
        let mut reg = self.registry();
        if reg.wakers.contains(&token) || reg.fds.values().any(|t| *t == token) {
            return Err(token_taken(token));
        }
        reg.wakers.insert(token);
        let slot = Arc::new(WakerSlot {
            token,
            pending: Pending::new(),
            wakes: AtomicU64::new(0),
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
        let mut reg = self.registry();
        self.wakers().retain(|s| {
            let gone = s.dropped.load(SeqCst) && !s.pending.is_set();
            if gone {
                reg.wakers.remove(&s.token);
                self.retired_wakes.fetch_add(s.wakes.load(Relaxed), Relaxed);
            }
            !gone
        });
    }

    fn wakers(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<WakerSlot>>> {
        self.wakers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports the tokens of pending wakers, as room allows; if some must
    /// wait, the next poll is told not to block.
    fn collect_wakes(&self, events: &mut Events) {
        let mut purge = false;
        {
            let wakers = self.wakers.read().unwrap_or_else(|e| e.into_inner());
            for slot in wakers.iter() {
                if events.is_full() {
                    // Some slots were not looked at: keep the notification.
                    self.state.notify();
                    break;
                }
                if slot.pending.take() {
                    events.push(Event::wake(slot.token));
                    purge |= slot.dropped.load(SeqCst);
                }
            }
        }
        if purge {
            self.purge_dropped_wakers();
        }
    }

    fn stats(&self) -> Stats {
        let live: u64 = self
            .wakers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.wakes.load(Relaxed))
            .sum();
        Stats {
            wakes: live + self.retired_wakes.load(Relaxed),
            wake_syscalls: self.wake_syscalls.load(Relaxed),
            polls: self.polls.load(Relaxed),
            polls_blocked: self.polls_blocked.load(Relaxed),
        }
    }
}

fn check_token(token: Token) -> io::Result<()> {
    if token == Token::RESERVED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "Token(usize::MAX) is reserved by the poller",
        ));
    }
    Ok(())
}

fn token_taken(token: Token) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{token:?} is already used by a waker or registration of this poller"),
    )
}

fn backend_from_env() -> io::Result<Option<Backend>> {
    match std::env::var(BACKEND_ENV).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("epoll") => Ok(Some(Backend::Epoll)),
        Ok("io_uring" | "io-uring" | "uring") => Ok(Some(Backend::IoUring)),
        Ok(other) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{BACKEND_ENV}={other:?}: expected `epoll` or `io_uring`"),
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
