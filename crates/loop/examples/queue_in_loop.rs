//! The muduo pattern: other threads hand work to the loop with
//! `queue_in_loop`, and the loop runs it on its own thread.
//!
//! Each producer queues `N` boxed closures (default 1,000,000); the loop
//! counts them and quits after the last. The run is repeated with one and
//! with two producers, and prints the throughput and what the wakes cost:
//! wake calls (only the first functor after the loop takes the queue asks
//! for one) and wake system calls (only a wake that finds the loop blocked
//! in the kernel makes one).
//!
//! ```text
//! cargo run --release -p rouse-loop --example queue_in_loop [-- N]
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use rouse_loop::{Ctx, EventLoop};

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
}

/// The sum of every functor's payload, checked at the end.
static SUM: AtomicU64 = AtomicU64::new(0);

const USAGE: &str = "usage: queue_in_loop [N]
  N  functors each producer queues, at least 1 (default 1,000,000)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::args::Args::parse(USAGE, 1);
    let per_producer = args.number(0, "N", 1, 1_000_000);
    for producers in [1, 2] {
        run(producers, per_producer)?;
    }
    Ok(())
}

fn run(producers: u64, per_producer: u64) -> Result<(), Box<dyn std::error::Error>> {
    SUM.store(0, Relaxed);
    let mut lp = EventLoop::new()?;
    let total = producers * per_producer;
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let handle = lp.handle();
            std::thread::spawn(move || -> Result<(), rouse_loop::Error> {
                for i in 0..per_producer {
                    // Each functor carries a payload, so each is a real
                    // allocation, as a closure over a request would be.
                    let value = p * per_producer + i;
                    handle.queue_in_loop(move |cx: &mut Ctx| {
                        // Only the loop thread adds: the counter is a plain
                        // total, not a synchronisation point.
                        let sum = SUM.fetch_add(value, Relaxed) + value;
                        if sum == total * (total - 1) / 2 {
                            cx.quit();
                        }
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    lp.run()?;
    let elapsed = start.elapsed();
    for t in threads {
        t.join().expect("a producer panicked")?;
    }
    assert_eq!(SUM.load(Relaxed), total * (total - 1) / 2);
    let stats = lp.poller().stats();
    println!(
        "{producers} producer(s), {total} functors on {:?}: {:.2} M functors/s; \
         {} wake calls ({:.5}/functor), {} wake syscalls ({:.5}/functor), {} loop iterations",
        lp.poller().backend(),
        total as f64 / elapsed.as_secs_f64() / 1e6,
        lp.functor_wakes(),
        lp.functor_wakes() as f64 / total as f64,
        stats.wake_syscalls,
        stats.wake_syscalls as f64 / total as f64,
        lp.iterations(),
    );
    Ok(())
}
