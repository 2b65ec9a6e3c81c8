//! The epoll backend, and the registration set of the io_uring backend.
//!
//! Level-triggered for registrations; the wake fd is registered
//! edge-triggered and never read on the loop side (a pipe is drained when it
//! fires, so that it never fills).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::io::Errno;

use super::emulate::OPS_KEY;
use super::{WAKE_KEY, WaitOutcome, timespec};
use crate::event::{Event, Events};
use crate::{Interest, Token};

#[derive(Debug)]
pub(crate) struct Epoll {
    ep: OwnedFd,
}

/// The poll side's scratch buffer.
#[derive(Default)]
pub(crate) struct EpollDriver {
    buf: Vec<epoll::Event>,
}

// SAFETY: `epoll::Event` is `!Send` only because its data may hold a pointer.
// This backend stores nothing but integers (tokens) in it, and the buffer is
// scratch space rewritten by every wait.
unsafe impl Send for EpollDriver {}

impl Epoll {
    /// An epoll set; with `wake`, that fd is in it too, edge-triggered,
    /// reported as the wake signal.
    pub(crate) fn new(wake: Option<BorrowedFd<'_>>) -> io::Result<Epoll> {
        let ep = epoll::create(CreateFlags::CLOEXEC)?;
        if let Some(wake) = wake {
            epoll::add(
                &ep,
                wake,
                EventData::new_u64(WAKE_KEY),
                EventFlags::IN | EventFlags::ET,
            )?;
        }
        Ok(Epoll { ep })
    }

    /// Adds the wake fd, edge-triggered, reported as the wake signal (for a
    /// set that was made without it).
    pub(crate) fn add_wake(&self, wake: BorrowedFd<'_>) -> io::Result<()> {
        epoll::add(
            &self.ep,
            wake,
            EventData::new_u64(WAKE_KEY),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(())
    }

    pub(crate) fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        epoll::add(&self.ep, fd, data(token), flags(interest)).map_err(|e| match e {
            Errno::EXIST => super::already_registered(fd),
            e => e.into(),
        })
    }

    pub(crate) fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        epoll::modify(&self.ep, fd, data(token), flags(interest)).map_err(|e| not_found(fd, e))
    }

    pub(crate) fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.ep, fd).map_err(|e| not_found(fd, e))
    }

    /// One `epoll_pwait2`. Fills `events` up to its room; says whether the
    /// wake fd fired.
    #[inline]
    pub(crate) fn wait(
        &self,
        driver: &mut EpollDriver,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<WaitOutcome> {
        let ts: Option<Timespec> = timeout.map(timespec);
        let (full, outcome) = self.wait_into(driver, events, ts.as_ref())?;
        if full && (outcome.woke || outcome.ops) {
            // The wake fd (or the operations' set) took a place that a
            // ready registration may want: look again, without waiting.
            let (_, more) = self.wait_into(driver, events, Some(&Timespec::default()))?;
            return Ok(WaitOutcome {
                woke: outcome.woke | more.woke,
                ops: outcome.ops | more.ops,
            });
        }
        Ok(outcome)
    }

    /// Reports what is ready now, as `events`' room allows, without waiting:
    /// what a backend does when the wake fd took a place in a full batch.
    pub(crate) fn fill(&self, driver: &mut EpollDriver, events: &mut Events) -> io::Result<()> {
        if !events.is_full() {
            self.wait_into(driver, events, Some(&Timespec::default()))?;
        }
        Ok(())
    }

    /// One wait for at most `events`' room: whether the kernel filled it,
    /// and what it said of the wake fd and the operations' set.
    #[inline]
    fn wait_into(
        &self,
        driver: &mut EpollDriver,
        events: &mut Events,
        ts: Option<&Timespec>,
    ) -> io::Result<(bool, WaitOutcome)> {
        let room = events.room();
        driver.buf.clear();
        driver.buf.reserve(room);
        let spare = &mut driver.buf.spare_capacity_mut()[..room];
        let (ready, _) = epoll::wait(&self.ep, spare, ts)?;
        let full = ready.len() == room;
        let mut outcome = WaitOutcome::default();
        for ev in ready.iter() {
            // Copies out of the packed struct.
            let (key, mask) = (ev.data.u64(), { ev.flags }.bits());
            match key {
                WAKE_KEY => outcome.woke = true,
                OPS_KEY => outcome.ops = true,
                _ => events.push(Event::from_mask(Token(key as usize), mask)),
            }
        }
        Ok((full, outcome))
    }
}

impl EpollDriver {
    /// Up to 1,024 (key, events) ready in `set` now, without waiting (a
    /// level-triggered set reports the rest again).
    pub(crate) fn ready_keys(&mut self, set: &Epoll, out: &mut Vec<(u64, u32)>) -> io::Result<()> {
        const BATCH: usize = 1024;
        self.buf.clear();
        self.buf.reserve(BATCH);
        let spare = &mut self.buf.spare_capacity_mut()[..BATCH];
        let (ready, _) = epoll::wait(&set.ep, spare, Some(&Timespec::default()))?;
        out.extend(ready.iter().map(|ev| (ev.data.u64(), { ev.flags }.bits())));
        Ok(())
    }
}

fn data(token: Token) -> EventData {
    EventData::new_u64(token.0 as u64)
}

fn flags(interest: Interest) -> EventFlags {
    EventFlags::from_bits_retain(interest.poll_mask())
}

fn not_found(fd: BorrowedFd<'_>, e: Errno) -> io::Error {
    match e {
        Errno::NOENT => super::not_registered(fd),
        e => e.into(),
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ep.as_fd()
    }
}
