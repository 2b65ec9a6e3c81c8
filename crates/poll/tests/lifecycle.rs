//! An fd's whole life on every backend: closed without `deregister`, its
//! number reused by another file, kept alive by a `dup`, drained between
//! polls; a poller moved between threads; wakes that must be reported once;
//! io_uring refused by the kernel; descriptors run out.
//!
//! These tests put files on chosen descriptor numbers (`dup2`) and lower the
//! descriptor limit, which would disturb other tests running at the same
//! time: each takes [`serial`] first.

mod util;

use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rouse_poll::{Backend, Events, Interest, Poller, Token, UringWake, Waker};
use rustix::event::{EventfdFlags, eventfd};
use util::{pipe, pollers};

const LONG: Option<Duration> = Some(Duration::from_secs(10));
const SHORT: Option<Duration> = Some(Duration::from_millis(20));
const NOW: Option<Duration> = Some(Duration::ZERO);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tokens(events: &Events) -> Vec<Token> {
    let mut t: Vec<Token> = events.iter().map(|e| e.token()).collect();
    t.sort();
    t
}

fn new_eventfd() -> OwnedFd {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap()
}

/// Moves the file of `from` onto the number of `onto` (closing the file
/// that number held), as a close and a reopen that reuses the number would.
fn put_on_number(from: &impl AsFd, onto: &mut OwnedFd) {
    rustix::io::dup2(from, onto).unwrap();
}

/// A kind of file: its name, the end that is registered, and a way to make
/// it readable.
type ReadableFile = (&'static str, OwnedFd, Box<dyn Fn()>);

/// One file of each kind a registration can hold.
fn readable_files() -> Vec<ReadableFile> {
    let mut out: Vec<ReadableFile> = Vec::new();
    let (r, w) = pipe();
    out.push((
        "pipe",
        r,
        Box::new(move || {
            rustix::io::write(&w, b"x").unwrap();
        }),
    ));
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    out.push((
        "socket",
        a.into(),
        Box::new(move || {
            (&b).write_all(b"x").unwrap();
        }),
    ));
    let efd = new_eventfd();
    let writer = rustix::io::fcntl_dupfd_cloexec(&efd, 0).unwrap();
    out.push((
        "eventfd",
        efd,
        Box::new(move || {
            rustix::io::write(&writer, &1u64.to_ne_bytes()).unwrap();
        }),
    ));
    let tfd = rustix::time::timerfd_create(
        rustix::time::TimerfdClockId::Monotonic,
        rustix::time::TimerfdFlags::CLOEXEC | rustix::time::TimerfdFlags::NONBLOCK,
    )
    .unwrap();
    let setter = rustix::io::fcntl_dupfd_cloexec(&tfd, 0).unwrap();
    out.push((
        "timerfd",
        tfd,
        Box::new(move || {
            let spec = rustix::time::Itimerspec {
                it_interval: rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 1,
                },
            };
            rustix::time::timerfd_settime(&setter, rustix::time::TimerfdTimerFlags::empty(), &spec)
                .unwrap();
            // Expired once this poll says so.
            let mut pfd = [rustix::event::PollFd::new(
                &setter,
                rustix::event::PollFlags::IN,
            )];
            rustix::event::poll(&mut pfd, None).unwrap();
        }),
    ));
    out
}

#[test]
fn a_registration_closed_without_deregister_is_forgotten_silently() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let mut events = Events::with_capacity(8);
        // Closed before any poll, and closed after a poll armed it.
        for armed in [false, true] {
            let (r, w) = pipe();
            poller.register(&r, Token(1), Interest::READABLE).unwrap();
            if armed {
                poller.poll(&mut events, NOW).unwrap();
            }
            drop(r);
            for _ in 0..3 {
                poller.poll(&mut events, SHORT).unwrap();
                assert!(
                    events.is_empty(),
                    "{name} (armed: {armed}): {:?}",
                    events.iter().collect::<Vec<_>>()
                );
            }
            // The file is really gone: its reader was the registration.
            let err = rustix::io::write(&w, b"x").unwrap_err();
            assert_eq!(err, rustix::io::Errno::PIPE, "{name} (armed: {armed})");
            poller.poll(&mut events, SHORT).unwrap();
            assert!(events.is_empty(), "{name} (armed: {armed})");

            // The token and the number are free again.
            let (r2, w2) = pipe();
            poller
                .register(&r2, Token(1), Interest::READABLE)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            rustix::io::write(&w2, b"x").unwrap();
            poller.poll(&mut events, LONG).unwrap();
            assert_eq!(tokens(&events), [Token(1)], "{name}");
            poller.deregister(&r2).unwrap();
        }
    }
}

#[test]
fn a_new_file_on_a_reused_number_is_a_new_registration_for_every_kind() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let mut events = Events::with_capacity(8);
        // Each kind replaced by a file of the same kind, then by another.
        let same = readable_files().into_iter().zip(readable_files());
        let other = readable_files()
            .into_iter()
            .zip(readable_files().into_iter().rev());
        for ((old_kind, mut old, _), (new_kind, new, make_new_readable)) in same.chain(other) {
            let what = format!("{name}: {old_kind} replaced by {new_kind}");
            poller
                .register(&old, Token(10), Interest::READABLE)
                .unwrap();
            poller.poll(&mut events, NOW).unwrap();
            assert!(events.is_empty(), "{what}");
            put_on_number(&new, &mut old);
            drop(new);
            poller
                .register(&old, Token(11), Interest::READABLE)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            make_new_readable();
            poller.poll(&mut events, LONG).unwrap();
            assert_eq!(tokens(&events), [Token(11)], "{what}");
            poller.deregister(&old).unwrap();
        }
    }
}

#[test]
fn a_drained_file_is_not_reported_by_the_next_poll() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let mut events = Events::with_capacity(8);
        let (r, w) = pipe();
        poller.register(&r, Token(1), Interest::READABLE).unwrap();
        for round in 0..50 {
            poller.poll(&mut events, NOW).unwrap();
            assert!(events.is_empty(), "{name} round {round}");
            rustix::io::write(&w, b"xy").unwrap();
            let mut buf = [0; 8];
            assert_eq!(rustix::io::read(&r, &mut buf).unwrap(), 2);
            poller.poll(&mut events, NOW).unwrap();
            assert!(
                events.is_empty(),
                "{name} round {round}: a drained pipe reported {:?}",
                events.iter().collect::<Vec<_>>()
            );
        }
        poller.deregister(&r).unwrap();
    }
}

#[test]
fn a_dup_keeps_a_registration_alive_after_its_number_is_closed_on_every_backend() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let mut events = Events::with_capacity(8);
        let (r, w) = pipe();
        poller.register(&r, Token(1), Interest::READABLE).unwrap();
        poller.poll(&mut events, NOW).unwrap();
        let dup = rustix::io::fcntl_dupfd_cloexec(&r, 0).unwrap();
        let mut number = r;
        // A readable socket takes the registered number; the pipe lives on
        // through the dup, still registered, and still empty.
        let (sock, peer) = UnixStream::pair().unwrap();
        (&peer).write_all(b"x").unwrap();
        put_on_number(&sock, &mut number);
        poller.poll(&mut events, SHORT).unwrap();
        assert!(
            events.is_empty(),
            "{name}: the file now on the number is not registered: {:?}",
            events.iter().collect::<Vec<_>>()
        );
        // The pipe's registration lives on under its token: the documented
        // caveat of closing a registered fd that has a dup.
        rustix::io::write(&w, b"x").unwrap();
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(tokens(&events), [Token(1)], "{name}");
        // It cannot be removed through the dup (another number)...
        let err = poller.deregister(&dup).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{name}: {err}");
        // ...and goes once the last descriptor of its file is closed.
        drop(dup);
        poller.poll(&mut events, SHORT).unwrap();
        assert!(events.is_empty(), "{name}");
    }
}

#[test]
fn a_poller_moved_to_a_thread_that_exits_reports_no_phantom_event() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let poller = Arc::new(poller);
        let (r, w) = pipe();
        poller.register(&r, Token(1), Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(8);
        for round in 0..5 {
            // Poll on a short-lived thread, which then exits.
            let p = Arc::clone(&poller);
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(8);
                p.poll(&mut events, NOW).unwrap();
                assert!(events.is_empty());
            })
            .join()
            .unwrap();
            // At once, and after the kernel has had time to cancel that
            // thread's requests: nothing to report, then the file's
            // readiness, exactly as on epoll.
            poller.poll(&mut events, NOW).unwrap();
            assert!(events.is_empty(), "{name} round {round}");
            std::thread::sleep(Duration::from_millis(5));
            poller.poll(&mut events, SHORT).unwrap();
            assert!(
                events.is_empty(),
                "{name} round {round}: {:?}",
                events.iter().collect::<Vec<_>>()
            );
            rustix::io::write(&w, b"x").unwrap();
            poller.poll(&mut events, LONG).unwrap();
            assert_eq!(tokens(&events), [Token(1)], "{name} round {round}");
            let ev = events.iter().next().unwrap();
            assert!(ev.is_readable() && !ev.is_error(), "{name}: {ev:?}");
            let mut buf = [0; 4];
            rustix::io::read(&r, &mut buf).unwrap();
        }
        // Readiness that arrives right after the move is not missed.
        let p = Arc::clone(&poller);
        std::thread::spawn(move || p.poll(&mut Events::with_capacity(8), NOW).unwrap())
            .join()
            .unwrap();
        rustix::io::write(&w, b"x").unwrap();
        poller.poll(&mut events, LONG).unwrap();
        assert_eq!(tokens(&events), [Token(1)], "{name}");
    }
}

#[test]
fn one_poll_reports_each_waker_token_at_most_once() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let wakers = [
            Waker::new(&poller, Token(1)).unwrap(),
            Waker::new(&poller, Token(2)).unwrap(),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let waker = wakers[i].clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        waker.wake().unwrap();
                    }
                })
            })
            .collect();
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut polls = 0;
        while Instant::now() < deadline {
            poller.poll(&mut events, LONG).unwrap();
            let t: Vec<Token> = tokens(&events);
            let mut unique = t.clone();
            unique.dedup();
            assert_eq!(t, unique, "{name}: poll {polls} reported a token twice");
            polls += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        assert!(polls > 100, "{name}: only {polls} polls");
    }
}

#[test]
fn a_pending_wake_after_the_poller_is_dropped_is_not_connected() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let waker = Waker::new(&poller, Token(1)).unwrap();
        waker.wake().unwrap(); // pending, never reported
        drop(poller);
        for _ in 0..2 {
            let err = waker.wake().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotConnected, "{name}: {err}");
        }
    }
}

/// Lowers the soft descriptor limit to what is open now, so that the next
/// descriptor cannot be created; restored on drop.
struct NoMoreFds {
    old: rustix::process::Rlimit,
}

impl NoMoreFds {
    fn now() -> NoMoreFds {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let old = getrlimit(Resource::Nofile);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        // Fill every free number below the highest open one, then cap there.
        let mut fillers = Vec::new();
        loop {
            let fd = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 0).unwrap();
            if fd.as_raw_fd() as u64 > highest {
                break;
            }
            fillers.push(fd);
        }
        std::mem::forget(fillers); // kept open: the holes stay filled
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(highest + 1),
                maximum: old.maximum,
            },
        )
        .unwrap();
        NoMoreFds { old }
    }
}

impl Drop for NoMoreFds {
    fn drop(&mut self) {
        rustix::process::setrlimit(rustix::process::Resource::Nofile, self.old).unwrap();
    }
}

#[test]
fn wakes_and_registrations_keep_working_when_descriptors_run_out() {
    let _serial = serial();
    for (name, poller) in pollers() {
        let poller = Arc::new(poller);
        let waker = Waker::new(&poller, Token(1)).unwrap();
        let (r, w) = pipe();
        let limit = NoMoreFds::now();
        assert_eq!(
            rustix::io::fcntl_dupfd_cloexec(&r, 0).unwrap_err(),
            rustix::io::Errno::MFILE
        );
        // A waker needs a descriptor only if its path does (a ring of its
        // own for MSG_RING); then it fails here, and not later in `wake`.
        let late = Waker::new(&poller, Token(2));
        if poller.uring_wake() == Some(UringWake::MsgRing) {
            let err = late.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{name}: {err}");
        } else {
            drop(late.unwrap_or_else(|e| panic!("{name}: {e}")));
        }
        // A wake and a registration from another thread reach a poller
        // blocked in the kernel. (It polls on one thread throughout: on
        // io_uring a new polling thread needs a ring, so a descriptor.)
        let p = Arc::clone(&poller);
        let (tx, rx) = std::sync::mpsc::channel();
        let blocked = std::thread::spawn(move || {
            let mut events = Events::with_capacity(8);
            for _ in 0..2 {
                p.poll(&mut events, LONG).unwrap();
                tx.send(tokens(&events)).unwrap();
            }
        });
        let blocked_polls = |n| {
            while poller.stats().polls_blocked < n {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        blocked_polls(1);
        waker.wake().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rx.recv().unwrap(), [Token(1)], "{name}");
        blocked_polls(2);
        rustix::io::write(&w, b"x").unwrap();
        poller
            .register(&r, Token(3), Interest::READABLE)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rx.recv().unwrap(), [Token(3)], "{name}");
        blocked.join().unwrap();
        drop(limit);
        poller.deregister(&r).unwrap();
    }
}

/// Installs, on the calling thread only, a seccomp filter that fails
/// `io_uring_setup` with `errno`.
fn refuse_io_uring_setup(errno: i32) {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO, sock_filter, sock_fprog,
    };
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut filter = [
        // The system call number is at offset 0 of `struct seccomp_data`.
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | errno as u32),
        stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    ];
    let prog = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with these options reads `prog` (alive for the call)
    // and changes only this thread's system call filter.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const sock_fprog
            ),
            0
        );
    }
}

#[test]
fn an_io_uring_the_kernel_refuses_is_unsupported_with_the_reason() {
    let _serial = serial();
    for errno in [libc::EPERM, libc::ENOSYS] {
        std::thread::spawn(move || {
            refuse_io_uring_setup(errno);
            for path in [UringWake::EventFd, UringWake::MsgRing] {
                let err = Poller::builder()
                    .backend(Backend::IoUring)
                    .uring_wake(path)
                    .build()
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Unsupported, "{errno}: {err}");
                let msg = err.to_string();
                assert!(msg.contains("io_uring"), "{msg}");
                let os = std::io::Error::from_raw_os_error(errno).to_string();
                assert!(msg.contains(&os), "{msg} does not give the reason {os}");
            }
            // The default is not affected.
            if std::env::var(rouse_poll::BACKEND_ENV).as_deref() != Ok("io_uring") {
                Poller::new().unwrap();
            }
        })
        .join()
        .unwrap();
    }
}

/// A wake that finds the poller parked in its first poll reaches it, on
/// every wake path: a waker may message the ring as soon as the poller
/// parks, so the ring must already be the polling thread's (enabled).
#[test]
fn a_wake_the_moment_a_first_poll_parks_is_delivered() {
    let _serial = serial();
    for round in 0..1000 {
        for (name, poller) in pollers() {
            let poller = Arc::new(poller);
            let waker = Waker::new(&poller, Token(1)).unwrap();
            let waiter = {
                let poller = Arc::clone(&poller);
                std::thread::spawn(move || {
                    let mut events = Events::with_capacity(4);
                    poller.poll(&mut events, LONG).map(|_| tokens(&events))
                })
            };
            // Counted the moment the poller parks.
            while poller.stats().polls_blocked == 0 {
                std::hint::spin_loop();
            }
            waker
                .wake()
                .unwrap_or_else(|e| panic!("{name}, round {round}: {e}"));
            assert_eq!(waiter.join().unwrap().unwrap(), [Token(1)], "{name}");
        }
    }
}
