//! An event loop inherited by a forked child: every call in the child is
//! refused and changes nothing the parent shares (its registrations, its
//! wakes), and dropping the loop there is harmless.
//!
//! Its own harness (`harness = false`), so that `fork` runs from a process
//! with one thread.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rouse_loop::{Backend, Ctx, EventLoop, Interest, Poller};

fn is_forked(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|e| e.is::<rouse_loop::Forked>())
}

fn main() {
    for backend in [Backend::Epoll, Backend::IoUring] {
        let poller = match Poller::with_backend(backend) {
            Ok(p) => p,
            Err(e) => {
                println!("skipped {backend:?}: {e}");
                continue;
            }
        };
        let mut lp = EventLoop::with_poller(poller).unwrap();
        let (server, mut client) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let echo = lp
            .add_source(server, Interest::READABLE, |sock, _ready, _cx| {
                let mut buf = [0; 64];
                if let Ok(n) = sock.read(&mut buf) {
                    sock.write_all(&buf[..n]).unwrap();
                }
            })
            .unwrap();
        let handle = lp.handle();
        lp.run_once(Some(Duration::ZERO)).unwrap();

        // SAFETY: this process has one thread; the child only makes the
        // calls below and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut failures = Vec::new();
            match lp.remove_source(echo) {
                Err(e) if is_forked(&e) => {}
                other => failures.push(format!("remove_source: {other:?}")),
            }
            match lp.run_once(Some(Duration::from_millis(300))) {
                Err(e) if is_forked(&e) => {}
                other => failures.push(format!("run_once: {other:?}")),
            }
            match handle.queue_in_loop(|cx: &mut Ctx| cx.quit()) {
                Err(rouse_loop::Error::Io(e)) if is_forked(&e) => {}
                other => failures.push(format!("queue_in_loop: {other:?}")),
            }
            match lp.run() {
                Err(e) if is_forked(&e) => {}
                other => failures.push(format!("run: {other:?}")),
            }
            drop(lp);
            for f in &failures {
                eprintln!("{backend:?}, in the child: {f}");
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
            "{backend:?}: the child's calls were not all refused (status {status:#x})"
        );

        // The parent's source still echoes, and a functor from another
        // thread still wakes it.
        let t = std::thread::spawn(move || {
            client.write_all(b"ping").unwrap();
            let mut buf = [0; 4];
            client.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            handle.queue_in_loop(|cx: &mut Ctx| cx.quit()).unwrap();
        });
        lp.run_after(Duration::from_secs(10), |_| {
            panic!("the parent's loop stalled")
        });
        lp.run().unwrap();
        t.join().unwrap();
        println!("{backend:?}: ok");
    }
}
