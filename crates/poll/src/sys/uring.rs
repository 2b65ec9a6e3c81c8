//! The io_uring backend.
//!
//! Registrations live in an epoll set, made and changed with `epoll_ctl`
//! exactly as on the epoll backend, so that an fd's whole life behaves the
//! same on both: a file closed without `deregister` leaves the set when its
//! last descriptor goes, a new file on a reused number is a new
//! registration, a `dup` keeps a registration alive, and a registration made
//! from any thread takes effect at once, with no request to hand over.
//!
//! The ring does the waiting. One `IORING_OP_EPOLL_WAIT` on the set is kept
//! in flight, beside the wake signal: a multishot `IORING_OP_POLL_ADD` on the
//! wake fd (never read, for an eventfd), or completions posted by wakers'
//! rings with `IORING_OP_MSG_RING`. One `io_uring_enter` per wait submits
//! what is needed and waits, with the timeout carried in the same call.
//!
//! The ring is set up with `IORING_SETUP_SINGLE_ISSUER` and
//! `IORING_SETUP_DEFER_TASKRUN`: the kernel completes requests only inside
//! the owning thread's `io_uring_enter`. So the `EPOLL_WAIT` reads the set
//! when the poller waits, never earlier: a file made ready and drained
//! between two polls is not reported. The ring belongs to the thread that
//! polls; when a poller is moved and polled from another thread, it makes a
//! new ring there (the registrations, in the epoll set, are untouched), and
//! the old one, with whatever the kernel does to the requests of a thread
//! that exits, is dropped unread.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use rustix::io::Errno;

use super::epoll::{Epoll, EpollDriver};
use super::features::{Pretend, setup_refused, unsupported};
use super::ops::OpTable;
use super::uring_ops::{BufRing, OP_TAG, OpCqe, OpExtra};
use super::{Signal, WAKE_KEY, WaitOutcome, thread_id};
use crate::event::{Event, Events, flags};
use crate::{Interest, Token};

/// user_data of the message another ring posts to wake this one.
const MSG_KEY: u64 = u64::MAX - 1;
/// user_data of `ASYNC_CANCEL` requests, whose own completions are ignored.
pub(super) const CANCEL_KEY: u64 = u64::MAX - 2;
/// user_data of the multishot poll on the epoll set's fd (where
/// `EPOLL_WAIT` is not used).
const SET_KEY: u64 = u64::MAX - 3;

/// Submission queue entries (the completion queue has twice as many): an
/// `EPOLL_WAIT`, a cancel, the wake poll, and the operations queued between
/// two waits; a fuller queue is submitted and refilled.
const RING_ENTRIES: u32 = 256;
/// The most events one `EPOLL_WAIT` returns. A poll with more room reports
/// at most this many fd events; the rest, being level-triggered, are
/// reported by the next poll.
const EPOLL_BATCH: usize = 1024;

const IORING_ENTER_GETEVENTS: u32 = 1;

/// Which signal wakes the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeVia {
    /// A multishot poll on this fd.
    Fd(RawFd),
    /// `IORING_OP_MSG_RING` completions.
    Msg,
}

/// The registration side: any thread.
#[derive(Debug)]
pub(crate) struct Uring {
    set: Epoll,
    /// Readiness is read by `IORING_OP_EPOLL_WAIT` (else by a poll of the
    /// set's fd and `epoll_wait`).
    pub(crate) epoll_wait: bool,
}

/// The polling side: the ring, owned by the thread that polls.
pub(crate) struct UringDriver {
    // Dropped before the buffers: once the ring is closed, the kernel
    // cancels its requests rather than complete them. (A poller dropped
    // with operations in flight waits for their completions first: see
    // `shutdown`.)
    pub(super) ring: IoUring,
    /// The thread the ring belongs to; 0 while it is not yet enabled.
    pub(super) owner: u64,
    wake: WakeVia,
    wake_armed: bool,
    /// The set is read by `IORING_OP_EPOLL_WAIT` (6.15); otherwise the ring
    /// keeps a multishot poll on the set's fd (`set_armed`), and the set is
    /// read with `epoll_wait`.
    epoll_wait: bool,
    set_armed: bool,
    /// The set's poll fired in the last reap.
    set_fired: bool,
    /// Features to act as if the kernel lacked (see `features`).
    pretend: Pretend,
    /// The generation of the `EPOLL_WAIT` in flight, and its room.
    in_flight: Option<(u64, u32)>,
    generation: u64,
    /// Where the kernel writes what the `EPOLL_WAIT` in flight returns.
    buf: EpollBuf,
    /// The buffers of requests cancelled but not yet completed, by
    /// generation: the kernel may still write them until their completion
    /// arrives.
    retired: Vec<(u64, EpollBuf)>,
    /// A buffer to reuse.
    spare: Option<EpollBuf>,
    /// For a direct look at the set, when the wake fd took a place in a
    /// full batch.
    direct: EpollDriver,
    /// What operations in flight need beside their own memory: the address
    /// of a connect, the form of a multishot accept, a cancel asked for.
    pub(super) extras: super::ops::IdMap<OpExtra>,
    /// Completions of operations, gathered while the queue is read.
    pub(super) op_cqes: Vec<OpCqe>,
    /// The provided-buffer ring of multishot receives, made on first use
    /// (after `ring`: it is freed once the ring is closed).
    pub(super) bufring: Option<BufRing>,
    /// The poller's counters of operations.
    pub(crate) counters: std::sync::Arc<crate::poller::OpCounters>,
}

type EpollBuf = Box<[libc::epoll_event]>;

fn new_epoll_buf() -> EpollBuf {
    // SAFETY: epoll_event is plain integers; all zeroes is a valid value.
    let zeroed: libc::epoll_event = unsafe { std::mem::zeroed() };
    vec![zeroed; EPOLL_BATCH].into_boxed_slice()
}

impl std::fmt::Debug for UringDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDriver")
            .field("ring", &self.ring.as_raw_fd())
            .field("owner", &self.owner)
            .field("wake", &self.wake)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

/// Sets up a ring for the backend: disabled until a thread takes it, or
/// enabled now for the calling thread.
fn new_ring(disabled: bool, pretend: &Pretend) -> io::Result<IoUring> {
    const FLAGS: &str = "IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN";
    if pretend.missing("io_uring") {
        return Err(setup_refused(
            io::Error::from_raw_os_error(libc::ENOSYS),
            FLAGS,
        ));
    }
    if pretend.missing("single_issuer") || pretend.missing("defer_taskrun") {
        return Err(setup_refused(
            io::Error::from_raw_os_error(libc::EINVAL),
            FLAGS,
        ));
    }
    let mut builder = IoUring::builder();
    builder.setup_single_issuer().setup_defer_taskrun();
    if disabled {
        builder.setup_r_disabled();
    }
    builder
        .build(RING_ENTRIES)
        .map_err(|e| setup_refused(e, FLAGS))
}

/// The environment variable that turns off `IORING_OP_EPOLL_WAIT` on the
/// io_uring backend (`0`, `false`, `no` or `off`), so that the path for
/// kernels without it (6.1 to 6.14) runs on a newer one; read as every
/// rouse switch is (see `rouse_sys::env_switch`).
pub const URING_EPOLL_WAIT_ENV: &str = "ROUSE_URING_EPOLL_WAIT";

impl Uring {
    /// Sets up the registration set and a ring, and checks that the kernel
    /// can do what the backend needs: each feature by asking the kernel
    /// (see `features`).
    pub(crate) fn new(wake: WakeVia) -> io::Result<(Uring, UringDriver)> {
        let pretend = Pretend::from_env()?;
        let use_epoll_wait = rouse_sys::env_switch(URING_EPOLL_WAIT_ENV)?.unwrap_or(true);
        let ring = new_ring(true, &pretend)?;
        if !ring.params().is_feature_ext_arg() || pretend.missing("ext_arg") {
            return Err(unsupported(
                "the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11) for wait timeouts",
            ));
        }
        if !ring.params().is_feature_nodrop() || pretend.missing("nodrop") {
            return Err(unsupported(
                "the kernel lacks IORING_FEAT_NODROP (Linux 5.5): a completion-queue \
                 overflow could lose completions",
            ));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| unsupported(&format!("IORING_REGISTER_PROBE failed: {e}")))?;
        // Where the kernel lacks EPOLL_WAIT (before 6.15), the ring polls the
        // set's own fd instead, and the set is read with epoll_wait.
        let epoll_wait = use_epoll_wait
            && probe.is_supported(opcode::EpollWait::CODE)
            && !pretend.missing("epoll_wait");
        if wake == WakeVia::Msg
            && (!probe.is_supported(opcode::MsgRingData::CODE)
                || !ring.params().is_feature_skip_cqe_on_success()
                || pretend.missing("msg_ring"))
        {
            return Err(unsupported(
                "the kernel lacks IORING_OP_MSG_RING or IOSQE_CQE_SKIP_SUCCESS (Linux 5.18) \
                 for the MSG_RING wake; the eventfd wake needs neither",
            ));
        }
        let set = Epoll::new(None)?;
        let driver = UringDriver {
            ring,
            owner: 0,
            wake,
            wake_armed: false,
            epoll_wait,
            set_armed: false,
            set_fired: false,
            pretend,
            in_flight: None,
            generation: 0,
            buf: new_epoll_buf(),
            retired: Vec::new(),
            spare: None,
            direct: EpollDriver::default(),
            extras: Default::default(),
            op_cqes: Vec::new(),
            bufring: None,
            counters: Default::default(),
        };
        Ok((Uring { set, epoll_wait }, driver))
    }

    /// The registration set, whose fd another loop can poll; with `wake`,
    /// the wake fd is added to it (once), so that wakes make it readable too.
    pub(crate) fn set(&self) -> &Epoll {
        &self.set
    }

    pub(crate) fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.set.register(fd, token, interest)
    }

    pub(crate) fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.set.reregister(fd, token, interest)
    }

    pub(crate) fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.set.deregister(fd)
    }

    /// Makes the ring the calling thread's (see [`UringDriver::own`]):
    /// called before the poller may park, so that a waker's message never
    /// finds a ring that is not yet enabled.
    pub(crate) fn prepare(
        &self,
        driver: &mut UringDriver,
        signal: &Signal,
        ops: &OpTable,
    ) -> io::Result<()> {
        driver.own(signal, ops)
    }

    /// Submits what is needed, waits up to `timeout` for a completion, and
    /// reaps every completion, reporting fd events as `events`' room allows.
    pub(crate) fn wait(
        &self,
        driver: &mut UringDriver,
        signal: &Signal,
        events: &mut Events,
        ops: &mut OpTable,
        timeout: Option<Duration>,
    ) -> io::Result<WaitOutcome> {
        driver.own(signal, ops)?;
        if !driver.wake_armed {
            driver.arm_wake()?;
        }
        if !driver.epoll_wait {
            return self.wait_polling_set(driver, events, ops, timeout);
        }
        let room = events.room().min(EPOLL_BATCH) as u32;
        match driver.in_flight {
            // Room for no fewer than this poll has: what it returns beyond
            // the room is reported by later polls (level-triggered).
            Some((_, max)) if max >= room => {}
            Some((generation, _)) => {
                // Made by a poll with less room: it would report fewer than
                // this one has room for. Cancel it (its buffer is kept until
                // its completion arrives) and ask again.
                driver.push(
                    &opcode::AsyncCancel::new(generation)
                        .build()
                        .user_data(CANCEL_KEY),
                )?;
                let fresh = driver.spare.take().unwrap_or_else(new_epoll_buf);
                let old = std::mem::replace(&mut driver.buf, fresh);
                driver.retired.push((generation, old));
                driver.in_flight = None;
                driver.submit_epoll_wait(&self.set, room)?;
            }
            None => driver.submit_epoll_wait(&self.set, room)?,
        }

        let ring = &mut driver.ring;
        // Completions already waiting (or no time to wait): run the ring's
        // deferred work and reap, without blocking.
        let nonblocking = timeout == Some(Duration::ZERO) || !ring.completion().is_empty();
        let to_submit = ring.submission().len() as u32;
        let submitter = ring.submitter();
        let r = match timeout {
            _ if nonblocking => {
                // SAFETY: no argument is passed; GETEVENTS with no minimum
                // runs the ring's deferred completions and returns.
                unsafe { submitter.enter::<()>(to_submit, 0, IORING_ENTER_GETEVENTS, None) }
            }
            None => submitter.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => {}
            Err(e) => match Errno::from_io_error(&e) {
                // Timed out, or the completion queue needs reaping first.
                Some(Errno::TIME | Errno::BUSY) => {}
                _ => return Err(e),
            },
        }
        let (outcome, short) = driver.reap(events, ops)?;
        if short {
            // The wake fd took a place that a ready registration may want.
            self.set.fill(&mut driver.direct, events)?;
        }
        Ok(outcome)
    }
}

impl Uring {
    /// The wait where `EPOLL_WAIT` is not used (Linux 6.1 to 6.14, or
    /// turned off): the ring keeps a multishot poll on the set's fd, and the
    /// set is read with `epoll_wait` (zero timeout), first before the wait,
    /// so that registrations still ready are reported again
    /// (level-triggered; epoll wakes no poller of its fd for those), and
    /// again after a wait that the set's poll ended. So a poll costs an
    /// `epoll_wait` beside its `io_uring_enter`.
    fn wait_polling_set(
        &self,
        driver: &mut UringDriver,
        events: &mut Events,
        ops: &mut OpTable,
        timeout: Option<Duration>,
    ) -> io::Result<WaitOutcome> {
        if !driver.set_armed {
            driver.arm_set(&self.set)?;
        }
        let before = events.len();
        let first = self
            .set
            .wait(&mut driver.direct, events, Some(Duration::ZERO))?;
        let found = events.len() > before || first.woke;
        let ring = &mut driver.ring;
        let nonblocking = found || timeout == Some(Duration::ZERO) || !ring.completion().is_empty();
        let to_submit = ring.submission().len() as u32;
        let submitter = ring.submitter();
        let r = match timeout {
            _ if nonblocking => {
                // SAFETY: no argument is passed; GETEVENTS with no minimum
                // runs the ring's deferred completions and returns.
                unsafe { submitter.enter::<()>(to_submit, 0, IORING_ENTER_GETEVENTS, None) }
            }
            None => submitter.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => {}
            Err(e) => match Errno::from_io_error(&e) {
                Some(Errno::TIME | Errno::BUSY) => {}
                _ => return Err(e),
            },
        }
        let (mut outcome, _) = driver.reap(events, ops)?;
        outcome.woke |= first.woke;
        if driver.set_fired && !found {
            let more = self
                .set
                .wait(&mut driver.direct, events, Some(Duration::ZERO))?;
            outcome.woke |= more.woke;
        }
        driver.set_fired = false;
        Ok(outcome)
    }
}

impl UringDriver {
    /// Arms the multishot poll on the epoll set's fd.
    fn arm_set(&mut self, set: &Epoll) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(set.as_fd().as_raw_fd()), flags::IN)
            .multi(true)
            .build()
            .user_data(SET_KEY);
        self.push(&sqe)?;
        self.set_armed = true;
        Ok(())
    }

    /// Makes the ring the calling thread's: enables it on first use, and
    /// replaces it with a new one when another thread polls. A failure
    /// (no descriptors for a new ring, say) changes nothing.
    pub(crate) fn own(&mut self, signal: &Signal, ops: &OpTable) -> io::Result<()> {
        let me = thread_id();
        if self.owner == me {
            return Ok(());
        }
        if self.owner == 0 {
            self.ring.submitter().register_enable_rings()?;
        } else {
            if ops.len() > 0 {
                // Their memory is the kernel's until their completions,
                // which only the old thread's ring can reap.
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "{} operations are in flight on the ring of the thread that polled \
                         this poller until now; poll it there until they complete",
                        ops.len()
                    ),
                ));
            }
            let ring = new_ring(false, &self.pretend)?;
            if let Signal::MsgRing { target, .. } = signal {
                let fd = rustix::io::fcntl_dupfd_cloexec(ring.as_fd(), 0)?;
                *target.write().unwrap_or_else(|e| e.into_inner()) = fd;
            }
            // The old ring and its requests go (closed, it writes no
            // buffer again), and with them the buffers of cancelled ones.
            self.ring = ring;
            self.in_flight = None;
            self.retired.clear();
            self.wake_armed = false;
            self.set_armed = false;
            // Registered with the old ring, which is closed now.
            self.bufring = None;
        }
        self.owner = me;
        Ok(())
    }

    fn submit_epoll_wait(&mut self, set: &Epoll, room: u32) -> io::Result<()> {
        self.generation += 1;
        let generation = self.generation;
        let sqe = opcode::EpollWait::new(
            types::Fd(set.as_fd().as_raw_fd()),
            self.buf.as_mut_ptr().cast(),
            room,
        )
        .build()
        .user_data(generation);
        self.push(&sqe)?;
        self.in_flight = Some((generation, room));
        Ok(())
    }

    /// Reaps every completion; says, beside the outcome, whether the wake
    /// fd took a place in a full batch (so that one more look is due).
    fn reap(&mut self, events: &mut Events, ops: &mut OpTable) -> io::Result<(WaitOutcome, bool)> {
        let mut out = WaitOutcome::default();
        let mut short = false;
        let mut failed = None;
        loop {
            self.reap_once(events, &mut out, &mut short, &mut failed);
            self.complete_ops(ops)?;
            if !self.ring.submission().cq_overflow() {
                break;
            }
            // Completions the queue had no room for wait in the kernel
            // (IORING_FEAT_NODROP): flush them into the queue and read on.
            let c = &self.counters.overflow_flushes;
            c.store(
                c.load(std::sync::atomic::Ordering::Relaxed) + 1,
                std::sync::atomic::Ordering::Relaxed,
            );
            // SAFETY: no argument is passed.
            match unsafe {
                self.ring
                    .submitter()
                    .enter::<()>(0, 0, IORING_ENTER_GETEVENTS, None)
            } {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if Errno::from_io_error(&e) == Some(Errno::BUSY) => {}
                Err(e) => return Err(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((out, short)),
        }
    }

    /// Reads the completion queue once: readiness and wakes into `events`
    /// and `out`, operations' completions into `op_cqes`.
    fn reap_once(
        &mut self,
        events: &mut Events,
        out: &mut WaitOutcome,
        short: &mut bool,
        failed: &mut Option<io::Error>,
    ) {
        let mut cq = self.ring.completion();
        for cqe in &mut cq {
            match cqe.user_data() {
                WAKE_KEY => {
                    out.woke = true;
                    if !cqueue::more(cqe.flags()) {
                        self.wake_armed = false;
                    }
                }
                MSG_KEY => out.woke = true,
                CANCEL_KEY => {}
                SET_KEY => {
                    self.set_fired = true;
                    if !cqueue::more(cqe.flags()) {
                        self.set_armed = false;
                    }
                }
                data if data & OP_TAG != 0 => self.op_cqes.push(OpCqe {
                    data,
                    result: cqe.result(),
                    flags: cqe.flags(),
                }),
                generation => {
                    let Some((_, max)) = self.in_flight.filter(|(g, _)| *g == generation) else {
                        // A request cancelled too late: the newer one reads
                        // the set again (level-triggered registrations went
                        // back to its ready list), but an edge of the wake
                        // fd it took would be lost.
                        retire(
                            &mut self.retired,
                            &mut self.spare,
                            generation,
                            cqe.result(),
                            out,
                        );
                        continue;
                    };
                    self.in_flight = None;
                    let n = cqe.result();
                    if n < 0 {
                        // Cancelled by the kernel, say: asked again next wait.
                        if n != -Errno::CANCELED.raw_os_error() {
                            *failed = Some(io::Error::from_raw_os_error(-n));
                        }
                        continue;
                    }
                    for ev in &self.buf[..n as usize] {
                        // Copies out of the packed struct.
                        let (data, mask) = (ev.u64, ev.events);
                        if data == WAKE_KEY {
                            // The wake fd, in the set for a nested poller.
                            out.woke = true;
                            *short |= n as u32 == max;
                            continue;
                        }
                        if events.is_full() {
                            // Level-triggered: reported by the next poll.
                            // (The loop goes on, for the wake fd.)
                            continue;
                        }
                        events.push(Event::from_mask(Token(data as usize), mask));
                    }
                }
            }
        }
        cq.sync();
    }

    /// Queues a request of the backend's own, submitting first if the queue
    /// is full.
    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        // SAFETY: POLL_ADD and ASYNC_CANCEL reference no user memory;
        // EPOLL_WAIT writes into `buf` (or a retired buffer), which is kept
        // until its completion arrives or the ring is closed (field order),
        // and whose length bounds the request's room.
        unsafe { self.push_unchecked(sqe) }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        if let WakeVia::Fd(fd) = self.wake {
            let sqe = opcode::PollAdd::new(types::Fd(fd), flags::IN)
                .multi(true)
                .build()
                .user_data(WAKE_KEY);
            self.push(&sqe)?;
        }
        self.wake_armed = true;
        Ok(())
    }

    /// Queues a request, submitting first if the queue is full.
    ///
    /// # Safety
    ///
    /// Memory the request names must stay valid until its completion has
    /// been reaped (or the ring is closed, for a request the kernel cancels
    /// then).
    pub(super) unsafe fn push_unchecked(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's promise.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The completion of a cancelled request arrived: its buffer is free again,
/// once a wake in what it returned is noted.
fn retire(
    retired: &mut Vec<(u64, EpollBuf)>,
    spare: &mut Option<EpollBuf>,
    generation: u64,
    result: i32,
    out: &mut WaitOutcome,
) {
    let Some(i) = retired.iter().position(|(g, _)| *g == generation) else {
        return;
    };
    let (_, buf) = retired.swap_remove(i);
    let n = usize::try_from(result).unwrap_or(0);
    if buf[..n].iter().any(|ev| ({ ev.u64 }) == WAKE_KEY) {
        out.woke = true;
    }
    *spare = Some(buf);
}

/// Posts a wake completion to the ring behind `target`, from `ring`.
pub(super) fn send_msg(ring: &mut IoUring, target: BorrowedFd<'_>) -> io::Result<()> {
    let sqe = opcode::MsgRingData::new(types::Fd(target.as_raw_fd()), 0, MSG_KEY, None)
        .build()
        .flags(squeue::Flags::SKIP_SUCCESS)
        .user_data(0);
    // SAFETY: MSG_RING carries only integers; it references no user memory.
    while unsafe { ring.submission().push(&sqe) }.is_err() {
        ring.submit()?;
    }
    loop {
        match ring.submit() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // A successful message posts nothing here; a failed one posts its error.
    if let Some(cqe) = ring.completion().next() {
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
    }
    Ok(())
}

/// A duplicate of the ring's fd, for message senders.
pub(crate) fn dup_ring_fd(driver: &UringDriver) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(driver.ring.as_fd(), 0)?)
}
