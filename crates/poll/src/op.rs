//! Operations the kernel completes: reads and writes at an offset, `fsync`,
//! accept, receive, send, connect and close, submitted to a [`Poller`] and
//! reported back as [`Completion`]s beside readiness and wakes.
//!
//! On io_uring each operation is a request of the ring, submitted by the
//! wait that follows (one `io_uring_enter` submits everything queued and
//! waits). On epoll the poller performs it itself: a socket operation is
//! tried at once and, if the socket is not ready, when readiness says it
//! will not block; a file operation (files are always "ready", so a read
//! could stall the loop) runs on a small pool of threads of the poller's
//! own, whose completions come back through the poller's coalesced wake.
//! Either way the same [`Completion`] comes back, and an operation takes
//! effect no earlier than the poll that follows its submission.
//!
//! **No order between operations in flight together** is promised, even on
//! one file, as with every completion-based runtime: on io_uring the kernel
//! completes them as it can, and on epoll file operations run on several
//! threads. Keep one receive and one send in flight per socket (a send
//! that sends less than its buffer is finished by another send), and let a
//! write complete before reading what it wrote. Operations on one socket
//! and direction do run in submission order on epoll; on io_uring two
//! receives waiting on one socket may be woken in either order.
//!
//! **Buffers are handed over and handed back** (the "rent" model): an
//! operation owns its buffer, and its file, until its completion arrives,
//! whatever happens meanwhile (a cancel, the poller dropped), so that the
//! kernel never writes memory that has been freed or reused; the completion
//! gives the buffer back. A multishot receive takes its buffers from a pool
//! the poller owns (a provided-buffer ring on io_uring) and hands each
//! completion's bytes over in a `Vec` of their own, so that the pool's
//! buffer goes back to the kernel at once.
//!
//! [`Poller`]: crate::Poller

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// A file shared with the operations that work on it.
///
/// An operation holds a clone until its completion arrives, so that the
/// file stays open, and its descriptor number cannot be taken by another
/// file, while the kernel may still use it. Cheap to clone.
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use rouse_poll::op::SharedFd;
///
/// let (a, _b) = UnixStream::pair()?;
/// let fd = SharedFd::new(a);
/// let for_an_op = fd.clone();
/// drop(for_an_op);
/// let a: std::os::fd::OwnedFd = fd.try_into_owned().expect("the only clone");
/// drop(a);
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone)]
pub struct SharedFd {
    inner: Arc<FdInner>,
}

struct FdInner {
    fd: OwnedFd,
    /// `O_NONBLOCK` has been set by the epoll path (accept and connect need
    /// it there), so that it is set once per file.
    nonblocking: AtomicBool,
}

impl SharedFd {
    /// Shares `fd` with operations.
    pub fn new(fd: impl Into<OwnedFd>) -> SharedFd {
        SharedFd {
            inner: Arc::new(FdInner {
                fd: fd.into(),
                nonblocking: AtomicBool::new(false),
            }),
        }
    }

    /// The file back, if no other clone (no operation in flight) holds it.
    ///
    /// # Errors
    ///
    /// `self`, unchanged, if another clone exists.
    pub fn try_into_owned(self) -> Result<OwnedFd, SharedFd> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => Ok(inner.fd),
            Err(inner) => Err(SharedFd { inner }),
        }
    }

    /// Sets `O_NONBLOCK` once.
    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        if !self.inner.nonblocking.load(Relaxed) {
            rustix::io::ioctl_fionbio(&self.inner.fd, true)?;
            self.inner.nonblocking.store(true, Relaxed);
        }
        Ok(())
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

impl<T: Into<OwnedFd>> From<T> for SharedFd {
    fn from(fd: T) -> SharedFd {
        SharedFd::new(fd)
    }
}

impl fmt::Debug for SharedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedFd").field(&self.as_raw_fd()).finish()
    }
}

/// An operation for the kernel (or, on epoll, the poller) to complete.
///
/// Each hands back what it was given in its [`Completion`]: the buffer of a
/// read, write, receive or send; the connection of an accept.
#[derive(Debug)]
#[non_exhaustive]
pub enum Op {
    /// `pread(2)` into the buffer's spare capacity (from its length to its
    /// capacity); the completion's buffer has its length grown by what was
    /// read. A read at or past the end of the file reads 0 bytes.
    ReadAt {
        /// The file.
        fd: SharedFd,
        /// Where in the file.
        offset: u64,
        /// Read into `buf[buf.len()..buf.capacity()]`.
        buf: Vec<u8>,
    },
    /// `pread(2)` of `len` bytes into `buf[at..at + len]`, which must be
    /// within the buffer's length (its initialized part); the buffer's
    /// length does not change. For reads into a part of a buffer chosen by
    /// the caller: one aligned for `O_DIRECT`, or a buffer reused in place.
    ReadInto {
        /// The file.
        fd: SharedFd,
        /// Where in the file.
        offset: u64,
        /// Read into `buf[at..at + len]`.
        buf: Vec<u8>,
        /// Where in `buf`.
        at: usize,
        /// How much, at most.
        len: usize,
    },
    /// `pwrite(2)` of the whole buffer; the result is how much was written,
    /// which may be less (write the rest with another `WriteAt`).
    WriteAt {
        /// The file.
        fd: SharedFd,
        /// Where in the file.
        offset: u64,
        /// What to write.
        buf: Vec<u8>,
    },
    /// `fsync(2)`.
    Fsync {
        /// The file.
        fd: SharedFd,
    },
    /// `accept4(2)` of one connection, close-on-exec.
    Accept {
        /// The listening socket.
        fd: SharedFd,
    },
    /// Accepts connection after connection, one completion each (with
    /// [`Completion::more`] set), until cancelled or an error; a single
    /// accept re-armed after each connection where the kernel lacks the
    /// multishot form.
    AcceptMulti {
        /// The listening socket.
        fd: SharedFd,
    },
    /// `recv(2)` into the buffer's spare capacity, as [`Op::ReadAt`]. 0 bytes
    /// is end-of-file.
    Recv {
        /// The socket.
        fd: SharedFd,
        /// Received into `buf[buf.len()..buf.capacity()]`.
        buf: Vec<u8>,
    },
    /// Receives again and again, one completion per chunk of data (with
    /// [`Completion::more`] set), each handing over a `Vec` of the bytes,
    /// until end-of-file (a last completion of 0 bytes), an error, or a
    /// cancel. On io_uring the data lands in a provided-buffer ring of the
    /// poller's; when that is empty the receive is re-armed as buffers come
    /// back, and no data is lost (it waits in the socket).
    RecvMulti {
        /// The socket.
        fd: SharedFd,
    },
    /// `send(2)` of the whole buffer (`MSG_NOSIGNAL`); the result is how much
    /// was sent, which may be less.
    Send {
        /// The socket.
        fd: SharedFd,
        /// What to send.
        buf: Vec<u8>,
    },
    /// `connect(2)`.
    Connect {
        /// The socket.
        fd: SharedFd,
        /// Where to.
        addr: SocketAddr,
    },
    /// `close(2)`; the poller owns the file from the submission on.
    Close {
        /// The file.
        fd: OwnedFd,
    },
}

impl Op {
    /// The operation's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::ReadAt { .. } => "read_at",
            Op::ReadInto { .. } => "read_into",
            Op::WriteAt { .. } => "write_at",
            Op::Fsync { .. } => "fsync",
            Op::Accept { .. } => "accept",
            Op::AcceptMulti { .. } => "accept (multishot)",
            Op::Recv { .. } => "recv",
            Op::RecvMulti { .. } => "recv (multishot)",
            Op::Send { .. } => "send",
            Op::Connect { .. } => "connect",
            Op::Close { .. } => "close",
        }
    }

    /// Whether it works on a regular file (and so runs on the pool on
    /// epoll, where readiness cannot tell when it would block).
    pub(crate) fn is_file_op(&self) -> bool {
        matches!(
            self,
            Op::ReadAt { .. } | Op::ReadInto { .. } | Op::WriteAt { .. } | Op::Fsync { .. }
        )
    }

    /// The shared file it works on.
    pub(crate) fn shared_fd(&self) -> Option<&SharedFd> {
        match self {
            Op::ReadAt { fd, .. }
            | Op::ReadInto { fd, .. }
            | Op::WriteAt { fd, .. }
            | Op::Fsync { fd }
            | Op::Accept { fd }
            | Op::AcceptMulti { fd }
            | Op::Recv { fd, .. }
            | Op::RecvMulti { fd }
            | Op::Send { fd, .. }
            | Op::Connect { fd, .. } => Some(fd),
            Op::Close { .. } => None,
        }
    }

    /// The buffer it hands back, if it has one.
    pub(crate) fn into_buf(self) -> Option<Vec<u8>> {
        match self {
            Op::ReadAt { buf, .. }
            | Op::ReadInto { buf, .. }
            | Op::WriteAt { buf, .. }
            | Op::Recv { buf, .. }
            | Op::Send { buf, .. } => Some(buf),
            _ => None,
        }
    }
}

/// Identifies an operation in flight, and its completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The id as a number (unique among the poller's operations in flight;
    /// reused only after the operation has completed for good).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// What an operation hands back.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Nothing: `fsync`, `connect`, `close`, or an accept or multishot
    /// receive that failed or ended.
    Nothing,
    /// The buffer of a read, write, receive or send, whatever the result
    /// (after a read or receive, its length has grown by what was read).
    Buf(Vec<u8>),
    /// A connection an accept took, close-on-exec.
    Accepted(OwnedFd),
    /// The bytes one completion of a multishot receive brought.
    Data(Vec<u8>),
}

/// An operation's result, reported by a poll (see
/// [`Poller::take_completions`](crate::Poller::take_completions)).
#[derive(Debug)]
pub struct Completion {
    pub(crate) id: OpId,
    pub(crate) result: io::Result<usize>,
    pub(crate) more: bool,
    pub(crate) output: Output,
}

impl Completion {
    /// The operation this completes.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// Whether more completions of the same (multishot) operation will
    /// follow: `false` for the last one, and for every single-shot one.
    pub fn more(&self) -> bool {
        self.more
    }

    /// The result: bytes read, written, received or sent; 0 otherwise. A
    /// cancelled operation that was stopped before it took effect fails with
    /// `ECANCELED` ([`io::ErrorKind::Other`], raw OS error 125).
    pub fn result(&self) -> &io::Result<usize> {
        &self.result
    }

    /// Takes the result and what the operation hands back.
    pub fn into_parts(self) -> (io::Result<usize>, Output) {
        (self.result, self.output)
    }
}

/// A hasher for maps keyed by operation ids ([`OpId`], which count up):
/// one multiplication (Fibonacci hashing), where the standard hasher's
/// SipHash would cost more than the rest of an operation's bookkeeping.
/// Ids are made by the poller, not chosen by a peer, so they need no
/// defence against chosen keys.
///
/// ```
/// use std::collections::HashMap;
/// use std::hash::BuildHasherDefault;
/// use rouse_poll::op::{IdHasher, OpId};
///
/// let mut callbacks: HashMap<OpId, &str, BuildHasherDefault<IdHasher>> = HashMap::default();
/// # let _ = &mut callbacks;
/// ```
pub type IdHasher = crate::sys::ops::IdHasher;

/// The error of an operation cancelled before it took effect.
pub(crate) fn cancelled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}
