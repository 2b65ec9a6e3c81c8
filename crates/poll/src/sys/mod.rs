//! The backends. Each provides, for the poller:
//!
//! * `register`, `reregister`, `deregister`, callable from any thread, which
//!   fail at once with `EBADF`, `AlreadyExists` or `NotFound`: both keep
//!   registrations in an epoll set, so an fd's life is the kernel's epoll
//!   rules on both;
//! * `wait`, called by the one polling thread with the wake state parked (or
//!   not), which fills the events' room with level-triggered readiness and
//!   says whether the wake signal fired.
//!
//! The wake signal itself (an eventfd or pipe write, or a message to the ring)
//! is [`Signal`], shared with the wakers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, Once, OnceLock, RwLock};
use std::time::Duration;

use rouse_sys::{WakeFd, WakeKind};

pub(crate) mod emulate;
pub(crate) mod epoll;
pub(crate) mod features;
pub(crate) mod ops;
pub(crate) mod uring;
pub(crate) mod uring_ops;

/// The key under which the backends report the wake signal.
pub(crate) const WAKE_KEY: u64 = u64::MAX;

/// What one backend wait saw besides the registrations' events.
#[derive(Debug, Default)]
pub(crate) struct WaitOutcome {
    /// The wake signal fired.
    pub(crate) woke: bool,
    /// The epoll backend's set of operations waiting for readiness has
    /// something ready.
    pub(crate) ops: bool,
}

/// How a waker interrupts a wait.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Write to a wake fd that the backend polls.
    Fd(WakeFd),
    /// Post a completion straight to the poller's ring (`IORING_OP_MSG_RING`).
    /// `target` is a duplicate of the fd of the ring the poller waits on,
    /// replaced when the poller makes a new ring on another thread; being a
    /// duplicate, a message sent while the poller is dropped still reaches
    /// a live ring.
    ///
    /// Once the poller is nested in another loop, a message to the ring
    /// would not make the poller's fd readable: `nest` then holds a wake fd,
    /// added to the registration set, and wakes write it instead (the ring
    /// sees it in the set too).
    MsgRing {
        target: RwLock<OwnedFd>,
        nest: OnceLock<WakeFd>,
    },
}

impl Signal {
    /// Makes the poller's wait return. `sender` is the caller's own ring,
    /// which the message path needs.
    #[inline]
    pub(crate) fn send(&self, sender: Option<&MsgSender>) -> io::Result<()> {
        match self {
            Signal::Fd(fd) => fd.wake(),
            Signal::MsgRing { nest, .. } if nest.get().is_some() => {
                nest.get().expect("checked").wake()
            }
            Signal::MsgRing { target, .. } => {
                let sender = sender.expect("a waker on the message path has a ring");
                let target = target.read().unwrap_or_else(|e| e.into_inner());
                sender.send(target.as_fd())
            }
        }
    }

    /// Called by the poller when the signal fired: a pipe is drained so that
    /// it never fills; an eventfd is left alone (its edge is enough).
    pub(crate) fn after_wake(&self) -> io::Result<()> {
        match self.wake_fd() {
            Some(fd) if fd.kind() == WakeKind::Pipe => fd.consume().map(drop),
            _ => Ok(()),
        }
    }

    /// The wake fd that wakes write, if they write one.
    pub(crate) fn wake_fd(&self) -> Option<&WakeFd> {
        match self {
            Signal::Fd(fd) => Some(fd),
            Signal::MsgRing { nest, .. } => nest.get(),
        }
    }

    /// The wake fd to put in the registration set of a poller about to be
    /// nested: the one wakes write, made now on the message path.
    pub(crate) fn nest_fd(&self) -> io::Result<BorrowedFd<'_>> {
        match self {
            Signal::Fd(fd) => Ok(fd.as_fd()),
            Signal::MsgRing { nest, .. } => {
                if nest.get().is_none() {
                    let _ = nest.set(WakeFd::new()?);
                }
                Ok(nest.get().expect("set above").as_fd())
            }
        }
    }

    /// A waker's own sender, if this path needs one: made now, so that a
    /// waker that cannot have one (no descriptors left) fails when it is
    /// made rather than in a later `wake`.
    pub(crate) fn new_sender(&self) -> io::Result<Option<MsgSender>> {
        match self {
            Signal::Fd(_) => Ok(None),
            Signal::MsgRing { .. } => Ok(Some(MsgSender {
                ring: Mutex::new(io_uring::IoUring::new(2)?),
            })),
        }
    }
}

/// A small ring of a waker's own, from which it messages the poller's ring.
pub(crate) struct MsgSender {
    ring: Mutex<io_uring::IoUring>,
}

impl std::fmt::Debug for MsgSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgSender").finish_non_exhaustive()
    }
}

impl MsgSender {
    fn send(&self, target: BorrowedFd<'_>) -> io::Result<()> {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        uring::send_msg(&mut ring, target)
    }
}

/// Forks seen by this process's children: each child's count is one more
/// than its parent's was when it forked.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Relaxed);
}

/// The fork count of this process, for a poller to remember at creation.
/// Counting starts with the first call.
pub(crate) fn fork_generation() -> io::Result<u64> {
    static INSTALL: Once = Once::new();
    let mut result = 0;
    INSTALL.call_once(|| {
        // SAFETY: registers a child handler that only increments an atomic;
        // the function lives for the whole program.
        result = unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
    });
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    Ok(current_forks())
}

/// The fork count now: one relaxed load.
#[inline]
pub(crate) fn current_forks() -> u64 {
    FORKS.load(Relaxed)
}

/// A small, process-unique id for the calling thread, never 0.
pub(crate) fn thread_id() -> u64 {
    use std::cell::Cell;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: Cell<u64> = const { Cell::new(0) };
    }
    ID.with(|id| {
        if id.get() == 0 {
            id.set(NEXT.fetch_add(1, Relaxed));
        }
        id.get()
    })
}

pub(crate) fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos().into(),
    }
}

pub(crate) fn already_registered(fd: BorrowedFd<'_>) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "fd {} is already registered with this poller",
            fd.as_raw_fd()
        ),
    )
}

pub(crate) fn not_registered(fd: BorrowedFd<'_>) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("fd {} is not registered with this poller", fd.as_raw_fd()),
    )
}
