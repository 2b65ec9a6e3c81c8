//! The behaviour every backend must share, run against each of them.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rouse_poll::{BACKEND_ENV, Backend, Events, Interest, Poller, Token, Waker};
use util::{pipe, pollers};

const LONG: Option<Duration> = Some(Duration::from_secs(10));
const NOW: Option<Duration> = Some(Duration::ZERO);

fn tokens(events: &Events) -> Vec<Token> {
    let mut t: Vec<Token> = events.iter().map(|e| e.token()).collect();
    t.sort();
    t
}

#[test]
fn new_honours_the_backend_environment_variable() {
    let poller = Poller::new().unwrap();
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("epoll") => assert_eq!(poller.backend(), Backend::Epoll),
        Ok("io_uring") => assert_eq!(poller.backend(), Backend::IoUring),
        // Unforced, epoll.
        _ => assert_eq!(poller.backend(), Backend::Epoll),
    }
}

#[test]
fn a_pipe_becomes_readable_when_written_and_its_write_end_is_writable() {
    for (name, poller) in pollers() {
        let (r, w) = pipe();
        poller.register(&r, Token(1), Interest::READABLE).unwrap();
        poller.register(&w, Token(2), Interest::WRITABLE).unwrap();
        let mut events = Events::with_capacity(8);
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(
            tokens(&events),
            [Token(2)],
            "{name}: only the write end is ready"
        );
        assert!(events.iter().next().unwrap().is_writable());

        rustix::io::write(&w, b"x").unwrap();
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(tokens(&events), [Token(1), Token(2)], "{name}");
        let ev = events.iter().find(|e| e.token() == Token(1)).unwrap();
        assert!(ev.is_readable() && !ev.is_writable(), "{name}: {ev:?}");
    }
}

#[test]
fn a_socket_pair_reports_reads_writes_and_hangup() {
    for (name, poller) in pollers() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        poller
            .register(&a, Token(10), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        let mut events = Events::with_capacity(8);
        poller.poll(&mut events, LONG).unwrap();
        let ev = *events.iter().next().unwrap();
        assert!(ev.is_writable() && !ev.is_readable(), "{name}: {ev:?}");

        (&b).write_all(b"hello").unwrap();
        poller.poll(&mut events, LONG).unwrap();
        let ev = *events.iter().next().unwrap();
        assert!(ev.is_readable() && ev.is_writable(), "{name}: {ev:?}");
        let mut buf = [0; 8];
        assert_eq!(a.read(&mut buf).unwrap(), 5);

        drop(b);
        poller.poll(&mut events, LONG).unwrap();
        let ev = *events.iter().next().unwrap();
        assert!(ev.is_readable() && ev.is_hangup(), "{name}: {ev:?}");
        poller.deregister(&a).unwrap();
    }
}

#[test]
fn readiness_is_level_triggered() {
    for (name, poller) in pollers() {
        let (r, w) = pipe();
        poller.register(&r, Token(3), Interest::READABLE).unwrap();
        rustix::io::write(&w, b"abc").unwrap();
        let mut events = Events::with_capacity(4);
        for round in 0..3 {
            assert_eq!(
                poller.poll(&mut events, LONG).unwrap(),
                1,
                "{name} round {round}"
            );
            assert_eq!(tokens(&events), [Token(3)]);
        }
        let mut buf = [0; 8];
        rustix::io::read(&r, &mut buf).unwrap();
        assert_eq!(
            poller.poll(&mut events, NOW).unwrap(),
            0,
            "{name}: drained pipe reported"
        );
    }
}

#[test]
fn deregister_stops_events() {
    for (name, poller) in pollers() {
        let (r, w) = pipe();
        poller.register(&r, Token(4), Interest::READABLE).unwrap();
        rustix::io::write(&w, b"x").unwrap();
        let mut events = Events::with_capacity(4);
        assert_eq!(poller.poll(&mut events, LONG).unwrap(), 1, "{name}");
        poller.deregister(&r).unwrap();
        assert_eq!(
            poller
                .poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap(),
            0,
            "{name}"
        );
        // Registering again works, and reports the data still there.
        poller.register(&r, Token(5), Interest::READABLE).unwrap();
        assert_eq!(poller.poll(&mut events, LONG).unwrap(), 1, "{name}");
        assert_eq!(tokens(&events), [Token(5)]);
    }
}

#[test]
fn deregister_before_a_poll_leaves_no_stale_event() {
    for (name, poller) in pollers() {
        let (r, w) = pipe();
        poller.register(&r, Token(4), Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(4);
        // Arm the registration in the kernel, then make it ready and drop it.
        assert_eq!(poller.poll(&mut events, NOW).unwrap(), 0);
        rustix::io::write(&w, b"x").unwrap();
        poller.deregister(&r).unwrap();
        assert_eq!(
            poller
                .poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap(),
            0,
            "{name}"
        );
    }
}

#[test]
fn reregister_changes_interest_and_token() {
    for (name, poller) in pollers() {
        let (a, b) = UnixStream::pair().unwrap();
        poller.register(&a, Token(6), Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(4);
        assert_eq!(
            poller
                .poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap(),
            0,
            "{name}"
        );
        poller.reregister(&a, Token(7), Interest::WRITABLE).unwrap();
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(tokens(&events), [Token(7)], "{name}");
        assert!(events.iter().next().unwrap().is_writable());
        poller.reregister(&a, Token(8), Interest::READABLE).unwrap();
        (&b).write_all(b"y").unwrap();
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(
            tokens(&events),
            [Token(8)],
            "{name}: an event of the old registration"
        );
    }
}

#[test]
fn a_timeout_is_never_cut_short() {
    for (name, poller) in pollers() {
        let mut events = Events::with_capacity(4);
        for timeout in [Duration::from_micros(200), Duration::from_millis(30)] {
            let start = Instant::now();
            assert_eq!(poller.poll(&mut events, Some(timeout)).unwrap(), 0);
            let took = start.elapsed();
            assert!(
                took >= timeout,
                "{name}: {timeout:?} returned after {took:?}"
            );
        }
        assert_eq!(poller.poll(&mut events, NOW).unwrap(), 0);
    }
}

#[test]
fn an_interrupted_wait_resumes_with_the_time_that_remains() {
    use std::os::unix::thread::JoinHandleExt;
    let signals = util::interrupting_sigusr1();
    for (name, poller) in pollers() {
        let poller = Arc::new(poller);
        let timeout = Duration::from_millis(300);
        let waiter = {
            let poller = Arc::clone(&poller);
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(4);
                let start = Instant::now();
                let n = poller.poll(&mut events, Some(timeout)).unwrap();
                (n, start.elapsed())
            })
        };
        let before = signals.load(std::sync::atomic::Ordering::Relaxed);
        // Signals every 20 ms for 2 s: a wait restarted from the full timeout
        // would not end before they stop.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) && !waiter.is_finished() {
            // SAFETY: the thread is alive: it has not finished, and is joined
            // only below.
            unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(20));
        }
        let (n, took) = waiter.join().unwrap();
        assert!(
            signals.load(std::sync::atomic::Ordering::Relaxed) > before,
            "{name}: no signal"
        );
        assert_eq!(n, 0, "{name}");
        assert!(took >= timeout, "{name}: returned early, after {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "{name}: the timeout restarted ({took:?})"
        );
    }
}

#[test]
fn a_wake_from_another_thread_ends_an_unbounded_wait() {
    for (name, poller) in pollers() {
        let waker = Waker::new(&poller, Token(99)).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake().unwrap();
        });
        let mut events = Events::with_capacity(4);
        assert_eq!(poller.poll(&mut events, None).unwrap(), 1, "{name}");
        let ev = *events.iter().next().unwrap();
        assert_eq!(ev.token(), Token(99));
        assert!(ev.is_readable());
        t.join().unwrap();
        assert_eq!(
            poller.poll(&mut events, NOW).unwrap(),
            0,
            "{name}: the wake came twice"
        );
    }
}

#[test]
fn a_wake_before_the_poll_makes_it_return_at_once() {
    for (name, poller) in pollers() {
        let waker = Waker::new(&poller, Token(1)).unwrap();
        waker.wake().unwrap();
        waker.wake().unwrap();
        let mut events = Events::with_capacity(4);
        assert_eq!(poller.poll(&mut events, None).unwrap(), 1, "{name}");
        assert_eq!(poller.stats().wake_syscalls, 0, "{name}");
    }
}

#[test]
fn several_wakers_are_reported_by_their_own_tokens() {
    for (name, poller) in pollers() {
        let a = Waker::new(&poller, Token(1)).unwrap();
        let b = Waker::new(&poller, Token(2)).unwrap();
        let _c = Waker::new(&poller, Token(3)).unwrap();
        a.wake().unwrap();
        b.clone().wake().unwrap();
        let mut events = Events::with_capacity(8);
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(tokens(&events), [Token(1), Token(2)], "{name}");
    }
}

#[test]
fn hammering_wakes_from_two_threads_are_never_lost() {
    const ROUNDS: usize = 2_000;
    for (name, poller) in pollers() {
        let poller = Arc::new(poller);
        let wakers = [
            Waker::new(&poller, Token(0)).unwrap(),
            Waker::new(&poller, Token(1)).unwrap(),
        ];
        // Each thread wakes, then waits for the poller to acknowledge that
        // wake before the next: every single wake must get through.
        let (ack_tx, ack_rx): (Vec<_>, Vec<_>) =
            (0..2).map(|_| std::sync::mpsc::channel::<()>()).unzip();
        let threads: Vec<_> = wakers
            .into_iter()
            .zip(ack_rx)
            .map(|(w, acks)| {
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        w.wake().unwrap();
                        acks.recv().unwrap();
                    }
                })
            })
            .collect();
        let mut seen = [0usize; 2];
        let mut events = Events::with_capacity(4);
        while seen != [ROUNDS, ROUNDS] {
            let n = poller.poll(&mut events, LONG).unwrap();
            assert!(n > 0, "{name}: a wake was lost (seen {seen:?})");
            for ev in &events {
                let i = ev.token().0;
                seen[i] += 1;
                assert!(seen[i] <= ROUNDS, "{name}: a wake reported twice");
                ack_tx[i].send(()).unwrap();
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        let stats = poller.stats();
        assert_eq!(stats.wakes, 2 * ROUNDS as u64);
        assert!(stats.wake_syscalls <= stats.wakes, "{name}: {stats:?}");
    }
}

#[test]
fn ten_thousand_wakes_while_not_blocked_cost_no_system_call() {
    for (name, poller) in pollers() {
        let waker = Waker::new(&poller, Token(1)).unwrap();
        for _ in 0..10_000 {
            waker.wake().unwrap();
        }
        let mut events = Events::with_capacity(4);
        assert_eq!(poller.poll(&mut events, LONG).unwrap(), 1);
        let stats = poller.stats();
        assert_eq!((stats.wakes, stats.wake_syscalls), (10_000, 0), "{name}");
    }
}

#[test]
fn ten_thousand_wakes_across_one_blocked_wait_cost_one_system_call() {
    for (name, poller) in pollers() {
        let poller = Arc::new(poller);
        let waker = Waker::new(&poller, Token(1)).unwrap();
        let waiter = {
            let poller = Arc::clone(&poller);
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(4);
                poller.poll(&mut events, None).unwrap()
            })
        };
        // The counter moves only once the poller has parked.
        while poller.stats().polls_blocked == 0 {
            std::thread::yield_now();
        }
        for _ in 0..10_000 {
            waker.wake().unwrap();
        }
        assert_eq!(waiter.join().unwrap(), 1);
        let stats = poller.stats();
        assert_eq!(
            (stats.wakes, stats.wake_syscalls),
            (10_000, 1),
            "{name}: {stats:?}"
        );
    }
}

#[test]
fn a_registration_from_another_thread_takes_effect_in_a_blocked_wait() {
    for (name, poller) in pollers() {
        let poller = Arc::new(poller);
        let waiter = {
            let poller = Arc::clone(&poller);
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(4);
                poller.poll(&mut events, LONG).unwrap();
                tokens(&events)
            })
        };
        while poller.stats().polls_blocked == 0 {
            std::thread::yield_now();
        }
        let (r, w) = pipe();
        rustix::io::write(&w, b"x").unwrap();
        poller.register(&r, Token(42), Interest::READABLE).unwrap();
        assert_eq!(waiter.join().unwrap(), [Token(42)], "{name}");
    }
}

#[test]
fn no_more_events_than_the_capacity_and_wakes_count_toward_it() {
    for (name, poller) in pollers() {
        let pipes: Vec<_> = (0..5).map(|_| pipe()).collect();
        for (i, (r, w)) in pipes.iter().enumerate() {
            poller.register(r, Token(i), Interest::READABLE).unwrap();
            rustix::io::write(w, b"x").unwrap();
        }
        let waker = Waker::new(&poller, Token(100)).unwrap();
        waker.wake().unwrap();
        let mut events = Events::with_capacity(2);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            let n = poller.poll(&mut events, LONG).unwrap();
            assert!(n <= 2 && n == events.len(), "{name}: {n} events");
            seen.extend(events.iter().map(|e| e.token()));
        }
        assert!(
            seen.contains(&Token(100)),
            "{name}: the wake never fit: {seen:?}"
        );
        assert_eq!(seen.len(), 6, "{name}: {seen:?}");
    }
}

/// A poll reports every ready registration it has room for, whatever room
/// an earlier poll had.
#[test]
fn a_poll_with_more_room_than_the_last_reports_everything_ready() {
    for (name, poller) in pollers() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, _b_peer) = UnixStream::pair().unwrap();
        poller.register(&a, Token(1), Interest::READABLE).unwrap();
        let mut small = Events::with_capacity(1);
        assert_eq!(poller.poll(&mut small, NOW).unwrap(), 0, "{name}");
        poller.register(&b, Token(2), Interest::WRITABLE).unwrap();
        a_peer.write_all(b"x").unwrap();
        let mut large = Events::with_capacity(64);
        poller.poll(&mut large, NOW).unwrap();
        assert_eq!(tokens(&large), [Token(1), Token(2)], "{name}");
    }
}

/// The same, with one buffer throughout, when a wake took a place in the
/// earlier poll.
#[test]
fn a_wake_in_one_poll_leaves_the_next_its_whole_room() {
    for (name, poller) in pollers() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        poller.register(&a, Token(1), Interest::READABLE).unwrap();
        poller.register(&b, Token(2), Interest::READABLE).unwrap();
        let waker = Waker::new(&poller, Token(100)).unwrap();
        let mut events = Events::with_capacity(2);
        waker.wake().unwrap();
        assert_eq!(poller.poll(&mut events, NOW).unwrap(), 1, "{name}");
        a_peer.write_all(b"x").unwrap();
        b_peer.write_all(b"x").unwrap();
        poller.poll(&mut events, NOW).unwrap();
        assert_eq!(tokens(&events), [Token(1), Token(2)], "{name}");
    }
}

#[test]
fn poll_replaces_the_events_it_is_given() {
    for (name, poller) in pollers() {
        let waker = Waker::new(&poller, Token(1)).unwrap();
        let mut events = Events::with_capacity(4);
        waker.wake().unwrap();
        assert_eq!(poller.poll(&mut events, LONG).unwrap(), 1);
        assert_eq!(poller.poll(&mut events, NOW).unwrap(), 0, "{name}");
        assert!(events.is_empty(), "{name}");
    }
}

#[test]
fn bad_registrations_are_clear_errors_and_the_poller_keeps_working() {
    for (name, poller) in pollers() {
        let (r, w) = pipe();
        poller.register(&r, Token(1), Interest::READABLE).unwrap();

        let err = poller
            .register(&r, Token(2), Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{name}: {err}");

        let (other, _keep) = pipe();
        let err = poller.deregister(&other).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{name}: {err}");
        let err = poller
            .reregister(&other, Token(3), Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{name}: {err}");

        let err = poller
            .register(&other, Token(usize::MAX), Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");

        // A waker's token, for a registration or another waker.
        let _waker = Waker::new(&poller, Token(50)).unwrap();
        let err = poller
            .register(&other, Token(50), Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
        let err = Waker::new(&poller, Token(50)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");

        // A closed fd: EBADF. Its number is freed by closing a dup, so that
        // no other thread of this test binary can reuse it meanwhile.
        let dup = rustix::io::fcntl_dupfd_cloexec(&other, 0).unwrap();
        let closed = unsafe_closed_borrow(dup);
        let err = poller
            .register(closed, Token(4), Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{name}: {err}");

        // Still working.
        rustix::io::write(&w, b"x").unwrap();
        let mut events = Events::with_capacity(4);
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(tokens(&events), [Token(1)], "{name}");
    }
}

/// A descriptor number that is closed, borrowed for one call.
///
/// Another thread may reuse the number at any moment; the calls it is passed
/// to only ever inspect it, and the assertions on EBADF would fail (not pass)
/// if it were reused.
fn unsafe_closed_borrow(fd: std::os::fd::OwnedFd) -> std::os::fd::BorrowedFd<'static> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let raw = fd.as_raw_fd();
    drop(fd);
    // SAFETY: BorrowedFd makes no promise that the fd is open for system
    // calls that take it by number; the poller only passes it to fstat and
    // epoll_ctl, which fail with EBADF.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

#[test]
fn a_new_file_reusing_a_closed_registered_number_is_not_the_same_fd() {
    for (name, poller) in pollers() {
        let (a, _a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        poller.register(&a, Token(1), Interest::READABLE).unwrap();
        // Put `b`'s file on `a`'s number, closing `a`'s file, as a close and
        // a reopen that reuses the number would.
        let mut a_owned: std::os::fd::OwnedFd = a.into();
        rustix::io::dup2(&b, &mut a_owned).unwrap();
        poller
            .register(&a_owned, Token(2), Interest::READABLE)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        (&b_peer).write_all(b"z").unwrap();
        let mut events = Events::with_capacity(4);
        poller.poll(&mut events, LONG).unwrap();
        assert!(
            tokens(&events).contains(&Token(2)),
            "{name}: {:?}",
            tokens(&events)
        );
        assert!(
            !tokens(&events).contains(&Token(1)),
            "{name}: stale registration reported"
        );
        poller.deregister(&a_owned).unwrap();
    }
}

#[test]
fn a_wake_after_the_poller_is_dropped_is_an_error_not_a_hang() {
    for (name, poller) in pollers() {
        let waker = Waker::new(&poller, Token(1)).unwrap();
        drop(poller);
        for _ in 0..2 {
            let err = waker.wake().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotConnected, "{name}: {err}");
        }
    }
}

#[test]
fn a_second_thread_polling_at_once_is_told_so() {
    for (name, poller) in pollers() {
        let poller = Arc::new(poller);
        let waker = Waker::new(&poller, Token(1)).unwrap();
        let first = {
            let poller = Arc::clone(&poller);
            std::thread::spawn(move || poller.poll(&mut Events::with_capacity(2), LONG).unwrap())
        };
        while poller.stats().polls_blocked == 0 {
            std::thread::yield_now();
        }
        let err = poller.poll(&mut Events::with_capacity(2), NOW).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceBusy, "{name}: {err}");
        waker.wake().unwrap();
        assert_eq!(first.join().unwrap(), 1);
    }
}

#[test]
fn a_wake_is_delivered_even_if_its_waker_is_dropped_at_once() {
    for (name, poller) in pollers() {
        for round in 0..3 {
            let waker = Waker::new(&poller, Token(7)).unwrap();
            waker.wake().unwrap();
            drop(waker);
            let mut events = Events::with_capacity(4);
            assert_eq!(
                poller.poll(&mut events, LONG).unwrap(),
                1,
                "{name} round {round}"
            );
            assert_eq!(tokens(&events), [Token(7)]);
        }
        // Once reported, the token is free again, and no slot is left over.
        let w = Waker::new(&poller, Token(7)).unwrap();
        drop(w);
        let _again = Waker::new(&poller, Token(7)).unwrap();
        assert_eq!(poller.stats().wakes, 3, "{name}");
    }
}
