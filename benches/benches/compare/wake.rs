//! Groups `wake_1cpu` and `wake_2cpu`: a wake round trip between two
//! threads (A wakes B, B wakes A back), both pinned to one CPU or to two.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::Duration;

use rouse_benches::{Counts, End, Placement, round_trips};
use rouse_loop::{EventLoop, LoopHandle};
use rouse_poll::{Backend, Events, Poller, Token, UringWake, Waker};
use rustix::event::epoll;
use rustix::event::{EventfdFlags, eventfd};
use rustix::fd::OwnedFd;

use crate::{Bench, Runner, peer_ok};

/// How long the spinning rows spin before they park.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// The futex floor: `std::thread` park/unpark with a flag.
struct Futex {
    flag: Arc<AtomicBool>,
}

impl End for Futex {
    type Remote = (Arc<AtomicBool>, Thread);
    fn remote(&self) -> Self::Remote {
        (Arc::clone(&self.flag), std::thread::current())
    }
    fn wait(&mut self) {
        while !self.flag.swap(false, Ordering::Acquire) {
            std::thread::park();
        }
    }
    fn wake((flag, thread): &Self::Remote) {
        flag.store(true, Ordering::Release);
        thread.unpark();
    }
}

/// What a hand-written loop does: a level-triggered eventfd in epoll, read
/// on every wake (the muduo `wakeup`/`handleRead` pair).
struct RawEpoll {
    ep: OwnedFd,
    fd: Arc<OwnedFd>,
    buf: Vec<epoll::Event>,
}

impl RawEpoll {
    fn new() -> RawEpoll {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        epoll::add(
            &ep,
            &fd,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN,
        )
        .unwrap();
        RawEpoll {
            ep,
            fd: Arc::new(fd),
            buf: Vec::with_capacity(4),
        }
    }
}

impl End for RawEpoll {
    type Remote = Arc<OwnedFd>;
    fn remote(&self) -> Self::Remote {
        Arc::clone(&self.fd)
    }
    fn wait(&mut self) {
        loop {
            self.buf.clear();
            let spare = &mut self.buf.spare_capacity_mut()[..4];
            match epoll::wait(&self.ep, spare, None) {
                Ok((ready, _)) if !ready.is_empty() => break,
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("epoll_wait: {e}"),
            }
        }
        let mut buf = [0u8; 8];
        rustix::io::read(&*self.fd, &mut buf).unwrap();
    }
    fn wake(fd: &Self::Remote) {
        rustix::io::write(&**fd, &1u64.to_ne_bytes()).unwrap();
    }
}

/// rouse-poll: a poller per thread and a waker for the other.
struct RousePoll {
    poller: Arc<Poller>,
    events: Events,
}

impl RousePoll {
    fn new(backend: Backend, wake: UringWake, spin: Duration) -> Result<RousePoll, String> {
        let poller = Poller::builder()
            .backend(backend)
            .uring_wake(wake)
            .spin_before_park(spin)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RousePoll {
            poller: Arc::new(poller),
            events: Events::with_capacity(4),
        })
    }
}

impl End for RousePoll {
    type Remote = Waker;
    fn remote(&self) -> Waker {
        Waker::new(&self.poller, Token(0)).unwrap()
    }
    fn wait(&mut self) {
        while self.poller.poll(&mut self.events, None).unwrap() == 0 {}
    }
    fn wake(waker: &Waker) {
        waker.wake().unwrap();
    }
}

thread_local! {
    static ARRIVED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// rouse-loop: each thread runs a loop; a wake is `run_in_loop` on the
/// other thread's loop.
struct RouseLoop {
    lp: EventLoop,
}

impl End for RouseLoop {
    type Remote = LoopHandle;
    fn remote(&self) -> LoopHandle {
        self.lp.handle()
    }
    fn wait(&mut self) {
        while !ARRIVED.with(|a| a.replace(false)) {
            self.lp.run_once(None).unwrap();
        }
    }
    fn wake(handle: &LoopHandle) {
        handle
            .run_in_loop(|| ARRIVED.with(|a| a.set(true)))
            .unwrap();
    }
}

/// A task's waker, raised from the other thread: the task, on its loop,
/// sets `ARRIVED` and waits again.
#[derive(Clone, Default)]
struct TaskSignal(Arc<std::sync::Mutex<(bool, Option<std::task::Waker>)>>);

impl TaskSignal {
    fn raise(&self) {
        let w = {
            let mut st = self.0.lock().unwrap();
            st.0 = true;
            st.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// rouse-loop with a task: each thread runs a loop with a task waiting on
/// a signal; a wake is the task's waker, raised from the other thread
/// (through the loop's functor queue).
struct RouseTask {
    lp: EventLoop,
    signal: TaskSignal,
}

impl RouseTask {
    fn new() -> RouseTask {
        let mut lp = EventLoop::new().unwrap();
        let signal = TaskSignal::default();
        let s = signal.clone();
        lp.spawn_local(async move {
            loop {
                std::future::poll_fn(|cx| {
                    let mut st = s.0.lock().unwrap();
                    if std::mem::take(&mut st.0) {
                        std::task::Poll::Ready(())
                    } else {
                        st.1 = Some(cx.waker().clone());
                        std::task::Poll::Pending
                    }
                })
                .await;
                ARRIVED.with(|a| a.set(true));
            }
        });
        RouseTask { lp, signal }
    }
}

impl End for RouseTask {
    type Remote = TaskSignal;
    fn remote(&self) -> TaskSignal {
        self.signal.clone()
    }
    fn wait(&mut self) {
        while !ARRIVED.with(|a| a.replace(false)) {
            self.lp.run_once(None).unwrap();
        }
    }
    fn wake(signal: &TaskSignal) {
        signal.raise();
    }
}

/// mio: `Poll` plus `Waker` (an edge-triggered eventfd, never read).
struct Mio {
    poll: mio::Poll,
    waker: Arc<mio::Waker>,
    events: mio::Events,
}

impl End for Mio {
    type Remote = Arc<mio::Waker>;
    fn remote(&self) -> Self::Remote {
        Arc::clone(&self.waker)
    }
    fn wait(&mut self) {
        loop {
            peer_ok(self.poll.poll(&mut self.events, None));
            if !self.events.is_empty() {
                return;
            }
        }
    }
    fn wake(waker: &Self::Remote) {
        waker.wake().unwrap();
    }
}

/// polling: `Poller::wait` ended by `Poller::notify`.
struct Polling {
    poller: Arc<polling::Poller>,
    events: polling::Events,
}

impl End for Polling {
    type Remote = Arc<polling::Poller>;
    fn remote(&self) -> Self::Remote {
        Arc::clone(&self.poller)
    }
    fn wait(&mut self) {
        self.events.clear();
        // A wait ended by EINTR is not the notify: wait again.
        while let Err(e) = self.poller.wait(&mut self.events, None) {
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "polling: {e}");
        }
    }
    fn wake(poller: &Self::Remote) {
        poller.notify().unwrap();
    }
}

/// calloop: an `EventLoop` with a ping source.
struct Calloop {
    ev: calloop::EventLoop<'static, bool>,
    ping: calloop::ping::Ping,
    pinged: bool,
}

impl End for Calloop {
    type Remote = calloop::ping::Ping;
    fn remote(&self) -> Self::Remote {
        self.ping.clone()
    }
    fn wait(&mut self) {
        while !std::mem::take(&mut self.pinged) {
            peer_ok(
                self.ev
                    .dispatch(None, &mut self.pinged)
                    .map_err(std::io::Error::from),
            );
        }
    }
    fn wake(ping: &Self::Remote) {
        ping.ping();
    }
}

/// tokio: a `current_thread` runtime (I/O and time enabled, as a loop's
/// would be) blocking on `Notify`.
struct Tokio {
    rt: tokio::runtime::Runtime,
    notify: Arc<tokio::sync::Notify>,
}

impl End for Tokio {
    type Remote = Arc<tokio::sync::Notify>;
    fn remote(&self) -> Self::Remote {
        Arc::clone(&self.notify)
    }
    fn wait(&mut self) {
        self.rt.block_on(self.notify.notified());
    }
    fn wake(notify: &Self::Remote) {
        notify.notify_one();
    }
}

/// A runner of round trips between two ends made by `make`, counting
/// rouse's wakes where `stats` can read them.
fn rows<E, F>(placement: Placement, make: F) -> impl Runner
where
    E: End,
    F: Fn() -> E + Send + Sync + Clone + 'static,
{
    move |iters| round_trips(make.clone(), placement, iters)
}

/// rouse-poll's round trips, with its counters.
struct PollRows {
    placement: Placement,
    config: (Backend, UringWake, Duration),
    counts: Counts,
}

impl Runner for PollRows {
    fn run(&mut self, iters: u64) -> Duration {
        let (backend, wake, spin) = self.config;
        let stats = Arc::new(std::sync::Mutex::new(Vec::new()));
        let make = {
            let stats = Arc::clone(&stats);
            move || {
                let end = RousePoll::new(backend, wake, spin).expect("checked when made");
                stats.lock().unwrap().push(Arc::clone(&end.poller));
                end
            }
        };
        let took = round_trips(make, self.placement, iters);
        let pollers = stats.lock().unwrap();
        let mut counts = Counts {
            ops: iters,
            ..Counts::default()
        };
        for p in pollers.iter() {
            let s = p.stats();
            counts.wakes += s.wakes;
            counts.wake_syscalls += s.wake_syscalls;
        }
        self.counts.add(counts);
        took
    }

    fn counts(&self) -> Option<Counts> {
        Some(self.counts)
    }
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    for (group, placement) in [
        ("wake_1cpu", Placement::OneCpu),
        ("wake_2cpu", Placement::TwoCpus),
    ] {
        if placement == Placement::TwoCpus && rouse_benches::cpus() < 2 {
            continue;
        }
        out.push(Bench::new(group, "futex", move || {
            Ok(rows(placement, || Futex {
                flag: Arc::new(AtomicBool::new(false)),
            }))
        }));
        out.push(Bench::new(group, "raw_epoll_eventfd", move || {
            Ok(rows(placement, RawEpoll::new))
        }));
        let mut polls = vec![
            (
                "rouse_poll_epoll",
                Backend::Epoll,
                UringWake::EventFd,
                Duration::ZERO,
            ),
            (
                "rouse_poll_uring_eventfd",
                Backend::IoUring,
                UringWake::EventFd,
                Duration::ZERO,
            ),
            (
                "rouse_poll_uring_msgring",
                Backend::IoUring,
                UringWake::MsgRing,
                Duration::ZERO,
            ),
        ];
        if placement == Placement::TwoCpus {
            polls.push((
                "rouse_poll_epoll_spin",
                Backend::Epoll,
                UringWake::EventFd,
                SPIN,
            ));
        }
        for (id, backend, wake, spin) in polls {
            out.push(Bench::new(group, id, move || {
                // Fails here, not on a bench thread, if the backend is missing.
                RousePoll::new(backend, wake, spin)?;
                Ok(PollRows {
                    placement,
                    config: (backend, wake, spin),
                    counts: Counts::default(),
                })
            }));
        }
        out.push(Bench::new(group, "rouse_loop", move || {
            Ok(rows(placement, || RouseLoop {
                lp: EventLoop::new().unwrap(),
            }))
        }));
        out.push(Bench::new(group, "rouse_task", move || {
            Ok(rows(placement, RouseTask::new))
        }));
        if placement == Placement::TwoCpus {
            out.push(Bench::new(group, "rouse_loop_spin", move || {
                Ok(rows(placement, || {
                    let poller = Poller::builder().spin_before_park(SPIN).build().unwrap();
                    RouseLoop {
                        lp: EventLoop::with_poller(poller).unwrap(),
                    }
                }))
            }));
        }
        out.push(Bench::new(group, "mio", move || {
            Ok(rows(placement, || {
                let poll = mio::Poll::new().unwrap();
                let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
                Mio {
                    poll,
                    waker,
                    events: mio::Events::with_capacity(4),
                }
            }))
        }));
        out.push(Bench::new(group, "polling", move || {
            Ok(rows(placement, || Polling {
                poller: Arc::new(polling::Poller::new().unwrap()),
                events: polling::Events::new(),
            }))
        }));
        out.push(Bench::new(group, "calloop", move || {
            Ok(rows(placement, || {
                let ev = calloop::EventLoop::try_new().unwrap();
                let (ping, source) = calloop::ping::make_ping().unwrap();
                ev.handle()
                    .insert_source(source, |(), &mut (), pinged: &mut bool| *pinged = true)
                    .unwrap();
                Calloop {
                    ev,
                    ping,
                    pinged: false,
                }
            }))
        }));
        out.push(Bench::new(group, "tokio", move || {
            Ok(rows(placement, || Tokio {
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap(),
                notify: Arc::new(tokio::sync::Notify::new()),
            }))
        }));
    }
}
