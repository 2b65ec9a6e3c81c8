//! Memory comes back: what timers and functors leave on the heap once they
//! have fired, been cancelled or run, and the loop has been idle for two
//! iterations. Counted exactly, by a wrapping allocator, so this binary has
//! one test: nothing else allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rouse_loop::EventLoop;

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

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// What the issue of fired timers was measured with: a million due at once.
const TIMERS: usize = 1_000_000;
/// At most this many bytes per timer stay once the loop is idle again.
const KEPT_PER_TIMER: isize = 8;

fn idle(lp: &mut EventLoop, iterations: usize) {
    for _ in 0..iterations {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
}

fn check(what: &str, before: isize, n: usize) {
    let kept = live() - before;
    println!("{what}: {:.2} B per timer kept", kept as f64 / n as f64);
    assert!(
        kept <= KEPT_PER_TIMER * n as isize,
        "{what}: {kept} bytes stay on the heap after two idle iterations, \
         {:.1} per timer (at most {KEPT_PER_TIMER})",
        kept as f64 / n as f64
    );
}

#[test]
fn fired_cancelled_and_handle_made_timers_give_their_memory_back() {
    let mut lp = EventLoop::new().unwrap();
    idle(&mut lp, 2);

    // Fired: all due at once, on the loop thread.
    let fired = Arc::new(AtomicUsize::new(0));
    let before = live();
    let at = Instant::now() + Duration::from_millis(1);
    for _ in 0..TIMERS {
        let fired = Arc::clone(&fired);
        lp.run_at(at, move |_| {
            fired.fetch_add(1, Ordering::Relaxed);
        });
    }
    std::thread::sleep(Duration::from_millis(2));
    while fired.load(Ordering::Relaxed) < TIMERS {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    idle(&mut lp, 2);
    check("a million timers fired at once", before, TIMERS);

    // Made by a handle, due at once, fired.
    let handle = lp.handle();
    let before = live();
    for _ in 0..TIMERS / 10 {
        handle.run_after(Duration::ZERO, |_| {}).unwrap();
    }
    while lp.timer_count() > 0 || lp.pending_functors() > 0 {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    idle(&mut lp, 2);
    check("timers made by a handle, fired", before, TIMERS / 10);

    // Cancelled on the loop thread.
    let before = live();
    let ids: Vec<_> = (0..TIMERS)
        .map(|_| lp.run_after(Duration::from_secs(3600), |_| {}))
        .collect();
    for id in &ids {
        assert!(lp.cancel(*id));
    }
    drop(ids);
    idle(&mut lp, 2);
    check("a million timers cancelled", before, TIMERS);
}
