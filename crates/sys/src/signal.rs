//! Signals as a file: `signalfd(2)`, and the signal mask discipline it
//! needs.
//!
//! A signal read from a signalfd must be *blocked*, or the kernel delivers
//! it the old way (a handler, or the default action: for `SIGTERM`, the end
//! of the process) before anything can read it. And it must be blocked in
//! **every thread**: a process-directed signal goes to any one thread that
//! does not block it. The mask is inherited by threads a thread starts, so
//! the way to get this right is to block the signals at the start of
//! `main`, before any other thread exists ([`block`] does that for the
//! calling thread). [`threads_not_blocking`] finds threads that would take
//! the signal.
//!
//! A [`SignalFd`] blocks its signals in the thread that makes it (and
//! remembers which it blocked), and gives the mask back as it was when it
//! is dropped, on that thread: it is not `Send`. Several for the same
//! signal on one thread share the block.
//!
//! After `fork` and `exec` the mask is inherited: a child started by
//! `std::process::Command` gets an empty mask (the standard library resets
//! it before `exec`), but one started otherwise must unblock the signals
//! itself, or it starts deaf to them.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A signal's number, as `libc::SIGTERM` and friends give it.
pub type Signo = i32;

/// One signal read from a [`SignalFd`]: who sent it, and for `SIGCHLD`,
/// which child and how it ended (`struct signalfd_siginfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SigInfo {
    /// The signal.
    pub signo: Signo,
    /// `si_code`: how it was sent (`SI_USER` for `kill`, `CLD_EXITED` for a
    /// child's exit, …).
    pub code: i32,
    /// The sending process (for `SIGCHLD`, the child).
    pub pid: u32,
    /// The sender's real user id.
    pub uid: u32,
    /// For `SIGCHLD`: the exit status or the signal that ended the child.
    pub status: i32,
}

thread_local! {
    /// Per signal: how many `SignalFd`s of this thread want it blocked, and
    /// whether it was blocked before the first of them.
    static BLOCKED: RefCell<HashMap<Signo, (usize, bool)>> = RefCell::new(HashMap::new());
}

/// A signalfd for a set of signals, which it keeps blocked in its thread
/// while it lives.
///
/// # Examples
///
/// ```
/// use rouse_sys::signal::SignalFd;
///
/// // Made on this (the only) thread, it blocks SIGUSR2 here: the signal
/// // is then read, not delivered.
/// let sfd = SignalFd::new(&[libc::SIGUSR2])?;
/// // SAFETY: kill(2) with our own pid and a signal now blocked.
/// unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
/// let info = sfd.read()?.expect("pending");
/// assert_eq!(info.signo, libc::SIGUSR2);
/// assert_eq!(sfd.read()?, None);
/// # std::io::Result::Ok(())
/// ```
pub struct SignalFd {
    fd: OwnedFd,
    signals: Vec<Signo>,
    /// Not `Send`: the block it holds is its thread's.
    _thread: PhantomData<*const ()>,
}

impl SignalFd {
    /// Blocks `signals` in the calling thread and makes a non-blocking,
    /// close-on-exec signalfd that reads them.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an empty set, a number that is no
    /// signal, or `SIGKILL` / `SIGSTOP` (which cannot be caught); the OS
    /// error of `signalfd(2)` (`EMFILE`). Nothing stays blocked on error.
    pub fn new(signals: &[Signo]) -> io::Result<SignalFd> {
        if signals.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a signalfd needs at least one signal",
            ));
        }
        for &s in signals {
            check_signo(s)?;
        }
        let set = sigset(signals)?;
        // SAFETY: `set` is a valid, initialized sigset; -1 asks for a new fd.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut signals = signals.to_vec();
        signals.sort_unstable();
        signals.dedup();
        hold(&signals)?;
        Ok(SignalFd {
            fd,
            signals,
            _thread: PhantomData,
        })
    }

    /// Reads one pending signal, or `None` if none is pending.
    ///
    /// # Errors
    ///
    /// The OS error of `read(2)` other than `EAGAIN` and `EINTR`.
    pub fn read(&self) -> io::Result<Option<SigInfo>> {
        // SAFETY: signalfd_siginfo is plain integers; all zeroes is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: the buffer is `size` bytes of a plain struct, writable.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&raw mut info).cast::<libc::c_void>(),
                    size,
                )
            };
            if n == size as isize {
                return Ok(Some(SigInfo {
                    signo: info.ssi_signo as i32,
                    code: info.ssi_code,
                    pid: info.ssi_pid,
                    uid: info.ssi_uid,
                    status: info.ssi_status,
                }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }

    /// The signals it reads.
    pub fn signals(&self) -> &[Signo] {
        &self.signals
    }
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        release(&self.signals);
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::fmt::Debug for SignalFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalFd")
            .field("fd", &self.fd.as_raw_fd())
            .field("signals", &self.signals)
            .finish()
    }
}

/// Blocks `signals` in the calling thread, for good: what a program calls
/// at the start of `main`, before it starts any thread, so that every
/// thread inherits the block and none takes the signals from the loop that
/// reads them.
///
/// # Errors
///
/// As [`SignalFd::new`], for bad signal numbers.
pub fn block(signals: &[Signo]) -> io::Result<()> {
    for &s in signals {
        check_signo(s)?;
    }
    mask(libc::SIG_BLOCK, signals)
}

/// Whether `signal` is blocked in the calling thread.
pub fn is_blocked(signal: Signo) -> io::Result<bool> {
    // SAFETY: an empty set to fill; a null new set only queries.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut old);
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(libc::sigismember(&old, signal) == 1)
    }
}

/// The threads of this process (by thread id) that do not block `signal`,
/// and so may take it from a signalfd: read from `/proc/self/task`.
///
/// # Errors
///
/// If `/proc` cannot be read.
pub fn threads_not_blocking(signal: Signo) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A thread may exit while this reads: skip it.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .unwrap_or(0);
        if blocked & (1u64 << (signal - 1)) == 0 {
            out.push(tid);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn check_signo(s: Signo) -> io::Result<()> {
    if !(1..=64).contains(&s) || s == libc::SIGKILL || s == libc::SIGSTOP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "signal {s} cannot be read from a signalfd (no such signal, or SIGKILL/SIGSTOP)"
            ),
        ));
    }
    Ok(())
}

fn sigset(signals: &[Signo]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigemptyset initializes the set; sigaddset adds valid numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            if libc::sigaddset(&mut set, s) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(set)
    }
}

fn mask(how: libc::c_int, signals: &[Signo]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: a valid set; the old set is not asked for.
    let r = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Blocks `signals` in this thread for one more `SignalFd`, noting which
/// were not blocked before the first.
fn hold(signals: &[Signo]) -> io::Result<()> {
    let mut newly = Vec::new();
    for &s in signals {
        let held = BLOCKED.with(|b| b.borrow().get(&s).map_or(0, |e| e.0));
        if held == 0 {
            let before = is_blocked(s)?;
            BLOCKED.with(|b| b.borrow_mut().insert(s, (0, before)));
            if !before {
                newly.push(s);
            }
        }
    }
    mask(libc::SIG_BLOCK, &newly)?;
    BLOCKED.with(|b| {
        let mut b = b.borrow_mut();
        for &s in signals {
            b.get_mut(&s).expect("noted above").0 += 1;
        }
    });
    Ok(())
}

/// One `SignalFd` fewer wants `signals`: those blocked for the first are
/// unblocked when the last goes.
fn release(signals: &[Signo]) {
    let mut unblock = Vec::new();
    BLOCKED.with(|b| {
        let mut b = b.borrow_mut();
        for &s in signals {
            if let Some(e) = b.get_mut(&s) {
                e.0 -= 1;
                if e.0 == 0 {
                    if !e.1 {
                        unblock.push(s);
                    }
                    b.remove(&s);
                }
            }
        }
    });
    let _ = mask(libc::SIG_UNBLOCK, &unblock);
}
