//! Groups `scale_poll` and `scale_timers`: what a poll costs with 10 and
//! with 10,000 idle fds registered beside one ready fd, on each backend;
//! and what a timer insert + cancel + expire costs with 1,000 and with
//! 1,000,000 live timers.

use std::time::{Duration, Instant};

use rouse_loop::EventLoop;
use rouse_poll::{Backend, Events, Interest, Poller, Token};
use rustix::event::{EventfdFlags, eventfd};
use rustix::fd::OwnedFd;

use crate::Bench;

fn poll_with_idle(backend: Backend, idle: usize) -> Result<impl FnMut(u64) -> Duration, String> {
    rouse_benches::raise_fd_limit().map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    let poller = Poller::with_backend(backend).map_err(|e| e.to_string())?;
    let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(idle + 1);
    for i in 0..idle {
        let fd = eventfd(0, flags).map_err(|e| format!("eventfd #{i}: {e}"))?;
        poller
            .register(&fd, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        fds.push(fd);
    }
    // Level-triggered and never read: ready at every poll.
    let ready = eventfd(1, flags).map_err(|e| e.to_string())?;
    poller
        .register(&ready, Token(idle), Interest::READABLE)
        .map_err(|e| e.to_string())?;
    fds.push(ready);
    let mut events = Events::with_capacity(16);
    Ok(move |iters| {
        let _keep = &fds;
        let start = Instant::now();
        for _ in 0..iters {
            let n = poller.poll(&mut events, Some(Duration::ZERO)).unwrap();
            assert_eq!(n, 1, "exactly the ready fd");
        }
        start.elapsed()
    })
}

/// Expired timers are collected once per this many operations, so the poll
/// that a loop iteration makes is spread thin.
const EXPIRE_EVERY: u64 = 256;

fn timers(live: usize) -> Result<impl FnMut(u64) -> Duration, String> {
    let mut lp = EventLoop::new().map_err(|e| e.to_string())?;
    let far = Duration::from_secs(24 * 3600);
    for i in 0..live {
        lp.run_after(
            far + Duration::from_nanos(i as u64 * 7919 % 1_000_000),
            |_| {},
        );
    }
    let mut k = 0u64;
    Ok(move |iters| {
        let start = Instant::now();
        for i in 0..iters {
            // Insert and cancel one timer among the live ones (a deadline
            // in the middle of theirs), and add one that is due at once.
            k = k.wrapping_add(7919);
            let id = lp.run_after(far + Duration::from_nanos(k % 1_000_000), |_| {});
            lp.cancel(id);
            lp.run_after(Duration::ZERO, |_| {});
            if i % EXPIRE_EVERY == EXPIRE_EVERY - 1 || i + 1 == iters {
                lp.run_once(Some(Duration::ZERO)).unwrap();
            }
        }
        let took = start.elapsed();
        assert_eq!(lp.timer_count(), live, "every due timer ran");
        took
    })
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    for (backend, name) in [(Backend::Epoll, "epoll"), (Backend::IoUring, "uring")] {
        for (idle, id) in [(10, "_10"), (10_000, "_10000")] {
            let id: &'static str = Box::leak(format!("{name}{id}").into_boxed_str());
            out.push(Bench::new("scale_poll", id, move || {
                poll_with_idle(backend, idle)
            }));
        }
    }
    out.push(Bench::new("scale_timers", "timers_1000", || timers(1_000)));
    out.push(Bench::new("scale_timers", "timers_1000000", || {
        timers(1_000_000)
    }));
}
