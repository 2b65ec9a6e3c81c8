//! A Linux poller with epoll and io_uring backends, and wakers whose wakes
//! cost no system call while the loop is awake.
//!
//! * [`Poller`]: register fds with a [`Token`] and an [`Interest`], then
//!   [`poll`](Poller::poll) for [`Events`]. Level-triggered, and the same on
//!   both backends through an fd's whole life (closed without deregister,
//!   number reused, `dup`, poller moved between threads, `fork`: see
//!   [`Poller`]); [`Poller::new`] uses epoll, and io_uring is chosen with
//!   [`Backend::IoUring`].
//! * [`Waker`]: makes a blocked (or the next) poll return, from any thread.
//!   Wakes are coalesced by a small protocol, model-checked with loom: a wake
//!   while the poller is awake costs nothing, and many wakes during one
//!   blocked wait cost one system call.
//! * [`Stats`]: wakes requested, wake system calls made, polls, and polls
//!   that blocked, cheap enough to be always on.
//!
//! # Examples
//!
//! A loop that serves a socket and is woken from another thread:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use rouse_poll::{Events, Interest, Poller, Token, Waker};
//!
//! const SOCKET: Token = Token(0);
//! const WAKE: Token = Token(1);
//!
//! let poller = Poller::new()?;
//! let waker = Waker::new(&poller, WAKE)?;
//! let (mut sock, mut peer) = UnixStream::pair()?;
//! sock.set_nonblocking(true)?;
//! poller.register(&sock, SOCKET, Interest::READABLE)?;
//!
//! let worker = std::thread::spawn(move || -> std::io::Result<()> {
//!     peer.write_all(b"hello")?;
//!     waker.wake()
//! });
//!
//! let mut events = Events::with_capacity(16);
//! let (mut got_data, mut woken) = (false, false);
//! while !(got_data && woken) {
//!     poller.poll(&mut events, None)?;
//!     for ev in &events {
//!         match ev.token() {
//!             SOCKET => {
//!                 let mut buf = [0; 16];
//!                 match sock.read(&mut buf)? {
//!                     // The peer has gone, after its write: level-triggered,
//!                     // end-of-file is reported until the socket goes.
//!                     0 => poller.deregister(&sock)?,
//!                     n => {
//!                         assert_eq!(&buf[..n], b"hello");
//!                         got_data = true;
//!                     }
//!                 }
//!             }
//!             WAKE => woken = true,
//!             _ => unreachable!(),
//!         }
//!     }
//! }
//! worker.join().unwrap()?;
//! assert!(poller.stats().wake_syscalls <= 1);
//! # std::io::Result::Ok(())
//! ```
//!
//! # Environment
//!
//! * `ROUSE_BACKEND=epoll|io_uring|auto` sets the backend of [`Poller::new`];
//! * `ROUSE_URING_WAKE=eventfd|msg_ring` picks the io_uring wake path;
//! * `ROUSE_FORCE_PIPE=1` makes the wake fd a pipe instead of an eventfd.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(target_os = "linux"))]
compile_error!("rouse-poll supports Linux only: it is built on epoll, eventfd and io_uring");

pub mod aio;
mod event;
pub mod foreign;
#[cfg(all(any(test, feature = "fuzzing"), not(loom)))]
#[doc(hidden)]
pub mod fuzz;
pub mod op;
mod poller;
mod state;
#[allow(unsafe_code)]
mod sys;
mod waker;

pub use event::{Event, Events, Interest, Token};
pub use poller::{
    BACKEND_ENV, Backend, Forked, Poller, PollerBuilder, Stats, URING_WAKE_ENV, UringWake,
};
pub use sys::features::PRETEND_MISSING_ENV as URING_PRETEND_MISSING_ENV;
pub use sys::uring::URING_EPOLL_WAIT_ENV;
pub use waker::Waker;

/// The `io-uring` crate this one is built on, for rings of the caller's own
/// (see `rouse_loop`'s `watch_ring`).
pub use io_uring;

/// Atomics that loom can model-check.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic;
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic;
}

/// The examples of this crate's README, run as doc-tests so that they stay
/// true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
