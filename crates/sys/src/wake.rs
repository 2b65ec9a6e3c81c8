//! The wake-up fd: an eventfd, or a pipe where eventfd is unavailable.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::io::Errno;

use crate::{EventFd, EventFdFlags, Pipe};

/// Which mechanism a [`WakeFd`] uses.
///
/// # Examples
///
/// ```
/// use rouse_sys::{WakeFd, WakeKind};
///
/// let w = WakeFd::new()?;
/// match w.kind() {
///     WakeKind::EventFd => println!("one descriptor, an eventfd"),
///     WakeKind::Pipe => println!("the pipe fallback"),
/// }
/// assert_eq!(WakeFd::with_kind(WakeKind::Pipe)?.kind(), WakeKind::Pipe);
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WakeKind {
    /// A non-blocking, close-on-exec `eventfd(2)`: one descriptor, and a
    /// counter that absorbs any number of wakes.
    EventFd,
    /// A non-blocking, close-on-exec `pipe2(2)`: two descriptors, one byte per
    /// wake up to the pipe's capacity.
    Pipe,
}

/// The environment variable that makes [`WakeFd::new`] choose a pipe.
///
/// Set it to `1` (or `true`, `yes`, `on`) to run a whole program or test
/// suite on the fallback; `0` (`false`, `no`, `off`) or unset leaves the
/// choice to the kernel. Any other value makes [`WakeFd::new`] fail with
/// [`io::ErrorKind::InvalidInput`] naming the variable (see [`env_switch`]).
pub const FORCE_PIPE_ENV: &str = "ROUSE_FORCE_PIPE";

/// Reads an on/off switch from the environment, as rouse reads all of its
/// own (`ROUSE_FORCE_PIPE`, and the poller's): `1`, `true`, `yes`, `on` are
/// on; `0`, `false`, `no`, `off` are off (any case); unset or empty is
/// `None`.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`], naming the variable and the value, for
/// anything else (a value that is not Unicode included), so that a
/// misspelt switch is never silently ignored.
///
/// # Examples
///
/// ```
/// // SAFETY: no other thread reads or writes the environment meanwhile.
/// unsafe { std::env::set_var("MY_SWITCH", "Yes") };
/// assert_eq!(rouse_sys::env_switch("MY_SWITCH")?, Some(true));
/// unsafe { std::env::set_var("MY_SWITCH", "maybe") };
/// assert!(rouse_sys::env_switch("MY_SWITCH").is_err());
/// # std::io::Result::Ok(())
/// ```
pub fn env_switch(name: &str) -> io::Result<Option<bool>> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    let lower = value.to_str().map(str::to_ascii_lowercase);
    match lower.as_deref() {
        Some("") => Ok(None),
        Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
        Some("0" | "false" | "no" | "off") => Ok(Some(false)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}={value:?}: expected 1, true, yes or on, or 0, false, no or off"),
        )),
    }
}

/// A wake-up fd: [`wake`](WakeFd::wake) from any thread makes the polled side
/// readable until [`consume`](WakeFd::consume) is called.
///
/// [`WakeFd::new`] uses an eventfd where the kernel offers one and a pipe
/// otherwise; [`WakeFd::with_kind`] asks for one of them. Both are
/// non-blocking and close-on-exec. Any number of wakes before a `consume`
/// coalesce into one readable state.
///
/// # Examples
///
/// ```
/// use rouse_sys::{WakeFd, WakeKind};
///
/// for kind in [WakeKind::EventFd, WakeKind::Pipe] {
///     let w = WakeFd::with_kind(kind)?;
///     assert!(!w.consume()?); // nothing pending
///     w.wake()?;
///     w.wake()?;
///     assert!(w.consume()?); // both wakes, seen once
///     assert!(!w.consume()?);
/// }
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug)]
pub struct WakeFd {
    pub(crate) inner: Inner,
}

#[derive(Debug)]
pub(crate) enum Inner {
    EventFd(EventFd),
    Pipe(Pipe),
}

/// Whether eventfd works here: unknown, yes, or no. Settled by the first
/// [`WakeFd::new`] that gets a definite answer.
static EVENTFD_AVAILABLE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const AVAILABLE: u8 = 1;
const UNAVAILABLE: u8 = 2;

impl WakeFd {
    /// Creates a wake-up fd of the best kind available.
    ///
    /// The first call tries `eventfd(2)`. If the kernel refuses it as
    /// unsupported (`ENOSYS`, `EINVAL`, `EPERM`, `EACCES` or `ENODEV`, as in
    /// some sandboxes and emulation layers), this and every later call use a
    /// pipe; the answer is kept for the life of the process. When
    /// [`FORCE_PIPE_ENV`] is set to `1`, a pipe is used.
    ///
    /// # Errors
    ///
    /// Returns the OS error if the descriptors cannot be created, e.g.
    /// `EMFILE`. Running out of descriptors is not taken as a sign that
    /// eventfd is unsupported. [`io::ErrorKind::InvalidInput`] if
    /// [`FORCE_PIPE_ENV`] holds a value that is neither on nor off.
    pub fn new() -> io::Result<WakeFd> {
        if force_pipe()? {
            return WakeFd::with_kind(WakeKind::Pipe);
        }
        new_with(&EVENTFD_AVAILABLE, eventfd)
    }

    /// Creates a wake-up fd of the given kind.
    ///
    /// # Errors
    ///
    /// Returns the OS error if the descriptors cannot be created.
    pub fn with_kind(kind: WakeKind) -> io::Result<WakeFd> {
        let inner = match kind {
            WakeKind::EventFd => Inner::EventFd(eventfd()?),
            WakeKind::Pipe => Inner::Pipe(Pipe::new()?),
        };
        Ok(WakeFd { inner })
    }

    /// Which mechanism this fd uses.
    pub fn kind(&self) -> WakeKind {
        match self.inner {
            Inner::EventFd(_) => WakeKind::EventFd,
            Inner::Pipe(_) => WakeKind::Pipe,
        }
    }

    /// Makes the polled side readable, with one system call.
    ///
    /// Every successful wake is a new readiness edge, so the fd can be polled
    /// edge-triggered without being read on every wake: in the rare case that
    /// it is saturated (an eventfd counter at its ceiling, or a full pipe), the
    /// wake drains it and writes again, which costs two more system calls.
    ///
    /// # Errors
    ///
    /// Any OS error of `write(2)` or `read(2)` other than `EAGAIN` and
    /// `EINTR`.
    // Always: a system call inside a function that is called, not inlined,
    // measured 20-30% slower per wake on this project's machines.
    #[inline(always)]
    pub fn wake(&self) -> io::Result<()> {
        match &self.inner {
            Inner::EventFd(fd) => match fd.write(1) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wake_saturated(),
                r => r,
            },
            Inner::Pipe(pipe) => match pipe.try_wake()? {
                true => Ok(()),
                false => self.wake_saturated(),
            },
        }
    }

    /// A wake that found the fd saturated (an eventfd counter at its
    /// ceiling, a full pipe), where a write adds nothing and signals no one:
    /// drains it and writes again. Out of line, so that the common wake is
    /// small enough to inline.
    #[cold]
    #[inline(never)]
    fn wake_saturated(&self) -> io::Result<()> {
        self.consume()?;
        match &self.inner {
            Inner::EventFd(fd) => match fd.write(1) {
                // Refilled by other wakers meanwhile: pending again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                r => r,
            },
            Inner::Pipe(pipe) => pipe.wake(),
        }
    }

    /// Clears every pending wake and says whether there was one.
    ///
    /// Never blocks.
    ///
    /// # Errors
    ///
    /// Any OS error of `read(2)` other than `EAGAIN` and `EINTR`.
    #[inline(always)]
    pub fn consume(&self) -> io::Result<bool> {
        match &self.inner {
            Inner::EventFd(fd) => match fd.read() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e),
            },
            Inner::Pipe(pipe) => Ok(pipe.consume()? > 0),
        }
    }
}

impl AsFd for WakeFd {
    /// The side to poll for readability.
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::EventFd(fd) => fd.as_fd(),
            Inner::Pipe(pipe) => pipe.read_end(),
        }
    }
}

impl AsRawFd for WakeFd {
    /// The side to poll for readability.
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Whether [`FORCE_PIPE_ENV`] asks for the pipe fallback.
fn force_pipe() -> io::Result<bool> {
    Ok(env_switch(FORCE_PIPE_ENV)?.unwrap_or(false))
}

fn eventfd() -> io::Result<EventFd> {
    EventFd::new(0, EventFdFlags::CLOEXEC | EventFdFlags::NONBLOCK)
}

/// Whether an `eventfd2(2)` error means the kernel or sandbox does not offer
/// eventfd, as opposed to a passing shortage.
fn means_unsupported(e: &io::Error) -> bool {
    [
        Errno::NOSYS,
        Errno::INVAL,
        Errno::PERM,
        Errno::ACCESS,
        Errno::NODEV,
    ]
    .iter()
    .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// [`WakeFd::new`] with the cache and the eventfd constructor passed in, so
/// that the fallback can be tested on a kernel that has eventfd.
fn new_with(cache: &AtomicU8, make: impl Fn() -> io::Result<EventFd>) -> io::Result<WakeFd> {
    if cache.load(Ordering::Relaxed) != UNAVAILABLE {
        match make() {
            Ok(fd) => {
                cache.store(AVAILABLE, Ordering::Relaxed);
                return Ok(WakeFd {
                    inner: Inner::EventFd(fd),
                });
            }
            Err(e) if means_unsupported(&e) && cache.load(Ordering::Relaxed) != AVAILABLE => {
                cache.store(UNAVAILABLE, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    WakeFd::with_kind(WakeKind::Pipe)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn errno(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e.raw_os_error())
    }

    #[test]
    fn unsupported_eventfd_falls_back_to_a_pipe_and_is_asked_only_once() {
        let cache = AtomicU8::new(UNKNOWN);
        let calls = Cell::new(0);
        let failing = || {
            calls.set(calls.get() + 1);
            Err(errno(Errno::NOSYS))
        };
        assert_eq!(new_with(&cache, failing).unwrap().kind(), WakeKind::Pipe);
        assert_eq!(new_with(&cache, failing).unwrap().kind(), WakeKind::Pipe);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn running_out_of_descriptors_is_an_error_not_a_fallback() {
        let cache = AtomicU8::new(UNKNOWN);
        let err = new_with(&cache, || Err(errno(Errno::MFILE))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::MFILE.raw_os_error()));
        assert_eq!(cache.load(Ordering::Relaxed), UNKNOWN);
        assert_eq!(new_with(&cache, eventfd).unwrap().kind(), WakeKind::EventFd);
        assert_eq!(cache.load(Ordering::Relaxed), AVAILABLE);
    }

    #[test]
    fn an_eventfd_that_worked_once_is_not_abandoned_on_a_later_refusal() {
        let cache = AtomicU8::new(AVAILABLE);
        let err = new_with(&cache, || Err(errno(Errno::PERM))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::PERM.raw_os_error()));
        assert_eq!(cache.load(Ordering::Relaxed), AVAILABLE);
    }
}
