//! Recipes the README points to, kept true by running them: rouse's fds in
//! other event loops, and a rouse loop nested inside tokio and calloop.
//!
//! (Here because tokio, calloop and mio are dev-dependencies of the
//! benchmark package only.)

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rouse_loop::{Ctx, EventLoop, LoopHandle};
use rouse_sys::{EventFd, EventFdFlags};

/// A rouse `EventFd` awaited in tokio with `AsyncFd`. The fd must be
/// non-blocking (a blocking read would stall the runtime), and
/// `AsyncFd::register` is `unsafe`: its caller promises that the fd stays
/// open, and is the same fd, for as long as the `AsyncFd` lives. Handing
/// the `EventFd` itself to the `AsyncFd` keeps that promise: `EventFd` owns
/// its fd and always gives the same one.
#[test]
fn an_eventfd_awaited_in_tokio() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let fd = EventFd::new(0, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC).unwrap();
        let writer = fd.try_clone().unwrap();
        // SAFETY: the AsyncFd owns the EventFd, whose fd stays open and the
        // same until the AsyncFd drops it.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .unwrap();
        std::thread::spawn(move || writer.write(3).unwrap());
        let n = loop {
            let mut ready = fd.readable().await.unwrap();
            match ready.try_io(|fd| fd.get_ref().read()) {
                Ok(result) => break result.unwrap(),
                Err(_would_block) => continue,
            }
        };
        assert_eq!(n, 3);
    });
}

/// A rouse `EventFd` as a calloop source, with `Generic`.
#[test]
fn an_eventfd_in_calloop() {
    use calloop::generic::Generic;
    use calloop::{EventLoop as Calloop, Interest, Mode, PostAction};
    let mut lp: Calloop<'_, u64> = Calloop::try_new().unwrap();
    let fd = EventFd::new(0, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC).unwrap();
    let writer = fd.try_clone().unwrap();
    lp.handle()
        .insert_source(
            Generic::new(fd, Interest::READ, Mode::Level),
            |_, fd, total| {
                *total += fd.read()?;
                Ok(PostAction::Continue)
            },
        )
        .unwrap();
    writer.write(5).unwrap();
    let mut total = 0;
    lp.dispatch(Some(Duration::from_secs(5)), &mut total)
        .unwrap();
    assert_eq!(total, 5);
}

/// A rouse `EventFd` in mio, with `SourceFd` (mio is edge-triggered: read
/// until `WouldBlock` after each event).
#[test]
fn an_eventfd_in_mio() {
    use std::os::fd::AsRawFd;
    let mut poll = mio::Poll::new().unwrap();
    let fd = EventFd::new(0, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC).unwrap();
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            mio::Token(0),
            mio::Interest::READABLE,
        )
        .unwrap();
    fd.write(2).unwrap();
    let mut events = mio::Events::with_capacity(4);
    poll.poll(&mut events, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(events.iter().next().unwrap().token(), mio::Token(0));
    assert_eq!(fd.read().unwrap(), 2);
    assert_eq!(
        fd.read().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

/// Sends `n` functors to `handle` from another thread, each counting in
/// `ran`; returns the thread.
fn send_functors(
    handle: LoopHandle,
    ran: &Arc<AtomicUsize>,
    n: usize,
) -> std::thread::JoinHandle<()> {
    let ran = Arc::clone(ran);
    std::thread::spawn(move || {
        for _ in 0..n {
            let ran = Arc::clone(&ran);
            handle
                .queue_in_loop(move |_| {
                    ran.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
        }
    })
}

/// A rouse loop nested in tokio: its fd in an `AsyncFd`, dispatched when
/// readable. Functors from another thread and a timer reach it; the wakes
/// cost at most one system call per dispatch.
#[test]
fn a_rouse_loop_nested_in_tokio() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut lp = EventLoop::new().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let fired = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&fired);
        lp.run_after(Duration::from_millis(20), move |_| {
            f.fetch_add(1, Ordering::Relaxed);
        });
        // SAFETY: the AsyncFd owns this duplicate of the loop's fd, which
        // stays open and the same until the AsyncFd drops it.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                lp.as_fd().try_clone_to_owned().unwrap(),
                tokio::io::Interest::READABLE,
            )
        }
        .unwrap();
        lp.dispatch().unwrap();
        let sender = send_functors(lp.handle(), &ran, 10_000);
        let mut dispatches = 0u64;
        while ran.load(Ordering::Relaxed) < 10_000 || fired.load(Ordering::Relaxed) == 0 {
            let mut ready = tokio::time::timeout(Duration::from_secs(10), fd.readable())
                .await
                .expect("the nested loop's fd never became readable")
                .unwrap();
            ready.clear_ready();
            lp.dispatch().unwrap();
            dispatches += 1;
        }
        sender.join().unwrap();
        let stats = lp.poller().stats();
        assert!(
            stats.wake_syscalls <= dispatches,
            "{} wake system calls for {dispatches} dispatches",
            stats.wake_syscalls
        );
        assert!(
            lp.functor_wakes() < 10_000,
            "{} wakes for 10,000 functors",
            lp.functor_wakes()
        );
    });
}

/// A rouse loop nested in calloop, as a `Generic` source on its fd.
#[test]
fn a_rouse_loop_nested_in_calloop() {
    use calloop::generic::Generic;
    use calloop::{EventLoop as Calloop, Interest, Mode, PostAction};
    let mut outer: Calloop<'_, EventLoop> = Calloop::try_new().unwrap();
    let mut lp = EventLoop::new().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let fd = lp.as_fd().try_clone_to_owned().unwrap();
    outer
        .handle()
        .insert_source(
            Generic::new(fd, Interest::READ, Mode::Level),
            |_, _, lp: &mut EventLoop| {
                lp.dispatch()?;
                Ok(PostAction::Continue)
            },
        )
        .unwrap();
    lp.dispatch().unwrap();
    let sender = send_functors(lp.handle(), &ran, 10_000);
    let quit = lp.handle();
    let r = Arc::clone(&ran);
    let waiter = std::thread::spawn(move || {
        while r.load(Ordering::Relaxed) < 10_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        quit.queue_in_loop(|cx: &mut Ctx| cx.quit()).unwrap();
    });
    let mut rounds = 0;
    while ran.load(Ordering::Relaxed) < 10_000 {
        outer
            .dispatch(Some(Duration::from_secs(10)), &mut lp)
            .unwrap();
        rounds += 1;
        assert!(rounds < 1_000_000, "the nested loop never finished");
    }
    sender.join().unwrap();
    waiter.join().unwrap();
    assert!(lp.poller().stats().wake_syscalls < 10_000);
}
