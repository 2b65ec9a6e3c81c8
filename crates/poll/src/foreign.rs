//! A ring the program owns (a storage library's, say), watched through an
//! eventfd registered with it (`IORING_REGISTER_EVENTFD`): what a loop
//! polls to learn that the ring has completions, and how to drain them.
//!
//! Completions posted before the eventfd was registered are never
//! signalled: drain once right after [`RingWatch::new`]. The eventfd's
//! count is a hint: [`RingWatch::drain`] takes every completion there is. A
//! ring made with `IORING_SETUP_DEFER_TASKRUN` signals the eventfd when
//! work is waiting, but posts the completions only inside an
//! `io_uring_enter` with `GETEVENTS` from its submitter thread:
//! [`RingWatch::drain`] makes that call when the eventfd fired and the
//! queue is empty (and when completions overflowed the queue).

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use io_uring::{IoUring, cqueue};
use rouse_sys::{EventFd, EventFdFlags};
use rustix::io::Errno;

const IORING_ENTER_GETEVENTS: u32 = 1;

/// A ring and the eventfd registered with it.
pub struct RingWatch {
    // Dropped first: closed before its eventfd.
    ring: IoUring,
    efd: EventFd,
}

impl RingWatch {
    /// Registers a new eventfd (non-blocking, close-on-exec) with `ring`.
    ///
    /// # Errors
    ///
    /// The OS error of `eventfd(2)` or of `IORING_REGISTER_EVENTFD` (`EBUSY`
    /// for a ring that has one already).
    pub fn new(ring: IoUring) -> io::Result<RingWatch> {
        let efd = EventFd::new(0, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC)?;
        ring.submitter().register_eventfd(efd.as_raw_fd())?;
        Ok(RingWatch { ring, efd })
    }

    /// The ring, to submit to.
    pub fn ring(&mut self) -> &mut IoUring {
        &mut self.ring
    }

    /// Every completion in the queue now (running a `DEFER_TASKRUN` ring's
    /// deferred work first when the eventfd says some waits), and the error
    /// of the `io_uring_enter` that runs it, if it failed (`EEXIST` from a
    /// thread that is not the ring's only submitter). Resets the eventfd.
    pub fn drain(&mut self) -> (Vec<cqueue::Entry>, io::Result<()>) {
        let signalled = self.efd.read().is_ok();
        let mut out = Vec::new();
        self.take(&mut out);
        // A signal may stand for deferred work (DEFER_TASKRUN) beside what
        // is posted; an overflow leaves completions in the kernel. Either
        // way an enter with GETEVENTS brings them in. (Which rings defer
        // is not told, so a signal costs this one call.)
        let mut entered = false;
        while (signalled && !entered) || self.ring.submission().cq_overflow() {
            entered = true;
            // SAFETY: no argument is passed; GETEVENTS with no minimum runs
            // the ring's deferred work (and flushes an overflow) and
            // returns.
            let r = unsafe {
                self.ring
                    .submitter()
                    .enter::<()>(0, 0, IORING_ENTER_GETEVENTS, None)
            };
            if let Err(e) = r {
                match Errno::from_io_error(&e) {
                    Some(Errno::INTR | Errno::BUSY | Errno::AGAIN) => {}
                    _ => return (out, Err(e)),
                }
            }
            self.take(&mut out);
        }
        (out, Ok(()))
    }

    fn take(&mut self, out: &mut Vec<cqueue::Entry>) {
        let mut cq = self.ring.completion();
        cq.sync();
        out.extend(&mut cq);
    }
}

impl AsFd for RingWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}

impl std::fmt::Debug for RingWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingWatch")
            .field("ring", &self.ring.as_raw_fd())
            .field("eventfd", &self.efd.as_raw_fd())
            .finish()
    }
}
