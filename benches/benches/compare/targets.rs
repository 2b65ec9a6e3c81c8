//! The targets, and the interleaved runs that measure the ratios they are
//! judged on.
//!
//! Two rows compared by a ratio are never timed minutes apart: both are set
//! up, then timed in alternating batches (A B, B A, A B, …) in this
//! process, each batch long enough to swamp timer overhead. Each round
//! gives one ratio (A's time per operation over B's), so a slow spell of
//! the machine slows both sides of the rounds it falls in. The result is
//! the median of the rounds' ratios with a distribution-free 95% interval
//! (order statistics of the binomial), and a target is judged on that
//! interval: met if the whole interval is within the limit, not met if the
//! whole interval is beyond it, and undecided otherwise.

use std::time::Duration;

use rouse_benches::{Ratio, summarize};

use crate::{Bench, Runner};

/// A target: a time ratio of two rows, or one of rouse's counters.
pub(crate) enum Target {
    /// min ≤ time(a) / time(b) per operation ≤ max.
    Ratio {
        group: &'static str,
        a: &'static str,
        b: &'static str,
        min: f64,
        max: f64,
        say: &'static str,
    },
    /// wakes (or wake system calls, if `!wakes`) per operation ≤ max.
    Counter {
        group: &'static str,
        a: &'static str,
        wakes: bool,
        max: f64,
        say: &'static str,
    },
}

const fn ratio(
    group: &'static str,
    a: &'static str,
    b: &'static str,
    max: f64,
    say: &'static str,
) -> Target {
    Target::Ratio {
        group,
        a,
        b,
        min: 0.0,
        max,
        say,
    }
}

const fn counter(
    group: &'static str,
    a: &'static str,
    wakes: bool,
    max: f64,
    say: &'static str,
) -> Target {
    Target::Counter {
        group,
        a,
        wakes,
        max,
        say,
    }
}

/// Every target, in report order.
pub(crate) const TARGETS: &[Target] = &[
    // Two instances of one row: how close to 1.00 the method measures.
    Target::Ratio {
        group: "sys",
        a: "rustix_eventfd",
        b: "rustix_eventfd",
        min: 0.97,
        max: 1.03,
        say: "calibration: rustix eventfd against itself, 1.00 ± 0.03",
    },
    ratio(
        "sys",
        "rouse_eventfd",
        "rustix_eventfd",
        1.03,
        "EventFd ≤ 1.03× rustix",
    ),
    ratio(
        "sys",
        "rouse_wakefd_eventfd",
        "rustix_eventfd",
        1.03,
        "WakeFd (eventfd) ≤ 1.03× rustix",
    ),
    ratio(
        "sys",
        "rouse_wakefd_pipe",
        "rustix_pipe",
        1.03,
        "WakeFd (pipe) ≤ 1.03× rustix",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_epoll",
        "futex",
        1.0,
        "one CPU: rouse-poll epoll ≤ 1.0× futex floor",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_epoll",
        "mio",
        0.85,
        "one CPU: rouse-poll epoll ≤ 0.85× mio",
    ),
    ratio(
        "wake_1cpu",
        "rouse_loop",
        "futex",
        1.1,
        "one CPU: rouse-loop ping-pong ≤ 1.1× floor",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_epoll",
        "mio",
        1.0,
        "two CPUs: rouse-poll epoll ≤ 1.0× mio",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_epoll_spin",
        "mio",
        0.1,
        "two CPUs: rouse-poll with spin ≤ 0.1× mio",
    ),
    ratio(
        "wake_2cpu",
        "rouse_loop_spin",
        "mio",
        0.1,
        "two CPUs: rouse-loop with spin ≤ 0.1× mio",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_uring_eventfd",
        "rouse_poll_epoll",
        1.0,
        "one CPU: io_uring (eventfd) ≤ 1.0× epoll",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_uring_msgring",
        "rouse_poll_epoll",
        1.0,
        "one CPU: io_uring (MSG_RING) ≤ 1.0× epoll",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_uring_eventfd",
        "rouse_poll_epoll",
        1.0,
        "two CPUs: io_uring (eventfd) ≤ 1.0× epoll",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_uring_msgring",
        "rouse_poll_epoll",
        1.0,
        "two CPUs: io_uring (MSG_RING) ≤ 1.0× epoll",
    ),
    counter(
        "wake_1cpu",
        "rouse_poll_uring_msgring",
        false,
        2.0,
        "MSG_RING path ≤ 2 wake syscalls per round trip",
    ),
    ratio(
        "functors_1p",
        "rouse_loop",
        "muduo",
        1.0 / 6.0,
        "1 producer: ≥ 6× muduo",
    ),
    ratio(
        "functors_1p",
        "rouse_loop",
        "calloop_channel",
        1.0 / 6.0,
        "1 producer: ≥ 6× calloop channel",
    ),
    ratio(
        "functors_1p",
        "rouse_loop",
        "tokio_spawn",
        1.0 / 8.0,
        "1 producer: ≥ 8× tokio spawn",
    ),
    ratio(
        "functors_1p",
        "rouse_loop",
        "crossbeam",
        1.0 / 1.5,
        "1 producer: ≥ 1.5× crossbeam-channel",
    ),
    counter(
        "functors_1p",
        "rouse_loop",
        false,
        0.01,
        "1 producer: ≤ 0.01 wake syscalls per functor",
    ),
    ratio(
        "functors_2p",
        "rouse_loop",
        "muduo",
        1.0 / 6.0,
        "2 producers: ≥ 6× muduo",
    ),
    ratio(
        "functors_2p",
        "rouse_loop",
        "calloop_channel",
        1.0 / 6.0,
        "2 producers: ≥ 6× calloop channel",
    ),
    ratio(
        "functors_2p",
        "rouse_loop",
        "tokio_spawn",
        1.0 / 8.0,
        "2 producers: ≥ 8× tokio spawn",
    ),
    ratio(
        "functors_2p",
        "rouse_loop",
        "crossbeam",
        1.0 / 1.5,
        "2 producers: ≥ 1.5× crossbeam-channel",
    ),
    counter(
        "functors_2p",
        "rouse_loop",
        false,
        0.01,
        "2 producers: ≤ 0.01 wake syscalls per functor",
    ),
    counter(
        "pool",
        "rouse_pool",
        true,
        0.1,
        "worker pool: ≤ 0.1 wakes per completion",
    ),
    ratio(
        "scale_poll",
        "epoll_10000",
        "epoll_10",
        1.2,
        "epoll: 10,000 idle fds ≤ 1.2× 10",
    ),
    ratio(
        "scale_poll",
        "uring_10000",
        "uring_10",
        1.2,
        "io_uring: 10,000 idle fds ≤ 1.2× 10",
    ),
    ratio(
        "scale_timers",
        "timers_1000000",
        "timers_1000",
        2.0,
        "1,000,000 timers ≤ 2× the cost of 1,000",
    ),
    ratio(
        "echo",
        "rouse_loop_64",
        "tokio_64",
        1.0,
        "echo, one loop, 64 connections: ≥ 1.0× tokio current_thread's messages/s",
    ),
    ratio(
        "echo",
        "rouse_loop_1000",
        "tokio_1000",
        1.0,
        "echo, one loop, 1,000 connections: ≥ 1.0× tokio current_thread's messages/s",
    ),
    ratio(
        "echo_2loops",
        "rouse_handoff_64",
        "tokio_multi_thread_64",
        1.0 / 1.2,
        "echo, two loops, handoff, 64 connections: ≥ 1.2× tokio multi-thread",
    ),
    ratio(
        "echo_2loops",
        "rouse_reuseport_64",
        "tokio_multi_thread_64",
        1.0 / 1.2,
        "echo, two loops, reuseport, 64 connections: ≥ 1.2× tokio multi-thread",
    ),
    ratio(
        "echo_2loops",
        "rouse_handoff_1000",
        "tokio_multi_thread_1000",
        1.0 / 1.2,
        "echo, two loops, handoff, 1,000 connections: ≥ 1.2× tokio multi-thread",
    ),
    ratio(
        "echo_2loops",
        "rouse_reuseport_1000",
        "tokio_multi_thread_1000",
        1.0 / 1.2,
        "echo, two loops, reuseport, 1,000 connections: ≥ 1.2× tokio multi-thread",
    ),
    ratio(
        "echo_2loops",
        "rouse_handoff_1000",
        "rouse_handoff_64",
        1.25,
        "echo, two loops, handoff: 1,000 connections ≥ 0.8× the rate of 64",
    ),
    ratio(
        "echo_2loops",
        "rouse_reuseport_1000",
        "rouse_reuseport_64",
        1.25,
        "echo, two loops, reuseport: 1,000 connections ≥ 0.8× the rate of 64",
    ),
    // Files, page cache: random 4 KiB reads, 64 in flight.
    ratio(
        "file_cached",
        "rouse_uring",
        "tokio_fs",
        0.2,
        "page cache: rouse io_uring reads ≥ 5× tokio::fs",
    ),
    ratio(
        "file_cached",
        "rouse_uring",
        "monoio",
        1.0,
        "page cache: rouse io_uring reads ≥ 1.0× monoio",
    ),
    ratio(
        "file_cached",
        "rouse_uring_cpu",
        "pread_1_cpu",
        1.15,
        "page cache: CPU per read ≤ 1.15× one thread's pread",
    ),
    // Files, O_DIRECT.
    ratio(
        "file_direct",
        "rouse_uring",
        "rouse_pool2",
        1.0 / 3.0,
        "O_DIRECT: rouse io_uring reads ≥ 3× a WorkerPool of 2",
    ),
    ratio(
        "file_direct",
        "rouse_uring",
        "threads64",
        1.0 / 0.9,
        "O_DIRECT: rouse io_uring reads ≥ 0.9× 64 blocking threads",
    ),
    ratio(
        "file_direct",
        "rouse_uring_cpu",
        "tokio_fs_cpu",
        0.5,
        "O_DIRECT: CPU per read ≤ 0.5× tokio::fs's",
    ),
    // tokio::fs refuses O_DIRECT (its buffer is not aligned): its nearest
    // form, the blocking pool it is built on, doing the aligned pread.
    ratio(
        "file_direct",
        "rouse_uring_cpu",
        "tokio_blocking_cpu",
        0.5,
        "O_DIRECT: CPU per read ≤ 0.5× tokio spawn_blocking(pread)'s",
    ),
    ratio(
        "echo",
        "rouse_ops_64",
        "tokio_64",
        1.0,
        "echo, one loop, operations, 64 connections: ≥ 1.0× tokio current_thread",
    ),
    ratio(
        "echo",
        "rouse_ops_64",
        "mio_64",
        1.0,
        "echo, one loop, operations, 64 connections: ≥ 1.0× mio",
    ),
    ratio(
        "echo",
        "rouse_ops_64",
        "monoio_64",
        1.0,
        "echo, one loop, operations, 64 connections: ≥ 1.0× monoio",
    ),
    ratio(
        "echo",
        "rouse_ops_1000",
        "tokio_1000",
        1.0,
        "echo, one loop, operations, 1,000 connections: ≥ 1.0× tokio current_thread",
    ),
    ratio(
        "echo",
        "rouse_ops_1000",
        "mio_1000",
        1.0,
        "echo, one loop, operations, 1,000 connections: ≥ 1.0× mio",
    ),
    ratio(
        "echo",
        "rouse_ops_1000",
        "monoio_1000",
        1.0,
        "echo, one loop, operations, 1,000 connections: ≥ 1.0× monoio",
    ),
    ratio(
        "echo_2loops",
        "rouse_ops_64",
        "tokio_multi_thread_64",
        1.0,
        "echo, two loops, operations, 64 connections: ≥ 1.0× tokio multi-thread",
    ),
    ratio(
        "echo_2loops",
        "rouse_ops_64",
        "tokio_per_core_64",
        1.0,
        "echo, two loops, operations, 64 connections: ≥ 1.0× tokio current_thread per CPU",
    ),
    ratio(
        "echo_2loops",
        "rouse_ops_64",
        "monoio_per_core_64",
        1.0,
        "echo, two loops, operations, 64 connections: ≥ 1.0× monoio per CPU",
    ),
    ratio(
        "echo_2loops",
        "rouse_ops_1000",
        "tokio_multi_thread_1000",
        1.0,
        "echo, two loops, operations, 1,000 connections: ≥ 1.0× tokio multi-thread",
    ),
    ratio(
        "echo_2loops",
        "rouse_ops_1000",
        "tokio_per_core_1000",
        1.0,
        "echo, two loops, operations, 1,000 connections: ≥ 1.0× tokio current_thread per CPU",
    ),
    ratio(
        "echo_2loops",
        "rouse_ops_1000",
        "monoio_per_core_1000",
        1.0,
        "echo, two loops, operations, 1,000 connections: ≥ 1.0× monoio per CPU",
    ),
    ratio(
        "echo_2loops_unpinned",
        "rouse_reuseport_64",
        "tokio_multi_thread_64",
        1.0,
        "echo, two unpinned loops (readiness, SO_REUSEPORT), 64 connections: ≥ 1.0× tokio multi-thread",
    ),
    ratio(
        "echo_2loops_unpinned",
        "rouse_handoff_64",
        "tokio_multi_thread_64",
        1.0,
        "echo, two unpinned loops (readiness, handoff), 64 connections: ≥ 1.0× tokio multi-thread",
    ),
    ratio(
        "echo_2loops_unpinned",
        "rouse_ops_64",
        "tokio_multi_thread_64",
        1.0,
        "echo, two unpinned loops (operations), 64 connections: ≥ 1.0× tokio multi-thread",
    ),
    // Tasks.
    ratio(
        "tasks_1p",
        "rouse_spawn",
        "tokio_spawn",
        0.1,
        "spawn from another thread: ≥ 10× tokio current_thread Handle::spawn",
    ),
    ratio(
        "tasks_1p",
        "rouse_spawn",
        "calloop_executor",
        0.1,
        "spawn from another thread: ≥ 10× calloop's executor",
    ),
    counter(
        "tasks_1p",
        "rouse_wake",
        false,
        0.01,
        "≤ 0.01 wake syscalls per cross-thread task wake, under load",
    ),
    ratio(
        "wake_1cpu",
        "rouse_task",
        "rouse_loop",
        1.1,
        "one CPU: a task woken from another thread, round trip ≤ 1.1× the functor round trip",
    ),
    ratio(
        "echo",
        "rouse_tasks_64",
        "tokio_64",
        1.0,
        "echo, async tasks on one loop, 64 connections: ≥ 1.0× tokio current_thread",
    ),
    ratio(
        "echo",
        "rouse_tasks_1000",
        "tokio_1000",
        1.0,
        "echo, async tasks on one loop, 1,000 connections: ≥ 1.0× tokio current_thread",
    ),
];

impl Target {
    /// The rows the target needs, as `GROUP/ID`.
    pub(crate) fn rows(&self) -> Vec<String> {
        match *self {
            Target::Ratio { group, a, b, .. } => {
                vec![format!("{group}/{a}"), format!("{group}/{b}")]
            }
            Target::Counter { group, a, .. } => vec![format!("{group}/{a}")],
        }
    }

    pub(crate) fn say(&self) -> &'static str {
        match *self {
            Target::Ratio { say, .. } | Target::Counter { say, .. } => say,
        }
    }
}

/// How long the interleaved runs are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rounds {
    /// Rounds (each times A once and B once).
    pub(crate) rounds: usize,
    /// The time one batch of one side should take.
    pub(crate) batch: Duration,
}

impl Rounds {
    pub(crate) const TEST: Rounds = Rounds {
        rounds: 1,
        batch: Duration::from_millis(1),
    };
    /// Batches of about 100 ms: long enough that what a run costs once
    /// (its threads' first wake-up across CPUs, a fresh queue's growth) is a
    /// small part of it. With 25 ms batches, rouse-loop's functor rows
    /// measured twice their per-functor cost in long runs.
    pub(crate) const QUICK: Rounds = Rounds {
        rounds: 21,
        batch: Duration::from_millis(100),
    };
    pub(crate) const FULL: Rounds = Rounds {
        rounds: 41,
        batch: Duration::from_millis(250),
    };
}

/// Operations per batch so that one batch of `r` takes about `batch`.
fn batch_size(r: &mut dyn Runner, batch: Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let took = r.run(n);
        if took >= batch / 4 || n >= 1 << 30 {
            let per = took.as_secs_f64() / n as f64;
            let want = (batch.as_secs_f64() / per.max(1e-12)) as u64;
            return want.clamp(1, 1 << 32);
        }
        n *= 4;
    }
}

/// Times `a` and `b` in alternating batches; the ratio is a's time per
/// operation over b's.
pub(crate) fn interleaved(a: &Bench, b: &Bench, rounds: Rounds) -> Result<Ratio, String> {
    let mut ra = (a.make)()?;
    let mut rb = (b.make)()?;
    let na = batch_size(&mut *ra, rounds.batch);
    let nb = batch_size(&mut *rb, rounds.batch);
    let mut ratios = Vec::with_capacity(rounds.rounds);
    for round in 0..rounds.rounds {
        let time = |r: &mut Box<dyn Runner>, n: u64| r.run(n).as_secs_f64() / n as f64;
        let (ta, tb) = if round % 2 == 0 {
            let ta = time(&mut ra, na);
            (ta, time(&mut rb, nb))
        } else {
            let tb = time(&mut rb, nb);
            (time(&mut ra, na), tb)
        };
        ratios.push(ta / tb);
    }
    Ok(summarize(ratios))
}
