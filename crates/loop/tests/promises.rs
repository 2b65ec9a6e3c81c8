//! Timer and cancel promises at their edges, and `LoopGone` while a loop is
//! being dropped. Run on whichever backend `ROUSE_BACKEND` picks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use rouse_loop::{Ctx, Error, EventLoop};

const WATCHDOG: Duration = Duration::from_secs(30);

fn new_loop() -> EventLoop {
    let mut lp = EventLoop::new().unwrap();
    lp.run_after(WATCHDOG, |cx| {
        panic!("watchdog: the loop did not finish: {cx:?}")
    });
    lp
}

#[test]
fn a_deadline_past_what_instant_holds_never_fires_and_panics_nowhere() {
    let mut lp = new_loop();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fired);
    let never_local = lp.run_after(Duration::MAX, move |_| {
        f.fetch_add(100, Ordering::Relaxed);
    });
    let f = Arc::clone(&fired);
    let never_remote = lp
        .handle()
        .run_after(Duration::MAX, move |_| {
            f.fetch_add(100, Ordering::Relaxed);
        })
        .unwrap();
    // Fires once at 5 ms; its next deadline is beyond any Instant.
    let f = Arc::clone(&fired);
    let once_then_never = lp
        .run_every(Duration::from_millis(5), Duration::MAX, move |_| {
            f.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    // Three timers due in the same iteration as its reschedule.
    for _ in 0..3 {
        let f = Arc::clone(&fired);
        lp.run_after(Duration::from_millis(5), move |_| {
            f.fetch_add(1, Ordering::Relaxed);
        });
    }
    lp.run_after(Duration::from_millis(40), |cx| cx.quit());
    lp.run().unwrap();
    assert_eq!(fired.load(Ordering::Relaxed), 4);
    // All three are still pending, and cancellable.
    assert!(lp.cancel(never_local));
    assert!(lp.handle().cancel(never_remote).unwrap());
    assert!(lp.cancel(once_then_never));
    assert!(!lp.cancel(once_then_never));
}

/// 5,000 timers due at 20-40 ms, every one cancelled from other threads as
/// fast as they go (well before the deadlines, on an idle machine), with a
/// backlog of functors far longer than a batch. Each timer either ran or
/// was stopped by a cancel that returned `true`, never both; every cancel
/// that returned before its timer's deadline returned `true`.
fn cancelled_before_the_deadline_never_run_whatever_the_backlog() {
    const N: u64 = 5_000;
    let mut lp = new_loop();
    let handle = lp.handle();
    let ran: Arc<Vec<AtomicBool>> = Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    let start = Instant::now();
    let due = |i: u64| Duration::from_millis(20 + i % 20);
    let ids: Vec<_> = (0..N)
        .map(|i| {
            let ran = Arc::clone(&ran);
            handle
                .run_at(start + due(i), move |_: &mut Ctx| {
                    ran[i as usize].store(true, Ordering::Relaxed);
                })
                .unwrap()
        })
        .collect();
    // A long backlog of slow-ish functors.
    for _ in 0..20_000 {
        handle
            .queue_in_loop(|_: &mut Ctx| {
                std::hint::black_box((0..200).sum::<u64>());
            })
            .unwrap();
    }
    let cancellers: Vec<_> = (0..4u64)
        .map(|k| {
            let (handle, ids) = (handle.clone(), ids.clone());
            std::thread::spawn(move || {
                (k..N)
                    .step_by(4)
                    .map(|i| {
                        let stopped = handle.cancel(ids[i as usize]).unwrap();
                        (i, stopped, start.elapsed())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    lp.run_after(Duration::from_millis(60), |cx| cx.quit());
    lp.run().unwrap();
    let mut before_deadline = 0;
    for c in cancellers {
        for (i, stopped, at) in c.join().unwrap() {
            let ran = ran[i as usize].load(Ordering::Relaxed);
            assert!(
                stopped != ran,
                "timer {i}: cancel said {stopped}, ran: {ran}"
            );
            if at < due(i) {
                before_deadline += 1;
                assert!(
                    stopped,
                    "timer {i}: cancelled at {at:?}, before its deadline, yet not stopped"
                );
            }
        }
    }
    assert!(before_deadline > 0, "no cancel came before its deadline");
}

#[test]
fn timers_cancelled_from_other_threads_never_run_whatever_the_backlog() {
    cancelled_before_the_deadline_never_run_whatever_the_backlog();
}

#[test]
fn a_timer_cancelled_through_a_handle_by_another_timer_of_the_same_batch_does_not_run() {
    let mut lp = new_loop();
    let handle = lp.handle();
    let ran = Arc::new(AtomicUsize::new(0));
    let at = Instant::now() + Duration::from_millis(5);
    let ids = Arc::new(Mutex::new(Vec::new()));
    {
        let (handle, ids) = (handle.clone(), Arc::clone(&ids));
        lp.run_at(at, move |_| {
            for &id in ids.lock().unwrap().iter() {
                handle.cancel(id).unwrap();
            }
        });
    }
    for _ in 0..10 {
        let ran = Arc::clone(&ran);
        let id = lp.run_at(at, move |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        ids.lock().unwrap().push(id);
    }
    lp.run_after(Duration::from_millis(30), |cx| cx.quit());
    lp.run().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 0);
}

#[test]
fn once_a_call_says_loop_gone_every_later_call_does() {
    for round in 0..300 {
        let lp = EventLoop::new().unwrap();
        let handle = lp.handle();
        let barrier = Arc::new(Barrier::new(2));
        let caller = {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut gone = false;
                for i in 0..2_000 {
                    let r = match i % 4 {
                        0 => handle.quit(),
                        1 => handle.queue_in_loop(|_: &mut Ctx| {}),
                        2 => handle.run_after(Duration::from_secs(1), |_| {}).map(drop),
                        _ => handle.run_in_loop(|| {}),
                    };
                    match r {
                        Err(Error::LoopGone) => gone = true,
                        Ok(()) => assert!(!gone, "round {round}: Ok after LoopGone (call {i})"),
                        Err(e) => panic!("round {round}: {e}"),
                    }
                }
            })
        };
        barrier.wait();
        drop(lp);
        caller.join().unwrap();
    }
}

#[test]
fn pending_counts_are_readable_from_a_handle() {
    let mut lp = EventLoop::new().unwrap();
    let handle = lp.handle();
    let _ids: HashSet<_> = (0..10)
        .map(|_| lp.run_after(Duration::from_secs(60), |_| {}))
        .collect();
    for _ in 0..7 {
        handle.queue_in_loop(|_: &mut Ctx| {}).unwrap();
    }
    let remote = handle.run_after(Duration::from_secs(60), |_| {}).unwrap();
    assert_eq!(handle.pending_timers(), 11);
    assert_eq!(handle.pending_functors(), 8); // seven, and the timer's insert
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(handle.pending_functors(), 0);
    assert_eq!(handle.pending_timers(), 11);
    assert!(handle.cancel(remote).unwrap());
    assert_eq!(handle.pending_timers(), 10);
}

/// Cancels from four threads racing the deadlines of 4,000 timers (once and
/// repeating) while a long functor backlog is drained, on every backend. A
/// timer that fires once either ran or was cancelled with `true`, never
/// both, never neither. A repeating timer cancelled with `true` runs no more:
/// at most the run that was already under way when the cancel landed (its
/// callback may record itself a moment after the cancel returned) ends after
/// it.
#[test]
fn cancels_racing_deadlines_are_exact_on_every_backend() {
    use std::sync::atomic::AtomicU64;
    for backend in [rouse_loop::Backend::Epoll, rouse_loop::Backend::IoUring] {
        let poller = match rouse_loop::Poller::with_backend(backend) {
            Ok(p) => p,
            Err(e) => {
                println!("skipped {backend:?}: {e}");
                continue;
            }
        };
        let mut lp = EventLoop::with_poller(poller).unwrap();
        let handle = lp.handle();
        const N: usize = 4_000;
        // A global clock of events, to order runs against cancels.
        let clock = Arc::new(AtomicU64::new(1));
        // Per timer: the clock at the start of each of its runs.
        let runs: Arc<Vec<Mutex<Vec<u64>>>> =
            Arc::new((0..N).map(|_| Mutex::new(Vec::new())).collect());
        let start = Instant::now();
        let ids: Vec<_> = (0..N)
            .map(|i| {
                let (runs, clock) = (Arc::clone(&runs), Arc::clone(&clock));
                let tick = move || {
                    let at = clock.fetch_add(1, Ordering::SeqCst);
                    runs[i].lock().unwrap().push(at);
                };
                let at = start + Duration::from_micros((i as u64 * 7_919) % 30_000);
                if i % 4 == 0 {
                    handle
                        .run_every(
                            at.saturating_duration_since(Instant::now()),
                            Duration::from_millis(3),
                            move |_| tick(),
                        )
                        .unwrap()
                } else if i % 4 == 1 {
                    lp.run_at(at, move |_| tick())
                } else {
                    handle.run_at(at, move |_| tick()).unwrap()
                }
            })
            .collect();
        for _ in 0..50_000 {
            handle
                .queue_in_loop(|_| {
                    std::hint::black_box((0..50).sum::<u64>());
                })
                .unwrap();
        }
        // Each canceller takes every fourth id, cancelling at random moments
        // in the window; records the clock when a cancel returned true.
        let cancelled: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
        let cancellers: Vec<_> = (0..4)
            .map(|k| {
                let (handle, ids) = (handle.clone(), ids.clone());
                let (clock, cancelled) = (Arc::clone(&clock), Arc::clone(&cancelled));
                std::thread::spawn(move || {
                    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ k;
                    for i in (k as usize..N).step_by(4) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        if seed.is_multiple_of(3) {
                            continue; // left to run
                        }
                        let at = start + Duration::from_micros(seed % 35_000);
                        if let Some(d) = at.checked_duration_since(Instant::now()) {
                            std::thread::sleep(d.min(Duration::from_micros(200)));
                        }
                        if handle.cancel(ids[i]).unwrap() {
                            cancelled[i]
                                .store(clock.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        lp.run_after(Duration::from_millis(80), |cx| cx.quit());
        lp.run().unwrap();
        for c in cancellers {
            c.join().unwrap();
        }
        // Stop what still repeats, then let nothing more run.
        for (i, id) in ids.iter().enumerate() {
            if i % 4 == 0 && cancelled[i].load(Ordering::SeqCst) == 0 {
                lp.cancel(*id);
            }
        }
        let (mut ran, mut stopped) = (0, 0);
        for i in 0..N {
            let starts = runs[i].lock().unwrap().clone();
            let n = starts.len();
            let cancel_at = cancelled[i].load(Ordering::SeqCst);
            if cancel_at != 0 {
                stopped += 1;
                let after = starts.iter().filter(|&&t| t > cancel_at).count();
                assert!(
                    after <= usize::from(i % 4 == 0),
                    "{backend:?}: timer {i} ran at {starts:?}, its cancel returned at {cancel_at}"
                );
            }
            if i % 4 != 0 {
                assert!(n <= 1, "{backend:?}: timer {i} ran {n} times");
                assert!(
                    (n == 1) != (cancel_at != 0),
                    "{backend:?}: timer {i}: ran {n}, cancelled {}",
                    cancel_at != 0
                );
                ran += n;
            }
        }
        assert!(
            ran > 100 && stopped > 100,
            "{backend:?}: {ran} ran, {stopped} stopped: no race"
        );
        assert_eq!(
            lp.timer_count(),
            0,
            "{backend:?}: every timer ran, was cancelled or stopped"
        );
    }
}

/// Loop-thread callbacks share `Rc<RefCell<_>>` state; the obvious closures
/// need no type annotation.
#[test]
fn callbacks_on_the_loop_thread_may_hold_rc_and_closures_need_no_annotation() {
    use std::cell::RefCell;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::rc::Rc;

    let mut lp = new_loop();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (server, mut client) = UnixStream::pair().unwrap();
    server.set_nonblocking(true).unwrap();
    let l = Rc::clone(&log);
    lp.add_source(server, rouse_loop::Interest::READABLE, move |s, _, cx| {
        let mut buf = [0; 8];
        let n = s.read(&mut buf).unwrap_or(0);
        if n > 0 {
            l.borrow_mut().push(format!("read {n}"));
            let l = Rc::clone(&l);
            cx.queue_in_loop(move |cx| {
                l.borrow_mut().push("functor".into());
                let l = Rc::clone(&l);
                cx.run_after(Duration::from_millis(1), move |cx| {
                    l.borrow_mut().push("timer".into());
                    cx.quit();
                });
            });
        }
    })
    .unwrap();
    let handle = lp.handle();
    let t = std::thread::spawn(move || {
        client.write_all(b"abc").unwrap();
        handle.queue_in_loop(|cx| assert!(cx.iterations() > 0))
    });
    lp.run().unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(*log.borrow(), ["read 3", "functor", "timer"]);
}

/// A repeating timer with a period of zero would run in every iteration
/// (a busy loop): refused, on the loop thread and through a handle.
#[test]
fn a_zero_period_is_refused_on_both_paths() {
    let mut lp = EventLoop::new().unwrap();
    let err = lp
        .run_every(Duration::ZERO, Duration::ZERO, |_| {})
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    match lp
        .handle()
        .run_every(Duration::ZERO, Duration::ZERO, |_| {})
    {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
    assert_eq!(lp.timer_count(), 0);
    // The smallest period there is still works.
    let id = lp
        .run_every(Duration::ZERO, Duration::from_nanos(1), |_| {})
        .unwrap();
    assert!(lp.cancel(id));
}
