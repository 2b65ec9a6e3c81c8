//! Groups `file_cached` and `file_direct`: random 4 KiB reads of a 256 MiB
//! file, 64 in flight, from the page cache and with `O_DIRECT` (each read
//! goes to the device). One operation is one read.
//!
//! Rows: a rouse loop reading with operations on io_uring (the kernel
//! reads; no thread pool) and on epoll (the poller's pool of threads reads);
//! the nginx thread-pool design (rouse's `WorkerPool` of 2 threads doing
//! `pread`); 64 blocking threads; one thread's `pread`, one at a time;
//! `tokio::fs` (seek and read, 64 tasks, on a current-thread runtime);
//! tokio's `spawn_blocking(pread)`; and monoio's `read_at` on its io_uring
//! driver (page cache only: its buffers cannot be aligned for `O_DIRECT`).
//!
//! The `_cpu` rows time the same work by the process's CPU clock instead of
//! the wall clock, so that the targets on CPU per read are ratios measured
//! like every other.

use std::cell::Cell;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rouse_loop::{Backend, Ctx, EventLoop, Poller, SharedFd, WorkerPool};

use crate::{Bench, Runner};

const BLOCK: usize = 4096;
const FILE_MIB: u64 = 256;
const BLOCKS: u64 = FILE_MIB * (1 << 20) / BLOCK as u64;
const DEPTH: usize = 64;

/// The file every row reads: made once per process in the temporary
/// directory (reused if a run left it), each byte its offset's low byte.
fn path() -> Result<&'static PathBuf, String> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join("rouse-bench-256mib");
        let want = FILE_MIB << 20;
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(want) {
            let chunk: Vec<u8> = (0..1usize << 20).map(|i| i as u8).collect();
            let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            for _ in 0..FILE_MIB {
                std::io::Write::write_all(&mut f, &chunk).map_err(|e| e.to_string())?;
            }
            f.sync_all().map_err(|e| e.to_string())?;
        }
        Ok(path)
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn open(direct: bool) -> Result<std::fs::File, String> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if direct {
        o.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
    }
    o.open(path()?).map_err(|e| {
        if direct {
            format!("the file system refuses O_DIRECT: {e}")
        } else {
            e.to_string()
        }
    })
}

/// Block numbers, xorshift: cheap, and no stride for read-ahead to follow.
#[derive(Clone, Copy)]
struct Blocks(u64);

impl Blocks {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % BLOCKS
    }
}

/// A buffer with an aligned block inside, at `at`.
fn aligned_buf() -> (Vec<u8>, usize) {
    let buf = vec![0u8; 2 * BLOCK];
    let at = buf.as_ptr().align_offset(BLOCK);
    (buf, at)
}

/// The process's CPU time so far.
fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Times `inner` by the process's CPU clock instead of the wall clock.
struct Cpu<R>(R);

impl<R: Runner> Runner for Cpu<R> {
    fn run(&mut self, n: u64) -> Duration {
        let before = cpu_now();
        self.0.run(n);
        cpu_now() - before
    }
}

/// A rouse loop reading with operations, `DEPTH` in flight.
struct RouseOps {
    lp: EventLoop,
    file: SharedFd,
    rng: Rc<Cell<Blocks>>,
}

impl RouseOps {
    fn new(backend: Backend, direct: bool) -> Result<RouseOps, String> {
        let poller = Poller::with_backend(backend).map_err(|e| e.to_string())?;
        Ok(RouseOps {
            lp: EventLoop::with_poller(poller).map_err(|e| e.to_string())?,
            file: SharedFd::new(open(direct)?),
            rng: Rc::new(Cell::new(Blocks(0x9e37_79b9_7f4a_7c15))),
        })
    }
}

/// How far a run has got: reads started and done, and how many it wants.
struct Progress {
    started: Cell<u64>,
    done: Cell<u64>,
    want: u64,
}

fn read_one(
    cx: &mut Ctx,
    file: &SharedFd,
    rng: &Rc<Cell<Blocks>>,
    p: &Rc<Progress>,
    buf: (Vec<u8>, usize),
) {
    let (buf, at) = buf;
    let mut r = rng.get();
    let offset = r.next() * BLOCK as u64;
    rng.set(r);
    p.started.set(p.started.get() + 1);
    let (f, rng, p) = (file.clone(), Rc::clone(rng), Rc::clone(p));
    cx.read_into(file, offset, buf, (at, BLOCK), move |n, buf, cx| {
        assert_eq!(n.expect("a read failed"), BLOCK);
        debug_assert_eq!(buf[at + 1], (offset + 1) as u8);
        p.done.set(p.done.get() + 1);
        if p.started.get() < p.want {
            read_one(cx, &f, &rng, &p, (buf, at));
        }
    })
    .expect("submit a read");
}

impl Runner for RouseOps {
    fn run(&mut self, reads: u64) -> Duration {
        let p = Rc::new(Progress {
            started: Cell::new(0),
            done: Cell::new(0),
            want: reads,
        });
        let began = Instant::now();
        for _ in 0..DEPTH.min(reads as usize) {
            read_one(&mut self.lp, &self.file, &self.rng, &p, aligned_buf());
        }
        while p.done.get() < reads {
            self.lp
                .run_once(Some(Duration::from_secs(10)))
                .expect("the loop failed");
        }
        began.elapsed()
    }
}

/// nginx's design: a `WorkerPool` of 2 threads doing `pread`, `DEPTH` jobs
/// in flight, each completion delivered on the loop thread.
struct Pool2 {
    lp: EventLoop,
    pool: Rc<WorkerPool>,
    file: Arc<std::fs::File>,
    rng: Rc<Cell<Blocks>>,
}

fn job(
    cx: &mut Ctx,
    pool: &Rc<WorkerPool>,
    file: &Arc<std::fs::File>,
    rng: &Rc<Cell<Blocks>>,
    p: &Rc<Progress>,
    (mut buf, at): (Vec<u8>, usize),
) {
    let mut r = rng.get();
    let offset = r.next() * BLOCK as u64;
    rng.set(r);
    p.started.set(p.started.get() + 1);
    let f = Arc::clone(file);
    let (pool2, file2, rng, p) = (
        Rc::clone(pool),
        Arc::clone(file),
        Rc::clone(rng),
        Rc::clone(p),
    );
    pool.spawn_local(
        cx,
        move || {
            let n = rustix::io::pread(&*f, &mut buf[at..at + BLOCK], offset);
            (n, buf)
        },
        move |(n, buf), cx| {
            assert_eq!(n.expect("a read failed"), BLOCK);
            p.done.set(p.done.get() + 1);
            if p.started.get() < p.want {
                job(cx, &pool2, &file2, &rng, &p, (buf, at));
            }
        },
    )
    .expect("spawn a job");
}

impl Runner for Pool2 {
    fn run(&mut self, reads: u64) -> Duration {
        let p = Rc::new(Progress {
            started: Cell::new(0),
            done: Cell::new(0),
            want: reads,
        });
        let began = Instant::now();
        for _ in 0..DEPTH.min(reads as usize) {
            job(
                &mut self.lp,
                &self.pool,
                &self.file,
                &self.rng,
                &p,
                aligned_buf(),
            );
        }
        while p.done.get() < reads {
            self.lp
                .run_once(Some(Duration::from_secs(10)))
                .expect("the loop failed");
        }
        began.elapsed()
    }
}

/// `DEPTH` threads, each reading block after block until the run's reads
/// are all taken.
fn threads(file: &std::fs::File, reads: u64, seed: u64) -> Duration {
    let next = AtomicU64::new(0);
    let began = Instant::now();
    std::thread::scope(|s| {
        for t in 0..DEPTH as u64 {
            let next = &next;
            s.spawn(move || {
                let (mut buf, at) = aligned_buf();
                let mut rng = Blocks(seed ^ (t + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                while next.fetch_add(1, Ordering::Relaxed) < reads {
                    let offset = rng.next() * BLOCK as u64;
                    let n = rustix::io::pread(file, &mut buf[at..at + BLOCK], offset)
                        .expect("a read failed");
                    assert_eq!(n, BLOCK);
                }
            });
        }
    });
    began.elapsed()
}

/// One thread's `pread`, one read at a time.
fn sync_pread(file: &std::fs::File, rng: &mut Blocks, reads: u64) -> Duration {
    let (mut buf, at) = aligned_buf();
    let began = Instant::now();
    for _ in 0..reads {
        let offset = rng.next() * BLOCK as u64;
        let n = rustix::io::pread(file, &mut buf[at..at + BLOCK], offset).expect("a read failed");
        assert_eq!(n, BLOCK);
    }
    began.elapsed()
}

/// `tokio::fs`: `DEPTH` tasks on a current-thread runtime, each with its own
/// handle, seeking and reading.
struct TokioFs {
    rt: tokio::runtime::Runtime,
    files: Vec<std::fs::File>,
    seed: u64,
}

/// tokio::fs reads through a buffer of its own, whose address O_DIRECT
/// needs aligned and tokio does not align: some reads fail with `EINVAL`,
/// as the allocator places the buffer.
const TOKIO_FS_DIRECT: &str =
    "tokio::fs reads through a buffer of its own, which is not aligned as O_DIRECT needs (EINVAL)";

impl Runner for TokioFs {
    fn run(&mut self, reads: u64) -> Duration {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let next = Arc::new(AtomicU64::new(0));
        let files: Vec<std::fs::File> = self
            .files
            .iter()
            .map(|f| {
                // A new open file per task and run (not a dup: see above).
                std::fs::File::open(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(f)
                ))
                .expect("reopen the file")
            })
            .collect();
        self.seed = self.seed.wrapping_add(1);
        let seed = self.seed;
        let began = Instant::now();
        self.rt.block_on(async {
            let mut tasks = Vec::new();
            for (t, f) in files.into_iter().enumerate() {
                let next = Arc::clone(&next);
                tasks.push(tokio::spawn(async move {
                    let mut f = tokio::fs::File::from_std(f);
                    let mut buf = vec![0u8; BLOCK];
                    let mut rng = Blocks(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9));
                    while next.fetch_add(1, Ordering::Relaxed) < reads {
                        let offset = rng.next() * BLOCK as u64;
                        f.seek(std::io::SeekFrom::Start(offset))
                            .await
                            .expect("seek");
                        f.read_exact(&mut buf).await.expect("a read failed");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("a task panicked");
            }
        });
        began.elapsed()
    }
}

/// tokio's `spawn_blocking(pread)`, `DEPTH` in flight.
struct TokioBlocking {
    rt: tokio::runtime::Runtime,
    file: Arc<std::fs::File>,
    seed: u64,
}

impl Runner for TokioBlocking {
    fn run(&mut self, reads: u64) -> Duration {
        let next = Arc::new(AtomicU64::new(0));
        self.seed = self.seed.wrapping_add(1);
        let seed = self.seed;
        let began = Instant::now();
        self.rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..DEPTH as u64 {
                let (next, file) = (Arc::clone(&next), Arc::clone(&self.file));
                tasks.push(tokio::spawn(async move {
                    let mut rng = Blocks(seed ^ (t + 1).wrapping_mul(0x9e37_79b9));
                    let mut buf = Some(aligned_buf());
                    while next.fetch_add(1, Ordering::Relaxed) < reads {
                        let offset = rng.next() * BLOCK as u64;
                        let (mut b, at) = buf.take().expect("returned");
                        let f = Arc::clone(&file);
                        let (n, b) = tokio::task::spawn_blocking(move || {
                            let n = rustix::io::pread(&*f, &mut b[at..at + BLOCK], offset);
                            (n, b)
                        })
                        .await
                        .expect("a read panicked");
                        assert_eq!(n.expect("a read failed"), BLOCK);
                        buf = Some((b, at));
                    }
                }));
            }
            for t in tasks {
                t.await.expect("a task panicked");
            }
        });
        began.elapsed()
    }
}

/// monoio's `read_at` on its io_uring driver, `DEPTH` tasks.
struct Monoio {
    rt: monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>,
    file: Rc<monoio::fs::File>,
    seed: u64,
}

impl Runner for Monoio {
    fn run(&mut self, reads: u64) -> Duration {
        let next = Rc::new(Cell::new(0u64));
        self.seed = self.seed.wrapping_add(1);
        let seed = self.seed;
        let file = Rc::clone(&self.file);
        let began = Instant::now();
        self.rt.block_on(async move {
            let mut tasks = Vec::new();
            for t in 0..DEPTH as u64 {
                let (next, file) = (Rc::clone(&next), Rc::clone(&file));
                tasks.push(monoio::spawn(async move {
                    let mut rng = Blocks(seed ^ (t + 1).wrapping_mul(0x9e37_79b9));
                    let mut buf = Vec::with_capacity(BLOCK);
                    while next.get() < reads {
                        next.set(next.get() + 1);
                        let offset = rng.next() * BLOCK as u64;
                        buf.clear();
                        let (n, b) = file.read_at(buf, offset).await;
                        assert_eq!(n.expect("a read failed"), BLOCK);
                        buf = b;
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
        });
        began.elapsed()
    }
}

fn monoio_runner() -> Result<Monoio, String> {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| format!("monoio's io_uring driver: {e}"))?;
    let path = path()?.clone();
    let file = rt
        .block_on(async move { monoio::fs::File::open(path).await })
        .map_err(|e| e.to_string())?;
    Ok(Monoio {
        rt,
        file: Rc::new(file),
        seed: 7,
    })
}

fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn group(benches: &mut Vec<Bench>, group: &'static str, direct: bool) {
    benches.push(Bench::new(group, "rouse_uring", move || {
        RouseOps::new(Backend::IoUring, direct)
    }));
    benches.push(Bench::new(group, "rouse_epoll", move || {
        RouseOps::new(Backend::Epoll, direct)
    }));
    benches.push(Bench::new(group, "rouse_pool2", move || {
        let lp = EventLoop::new().map_err(|e| e.to_string())?;
        let pool = WorkerPool::new(&lp.handle(), 2).map_err(|e| e.to_string())?;
        Ok(Pool2 {
            lp,
            pool: Rc::new(pool),
            file: Arc::new(open(direct)?),
            rng: Rc::new(Cell::new(Blocks(0x1234_5678_9abc_def1))),
        })
    }));
    benches.push(Bench::new(group, "threads64", move || {
        let file = open(direct)?;
        let mut seed = 3u64;
        Ok(move |n| {
            seed = seed.wrapping_add(1);
            threads(&file, n, seed)
        })
    }));
    benches.push(Bench::new(group, "pread_1", move || {
        let file = open(direct)?;
        let mut rng = Blocks(0x0bad_cafe_f00d_d00d);
        Ok(move |n| sync_pread(&file, &mut rng, n))
    }));
    benches.push(Bench::new(group, "tokio_fs", move || {
        if direct {
            return Err(TOKIO_FS_DIRECT.to_string());
        }
        // Each task its own open file: a dup would share one file offset,
        // which seek + read on 64 tasks at once cannot.
        let files = (0..DEPTH).map(|_| open(direct)).collect::<Result<_, _>>()?;
        Ok(TokioFs {
            rt: current_thread()?,
            files,
            seed: 11,
        })
    }));
    benches.push(Bench::new(group, "tokio_blocking", move || {
        Ok(TokioBlocking {
            rt: current_thread()?,
            file: Arc::new(open(direct)?),
            seed: 13,
        })
    }));
    if !direct {
        benches.push(Bench::new(group, "monoio", monoio_runner));
    }
    // The same rows, timed by CPU.
    benches.push(Bench::new(group, "rouse_uring_cpu", move || {
        RouseOps::new(Backend::IoUring, direct).map(Cpu)
    }));
    benches.push(Bench::new(group, "pread_1_cpu", move || {
        let file = open(direct)?;
        let mut rng = Blocks(0x0bad_cafe_f00d_d00d);
        Ok(Cpu(move |n| sync_pread(&file, &mut rng, n)))
    }));
    benches.push(Bench::new(group, "tokio_fs_cpu", move || {
        if direct {
            return Err(TOKIO_FS_DIRECT.to_string());
        }
        // Each task its own open file: a dup would share one file offset,
        // which seek + read on 64 tasks at once cannot.
        let files = (0..DEPTH).map(|_| open(direct)).collect::<Result<_, _>>()?;
        Ok(Cpu(TokioFs {
            rt: current_thread()?,
            files,
            seed: 17,
        }))
    }));
    benches.push(Bench::new(group, "tokio_blocking_cpu", move || {
        Ok(Cpu(TokioBlocking {
            rt: current_thread()?,
            file: Arc::new(open(direct)?),
            seed: 19,
        }))
    }));
}

pub(crate) fn benches(benches: &mut Vec<Bench>) {
    group(benches, "file_cached", false);
    group(benches, "file_direct", true);
}
