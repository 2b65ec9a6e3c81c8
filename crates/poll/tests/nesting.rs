//! A poller nested in another: its fd is readable when it has something to
//! report, and wakes from other threads reach it through the outer poller.

mod util;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use rouse_poll::{Backend, Events, Interest, Poller, Token, Waker};

const LONG: Option<Duration> = Some(Duration::from_secs(10));
const NOW: Option<Duration> = Some(Duration::ZERO);
const INNER: Token = Token(99);

#[test]
fn a_nested_poller_reports_readiness_and_wakes_through_the_outer_one() {
    // Every wake path, `MSG_RING` included (it adds an eventfd to the set
    // when the fd is first asked for).
    for (name, inner) in util::pollers() {
        let inner = Arc::new(inner);
        let outer = Poller::with_backend(Backend::Epoll).unwrap();
        outer
            .register(inner.as_fd(), INNER, Interest::READABLE)
            .unwrap();
        let mut out = Events::with_capacity(8);
        let mut ev = Events::with_capacity(8);

        // Nothing to do: the outer poller sleeps its timeout.
        outer
            .poll(&mut out, Some(Duration::from_millis(20)))
            .unwrap();
        assert!(out.is_empty(), "{name}");

        // Readiness of an inner registration reaches the outer poller.
        let (a, mut b) = UnixStream::pair().unwrap();
        inner.register(&a, Token(1), Interest::READABLE).unwrap();
        b.write_all(b"x").unwrap();
        outer.poll(&mut out, LONG).unwrap();
        assert_eq!(out.iter().next().unwrap().token(), INNER, "{name}");
        inner.poll(&mut ev, NOW).unwrap();
        assert_eq!(ev.iter().next().unwrap().token(), Token(1), "{name}");
        inner.deregister(&a).unwrap();

        // Wakes from another thread, many of them, while the outer poller
        // sleeps: it wakes, and the inner poll reports the waker once.
        let waker = Waker::new(&inner, Token(2)).unwrap();
        let before = inner.stats().wake_syscalls;
        let mut dispatches = 0;
        for round in 0..50 {
            let w = waker.clone();
            let t = std::thread::spawn(move || {
                for _ in 0..100 {
                    w.wake().unwrap();
                }
            });
            let mut seen = false;
            while !seen {
                outer.poll(&mut out, LONG).unwrap();
                assert_eq!(out.len(), 1, "{name} round {round}");
                inner.poll(&mut ev, NOW).unwrap();
                dispatches += 1;
                seen = ev.iter().any(|e| e.token() == Token(2));
            }
            t.join().unwrap();
            // Wakes that came after the last dispatch are reported next.
            inner.poll(&mut ev, NOW).unwrap();
            dispatches += 1;
        }
        let syscalls = inner.stats().wake_syscalls - before;
        assert!(
            syscalls <= dispatches,
            "{name}: {syscalls} wake system calls for {dispatches} dispatches of 5,000 wakes"
        );
        // Drained: the outer poller sleeps again.
        outer
            .poll(&mut out, Some(Duration::from_millis(20)))
            .unwrap();
        assert!(
            out.is_empty(),
            "{name}: {:?}",
            out.iter().collect::<Vec<_>>()
        );
    }
}

/// A nested poller's wake fd sits in its set; when its edge takes a place in
/// a full batch, the poll still fills its room with ready registrations.
#[test]
fn a_nested_poll_fills_its_room_when_the_wake_fd_takes_a_place() {
    for (name, inner) in util::pollers() {
        let _ = inner.as_fd();
        let waker = Waker::new(&inner, Token(100)).unwrap();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        inner.register(&a, Token(1), Interest::READABLE).unwrap();
        inner.register(&b, Token(2), Interest::READABLE).unwrap();
        let mut ev = Events::with_capacity(3);
        inner.poll(&mut ev, NOW).unwrap();
        // Nested, the poller counts as parked: this wake writes the wake fd,
        // whose edge comes before the sockets' in the set.
        waker.wake().unwrap();
        a_peer.write_all(b"x").unwrap();
        b_peer.write_all(b"x").unwrap();
        inner.poll(&mut ev, NOW).unwrap();
        let mut got: Vec<Token> = ev.iter().map(|e| e.token()).collect();
        got.sort();
        assert_eq!(got, [Token(1), Token(2), Token(100)], "{name}");
    }
}
