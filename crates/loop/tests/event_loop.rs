//! The loop's contract. Run on whichever backend `ROUSE_BACKEND` picks and
//! whichever wake fd `ROUSE_FORCE_PIPE` picks (`cargo xtask ci` runs each).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rouse_loop::{Ctx, Error, EventLoop, Interest, WorkerPool};

/// A guard against hangs: a loop test that is still running after this long
/// fails instead.
const WATCHDOG: Duration = Duration::from_secs(30);

fn new_loop() -> EventLoop {
    let mut lp = EventLoop::new().unwrap();
    lp.run_after(WATCHDOG, |cx| {
        panic!("watchdog: the loop did not finish: {cx:?}")
    });
    lp
}

/// Counts a functor as run or as dropped without running, exactly once.
struct Tally {
    counters: Arc<(AtomicUsize, AtomicUsize)>,
    ran: bool,
}

impl Tally {
    fn run(mut self) {
        self.ran = true;
        self.counters.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if !self.ran {
            self.counters.1.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn four_producers_queue_a_million_functors_and_each_runs_exactly_once() {
    const PRODUCERS: usize = 4;
    const EACH: usize = 250_000;
    let mut lp = new_loop();
    let ran = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (h, ran, done) = (lp.handle(), Arc::clone(&ran), Arc::clone(&done));
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let ran = Arc::clone(&ran);
                    h.queue_in_loop(move |_| {
                        ran.fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap();
                }
                // The last producer to finish queues the quit, after its work.
                if done.fetch_add(1, Ordering::AcqRel) + 1 == PRODUCERS {
                    h.queue_in_loop(|cx: &mut Ctx| cx.quit()).unwrap();
                }
            })
        })
        .collect();
    lp.run().unwrap();
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(ran.load(Ordering::Relaxed), PRODUCERS * EACH);
    let stats = lp.poller().stats();
    println!(
        "{} functors: {} functor wakes, {} wake system calls, {} iterations",
        PRODUCERS * EACH,
        lp.functor_wakes(),
        stats.wake_syscalls,
        lp.iterations()
    );
    assert!(stats.wake_syscalls <= lp.functor_wakes() + 1);
}

#[test]
fn quitting_at_random_moments_neither_loses_nor_repeats_a_functor() {
    const PRODUCERS: usize = 4;
    const EACH: usize = 250_000;
    let counters = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..3 {
        let mut lp = new_loop();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|_| {
                let (h, counters) = (lp.handle(), Arc::clone(&counters));
                std::thread::spawn(move || {
                    for _ in 0..EACH {
                        let tally = Tally {
                            counters: Arc::clone(&counters),
                            ran: false,
                        };
                        // After the loop is gone the functor (and its tally)
                        // is dropped by the failing call.
                        let _ = h.queue_in_loop(move |_| tally.run());
                    }
                })
            })
            .collect();
        // Quit after a pseudo-random number of iterations, then drop the loop
        // while producers may still be queueing.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let quit_after = seed % 2000;
        lp.run_every(Duration::ZERO, Duration::from_micros(1), move |cx| {
            if cx.iterations() >= quit_after {
                cx.quit();
            }
        })
        .unwrap();
        lp.run().unwrap();
        drop(lp);
        for p in producers {
            p.join().unwrap();
        }
        let (ran, dropped) = (
            counters.0.swap(0, Ordering::Relaxed),
            counters.1.swap(0, Ordering::Relaxed),
        );
        assert_eq!(
            ran + dropped,
            PRODUCERS * EACH,
            "round {round}: ran {ran}, dropped {dropped}"
        );
    }
}

#[test]
fn a_functor_queued_by_a_functor_runs_without_the_loop_blocking() {
    let mut lp = new_loop();
    let start = Instant::now();
    lp.queue_in_loop(|cx: &mut Ctx| {
        let iteration = cx.iterations();
        cx.queue_in_loop(move |cx: &mut Ctx| {
            assert_eq!(
                cx.iterations(),
                iteration + 1,
                "not run in the next iteration"
            );
            cx.quit();
        });
    });
    lp.run().unwrap();
    assert!(start.elapsed() < WATCHDOG / 2);
    // And a single iteration with a long timeout does not wait either.
    lp.queue_in_loop(|cx: &mut Ctx| cx.queue_in_loop(|_| {}));
    lp.run_once(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    lp.run_once(Some(Duration::from_secs(20))).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the loop blocked with a functor pending"
    );
}

/// A regression: a backlog of exactly one batch (1,024 functors) runs out
/// in an iteration that did not take the queue, while the wake of a functor
/// queued meanwhile had been consumed by that iteration's poll. The loop
/// then blocked with the functor queued.
#[test]
fn a_backlog_of_exactly_one_batch_does_not_strand_a_functor_queued_meanwhile() {
    let mut lp = new_loop();
    let handle = lp.handle();
    let ran = Arc::new(AtomicUsize::new(0));
    // Two batches: the first iteration takes them all and runs one.
    for _ in 0..2 * 1024 {
        let ran = Arc::clone(&ran);
        handle
            .queue_in_loop(move |_| {
                ran.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 1024);
    // Queued while 1,024 wait in the backlog: its wake is consumed by the
    // next poll, whose iteration runs the backlog out without taking it.
    let late = Arc::new(AtomicUsize::new(0));
    let l = Arc::clone(&late);
    std::thread::spawn(move || {
        handle
            .queue_in_loop(move |_| {
                l.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
    })
    .join()
    .unwrap();
    lp.run_once(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 2 * 1024);
    let start = Instant::now();
    while late.load(Ordering::Relaxed) == 0 {
        lp.run_once(Some(Duration::from_secs(20))).unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the loop blocked with a functor queued"
    );
}

#[test]
fn a_functor_queued_by_a_timer_or_before_run_is_not_stranded() {
    let mut lp = new_loop();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    // Queued on the loop's own thread before run.
    lp.handle()
        .queue_in_loop(move |_| {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    let h = Arc::clone(&hits);
    lp.run_after(Duration::from_millis(1), move |cx| {
        // Timers run after functors: this one must not wait for the watchdog.
        cx.queue_in_loop(move |cx: &mut Ctx| {
            h.fetch_add(1, Ordering::Relaxed);
            cx.quit();
        });
    });
    let start = Instant::now();
    lp.run().unwrap();
    assert!(start.elapsed() < WATCHDOG / 2);
    assert_eq!(hits.load(Ordering::Relaxed), 2);
}

#[test]
fn run_in_loop_runs_at_once_on_the_loop_thread_and_queues_elsewhere() {
    let mut lp = new_loop();
    let h = lp.handle();
    assert!(h.is_in_loop_thread());
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    h.run_in_loop(move || {
        r.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(
        ran.load(Ordering::Relaxed),
        1,
        "not run at once on the loop thread"
    );

    let (h2, r) = (h.clone(), Arc::clone(&ran));
    std::thread::spawn(move || {
        assert!(!h2.is_in_loop_thread());
        let thread = std::thread::current().id();
        h2.run_in_loop(move || {
            assert_ne!(
                std::thread::current().id(),
                thread,
                "ran on the calling thread"
            );
            r.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        h2.quit().unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 1, "ran before the loop did");
    lp.run().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 2);
}

#[test]
fn the_loop_thread_is_the_one_that_made_and_runs_the_loop() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut lp = new_loop();
        let h = lp.handle();
        tx.send(h.clone()).unwrap();
        assert!(h.is_in_loop_thread());
        lp.queue_in_loop(move |cx: &mut Ctx| {
            assert!(h.is_in_loop_thread());
            cx.quit();
        });
        lp.run().unwrap();
    });
    let h = rx.recv().unwrap();
    assert!(!h.is_in_loop_thread());
    t.join().unwrap();
}

#[test]
fn timers_fire_in_deadline_order_and_never_early() {
    let mut lp = new_loop();
    let log = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    for (name, ms) in [("c", 30u64), ("a", 10), ("b", 20), ("b2", 20)] {
        let log = Arc::clone(&log);
        let due = start + Duration::from_millis(ms);
        lp.run_at(due, move |_| {
            assert!(Instant::now() >= due, "{name} fired early");
            log.lock().unwrap().push(name);
        });
    }
    lp.run_after(Duration::from_millis(40), |cx| cx.quit());
    lp.run().unwrap();
    assert_eq!(*log.lock().unwrap(), ["a", "b", "b2", "c"]);
}

#[test]
fn timers_several_buckets_away_fire_in_order_and_never_early() {
    // Timers further out than about 67 ms wait in coarse buckets before
    // they are ordered exactly; the loop must still sleep until each one.
    let mut lp = new_loop();
    let log = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let record = |name: &'static str, due: Instant| {
        let log = Arc::clone(&log);
        move |_: &mut rouse_loop::Ctx| {
            assert!(Instant::now() >= due, "{name} fired early");
            log.lock().unwrap().push(name);
        }
    };
    for (name, ms) in [("d", 260u64), ("a", 90), ("c", 170), ("a2", 90)] {
        let due = start + Duration::from_millis(ms);
        lp.run_at(due, record(name, due));
    }
    let due = start + Duration::from_millis(130);
    let remote = lp.handle();
    let f = record("b (handle)", due);
    std::thread::spawn(move || remote.run_at(due, f).unwrap())
        .join()
        .unwrap();
    let cancelled = lp.run_at(start + Duration::from_millis(200), |_| {
        panic!("a cancelled timer ran")
    });
    assert!(lp.cancel(cancelled));
    lp.run_at(start + Duration::from_millis(300), |cx| cx.quit());
    lp.run().unwrap();
    assert_eq!(*log.lock().unwrap(), ["a", "a2", "b (handle)", "c", "d"]);
}

#[test]
fn run_every_keeps_its_period_and_can_cancel_itself() {
    let mut lp = new_loop();
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let t = Arc::clone(&ticks);
    let start = Instant::now();
    let first = Duration::from_millis(5);
    let period = Duration::from_millis(10);
    let id = Arc::new(Mutex::new(None));
    let my_id = Arc::clone(&id);
    let timer = lp
        .run_every(first, period, move |cx| {
            let mut t = t.lock().unwrap();
            t.push(start.elapsed());
            if t.len() == 4 {
                let me = my_id.lock().unwrap().expect("id set before run");
                assert!(cx.cancel(me), "its own timer was pending");
                assert!(!cx.cancel(me), "cancelled twice");
                cx.run_after(Duration::from_millis(30), |cx| cx.quit());
            }
        })
        .unwrap();
    *id.lock().unwrap() = Some(timer);
    lp.run().unwrap();
    let ticks = ticks.lock().unwrap();
    assert_eq!(ticks.len(), 4, "{ticks:?}");
    for (i, at) in ticks.iter().enumerate() {
        let due = first + period * i as u32;
        assert!(*at >= due, "tick {i} at {at:?}, due {due:?}");
    }
}

#[test]
fn a_cancelled_timer_never_runs_and_cancel_says_whether_it_was_pending() {
    let mut lp = new_loop();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fired);
    let victim = lp.run_after(Duration::from_millis(10), move |_| {
        f.fetch_add(1, Ordering::Relaxed);
    });
    let f = Arc::clone(&fired);
    let victim2 = lp.run_after(Duration::from_millis(30), move |_| {
        f.fetch_add(1, Ordering::Relaxed);
    });
    assert!(lp.cancel(victim));
    assert!(!lp.cancel(victim));
    // Cancelled from another timer's callback, and from another thread.
    lp.run_after(Duration::from_millis(5), move |cx| {
        assert!(cx.cancel(victim2))
    });
    let f = Arc::clone(&fired);
    let victim3 = lp.run_after(Duration::from_millis(30), move |_| {
        f.fetch_add(1, Ordering::Relaxed);
    });
    let h = lp.handle();
    std::thread::spawn(move || h.cancel(victim3).unwrap())
        .join()
        .unwrap();
    lp.run_after(Duration::from_millis(50), |cx| cx.quit());
    lp.run().unwrap();
    assert_eq!(fired.load(Ordering::Relaxed), 0);
}

#[test]
fn timers_from_another_thread_run_on_the_loop_thread() {
    let mut lp = new_loop();
    let h = lp.handle();
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&ticks);
    let loop_thread = std::thread::current().id();
    std::thread::spawn(move || {
        h.run_every(Duration::ZERO, Duration::from_millis(2), move |cx| {
            assert_eq!(std::thread::current().id(), loop_thread);
            if t.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                cx.quit();
            }
        })
        .unwrap();
    })
    .join()
    .unwrap();
    lp.run().unwrap();
    assert_eq!(ticks.load(Ordering::Relaxed), 3);
}

#[test]
fn io_callbacks_see_readiness_and_can_remove_themselves() {
    let mut lp = new_loop();
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let id = Arc::new(Mutex::new(None));
    let my_id = Arc::clone(&id);
    // The loop gets a second fd of the socket, so that the socket stays open
    // when the loop drops its source.
    let source = lp
        .add_source(
            a.try_clone().unwrap(),
            Interest::READABLE,
            move |sock, ready, cx| {
                assert!(ready.readable);
                let mut buf = [0; 8];
                let _ = sock.read(&mut buf).unwrap();
                c.fetch_add(1, Ordering::Relaxed);
                cx.remove_source(my_id.lock().unwrap().unwrap()).unwrap();
                cx.run_after(Duration::from_millis(20), |cx| cx.quit());
            },
        )
        .unwrap();
    *id.lock().unwrap() = Some(source);
    (&b).write_all(b"12").unwrap();
    lp.run().unwrap();
    // More data after removal: the callback is never called again.
    (&b).write_all(b"34").unwrap();
    lp.run_after(Duration::from_millis(20), |cx| cx.quit());
    lp.run().unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        lp.remove_source(source).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    drop(a);
}

#[test]
fn a_source_removed_by_another_callback_in_the_same_iteration_is_not_called() {
    let mut lp = new_loop();
    let (a, a_peer) = UnixStream::pair().unwrap();
    let (b, b_peer) = UnixStream::pair().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    for sock in [a, b] {
        let (calls, all) = (Arc::clone(&calls), Arc::clone(&ids));
        let id = lp
            .add_source(sock, Interest::READABLE, move |_sock, _ready, cx| {
                calls.fetch_add(1, Ordering::Relaxed);
                // Remove both: whichever runs first removes the other.
                for id in all.lock().unwrap().iter() {
                    let _ = cx.remove_source(*id);
                }
                cx.quit();
            })
            .unwrap();
        ids.lock().unwrap().push(id);
    }
    (&a_peer).write_all(b"x").unwrap();
    (&b_peer).write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    lp.run().unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[test]
fn take_source_hands_the_object_back_and_checks_its_type() {
    let mut lp = new_loop();
    let (a, mut peer) = UnixStream::pair().unwrap();
    let id = lp.add_source(a, Interest::READABLE, |_, _, _| {}).unwrap();
    let err = lp.take_source::<std::fs::File>(id).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let mut a: UnixStream = lp.take_source(id).unwrap();
    a.write_all(b"back").unwrap();
    let mut buf = [0; 4];
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
    assert_eq!(
        lp.take_source::<UnixStream>(id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn a_handle_after_its_loop_is_dropped_errs_at_once() {
    let lp = new_loop();
    let h = lp.handle();
    let pool = WorkerPool::new(&h, 1).unwrap();
    drop(lp);
    assert!(matches!(h.quit(), Err(Error::LoopGone)));
    assert!(matches!(h.queue_in_loop(|_| {}), Err(Error::LoopGone)));
    assert!(matches!(h.run_in_loop(|| {}), Err(Error::LoopGone)));
    assert!(matches!(
        h.run_after(Duration::ZERO, |_| {}),
        Err(Error::LoopGone)
    ));
    assert!(matches!(pool.spawn(|| 1, |_, _| {}), Err(Error::LoopGone)));
}

#[test]
fn functors_still_queued_are_dropped_with_the_loop() {
    let counters = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let lp = new_loop();
    for _ in 0..10 {
        let tally = Tally {
            counters: Arc::clone(&counters),
            ran: false,
        };
        lp.handle().queue_in_loop(move |_| tally.run()).unwrap();
    }
    drop(lp);
    assert_eq!(counters.1.load(Ordering::Relaxed), 10);
    assert_eq!(counters.0.load(Ordering::Relaxed), 0);
}

#[test]
fn a_panic_in_a_callback_reaches_run_and_the_loop_carries_on() {
    let mut lp = new_loop();
    let ran = Arc::new(AtomicUsize::new(0));
    lp.queue_in_loop(|_| std::panic::panic_any(42u32));
    let r = Arc::clone(&ran);
    lp.queue_in_loop(move |cx: &mut Ctx| {
        r.fetch_add(1, Ordering::Relaxed);
        cx.quit();
    });
    let payload = catch_unwind(AssertUnwindSafe(|| lp.run())).unwrap_err();
    assert_eq!(payload.downcast_ref::<u32>(), Some(&42));
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    // The functor queued after the panicking one is still there.
    lp.run().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 1);

    // A panicking I/O callback stays registered.
    let (a, b) = UnixStream::pair().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    lp.add_source(a, Interest::READABLE, move |sock, _, cx| {
        if c.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("first call");
        }
        let mut buf = [0; 1];
        sock.read_exact(&mut buf).unwrap();
        cx.quit();
    })
    .unwrap();
    (&b).write_all(b"x").unwrap();
    let payload = catch_unwind(AssertUnwindSafe(|| lp.run())).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"first call"));
    lp.run().unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[test]
fn a_panicking_job_unwinds_out_of_run_and_its_worker_keeps_working() {
    let mut lp = new_loop();
    let pool = WorkerPool::new(&lp.handle(), 1).unwrap();
    pool.spawn(
        || -> u32 { panic!("job failed") },
        |_, _: &mut Ctx| unreachable!("on_done of a panicked job"),
    )
    .unwrap();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run()))
        .expect_err("the job's panic reaches the loop thread");
    assert_eq!(err.downcast_ref::<&str>(), Some(&"job failed"));
    // The one worker survived: a later job completes.
    pool.spawn(
        || 7u32,
        |n, cx: &mut Ctx| {
            assert_eq!(n, 7);
            cx.quit();
        },
    )
    .unwrap();
    lp.run().unwrap();
}

#[test]
fn worker_pool_completions_arrive_once_each_on_the_loop_thread() {
    const JOBS: usize = 10_000;
    let mut lp = new_loop();
    let pool = Arc::new(WorkerPool::new(&lp.handle(), 2).unwrap());
    let done = Arc::new(Mutex::new(vec![0u8; JOBS]));
    let loop_thread = std::thread::current().id();
    // Jobs spawned from another thread too: the pool is shared.
    let spawner = {
        let (pool, done) = (Arc::clone(&pool), Arc::clone(&done));
        std::thread::spawn(move || {
            for i in 0..JOBS {
                let done = Arc::clone(&done);
                pool.spawn(
                    move || i * 2,
                    move |r, cx| {
                        assert_eq!(std::thread::current().id(), loop_thread);
                        let mut d = done.lock().unwrap();
                        d[r / 2] += 1;
                        if d.iter().all(|&n| n == 1) {
                            cx.quit();
                        }
                    },
                )
                .unwrap();
            }
        })
    };
    lp.run().unwrap();
    spawner.join().unwrap();
    assert!(done.lock().unwrap().iter().all(|&n| n == 1));
    let stats = lp.poller().stats();
    println!(
        "{JOBS} completions: {} functor wakes, {} wake system calls",
        lp.functor_wakes(),
        stats.wake_syscalls
    );
}

#[test]
fn bursts_onto_idle_workers_never_strand_a_job() {
    // Each burst starts with every worker idle, and is smaller or larger
    // than the pool: the wake-ups a spawn sends must cover every job.
    const BURSTS: usize = 300;
    let mut lp = new_loop();
    let pool = WorkerPool::new(&lp.handle(), 4).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let total: usize = (0..BURSTS).map(|b| b % 9 + 1).sum();
    let finished = Arc::new(AtomicUsize::new(0));
    let spawner = {
        let finished = Arc::clone(&finished);
        std::thread::spawn(move || {
            for b in 0..BURSTS {
                let size = b % 9 + 1;
                for j in 0..size {
                    let (tx, finished) = (tx.clone(), Arc::clone(&finished));
                    pool.spawn(
                        move || j,
                        move |r, cx| {
                            tx.send(r).unwrap();
                            if finished.fetch_add(1, Ordering::Relaxed) + 1 == total {
                                cx.quit();
                            }
                        },
                    )
                    .unwrap();
                }
                // Wait for the whole burst, so the workers go idle again.
                let mut got: Vec<_> = (0..size).map(|_| rx.recv().unwrap()).collect();
                got.sort_unstable();
                assert_eq!(got, (0..size).collect::<Vec<_>>(), "burst {b}");
            }
            pool
        })
    };
    lp.run().unwrap();
    let pool = spawner.join().unwrap();
    drop(pool);
    assert_eq!(finished.load(Ordering::Relaxed), total);
}

#[test]
fn quits_are_not_counted_as_functor_wakes() {
    let mut lp = new_loop();
    let handle = lp.handle();
    std::thread::spawn(move || handle.quit().unwrap())
        .join()
        .unwrap();
    lp.run().unwrap();
    assert_eq!(lp.functor_wakes(), 0, "one quit, no functor");
    let handle = lp.handle();
    std::thread::spawn(move || handle.queue_in_loop(|cx| cx.quit()).unwrap())
        .join()
        .unwrap();
    lp.run().unwrap();
    assert_eq!(lp.functor_wakes(), 1, "one functor");
}

/// A change of interest asked for in the source's own callback is applied
/// when the callback returns; if that fails, the interest stays as it was
/// and the next `modify_source` for the source says so.
#[test]
fn a_failed_change_of_interest_from_the_sources_own_callback_is_reported() {
    let mut lp = new_loop();
    let (a, b) = UnixStream::pair().unwrap();
    let id = lp
        .add_source(a, Interest::READABLE, |sock, _ready, cx| {
            let me = cx.current_source().unwrap();
            // Make the change fail when it is applied: the poller no longer
            // knows the fd.
            cx.poller().deregister(&*sock).unwrap();
            cx.modify_source(me, Interest::WRITABLE).unwrap();
            cx.quit();
        })
        .unwrap();
    (&b).write_all(b"x").unwrap();
    lp.run().unwrap();
    assert_eq!(lp.source_interest(id).unwrap(), Interest::READABLE);
    let err = lp.modify_source(id, Interest::READABLE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("own callback"),
        "the error says which change failed: {err}"
    );
    // Reported once: the next call is a call of its own.
    let again = lp.modify_source(id, Interest::READABLE).unwrap_err();
    assert!(!again.to_string().contains("own callback"), "{again}");
}

/// A quit asked for during `run_once` or `dispatch` ends that call (it
/// reports it) and does not carry over to a later `run`.
#[test]
fn a_quit_during_dispatch_is_answered_by_that_dispatch() {
    let mut lp = new_loop();
    lp.queue_in_loop(|cx| cx.quit());
    assert!(lp.dispatch().unwrap(), "the dispatch reports the quit");
    assert!(!lp.dispatch().unwrap());
    let start = Instant::now();
    lp.run_after(Duration::from_millis(50), |cx| cx.quit());
    lp.run().unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "run returned after {:?}: the dispatch's quit carried over",
        start.elapsed()
    );
    // From a handle, too.
    lp.handle().quit().unwrap();
    assert!(lp.run_once(Some(Duration::ZERO)).unwrap());
    assert!(!lp.run_once(Some(Duration::ZERO)).unwrap());
}
