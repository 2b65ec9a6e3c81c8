//! A poller dropped with operations in flight frees nothing the kernel may
//! still write, and leaks nothing: buffers, files and threads all come back,
//! thousands of times over, with completions racing the drop.
//!
//! One test in a binary of its own: it counts every byte the heap holds and
//! every descriptor the process has, which other tests would disturb.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use rouse_poll::op::{Op, SharedFd};
use rouse_poll::{Backend, Events, Poller, UringWake};

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

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// One poller on `config`, operations of every kind submitted, some of them
/// completing while it is dropped.
fn round(config: (Backend, UringWake), i: usize, file: &SharedFd) {
    let poller = match Poller::builder()
        .backend(config.0)
        .uring_wake(config.1)
        .build()
    {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return,
        Err(e) => panic!("{e}"),
    };
    let mut peers = Vec::new();
    for k in 0..4u32 {
        let (a, b) = UnixStream::pair().unwrap();
        let a = SharedFd::new(a);
        let op = if k.is_multiple_of(2) {
            Op::Recv {
                fd: a,
                buf: Vec::with_capacity(256),
            }
        } else {
            Op::RecvMulti { fd: a }
        };
        poller.submit(op).unwrap();
        peers.push(b);
    }
    for k in 0..4 {
        poller
            .submit(Op::ReadAt {
                fd: file.clone(),
                offset: k * 512,
                buf: Vec::with_capacity(4096),
            })
            .unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    poller
        .submit(Op::AcceptMulti {
            fd: SharedFd::new(listener),
        })
        .unwrap();
    if i.is_multiple_of(3) {
        let mut events = Events::with_capacity(8);
        poller.poll(&mut events, Some(Duration::ZERO)).unwrap();
    }
    // Data arriving while the poller goes.
    let writer = std::thread::spawn(move || {
        for p in &mut peers {
            let _ = p.write_all(&[1; 64]);
        }
        peers
    });
    if i.is_multiple_of(2) {
        std::thread::yield_now();
    }
    drop(poller);
    drop(writer.join().unwrap());
}

#[test]
fn dropping_a_poller_with_operations_in_flight_frees_and_leaks_nothing() {
    let file = SharedFd::new(tempfile());
    let configs = [
        (Backend::Epoll, UringWake::EventFd),
        (Backend::IoUring, UringWake::EventFd),
        (Backend::IoUring, UringWake::MsgRing),
    ];
    // Warm-up: lazily made statics (the fork counter, the eventfd check,
    // thread-locals) are not leaks.
    for c in configs {
        round(c, 0, &file);
    }
    let (heap, fds, tasks) = (LIVE.load(Ordering::Relaxed), descriptors(), threads());
    const ROUNDS: usize = 1500;
    for i in 0..ROUNDS {
        round(configs[i % configs.len()], i, &file);
    }
    // Threads of the epoll backend's file pool are joined when it drops.
    assert_eq!(threads(), tasks, "threads left behind");
    assert_eq!(descriptors(), fds, "descriptors left open");
    let kept = LIVE.load(Ordering::Relaxed) - heap;
    assert!(
        kept.abs() < 4096,
        "{kept} bytes of heap kept after {ROUNDS} pollers dropped with operations in flight"
    );
    println!("{ROUNDS} pollers: {kept} bytes of heap kept, no descriptor or thread left");
}

fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("rouse-teardown-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}
