//! What queued functors and pending timers cost in memory, and what comes
//! back once they have run or been cancelled. Two measures for each step:
//! the bytes the heap holds live (counted by a wrapping allocator: exact),
//! and the resident set size from `/proc/self/statm` (what the kernel
//! sees, which also holds memory the allocator keeps after a free).
//!
//! `cargo run --release -p rouse-loop --example memory [FUNCTORS] [TIMERS]`
//! (defaults: 10,000,000 functors, 1,000,000 timers).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use rouse_loop::{EventLoop, TimerId};

/// The system allocator, counting the bytes it holds live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed through to the system allocator unchanged;
// the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is the same.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract for `realloc` is the same.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes the heap holds live.
fn live() -> i64 {
    LIVE.load(Ordering::Relaxed) as i64
}

/// Resident set size, in bytes.
fn rss() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's second field");
    pages * rustix::param::page_size() as i64
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// An RSS difference: the kernel counts whole pages, and a `malloc_trim`
/// may give back pages that were resident before the baseline, so a
/// difference under a page is "nothing" and a negative one "less".
fn rss_above(bytes: i64) -> String {
    let page = rustix::param::page_size() as i64;
    if bytes.abs() < page {
        "nothing (under a page)".to_string()
    } else if bytes < 0 {
        format!("nothing ({} less)", mb(-bytes))
    } else {
        mb(bytes)
    }
}

fn per(bytes: i64, n: usize) -> String {
    format!("{:.1} B", bytes as f64 / n as f64)
}

/// Gives freed heap memory back to the kernel where the allocator can.
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs iterations until nothing is due, and two idle ones more.
fn settle(lp: &mut EventLoop) {
    while lp.pending_functors() > 0 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    for _ in 0..2 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
}

/// Live heap bytes and RSS now.
#[derive(Clone, Copy)]
struct Mark {
    live: i64,
    rss: i64,
}

fn mark() -> Mark {
    Mark {
        live: live(),
        rss: rss(),
    }
}

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
}

const USAGE: &str = "usage: memory [FUNCTORS [TIMERS]]
  FUNCTORS  functors queued from another thread, at least 1 (default 10,000,000)
  TIMERS    timers added in each case, at least 1 (default 1,000,000)";

fn main() -> Result<(), rouse_loop::Error> {
    let args = common::args::Args::parse(USAGE, 2);
    let functors = args.number(0, "FUNCTORS", 1, 10_000_000) as usize;
    let timers = args.number(1, "TIMERS", 1, 1_000_000) as usize;

    let mut lp = EventLoop::new()?;
    let handle = lp.handle();
    let base = mark();
    println!("baseline: heap {}, RSS {}", mb(base.live), mb(base.rss));

    // Functors queued from another thread, each capturing 8 bytes.
    let producer = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            for i in 0..functors as u64 {
                handle
                    .queue_in_loop(move |_| {
                        std::hint::black_box(i);
                    })
                    .unwrap();
            }
        })
    };
    producer.join().unwrap();
    let queued = mark();
    println!(
        "{functors} functors queued: heap {} per functor, RSS {}; pending_functors = {}",
        per(queued.live - base.live, functors),
        mb(queued.rss),
        handle.pending_functors()
    );
    settle(&mut lp);
    let drained = mark();
    trim();
    println!(
        "drained, two idle iterations later: heap {} above baseline; RSS {} ({} after malloc_trim)",
        mb(drained.live - base.live),
        mb(drained.rss),
        mb(rss())
    );

    // Timers added on the loop thread, far off.
    let before = mark();
    let ids: Vec<TimerId> = (0..timers)
        .map(|_| lp.run_after(Duration::from_secs(3600), |_| {}))
        .collect();
    let added = mark();
    let id_bytes = (ids.capacity() * std::mem::size_of::<TimerId>()) as i64;
    println!(
        "{timers} timers added through Ctx: heap {} per pending timer (the ids' own vector not counted), RSS {} per timer; pending_timers = {}",
        per(added.live - before.live - id_bytes, timers),
        per(added.rss - before.rss, timers),
        handle.pending_timers()
    );
    for id in &ids {
        assert!(lp.cancel(*id));
    }
    drop(ids);
    settle(&mut lp);
    let cancelled = mark();
    trim();
    println!(
        "  all cancelled: heap {} above the level before ({} per timer kept); RSS above it after malloc_trim: {}",
        mb(cancelled.live - before.live),
        per(cancelled.live - before.live, timers),
        rss_above(rss() - before.rss)
    );

    // Timers added on the loop thread, all due at once, fired.
    let before = mark();
    let at = std::time::Instant::now() + Duration::from_millis(1);
    for _ in 0..timers {
        lp.run_at(at, |_| {});
    }
    let added = mark();
    println!(
        "{timers} timers due at once: heap {} per pending timer",
        per(added.live - before.live, timers)
    );
    while handle.pending_timers() > 0 {
        lp.run_once(Some(Duration::from_millis(10)))?;
    }
    settle(&mut lp);
    let fired = mark();
    trim();
    println!(
        "  all fired: heap {} above the level before ({} per timer kept); RSS above it after malloc_trim: {}",
        mb(fired.live - before.live),
        per(fired.live - before.live, timers),
        rss_above(rss() - before.rss)
    );

    // Timers made by a handle on another thread, then cancelled from it.
    let before = mark();
    let ids: Vec<TimerId> = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            (0..timers)
                .map(|_| handle.run_after(Duration::from_secs(3600), |_| {}).unwrap())
                .collect()
        })
        .join()
        .unwrap()
    };
    settle(&mut lp);
    let added = mark();
    let id_bytes = (ids.capacity() * std::mem::size_of::<TimerId>()) as i64;
    println!(
        "{timers} timers added through a handle: heap {} per pending timer (ids not counted), RSS {} per timer; pending_timers = {}",
        per(added.live - before.live - id_bytes, timers),
        per(added.rss - before.rss, timers),
        handle.pending_timers()
    );
    {
        let handle = handle.clone();
        std::thread::spawn(move || {
            for id in ids {
                assert!(handle.cancel(id).unwrap());
            }
        })
        .join()
        .unwrap();
    }
    settle(&mut lp);
    let cancelled = mark();
    trim();
    println!(
        "  all cancelled from another thread: heap {} above the level before ({} per timer kept); RSS above it after malloc_trim: {}; pending_timers = {}",
        mb(cancelled.live - before.live),
        per(cancelled.live - before.live, timers),
        rss_above(rss() - before.rss),
        handle.pending_timers()
    );
    Ok(())
}
