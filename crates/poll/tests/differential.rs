//! epoll against io_uring on random fd-lifecycle programs, each checked step
//! by step against a model and against the files themselves.
//!
//! A program works on a few descriptor numbers holding files of several
//! kinds (socket ends, pipe read and write ends, eventfds, timerfds): it
//! registers, reregisters and deregisters them; closes them without
//! deregistering, or after a `dup` that keeps the file open; puts a new file,
//! of any kind, on a closed number; makes files readable, drains them, fills
//! pipes and drains them again, closes the peer end; wakes wakers from this
//! thread or another; polls with zero, sub-millisecond and short timeouts,
//! with buffers of capacities from 1 to 64 (more and less than can be ready
//! at once), here or on a short-lived thread the poller is moved to.
//!
//! After every poll, what was reported must equal what the model expects:
//! for each live registration, the readiness `poll(2)` gives for its file at
//! that moment (so a reported token belongs to a file that is ready, no
//! ready registration is missing, and an error is reported only for a file
//! in error), once; and every waker woken since the last poll, once. When
//! more is ready than the buffer holds, the poll must fill it: pending wakes
//! first, then ready registrations, each reported as `poll(2)` sees it. Every
//! registration call must give the model's outcome (`Ok`, `EBADF`,
//! `AlreadyExists`, `NotFound`). The same program runs on every backend and
//! wake path, and their reports must be the same.
//!
//! Deliberate differences between the backends, none of which these
//! programs can observe: on io_uring, a poll from a thread that has not
//! polled this poller before makes a ring there (a descriptor: it can fail
//! with `EMFILE` where epoll would not), and one poll reports at most 1,024
//! fd events.
//!
//! A binary of its own with one test: it puts files on chosen descriptor
//! numbers with `dup2`, which would be unsafe beside other tests opening
//! descriptors at the same time.

mod util;

use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rouse_poll::{Event, Events, Interest, Poller, Token, Waker};
use rustix::event::{PollFd, PollFlags};

const SLOTS: usize = 4;
const WAKERS: usize = 2;
const WAKER_BASE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Socket,
    PipeRead,
    PipeWrite,
    EventFd,
    TimerFd,
}

#[derive(Clone, Copy, Debug)]
enum Timeout {
    Zero,
    Sub,
    Short,
}

impl Timeout {
    fn duration(self) -> Duration {
        match self {
            Timeout::Zero => Duration::ZERO,
            Timeout::Sub => Duration::from_micros(300),
            Timeout::Short => Duration::from_millis(2),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Open(usize, Kind),
    Register(usize, usize, u8),
    Reregister(usize, usize, u8),
    Deregister(usize),
    Close(usize),
    DupThenClose(usize),
    DropDup(usize),
    /// A new file of that kind on the slot's closed number.
    Reuse(usize, Kind),
    /// Readable (a byte, a count, an expired timer); for a pipe's write
    /// end, full.
    Fill(usize),
    /// The opposite of `Fill`.
    Drain(usize),
    /// Closes the file's peer end (socket, pipe): hang-up, or an error on a
    /// write end.
    ClosePeer(usize),
    Wake(usize, bool),
    /// A poll with that timeout and a buffer of that capacity.
    Poll(Timeout, usize),
    PollOnThread,
}

/// The capacities polls use: below, at and above what a program can have
/// ready at once (`SLOTS` files and `WAKERS` wakers).
const CAPACITIES: [usize; 5] = [1, 2, 3, 5, 64];

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Socket),
        Just(Kind::PipeRead),
        Just(Kind::PipeWrite),
        Just(Kind::EventFd),
        Just(Kind::TimerFd),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        3 => (slot.clone(), kind()).prop_map(|(s, k)| Op::Open(s, k)),
        4 => (slot.clone(), 0..6usize, 1..4u8).prop_map(|(s, t, i)| Op::Register(s, t, i)),
        1 => (slot.clone(), 0..6usize, 1..4u8).prop_map(|(s, t, i)| Op::Reregister(s, t, i)),
        1 => slot.clone().prop_map(Op::Deregister),
        2 => slot.clone().prop_map(Op::Close),
        1 => slot.clone().prop_map(Op::DupThenClose),
        1 => (0..3usize).prop_map(Op::DropDup),
        2 => (slot.clone(), kind()).prop_map(|(s, k)| Op::Reuse(s, k)),
        4 => slot.clone().prop_map(Op::Fill),
        3 => slot.clone().prop_map(Op::Drain),
        1 => slot.clone().prop_map(Op::ClosePeer),
        2 => (0..WAKERS, any::<bool>()).prop_map(|(w, t)| Op::Wake(w, t)),
        6 => (
            prop_oneof![
                6 => Just(Timeout::Zero),
                1 => Just(Timeout::Sub),
                1 => Just(Timeout::Short),
            ],
            prop_oneof![
                1 => Just(64usize),
                1 => proptest::sample::select(&CAPACITIES[..]),
            ],
        )
            .prop_map(|(t, c)| Op::Poll(t, c)),
        1 => Just(Op::PollOnThread),
    ]
}

fn interest(bits: u8) -> Interest {
    match bits {
        1 => Interest::READABLE,
        2 => Interest::WRITABLE,
        _ => Interest::READABLE | Interest::WRITABLE,
    }
}

/// One file the program made, and how to act on it.
struct File {
    kind: Kind,
    /// The other end (socket, pipe), held by the program.
    peer: Option<OwnedFd>,
}

enum Slot {
    Empty,
    Open {
        fd: OwnedFd,
        file: usize,
    },
    /// The number was closed; `file` is the file it held.
    Closed {
        number: RawFd,
        file: usize,
    },
}

/// One registration as the model sees it: epoll's key is the file and the
/// number it was registered through.
#[derive(Clone, Copy, Debug)]
struct Reg {
    file: usize,
    number: RawFd,
    token: usize,
    interest: Interest,
}

/// The outcome of a call, as compared between model and poller.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    BadFd,
    Exists,
    NotFound,
    Other(String),
}

fn outcome(r: std::io::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Outcome::BadFd,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Outcome::Exists,
        Err(e) if e.kind() == ErrorKind::NotFound => Outcome::NotFound,
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// What a poll reported, in a form that compares across backends.
type Report = Vec<(usize, bool, bool, bool, bool)>;

/// What must be the same on every backend after a poll: the whole report
/// when everything ready fitted; when it did not, which ready registrations
/// fill the room may differ, so only how many events and which wakes.
#[derive(Debug, PartialEq, Eq)]
enum Compared {
    All(Report),
    Truncated { events: usize, wakes: Vec<usize> },
}

fn report(events: &Events) -> Report {
    let mut r: Report = events.iter().map(flags).collect();
    r.sort();
    r
}

fn flags(e: &Event) -> (usize, bool, bool, bool, bool) {
    (
        e.token().0,
        e.is_readable(),
        e.is_writable(),
        e.is_error(),
        e.is_hangup(),
    )
}

struct World {
    name: &'static str,
    poller: Arc<Poller>,
    wakers: Vec<Waker>,
    files: Vec<File>,
    slots: Vec<Slot>,
    dups: Vec<(usize, OwnedFd)>,
    regs: Vec<Reg>,
    woken: [bool; WAKERS],
    /// The next descriptor number to put a new file on: numbers only grow,
    /// so that a number the program closed is never taken by the kernel for
    /// another file (nor for the poller's own descriptors, which take the
    /// lowest free numbers, far below).
    next_number: RawFd,
}

/// Descriptor numbers each world's files are put on: its own range, far
/// above what the process opens otherwise.
const NUMBERS_BASE: RawFd = 256;
const NUMBERS_PER_WORLD: RawFd = 600;

/// Makes room for the numbers the worlds use.
fn raise_descriptor_limit(worlds: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let need = (NUMBERS_BASE + NUMBERS_PER_WORLD * worlds as RawFd) as u64;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < need) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum.map(|m| m.max(need)),
                maximum: limit.maximum,
            },
        )
        .unwrap_or_else(|e| panic!("this test needs {need} descriptors: {e}"));
    }
}

impl World {
    fn new(name: &'static str, poller: Poller, index: usize) -> World {
        let wakers = (0..WAKERS)
            .map(|i| Waker::new(&poller, Token(WAKER_BASE + i)).unwrap())
            .collect();
        World {
            name,
            poller: Arc::new(poller),
            wakers,
            files: Vec::new(),
            slots: (0..SLOTS).map(|_| Slot::Empty).collect(),
            dups: Vec::new(),
            regs: Vec::new(),
            woken: [false; WAKERS],
            next_number: NUMBERS_BASE + NUMBERS_PER_WORLD * index as RawFd,
        }
    }

    /// Moves `fd` to this world's next unused number.
    fn renumber(&mut self, fd: OwnedFd) -> OwnedFd {
        let n = self.next_number;
        self.next_number += 1;
        let moved = rustix::io::fcntl_dupfd_cloexec(&fd, n).unwrap();
        assert_eq!(moved.as_raw_fd(), n, "number {n} was taken");
        moved
    }

    /// Makes a file of `kind`: the end the program registers, and the file.
    fn make(&mut self, kind: Kind) -> (OwnedFd, usize) {
        let nb = rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC;
        let (fd, peer) = match kind {
            Kind::Socket => {
                let (a, b) = UnixStream::pair().unwrap();
                a.set_nonblocking(true).unwrap();
                b.set_nonblocking(true).unwrap();
                (OwnedFd::from(a), Some(OwnedFd::from(b)))
            }
            Kind::PipeRead => {
                let (r, w) = rustix::pipe::pipe_with(nb).unwrap();
                (r, Some(w))
            }
            Kind::PipeWrite => {
                let (r, w) = rustix::pipe::pipe_with(nb).unwrap();
                (w, Some(r))
            }
            Kind::EventFd => {
                use rustix::event::EventfdFlags as F;
                (
                    rustix::event::eventfd(0, F::CLOEXEC | F::NONBLOCK).unwrap(),
                    None,
                )
            }
            Kind::TimerFd => {
                use rustix::time::{TimerfdClockId, TimerfdFlags};
                let fd = rustix::time::timerfd_create(
                    TimerfdClockId::Monotonic,
                    TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
                )
                .unwrap();
                (fd, None)
            }
        };
        let fd = self.renumber(fd);
        let peer = peer.map(|p| self.renumber(p));
        self.files.push(File { kind, peer });
        (fd, self.files.len() - 1)
    }

    /// An open descriptor of `file`: its slot's, or a dup's.
    fn fd_of(&self, file: usize) -> Option<BorrowedFd<'_>> {
        let in_slot = self.slots.iter().find_map(|s| match s {
            Slot::Open { fd, file: f } if *f == file => Some(fd.as_fd()),
            _ => None,
        });
        in_slot.or_else(|| {
            self.dups
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, fd)| fd.as_fd())
        })
    }

    /// After a descriptor of `file` was closed: if it was the last, the file
    /// is gone, and so are its registrations.
    fn forget_if_gone(&mut self, file: usize) {
        if self.fd_of(file).is_none() {
            self.regs.retain(|r| r.file != file);
        }
    }

    /// The slot's number, open or closed, and its file.
    fn target(&self, slot: usize) -> Option<(BorrowedFd<'_>, Option<usize>)> {
        match &self.slots[slot] {
            Slot::Empty => None,
            Slot::Open { fd, file } => Some((fd.as_fd(), Some(*file))),
            Slot::Closed { number, .. } => {
                // SAFETY: the number is closed, and this binary's only test
                // opens no descriptor while the borrow is in use; the poller
                // only passes it to epoll_ctl, which fails with EBADF.
                Some((unsafe { BorrowedFd::borrow_raw(*number) }, None))
            }
        }
    }

    fn slot_file(&self, slot: usize) -> Option<usize> {
        match self.slots[slot] {
            Slot::Empty => None,
            Slot::Open { file, .. } | Slot::Closed { file, .. } => Some(file),
        }
    }

    fn registration_call(&mut self, slot: usize, op: &Op) {
        let Some((fd, file)) = self.target(slot) else {
            return;
        };
        let number = fd.as_raw_fd();
        let existing = file.and_then(|f| {
            self.regs
                .iter()
                .position(|r| r.file == f && r.number == number)
        });
        let (expected, got) = match *op {
            Op::Register(_, token, bits) => {
                let expected = match (file, existing) {
                    (None, _) => Outcome::BadFd,
                    (Some(_), Some(_)) => Outcome::Exists,
                    (Some(_), None) => Outcome::Ok,
                };
                let got = outcome(self.poller.register(fd, Token(token), interest(bits)));
                if expected == Outcome::Ok {
                    self.regs.push(Reg {
                        file: file.unwrap(),
                        number,
                        token,
                        interest: interest(bits),
                    });
                }
                (expected, got)
            }
            Op::Reregister(_, token, bits) => {
                let expected = match (file, existing) {
                    (None, _) => Outcome::BadFd,
                    (Some(_), None) => Outcome::NotFound,
                    (Some(_), Some(_)) => Outcome::Ok,
                };
                let got = outcome(self.poller.reregister(fd, Token(token), interest(bits)));
                if let Some(i) = existing {
                    self.regs[i].token = token;
                    self.regs[i].interest = interest(bits);
                }
                (expected, got)
            }
            Op::Deregister(_) => {
                let expected = match (file, existing) {
                    (None, _) => Outcome::BadFd,
                    (Some(_), None) => Outcome::NotFound,
                    (Some(_), Some(_)) => Outcome::Ok,
                };
                let got = outcome(self.poller.deregister(fd));
                if let Some(i) = existing {
                    self.regs.remove(i);
                }
                (expected, got)
            }
            _ => unreachable!(),
        };
        assert_eq!(got, expected, "{}: {op:?}", self.name);
    }

    /// What the poller must report now: every live registration whose file
    /// `poll(2)` finds ready for its interest (errors and hang-ups always),
    /// and every waker woken since the last poll.
    fn expected(&self) -> Report {
        let mut out = Report::new();
        for r in &self.regs {
            let fd = self
                .fd_of(r.file)
                .expect("a live registration's file is open");
            let mut want = PollFlags::empty();
            if r.interest.is_readable() {
                want |= PollFlags::IN | PollFlags::RDHUP;
            }
            if r.interest.is_writable() {
                want |= PollFlags::OUT;
            }
            let mut pfd = [PollFd::new(&fd, want)];
            rustix::event::poll(&mut pfd, Some(&rustix::time::Timespec::default())).unwrap();
            let got = pfd[0].revents();
            if got.is_empty() {
                continue;
            }
            out.push((
                r.token,
                got.intersects(PollFlags::IN | PollFlags::PRI | PollFlags::RDHUP | PollFlags::HUP),
                got.contains(PollFlags::OUT),
                got.contains(PollFlags::ERR),
                got.intersects(PollFlags::HUP | PollFlags::RDHUP),
            ));
        }
        for (i, woken) in self.woken.iter().enumerate() {
            if *woken {
                out.push((WAKER_BASE + i, true, false, false, false));
            }
        }
        out.sort();
        out
    }

    /// Checks a poll with room for `capacity` events against the files and
    /// the wakers, and says what the backends must agree on.
    fn check_poll(
        &mut self,
        reported: Report,
        capacity: usize,
        elapsed: Duration,
        timeout: Timeout,
        op: &Op,
    ) -> Compared {
        let expected = self.expected();
        let is_wake = |e: &(usize, bool, bool, bool, bool)| e.0 >= WAKER_BASE;
        let compared = if expected.len() <= capacity {
            assert_eq!(
                reported, expected,
                "{}: {op:?} reported (token, readable, writable, error, hang-up) \
                 against the files' own readiness",
                self.name
            );
            Compared::All(reported.clone())
        } else {
            // Full: every event reported is one expected, and the room is
            // used up. Wakes go first.
            assert_eq!(
                reported.len(),
                capacity,
                "{}: {op:?} reported {reported:?}, fewer than its room of {capacity}, \
                 while {expected:?} were ready",
                self.name
            );
            for e in &reported {
                assert!(
                    expected.contains(e),
                    "{}: {op:?} reported {e:?}, not among the ready {expected:?}",
                    self.name
                );
            }
            let wakes_expected = expected.iter().filter(|e| is_wake(e)).count();
            let wakes: Vec<usize> = reported
                .iter()
                .filter(|e| is_wake(e))
                .map(|e| e.0)
                .collect();
            assert_eq!(
                wakes.len(),
                wakes_expected.min(capacity),
                "{}: {op:?}: pending wakes go before ready files: {reported:?}",
                self.name
            );
            Compared::Truncated {
                events: reported.len(),
                wakes,
            }
        };
        if expected.is_empty() {
            assert!(
                elapsed >= timeout.duration(),
                "{}: returned empty after {elapsed:?}, before its timeout",
                self.name
            );
        }
        // A wake that did not fit is still pending.
        for e in reported.iter().filter(|e| is_wake(e)) {
            self.woken[e.0 - WAKER_BASE] = false;
        }
        compared
    }

    /// Runs one step; returns what a poll reported, for the comparison
    /// between backends.
    fn step(&mut self, op: &Op) -> Option<Compared> {
        match *op {
            Op::Open(slot, kind) => {
                if matches!(self.slots[slot], Slot::Empty) {
                    let (fd, file) = self.make(kind);
                    self.slots[slot] = Slot::Open { fd, file };
                }
            }
            Op::Register(slot, ..) | Op::Reregister(slot, ..) | Op::Deregister(slot) => {
                self.registration_call(slot, op);
            }
            Op::Close(slot) | Op::DupThenClose(slot) => {
                if let Slot::Open { fd, file } =
                    std::mem::replace(&mut self.slots[slot], Slot::Empty)
                {
                    if matches!(op, Op::DupThenClose(_)) {
                        let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 0).unwrap();
                        let dup = self.renumber(dup);
                        self.dups.push((file, dup));
                    }
                    let number = fd.as_raw_fd();
                    drop(fd);
                    self.slots[slot] = Slot::Closed { number, file };
                    self.forget_if_gone(file);
                }
            }
            Op::DropDup(i) => {
                if i < self.dups.len() {
                    let (file, dup) = self.dups.remove(i);
                    drop(dup);
                    self.forget_if_gone(file);
                }
            }
            Op::Reuse(slot, kind) => {
                if let Slot::Closed { number, .. } = self.slots[slot] {
                    let (new, file) = self.make(kind);
                    // SAFETY: `number` is closed, and nothing else in this
                    // process opens descriptors meanwhile; dup2 opens it.
                    let mut target =
                        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(number) };
                    rustix::io::dup2(&new, &mut target).unwrap();
                    drop(new);
                    self.slots[slot] = Slot::Open { fd: target, file };
                }
            }
            Op::Fill(slot) => {
                if let Some(file) = self.slot_file(slot) {
                    self.fill(file);
                }
            }
            Op::Drain(slot) => {
                if let Some(file) = self.slot_file(slot) {
                    self.drain(file);
                }
            }
            Op::ClosePeer(slot) => {
                if let Some(file) = self.slot_file(slot) {
                    self.files[file].peer = None;
                }
            }
            Op::Wake(i, from_thread) => {
                if from_thread {
                    let waker = self.wakers[i].clone();
                    std::thread::spawn(move || waker.wake().unwrap())
                        .join()
                        .unwrap();
                } else {
                    self.wakers[i].wake().unwrap();
                }
                self.woken[i] = true;
            }
            Op::Poll(timeout, capacity) => {
                let mut events = Events::with_capacity(capacity);
                let start = Instant::now();
                self.poller
                    .poll(&mut events, Some(timeout.duration()))
                    .unwrap();
                let elapsed = start.elapsed();
                let reported = report(&events);
                return Some(self.check_poll(reported, capacity, elapsed, timeout, op));
            }
            Op::PollOnThread => {
                let poller = Arc::clone(&self.poller);
                let (reported, elapsed) = std::thread::spawn(move || {
                    let mut events = Events::with_capacity(64);
                    let start = Instant::now();
                    poller.poll(&mut events, Some(Duration::ZERO)).unwrap();
                    (report(&events), start.elapsed())
                })
                .join()
                .unwrap();
                return Some(self.check_poll(reported, 64, elapsed, Timeout::Zero, op));
            }
        }
        None
    }

    fn fill(&mut self, file: usize) {
        let f = &self.files[file];
        let own = self.fd_of(file);
        match f.kind {
            Kind::Socket | Kind::PipeRead => {
                if let Some(peer) = &f.peer {
                    let _ = rustix::io::write(peer, b"x");
                }
            }
            Kind::PipeWrite => {
                if let Some(w) = own {
                    while rustix::io::write(w, &[0; 4096]).is_ok() {}
                }
            }
            Kind::EventFd => {
                if let Some(fd) = own {
                    rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
                }
            }
            Kind::TimerFd => {
                if let Some(fd) = own {
                    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec};
                    let zero = Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    let spec = Itimerspec {
                        it_interval: zero,
                        it_value: Timespec {
                            tv_sec: 0,
                            tv_nsec: 1,
                        },
                    };
                    rustix::time::timerfd_settime(fd, TimerfdTimerFlags::empty(), &spec).unwrap();
                    // Expired once poll(2) says so: from then on it is steady.
                    let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
                    rustix::event::poll(&mut pfd, None).unwrap();
                }
            }
        }
    }

    fn drain(&mut self, file: usize) {
        let f = &self.files[file];
        let mut buf = [0u8; 65536];
        let from = match f.kind {
            // A write end is drained from its reader.
            Kind::PipeWrite => f.peer.as_ref().map(|p| p.as_fd()),
            _ => self.fd_of(file),
        };
        if let Some(fd) = from {
            while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// The worlds a program runs in: one per backend and io_uring wake path.
fn worlds() -> Vec<World> {
    let pollers = util::pollers();
    raise_descriptor_limit(pollers.len());
    pollers
        .into_iter()
        .enumerate()
        .map(|(i, (name, poller))| World::new(name, poller, i))
        .collect()
}

fn run(program: &[Op]) {
    let mut worlds = worlds();
    for (i, op) in program.iter().enumerate() {
        let reports: Vec<(&'static str, Option<Compared>)> =
            worlds.iter_mut().map(|w| (w.name, w.step(op))).collect();
        let (first, rest) = reports.split_first().unwrap();
        for other in rest {
            assert_eq!(
                first.1, other.1,
                "step {i} ({op:?}): {} and {} disagree",
                first.0, other.0
            );
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000)
}

/// The one test of this binary: the shapes the defects of earlier versions
/// took, as fixed programs, then random programs.
#[test]
fn every_backend_reports_exactly_what_the_files_say() {
    use Kind::*;
    use Op::*;
    let zero = Poll(Timeout::Zero, 64);
    let known: Vec<Vec<Op>> = vec![
        // Closed without deregister, before and after a poll.
        vec![
            Open(0, PipeRead),
            Register(0, 1, 1),
            Close(0),
            zero.clone(),
            Poll(Timeout::Short, 64),
        ],
        vec![
            Open(0, Socket),
            Register(0, 1, 1),
            zero.clone(),
            Close(0),
            Poll(Timeout::Short, 64),
        ],
        // A new eventfd (timerfd) on the number of a closed one.
        vec![
            Open(0, EventFd),
            Register(0, 1, 1),
            zero.clone(),
            Close(0),
            Reuse(0, EventFd),
            Register(0, 2, 1),
            Fill(0),
            zero.clone(),
        ],
        vec![
            Open(0, TimerFd),
            Register(0, 1, 1),
            zero.clone(),
            Close(0),
            Reuse(0, TimerFd),
            Register(0, 2, 1),
            Fill(0),
            zero.clone(),
        ],
        // Stale readiness: made ready and drained between polls.
        vec![
            Open(0, PipeRead),
            Register(0, 1, 1),
            zero.clone(),
            Fill(0),
            Drain(0),
            zero.clone(),
        ],
        // A dup keeps the registration; a new file takes the number.
        vec![
            Open(0, PipeRead),
            Register(0, 1, 1),
            zero.clone(),
            DupThenClose(0),
            Reuse(0, PipeWrite),
            zero.clone(),
            Fill(0),
            zero.clone(),
            DropDup(0),
            zero.clone(),
        ],
        // Moved to a thread that exits, then polled here.
        vec![
            Open(0, PipeRead),
            Register(0, 1, 1),
            PollOnThread,
            zero.clone(),
            Fill(0),
            zero.clone(),
        ],
        // A write end whose reader goes: an error, reported as such.
        vec![
            Open(0, PipeWrite),
            Register(0, 1, 3),
            Fill(0),
            zero.clone(),
            ClosePeer(0),
            zero.clone(),
        ],
    ];
    for program in &known {
        run(program);
    }

    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    // Which case first failed, before shrinking: how hard a defect is to find.
    let ran = std::cell::Cell::new(0u32);
    let first_failure = std::cell::Cell::new(None);
    let result = runner.run(&proptest::collection::vec(op(), 1..60), |program| {
        ran.set(ran.get() + 1);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&program)));
        if let Err(payload) = outcome {
            if first_failure.get().is_none() {
                first_failure.set(Some(ran.get()));
            }
            std::panic::resume_unwind(payload);
        }
        Ok(())
    });
    if let Err(e) = result {
        let first = first_failure.get().unwrap_or(0);
        panic!("{e}\n(first found by random case {first}, before shrinking)");
    }
}
