//! Completions from outside the loop through an eventfd: a ring the caller
//! owns, and Linux AIO. Each pitfall has a case, and thousands of
//! completions arriving while the loop is busy are each delivered once.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rouse_loop::EventLoop;
use rouse_loop::bridges::RingWatch;
use rouse_poll::aio::Aio;
use rouse_poll::io_uring::{IoUring, opcode, types};
use rouse_poll::op::SharedFd;

fn new_loop() -> EventLoop {
    let mut lp = EventLoop::new().unwrap();
    lp.run_after(Duration::from_secs(30), |cx| {
        panic!("watchdog: the loop did not finish: {cx:?}")
    });
    lp
}

fn nop(data: u64) -> rouse_poll::io_uring::squeue::Entry {
    opcode::Nop::new().build().user_data(data)
}

/// Completions posted before the eventfd was registered are never
/// signalled: the watch drains the queue right after registering.
#[test]
fn completions_queued_before_the_watch_are_delivered() {
    let mut lp = new_loop();
    let mut ring = IoUring::new(64).unwrap();
    for i in 0..10 {
        // SAFETY: a NOP names no memory.
        unsafe { ring.submission().push(&nop(i)).unwrap() };
    }
    ring.submit_and_wait(10).unwrap();
    assert_eq!(ring.completion().len(), 10, "all posted before the watch");
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    lp.watch_ring(ring, move |cqe, _, _| {
        g.borrow_mut().push(cqe.unwrap().user_data())
    })
    .unwrap();
    // No new completion, and no wait: they are there already.
    assert_eq!(*got.borrow(), (0..10).collect::<Vec<_>>());
}

/// Thousands of completions (timeouts expiring at random) while the loop
/// is busy with a flood of functors: each delivered once, none lost,
/// though the eventfd's count said less than that.
#[test]
fn thousands_of_completions_while_the_loop_is_busy_each_arrive_once() {
    const N: u64 = 5000;
    let mut lp = new_loop();
    let ring = IoUring::new(256).unwrap();
    let seen = Rc::new(RefCell::new(HashSet::new()));
    let wakeups = Rc::new(Cell::new(0u64));
    let (s, w) = (Rc::clone(&seen), Rc::clone(&wakeups));
    let timeouts: Rc<Vec<types::Timespec>> = Rc::new(
        (0..N)
            .map(|i| types::Timespec::new().nsec(((i * 7919) % 5_000_000) as u32))
            .collect(),
    );
    let t = Rc::clone(&timeouts);
    let id = lp
        .watch_ring(ring, move |cqe, _, cx| {
            let cqe = cqe.unwrap();
            assert_eq!(cqe.result(), -libc::ETIME, "a timeout that expired");
            assert!(s.borrow_mut().insert(cqe.user_data()), "delivered twice");
            w.set(w.get() + 1);
            if s.borrow().len() as u64 == N {
                cx.quit();
            }
            let _ = &t;
        })
        .unwrap();
    // Submit them all (the timespecs stay alive in `timeouts`).
    {
        let ring = lp.source_mut::<RingWatch>(id).unwrap().ring();
        for (i, ts) in timeouts.iter().enumerate() {
            let sqe = opcode::Timeout::new(ts).build().user_data(i as u64);
            // SAFETY: the timespec lives in `timeouts` until the loop ends,
            // after every timeout has completed.
            while unsafe { ring.submission().push(&sqe) }.is_err() {
                ring.submit().unwrap();
            }
        }
        ring.submit().unwrap();
    }
    // Keep the loop busy meanwhile: functors that queue functors.
    fn busy(cx: &mut rouse_loop::Ctx, left: u32) {
        std::hint::black_box((0..100).sum::<u32>());
        if left > 0 {
            cx.queue_in_loop(move |cx| busy(cx, left - 1));
        }
    }
    lp.queue_in_loop(|cx| busy(cx, 200_000));
    lp.run().unwrap();
    assert_eq!(seen.borrow().len() as u64, N);
    println!("{N} completions delivered, each once");
}

/// A `DEFER_TASKRUN` ring posts completions only inside an enter with
/// GETEVENTS: the watch makes it when the eventfd says work waits.
#[test]
fn a_defer_taskrun_ring_is_entered_to_post_its_completions() {
    let mut lp = new_loop();
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8);
    let Ok(ring) = ring else {
        println!("skipped: this kernel refuses DEFER_TASKRUN");
        return;
    };
    let ts = Box::new(types::Timespec::new().nsec(2_000_000));
    let got = Rc::new(Cell::new(0));
    let g = Rc::clone(&got);
    let id = lp
        .watch_ring(ring, move |cqe, _, cx| {
            assert_eq!(cqe.unwrap().user_data(), 7);
            g.set(g.get() + 1);
            cx.quit();
        })
        .unwrap();
    {
        let ring = lp.source_mut::<RingWatch>(id).unwrap().ring();
        let sqe = opcode::Timeout::new(&*ts).build().user_data(7);
        // SAFETY: `ts` outlives the timeout (the loop runs until it fires).
        unsafe { ring.submission().push(&sqe).unwrap() };
        ring.submit().unwrap();
    }
    // Expired, but not yet posted: its completion waits for an enter.
    std::thread::sleep(Duration::from_millis(10));
    {
        let ring = lp.source_mut::<RingWatch>(id).unwrap().ring();
        assert!(ring.completion().is_empty(), "posted without an enter");
    }
    lp.run().unwrap();
    assert_eq!(got.get(), 1);
    drop(ts);
}

fn temp_file(len: usize) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("rouse-aio-{}", std::process::id()));
    std::fs::write(&path, (0..len).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

/// AIO reads completing on the loop, more submitted from each completion,
/// as nginx's `aio on` reads a file: every read once, with its bytes.
#[test]
fn aio_reads_complete_on_the_loop() {
    const READS: u64 = 2000;
    let mut lp = new_loop();
    let file = SharedFd::new(temp_file(1 << 20));
    let mut aio = match Aio::new(64) {
        Ok(a) => a,
        Err(e) => {
            println!("skipped: this kernel refuses Linux AIO: {e}");
            return;
        }
    };
    let next = Rc::new(Cell::new(0u64));
    let done = Rc::new(Cell::new(0u64));
    for _ in 0..32 {
        let i = next.get();
        next.set(i + 1);
        aio.read(&file, (i * 4096) % (1 << 20), vec![0; 512], 0, 512)
            .unwrap();
    }
    let (n, d, f) = (Rc::clone(&next), Rc::clone(&done), file.clone());
    lp.watch_aio(aio, move |c, aio, cx| {
        let c = c.unwrap();
        assert_eq!(c.result.unwrap(), 512);
        assert_eq!(c.buf[1], 1, "the bytes read");
        d.set(d.get() + 1);
        if n.get() < READS {
            let i = n.get();
            n.set(i + 1);
            aio.read(&f, (i * 4096) % (1 << 20), c.buf, 0, 512).unwrap();
        }
        if d.get() == READS {
            cx.quit();
        }
    })
    .unwrap();
    lp.run().unwrap();
    assert_eq!(done.get(), READS);
}

/// AIO pushes the eventfd's counter to its ceiling: read like any count,
/// and the completions still come, each once.
#[test]
fn an_eventfd_saturated_by_aio_still_delivers_every_completion() {
    let mut lp = new_loop();
    let mut aio = match Aio::new(8) {
        Ok(a) => a,
        Err(e) => {
            println!("skipped: this kernel refuses Linux AIO: {e}");
            return;
        }
    };
    // One below the ceiling a write may reach.
    aio.eventfd().write(0xffff_ffff_ffff_fffe).unwrap();
    let null = SharedFd::new(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap(),
    );
    for _ in 0..4 {
        aio.write(&null, 0, vec![1; 64]).unwrap();
    }
    let start = Instant::now();
    // Writes to /dev/null complete inside io_submit: each signal the kernel
    // adds pushes the count to the ceiling no write may reach.
    let deadline = Instant::now() + Duration::from_secs(5);
    let count = loop {
        match aio.eventfd().read() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(count, u64::MAX, "saturated: the overflow state");
    // The count is read (and gone); the completions are still there, and
    // the watch reaps them right after registering.
    let got = Rc::new(Cell::new(0));
    let g = Rc::clone(&got);
    lp.watch_aio(aio, move |c, _, cx| {
        assert_eq!(c.unwrap().result.unwrap(), 64);
        g.set(g.get() + 1);
        if g.get() == 4 {
            cx.quit();
        }
    })
    .unwrap();
    lp.run().unwrap();
    assert_eq!(got.get(), 4);
    assert!(start.elapsed() < Duration::from_secs(10));
}
