//! Operations on the io_uring backend: each is one request of the ring,
//! queued when it is submitted and sent to the kernel by the next wait's
//! `io_uring_enter` (or sooner, if the queue fills). The operation (its file
//! and buffer) stays in the poller's table until its last completion has
//! been reaped, so that no memory the kernel may write is freed before.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed, Ordering::Release};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, CancelBuilder};
use io_uring::{cqueue, opcode, types};
use rustix::io::Errno;

use super::ops::OpTable;
use super::thread_id;
use super::uring::{CANCEL_KEY, UringDriver};
use crate::op::{Op, OpId, Output, cancelled};

/// The bit that marks an operation's request (its user_data is the op id
/// with this bit set; ids are below it, and the backend's own keys are the
/// top values of the range, matched first).
pub(super) const OP_TAG: u64 = 1 << 62;

/// The buffer group of the provided-buffer ring.
const BGID: u16 = 0;
/// Buffers in the provided-buffer ring, and the size of each.
const BUFS: u16 = 512;
const BUF_SIZE: u32 = 4096;

/// A completion of an operation's request, as read from the queue.
#[derive(Clone, Copy, Debug)]
pub(super) struct OpCqe {
    pub(super) data: u64,
    pub(super) result: i32,
    pub(super) flags: u32,
}

/// What a request in flight needs beside the operation itself.
#[derive(Debug, Default)]
pub(super) struct OpExtra {
    /// The address a connect reads, in memory that stays put.
    addr: Option<Box<(libc::sockaddr_storage, libc::socklen_t)>>,
    /// A multishot accept the kernel refused: accepts one at a time instead.
    single: bool,
    /// A cancel was asked for: a multishot request that ends is not armed
    /// again.
    cancel: bool,
}

impl UringDriver {
    /// Queues the request of the operation `id` (in `ops`).
    pub(crate) fn submit_op(&mut self, ops: &mut OpTable, id: OpId) -> io::Result<()> {
        let single = self.extra(id).is_some_and(|e| e.single);
        let op = ops.get_mut(id).expect("the operation is in the table");
        if matches!(op, Op::RecvMulti { .. }) && self.bufring.is_none() {
            self.bufring = Some(BufRing::new(&self.ring)?);
        }
        let data = OP_TAG | id.0;
        let sqe = match op {
            Op::ReadAt { fd, offset, buf } => {
                let spare = buf.spare_capacity_mut();
                let len = spare.len().min(u32::MAX as usize) as u32;
                opcode::Read::new(types::Fd(fd.as_raw_fd()), spare.as_mut_ptr().cast(), len)
                    .offset(*offset)
                    .build()
            }
            Op::ReadInto {
                fd,
                offset,
                buf,
                at,
                len,
            } => {
                let part = &mut buf[*at..*at + *len];
                let len = part.len().min(u32::MAX as usize) as u32;
                opcode::Read::new(types::Fd(fd.as_raw_fd()), part.as_mut_ptr(), len)
                    .offset(*offset)
                    .build()
            }
            Op::WriteAt { fd, offset, buf } => {
                let len = buf.len().min(u32::MAX as usize) as u32;
                opcode::Write::new(types::Fd(fd.as_raw_fd()), buf.as_ptr(), len)
                    .offset(*offset)
                    .build()
            }
            Op::Fsync { fd } => opcode::Fsync::new(types::Fd(fd.as_raw_fd())).build(),
            Op::Accept { fd } => opcode::Accept::new(
                types::Fd(fd.as_raw_fd()),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC)
            .build(),
            Op::AcceptMulti { fd } if single => opcode::Accept::new(
                types::Fd(fd.as_raw_fd()),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC)
            .build(),
            Op::AcceptMulti { fd } => opcode::AcceptMulti::new(types::Fd(fd.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build(),
            Op::Recv { fd, buf } => {
                let spare = buf.spare_capacity_mut();
                let len = spare.len().min(u32::MAX as usize) as u32;
                opcode::Recv::new(types::Fd(fd.as_raw_fd()), spare.as_mut_ptr().cast(), len).build()
            }
            Op::RecvMulti { fd } => opcode::RecvMulti::new(types::Fd(fd.as_raw_fd()), BGID).build(),
            Op::Send { fd, buf } => {
                let len = buf.len().min(u32::MAX as usize) as u32;
                opcode::Send::new(types::Fd(fd.as_raw_fd()), buf.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            Op::Connect { fd, addr } => {
                let extra = self.extras.entry(id.0).or_default();
                let stored = extra.addr.insert(Box::new(sockaddr(addr)));
                opcode::Connect::new(
                    types::Fd(fd.as_raw_fd()),
                    (&raw const stored.0).cast(),
                    stored.1,
                )
                .build()
            }
            Op::Close { fd } => opcode::Close::new(types::Fd(fd.as_raw_fd())).build(),
        };
        // SAFETY: the request names the operation's buffer (its heap memory
        // does not move when the table grows), the address kept in `extras`,
        // or the provided-buffer ring; all stay until the request's last
        // completion is reaped (`complete_ops`), or the ring is closed after
        // `shutdown` has reaped them or left them to leak.
        unsafe { self.push_unchecked(&sqe.user_data(data)) }
    }

    /// Asks the kernel to cancel the operation `id`; its completion still
    /// comes (with `ECANCELED` if it was stopped before it took effect).
    pub(crate) fn cancel_op(&mut self, id: OpId) -> io::Result<()> {
        self.extras.entry(id.0).or_default().cancel = true;
        let sqe = opcode::AsyncCancel::new(OP_TAG | id.0)
            .build()
            .user_data(CANCEL_KEY);
        // SAFETY: ASYNC_CANCEL names no memory.
        unsafe { self.push_unchecked(&sqe) }
    }

    /// What operation `id` needs beside its own memory, if anything (most
    /// need nothing: the map is then not even probed).
    fn extra(&self, id: OpId) -> Option<&OpExtra> {
        if self.extras.is_empty() {
            return None;
        }
        self.extras.get(&id.0)
    }

    /// Forgets what operation `id` needed beside its own memory.
    fn forget_extra(&mut self, id: OpId) {
        if !self.extras.is_empty() {
            self.extras.remove(&id.0);
        }
    }

    /// Turns the operations' completions read from the queue into
    /// [`Completion`](crate::op::Completion)s, re-arming multishot requests
    /// that ended but go on.
    pub(super) fn complete_ops(&mut self, ops: &mut OpTable) -> io::Result<()> {
        let cqes = std::mem::take(&mut self.op_cqes);
        let mut rearm = Vec::new();
        for c in &cqes {
            let id = OpId(c.data & !OP_TAG);
            let more = cqueue::more(c.flags);
            let Some(kind) = ops.get(id).map(Kind::of) else {
                continue;
            };
            let cancel = self.extra(id).is_some_and(|e| e.cancel);
            match kind {
                Kind::AcceptMulti => {
                    if c.result >= 0 {
                        // SAFETY: a successful accept's result is a new
                        // descriptor, ours alone.
                        let fd = unsafe { owned(c.result) };
                        ops.more(id, Ok(0), Output::Accepted(fd));
                        if !more {
                            // Single accepts, or a multishot one the kernel
                            // ended (it does, under pressure): go on.
                            if cancel {
                                ops.finish(id, Err(cancelled()), Some(Output::Nothing));
                            } else {
                                rearm.push(id);
                            }
                        }
                    } else if c.result == -libc::EINVAL
                        && !self.extra(id).is_some_and(|e| e.single)
                        && !cancel
                    {
                        // No multishot accept in this kernel: one at a time.
                        self.extras.entry(id.0).or_default().single = true;
                        rearm.push(id);
                    } else if !more {
                        ops.finish(id, Err(errno(c.result)), Some(Output::Nothing));
                    }
                }
                Kind::RecvMulti => {
                    let buf = cqueue::buffer_select(c.flags);
                    if c.result > 0 {
                        let bid = buf.expect("a receive into the ring names its buffer");
                        let ring = self.bufring.as_mut().expect("made before the receive");
                        let data = ring.data(bid, c.result as usize).to_vec();
                        ring.give_back(bid);
                        ops.more(id, Ok(data.len()), Output::Data(data));
                        if !more {
                            if cancel {
                                ops.finish(id, Err(cancelled()), Some(Output::Nothing));
                            } else {
                                rearm.push(id);
                            }
                        }
                    } else {
                        if let (Some(bid), Some(ring)) = (buf, self.bufring.as_mut()) {
                            ring.give_back(bid);
                        }
                        if c.result == 0 {
                            // End of file.
                            ops.finish(id, Ok(0), Some(Output::Nothing));
                        } else if c.result == -libc::ENOBUFS && !cancel {
                            // The ring ran dry; its buffers are given back as
                            // each completion is read, so arm it again: the
                            // data waits in the socket meanwhile.
                            let n = &self.counters.buffer_ring_rearms;
                            n.store(n.load(Relaxed) + 1, Relaxed);
                            rearm.push(id);
                        } else if !more {
                            ops.finish(id, Err(errno(c.result)), Some(Output::Nothing));
                        }
                    }
                }
                Kind::IntoSpare => {
                    let result = if c.result >= 0 {
                        let n = c.result as usize;
                        if let Some(Op::ReadAt { buf, .. } | Op::Recv { buf, .. }) = ops.get_mut(id)
                        {
                            // SAFETY: the kernel wrote `n` bytes into the
                            // spare capacity it was given, right after `len`.
                            unsafe { buf.set_len(buf.len() + n) };
                        }
                        Ok(n)
                    } else {
                        Err(errno(c.result))
                    };
                    self.forget_extra(id);
                    ops.finish(id, result, None);
                }
                Kind::Accept => {
                    if c.result >= 0 {
                        // SAFETY: a successful accept's result is a new
                        // descriptor, ours alone.
                        let fd = unsafe { owned(c.result) };
                        ops.finish(id, Ok(0), Some(Output::Accepted(fd)));
                    } else {
                        ops.finish(id, Err(errno(c.result)), Some(Output::Nothing));
                    }
                }
                Kind::Close => {
                    let done = ops.remove(id);
                    self.forget_extra(id);
                    if let Some(Op::Close { fd }) = done {
                        if c.result == -libc::ECANCELED {
                            // Never closed: close it now.
                            drop(fd);
                        } else {
                            // Closed by the kernel (even if it reported an
                            // error, as close(2) does): forget the number.
                            let _ = fd.into_raw_fd();
                        }
                    }
                    let result = if c.result >= 0 {
                        Ok(0)
                    } else {
                        Err(errno(c.result))
                    };
                    ops.ready.push_back(crate::op::Completion {
                        id,
                        result,
                        more: false,
                        output: Output::Nothing,
                    });
                }
                Kind::Other => {
                    let result = if c.result >= 0 {
                        Ok(c.result as usize)
                    } else {
                        Err(errno(c.result))
                    };
                    self.forget_extra(id);
                    ops.finish(id, result, None);
                }
            }
            if !self.extras.is_empty() && ops.get(id).is_none() {
                self.extras.remove(&id.0);
            }
        }
        if let Some(ring) = &self.bufring {
            ring.publish();
        }
        self.op_cqes = cqes;
        self.op_cqes.clear();
        for id in rearm {
            self.submit_op(ops, id)?;
        }
        Ok(())
    }

    /// Before the poller goes: cancels every operation in flight and reaps
    /// their completions, so that nothing the kernel may still write is
    /// freed. From a thread that does not own the ring (which alone may
    /// reap), or if the kernel takes longer than `patience`, what is left is
    /// leaked rather than freed.
    pub(crate) fn shutdown(&mut self, ops: &mut OpTable, patience: Duration) {
        if ops.len() == 0 {
            return;
        }
        if self.owner == thread_id() {
            let sqe = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(CANCEL_KEY);
            // SAFETY: ASYNC_CANCEL names no memory.
            let _ = unsafe { self.push_unchecked(&sqe) };
            let deadline = Instant::now() + patience;
            while ops.len() > 0 && Instant::now() < deadline {
                let ts = types::Timespec::new().nsec(10_000_000);
                let args = types::SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e) => match Errno::from_io_error(&e) {
                        Some(Errno::TIME | Errno::BUSY | Errno::INTR) => {}
                        _ => break,
                    },
                }
                let mut cq = self.ring.completion();
                for cqe in &mut cq {
                    if cqe.user_data() & OP_TAG != 0 && cqe.user_data() < CANCEL_KEY {
                        self.op_cqes.push(OpCqe {
                            data: cqe.user_data(),
                            result: cqe.result(),
                            flags: cqe.flags(),
                        });
                    }
                }
                cq.sync();
                drop(cq);
                // Multishot requests are not armed again: they were asked
                // to cancel.
                for id in ops.ids() {
                    self.extras.entry(id.0).or_default().cancel = true;
                }
                let _ = self.complete_ops(ops);
                ops.ready.clear();
            }
        }
        if ops.len() == 0 {
            return;
        }
        // Whatever is left may still be written by the kernel: leak it.
        for (_, op) in ops.drain() {
            std::mem::forget(op);
        }
        std::mem::forget(std::mem::take(&mut self.extras));
        if let Some(ring) = self.bufring.take() {
            std::mem::forget(ring);
        }
    }
}

/// How an operation's completion is read.
#[derive(Clone, Copy)]
enum Kind {
    Accept,
    AcceptMulti,
    RecvMulti,
    /// Into a buffer's spare capacity, whose length grows.
    IntoSpare,
    Close,
    Other,
}

impl Kind {
    fn of(op: &Op) -> Kind {
        match op {
            Op::Accept { .. } => Kind::Accept,
            Op::AcceptMulti { .. } => Kind::AcceptMulti,
            Op::RecvMulti { .. } => Kind::RecvMulti,
            Op::ReadAt { .. } | Op::Recv { .. } => Kind::IntoSpare,
            Op::Close { .. } => Kind::Close,
            _ => Kind::Other,
        }
    }
}

fn errno(result: i32) -> io::Error {
    io::Error::from_raw_os_error(-result)
}

/// # Safety
///
/// `raw` is an open descriptor that nothing else owns.
unsafe fn owned(raw: i32) -> std::os::fd::OwnedFd {
    // SAFETY: the caller's promise.
    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
}

/// `addr` as the kernel reads it.
fn sockaddr(addr: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain integers; all zeroes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // socket address.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): `BUFS` buffers of
/// `BUF_SIZE` bytes that multishot receives take in turn. Each completion's
/// bytes are copied out and the buffer goes straight back, so the ring runs
/// dry only when more receives complete between two reads of the queue
/// than it has buffers.
pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    bufs: Box<[u8]>,
    /// Our copy of the tail the kernel reads.
    tail: u16,
}

// SAFETY: the ring's memory is owned by this value alone and touched only
// through `&mut self` (or `&self` for the atomic tail store).
unsafe impl Send for BufRing {}

impl BufRing {
    fn new(ring: &io_uring::IoUring) -> io::Result<BufRing> {
        let size = std::mem::size_of::<BufRingEntry>() * usize::from(BUFS);
        let layout = Layout::from_size_align(size, 4096).expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let entries = NonNull::new(unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let mut me = BufRing {
            entries,
            layout,
            bufs: vec![0; usize::from(BUFS) * BUF_SIZE as usize].into_boxed_slice(),
            tail: 0,
        };
        for bid in 0..BUFS {
            me.give_back(bid);
        }
        me.publish();
        // SAFETY: the entries stay valid until the ring is closed (the
        // driver drops the ring before this value, and forgets it rather
        // than free it if requests may still use it).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.as_ptr() as u64, BUFS, BGID, 0)
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "io_uring refused a provided-buffer ring (IORING_REGISTER_PBUF_RING, \
                     Linux 5.19) for a multishot receive: {e}"
                ),
            )
        })?;
        Ok(me)
    }

    /// The first `n` bytes of buffer `bid`.
    fn data(&self, bid: u16, n: usize) -> &[u8] {
        let start = usize::from(bid) * BUF_SIZE as usize;
        &self.bufs[start..start + n.min(BUF_SIZE as usize)]
    }

    /// Puts buffer `bid` back in the ring (seen by the kernel once
    /// published).
    fn give_back(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (BUFS - 1));
        let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(BUF_SIZE);
        // SAFETY: `slot` is below BUFS, within the allocation.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(addr);
        entry.set_len(BUF_SIZE);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Lets the kernel see the buffers given back.
    fn publish(&self) {
        // SAFETY: `entries` is the ring's base; the tail field overlays the
        // first entry's reserved field, which the kernel reads atomically.
        let tail = unsafe { BufRingEntry::tail(self.entries.as_ptr()) } as *const AtomicU16;
        // SAFETY: as above; aligned and valid for the ring's life.
        unsafe { (*tail).store(self.tail, Release) };
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it
        // is closed (or this value is forgotten instead of dropped).
        unsafe { dealloc(self.entries.as_ptr().cast(), self.layout) };
    }
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing").field("tail", &self.tail).finish()
    }
}
