//! Wake round trip between two threads, each blocked in its own poller: A
//! wakes B, B wakes A back. Prints the time per round trip and the system
//! calls per round trip for each backend and wake path, beside a futex
//! (thread park/unpark) floor measured in the same run.
//!
//! ```text
//! cargo run --release -p rouse-poll --example wake_round_trip [ROUNDS] [one|two]
//! ```
//!
//! `one` (the default) pins both threads to CPU 0; `two` pins them to CPUs 0
//! and 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rouse_poll::{Backend, Events, Poller, Token, UringWake, Waker};
use rustix::thread::{CpuSet, sched_setaffinity};

fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).expect("sched_setaffinity");
}

fn rouse(
    config: (Backend, UringWake),
    rounds: u64,
    cpus: (usize, usize),
) -> Option<(Duration, f64)> {
    let build = || {
        Poller::builder()
            .backend(config.0)
            .uring_wake(config.1)
            .build()
    };
    let (pa, pb) = match (build(), build()) {
        (Ok(a), Ok(b)) => (Arc::new(a), Arc::new(b)),
        (Err(e), _) | (_, Err(e)) => {
            println!("  skipped: {e}");
            return None;
        }
    };
    let to_a = Waker::new(&pa, Token(0)).unwrap();
    let to_b = Waker::new(&pb, Token(0)).unwrap();
    let b = {
        let pb = Arc::clone(&pb);
        std::thread::spawn(move || {
            pin(cpus.1);
            let mut events = Events::with_capacity(4);
            for _ in 0..rounds {
                while pb.poll(&mut events, None).unwrap() == 0 {}
                to_a.wake().unwrap();
            }
        })
    };
    pin(cpus.0);
    let mut events = Events::with_capacity(4);
    let start = Instant::now();
    for _ in 0..rounds {
        to_b.wake().unwrap();
        while pa.poll(&mut events, None).unwrap() == 0 {}
    }
    let took = start.elapsed();
    b.join().unwrap();
    let syscalls = pa.stats().wake_syscalls + pb.stats().wake_syscalls;
    Some((took / rounds as u32, syscalls as f64 / rounds as f64))
}

fn futex(rounds: u64, cpus: (usize, usize)) -> Duration {
    let flag_b = Arc::new(AtomicBool::new(false));
    let flag_a = Arc::new(AtomicBool::new(false));
    let main = std::thread::current();
    let b = {
        let (flag_a, flag_b) = (Arc::clone(&flag_a), Arc::clone(&flag_b));
        std::thread::spawn(move || {
            pin(cpus.1);
            for _ in 0..rounds {
                while !flag_b.swap(false, Ordering::Acquire) {
                    std::thread::park();
                }
                flag_a.store(true, Ordering::Release);
                main.unpark();
            }
        })
    };
    pin(cpus.0);
    let start = Instant::now();
    for _ in 0..rounds {
        flag_b.store(true, Ordering::Release);
        b.thread().unpark();
        while !flag_a.swap(false, Ordering::Acquire) {
            std::thread::park();
        }
    }
    let took = start.elapsed();
    b.join().unwrap();
    took / rounds as u32
}

const USAGE: &str = "usage: wake_round_trip [ROUNDS] [one|two]
  ROUNDS  round trips per row, 1 to 4,294,967,295 (default 50,000)
  one     both threads on CPU 0 (the default); two: on CPUs 0 and 1";

/// Prints the usage and `why` on stderr and exits with status 2.
fn usage_error(why: &str) -> ! {
    eprintln!("{USAGE}\nerror: {why}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    if args.len() > 2 {
        usage_error(&format!("at most 2 arguments, got {}", args.len()));
    }
    let rounds: u64 = match args.first() {
        None => 50_000,
        Some(a) => match a.parse::<u32>() {
            Ok(0) => usage_error("ROUNDS must be at least 1, got 0"),
            Ok(n) => n.into(),
            Err(_) => usage_error(&format!(
                "ROUNDS must be a whole number up to 4,294,967,295, got {a:?}"
            )),
        },
    };
    let cpus = match args.get(1).map(String::as_str) {
        None | Some("one") => (0, 0),
        Some("two") => (0, 1),
        Some(other) => usage_error(&format!(
            "the placement must be `one` or `two`, got {other:?}"
        )),
    };
    println!("wake round trip, {rounds} rounds, CPUs {cpus:?}");
    let floor = futex(rounds, cpus);
    println!(
        "{:<24} {:>7} ns  1.00x",
        "futex park/unpark",
        floor.as_nanos()
    );
    for (name, config) in [
        ("rouse epoll", (Backend::Epoll, UringWake::EventFd)),
        (
            "rouse io_uring eventfd",
            (Backend::IoUring, UringWake::EventFd),
        ),
        (
            "rouse io_uring msg_ring",
            (Backend::IoUring, UringWake::MsgRing),
        ),
    ] {
        if let Some((per, sys)) = rouse(config, rounds, cpus) {
            let ratio = per.as_secs_f64() / floor.as_secs_f64();
            println!(
                "{name:<24} {:>7} ns  {ratio:.2}x  {sys:.2} wake syscalls/round trip",
                per.as_nanos()
            );
        }
    }
}
