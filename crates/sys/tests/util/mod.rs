//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub(crate) mod aio;

use std::os::fd::{AsFd, AsRawFd};

use rustix::event::Timespec;
use rustix::event::{PollFd, PollFlags, poll};

/// What `poll(2)` reports for `fd` right now: (readable, writable, error).
pub(crate) fn readiness(fd: impl AsFd) -> (bool, bool, bool) {
    let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::OUT)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).expect("poll");
    let r = fds[0].revents();
    (
        r.contains(PollFlags::IN),
        r.contains(PollFlags::OUT),
        r.contains(PollFlags::ERR),
    )
}

/// The counter of an eventfd, read without disturbing it from
/// `/proc/self/fdinfo`.
pub(crate) fn fdinfo_count(fd: impl AsFd) -> u64 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
        .expect("read fdinfo");
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("eventfd-count:"))
        .expect("an eventfd-count line");
    u64::from_str_radix(line.trim(), 16).expect("a hex count")
}
