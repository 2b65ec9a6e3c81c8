//! An event loop on [`rouse_poll`]: `run_in_loop` / `queue_in_loop` with
//! pending functors, I/O callbacks, timers, and worker-pool completions.
//!
//! * [`EventLoop`] runs iterations: wait for I/O → I/O callbacks → pending
//!   functors → expired timers. Every callback gets `&mut` [`Ctx`], through
//!   which it can add and remove sources (itself included), add and cancel
//!   timers (its own repeating timer included), queue functors and quit.
//! * [`LoopHandle`] (`Send + Sync + Clone`) reaches the loop from any thread:
//!   [`run_in_loop`](LoopHandle::run_in_loop),
//!   [`queue_in_loop`](LoopHandle::queue_in_loop), timers, quit. A handle that
//!   outlives its loop gets [`Error::LoopGone`], never a hang.
//! * [`WorkerPool`] runs blocking work on threads and delivers each result
//!   on the loop thread.
//! * **Operations** the kernel completes ([`Ctx::read_at`],
//!   [`Ctx::write_at`], [`Ctx::accept`], [`Ctx::recv`], [`Ctx::send`], …):
//!   the buffer is handed over and handed back in the callback; on
//!   io_uring the kernel does the work, on epoll the loop does (readiness
//!   plus the system call, a thread pool for files), with the same
//!   callbacks.
//! * **Signals** through a signalfd ([`Ctx::add_signals`]; see [`signals`]
//!   for the mask discipline) and children through pidfds
//!   ([`Ctx::watch_child`]).
//! * **Async tasks** ([`Ctx::spawn_local`], [`LoopHandle::spawn`], and the
//!   futures of [`task`]), woken through the loop's own list or its
//!   functor queue.
//! * **Completions from outside** through an eventfd: a ring the program
//!   owns ([`Ctx::watch_ring`]) and Linux AIO ([`Ctx::watch_aio`]); see
//!   [`bridges`].
//!
//! **A loop with work never blocks**: whatever queues a functor (another
//! thread, a functor, an I/O or timer callback, or the loop's own thread
//! before `run`), the loop does not sleep while it is pending. A functor
//! queued from another thread wakes the loop only if it is the first since
//! the loop last took the queue, and that wake costs a system call only if
//! the loop is blocked. I/O readiness is level-triggered.
//!
//! **Only what crosses threads must be `Send`.** Callbacks added on the
//! loop thread through [`Ctx`] may share `Rc<RefCell<_>>` state; the loop
//! is then bound to its thread, as it is not `Send`. Functors and timers
//! sent through a [`LoopHandle`] must be `Send`. See [`EventLoop`] for an
//! example.
//!
//! **Timers keep their promises.** A timer never fires early; equal
//! deadlines fire in the order the timers were added; a deadline past what
//! `Instant` holds means never; and a cancel, from the loop thread or any
//! other, returns exactly whether the timer was stopped before it ran: one
//! that returned `true` never runs, whatever the loop is doing.
//!
//! Runnable programs in `examples/`: `queue_in_loop` (threads handing work
//! to the loop, with its throughput and wake counts), `worker_pool`
//! (blocking jobs whose completions coalesce into few wakes), `echo` (a TCP
//! echo server with a built-in load), `echo_group` (the same server on a
//! group of loops, by handoff or `SO_REUSEPORT`; both take `--completions`
//! for the server written with operations), `read_file` (random file reads
//! on the loop: the kernel's on io_uring, a pool's on epoll, beside a
//! `WorkerPool`), `aio_read` and `foreign_ring` (file reads completing on
//! the loop through Linux AIO and through a ring of the program's own),
//! `daemon` (async tasks serving TCP, stopped cleanly by `SIGTERM`), and
//! `memory` (what queued functors and pending timers
//! cost, and what comes back), each run with
//! `cargo run --release -p rouse-loop --example NAME`; each prints its
//! arguments with `--help`.
//!
//! # Examples
//!
//! An echo of one socket pair, a timer, and a functor from another thread:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//! use rouse_loop::{Ctx, EventLoop, Interest};
//!
//! let mut lp = EventLoop::new()?;
//! let (server, mut client) = UnixStream::pair()?;
//! server.set_nonblocking(true)?;
//!
//! lp.add_source(server, Interest::READABLE, |sock, ready, _cx| {
//!     if ready.readable {
//!         let mut buf = [0; 64];
//!         let n = sock.read(&mut buf).unwrap();
//!         sock.write_all(&buf[..n]).unwrap();
//!     }
//! })?;
//! lp.run_after(Duration::from_secs(10), |_cx| panic!("the test took too long"));
//!
//! let handle = lp.handle();
//! let t = std::thread::spawn(move || {
//!     client.write_all(b"ping").unwrap();
//!     let mut buf = [0; 4];
//!     client.read_exact(&mut buf).unwrap();
//!     assert_eq!(&buf, b"ping");
//!     handle.queue_in_loop(|cx: &mut Ctx| cx.quit())
//! });
//! lp.run()?;
//! t.join().unwrap()?;
//! # Ok::<(), rouse_loop::Error>(())
//! ```
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "rouse-loop supports Linux only: it is built on rouse-poll (epoll, eventfd, io_uring)"
);

pub mod bridges;
mod error;
mod event_loop;
mod functors;
mod group;
mod handle;
mod ops;
mod pool;
mod queue;
pub mod signals;
mod sources;
pub mod task;
mod timer;

pub use error::Error;
pub use event_loop::{Ctx, EventLoop};
pub use group::{LoopGroup, LoopGroupBuilder};
pub use handle::LoopHandle;
pub use ops::OpId;
pub use pool::WorkerPool;
pub use rouse_poll::op::SharedFd;
pub use rouse_poll::{Backend, Forked, Interest, Poller, Stats};
pub use rouse_sys::signal::{SigInfo, Signo};
pub use sources::{Ready, SourceId};
pub use task::{JoinError, JoinHandle};
pub use timer::TimerId;

/// The examples of this crate's README, run as doc-tests so that they stay
/// true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Locks and atomics that loom can model-check.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::{Mutex, MutexGuard, atomic};
    #[cfg(not(loom))]
    pub(crate) use std::sync::{Mutex, MutexGuard, atomic};
}
