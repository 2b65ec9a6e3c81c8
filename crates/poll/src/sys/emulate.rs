//! Operations on the epoll backend, which the poller performs itself.
//!
//! A socket operation is tried at once (non-blocking); if the socket is not
//! ready, the operation waits in a queue for its file and direction, and the
//! file is registered, level-triggered, in a second epoll set of the
//! poller's, whose own fd sits in the main set: when readiness says the
//! operation will not block, the poll performs it. Operations on one file
//! and direction run in the order they were submitted. A file operation
//! (files are always "ready") runs on a pool of threads of the poller's
//! own, whose completions come back through the poller's coalesced wake:
//! as many threads as CPUs while jobs are quick, more (up to
//! [`POOL_MAX`]) while they block.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

use super::epoll::{Epoll, EpollDriver};
use super::ops::OpTable;
use crate::event::flags;
use crate::op::{Completion, Op, OpId, Output, SharedFd, cancelled};

/// The key of the operations' set in the main set.
pub(crate) const OPS_KEY: u64 = u64::MAX - 1;
/// The most threads the file pool starts.
const POOL_MAX: usize = 64;
/// The buffer one multishot receive reads into, per chunk.
const CHUNK: usize = 4096;

/// Which way an operation waits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Read,
    Write,
}

/// The operations waiting on one file.
#[derive(Debug)]
struct Waits {
    /// The file, held for its registration while operations wait on it.
    fd: SharedFd,
    read: VecDeque<OpId>,
    write: VecDeque<OpId>,
    /// The events it is registered for in the set (none: not registered).
    mask: u32,
}

/// What a try of an operation came to.
enum Try {
    /// It completed for good.
    Done,
    /// It cannot go on until its file is ready again.
    Blocked,
}

/// The epoll backend's operations.
#[derive(Default)]
pub(crate) struct Emulator {
    /// Submitted, to be started by the next poll.
    pending: Vec<OpId>,
    /// Where the pool delivers completions (made with the pool).
    done: Option<Arc<dyn Fn(Completion) + Send + Sync>>,
    set: Option<Epoll>,
    waits: HashMap<RawFd, Waits>,
    scratch: EpollDriver,
    pool: Option<FilePool>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("waiting_files", &self.waits.len())
            .field("pool", &self.pool.as_ref().map(|p| p.threads.len()))
            .finish()
    }
}

impl Emulator {
    /// Takes operation `id` (in `ops`) to be started by the next poll, as
    /// the io_uring backend's requests are sent to the kernel by its next
    /// wait: on both, an operation takes effect no earlier than the poll
    /// that follows its submission.
    pub(crate) fn submit(&mut self, id: OpId) {
        self.pending.push(id);
    }

    /// Starts the operations submitted since the last poll. `main` is the
    /// poller's set, into which the operations' set goes on first use;
    /// `done` delivers the pool's completions. One that cannot be started
    /// completes with the error.
    pub(crate) fn start_pending(
        &mut self,
        main: &Epoll,
        ops: &mut OpTable,
        sink: impl FnOnce() -> Arc<dyn Fn(Completion) + Send + Sync>,
    ) {
        let mut sink = Some(sink);
        for id in std::mem::take(&mut self.pending) {
            if self.done.is_none() && ops.get(id).is_some_and(Op::is_file_op) {
                self.done = Some((sink.take().expect("made once"))());
            }
            if let Err(e) = self.start(main, ops, id) {
                ops.finish(id, Err(e), None);
            }
        }
    }

    /// Starts operation `id`: on the pool for a file operation; otherwise
    /// tried now, and queued for readiness if it would block.
    fn start(&mut self, main: &Epoll, ops: &mut OpTable, id: OpId) -> io::Result<()> {
        let Some(op) = ops.get(id) else {
            // Cancelled before it started.
            return Ok(());
        };
        if op.is_file_op() {
            let op = ops.send_away(id).expect("checked above");
            let pool = match &mut self.pool {
                Some(p) => p,
                None => {
                    let done = self
                        .done
                        .as_ref()
                        .expect("made for the first file operation");
                    self.pool.insert(FilePool::new(Arc::clone(done)))
                }
            };
            return pool.spawn(id, op).map_err(|(e, op)| {
                // Back in the table, so that the error completes it with
                // its buffer.
                ops.bring_back(id, op);
                e
            });
        }
        if let Op::Close { .. } = op {
            if let Some(Op::Close { fd }) = ops.remove(id) {
                drop(fd);
            }
            ops.ready.push_back(Completion {
                id,
                result: Ok(0),
                more: false,
                output: Output::Nothing,
            });
            return Ok(());
        }
        let dir = direction(op);
        let fd = op
            .shared_fd()
            .expect("a socket operation has a file")
            .clone();
        if matches!(
            op,
            Op::Accept { .. } | Op::AcceptMulti { .. } | Op::Connect { .. }
        ) {
            // accept4 and connect have no per-call non-blocking flag.
            fd.set_nonblocking()?;
        }
        let raw = fd.as_raw_fd();
        let queued = self
            .waits
            .get(&raw)
            .is_some_and(|w| !w.queue(dir).is_empty());
        if !queued {
            if let Try::Done = attempt(ops, id, true) {
                return Ok(());
            }
        }
        // Connect in progress: completes when the socket turns writable.
        self.waits
            .entry(raw)
            .or_insert_with(|| Waits {
                fd,
                read: VecDeque::new(),
                write: VecDeque::new(),
                mask: 0,
            })
            .queue_mut(dir)
            .push_back(id);
        self.update(main, raw).inspect_err(|_| {
            // Nothing half-done: the operation is not queued.
            if let Some(w) = self.waits.get_mut(&raw) {
                w.queue_mut(dir).retain(|o| *o != id);
            }
        })
    }

    /// Whether operations wait to be started.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Runs the operations whose files the operations' set reports ready.
    pub(crate) fn run_ready(&mut self, main: &Epoll, ops: &mut OpTable) -> io::Result<()> {
        let Some(set) = &self.set else {
            return Ok(());
        };
        let mut ready = Vec::new();
        self.scratch.ready_keys(set, &mut ready)?;
        for (key, mask) in ready {
            let raw = key as RawFd;
            let bad = mask & (flags::ERR | flags::HUP) != 0;
            for dir in [Dir::Read, Dir::Write] {
                let wanted = match dir {
                    Dir::Read => flags::IN | flags::RDHUP,
                    Dir::Write => flags::OUT,
                };
                if mask & wanted == 0 && !bad {
                    continue;
                }
                while let Some(id) = self
                    .waits
                    .get(&raw)
                    .and_then(|w| w.queue(dir).front().copied())
                {
                    match attempt(ops, id, false) {
                        Try::Done => {
                            self.waits
                                .get_mut(&raw)
                                .expect("present")
                                .queue_mut(dir)
                                .pop_front();
                        }
                        Try::Blocked => break,
                    }
                }
            }
            self.update(main, raw)?;
        }
        Ok(())
    }

    /// Cancels operation `id` if it waits for readiness (it completes with
    /// `ECANCELED`); one on the pool, or already complete, goes on.
    pub(crate) fn cancel(&mut self, main: &Epoll, ops: &mut OpTable, id: OpId) -> io::Result<()> {
        if let Some(i) = self.pending.iter().position(|p| *p == id) {
            // Not started: it takes no effect.
            self.pending.remove(i);
            ops.finish(id, Err(cancelled()), None);
            return Ok(());
        }
        let Some(op) = ops.get(id) else {
            return Ok(());
        };
        let Some(fd) = op.shared_fd() else {
            return Ok(());
        };
        let raw = fd.as_raw_fd();
        let dir = direction(op);
        let Some(w) = self.waits.get_mut(&raw) else {
            return Ok(());
        };
        let before = w.queue(dir).len();
        w.queue_mut(dir).retain(|o| *o != id);
        if w.queue(dir).len() != before {
            ops.finish(id, Err(cancelled()), None);
            self.update(main, raw)?;
        }
        Ok(())
    }

    /// Registers, changes or removes `raw` in the operations' set to match
    /// what waits on it.
    fn update(&mut self, main: &Epoll, raw: RawFd) -> io::Result<()> {
        let Some(w) = self.waits.get_mut(&raw) else {
            return Ok(());
        };
        let mut want = 0;
        if !w.read.is_empty() {
            want |= flags::IN | flags::RDHUP;
        }
        if !w.write.is_empty() {
            want |= flags::OUT;
        }
        if want == w.mask {
            if want == 0 {
                self.waits.remove(&raw);
            }
            return Ok(());
        }
        if self.set.is_none() {
            let set = Epoll::new(None)?;
            epoll::add(main, &set, EventData::new_u64(OPS_KEY), EventFlags::IN)?;
            self.set = Some(set);
        }
        let set = self.set.as_ref().expect("made above");
        let fd = w.fd.as_fd();
        let data = EventData::new_u64(raw as u64);
        let result = match (w.mask, want) {
            (_, 0) => epoll::delete(set, fd),
            (0, m) => epoll::add(set, fd, data, EventFlags::from_bits_retain(m)),
            (_, m) => epoll::modify(set, fd, data, EventFlags::from_bits_retain(m)),
        };
        match result {
            Ok(()) => {}
            // Closed and reopened (a number reused while nothing waited):
            // the old registration went with the old file.
            Err(Errno::NOENT) if want != 0 => {
                epoll::add(set, fd, data, EventFlags::from_bits_retain(want))?;
            }
            Err(Errno::NOENT | Errno::BADF) if want == 0 => {}
            Err(e) => return Err(e.into()),
        }
        w.mask = want;
        if want == 0 {
            self.waits.remove(&raw);
        }
        Ok(())
    }

    /// Stops the pool (its threads finish their job and go).
    pub(crate) fn shutdown(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.stop();
        }
    }
}

impl Waits {
    fn queue(&self, dir: Dir) -> &VecDeque<OpId> {
        match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
        }
    }

    fn queue_mut(&mut self, dir: Dir) -> &mut VecDeque<OpId> {
        match dir {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

fn direction(op: &Op) -> Dir {
    match op {
        Op::Send { .. } | Op::Connect { .. } => Dir::Write,
        _ => Dir::Read,
    }
}

/// Tries operation `id` without blocking; `first` for the try at
/// submission (a connect starts then, and is finished by readiness).
fn attempt(ops: &mut OpTable, id: OpId, first: bool) -> Try {
    let Some(op) = ops.get_mut(id) else {
        return Try::Done;
    };
    match op {
        Op::Accept { fd } => match retry(|| rustix::net::accept_with(&*fd, SocketFlags::CLOEXEC)) {
            Err(Errno::AGAIN) => Try::Blocked,
            Ok(conn) => {
                ops.finish(id, Ok(0), Some(Output::Accepted(conn)));
                Try::Done
            }
            Err(e) => {
                ops.finish(id, Err(e.into()), Some(Output::Nothing));
                Try::Done
            }
        },
        Op::AcceptMulti { fd } => {
            let fd: SharedFd = fd.clone();
            loop {
                match retry(|| rustix::net::accept_with(&fd, SocketFlags::CLOEXEC)) {
                    Ok(conn) => ops.more(id, Ok(0), Output::Accepted(conn)),
                    Err(Errno::AGAIN) => return Try::Blocked,
                    // A connection that went before it was taken: next.
                    Err(Errno::CONNABORTED) => {}
                    Err(e) => {
                        ops.finish(id, Err(e.into()), Some(Output::Nothing));
                        return Try::Done;
                    }
                }
            }
        }
        Op::Recv { fd, buf } => {
            if buf.len() == buf.capacity() {
                ops.finish(id, Ok(0), None);
                return Try::Done;
            }
            let fd = fd.clone();
            let r = retry(|| {
                rustix::net::recv(
                    &fd,
                    rustix::buffer::spare_capacity(&mut *buf),
                    RecvFlags::DONTWAIT,
                )
                .map(|(n, _)| n)
            });
            match r {
                Err(Errno::AGAIN) => Try::Blocked,
                r => {
                    ops.finish(id, r.map_err(Into::into), None);
                    Try::Done
                }
            }
        }
        Op::RecvMulti { fd } => {
            let fd: SharedFd = fd.clone();
            loop {
                let mut chunk = Vec::with_capacity(CHUNK);
                let r = retry(|| {
                    rustix::net::recv(
                        &fd,
                        rustix::buffer::spare_capacity(&mut chunk),
                        RecvFlags::DONTWAIT,
                    )
                    .map(|(n, _)| n)
                });
                match r {
                    Ok(0) => {
                        ops.finish(id, Ok(0), Some(Output::Nothing));
                        return Try::Done;
                    }
                    Ok(n) => ops.more(id, Ok(n), Output::Data(chunk)),
                    Err(Errno::AGAIN) => return Try::Blocked,
                    Err(e) => {
                        ops.finish(id, Err(e.into()), Some(Output::Nothing));
                        return Try::Done;
                    }
                }
            }
        }
        Op::Send { fd, buf } => {
            let r =
                retry(|| rustix::net::send(&*fd, buf, SendFlags::DONTWAIT | SendFlags::NOSIGNAL));
            match r {
                Err(Errno::AGAIN) => Try::Blocked,
                r => {
                    ops.finish(id, r.map_err(Into::into), None);
                    Try::Done
                }
            }
        }
        Op::Connect { fd, addr } => {
            let r = if first {
                retry(|| rustix::net::connect(&*fd, &*addr))
            } else {
                // Writable: the connect is over; how it went is the
                // socket's pending error.
                match rustix::net::sockopt::socket_error(&*fd) {
                    Ok(r) => r,
                    Err(e) => Err(e),
                }
            };
            match r {
                Err(Errno::INPROGRESS | Errno::ALREADY | Errno::AGAIN) => Try::Blocked,
                r => {
                    ops.finish(id, r.map(|()| 0).map_err(Into::into), Some(Output::Nothing));
                    Try::Done
                }
            }
        }
        // Files and close never wait for readiness.
        Op::ReadAt { .. }
        | Op::ReadInto { .. }
        | Op::WriteAt { .. }
        | Op::Fsync { .. }
        | Op::Close { .. } => Try::Done,
    }
}

/// Runs `f` again while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

/// Runs a file operation, blocking: on a pool thread.
fn run_file_op(id: OpId, op: Op) -> Completion {
    let (result, output) = match op {
        Op::ReadAt {
            fd,
            offset,
            mut buf,
        } => {
            let r = if buf.len() == buf.capacity() {
                Ok(0)
            } else {
                retry(|| rustix::io::pread(&fd, rustix::buffer::spare_capacity(&mut buf), offset))
            };
            (r, Output::Buf(buf))
        }
        Op::ReadInto {
            fd,
            offset,
            mut buf,
            at,
            len,
        } => {
            let r = retry(|| rustix::io::pread(&fd, &mut buf[at..at + len], offset));
            (r, Output::Buf(buf))
        }
        Op::WriteAt { fd, offset, buf } => (
            retry(|| rustix::io::pwrite(&fd, &buf, offset)),
            Output::Buf(buf),
        ),
        Op::Fsync { fd } => (
            retry(|| rustix::fs::fsync(&fd)).map(|()| 0),
            Output::Nothing,
        ),
        other => unreachable!("{} is not a file operation", other.name()),
    };
    Completion {
        id,
        result: result.map_err(Into::into),
        more: false,
        output,
    }
}

/// Threads that run file operations, started as jobs wait (up to
/// `POOL_MAX`), each delivering its completion through `done`.
struct FilePool {
    shared: Arc<PoolShared>,
    threads: Vec<JoinHandle<()>>,
    /// How many threads may run jobs at once while jobs are quick: the
    /// CPUs there are (more only switch between each other).
    quick_limit: usize,
}

struct PoolShared {
    state: Mutex<PoolState>,
    ready: Condvar,
    done: Arc<dyn Fn(Completion) + Send + Sync>,
    /// Runs a job: [`run_file_op`] (the tests give jobs that block).
    run: fn(OpId, Op) -> Completion,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<(OpId, Op)>,
    /// Threads waiting for a signal.
    idle: usize,
    /// Signals sent and not yet taken: a thread signalled is no longer
    /// counted idle.
    signals: usize,
    /// A running average of how long a job takes, in nanoseconds.
    job_ns: u64,
    /// When each thread (by its number) began the job it is running.
    started: Vec<Option<Instant>>,
    stop: bool,
}

/// A job that takes longer than this on average blocks (on a device, as
/// an `O_DIRECT` read does): then the pool grows to [`POOL_MAX`] threads,
/// so that many can wait at once. Quicker jobs (the page cache) run on as
/// many threads as there are CPUs, each taking job after job, rather than
/// waking a thread per job. A job running this long holds its thread: one
/// more is called, so that the jobs behind it do not wait for it.
const BLOCKING_JOB_NS: u64 = 20_000;

impl FilePool {
    fn new(done: Arc<dyn Fn(Completion) + Send + Sync>) -> FilePool {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        FilePool::with_runner(done, run_file_op, cpus)
    }

    fn with_runner(
        done: Arc<dyn Fn(Completion) + Send + Sync>,
        run: fn(OpId, Op) -> Completion,
        quick_limit: usize,
    ) -> FilePool {
        FilePool {
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState::default()),
                ready: Condvar::new(),
                done,
                run,
            }),
            threads: Vec::new(),
            quick_limit,
        }
    }

    /// Queues a job. A thread is signalled, or started, only if fewer
    /// threads are at work than the jobs call for: the threads at work take
    /// job after job until none is left. If no thread can be started and
    /// there is none, the job comes back with the error.
    fn spawn(&mut self, id: OpId, op: Op) -> Result<(), (io::Error, Op)> {
        let (signal, start) = {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.jobs.push_back((id, op));
            let limit = if st.job_ns > BLOCKING_JOB_NS {
                POOL_MAX
            } else {
                self.quick_limit
            };
            // At work: running a job, or signalled and about to look.
            let working = self.threads.len() - st.idle;
            let blocked = || {
                let now = Instant::now();
                st.started.iter().flatten().any(|began| {
                    now.saturating_duration_since(*began) > Duration::from_nanos(BLOCKING_JOB_NS)
                })
            };
            if working >= limit && (working >= POOL_MAX || !blocked()) {
                (false, false)
            } else if st.idle > 0 {
                st.idle -= 1;
                st.signals += 1;
                (true, false)
            } else if self.threads.len() < POOL_MAX {
                // Its slot, numbered as the thread will be.
                st.started.push(None);
                (false, true)
            } else {
                (false, false)
            }
        };
        if signal {
            self.shared.ready.notify_one();
        }
        if start {
            let shared = Arc::clone(&self.shared);
            let me = self.threads.len();
            match std::thread::Builder::new()
                .name("rouse-file-io".into())
                .spawn(move || work(&shared, me))
            {
                Ok(t) => self.threads.push(t),
                Err(e) => {
                    let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.started.pop();
                    if !self.threads.is_empty() {
                        // The threads there are will take the job.
                        return Ok(());
                    }
                    let i = st
                        .jobs
                        .iter()
                        .position(|(j, _)| *j == id)
                        .expect("queued above");
                    let (_, op) = st.jobs.remove(i).expect("present");
                    return Err((e, op));
                }
            }
        }
        Ok(())
    }

    fn stop(self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop = true;
        self.shared.ready.notify_all();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Pool thread number `me`.
fn work(shared: &PoolShared, me: usize) {
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.stop {
            // Jobs not started are dropped with their buffers: the poller
            // is going, and nothing else holds their memory.
            st.jobs.clear();
            return;
        }
        match st.jobs.pop_front() {
            Some((id, op)) => {
                let began = Instant::now();
                st.started[me] = Some(began);
                drop(st);
                let c = (shared.run)(id, op);
                let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
                (shared.done)(c);
                st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.started[me] = None;
                st.job_ns = st.job_ns - st.job_ns / 8 + took / 8;
            }
            None => {
                // Idle until signalled (a spurious wake waits again).
                st.idle += 1;
                while st.signals == 0 && !st.stop {
                    st = shared.ready.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.signals > 0 {
                    st.signals -= 1;
                } else {
                    st.idle -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Released by the test: the job at offset `u64::MAX` waits for it.
    static GATE: Mutex<bool> = Mutex::new(false);
    static OPEN: Condvar = Condvar::new();

    fn gated(id: OpId, op: Op) -> Completion {
        if let Op::ReadAt {
            offset: u64::MAX, ..
        } = op
        {
            let mut open = GATE.lock().unwrap();
            while !*open {
                open = OPEN.wait(open).unwrap();
            }
        }
        Completion {
            id,
            result: Ok(0),
            more: false,
            output: Output::Nothing,
        }
    }

    fn read(offset: u64) -> Op {
        Op::ReadAt {
            fd: SharedFd::new(std::fs::File::open("/dev/null").unwrap()),
            offset,
            buf: Vec::new(),
        }
    }

    /// A job that blocks does not hold up the quick ones queued behind it,
    /// though the pool keeps one thread at work while jobs are quick.
    #[test]
    fn a_job_that_blocks_does_not_hold_up_the_jobs_behind_it() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let done: Arc<dyn Fn(Completion) + Send + Sync> =
            Arc::new(move |c: Completion| tx.lock().unwrap().send(c.id).unwrap());
        let mut pool = FilePool::with_runner(done, gated, 1);
        pool.spawn(OpId(1), read(u64::MAX))
            .map_err(|(e, _)| e)
            .unwrap();
        // Until it has been running a while, the one thread takes it all.
        std::thread::sleep(Duration::from_millis(20));
        for id in 2..=5 {
            pool.spawn(OpId(id), read(0)).map_err(|(e, _)| e).unwrap();
        }
        let mut quick: Vec<u64> = (0..4)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("the quick jobs waited for the blocked one")
                    .0
            })
            .collect();
        quick.sort_unstable();
        assert_eq!(quick, [2, 3, 4, 5]);
        *GATE.lock().unwrap() = true;
        OPEN.notify_all();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), OpId(1));
        assert!(
            pool.threads.len() >= 2,
            "a thread was added beside the blocked one"
        );
        pool.stop();
    }
}
