//! Reading a file on the loop: random 4 KiB reads, many in flight, with the
//! loop free for other work meanwhile. nginx hands such reads to a thread
//! pool (or to Linux AIO) and is told of each completion through an eventfd;
//! here the loop's operations do it:
//!
//! * on io_uring the kernel performs the reads, with no thread pool at all,
//!   everything queued in an iteration going to the kernel in the one
//!   `io_uring_enter` that also waits;
//! * on epoll (where readiness cannot help: a regular file is always
//!   "ready", and a read of it can block) a pool of threads of the poller's
//!   own performs them, and their completions come back through the loop's
//!   coalesced wake.
//!
//! The same callbacks run either way. For comparison the example also does
//! the same reads the way nginx's thread pool does, with a `WorkerPool` of
//! two threads doing `pread(2)`. It prints the time and the CPU per read of
//! each.
//!
//! ```text
//! cargo run --release -p rouse-loop --example read_file [-- [--direct] [SIZE_MIB [READS [DEPTH]]]]
//! ROUSE_BACKEND=io_uring cargo run --release -p rouse-loop --example read_file
//! ```

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
}

use std::cell::Cell;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rouse_loop::{Ctx, EventLoop, SharedFd, WorkerPool};

const USAGE: &str = "usage: read_file [--direct] [SIZE_MIB [READS [DEPTH]]]
  --direct  open the file with O_DIRECT: every read goes to the device
  SIZE_MIB  the file's size, at least 1 (default 64)
  READS     random 4 KiB reads, at least 1 (default 50,000)
  DEPTH     reads in flight at once, at least 1 (default 64)";

const BLOCK: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (args, flags) = common::args::Args::parse_with_flags(USAGE, 3, &["--direct"]);
    let direct = flags[0];
    let size_mib = args.number(0, "SIZE_MIB", 1, 64);
    let reads = args.number(1, "READS", 1, 50_000);
    let depth = args.number(2, "DEPTH", 1, 64) as usize;
    let blocks = size_mib * (1 << 20) / BLOCK as u64;

    let path = std::env::temp_dir().join(format!("rouse-read-file-{}", std::process::id()));
    std::fs::write(&path, pattern((size_mib as usize) << 20))?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = match options.open(&path) {
        Ok(f) => f,
        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
            std::fs::remove_file(&path)?;
            eprintln!("the file system of {} refuses O_DIRECT", path.display());
            std::process::exit(1);
        }
        Err(e) => return Err(e.into()),
    };
    std::fs::remove_file(&path)?;
    let file = SharedFd::new(file);

    let mut lp = EventLoop::new()?;
    println!(
        "{reads} random 4 KiB reads of a {size_mib} MiB file{}, {depth} in flight, on {:?}",
        if direct {
            " (O_DIRECT)"
        } else {
            " (page cache)"
        },
        lp.poller().backend()
    );
    let (took, cpu) = measure(|| on_the_loop(&mut lp, &file, blocks, reads, depth))?;
    report("operations on the loop", reads, took, cpu);

    let pool = Rc::new(WorkerPool::new(&lp.handle(), 2)?);
    let (took, cpu) = measure(|| worker_pool(&mut lp, &pool, &file, blocks, reads, depth))?;
    report("WorkerPool of 2 threads, pread (nginx)", reads, took, cpu);
    Ok(())
}

/// Every byte of the file is its offset's low byte, so reads can be checked.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

/// A generator of block numbers (xorshift: cheap, and not a stride the
/// device's read-ahead would follow).
struct Blocks(u64, u64);

impl Blocks {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % self.1
    }
}

/// A buffer whose part `at..at + BLOCK` is aligned for `O_DIRECT`.
fn aligned_buf() -> (Vec<u8>, usize) {
    let buf = vec![0u8; 2 * BLOCK];
    let at = buf.as_ptr().align_offset(BLOCK);
    (buf, at)
}

/// `depth` reads in flight on the loop, each starting the next as it
/// completes, until `reads` have completed.
fn on_the_loop(
    lp: &mut EventLoop,
    file: &SharedFd,
    blocks: u64,
    reads: u64,
    depth: usize,
) -> std::io::Result<()> {
    let done = Rc::new(Cell::new(0u64));
    let started = Rc::new(Cell::new(0u64));
    let rng = Rc::new(Cell::new(Blocks(0x9e37_79b9_7f4a_7c15, blocks)));
    for _ in 0..depth.min(reads as usize) {
        let (buf, at) = aligned_buf();
        read_one(lp, file, buf, at, &rng, &started, &done, reads)?;
    }
    while done.get() < reads {
        lp.run_once(Some(Duration::from_secs(10)))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn read_one(
    cx: &mut Ctx,
    file: &SharedFd,
    buf: Vec<u8>,
    at: usize,
    rng: &Rc<Cell<Blocks>>,
    started: &Rc<Cell<u64>>,
    done: &Rc<Cell<u64>>,
    reads: u64,
) -> std::io::Result<()> {
    let mut g = rng.replace(Blocks(0, 1));
    let block = g.next();
    rng.set(g);
    started.set(started.get() + 1);
    let offset = block * BLOCK as u64;
    let (f, rng, started, done) = (
        file.clone(),
        Rc::clone(rng),
        Rc::clone(started),
        Rc::clone(done),
    );
    cx.read_into(file, offset, buf, (at, BLOCK), move |n, buf, cx| {
        assert_eq!(n.expect("a read failed"), BLOCK);
        assert_eq!(
            buf[at + 1],
            (offset + 1) as u8,
            "the bytes of the block read"
        );
        done.set(done.get() + 1);
        if started.get() < reads {
            read_one(cx, &f, buf, at, &rng, &started, &done, reads).expect("submit a read");
        }
    })?;
    Ok(())
}

/// The same reads as jobs of a `WorkerPool`, `depth` in flight.
fn worker_pool(
    lp: &mut EventLoop,
    pool: &Rc<WorkerPool>,
    file: &SharedFd,
    blocks: u64,
    reads: u64,
    depth: usize,
) -> std::io::Result<()> {
    let done = Rc::new(Cell::new(0u64));
    let started = Rc::new(Cell::new(0u64));
    let rng = Rc::new(Cell::new(Blocks(0x2545_f491_4f6c_dd1d, blocks)));
    let file = Arc::new(file.clone());
    for _ in 0..depth.min(reads as usize) {
        job(lp, pool, &file, aligned_buf(), &rng, &started, &done, reads);
    }
    while done.get() < reads {
        lp.run_once(Some(Duration::from_secs(10)))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn job(
    cx: &mut Ctx,
    pool: &Rc<WorkerPool>,
    file: &Arc<SharedFd>,
    (mut buf, at): (Vec<u8>, usize),
    rng: &Rc<Cell<Blocks>>,
    started: &Rc<Cell<u64>>,
    done: &Rc<Cell<u64>>,
    reads: u64,
) {
    let mut g = rng.replace(Blocks(0, 1));
    let offset = g.next() * BLOCK as u64;
    rng.set(g);
    started.set(started.get() + 1);
    let f = Arc::clone(file);
    let (pool2, file2, rng, started, done) = (
        Rc::clone(pool),
        Arc::clone(file),
        Rc::clone(rng),
        Rc::clone(started),
        Rc::clone(done),
    );
    pool.spawn_local(
        cx,
        move || {
            let n = rustix::io::pread(&*f, &mut buf[at..at + BLOCK], offset);
            (n, buf)
        },
        move |(n, buf), cx| {
            assert_eq!(n.expect("a read failed"), BLOCK);
            assert_eq!(buf[at + 1], (offset + 1) as u8);
            done.set(done.get() + 1);
            if started.get() < reads {
                job(cx, &pool2, &file2, (buf, at), &rng, &started, &done, reads);
            }
        },
    )
    .expect("spawn a job");
}

/// Runs `f`; its wall time, and the process's CPU time (user, system).
fn measure(
    f: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<(Duration, (Duration, Duration))> {
    let before = cpu();
    let start = Instant::now();
    f()?;
    let took = start.elapsed();
    let after = cpu();
    Ok((took, (after.0 - before.0, after.1 - before.1)))
}

/// The process's user and system CPU time so far.
fn cpu() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct it is given, which lives for the
    // call; all zeroes is a valid value of it.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(u.ru_utime), tv(u.ru_stime))
}

fn report(what: &str, reads: u64, took: Duration, (user, sys): (Duration, Duration)) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / reads as f64;
    println!(
        "  {what}: {:.2} µs per read, {:.0} reads/s; CPU per read {:.2} µs ({:.2} user, {:.2} system)",
        per(took),
        reads as f64 / took.as_secs_f64(),
        per(user + sys),
        per(user),
        per(sys)
    );
}
