//! `WakeFd` and `Pipe` against the kernel, for both kinds.

mod util;

use std::sync::Arc;
use std::time::Duration;

use rouse_sys::{FORCE_PIPE_ENV, Pipe, WakeFd, WakeKind};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::FdFlags;
use util::readiness;

const KINDS: [WakeKind; 2] = [WakeKind::EventFd, WakeKind::Pipe];

#[test]
fn new_uses_eventfd_here_unless_the_pipe_is_forced() {
    let forced = rouse_sys::env_switch(FORCE_PIPE_ENV).unwrap() == Some(true);
    let expected = if forced {
        WakeKind::Pipe
    } else {
        WakeKind::EventFd
    };
    assert_eq!(WakeFd::new().unwrap().kind(), expected);
    assert_eq!(WakeFd::new().unwrap().kind(), expected);
}

#[test]
fn with_kind_gives_the_kind_asked_for() {
    for kind in KINDS {
        assert_eq!(WakeFd::with_kind(kind).unwrap().kind(), kind);
    }
}

#[test]
fn a_wake_makes_the_fd_readable_until_consumed() {
    for kind in KINDS {
        let w = WakeFd::with_kind(kind).unwrap();
        assert!(!readiness(&w).0, "{kind:?} readable before any wake");
        w.wake().unwrap();
        assert!(readiness(&w).0, "{kind:?} not readable after a wake");
        assert!(readiness(&w).0, "{kind:?} readiness cleared by polling");
        assert!(w.consume().unwrap());
        assert!(!readiness(&w).0, "{kind:?} readable after consume");
    }
}

#[test]
fn consume_with_nothing_pending_returns_false_without_blocking() {
    for kind in KINDS {
        let w = WakeFd::with_kind(kind).unwrap();
        assert!(!w.consume().unwrap(), "{kind:?}");
        assert!(!w.consume().unwrap(), "{kind:?}");
    }
}

#[test]
fn many_wakes_coalesce_into_one_consume() {
    for kind in KINDS {
        let w = WakeFd::with_kind(kind).unwrap();
        for _ in 0..1000 {
            w.wake().unwrap();
        }
        assert!(w.consume().unwrap(), "{kind:?}");
        assert!(!w.consume().unwrap(), "{kind:?} needed a second consume");
    }
}

#[test]
fn a_wake_from_another_thread_ends_a_blocking_poll() {
    for kind in KINDS {
        let w = Arc::new(WakeFd::with_kind(kind).unwrap());
        let waker = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                w.wake().unwrap();
            })
        };
        let mut fds = [PollFd::new(&*w, PollFlags::IN)];
        assert_eq!(poll(&mut fds, None).unwrap(), 1, "{kind:?}");
        assert!(fds[0].revents().contains(PollFlags::IN));
        waker.join().unwrap();
        assert!(w.consume().unwrap());
    }
}

#[test]
fn both_kinds_are_close_on_exec_and_nonblocking() {
    for kind in KINDS {
        let w = WakeFd::with_kind(kind).unwrap();
        assert!(
            rustix::io::fcntl_getfd(&w)
                .unwrap()
                .contains(FdFlags::CLOEXEC),
            "{kind:?}"
        );
        let fl = rustix::fs::fcntl_getfl(&w).unwrap();
        assert!(fl.contains(rustix::fs::OFlags::NONBLOCK), "{kind:?}");
    }
    let pipe = Pipe::new().unwrap();
    for end in [pipe.read_end(), pipe.write_end()] {
        assert!(
            rustix::io::fcntl_getfd(end)
                .unwrap()
                .contains(FdFlags::CLOEXEC)
        );
    }
}

#[test]
fn a_full_pipe_absorbs_wakes_and_still_reads_as_pending() {
    let pipe = Pipe::new().unwrap();
    let cap = pipe.capacity().unwrap();
    assert!(cap >= 4096, "capacity {cap}");
    for _ in 0..cap + 100 {
        pipe.wake().unwrap();
    }
    assert!(readiness(pipe.read_end()).0);
    assert_eq!(pipe.consume().unwrap(), cap);
    assert_eq!(pipe.consume().unwrap(), 0);
    assert!(!readiness(pipe.read_end()).0);
    // And it works again after being full.
    pipe.wake().unwrap();
    assert_eq!(pipe.consume().unwrap(), 1);
}

#[test]
fn wakes_from_many_threads_are_never_lost() {
    for kind in KINDS {
        let w = Arc::new(WakeFd::with_kind(kind).unwrap());
        for round in 0..200 {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let w = Arc::clone(&w);
                    std::thread::spawn(move || w.wake().unwrap())
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert!(w.consume().unwrap(), "{kind:?} round {round}: wake lost");
            assert!(!w.consume().unwrap());
        }
    }
}

#[test]
fn every_wake_is_a_new_edge_even_when_the_fd_is_saturated() {
    use rustix::event::epoll;
    for kind in KINDS {
        let w = WakeFd::with_kind(kind).unwrap();
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ET;
        epoll::add(&ep, &w, epoll::EventData::new_u64(1), flags).unwrap();
        let mut buf = Vec::with_capacity(4);
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut edge = || {
            buf.clear();
            epoll::wait(&ep, rustix::buffer::spare_capacity(&mut buf), Some(&zero)).unwrap() == 1
        };
        // Saturate: the eventfd counter at its ceiling, or the pipe full.
        match kind {
            WakeKind::EventFd => {
                rustix::io::write(&w, &(rouse_sys::counter::MAX - 1).to_ne_bytes()).unwrap();
            }
            WakeKind::Pipe => {
                let end = w_write_end(&w);
                while rustix::io::write(&end, &[0; 4096]).is_ok() {}
                while rustix::io::write(&end, &[0; 1]).is_ok() {}
            }
        }
        assert!(edge(), "{kind:?}: no edge for filling");
        for i in 0..5 {
            w.wake().unwrap();
            assert!(edge(), "{kind:?}: wake {i} at saturation gave no edge");
            assert!(!edge(), "{kind:?}: an edge without a wake");
        }
        assert!(w.consume().unwrap());
    }
}

/// The write end of a pipe-kind WakeFd, found through /proc (the type does not
/// expose it).
fn w_write_end(w: &WakeFd) -> std::fs::File {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", w.as_raw_fd());
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .unwrap()
}
