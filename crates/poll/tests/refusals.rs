//! io_uring refused, feature by feature: each refusal is `Unsupported` with
//! its reason in words, `prefer_io_uring` takes epoll and says why, and the
//! path for kernels without `EPOLL_WAIT` works. The kernel here has every
//! feature; `ROUSE_URING_PRETEND_MISSING` makes the backend act as if it
//! lacked them.
//!
//! One test in a binary of its own: it sets the environment, which no other
//! thread may read meanwhile.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rouse_poll::{
    Backend, Events, Interest, Poller, Token, URING_EPOLL_WAIT_ENV, URING_PRETEND_MISSING_ENV,
    UringWake, Waker,
};

fn set(var: &str, value: Option<&str>) {
    // SAFETY: this binary's only test; no other thread touches the
    // environment while it runs.
    unsafe {
        match value {
            Some(v) => std::env::set_var(var, v),
            None => std::env::remove_var(var),
        }
    }
}

/// A poller on `backend` (with `wake`) works: a registration is reported, a
/// wake from another thread ends a blocked wait.
fn works(poller: &Poller) {
    let (a, b) = UnixStream::pair().unwrap();
    poller.register(&a, Token(1), Interest::READABLE).unwrap();
    let mut events = Events::with_capacity(4);
    assert_eq!(poller.poll(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    std::io::Write::write_all(&mut &b, b"x").unwrap();
    poller
        .poll(&mut events, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(events.iter().next().unwrap().token(), Token(1));
    // Still ready: reported again (level-triggered), by every poll.
    poller.poll(&mut events, Some(Duration::ZERO)).unwrap();
    assert_eq!(events.len(), 1, "level-triggered");
    poller.deregister(&a).unwrap();
    let waker = Waker::new(poller, Token(2)).unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.wake().unwrap();
    });
    poller
        .poll(&mut events, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(events.iter().next().unwrap().token(), Token(2));
    t.join().unwrap();
}

#[test]
fn each_refusal_is_unsupported_with_its_reason_and_epoll_is_taken_when_preferred() {
    if let Err(e) = Poller::with_backend(Backend::IoUring) {
        println!("skipped: this kernel refuses io_uring itself: {e}");
        return;
    }
    let cases: &[(&str, &str)] = &[
        ("io_uring", "seccomp"),
        ("single_issuer", "6.1"),
        ("defer_taskrun", "6.1"),
        ("ext_arg", "EXT_ARG"),
        ("nodrop", "NODROP"),
    ];
    for (feature, reason) in cases {
        set(URING_PRETEND_MISSING_ENV, Some(feature));
        let e = Poller::with_backend(Backend::IoUring).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{feature}: {e}");
        assert!(e.to_string().contains(reason), "{feature}: {e}");
        // One call that works everywhere.
        let p = Poller::builder().prefer_io_uring().build().unwrap();
        assert_eq!(p.backend(), Backend::Epoll, "{feature}");
        let why = p.uring_refused().expect("the refusal is kept");
        assert!(why.to_string().contains(reason), "{feature}: {why}");
        works(&p);
    }
    // MSG_RING missing: that wake path is refused, the eventfd one works.
    set(URING_PRETEND_MISSING_ENV, Some("msg_ring"));
    let e = Poller::builder()
        .backend(Backend::IoUring)
        .uring_wake(UringWake::MsgRing)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("MSG_RING"), "{e}");
    works(
        &Poller::builder()
            .backend(Backend::IoUring)
            .uring_wake(UringWake::EventFd)
            .build()
            .unwrap(),
    );
    // EPOLL_WAIT missing, or turned off: the older path, on both wakes.
    for (var, value) in [
        (URING_PRETEND_MISSING_ENV, "epoll_wait"),
        (URING_EPOLL_WAIT_ENV, "0"),
    ] {
        set(URING_PRETEND_MISSING_ENV, None);
        set(var, Some(value));
        for wake in [UringWake::EventFd, UringWake::MsgRing] {
            let p = Poller::builder()
                .backend(Backend::IoUring)
                .uring_wake(wake)
                .build()
                .unwrap();
            assert_eq!(p.backend(), Backend::IoUring);
            assert_eq!(p.uring_epoll_wait(), Some(false), "{var}={value}");
            works(&p);
        }
        set(var, None);
    }
    // A misspelt feature is an error, not ignored.
    set(URING_PRETEND_MISSING_ENV, Some("epol_wait"));
    let e = Poller::with_backend(Backend::IoUring).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    set(URING_PRETEND_MISSING_ENV, None);
    // And where io_uring works, preferring it gets it.
    let p = Poller::builder().prefer_io_uring().build().unwrap();
    assert_eq!(p.backend(), Backend::IoUring);
    assert!(p.uring_refused().is_none());
    // EPOLL_WAIT where the kernel has it, and it is not turned off.
    let has = p.uring_epoll_wait().unwrap();
    let off = rouse_sys::env_switch(URING_EPOLL_WAIT_ENV).unwrap() == Some(false);
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= (6, 15) {
        assert!(
            has || off,
            "Linux {release} has EPOLL_WAIT, and it was not used"
        );
    }
    assert!(!(has && off), "ROUSE_URING_EPOLL_WAIT=0 was ignored");
}
