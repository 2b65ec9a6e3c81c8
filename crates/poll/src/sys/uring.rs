//! The io_uring backend.
//!
//! Readiness comes from one-shot `IORING_OP_POLL_ADD` requests, re-armed after
//! each completion has been reported, which gives the same level-triggered
//! behaviour as the epoll backend. The wake signal is either a multishot
//! `POLL_ADD` on the wake fd (never read, for an eventfd) or a completion
//! posted by another ring with `IORING_OP_MSG_RING`.
//!
//! Only the polling thread touches the ring. Registrations made from any
//! thread go into a table and a list of intents, which the polling thread
//! turns into requests before each wait; a registration made while the poller
//! is blocked interrupts the wait through the wake signal.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use rustix::io::Errno;

use super::{WAKE_KEY, WaitOutcome};
use crate::event::{Event, Events, flags};
use crate::{Interest, Token};

/// user_data of the message another ring posts to wake this one.
const MSG_KEY: u64 = u64::MAX - 1;
/// user_data of `POLL_REMOVE` requests, whose own completions are ignored.
const CANCEL_KEY: u64 = u64::MAX - 2;
/// Generations stay below this, so that registration keys never reach the
/// reserved values above.
const GEN_MASK: u32 = 0x7fff_ffff;

const RING_ENTRIES: u32 = 256;

/// Which signal wakes the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeVia {
    /// A multishot poll on this fd.
    Fd(RawFd),
    /// `IORING_OP_MSG_RING` completions.
    Msg,
}

#[derive(Debug)]
pub(crate) struct Uring {
    table: Mutex<Table>,
}

/// The polling thread's side: the ring itself.
pub(crate) struct UringDriver {
    ring: IoUring,
    wake: WakeVia,
    wake_armed: bool,
}

impl std::fmt::Debug for UringDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDriver")
            .field("ring", &self.ring.as_raw_fd())
            .field("wake", &self.wake)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_fd: HashMap<RawFd, u32>,
    intents: Vec<Intent>,
}

#[derive(Debug)]
struct Slot {
    fd: RawFd,
    /// The file's identity when registered: a new file that reuses the number
    /// is not the same registration.
    ident: (u64, u64),
    token: Token,
    mask: u32,
    generation: u32,
    live: bool,
    /// A `POLL_ADD` for the current generation is in the kernel.
    armed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Intent {
    Arm { slot: u32, generation: u32 },
    Cancel { key: u64 },
}

fn key(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

fn unkey(key: u64) -> (u32, u32) {
    (key as u32, (key >> 32) as u32)
}

fn ident(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

impl Uring {
    /// Sets up a ring and checks that it can do what the backend needs.
    pub(crate) fn new(wake: WakeVia) -> io::Result<(Uring, UringDriver)> {
        let ring = match IoUring::builder().setup_coop_taskrun().build(RING_ENTRIES) {
            Ok(ring) => ring,
            // COOP_TASKRUN arrived in 5.19; it only saves interrupts.
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                IoUring::new(RING_ENTRIES)?
            }
            Err(e) => return Err(e),
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(unsupported(
                "the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11) for wait timeouts",
            ));
        }
        if wake == WakeVia::Msg {
            let mut probe = io_uring::Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            if !probe.is_supported(opcode::MsgRingData::CODE)
                || !ring.params().is_feature_skip_cqe_on_success()
            {
                return Err(unsupported(
                    "the kernel lacks IORING_OP_MSG_RING or CQE_SKIP_SUCCESS (Linux 5.18)",
                ));
            }
        }
        let mut driver = UringDriver {
            ring,
            wake,
            wake_armed: false,
        };
        driver.arm_wake()?;
        driver.ring.submit()?;
        // A kernel without multishot poll fails the request at once.
        if let Some(cqe) = driver.ring.completion().next() {
            if cqe.user_data() == WAKE_KEY && cqe.result() < 0 {
                let err = io::Error::from_raw_os_error(-cqe.result());
                return Err(unsupported(&format!(
                    "multishot IORING_OP_POLL_ADD failed: {err}"
                )));
            }
        }
        Ok((
            Uring {
                table: Mutex::new(Table::default()),
            },
            driver,
        ))
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table is left consistent at every unlock; a panic elsewhere
        // does not make it unusable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        let id = ident(fd)?;
        let raw = fd.as_raw_fd();
        let mut t = self.table();
        if let Some(&slot) = t.by_fd.get(&raw) {
            if t.slots[slot as usize].ident == id {
                return Err(super::already_registered(fd));
            }
            // The registered file was closed and the number reused.
            t.remove(slot);
        }
        let slot = t.insert(raw, id, token, interest.poll_mask());
        let generation = t.slots[slot as usize].generation;
        t.intents.push(Intent::Arm { slot, generation });
        Ok(())
    }

    pub(crate) fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        let mut t = self.table();
        let slot = t.lookup(fd)?;
        t.retire(slot);
        let s = &mut t.slots[slot as usize];
        s.token = token;
        s.mask = interest.poll_mask();
        let generation = s.generation;
        t.intents.push(Intent::Arm { slot, generation });
        Ok(())
    }

    pub(crate) fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut t = self.table();
        let slot = t.lookup(fd)?;
        t.remove(slot);
        Ok(())
    }

    /// Submits what is pending, waits up to `timeout` for a completion, and
    /// reaps completions into `events`' room.
    pub(crate) fn wait(
        &self,
        driver: &mut UringDriver,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<WaitOutcome> {
        if !driver.wake_armed {
            driver.arm_wake()?;
        }
        {
            let mut t = self.table();
            let intents = std::mem::take(&mut t.intents);
            for intent in &intents {
                match *intent {
                    Intent::Arm { slot, generation } => {
                        let s = &mut t.slots[slot as usize];
                        if s.live && s.generation == generation && !s.armed {
                            s.armed = true;
                            let sqe = opcode::PollAdd::new(types::Fd(s.fd), s.mask)
                                .build()
                                .user_data(key(slot, generation));
                            driver.push(&sqe)?;
                        }
                    }
                    Intent::Cancel { key } => {
                        driver.push(&opcode::PollRemove::new(key).build().user_data(CANCEL_KEY))?;
                    }
                }
            }
            // Hand the (now empty) buffer back to keep its allocation.
            t.intents = intents;
            t.intents.clear();
        }

        let ready = !driver.ring.completion().is_empty();
        let submitter = driver.ring.submitter();
        let r = match timeout {
            _ if ready => submitter.submit(),
            Some(Duration::ZERO) => submitter.submit(),
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
        self.reap(driver, events)
    }

    fn reap(&self, driver: &mut UringDriver, events: &mut Events) -> io::Result<WaitOutcome> {
        let mut out = WaitOutcome::default();
        let mut table: Option<MutexGuard<'_, Table>> = None;
        let mut cq = driver.ring.completion();
        while !events.is_full() {
            let Some(cqe) = cq.next() else { break };
            match cqe.user_data() {
                WAKE_KEY => {
                    out.woke = true;
                    if !cqueue::more(cqe.flags()) {
                        driver.wake_armed = false;
                    }
                }
                MSG_KEY => out.woke = true,
                CANCEL_KEY => {}
                k => {
                    let t = table.get_or_insert_with(|| self.table());
                    let (slot, generation) = unkey(k);
                    let Some(s) = t.slots.get_mut(slot as usize) else {
                        continue;
                    };
                    if !s.live || s.generation != generation {
                        continue; // a completion of a retired registration
                    }
                    s.armed = false;
                    let mask = if cqe.result() < 0 {
                        flags::ERR
                    } else {
                        cqe.result() as u32
                    };
                    events.push(Event::from_mask(s.token, mask));
                    // Level-triggered: ask again before the next wait.
                    t.intents.push(Intent::Arm { slot, generation });
                }
            }
        }
        cq.sync();
        drop(cq);
        if !driver.wake_armed {
            driver.arm_wake()?;
        }
        Ok(out)
    }
}

impl Table {
    fn insert(&mut self, fd: RawFd, ident: (u64, u64), token: Token, mask: u32) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.fd = fd;
                s.ident = ident;
                s.token = token;
                s.mask = mask;
                s.live = true;
                s.armed = false;
                slot
            }
            None => {
                self.slots.push(Slot {
                    fd,
                    ident,
                    token,
                    mask,
                    generation: 0,
                    live: true,
                    armed: false,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.by_fd.insert(fd, slot);
        slot
    }

    /// The live slot of `fd`, which must still be the file registered.
    fn lookup(&mut self, fd: BorrowedFd<'_>) -> io::Result<u32> {
        let id = ident(fd)?;
        let Some(&slot) = self.by_fd.get(&fd.as_raw_fd()) else {
            return Err(super::not_registered(fd));
        };
        if self.slots[slot as usize].ident != id {
            // The registered file is gone; this is another one.
            self.remove(slot);
            return Err(super::not_registered(fd));
        }
        Ok(slot)
    }

    /// Moves a slot to a new generation, cancelling its request in the kernel.
    fn retire(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.armed {
            s.armed = false;
            self.intents.push(Intent::Cancel {
                key: key(slot, s.generation),
            });
        }
        s.generation = (s.generation + 1) & GEN_MASK;
    }

    fn remove(&mut self, slot: u32) {
        self.retire(slot);
        let s = &mut self.slots[slot as usize];
        s.live = false;
        self.by_fd.remove(&s.fd);
        self.free.push(slot);
    }
}

impl UringDriver {
    /// The ring's fd, for `IORING_OP_MSG_RING` senders.
    pub(crate) fn ring_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
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
    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the requests this backend makes (POLL_ADD, POLL_REMOVE)
            // reference no user memory; the fds they name are checked by the
            // kernel when the request runs.
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

fn unsupported(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("io_uring backend unavailable: {why}"),
    )
}

/// A duplicate of the ring's fd, for message senders.
pub(crate) fn dup_ring_fd(driver: &UringDriver) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(
        driver.ring_fd().as_fd(),
        0,
    )?)
}
