//! Bad descriptors and descriptor exhaustion.
//!
//! Both touch process-wide state (descriptor numbers, `RLIMIT_NOFILE`), so
//! they run in one test, in a binary of their own, with no other test
//! opening descriptors in parallel.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rouse_sys::{EventFd, EventFdFlags, Pipe, WakeFd, WakeKind};
use rustix::io::Errno;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

#[test]
fn closed_fds_and_exhausted_descriptors_are_clear_errors() {
    adopting_a_closed_fd_is_ebadf();
    running_out_of_descriptors_is_emfile_for_every_constructor();
}

fn adopting_a_closed_fd_is_ebadf() {
    let fd = EventFd::new(0, EventFdFlags::CLOEXEC).unwrap();
    let raw = fd.as_raw_fd();
    drop(fd);
    // SAFETY: `raw` is closed, and nothing in this process opens a descriptor
    // before the refused OwnedFd is forgotten below.
    let stale = unsafe { OwnedFd::from_raw_fd(raw) };
    let (error, fd) = EventFd::from_owned(stale).unwrap_err().into_parts();
    std::mem::forget(fd);
    assert_eq!(error.raw_os_error(), Some(Errno::BADF.raw_os_error()));
}

fn running_out_of_descriptors_is_emfile_for_every_constructor() {
    let saved = getrlimit(Resource::Nofile);
    // The lowest free descriptor number: with the soft limit there, no new
    // descriptor can be created.
    let probe = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), 0).unwrap();
    let lowest = probe.as_raw_fd() as u64;
    drop(probe);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(lowest),
            maximum: saved.maximum,
        },
    )
    .unwrap();

    let emfile = Some(Errno::MFILE.raw_os_error());
    let eventfd = EventFd::new(0, EventFdFlags::CLOEXEC).map(drop);
    let pipe = Pipe::new().map(drop);
    let wake = WakeFd::new().map(drop);
    let wake_eventfd = WakeFd::with_kind(WakeKind::EventFd).map(drop);
    let wake_pipe = WakeFd::with_kind(WakeKind::Pipe).map(drop);

    setrlimit(Resource::Nofile, saved).unwrap();
    for (what, result) in [
        ("EventFd::new", eventfd),
        ("Pipe::new", pipe),
        ("WakeFd::new", wake),
        ("WakeFd::with_kind(EventFd)", wake_eventfd),
        ("WakeFd::with_kind(Pipe)", wake_pipe),
    ] {
        let err = result.expect_err(what);
        assert_eq!(err.raw_os_error(), emfile, "{what}: {err}");
    }
    // Nothing is stuck: with descriptors back, both kinds work again, and the
    // failure above did not make WakeFd::new give up on eventfd.
    let w = WakeFd::new().unwrap();
    if std::env::var_os(rouse_sys::FORCE_PIPE_ENV).is_none() {
        assert_eq!(w.kind(), WakeKind::EventFd);
    }
}
