//! Group `sys`: rouse-sys calls beside the same calls made directly through
//! rustix, and a null system call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rouse_sys::{EventFd, EventFdFlags, WakeFd, WakeKind};
use rustix::event::{EventfdFlags, eventfd};
use rustix::pipe::{PipeFlags, pipe_with};

use crate::Bench;

const G: &str = "sys";

fn timed(iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed()
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    out.push(Bench::new(G, "null_syscall", || {
        Ok(|iters| {
            timed(iters, || {
                black_box(rustix::process::getppid());
            })
        })
    }));
    out.push(Bench::new(G, "rustix_eventfd", || {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| e.to_string())?;
        Ok(move |iters| {
            timed(iters, || {
                rustix::io::write(&fd, &1u64.to_ne_bytes()).unwrap();
                let mut buf = [0u8; 8];
                rustix::io::read(&fd, &mut buf).unwrap();
                black_box(u64::from_ne_bytes(buf));
            })
        })
    }));
    out.push(Bench::new(G, "rouse_eventfd", || {
        let fd = EventFd::new(0, EventFdFlags::CLOEXEC | EventFdFlags::NONBLOCK)
            .map_err(|e| e.to_string())?;
        Ok(move |iters| {
            timed(iters, || {
                fd.write(1).unwrap();
                black_box(fd.read().unwrap());
            })
        })
    }));
    out.push(Bench::new(G, "rouse_wakefd_eventfd", || {
        let fd = WakeFd::with_kind(WakeKind::EventFd).map_err(|e| e.to_string())?;
        Ok(move |iters| {
            timed(iters, || {
                fd.wake().unwrap();
                black_box(fd.consume().unwrap());
            })
        })
    }));
    out.push(Bench::new(G, "rustix_pipe", || {
        let (r, w) =
            pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).map_err(|e| e.to_string())?;
        Ok(move |iters| {
            timed(iters, || {
                rustix::io::write(&w, &[1]).unwrap();
                let mut buf = [0u8; 128];
                black_box(rustix::io::read(&r, &mut buf).unwrap());
            })
        })
    }));
    out.push(Bench::new(G, "rouse_wakefd_pipe", || {
        let fd = WakeFd::with_kind(WakeKind::Pipe).map_err(|e| e.to_string())?;
        Ok(move |iters| {
            timed(iters, || {
                fd.wake().unwrap();
                black_box(fd.consume().unwrap());
            })
        })
    }));
}
