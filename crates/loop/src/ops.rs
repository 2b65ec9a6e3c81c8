//! Operations: reads and writes at an offset, `fsync`, accept, receive,
//! send, connect and close, whose results come back as callbacks on the
//! loop thread. The poller performs them (the kernel itself on io_uring; on
//! epoll, readiness plus the plain system call for sockets, and a pool of
//! threads for files), and the same callback runs either way.
//!
//! Buffers are handed over and handed back: an operation owns its buffer
//! (and a clone of its file's [`SharedFd`]) until its completion, and the
//! callback gets the buffer back. So the kernel never writes memory that
//! has been freed, whatever happens meanwhile: a cancel, or the loop being
//! dropped (the poller then cancels what is in flight and waits for the
//! kernel to let go of it).

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use rouse_poll::op::{self, Completion, Op, Output, SharedFd};

use crate::Ctx;

/// Identifies an operation submitted through [`Ctx`], for
/// [`Ctx::cancel_op`].
///
/// Unique in its loop: ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(op::OpId);

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<op::IdHasher>>;

type BufDone = Box<dyn FnOnce(io::Result<usize>, Vec<u8>, &mut Ctx)>;
type UnitDone = Box<dyn FnOnce(io::Result<()>, &mut Ctx)>;
type OnConn = Box<dyn FnMut(io::Result<OwnedFd>, &mut Ctx)>;
type OnData = Box<dyn FnMut(io::Result<Vec<u8>>, &mut Ctx)>;

/// What runs when an operation completes.
enum Then {
    /// A read or a receive: the bytes, and the buffer back.
    Buf(BufDone),
    /// A write or a send of a whole buffer, continued after a partial one.
    All {
        fd: SharedFd,
        /// The file offset of what is left, or `None` for a socket.
        offset: Option<u64>,
        /// Bytes written so far.
        written: usize,
        done: BufDone,
    },
    Unit(UnitDone),
    Conn(OnConn),
    Data(OnData),
}

/// The loop's operations in flight.
#[derive(Default)]
pub(crate) struct Ops {
    /// By the poller's id of the request now in flight.
    by_poll: IdMap<op::OpId, (OpId, Then)>,
    /// The poller's id of a loop operation whose request is no longer its
    /// first (a write continued after a partial one); an operation's id is
    /// its first request's.
    moved: IdMap<OpId, op::OpId>,
    /// Completions taken from the poller and not yet run (a callback that
    /// panicked leaves the rest here for the next iteration).
    backlog: std::collections::VecDeque<Completion>,
    scratch: Vec<Completion>,
}

impl fmt::Debug for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ops")
            .field("in_flight", &self.by_poll.len())
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// Reads from `file` at `offset` into `buf`'s spare capacity (from its
    /// length to its capacity), then calls `done` on the loop thread with
    /// the number of bytes read (0 at or past the end of the file) and the
    /// buffer, its length grown by that.
    ///
    /// On io_uring the kernel reads while the loop goes on; on epoll, a
    /// thread of the poller's pool does (a read of a regular file can
    /// block, and readiness cannot tell).
    ///
    /// # Errors
    ///
    /// If the operation cannot be submitted (see [`Poller::submit`]); `buf`
    /// is dropped and `done` is not called.
    ///
    /// [`Poller::submit`]: rouse_poll::Poller::submit
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_loop::{EventLoop, SharedFd};
    ///
    /// let path = std::env::temp_dir().join(format!("rouse-read-at-{}", std::process::id()));
    /// std::fs::write(&path, b"hello, world")?;
    /// let file = SharedFd::new(std::fs::File::open(&path)?);
    /// std::fs::remove_file(&path)?;
    ///
    /// let mut lp = EventLoop::new()?;
    /// lp.read_at(&file, 7, Vec::with_capacity(16), |n, buf, cx| {
    ///     assert_eq!(n.unwrap(), 5);
    ///     assert_eq!(buf, b"world");
    ///     cx.quit();
    /// })?;
    /// lp.run()?;
    /// # std::io::Result::Ok(())
    /// ```
    pub fn read_at(
        &mut self,
        file: &SharedFd,
        offset: u64,
        buf: Vec<u8>,
        done: impl FnOnce(io::Result<usize>, Vec<u8>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::ReadAt {
            fd: file.clone(),
            offset,
            buf,
        };
        self.start_op(op, Then::Buf(Box::new(done)))
    }

    /// Reads from `file` at `offset` into `buf[at..at + len]`, a part of
    /// the buffer's length (its initialized bytes) the caller chooses, then
    /// calls `done` with the number of bytes read and the buffer (its length
    /// unchanged). For `O_DIRECT`, whose reads need an aligned address and
    /// length: see the `read_file` example.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at), and [`io::ErrorKind::InvalidInput`] if
    /// the range is outside `buf.len()`.
    pub fn read_into(
        &mut self,
        file: &SharedFd,
        offset: u64,
        buf: Vec<u8>,
        (at, len): (usize, usize),
        done: impl FnOnce(io::Result<usize>, Vec<u8>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::ReadInto {
            fd: file.clone(),
            offset,
            buf,
            at,
            len,
        };
        self.start_op(op, Then::Buf(Box::new(done)))
    }

    /// Writes all of `buf` to `file` at `offset` (a write that writes less
    /// is followed by another, for the rest), then calls `done` with the
    /// number of bytes written, `buf.len()`, and the buffer emptied, its
    /// capacity kept for reuse.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at). A failure after part was written is
    /// passed to `done` as an error that says how much was.
    pub fn write_at(
        &mut self,
        file: &SharedFd,
        offset: u64,
        buf: Vec<u8>,
        done: impl FnOnce(io::Result<usize>, Vec<u8>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::WriteAt {
            fd: file.clone(),
            offset,
            buf,
        };
        let then = Then::All {
            fd: file.clone(),
            offset: Some(offset),
            written: 0,
            done: Box::new(done),
        };
        self.start_op(op, then)
    }

    /// `fsync(2)`s `file`, then calls `done`.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at).
    pub fn fsync(
        &mut self,
        file: &SharedFd,
        done: impl FnOnce(io::Result<()>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        self.start_op(Op::Fsync { fd: file.clone() }, Then::Unit(Box::new(done)))
    }

    /// Accepts connections on `listener`, calling `on_conn` with each
    /// (close-on-exec), until [`cancel_op`](Ctx::cancel_op) or an error:
    /// then `on_conn` is called a last time with the error (`ECANCELED`
    /// after a cancel) and never again. A multishot accept where the kernel
    /// has one.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at). On epoll, the listener is made
    /// non-blocking.
    pub fn accept(
        &mut self,
        listener: &SharedFd,
        on_conn: impl FnMut(io::Result<OwnedFd>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::AcceptMulti {
            fd: listener.clone(),
        };
        self.start_op(op, Then::Conn(Box::new(on_conn)))
    }

    /// Accepts one connection on `listener` (close-on-exec), then calls
    /// `done` with it.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at). On epoll, the listener is made
    /// non-blocking.
    pub fn accept_one(
        &mut self,
        listener: &SharedFd,
        done: impl FnOnce(io::Result<OwnedFd>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::Accept {
            fd: listener.clone(),
        };
        let mut done = Some(done);
        let on_conn = move |conn: io::Result<OwnedFd>, cx: &mut Ctx| {
            if let Some(f) = done.take() {
                f(conn, cx);
            }
        };
        self.start_op(op, Then::Conn(Box::new(on_conn)))
    }

    /// Receives into `buf`'s spare capacity, then calls `done` with the
    /// number of bytes (0: end of file) and the buffer, its length grown
    /// by that.
    ///
    /// Keep one receive in flight per socket: two may complete in either
    /// order.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at).
    pub fn recv(
        &mut self,
        socket: &SharedFd,
        buf: Vec<u8>,
        done: impl FnOnce(io::Result<usize>, Vec<u8>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::Recv {
            fd: socket.clone(),
            buf,
        };
        self.start_op(op, Then::Buf(Box::new(done)))
    }

    /// Receives again and again, calling `on_data` with each chunk of data
    /// as it arrives, in order, until end of file, an error or
    /// [`cancel_op`](Ctx::cancel_op): then `on_data` is called a last time,
    /// with an empty `Vec` at end of file or the error (`ECANCELED` after a
    /// cancel), and never again.
    ///
    /// The buffers come from a pool the loop owns (a provided-buffer ring on
    /// io_uring), and each chunk is handed over in a `Vec` of its own; when
    /// the pool runs dry, the receive is armed again as buffers come back,
    /// and no data is lost.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at).
    pub fn recv_multi(
        &mut self,
        socket: &SharedFd,
        on_data: impl FnMut(io::Result<Vec<u8>>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::RecvMulti { fd: socket.clone() };
        self.start_op(op, Then::Data(Box::new(on_data)))
    }

    /// Sends all of `buf` (a send that sends less is followed by another,
    /// for the rest), then calls `done` with `buf.len()` and the buffer
    /// emptied, its capacity kept for reuse.
    ///
    /// Keep one send in flight per socket, so that the bytes go out in
    /// order.
    ///
    /// # Errors
    ///
    /// As [`write_at`](Ctx::write_at).
    pub fn send(
        &mut self,
        socket: &SharedFd,
        buf: Vec<u8>,
        done: impl FnOnce(io::Result<usize>, Vec<u8>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::Send {
            fd: socket.clone(),
            buf,
        };
        let then = Then::All {
            fd: socket.clone(),
            offset: None,
            written: 0,
            done: Box::new(done),
        };
        self.start_op(op, then)
    }

    /// Connects `socket` to `addr`, then calls `done`.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at). On epoll, the socket is made
    /// non-blocking.
    pub fn connect(
        &mut self,
        socket: &SharedFd,
        addr: SocketAddr,
        done: impl FnOnce(io::Result<()>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        let op = Op::Connect {
            fd: socket.clone(),
            addr,
        };
        self.start_op(op, Then::Unit(Box::new(done)))
    }

    /// Closes `fd`, then calls `done`. (Operations still in flight on the
    /// file hold it open through their [`SharedFd`]s; it is closed when the
    /// last goes.)
    ///
    /// # Errors
    ///
    /// As [`read_at`](Ctx::read_at).
    pub fn close(
        &mut self,
        fd: OwnedFd,
        done: impl FnOnce(io::Result<()>, &mut Ctx) + 'static,
    ) -> io::Result<OpId> {
        self.start_op(Op::Close { fd }, Then::Unit(Box::new(done)))
    }

    /// Asks that operation `id` stop. Its callback still runs, once (for a
    /// repeating one, a last time): with `ECANCELED` if it was stopped
    /// before it took effect, otherwise with its result. An id that has
    /// completed is ignored.
    ///
    /// # Errors
    ///
    /// The poller's (see [`Poller::cancel`](rouse_poll::Poller::cancel)).
    pub fn cancel_op(&mut self, id: OpId) -> io::Result<()> {
        let poll_id = self.ops.moved.get(&id).copied().unwrap_or(id.0);
        match self.ops.by_poll.get(&poll_id) {
            Some((owner, _)) if *owner == id => self.poller.cancel(poll_id),
            _ => Ok(()),
        }
    }

    /// Operations submitted whose callback has not yet run for the last
    /// time.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.by_poll.len()
    }

    fn start_op(&mut self, op: Op, then: Then) -> io::Result<OpId> {
        let poll_id = self.poller.submit(op)?;
        let id = OpId(poll_id);
        self.ops.by_poll.insert(poll_id, (id, then));
        Ok(id)
    }

    /// Runs the callbacks of the completions the poller has reaped. A
    /// callback that panics unwinds from here; the completions after it
    /// wait for the next iteration.
    pub(crate) fn run_completions(&mut self) {
        let mut batch = std::mem::take(&mut self.ops.scratch);
        self.poller.take_completions(&mut batch);
        self.ops.backlog.extend(batch.drain(..));
        self.ops.scratch = batch;
        while let Some(c) = self.ops.backlog.pop_front() {
            self.complete_op(c);
        }
        if self.ops.backlog.capacity() > crate::event_loop::SPARE {
            self.ops.backlog.shrink_to(crate::event_loop::SPARE);
        }
    }

    /// Whether completions wait to be run (so that the loop must not block).
    pub(crate) fn completions_waiting(&self) -> bool {
        !self.ops.backlog.is_empty()
    }

    fn complete_op(&mut self, c: Completion) {
        let poll_id = c.id();
        let more = c.more();
        let Some((id, then)) = self.ops.by_poll.remove(&poll_id) else {
            return;
        };
        let (result, output) = c.into_parts();
        match then {
            Then::Buf(done) => {
                self.forget_moved(id);
                done(result, buf(output), self);
            }
            Then::All {
                fd,
                offset,
                written,
                done,
            } => {
                let mut b = buf(output);
                match result {
                    Ok(n) if n < b.len() && n > 0 => {
                        // Partial: the rest goes next, as the same operation.
                        b.drain(..n);
                        let written = written + n;
                        let op = match offset {
                            Some(at) => Op::WriteAt {
                                fd: fd.clone(),
                                offset: at + n as u64,
                                buf: b,
                            },
                            None => Op::Send {
                                fd: fd.clone(),
                                buf: b,
                            },
                        };
                        let then = Then::All {
                            fd,
                            offset: offset.map(|at| at + n as u64),
                            written,
                            done,
                        };
                        match self.poller.submit(op) {
                            Ok(next) => {
                                self.ops.by_poll.insert(next, (id, then));
                                self.ops.moved.insert(id, next);
                            }
                            Err(e) => {
                                self.forget_moved(id);
                                let Then::All { done, .. } = then else {
                                    unreachable!()
                                };
                                done(Err(partial(written, e)), Vec::new(), self);
                            }
                        }
                    }
                    Ok(0) if !b.is_empty() => {
                        self.forget_moved(id);
                        let e = io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes");
                        b.clear();
                        done(Err(partial(written, e)), b, self);
                    }
                    Ok(n) => {
                        self.forget_moved(id);
                        b.clear();
                        done(Ok(written + n), b, self);
                    }
                    Err(e) => {
                        self.forget_moved(id);
                        b.clear();
                        let e = if written > 0 { partial(written, e) } else { e };
                        done(Err(e), b, self);
                    }
                }
            }
            Then::Unit(done) => {
                self.forget_moved(id);
                done(result.map(drop), self);
            }
            Then::Conn(mut on_conn) => {
                let value = match (result, output) {
                    (Ok(_), Output::Accepted(fd)) => Ok(fd),
                    (Err(e), _) => Err(e),
                    (Ok(_), other) => unreachable!("an accept hands over {other:?}"),
                };
                if more {
                    self.with_repeating(poll_id, id, Then::Conn(on_conn), |cb, cx| {
                        if let Then::Conn(f) = cb {
                            f(value, cx)
                        }
                    });
                } else {
                    self.forget_moved(id);
                    on_conn(value, self);
                }
            }
            Then::Data(mut on_data) => {
                let value = match (result, output) {
                    (Ok(_), Output::Data(d)) => Ok(d),
                    (Ok(_), _) => Ok(Vec::new()),
                    (Err(e), _) => Err(e),
                };
                if more {
                    self.with_repeating(poll_id, id, Then::Data(on_data), |cb, cx| {
                        if let Then::Data(f) = cb {
                            f(value, cx)
                        }
                    });
                } else {
                    self.forget_moved(id);
                    on_data(value, self);
                }
            }
        }
    }

    /// Forgets where operation `id`'s request went, if it moved (most
    /// never do: the map is then not even probed).
    fn forget_moved(&mut self, id: OpId) {
        if !self.ops.moved.is_empty() {
            self.ops.moved.remove(&id);
        }
    }

    /// Calls the callback of a repeating operation, and keeps it for the
    /// operation's next completion, even if it panics (the panic then goes
    /// on, as an I/O source's does, and the operation stays in flight).
    fn with_repeating(
        &mut self,
        poll_id: op::OpId,
        id: OpId,
        mut then: Then,
        f: impl FnOnce(&mut Then, &mut Ctx),
    ) {
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&mut then, self)));
        self.ops.by_poll.insert(poll_id, (id, then));
        if let Err(payload) = outcome {
            resume_unwind(payload);
        }
    }
}

fn buf(output: Output) -> Vec<u8> {
    match output {
        Output::Buf(b) => b,
        _ => Vec::new(),
    }
}

/// The error of a write or send that failed after `written` bytes.
fn partial(written: usize, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{written} bytes were written before the rest failed: {e}"),
    )
}
