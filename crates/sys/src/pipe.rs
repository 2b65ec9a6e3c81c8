//! A self-pipe used as a wake-up channel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::io::Errno;
use rustix::pipe::PipeFlags;

use crate::retry;

/// A non-blocking, close-on-exec pipe used as a wake-up channel.
///
/// [`wake`](Pipe::wake) writes one byte; a full pipe means a wake-up is
/// already pending, which is not an error. [`consume`](Pipe::consume) reads
/// until the pipe is empty. The read end is the side to poll
/// ([`AsFd`] gives it).
///
/// This is the fallback where `eventfd(2)` is unavailable; [`WakeFd`] picks
/// between the two.
///
/// # Examples
///
/// ```
/// use rouse_sys::Pipe;
///
/// let pipe = Pipe::new()?;
/// pipe.wake()?;
/// pipe.wake()?;
/// assert_eq!(pipe.consume()?, 2);
/// assert_eq!(pipe.consume()?, 0);
/// # std::io::Result::Ok(())
/// ```
///
/// # Implementation notes
///
/// Both ends come from one `pipe2(O_NONBLOCK | O_CLOEXEC)`. A pipe holds
/// `F_GETPIPE_SZ` bytes (64 KiB by default); wakes past that are absorbed.
/// If the read end is gone (it cannot be while the `Pipe` lives), a wake
/// fails with `EPIPE`.
///
/// [`WakeFd`]: crate::WakeFd
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// Creates the pipe with `pipe2(2)`.
    ///
    /// # Errors
    ///
    /// Returns the OS error if `pipe2(2)` fails, e.g. `EMFILE`.
    #[doc(alias = "pipe2")]
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe { read, write })
    }

    /// Writes one byte, unless the pipe is full.
    ///
    /// A full pipe already holds a pending wake-up, so it counts as success.
    ///
    /// # Errors
    ///
    /// Any error of `write(2)` other than `EAGAIN` (which is success) and
    /// `EINTR` (which is retried).
    #[inline]
    pub fn wake(&self) -> io::Result<()> {
        self.try_wake().map(drop)
    }

    /// Writes one byte; `Ok(false)` if the pipe was full.
    #[inline]
    pub(crate) fn try_wake(&self) -> io::Result<bool> {
        match retry(|| rustix::io::write(&self.write, &[1])) {
            Ok(_) => Ok(true),
            Err(Errno::AGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Drains the pipe and returns how many bytes it held.
    ///
    /// Never blocks: it reads until a read comes back short (the pipe held
    /// less than the buffer, so it is now empty), `EAGAIN` or end-of-file.
    /// In the usual case, a few bytes waiting, that is one `read(2)`.
    ///
    /// # Errors
    ///
    /// Any error of `read(2)` other than `EAGAIN` (the end) and `EINTR`
    /// (retried).
    #[inline]
    pub fn consume(&self) -> io::Result<usize> {
        let mut total = 0;
        let mut buf = [0u8; 128];
        loop {
            match retry(|| rustix::io::read(&self.read, &mut buf)) {
                Ok(0) | Err(Errno::AGAIN) => return Ok(total),
                Ok(n) => {
                    total += n;
                    if n < buf.len() {
                        return Ok(total);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The read end: the side to poll for readability.
    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The write end.
    pub fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// How many bytes the pipe holds when full (`F_GETPIPE_SZ`).
    ///
    /// # Errors
    ///
    /// Returns the OS error if `fcntl(2)` fails.
    pub fn capacity(&self) -> io::Result<usize> {
        Ok(rustix::pipe::fcntl_getpipe_size(&self.read)?)
    }
}

impl AsFd for Pipe {
    /// The read end.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl AsRawFd for Pipe {
    /// The read end.
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}
