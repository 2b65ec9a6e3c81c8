//! Groups `functors_1p` and `functors_2p`: one and two producer threads
//! hand boxed closures to one consumer loop, which runs them all.
//!
//! The consumer is pinned to CPU 0 and the producers to CPU 1 (on a
//! one-CPU machine, everything shares CPU 0). Each closure carries a `u64`
//! payload, so each is a real allocation for every row.

use std::cell::Cell;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rouse_benches::{Counts, pin};
use rouse_loop::{Ctx, EventLoop};

use crate::{Bench, Runner, peer_ok};

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// Functors run on this (consumer) thread in the current run.
    static RAN: Cell<u64> = const { Cell::new(0) };
    static TARGET: Cell<u64> = const { Cell::new(0) };
}

/// What every functor does: count itself; true for the last one.
#[inline]
fn ran(payload: u64) -> bool {
    std::hint::black_box(payload);
    let n = RAN.with(|r| {
        let n = r.get() + 1;
        r.set(n);
        n
    });
    n == TARGET.with(Cell::get)
}

fn producer_cpu() -> usize {
    usize::from(rouse_benches::cpus() > 1)
}

/// Starts `producers` threads that each call `send(i)` for their share of
/// `total`, released together by the returned barrier.
fn producers<S>(
    producers: u64,
    total: u64,
    send: S,
) -> (Arc<Barrier>, Vec<std::thread::JoinHandle<()>>)
where
    S: Fn(u64) + Send + Sync + Clone + 'static,
{
    let start = Arc::new(Barrier::new(producers as usize + 1));
    let threads = (0..producers)
        .map(|p| {
            let share = total / producers + u64::from(p < total % producers);
            let (start, send) = (Arc::clone(&start), send.clone());
            std::thread::spawn(move || {
                pin(producer_cpu());
                start.wait();
                for i in 0..share {
                    send(i);
                }
            })
        })
        .collect();
    (start, threads)
}

/// Prepares the consumer thread for a run of `total` functors.
fn consumer(total: u64) {
    pin(0);
    RAN.with(|r| r.set(0));
    TARGET.with(|t| t.set(total));
}

/// Releases the producers, times `consume` (which runs until every
/// functor has run), then joins the producers.
fn timed(
    start: &Barrier,
    threads: Vec<std::thread::JoinHandle<()>>,
    consume: impl FnOnce(),
) -> Duration {
    start.wait();
    let began = Instant::now();
    consume();
    let took = began.elapsed();
    for t in threads {
        t.join().expect("a producer panicked");
    }
    took
}

/// rouse-loop `queue_in_loop`, with its wake counters.
struct RouseLoop {
    producers: u64,
    counts: Counts,
}

impl Runner for RouseLoop {
    fn run(&mut self, total: u64) -> Duration {
        consumer(total);
        let mut lp = EventLoop::new().unwrap();
        let handle = lp.handle();
        let (start, threads) = producers(self.producers, total, move |i| {
            handle
                .queue_in_loop(move |cx: &mut Ctx| {
                    if ran(i) {
                        cx.quit();
                    }
                })
                .unwrap();
        });
        let took = timed(&start, threads, || lp.run().unwrap());
        self.counts.add(Counts {
            ops: total,
            wakes: lp.functor_wakes(),
            wake_syscalls: lp.poller().stats().wake_syscalls,
        });
        took
    }

    fn counts(&self) -> Option<Counts> {
        Some(self.counts)
    }
}

/// The muduo pattern: a mutex-guarded vector, and a wake (mio's
/// edge-triggered eventfd) per functor.
fn muduo(producers_n: u64, total: u64) -> Duration {
    consumer(total);
    const WAKE: mio::Token = mio::Token(0);
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE).unwrap());
    let queue: Arc<Mutex<Vec<Job>>> = Arc::default();
    let (start, threads) = {
        // The consumer keeps a reference too: the last producer to finish
        // must not close the eventfd (taking its pending event out of the
        // epoll set) before the consumer has seen the event.
        let (queue, waker) = (Arc::clone(&queue), Arc::clone(&waker));
        producers(producers_n, total, move |i| {
            queue.lock().unwrap().push(Box::new(move || {
                ran(i);
            }));
            waker.wake().unwrap();
        })
    };
    let mut events = mio::Events::with_capacity(64);
    let mut batch = Vec::new();
    timed(&start, threads, || {
        while RAN.with(Cell::get) < total {
            peer_ok(poll.poll(&mut events, None));
            std::mem::swap(&mut batch, &mut *queue.lock().unwrap());
            for f in batch.drain(..) {
                f();
            }
        }
    })
}

/// calloop's channel: a `Sender` per producer, the `Channel` source on the
/// consumer's loop.
fn calloop(producers_n: u64, total: u64) -> Duration {
    consumer(total);
    let mut ev = calloop::EventLoop::<()>::try_new().unwrap();
    let (tx, rx) = calloop::channel::channel::<Job>();
    ev.handle()
        .insert_source(rx, |event, _, _| {
            if let calloop::channel::Event::Msg(f) = event {
                f();
            }
        })
        .unwrap();
    let tx = Arc::new(Mutex::new(tx));
    let (start, threads) = producers(producers_n, total, {
        // A sender per producer thread (calloop's `Sender` is `Send`, not
        // `Sync`): cloned once, on first use.
        move |i| {
            thread_local! {
                static TX: std::cell::RefCell<Option<calloop::channel::Sender<Job>>> =
                    const { std::cell::RefCell::new(None) };
            }
            TX.with(|t| {
                let mut t = t.borrow_mut();
                let tx = t.get_or_insert_with(|| tx.lock().unwrap().clone());
                tx.send(Box::new(move || {
                    ran(i);
                }))
                .unwrap();
            });
        }
    });
    timed(&start, threads, || {
        while RAN.with(Cell::get) < total {
            peer_ok(ev.dispatch(None, &mut ()).map_err(std::io::Error::from));
        }
    })
}

/// tokio: `Handle::spawn` onto a `current_thread` runtime (I/O and time
/// enabled, as a loop's would be) that the consumer drives.
fn tokio(producers_n: u64, total: u64) -> Duration {
    consumer(total);
    static DONE: OnceLock<tokio::sync::Notify> = OnceLock::new();
    let done = DONE.get_or_init(tokio::sync::Notify::new);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let (start, threads) = producers(producers_n, total, move |i| {
        handle.spawn(async move {
            if ran(i) {
                DONE.get().expect("set before the run").notify_one();
            }
        });
    });
    timed(&start, threads, || rt.block_on(done.notified()))
}

/// crossbeam-channel: unbounded, with a blocking receive per functor.
fn crossbeam(producers_n: u64, total: u64) -> Duration {
    consumer(total);
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let (start, threads) = producers(producers_n, total, move |i| {
        tx.send(Box::new(move || {
            ran(i);
        }))
        .unwrap();
    });
    timed(&start, threads, || {
        while RAN.with(Cell::get) < total {
            rx.recv().unwrap()();
        }
    })
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    for (group, n) in [("functors_1p", 1), ("functors_2p", 2)] {
        out.push(Bench::new(group, "rouse_loop", move || {
            Ok(RouseLoop {
                producers: n,
                counts: Counts::default(),
            })
        }));
        out.push(Bench::new(group, "muduo", move || Ok(move |t| muduo(n, t))));
        out.push(Bench::new(group, "calloop_channel", move || {
            Ok(move |t| calloop(n, t))
        }));
        out.push(Bench::new(group, "tokio_spawn", move || {
            Ok(move |t| tokio(n, t))
        }));
        out.push(Bench::new(group, "crossbeam", move || {
            Ok(move |t| crossbeam(n, t))
        }));
    }
}
