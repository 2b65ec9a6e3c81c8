//! Signals and child processes on the loop: a `signalfd` source, and a
//! `pidfd` per child.
//!
//! # The mask discipline
//!
//! A signal read from a signalfd must be blocked in **every** thread of the
//! process: a process-directed signal is delivered to any one thread that
//! does not block it, and a `SIGTERM` delivered that way ends the process
//! before the loop reads it. Threads inherit the mask of the thread that
//! starts them, so block the signals at the start of `main`, before any
//! thread is started ([`rouse_sys::signal::block`]):
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     rouse_sys::signal::block(&[libc::SIGTERM, libc::SIGINT])?;
//!     // … then start threads, worker pools, loop groups …
//!     let mut lp = rouse_loop::EventLoop::new()?;
//!     lp.add_signals(&[libc::SIGTERM, libc::SIGINT], |_info, cx| cx.quit())?;
//!     lp.run()
//! }
//! ```
//!
//! [`Ctx::add_signals`] blocks the signals on the loop thread itself, and
//! refuses, with the thread ids, if another thread of the process does not
//! block them. Removing the source, or dropping the loop, gives the loop
//! thread's mask back as it was.
//!
//! **Two loops** watching the same signal: a signal sent to the process is
//! read by one of them (whichever reads first), not by both; watch it on
//! one loop and pass it on with [`LoopHandle`](crate::LoopHandle)s. A
//! signal sent to one thread (`pthread_kill`, `tgkill`) is read by that
//! thread's loop.
//!
//! **Signals collapse**: a standard signal sent again while it is pending is
//! one signal. So a `SIGCHLD` callback must reap every child that has
//! exited (`waitpid(-1, WNOHANG)` until it returns 0), not one per signal;
//! or watch each child by itself with [`Ctx::watch_child`], which does not
//! depend on signals at all.
//!
//! **After `fork` and `exec`** the mask is inherited. A child started with
//! `std::process::Command` starts with an empty mask (the standard library
//! resets it before `exec`); one started another way must unblock the
//! signals itself.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use rouse_poll::Interest;
use rouse_sys::signal::{SigInfo, SignalFd, Signo, threads_not_blocking};

use crate::{Ctx, SourceId};

impl Ctx {
    /// Calls `on_signal` on the loop thread for each of `signals` that
    /// arrives, through a `signalfd`: blocks them on the loop thread, and
    /// gives the mask back when the source is removed
    /// ([`remove_source`](Ctx::remove_source) with the id returned) or the
    /// loop is dropped. See the [module docs](crate::signals) for the mask
    /// discipline.
    ///
    /// # Errors
    ///
    /// * [`io::ErrorKind::InvalidInput`] if another thread of the process
    ///   does not block one of `signals` (it would take them from the loop):
    ///   the message names the signal and the threads; block the signals
    ///   at the start of `main`, before starting threads;
    /// * [`io::ErrorKind::InvalidInput`] for no signal, a number that is no
    ///   signal, or `SIGKILL` / `SIGSTOP`;
    /// * the OS error of `signalfd(2)` or of the registration.
    ///
    /// Nothing stays blocked on error.
    pub fn add_signals(
        &mut self,
        signals: &[Signo],
        mut on_signal: impl FnMut(SigInfo, &mut Ctx) + 'static,
    ) -> io::Result<SourceId> {
        let sfd = SignalFd::new(signals)?;
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        for &s in sfd.signals() {
            let others: Vec<i32> = threads_not_blocking(s)?
                .into_iter()
                .filter(|t| *t != me)
                .collect();
            if !others.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "signal {s} is not blocked in thread(s) {others:?} of this process, which \
                         would take it from the loop: block it at the start of main, before \
                         starting threads (rouse_sys::signal::block)"
                    ),
                ));
            }
        }
        self.add_source(sfd, Interest::READABLE, move |sfd, _ready, cx| {
            // Every signal pending, each once.
            while let Ok(Some(info)) = sfd.read() {
                on_signal(info, cx);
            }
        })
    }

    /// Calls `on_exit` on the loop thread once the child process `pid` has
    /// ended, with its exit status (it is reaped: do not wait for it
    /// elsewhere). Through a `pidfd` (Linux 5.3), so it needs no signal and
    /// no mask, and many children ending at once are each reported.
    ///
    /// # Errors
    ///
    /// The OS error of `pidfd_open(2)` (`ESRCH` for no such process, which
    /// includes one already reaped; `ENOSYS` before Linux 5.3).
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_loop::EventLoop;
    ///
    /// let mut lp = EventLoop::new()?;
    /// let child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn()?;
    /// lp.watch_child(child.id(), |status, cx| {
    ///     assert_eq!(status.unwrap().code(), Some(3));
    ///     cx.quit();
    /// })?;
    /// lp.run()?;
    /// # std::io::Result::Ok(())
    /// ```
    pub fn watch_child(
        &mut self,
        pid: u32,
        on_exit: impl FnOnce(io::Result<ExitStatus>, &mut Ctx) + 'static,
    ) -> io::Result<SourceId> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such pid"))?;
        let fd: OwnedFd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK)?;
        let mut on_exit = Some(on_exit);
        self.add_source(fd, Interest::READABLE, move |fd, _ready, cx| {
            use rustix::process::{WaitId, WaitIdOptions, waitid};
            let status = match waitid(
                WaitId::PidFd(std::os::fd::AsFd::as_fd(fd)),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                // Readable, but not yet reapable: next time.
                Ok(None) => return,
                Ok(Some(s)) => Ok(exit_status(&s)),
                Err(e) => Err(io::Error::from(e)),
            };
            if let Some(me) = cx.current_source() {
                let _ = cx.remove_source(me);
            }
            if let Some(f) = on_exit.take() {
                f(status, cx);
            }
        })
    }
}

/// A `waitid` status as the `wait(2)` status `ExitStatus` is made of.
fn exit_status(s: &rustix::process::WaitIdStatus) -> ExitStatus {
    if let Some(code) = s.exit_status() {
        ExitStatus::from_raw((code & 0xff) << 8)
    } else if let Some(sig) = s.terminating_signal() {
        ExitStatus::from_raw(sig & 0x7f)
    } else {
        ExitStatus::from_raw(0)
    }
}
