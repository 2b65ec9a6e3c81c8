//! Linux AIO (`io_submit`) with its completions signalled through an
//! eventfd (`IOCB_FLAG_RESFD`), as nginx reads files with `aio on`: the
//! eventfd is what a loop watches, and [`Aio::reap`] collects the
//! completions when it is readable.
//!
//! The pitfalls, as this handles them:
//!
//! * **The eventfd count is a hint.** It says completions may be waiting,
//!   not how many: [`Aio::reap`] collects every one there is, whatever the
//!   count said, and a count the kernel pushed to its ceiling (AIO can push
//!   it to `u64::MAX`, the "overflow" state `rouse_sys::counter::Model`
//!   knows) is read like any other.
//! * **Completions before the watch** are not lost: reap once after the
//!   eventfd is first watched (`Ctx::watch_aio` does).
//! * **Buffers are the kernel's until their completion.** A request owns
//!   its buffer and a clone of its file until [`Aio::reap`] hands them back;
//!   dropping the context cancels what it can and waits for the rest
//!   (`io_destroy`) before anything is freed.
//!
//! AIO reads a file without blocking only with `O_DIRECT` (a buffered read
//! is done inside `io_submit`), and its buffers must then be aligned:
//! [`Aio::read`] reads into a range of the buffer the caller chooses.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rouse_sys::{EventFd, EventFdFlags};

use crate::op::SharedFd;

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_CMD_FSYNC: u16 = 2;
const IOCB_FLAG_RESFD: u32 = 1;

/// `struct iocb` from `<linux/aio_abi.h>` (little-endian field order).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// A request in flight: what it owns until its completion.
struct InFlight {
    _fd: SharedFd,
    buf: Vec<u8>,
    /// The `iocb` the kernel was given (it may read it until completion).
    _iocb: Box<Iocb>,
}

/// One completed request: its key, result, and buffer handed back.
#[derive(Debug)]
pub struct AioCompletion {
    /// The key [`Aio::read`] (or `write`, `fsync`) returned.
    pub key: u64,
    /// Bytes read or written, or the error.
    pub result: io::Result<usize>,
    /// The buffer, as given (a read filled its range).
    pub buf: Vec<u8>,
}

/// An AIO context whose completions are signalled through an eventfd.
pub struct Aio {
    ctx: libc::c_ulong,
    efd: EventFd,
    in_flight: HashMap<u64, InFlight>,
    next: u64,
    max: usize,
}

impl Aio {
    /// Sets up a context for up to `max` requests in flight, and its
    /// eventfd (non-blocking, close-on-exec).
    ///
    /// # Errors
    ///
    /// The OS error of `io_setup(2)` (`EAGAIN` past `fs.aio-max-nr`,
    /// `ENOSYS` without AIO, `EPERM` under a seccomp filter) or of
    /// `eventfd(2)`.
    pub fn new(max: u32) -> io::Result<Aio> {
        let efd = EventFd::new(0, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC)?;
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context id into `ctx`, which
        // lives for the call.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, max as libc::c_long, &mut ctx) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Aio {
            ctx,
            efd,
            in_flight: HashMap::new(),
            next: 0,
            max: max as usize,
        })
    }

    /// The eventfd the kernel signals on each completion: watch it for
    /// readability.
    pub fn eventfd(&self) -> &EventFd {
        &self.efd
    }

    /// Requests in flight (submitted, not yet reaped).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Submits a read of `len` bytes of `fd` at `offset` into
    /// `buf[at..at + len]` (within the buffer's length); returns its key.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a range outside the buffer;
    /// [`io::ErrorKind::WouldBlock`] with `max` requests in flight; the OS
    /// error of `io_submit(2)`. On error the request is not in flight (the
    /// buffer is dropped).
    pub fn read(
        &mut self,
        fd: &SharedFd,
        offset: u64,
        buf: Vec<u8>,
        at: usize,
        len: usize,
    ) -> io::Result<u64> {
        if at.checked_add(len).is_none_or(|end| end > buf.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "aio read: {at}..{at}+{len} is outside the buffer's {} bytes",
                    buf.len()
                ),
            ));
        }
        self.submit(fd, IOCB_CMD_PREAD, offset, buf, at, len)
    }

    /// Submits a write of all of `buf` to `fd` at `offset`; returns its key.
    ///
    /// # Errors
    ///
    /// As [`read`](Aio::read).
    pub fn write(&mut self, fd: &SharedFd, offset: u64, buf: Vec<u8>) -> io::Result<u64> {
        let len = buf.len();
        self.submit(fd, IOCB_CMD_PWRITE, offset, buf, 0, len)
    }

    /// Submits an `fsync`; returns its key.
    ///
    /// # Errors
    ///
    /// As [`read`](Aio::read) (many file systems refuse AIO fsync with
    /// `EINVAL`).
    pub fn fsync(&mut self, fd: &SharedFd) -> io::Result<u64> {
        self.submit(fd, IOCB_CMD_FSYNC, 0, Vec::new(), 0, 0)
    }

    fn submit(
        &mut self,
        fd: &SharedFd,
        opcode: u16,
        offset: u64,
        mut buf: Vec<u8>,
        at: usize,
        len: usize,
    ) -> io::Result<u64> {
        if self.in_flight.len() >= self.max {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} AIO requests in flight, the context's most", self.max),
            ));
        }
        self.next += 1;
        let key = self.next;
        let addr = if len == 0 {
            0
        } else {
            buf[at..].as_mut_ptr() as u64
        };
        let mut iocb = Box::new(Iocb {
            aio_data: key,
            aio_lio_opcode: opcode,
            aio_fildes: fd.as_raw_fd() as u32,
            aio_buf: addr,
            aio_nbytes: len as u64,
            aio_offset: offset as i64,
            aio_flags: IOCB_FLAG_RESFD,
            aio_resfd: self.efd.as_raw_fd() as u32,
            ..Iocb::default()
        });
        let mut list = [&raw mut *iocb];
        // SAFETY: one valid iocb, which lives (boxed, in `in_flight`) until
        // its completion is reaped or the context is destroyed; it names a
        // buffer range inside `buf` (checked by the caller), which is kept
        // with it and whose heap memory does not move.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.ctx,
                1 as libc::c_long,
                list.as_mut_ptr(),
            )
        };
        if r != 1 {
            let e = if r < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::other("io_submit took no request")
            };
            return Err(e);
        }
        self.in_flight.insert(
            key,
            InFlight {
                _fd: fd.clone(),
                buf,
                _iocb: iocb,
            },
        );
        Ok(key)
    }

    /// Collects every completion there is now (never waits), whatever the
    /// eventfd's count said, and resets the eventfd.
    ///
    /// # Errors
    ///
    /// The OS error of `io_getevents(2)`.
    pub fn reap(&mut self) -> io::Result<Vec<AioCompletion>> {
        // Read first, collect after: a completion after the read signals
        // the eventfd again, so none is left unannounced.
        let _ = self.efd.read();
        let mut out = Vec::new();
        let mut events = [IoEvent::default(); 64];
        loop {
            let mut zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `events` has room for 64; a zero timeout never waits.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    0 as libc::c_long,
                    events.len() as libc::c_long,
                    events.as_mut_ptr(),
                    &mut zero,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                let Some(done) = self.in_flight.remove(&ev.data) else {
                    continue;
                };
                let result = if ev.res < 0 {
                    Err(io::Error::from_raw_os_error(-ev.res as i32))
                } else {
                    Ok(ev.res as usize)
                };
                out.push(AioCompletion {
                    key: ev.data,
                    result,
                    buf: done.buf,
                });
            }
            if (n as usize) < events.len() {
                return Ok(out);
            }
        }
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        // Cancels what it can and waits for the rest: after it returns the
        // kernel writes no buffer of ours.
        // SAFETY: our context, destroyed once.
        let r = unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
        if r != 0 {
            // The kernel may still use the requests: leak them rather than
            // free memory it may write.
            for (_, f) in self.in_flight.drain() {
                std::mem::forget(f);
            }
        }
    }
}

impl AsFd for Aio {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}

impl std::fmt::Debug for Aio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aio")
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}
