//! A poller, its registrations and its wakers inherited by a forked child:
//! every call in the child is refused and changes nothing the parent
//! shares, and dropping them there is harmless.
//!
//! Its own harness (`harness = false`), so that `fork` runs from a process
//! with one thread.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rouse_poll::{Events, Interest, Token, Waker};

const LONG: Option<Duration> = Some(Duration::from_secs(10));

fn main() {
    for (name, poller) in util::pollers() {
        let (mut sock, mut peer) = UnixStream::pair().unwrap();
        sock.set_nonblocking(true).unwrap();
        poller
            .register(&sock, Token(1), Interest::READABLE)
            .unwrap();
        let waker = Waker::new(&poller, Token(2)).unwrap();
        let (other, _other_peer) = UnixStream::pair().unwrap();
        let mut events = Events::with_capacity(8);
        poller.poll(&mut events, Some(Duration::ZERO)).unwrap();

        // SAFETY: this process has one thread; the child only makes the
        // calls below and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut failures = Vec::new();
            let mut check = |what: &str, r: std::io::Result<()>| match r {
                Err(e) if e.kind() != ErrorKind::WouldBlock && e.to_string().contains("fork") => {}
                other => failures.push(format!("{what}: {other:?}")),
            };
            check(
                "poll",
                poller
                    .poll(&mut events, Some(Duration::from_millis(200)))
                    .map(drop),
            );
            check("deregister", poller.deregister(&sock));
            check(
                "reregister",
                poller.reregister(&sock, Token(5), Interest::WRITABLE),
            );
            check(
                "register",
                poller.register(&other, Token(3), Interest::READABLE),
            );
            check("wake", waker.wake());
            check("Waker::new", Waker::new(&poller, Token(4)).map(drop));
            drop(waker);
            drop(poller);
            for f in &failures {
                eprintln!("{name}, in the child: {f}");
            }
            // SAFETY: ends the child without running the parent's exit
            // handlers twice.
            unsafe { libc::_exit(failures.len().min(100) as i32) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{name}: the child's calls were not all refused (status {status:#x})"
        );

        // The parent's registration and waker are untouched.
        peer.write_all(b"x").unwrap();
        poller.poll(&mut events, LONG).unwrap();
        let got: Vec<Token> = events.iter().map(|e| e.token()).collect();
        assert_eq!(got, [Token(1)], "{name}: the parent's registration");
        let mut buf = [0; 4];
        assert_eq!(sock.read(&mut buf).unwrap(), 1);
        waker.wake().unwrap();
        poller.poll(&mut events, LONG).unwrap();
        let got: Vec<Token> = events.iter().map(|e| e.token()).collect();
        assert_eq!(got, [Token(2)], "{name}: the parent's waker");
        println!("{name}: ok");
    }
}
