//! The nginx thread-pool pattern: the loop hands blocking jobs to worker
//! threads, and each result comes back to the loop thread.
//!
//! A burst of `N` jobs (default 10,000), each blocking its worker for `US`
//! microseconds (default 20), runs on four workers. nginx writes its eventfd
//! once per finished job. Here a completion wakes the loop only if it finds
//! the loop idle with nothing queued: with jobs this short, completions
//! arrive about as fast as the loop runs them, so about every other one
//! finds it idle (some 0.5 wakes per completion on two CPUs); make the jobs
//! shorter (`US` = 0), or the loop busier, and completions queue up behind
//! each other and share wakes (a few per thousand). The example prints the
//! wakes and the system calls they cost.
//!
//! ```text
//! cargo run --release -p rouse-loop --example worker_pool [-- N [US]]
//! ```

use std::thread::ThreadId;
use std::time::{Duration, Instant};

use rouse_loop::{Ctx, EventLoop, WorkerPool};

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
}

const USAGE: &str = "usage: worker_pool [N [US]]
  N   jobs in the burst, at least 1 (default 10,000)
  US  microseconds each job blocks its worker, 0 or more (default 20)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::args::Args::parse(USAGE, 2);
    let jobs = args.number(0, "N", 1, 10_000);
    let block = Duration::from_micros(args.number(1, "US", 0, 20));
    let mut lp = EventLoop::new()?;
    let pool = WorkerPool::new(&lp.handle(), 4)?;
    let loop_thread = std::thread::current().id();

    let wakes_before = lp.functor_wakes();
    let syscalls_before = lp.poller().stats().wake_syscalls;
    let start = Instant::now();
    let mut done = 0;
    let mut on_loop_thread = 0;
    let (tx, rx) = std::sync::mpsc::channel::<(u64, ThreadId)>();
    for job in 0..jobs {
        let tx = tx.clone();
        pool.spawn(
            move || {
                // A blocking call, as a file read or a DNS lookup would be.
                if !block.is_zero() {
                    std::thread::sleep(block);
                }
                job * 2
            },
            move |result, _cx: &mut Ctx| {
                let _ = tx.send((result / 2, std::thread::current().id()));
            },
        )?;
    }
    drop(tx);
    let mut seen = vec![false; jobs as usize];
    while done < jobs {
        lp.run_once(Some(Duration::from_secs(10)))?;
        for (job, thread) in rx.try_iter() {
            assert!(!seen[job as usize], "job {job} completed twice");
            seen[job as usize] = true;
            done += 1;
            on_loop_thread += u64::from(thread == loop_thread);
        }
    }
    let elapsed = start.elapsed();
    let wakes = lp.functor_wakes() - wakes_before;
    let syscalls = lp.poller().stats().wake_syscalls - syscalls_before;
    println!(
        "{jobs} jobs of {block:?} on {} workers in {elapsed:.2?}: {done} completions, {on_loop_thread} on \
         the loop thread; {wakes} wakes ({:.4}/completion), {syscalls} wake syscalls \
         ({:.4}/completion); nginx would make {jobs} eventfd writes",
        pool.threads(),
        wakes as f64 / jobs as f64,
        syscalls as f64 / jobs as f64,
    );
    assert_eq!(on_loop_thread, jobs);
    Ok(())
}
