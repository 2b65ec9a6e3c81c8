//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rouse_poll::{Backend, Poller, UringWake};

/// One poller per backend and io_uring wake path, each named. An io_uring
/// configuration the kernel refuses is skipped with the reason printed.
pub(crate) fn pollers() -> Vec<(&'static str, Poller)> {
    let mut out = vec![("epoll", Poller::with_backend(Backend::Epoll).unwrap())];
    for (name, path) in [
        ("io_uring+eventfd", UringWake::EventFd),
        ("io_uring+msg_ring", UringWake::MsgRing),
    ] {
        match Poller::builder()
            .backend(Backend::IoUring)
            .uring_wake(path)
            .build()
        {
            Ok(p) => out.push((name, p)),
            Err(e) => println!("skipped {name}: {e}"),
        }
    }
    out
}

/// A non-blocking pipe: (read end, write end).
pub(crate) fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC)
        .unwrap()
}

/// Installs a SIGUSR1 handler without SA_RESTART, so that a signal makes a
/// blocked system call fail with EINTR. Returns the count of deliveries.
pub(crate) fn interrupting_sigusr1() -> &'static std::sync::atomic::AtomicUsize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SIGNALS: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn on_signal(_: libc::c_int) {
        SIGNALS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: the handler only touches an atomic; sigaction is given a
    // zeroed, then filled, struct that lives for the call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    &SIGNALS
}
