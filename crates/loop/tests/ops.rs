//! Operations on the loop: the same callbacks on every backend (each test
//! runs on epoll and on io_uring where the kernel has it, whatever
//! `ROUSE_BACKEND` says, and on the wake fd `ROUSE_FORCE_PIPE` picks).

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use rouse_loop::{Backend, Ctx, EventLoop, Interest, Poller, SharedFd};

/// A loop on each backend the kernel offers, with a watchdog.
fn loops() -> Vec<(&'static str, EventLoop)> {
    let mut out = Vec::new();
    for (name, backend) in [("epoll", Backend::Epoll), ("io_uring", Backend::IoUring)] {
        match Poller::with_backend(backend) {
            Ok(p) => {
                let mut lp = EventLoop::with_poller(p).unwrap();
                lp.run_after(Duration::from_secs(30), |cx| {
                    panic!("watchdog: the loop did not finish: {cx:?}")
                });
                out.push((name, lp));
            }
            Err(e) if e.kind() == ErrorKind::Unsupported => println!("skipped {name}: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
    out
}

fn temp_file(data: &[u8]) -> std::fs::File {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "rouse-loop-ops-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, data).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

#[test]
fn a_file_is_written_synced_and_read_back_through_callbacks() {
    for (name, mut lp) in loops() {
        let file = SharedFd::new(temp_file(b""));
        let got = Rc::new(RefCell::new(None));
        let g = Rc::clone(&got);
        let f = file.clone();
        lp.write_at(&file, 3, b"hello".to_vec(), move |n, buf, cx| {
            assert_eq!(n.unwrap(), 5);
            assert!(buf.is_empty() && buf.capacity() >= 5, "emptied for reuse");
            let f2 = f.clone();
            cx.fsync(&f, move |r, cx| {
                r.unwrap();
                cx.read_at(&f2, 0, Vec::with_capacity(16), move |n, buf, cx| {
                    *g.borrow_mut() = Some((n.unwrap(), buf));
                    cx.quit();
                })
                .unwrap();
            })
            .unwrap();
        })
        .unwrap();
        lp.run().unwrap();
        let (n, buf) = got.borrow_mut().take().unwrap();
        assert_eq!(n, 8, "{name}");
        assert_eq!(buf, b"\0\0\0hello", "{name}");
        assert_eq!(lp.ops_in_flight(), 0, "{name}");
    }
}

/// An echo server written with operations only: accept, a multishot
/// receive per connection, a send per chunk. Every byte of every client
/// comes back.
#[test]
fn an_echo_server_of_operations_echoes_every_byte() {
    for (name, mut lp) in loops() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = SharedFd::new(listener);
        lp.accept(&listener, |conn, cx| {
            let Ok(conn) = conn else { return };
            let conn = SharedFd::new(conn);
            let out = conn.clone();
            // One send in flight at a time: chunks wait their turn.
            let queue: Rc<RefCell<(bool, Vec<u8>)>> = Rc::default();
            cx.recv_multi(&conn, move |data, cx| {
                let Ok(data) = data else { return };
                if data.is_empty() {
                    return; // end of file
                }
                send_in_turn(cx, &out, &queue, data);
            })
            .unwrap();
        })
        .unwrap();
        let clients = std::thread::spawn(move || {
            let mut threads = Vec::new();
            for i in 0..8 {
                threads.push(std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let mut all = Vec::new();
                    for k in 0..200 {
                        let msg = format!("{i}/{k};");
                        s.write_all(msg.as_bytes()).unwrap();
                        all.extend_from_slice(msg.as_bytes());
                    }
                    let mut back = vec![0; all.len()];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, all);
                }));
            }
            for t in threads {
                t.join().unwrap();
            }
        });
        let handle = lp.handle();
        let watcher = std::thread::spawn(move || {
            clients.join().unwrap();
            handle.quit().unwrap();
        });
        lp.run().unwrap();
        watcher.join().unwrap();
        println!("{name}: 8 clients echoed");
    }
}

fn send_in_turn(cx: &mut Ctx, out: &SharedFd, queue: &Rc<RefCell<(bool, Vec<u8>)>>, data: Vec<u8>) {
    let mut q = queue.borrow_mut();
    if q.0 {
        q.1.extend_from_slice(&data);
        return;
    }
    q.0 = true;
    drop(q);
    let (o, qu) = (out.clone(), Rc::clone(queue));
    cx.send(out, data, move |r, _buf, cx| {
        r.unwrap();
        let next = {
            let mut q = qu.borrow_mut();
            q.0 = false;
            std::mem::take(&mut q.1)
        };
        if !next.is_empty() {
            send_in_turn(cx, &o, &qu, next);
        }
    })
    .unwrap();
}

/// A send larger than the socket buffer is finished by more sends, and the
/// callback gets the whole length once.
#[test]
fn a_send_larger_than_the_socket_buffer_is_finished() {
    for (name, mut lp) in loops() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = SharedFd::new(a);
        const LEN: usize = 8 << 20;
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let want = data.clone();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0; LEN];
            b.read_exact(&mut got).unwrap();
            got
        });
        let sent = Rc::new(RefCell::new(None));
        let s = Rc::clone(&sent);
        lp.send(&a, data, move |n, _buf, cx| {
            *s.borrow_mut() = Some(n.unwrap());
            cx.quit();
        })
        .unwrap();
        lp.run().unwrap();
        assert_eq!(sent.borrow_mut().take(), Some(LEN), "{name}");
        assert!(
            reader.join().unwrap() == want,
            "{name}: the bytes arrive in order"
        );
    }
}

#[test]
fn a_cancelled_receive_calls_back_once_with_ecanceled_and_its_buffer() {
    for (name, mut lp) in loops() {
        let (a, _b) = UnixStream::pair().unwrap();
        let a = SharedFd::new(a);
        let calls = Rc::new(RefCell::new(Vec::new()));
        let c = Rc::clone(&calls);
        let mut buf = Vec::with_capacity(32);
        buf.push(42);
        let id = lp
            .recv(&a, buf, move |r, buf, _cx| {
                c.borrow_mut().push((r.map_err(|e| e.raw_os_error()), buf));
            })
            .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        lp.cancel_op(id).unwrap();
        while lp.ops_in_flight() > 0 {
            lp.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        let calls = calls.borrow();
        assert_eq!(calls.len(), 1, "{name}");
        assert_eq!(calls[0].0, Err(Some(libc::ECANCELED)), "{name}");
        assert_eq!(calls[0].1, [42], "{name}: the buffer, as it was");
        // A stale id is ignored.
        lp.cancel_op(id).unwrap();
    }
}

/// A panic in a completion callback reaches `run` unchanged; the other
/// completions of that iteration run in the next.
#[test]
fn a_panic_in_a_completion_reaches_run_and_the_others_still_run() {
    for (name, mut lp) in loops() {
        let file = SharedFd::new(temp_file(b"abc"));
        let ran = Rc::new(RefCell::new(0));
        for i in 0..3 {
            let ran = Rc::clone(&ran);
            lp.read_at(&file, 0, Vec::with_capacity(3), move |n, _b, _cx| {
                n.unwrap();
                if i == 0 {
                    panic!("first");
                }
                *ran.borrow_mut() += 1;
            })
            .unwrap();
        }
        let mut panics = 0;
        while lp.ops_in_flight() > 0 {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
                lp.run_once(Some(Duration::from_millis(50)))
            })) {
                assert_eq!(*p.downcast::<&str>().unwrap(), "first", "{name}");
                panics += 1;
            }
        }
        assert_eq!((panics, *ran.borrow()), (1, 2), "{name}");
    }
}

/// Readiness sources and operations side by side.
#[test]
fn readiness_sources_work_beside_operations() {
    for (name, mut lp) in loops() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let seen = Rc::new(RefCell::new((false, false)));
        let s = Rc::clone(&seen);
        lp.add_source(a, Interest::READABLE, move |sock, _r, cx| {
            let mut buf = [0; 8];
            let _ = sock.read(&mut buf);
            s.borrow_mut().0 = true;
            if s.borrow().1 {
                cx.quit();
            }
        })
        .unwrap();
        let s = Rc::clone(&seen);
        lp.recv(
            &SharedFd::new(b),
            Vec::with_capacity(8),
            move |n, _b, cx| {
                assert_eq!(n.unwrap(), 1);
                s.borrow_mut().1 = true;
                if s.borrow().0 {
                    cx.quit();
                }
            },
        )
        .unwrap();
        a_peer.write_all(b"r").unwrap();
        b_peer.write_all(b"o").unwrap();
        lp.run().unwrap();
        assert_eq!(*seen.borrow(), (true, true), "{name}");
    }
}
