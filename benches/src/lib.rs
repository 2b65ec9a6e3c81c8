//! The harness behind rouse's benchmarks: thread placement, a two-thread
//! round-trip driver, and the counters file that `cargo xtask bench` reads.
//!
//! The benchmarks themselves are in `benches/compare.rs`; run them with
//! `cargo xtask bench`, which also writes the report.

use std::io::Write;
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use rustix::thread::{CpuSet, sched_setaffinity};

/// Where the two threads of a round trip run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Both threads pinned to CPU 0: each wake is a context switch.
    OneCpu,
    /// Pinned to CPUs 0 and 1: each wake is a cross-CPU wake-up.
    TwoCpus,
}

impl Placement {
    /// The CPUs of the first and the second thread.
    pub fn cpus(self) -> (usize, usize) {
        match self {
            Placement::OneCpu => (0, 0),
            Placement::TwoCpus => (0, 1),
        }
    }
}

/// Pins the calling thread to `cpu`.
///
/// # Panics
///
/// If the CPU cannot be had: a benchmark that silently runs unpinned would
/// measure something else.
pub fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    if let Err(e) = sched_setaffinity(None, &set) {
        panic!("cannot pin a thread to CPU {cpu}: {e}");
    }
}

/// One end of a round trip: something that blocks until woken, and a
/// handle by which the other thread wakes it.
pub trait End {
    /// Wakes this end from another thread.
    type Remote: Send + 'static;

    /// A handle that wakes this end.
    fn remote(&self) -> Self::Remote;

    /// Blocks until the next wake from the remote; every wake is waited
    /// for exactly once.
    fn wait(&mut self);

    /// Wakes the end that `remote` belongs to.
    fn wake(remote: &Self::Remote);
}

/// Runs `rounds` round trips between two threads placed as `placement`,
/// each end made by `make` on its own thread (so ends need not be `Send`),
/// and returns the time the rounds took on the first thread.
pub fn round_trips<E, F>(make: F, placement: Placement, rounds: u64) -> Duration
where
    E: End,
    F: Fn() -> E + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let (cpu_a, cpu_b) = placement.cpus();
    let (to_a, from_b) = mpsc::channel::<E::Remote>();
    let (to_b, from_a) = mpsc::channel::<E::Remote>();
    let start = Arc::new(Barrier::new(2));
    let b = {
        let (make, start) = (Arc::clone(&make), Arc::clone(&start));
        std::thread::spawn(move || {
            pin(cpu_b);
            let mut end = make();
            to_a.send(end.remote()).expect("thread A is waiting");
            let a = from_a.recv().expect("thread A sends its remote");
            start.wait();
            for _ in 0..rounds {
                end.wait();
                E::wake(&a);
            }
        })
    };
    pin(cpu_a);
    let mut end = make();
    to_b.send(end.remote()).expect("thread B is waiting");
    let b_remote = from_b.recv().expect("thread B sends its remote");
    start.wait();
    let began = Instant::now();
    for _ in 0..rounds {
        E::wake(&b_remote);
        end.wait();
    }
    let took = began.elapsed();
    b.join().expect("thread B panicked");
    took
}

/// Operations and wake counts that a benchmark adds up across its runs,
/// written for `cargo xtask bench` to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Operations measured (round trips, functors, completions).
    pub ops: u64,
    /// Wake calls made (waker `wake`s, or wakes asked for by a queue).
    pub wakes: u64,
    /// System calls those wakes cost.
    pub wake_syscalls: u64,
}

impl Counts {
    /// Adds another run's counts.
    pub fn add(&mut self, other: Counts) {
        self.ops += other.ops;
        self.wakes += other.wakes;
        self.wake_syscalls += other.wake_syscalls;
    }
}

/// The environment variable naming the directory that counters are written
/// to (set by `cargo xtask bench`).
pub const OUT_ENV: &str = "ROUSE_BENCH_OUT";

/// Appends `id`'s totals to `$ROUSE_BENCH_OUT/counters.tsv`, if set.
///
/// # Panics
///
/// If the file cannot be written: the report would be missing its counts.
pub fn record(id: &str, counts: Counts) {
    let line = format!(
        "{id}\t{}\t{}\t{}",
        counts.ops, counts.wakes, counts.wake_syscalls
    );
    append("counters.tsv", &line);
}

/// Appends one line to `$ROUSE_BENCH_OUT/FILE`, if the variable is set.
///
/// # Panics
///
/// If the file cannot be written.
pub fn record_line(file: &str, line: &str) {
    append(file, line);
}

fn append(file: &str, line: &str) {
    let Some(dir) = std::env::var_os(OUT_ENV) else {
        return;
    };
    let _ = std::fs::create_dir_all(&dir);
    let path = std::path::Path::new(&dir).join(file);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Raises the soft limit on open files to the hard limit, for the
/// benchmarks that hold thousands of descriptors.
///
/// # Errors
///
/// The OS error from `setrlimit`.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit)?;
    Ok(limit.current.unwrap_or(u64::MAX))
}

/// Notes that `id` could not run here, and why, in
/// `$ROUSE_BENCH_OUT/skipped.tsv`, if set.
///
/// # Panics
///
/// If the file cannot be written.
pub fn record_skip(id: &str, why: &str) {
    append(
        "skipped.tsv",
        &format!("{id}\t{}", why.replace(['\t', '\n'], " ")),
    );
}

/// The CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A ratio measured in interleaved rounds: the median of the rounds'
/// ratios and its interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    /// The median of the rounds' ratios.
    pub median: f64,
    /// The interval's lower end.
    pub lo: f64,
    /// The interval's upper end.
    pub hi: f64,
    /// How many rounds.
    pub rounds: usize,
}

/// The median of `samples`, with a distribution-free interval of at least
/// 95% confidence from order statistics (the whole range when there are
/// too few samples for one).
///
/// # Panics
///
/// If `samples` is empty.
pub fn summarize(mut samples: Vec<f64>) -> Ratio {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    // The largest k with P(Binomial(n, 1/2) < k) ≤ 2.5%: then
    // [x(k), x(n+1-k)] (1-based) covers the median with ≥ 95%.
    let mut k = 0;
    let mut below = 0.0;
    for i in 0..n {
        below += binomial(n, i) / 2f64.powi(n as i32);
        if below > 0.025 {
            break;
        }
        k = i + 1;
    }
    let (lo, hi) = if k == 0 {
        (samples[0], samples[n - 1])
    } else {
        (samples[k - 1], samples[n - k])
    };
    Ratio {
        median,
        lo,
        hi,
        rounds: n,
    }
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn the_interval_brackets_the_median_by_order_statistics() {
        let r = summarize((1..=21).map(f64::from).collect());
        assert_eq!(r.median, 11.0);
        // n = 21: P(X < 6) = 1.3%, P(X < 7) = 3.9%: k = 6.
        assert_eq!((r.lo, r.hi), (6.0, 16.0));
        let r = summarize(vec![2.0, 1.0, 3.0]);
        assert_eq!((r.lo, r.median, r.hi), (1.0, 2.0, 3.0));
        let r = summarize(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!(r.median, 2.5);
    }
}

/// The examples of the workspace's README (rouse nested in tokio and in
/// calloop), run as doc-tests here, where those peers are available.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The threads of a server under test, each registered from itself, so
/// that what they alone cost can be read from outside: their user and
/// system CPU time (`/proc/self/task/TID/stat`, in clock ticks), and the
/// system calls they make (a `perf_event_open` counter on the
/// `raw_syscalls:sys_enter` tracepoint, per thread, where the kernel allows
/// it). The client's threads are not counted.
#[derive(Clone, Default)]
pub struct ServerThreads {
    threads: Arc<std::sync::Mutex<Vec<Probe>>>,
}

struct Probe {
    tid: i32,
    syscalls: Option<std::os::fd::OwnedFd>,
}

/// What the server threads have cost so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerCost {
    /// User CPU time, in seconds.
    pub user: f64,
    /// System CPU time, in seconds.
    pub system: f64,
    /// System calls made, if they could be counted.
    pub syscalls: Option<u64>,
}

impl ServerThreads {
    /// Counts the calling thread as one of the server's.
    pub fn register(&self) {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        let probe = Probe {
            tid,
            syscalls: syscall_counter(),
        };
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(probe);
    }

    /// What the registered threads have cost so far.
    pub fn cost(&self) -> ServerCost {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let mut c = ServerCost {
            syscalls: Some(0),
            ..ServerCost::default()
        };
        for p in threads.iter() {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", p.tid))
                .unwrap_or_default();
            // Fields after the command (which may hold spaces), 1-based:
            // utime is field 14, stime 15.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let f: Vec<&str> = after.split_whitespace().collect();
            let field = |n: usize| {
                f.get(n - 3)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            c.user += field(14) / ticks;
            c.system += field(15) / ticks;
            c.syscalls = match (c.syscalls, &p.syscalls) {
                (Some(total), Some(fd)) => {
                    let mut buf = [0u8; 8];
                    match rustix::io::read(fd, &mut buf) {
                        Ok(8) => Some(total + u64::from_ne_bytes(buf)),
                        _ => None,
                    }
                }
                _ => None,
            };
        }
        c
    }
}

/// A counter of the calling thread's system calls, or `None` where perf
/// events (or the tracepoint) are not available.
fn syscall_counter() -> Option<std::os::fd::OwnedFd> {
    let id: u64 = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|dir| {
            std::fs::read_to_string(format!("{dir}/events/raw_syscalls/sys_enter/id")).ok()
        })?
        .trim()
        .parse()
        .ok()?;
    /// `struct perf_event_attr` as of its first version (64 bytes), which
    /// every kernel accepts: a counting event, enabled at once, no flags.
    #[repr(C)]
    struct Attr {
        type_: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
    }
    const PERF_TYPE_TRACEPOINT: u32 = 2;
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    let attr = Attr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<Attr>() as u32,
        config: id,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: 0,
        wakeup_events: 0,
        bp_type: 0,
        config1: 0,
    };
    // SAFETY: `attr` is a valid first-version perf_event_attr that lives
    // for the call; pid 0 and cpu -1 count the calling thread on any CPU;
    // no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            0,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor, ours alone.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}
