//! eventfd and pipe wake-up primitives for Linux, with the kernel's exact
//! counter semantics.
//!
//! This is the bottom layer of rouse. It offers:
//!
//! * [`EventFd`]: an owned `eventfd(2)` in normal or semaphore mode, blocking
//!   or not, that behaves exactly as the kernel does (the counter's ceiling,
//!   `WouldBlock`, `InvalidInput`), with `EINTR` retried;
//! * [`Pipe`]: a non-blocking self-pipe used as a wake-up channel;
//! * [`WakeFd`]: the wake-up fd the upper layers poll: an eventfd, or a pipe
//!   where the kernel has no eventfd ([`WakeKind`] says which);
//! * [`counter::Model`]: a pure model of the eventfd counter, the oracle that
//!   property tests and fuzz targets hold the real `EventFd` against.
//!
//! Every system call goes through [`rustix`]; this crate has no `unsafe` code.
//!
//! # Examples
//!
//! Wake a thread blocked in `read(2)`:
//!
//! ```
//! use std::sync::Arc;
//! use rouse_sys::{EventFd, EventFdFlags};
//!
//! let fd = Arc::new(EventFd::new(0, EventFdFlags::CLOEXEC)?);
//! let reader = {
//!     let fd = Arc::clone(&fd);
//!     std::thread::spawn(move || fd.read())
//! };
//! fd.write(7)?;
//! assert_eq!(reader.join().unwrap()?, 7);
//! # std::io::Result::Ok(())
//! ```
//!
//! A wake-up fd, polled for readability:
//!
//! ```
//! use rouse_sys::WakeFd;
//! use rustix::event::{poll, PollFd, PollFlags};
//!
//! let wake = WakeFd::new()?;
//! wake.wake()?;
//! let mut fds = [PollFd::new(&wake, PollFlags::IN)];
//! assert_eq!(poll(&mut fds, None)?, 1);
//! assert!(wake.consume()?);
//! # std::io::Result::Ok(())
//! ```
//!
//! # Environment
//!
//! `ROUSE_FORCE_PIPE=1` makes [`WakeFd::new`] use a pipe, so that a whole
//! program or test suite can run on the fallback. Switches accept the usual
//! spellings of on and off, and refuse anything else ([`env_switch`]).
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(target_os = "linux"))]
compile_error!("rouse-sys supports Linux only: it is built on eventfd and Linux pipes");

pub mod counter;
mod eventfd;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod pipe;
pub mod signal;
mod wake;

pub use eventfd::{AdoptError, EventFd, EventFdFlags};
pub use pipe::Pipe;
pub use wake::{FORCE_PIPE_ENV, WakeFd, WakeKind, env_switch};

/// Runs a system call until it fails with something other than `EINTR`.
#[inline]
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// The examples of this crate's README, run as doc-tests so that they stay
/// true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
