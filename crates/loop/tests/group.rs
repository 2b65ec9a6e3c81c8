//! Groups of loops: start and stop, handoffs, panics, a start that fails.
//!
//! Some tests count the process's threads and descriptors, or lower its
//! descriptor limit: every test takes [`serial`] first.

use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rouse_loop::{Error, LoopGroup};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Loop threads (by their default name) and descriptors of this process.
/// (The test harness's own threads come and go as tests wait their turn.)
fn resources_now() -> (usize, usize) {
    let loops = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("rouse-loop"))
        .count();
    (loops, count("/proc/self/fd"))
}

/// [`resources_now`], once it equals `want` or a second has passed: a
/// joined thread leaves `/proc/self/task` a moment after its join returns.
fn resources_settled(want: (usize, usize)) -> (usize, usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let now = resources_now();
        if now == want || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn groups_start_and_stop_again_and_again_leaving_no_thread_or_descriptor() {
    let _serial = serial();
    let before = resources_now();
    for round in 0..40 {
        let n = 1 + round % 4;
        let group = LoopGroup::new(n).unwrap();
        assert_eq!(group.len(), n);
        for h in group.handles() {
            assert!(!h.is_in_loop_thread());
        }
        if round % 2 == 0 {
            for outcome in group.shutdown() {
                outcome.unwrap();
            }
        } else {
            drop(group);
        }
    }
    assert_eq!(
        resources_settled(before),
        before,
        "(loop threads, descriptors) before and after"
    );
}

#[test]
fn a_group_of_no_loops_is_refused() {
    let _serial = serial();
    match LoopGroup::new(0) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
    match LoopGroup::builder(2).pin_to([]).build() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_loop_that_cannot_start_fails_the_start_and_stops_the_others() {
    let _serial = serial();
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = resources_now();
    // Room for about two loops' descriptors (a few each), not ten.
    let old = getrlimit(Resource::Nofile);
    let open = before.1 as u64;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(open + 8),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let result = LoopGroup::new(10);
    setrlimit(Resource::Nofile, old).unwrap();
    match result {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}"),
        other => panic!("{other:?}"),
    }
    // An init that fails: the same.
    let result = LoopGroup::builder(3)
        .on_start(|i, _| {
            if i == 2 {
                Err(std::io::Error::new(ErrorKind::PermissionDenied, "no"))
            } else {
                Ok(())
            }
        })
        .build();
    match result {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::PermissionDenied),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        resources_settled(before),
        before,
        "(loop threads, descriptors) before and after"
    );
}

#[test]
fn handoffs_from_many_threads_reach_every_loop_exactly_once_each() {
    let _serial = serial();
    let group = Arc::new(LoopGroup::builder(3).name("h").build().unwrap());
    let per_loop: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (group, per_loop) = (Arc::clone(&group), Arc::clone(&per_loop));
            std::thread::spawn(move || {
                for _ in 0..25_000 {
                    let per_loop = Arc::clone(&per_loop);
                    group
                        .next()
                        .queue_in_loop(move |_| {
                            let name = std::thread::current().name().unwrap().to_string();
                            let i: usize = name.trim_start_matches("h-").parse().unwrap();
                            per_loop[i].fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let group = Arc::try_unwrap(group).unwrap();
    while group.handles().iter().any(|h| h.pending_functors() > 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let wakes: u64 = group.handles().iter().map(|h| h.functor_wakes()).sum();
    for outcome in group.shutdown() {
        outcome.unwrap();
    }
    // next() is one counter: 100,000 picks, round-robin, exactly.
    let got: Vec<usize> = per_loop.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(got, [33_334, 33_333, 33_333]);
    assert!(wakes < 100_000, "{wakes} wakes for 100,000 handoffs");
    println!("{wakes} functor wakes for 100,000 handoffs");
}

#[test]
fn round_robin_spreads_evenly_and_init_runs_on_each_loop_thread() {
    let _serial = serial();
    let started = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&started);
    let group = LoopGroup::builder(3)
        .name("rr")
        .on_start(move |i, lp| {
            assert_eq!(
                std::thread::current().name(),
                Some(format!("rr-{i}").as_str())
            );
            assert!(lp.handle().is_in_loop_thread());
            s.lock().unwrap().push(i);
            Ok(())
        })
        .build()
        .unwrap();
    let mut got = started.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, [0, 1, 2], "every init ran before build returned");
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    for _ in 0..30 {
        let counts = Arc::clone(&counts);
        group
            .next()
            .queue_in_loop(move |_| {
                let name = std::thread::current().name().unwrap().to_string();
                let i: usize = name.trim_start_matches("rr-").parse().unwrap();
                counts[i].fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
    }
    while group.handles().iter().any(|h| h.pending_functors() > 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    for outcome in group.shutdown() {
        outcome.unwrap();
    }
    for c in counts.iter() {
        assert_eq!(c.load(Ordering::Relaxed), 10);
    }
}

#[test]
fn a_panic_on_one_loop_stops_the_others_and_reaches_the_caller_unchanged() {
    let _serial = serial();
    let group = LoopGroup::new(3).unwrap();
    group
        .get(1)
        .unwrap()
        .queue_in_loop(|_| std::panic::panic_any(1234u32))
        .unwrap();
    // The others quit by themselves: join returns without a quit from here.
    let caught = catch_unwind(AssertUnwindSafe(|| group.join())).unwrap_err();
    assert_eq!(caught.downcast_ref::<u32>(), Some(&1234));
}

#[test]
fn functors_still_queued_at_shutdown_are_dropped_not_leaked() {
    let _serial = serial();
    struct Tally(Arc<(AtomicUsize, AtomicUsize)>, bool);
    impl Drop for Tally {
        fn drop(&mut self) {
            if !self.1 {
                self.0.1.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let counters = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let group = LoopGroup::new(2).unwrap();
    for h in group.handles() {
        // A slow first functor keeps the rest queued past the quit.
        h.queue_in_loop(|_| std::thread::sleep(Duration::from_millis(30)))
            .unwrap();
        for _ in 0..5_000 {
            let mut t = Tally(Arc::clone(&counters), false);
            h.queue_in_loop(move |_| {
                t.1 = true;
                t.0.0.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
    }
    for outcome in group.shutdown() {
        outcome.unwrap();
    }
    let (ran, dropped) = (
        counters.0.load(Ordering::Relaxed),
        counters.1.load(Ordering::Relaxed),
    );
    assert_eq!(ran + dropped, 10_000, "{ran} ran, {dropped} dropped");
    assert!(dropped > 0, "the shutdown came too late to test anything");
}

#[test]
fn loops_can_be_pinned() {
    let _serial = serial();
    let group = LoopGroup::builder(2)
        .pin_to([0])
        .on_start(|_, _| {
            let set = rustix::thread::sched_getaffinity(None).unwrap();
            assert!(set.is_set(0));
            assert_eq!(set.count(), 1);
            Ok(())
        })
        .build()
        .unwrap();
    for outcome in group.shutdown() {
        outcome.unwrap();
    }
}

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/common/echo_server.rs"]
mod echo_server;

/// A burst of connections, opened at once from several threads: in both
/// designs each is accepted once, served by exactly one loop, and echoed.
#[test]
fn every_connection_of_a_burst_is_served_exactly_once_in_both_designs() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let _serial = serial();
    for handoff in [true, false] {
        let group = LoopGroup::new(2).unwrap();
        let (addr, accepted) =
            echo_server::serve_group(&group, "127.0.0.1:0".parse().unwrap(), handoff).unwrap();
        let clients: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let streams: Vec<TcpStream> =
                        (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
                    for (i, mut s) in streams.into_iter().enumerate() {
                        let msg = format!("{t:02}-{i:03}");
                        s.write_all(msg.as_bytes()).unwrap();
                        let mut back = [0u8; 6];
                        s.read_exact(&mut back).unwrap();
                        assert_eq!(&back, msg.as_bytes());
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        // Each accepted once (by one loop, or by the acceptor and handed
        // to one loop), and echoed on it.
        assert_eq!(accepted.load(Ordering::Relaxed), 200, "accepted");
        for outcome in group.shutdown() {
            outcome.unwrap();
        }
    }
}

/// A timer id names one timer of one loop: handed to another loop (from a
/// handle, or from a callback's `Ctx`), it cancels nothing there.
#[test]
fn a_timer_id_of_one_loop_cancels_nothing_on_another() {
    let _serial = serial();
    let group = LoopGroup::new(2).unwrap();
    let (a, b) = (group.get(0).unwrap(), group.get(1).unwrap());
    let hour = Duration::from_secs(3600);
    // The first timer of each loop, made by handles.
    let id_a = a.run_after(hour, |_| {}).unwrap();
    let id_b = b.run_after(hour, |_| {}).unwrap();
    assert_ne!(id_a, id_b, "two loops' first timers have the same id");
    assert!(!b.cancel(id_a).unwrap(), "loop A's id cancelled on B");
    assert_eq!(b.pending_timers(), 1);

    // Made on each loop thread through its context, cancelled from the
    // other loop's thread, through its context and its handle.
    let (tx, rx) = std::sync::mpsc::channel();
    for h in [a, b] {
        let tx = tx.clone();
        h.queue_in_loop(move |cx| {
            tx.send(cx.run_after(hour, |_| {})).unwrap();
        })
        .unwrap();
    }
    let local = [rx.recv().unwrap(), rx.recv().unwrap()];
    let (tx, rx) = std::sync::mpsc::channel();
    let b2 = b.clone();
    a.queue_in_loop(move |cx| {
        // B's ids, on A: neither A's context nor B's own handle from A's
        // thread mistake one loop for the other.
        let on_a = local.iter().map(|id| cx.cancel(*id)).collect::<Vec<_>>();
        let b_from_a = b2.cancel(id_a).unwrap();
        tx.send((on_a, b_from_a)).unwrap();
    })
    .unwrap();
    let (on_a, b_from_a) = rx.recv().unwrap();
    // Exactly one of the two context-made ids is A's own.
    assert_eq!(on_a.iter().filter(|c| **c).count(), 1, "{on_a:?}");
    assert!(!b_from_a);
    // Loop B still has both its timers, and its own cancels say so.
    assert_eq!(b.pending_timers(), 2);
    assert!(b.cancel(id_b).unwrap());
    assert!(a.cancel(id_a).unwrap());
    for outcome in group.shutdown() {
        outcome.unwrap();
    }
}
