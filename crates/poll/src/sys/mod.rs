//! The backends. Each provides, for the poller:
//!
//! * `register`, `reregister`, `deregister`, callable from any thread, which
//!   fail at once with `EBADF`, `AlreadyExists` or `NotFound`;
//! * `wait`, called by the one polling thread with the wake state parked (or
//!   not), which fills the events' room with level-triggered readiness and
//!   says whether the wake signal fired.
//!
//! The wake signal itself (an eventfd or pipe write, or a message to the ring)
//! is [`Signal`], shared with the wakers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use rouse_sys::{WakeFd, WakeKind};

pub(crate) mod epoll;
pub(crate) mod uring;

/// The key under which the backends report the wake signal.
pub(crate) const WAKE_KEY: u64 = u64::MAX;

/// What one backend wait saw besides the registrations' events.
#[derive(Debug, Default)]
pub(crate) struct WaitOutcome {
    /// The wake signal fired.
    pub(crate) woke: bool,
}

/// How a waker (or a registration from another thread) interrupts a wait.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Write to a wake fd that the backend polls.
    Fd(WakeFd),
    /// Post a completion straight to the poller's ring (`IORING_OP_MSG_RING`).
    /// `target` is a duplicate of the ring's fd, so that a message sent while
    /// the poller is being dropped still reaches a live ring.
    MsgRing { target: OwnedFd },
}

impl Signal {
    /// Makes the poller's wait return. `sender` is the caller's own ring for
    /// the message path (created on first use).
    pub(crate) fn send(&self, sender: &MsgSender) -> io::Result<()> {
        match self {
            Signal::Fd(fd) => fd.wake(),
            Signal::MsgRing { target } => sender.send(target.as_fd()),
        }
    }

    /// Called by the poller when the signal fired: a pipe is drained so that
    /// it never fills; an eventfd is left alone (its edge is enough).
    pub(crate) fn after_wake(&self) -> io::Result<()> {
        match self {
            Signal::Fd(fd) if fd.kind() == WakeKind::Pipe => fd.consume().map(drop),
            _ => Ok(()),
        }
    }
}

/// A small ring of a waker's own, from which it messages the poller's ring.
#[derive(Default)]
pub(crate) struct MsgSender {
    ring: Mutex<Option<io_uring::IoUring>>,
}

impl std::fmt::Debug for MsgSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgSender").finish_non_exhaustive()
    }
}

impl MsgSender {
    fn send(&self, target: BorrowedFd<'_>) -> io::Result<()> {
        let mut guard = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let ring = match &mut *guard {
            Some(ring) => ring,
            none => none.insert(io_uring::IoUring::new(2)?),
        };
        uring::send_msg(ring, target)
    }
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
