//! Group `tasks_1p`: one producer thread (CPU 1) spawns tasks onto a loop
//! (CPU 0), each of which counts itself; the loop runs them all. rouse's
//! `LoopHandle::spawn` beside tokio's `Handle::spawn` onto a
//! `current_thread` runtime and calloop's executor.

use std::cell::Cell;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use rouse_benches::{Counts, pin};
use rouse_loop::EventLoop;

use crate::{Bench, Runner, peer_ok};

thread_local! {
    static RAN: Cell<u64> = const { Cell::new(0) };
    static TARGET: Cell<u64> = const { Cell::new(0) };
    static QUIT: std::cell::RefCell<Option<rouse_loop::LoopHandle>> =
        const { std::cell::RefCell::new(None) };
}

/// What every task does: count itself; true for the last one.
fn ran() -> bool {
    let n = RAN.with(|r| {
        let n = r.get() + 1;
        r.set(n);
        n
    });
    n == TARGET.with(Cell::get)
}

fn consumer(total: u64) {
    pin(0);
    RAN.with(|r| r.set(0));
    TARGET.with(|t| t.set(total));
}

/// One producer thread on CPU 1 calling `spawn` `total` times, released by
/// the barrier; times `consume`, which runs until every task has run.
fn timed<S: FnMut() + Send + 'static>(
    total: u64,
    mut spawn: S,
    consume: impl FnOnce(),
) -> Duration {
    let start = Arc::new(Barrier::new(2));
    let s = Arc::clone(&start);
    let producer = std::thread::spawn(move || {
        pin(usize::from(rouse_benches::cpus() > 1));
        s.wait();
        for _ in 0..total {
            spawn();
        }
    });
    start.wait();
    let began = Instant::now();
    consume();
    let took = began.elapsed();
    producer.join().expect("the producer panicked");
    took
}

struct RouseSpawn {
    counts: Counts,
}

impl Runner for RouseSpawn {
    fn run(&mut self, total: u64) -> Duration {
        consumer(total);
        let mut lp = EventLoop::new().unwrap();
        // The last task asks the loop to quit through the loop thread's
        // handle, as tokio's notifies a static `Notify`: nothing is cloned
        // per task.
        QUIT.with(|q| *q.borrow_mut() = Some(lp.handle()));
        let handle = lp.handle();
        let wakes = lp.functor_wakes();
        let took = timed(
            total,
            move || {
                handle
                    .spawn(async {
                        if ran() {
                            QUIT.with(|q| {
                                if let Some(h) = q.borrow().as_ref() {
                                    h.quit().unwrap();
                                }
                            });
                        }
                    })
                    .unwrap();
            },
            || lp.run().unwrap(),
        );
        QUIT.with(|q| q.borrow_mut().take());
        self.counts.add(Counts {
            ops: total,
            wakes: lp.functor_wakes() - wakes,
            wake_syscalls: lp.poller().stats().wake_syscalls,
        });
        took
    }

    fn counts(&self) -> Option<Counts> {
        Some(self.counts)
    }
}

fn tokio_spawn(total: u64) -> Duration {
    consumer(total);
    static DONE: OnceLock<tokio::sync::Notify> = OnceLock::new();
    let done = DONE.get_or_init(tokio::sync::Notify::new);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    timed(
        total,
        move || {
            handle.spawn(async {
                if ran() {
                    DONE.get().expect("set before the run").notify_one();
                }
            });
        },
        || rt.block_on(done.notified()),
    )
}

/// calloop's executor, whose `Scheduler` stays on the loop thread (it is
/// not `Send`): another thread's futures reach it through a calloop
/// channel, whose callback schedules them.
fn calloop_executor(total: u64) -> Duration {
    type Fut = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    consumer(total);
    let mut ev = calloop::EventLoop::<()>::try_new().unwrap();
    let (exec, sched) = calloop::futures::executor::<()>().unwrap();
    ev.handle().insert_source(exec, |(), _, _| {}).unwrap();
    let (tx, rx) = calloop::channel::channel::<Fut>();
    ev.handle()
        .insert_source(rx, move |event, _, _| {
            if let calloop::channel::Event::Msg(f) = event {
                sched.schedule(f).unwrap();
            }
        })
        .unwrap();
    timed(
        total,
        move || {
            tx.send(Box::pin(async {
                ran();
            }))
            .unwrap();
        },
        || {
            while RAN.with(Cell::get) < total {
                peer_ok(ev.dispatch(None, &mut ()).map_err(std::io::Error::from));
            }
        },
    )
}

/// One task on the loop, woken by the producer again and again (a raise
/// is one operation); the task takes every raise pending when it runs.
struct RouseWake {
    counts: Counts,
}

impl Runner for RouseWake {
    fn run(&mut self, total: u64) -> Duration {
        use std::sync::Mutex;
        use std::task::{Poll, Waker};
        consumer(total);
        let mut lp = EventLoop::new().unwrap();
        let signal: Arc<Mutex<(u64, Option<Waker>)>> = Arc::default();
        let (s, quit) = (Arc::clone(&signal), lp.handle());
        lp.spawn_local(async move {
            let mut seen = 0;
            while seen < total {
                seen += std::future::poll_fn(|cx| {
                    let mut st = s.lock().unwrap();
                    if st.0 > 0 {
                        Poll::Ready(std::mem::take(&mut st.0))
                    } else {
                        st.1 = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
            }
            quit.quit().unwrap();
        });
        // The task is waiting before the producer starts.
        lp.run_once(Some(Duration::ZERO)).unwrap();
        let syscalls = lp.poller().stats().wake_syscalls;
        let took = timed(
            total,
            move || {
                let w = {
                    let mut st = signal.lock().unwrap();
                    st.0 += 1;
                    st.1.take()
                };
                if let Some(w) = w {
                    w.wake();
                }
            },
            || lp.run().unwrap(),
        );
        self.counts.add(Counts {
            ops: total,
            wakes: total,
            wake_syscalls: lp.poller().stats().wake_syscalls - syscalls,
        });
        took
    }

    fn counts(&self) -> Option<Counts> {
        Some(self.counts)
    }
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    let group = "tasks_1p";
    out.push(Bench::new(group, "rouse_spawn", || {
        Ok(RouseSpawn {
            counts: Counts::default(),
        })
    }));
    out.push(Bench::new(group, "tokio_spawn", || Ok(tokio_spawn)));
    out.push(Bench::new(group, "calloop_executor", || {
        Ok(calloop_executor)
    }));
    out.push(Bench::new(group, "rouse_wake", || {
        Ok(RouseWake {
            counts: Counts::default(),
        })
    }));
}
