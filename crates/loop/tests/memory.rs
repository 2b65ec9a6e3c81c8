//! Memory comes back: what timers leave on the heap once they have fired or
//! been cancelled and the loop has been idle for two iterations; and what
//! loops dropped with operations in flight leave (nothing: no byte, no
//! descriptor, no thread). Counted exactly, by a wrapping allocator, so
//! this binary has one test: nothing else allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rouse_loop::{Backend, EventLoop, Poller, SharedFd};

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
    drop(lp);

    loops_dropped_with_operations_in_flight_leave_nothing();
}

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Thousands of loops, each dropped with operations in flight, some of
/// them completing as it goes.
fn loops_dropped_with_operations_in_flight_leave_nothing() {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("rouse-memory-{}", std::process::id()));
    std::fs::write(&path, vec![3u8; 8192]).unwrap();
    let file = SharedFd::new(std::fs::File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    let backends: Vec<Backend> = [Backend::Epoll, Backend::IoUring]
        .into_iter()
        .filter(|b| Poller::with_backend(*b).is_ok())
        .collect();
    let round = |i: usize| {
        let mut lp =
            EventLoop::with_poller(Poller::with_backend(backends[i % backends.len()]).unwrap())
                .unwrap();
        let mut peers = Vec::new();
        for k in 0..3 {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let a = SharedFd::new(a);
            if k == 0 {
                lp.recv_multi(&a, |_, _| {}).unwrap();
            } else {
                lp.recv(&a, Vec::with_capacity(512), |_, _, _| {}).unwrap();
            }
            peers.push(b);
        }
        for k in 0..3 {
            lp.read_at(&file, k * 1024, Vec::with_capacity(2048), |_, _, _| {})
                .unwrap();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        lp.accept(&SharedFd::new(listener), |_, _| {}).unwrap();
        if i.is_multiple_of(2) {
            lp.run_once(Some(Duration::ZERO)).unwrap();
        }
        let writer = std::thread::spawn(move || {
            for p in &mut peers {
                let _ = p.write_all(&[9; 100]);
            }
            peers
        });
        drop(lp);
        drop(writer.join().unwrap());
    };
    for i in 0..4 {
        round(i);
    }
    let (heap, fds, tasks) = (live(), descriptors(), threads());
    const LOOPS: usize = 2000;
    for i in 0..LOOPS {
        round(i);
    }
    let kept = live() - heap;
    println!("{LOOPS} loops dropped with operations in flight: {kept} bytes kept");
    assert_eq!(descriptors(), fds, "descriptors left open");
    assert_eq!(threads(), tasks, "threads left behind");
    assert!(
        kept.abs() < 4096,
        "{kept} bytes of heap kept by {LOOPS} loops dropped with operations in flight"
    );
}
