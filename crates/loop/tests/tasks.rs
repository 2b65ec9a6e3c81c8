//! Async tasks on the loop: spawned here and from other threads, woken from
//! anywhere, aborted, panicking, dropped with their loop; and a property
//! test that random spawn, wake, abort and quit sequences lose no wake and
//! run no task after it is gone. On whichever backend `ROUSE_BACKEND`
//! picks.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rouse_loop::{EventLoop, JoinError, SharedFd, task};

fn new_loop() -> EventLoop {
    let mut lp = EventLoop::new().unwrap();
    lp.run_after(Duration::from_secs(30), |cx| {
        panic!("watchdog: the loop did not finish: {cx:?}")
    });
    lp
}

/// A signal another thread raises: counts raises, and wakes the task that
/// waits on it.
#[derive(Clone, Default)]
struct Signal {
    inner: Arc<Mutex<(usize, Option<Waker>)>>,
}

impl Signal {
    fn raise(&self) {
        let w = {
            let mut st = self.inner.lock().unwrap();
            st.0 += 1;
            st.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Waits for raises; takes every one pending.
    fn wait(&self) -> impl Future<Output = usize> + '_ {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut st = self.inner.lock().unwrap();
            if st.0 > 0 {
                Poll::Ready(std::mem::take(&mut st.0))
            } else {
                st.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

#[test]
fn a_local_task_sleeps_and_its_result_is_awaited() {
    let mut lp = new_loop();
    let start = Instant::now();
    let job = lp.spawn_local(async {
        task::sleep(Duration::from_millis(20)).await;
        Rc::new(7) // not Send: a local task's result need not be
    });
    let handle = lp.handle();
    let seen = Rc::new(Cell::new(0));
    let s = Rc::clone(&seen);
    lp.spawn_local(async move {
        s.set(*job.await.unwrap());
        handle.quit().unwrap();
    });
    lp.run().unwrap();
    assert_eq!(seen.get(), 7);
    assert!(start.elapsed() >= Duration::from_millis(20), "woke early");
    assert_eq!(lp.task_count(), 0, "finished tasks are gone");
}

#[test]
fn tasks_spawned_from_two_threads_each_run_once() {
    let mut lp = new_loop();
    let ran = Arc::new(AtomicUsize::new(0));
    const EACH: usize = 20_000;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (h, ran) = (lp.handle(), Arc::clone(&ran));
            std::thread::spawn(move || {
                let mut joins = Vec::new();
                for _ in 0..EACH {
                    let ran = Arc::clone(&ran);
                    joins.push(
                        h.spawn(async move {
                            ran.fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap(),
                    );
                }
                joins
            })
        })
        .collect();
    let joins: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    while ran.load(Ordering::Relaxed) < 2 * EACH {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 2 * EACH);
    assert!(joins.iter().all(|j| j.is_finished()));
}

/// A task woken from another thread, again and again: every raise is seen,
/// and the wakes cost far fewer system calls than wakes.
#[test]
fn wakes_from_another_thread_are_never_lost() {
    let mut lp = new_loop();
    let signal = Signal::default();
    const RAISES: usize = 100_000;
    let seen = Rc::new(Cell::new(0));
    let (s, sig) = (Rc::clone(&seen), signal.clone());
    let handle = lp.handle();
    lp.spawn_local(async move {
        while s.get() < RAISES {
            s.set(s.get() + sig.wait().await);
        }
        handle.quit().unwrap();
    });
    let raiser = std::thread::spawn(move || {
        for _ in 0..RAISES {
            signal.raise();
        }
    });
    let before = lp.poller().stats().wake_syscalls;
    lp.run().unwrap();
    raiser.join().unwrap();
    assert_eq!(seen.get(), RAISES);
    let syscalls = lp.poller().stats().wake_syscalls - before;
    println!("{RAISES} wakes from another thread: {syscalls} wake system calls");
    assert!(syscalls < RAISES as u64 / 10, "{syscalls} system calls");
}

#[test]
fn an_aborted_task_is_dropped_with_its_timer_and_never_runs_again() {
    let mut lp = new_loop();
    let timers = lp.timer_count();
    let ran = Rc::new(Cell::new(false));
    let r = Rc::clone(&ran);
    let job = lp.spawn_local(async move {
        task::sleep(Duration::from_millis(50)).await;
        r.set(true);
    });
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.timer_count(), timers + 1, "the sleep's timer");
    job.abort();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.timer_count(), timers, "the timer went with the task");
    assert_eq!(lp.task_count(), 0);
    // Past the deadline: nothing runs.
    let until = Instant::now() + Duration::from_millis(80);
    while Instant::now() < until {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert!(!ran.get());
    let r = futures_ready(job);
    assert_eq!(r, Err(JoinError::Cancelled));
}

/// Polls a finished join handle once.
fn futures_ready<T>(mut j: rouse_loop::JoinHandle<T>) -> Result<T, JoinError> {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    match Pin::new(&mut j).poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("not finished"),
    }
}

/// A task dropped while it awaits a receive: the operation is cancelled,
/// and the loop keeps its buffer until the kernel lets go.
#[test]
fn an_aborted_task_cancels_its_operation() {
    let mut lp = new_loop();
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = SharedFd::new(a);
    let kept = a.clone();
    let job = lp.spawn_local(async move {
        let (n, _buf) = task::recv(&a, Vec::with_capacity(64)).await;
        n.unwrap()
    });
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.ops_in_flight(), 1);
    job.abort();
    let until = Instant::now() + Duration::from_secs(5);
    while lp.ops_in_flight() > 0 && Instant::now() < until {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(lp.ops_in_flight(), 0, "the receive was cancelled");
    // The data goes to whoever reads next: the receive took nothing.
    b.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    let n = rustix::io::read(&kept, &mut one).unwrap();
    assert_eq!((n, one), (1, *b"x"));
    assert_eq!(futures_ready(job), Err(JoinError::Cancelled));
}

#[test]
fn a_panicking_task_unwinds_out_of_run_and_its_handle_says_so() {
    let mut lp = new_loop();
    let job = lp.spawn_local(async {
        panic!("from a task");
    });
    let p = catch_unwind(AssertUnwindSafe(|| lp.run())).unwrap_err();
    assert_eq!(*p.downcast::<&str>().unwrap(), "from a task");
    assert_eq!(futures_ready(job), Err(JoinError::Panicked));
    // The loop carries on.
    lp.spawn_local(async {});
    lp.run_once(Some(Duration::ZERO)).unwrap();
}

/// A panic unwinds out of `run` in the middle of a task phase: the tasks
/// queued behind the one that panicked keep their turn (their wakes are not
/// lost with the phase), and each runs exactly once.
#[test]
fn the_tasks_queued_behind_a_panicking_one_still_run_once() {
    let mut lp = new_loop();
    let ran = Rc::new(Cell::new(0));
    let mut jobs = Vec::new();
    for i in 0..5 {
        let r = Rc::clone(&ran);
        jobs.push(lp.spawn_local(async move {
            if i == 1 {
                panic!("the second task");
            }
            r.set(r.get() + 1);
        }));
    }
    let p = catch_unwind(AssertUnwindSafe(|| lp.run_once(Some(Duration::ZERO)))).unwrap_err();
    assert_eq!(*p.downcast::<&str>().unwrap(), "the second task");
    assert_eq!(ran.get(), 1, "the first ran before the panic");
    for _ in 0..3 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(ran.get(), 4, "the three behind the panic ran, once each");
    assert_eq!(lp.task_count(), 0);
    let outcomes: Vec<_> = jobs.into_iter().map(futures_ready).collect();
    assert_eq!(
        outcomes,
        [Ok(()), Err(JoinError::Panicked), Ok(()), Ok(()), Ok(())]
    );
}

/// A task spawned from another thread and not yet taken in when the loop is
/// dropped: its handle says it was cancelled (it does not wait forever),
/// and its future is dropped.
#[test]
fn a_task_spawned_from_afar_and_never_taken_in_is_cancelled_with_its_loop() {
    let lp = new_loop();
    let handle = lp.handle();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
    let job = std::thread::spawn(move || {
        handle
            .spawn(async move {
                let _tell = dropped_tx;
                7
            })
            .unwrap()
    })
    .join()
    .unwrap();
    assert!(!job.is_finished());
    drop(lp);
    assert!(job.is_finished());
    assert_eq!(futures_ready(job), Err(JoinError::Cancelled));
    // The future (and the sender it held) is gone.
    assert!(dropped_rx.recv().is_err());
}

/// Records, when dropped, on which thread it was.
struct Output(std::sync::mpsc::Sender<std::thread::ThreadId>);

impl Drop for Output {
    fn drop(&mut self) {
        let _ = self.0.send(std::thread::current().id());
    }
}

/// Keeps a clone of its task's waker in `slot` (so that the task's cell
/// outlives the task), then finishes on its next poll.
struct KeepWaker {
    slot: Arc<Mutex<Vec<Waker>>>,
    polled: bool,
}

impl Future for KeepWaker {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.polled {
            return Poll::Ready(());
        }
        self.polled = true;
        self.slot.lock().unwrap().push(cx.waker().clone());
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A task whose handle was dropped (detached, from another thread or from
/// the loop's) drops its result on the loop thread as the result comes,
/// not when the last reference to the task goes (here, a waker kept).
#[test]
fn a_detached_tasks_result_is_dropped_on_the_loop_thread_as_it_comes() {
    let mut lp = new_loop();
    let (tx, rx) = std::sync::mpsc::channel();
    let wakers = Arc::new(Mutex::new(Vec::new()));
    let handle = lp.handle();
    let (tx2, slot) = (tx.clone(), Arc::clone(&wakers));
    std::thread::spawn(move || {
        let job = handle.spawn(async move {
            KeepWaker {
                slot,
                polled: false,
            }
            .await;
            Output(tx2)
        });
        drop(job.unwrap());
    })
    .join()
    .unwrap();
    let slot = Arc::clone(&wakers);
    drop(lp.spawn_local(async move {
        KeepWaker {
            slot,
            polled: false,
        }
        .await;
        Output(tx)
    }));
    let quit = lp.handle();
    lp.spawn_local(async move {
        task::sleep(Duration::from_millis(5)).await;
        quit.quit().unwrap();
    });
    lp.run().unwrap();
    let me = std::thread::current().id();
    let dropped: Vec<_> = rx.try_iter().collect();
    assert_eq!(dropped, [me, me], "both results dropped, here, during run");
    assert_eq!(wakers.lock().unwrap().len(), 2, "the wakers are still held");
}

#[test]
fn readiness_and_operations_are_awaited() {
    let mut lp = new_loop();
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = SharedFd::new(a);
    let handle = lp.handle();
    let got = Rc::new(Cell::new(0));
    let g = Rc::clone(&got);
    lp.spawn_local(async move {
        let ready = task::readable(&a).await.unwrap();
        assert!(ready.readable);
        let (n, buf) = task::recv(&a, Vec::with_capacity(16)).await;
        assert_eq!(buf, b"hello");
        let (sent, _) = task::send(&a, b"back".to_vec()).await;
        assert_eq!(sent.unwrap(), 4);
        g.set(n.unwrap());
        handle.quit().unwrap();
    });
    lp.run_once(Some(Duration::ZERO)).unwrap();
    b.write_all(b"hello").unwrap();
    lp.run().unwrap();
    assert_eq!(got.get(), 5);
    let mut back = [0; 4];
    std::io::Read::read_exact(&mut b, &mut back).unwrap();
    assert_eq!(&back, b"back");
}

#[test]
fn dropping_the_loop_drops_its_tasks_and_their_handles_say_so() {
    let mut lp = new_loop();
    let job = lp.spawn_local(async {
        task::sleep(Duration::from_secs(3600)).await;
    });
    let (a, _b) = UnixStream::pair().unwrap();
    let a = SharedFd::new(a);
    let reading = lp.spawn_local(async move { task::recv(&a, Vec::with_capacity(8)).await.0 });
    lp.run_once(Some(Duration::ZERO)).unwrap();
    drop(lp);
    assert_eq!(futures_ready(job), Err(JoinError::Cancelled));
    assert!(futures_ready(reading).is_err());
}

#[derive(Clone, Debug)]
enum Step {
    Spawn,
    Wake(usize, bool),
    /// Raises from another thread while the loop runs iterations.
    WakeDuring(usize, usize),
    Abort(usize),
    RunOnce,
    Quit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Spawn),
        5 => (0..8usize, any::<bool>()).prop_map(|(i, t)| Step::Wake(i, t)),
        2 => (0..8usize, 1..200usize).prop_map(|(i, n)| Step::WakeDuring(i, n)),
        1 => (0..8usize).prop_map(Step::Abort),
        3 => Just(Step::RunOnce),
        1 => Just(Step::Quit),
    ]
}

/// A task of a program: its signal, what it has seen, the raises sent,
/// its handle, and whether it was aborted.
type Tracked = (
    Signal,
    Rc<Cell<usize>>,
    usize,
    rouse_loop::JoinHandle<()>,
    bool,
);

/// Random programs of spawns, wakes (here and from other threads), aborts,
/// iterations and quits. Each task counts the raises of its signal; at the
/// end every task still alive has seen every raise (no wake lost), and a
/// task aborted counts nothing after its abort took effect (no run after
/// the drop).
fn run_program(program: &[Step]) {
    let mut lp = new_loop();
    let mut tasks: Vec<Tracked> = Vec::new();
    for s in program {
        match *s {
            Step::Spawn => {
                let (signal, seen) = (Signal::default(), Rc::new(Cell::new(0)));
                let (sig, sn) = (signal.clone(), Rc::clone(&seen));
                let join = lp.spawn_local(async move {
                    loop {
                        let n = sig.wait().await;
                        sn.set(sn.get() + n);
                    }
                });
                tasks.push((signal, seen, 0, join, false));
            }
            Step::Wake(i, from_thread) => {
                if let Some(t) = tasks.get_mut(i) {
                    t.2 += 1;
                    let sig = t.0.clone();
                    if from_thread {
                        std::thread::spawn(move || sig.raise()).join().unwrap();
                    } else {
                        sig.raise();
                    }
                }
            }
            Step::WakeDuring(i, n) => {
                if let Some(t) = tasks.get_mut(i) {
                    t.2 += n;
                    let sig = t.0.clone();
                    let raiser = std::thread::spawn(move || {
                        for k in 0..n {
                            sig.raise();
                            if k % 16 == 0 {
                                std::thread::yield_now();
                            }
                        }
                    });
                    while !raiser.is_finished() {
                        lp.run_once(Some(Duration::ZERO)).unwrap();
                    }
                    raiser.join().unwrap();
                }
            }
            Step::Abort(i) => {
                if let Some(t) = tasks.get_mut(i) {
                    t.3.abort();
                    t.4 = true;
                }
            }
            Step::RunOnce => {
                lp.run_once(Some(Duration::ZERO)).unwrap();
            }
            Step::Quit => {
                lp.handle().quit().unwrap();
                lp.run().unwrap();
            }
        }
    }
    // Quiesce: iterate until nothing is queued.
    for _ in 0..4 {
        lp.run_once(Some(Duration::from_millis(1))).unwrap();
    }
    let counts_at_end: Vec<usize> = tasks.iter().map(|t| t.1.get()).collect();
    for (i, (signal, seen, raised, join, aborted)) in tasks.iter().enumerate() {
        if *aborted {
            assert!(join.is_finished(), "task {i}: aborted but not dropped");
            // Raises after this point reach no one.
            signal.raise();
        } else {
            assert_eq!(seen.get(), *raised, "task {i} lost a wake");
        }
    }
    for _ in 0..2 {
        lp.run_once(Some(Duration::from_millis(1))).unwrap();
    }
    for (i, t) in tasks.iter().enumerate() {
        if t.4 {
            assert_eq!(t.1.get(), counts_at_end[i], "task {i} ran after its drop");
        }
    }
}

#[test]
fn random_spawns_wakes_aborts_and_quits_lose_no_wake_and_run_nothing_dropped() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(step(), 1..60), |program| {
        run_program(&program);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
