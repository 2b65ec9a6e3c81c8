//! Group `pool`: a burst of jobs on two worker threads, each completion
//! delivered back to the loop thread.
//!
//! Rows: rouse-loop's `WorkerPool`, whose completions share the loop's
//! coalesced wake; and the nginx design, where each finished job is queued
//! under a mutex and an eventfd is written (here mio's waker) — one wake per
//! completion.

use std::cell::Cell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rouse_benches::{Counts, pin};
use rouse_loop::{Ctx, EventLoop, WorkerPool};

use crate::{Bench, Runner, peer_ok};

const WORKERS: usize = 2;

/// A job: a little arithmetic standing in for a blocking call.
fn work(i: u64) -> u64 {
    (0..64).fold(i, |a, b| black_box(a.wrapping_mul(31).wrapping_add(b)))
}

struct Rouse {
    lp: EventLoop,
    pool: WorkerPool,
    counts: Counts,
}

thread_local! {
    static DONE: Cell<u64> = const { Cell::new(0) };
}

impl Runner for Rouse {
    fn run(&mut self, jobs: u64) -> Duration {
        pin(0);
        DONE.with(|d| d.set(0));
        let wakes = self.lp.functor_wakes();
        let syscalls = self.lp.poller().stats().wake_syscalls;
        let began = Instant::now();
        for i in 0..jobs {
            self.pool
                .spawn(
                    move || work(i),
                    move |r, cx: &mut Ctx| {
                        black_box(r);
                        let n = DONE.with(|d| {
                            d.set(d.get() + 1);
                            d.get()
                        });
                        if n == jobs {
                            cx.quit();
                        }
                    },
                )
                .unwrap();
        }
        self.lp.run().unwrap();
        let took = began.elapsed();
        self.counts.add(Counts {
            ops: jobs,
            wakes: self.lp.functor_wakes() - wakes,
            wake_syscalls: self.lp.poller().stats().wake_syscalls - syscalls,
        });
        took
    }

    fn counts(&self) -> Option<Counts> {
        Some(self.counts)
    }
}

type Task = Box<dyn FnOnce() + Send>;

/// nginx's thread pool: a locked task queue with a condition variable for
/// the workers, and for completions a locked done queue plus one eventfd
/// write each (`ngx_notify`).
struct Nginx {
    tasks: Arc<(Mutex<VecDeque<Task>>, Condvar)>,
    done: Arc<Mutex<Vec<u64>>>,
    waker: Arc<mio::Waker>,
    poll: mio::Poll,
    events: mio::Events,
    workers: Vec<std::thread::JoinHandle<()>>,
    counts: Counts,
}

impl Nginx {
    fn new() -> Nginx {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let tasks: Arc<(Mutex<VecDeque<Task>>, Condvar)> = Arc::default();
        let workers = (0..WORKERS)
            .map(|_| {
                let tasks = Arc::clone(&tasks);
                std::thread::spawn(move || {
                    loop {
                        let task = {
                            let (q, cv) = &*tasks;
                            let mut q = q.lock().unwrap();
                            loop {
                                if let Some(t) = q.pop_front() {
                                    break t;
                                }
                                q = cv.wait(q).unwrap();
                            }
                        };
                        task();
                    }
                })
            })
            .collect();
        Nginx {
            tasks,
            done: Arc::default(),
            waker,
            poll,
            events: mio::Events::with_capacity(64),
            workers,
            counts: Counts::default(),
        }
    }
}

impl Runner for Nginx {
    fn run(&mut self, jobs: u64) -> Duration {
        pin(0);
        let began = Instant::now();
        for i in 0..jobs {
            let (done, waker) = (Arc::clone(&self.done), Arc::clone(&self.waker));
            let task: Task = Box::new(move || {
                let r = work(i);
                done.lock().unwrap().push(r);
                waker.wake().unwrap();
            });
            let (q, cv) = &*self.tasks;
            q.lock().unwrap().push_back(task);
            cv.notify_one();
        }
        let mut finished = 0;
        let mut batch = Vec::new();
        while finished < jobs {
            peer_ok(self.poll.poll(&mut self.events, None));
            std::mem::swap(&mut batch, &mut *self.done.lock().unwrap());
            for r in batch.drain(..) {
                black_box(r);
                finished += 1;
            }
        }
        let took = began.elapsed();
        // One wake call, and one eventfd write, per completion by design.
        self.counts.add(Counts {
            ops: jobs,
            wakes: jobs,
            wake_syscalls: jobs,
        });
        took
    }

    fn counts(&self) -> Option<Counts> {
        Some(self.counts)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The workers block forever on the task queue; detach them.
        self.workers.clear();
    }
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    out.push(Bench::new("pool", "rouse_pool", || {
        let lp = EventLoop::new().map_err(|e| e.to_string())?;
        let pool = WorkerPool::new(&lp.handle(), WORKERS).map_err(|e| e.to_string())?;
        Ok(Rouse {
            lp,
            pool,
            counts: Counts::default(),
        })
    }));
    out.push(Bench::new("pool", "nginx", || Ok(Nginx::new())));
}
