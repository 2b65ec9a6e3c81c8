//! Signals and child processes on the loop, with the classic pitfalls each
//! tested: the mask in every thread, signals that collapse, the mask a
//! child inherits, two loops watching one signal, and the mask given back.
//!
//! No libtest harness: `main` blocks the signals before any thread exists,
//! as a program must, then runs the cases one after another.

use std::cell::{Cell, RefCell};
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rouse_loop::{EventLoop, SigInfo};
use rouse_sys::signal::{block, is_blocked};

fn main() {
    // Before any thread: every thread started from here inherits the block.
    block(&[libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGCHLD]).unwrap();
    let cases: &[(&str, fn())] = &[
        (
            "a_signal_reaches_the_loop_with_its_sender",
            a_signal_reaches_the_loop_with_its_sender,
        ),
        (
            "sigterm_ends_the_run_gracefully",
            sigterm_ends_the_run_gracefully,
        ),
        (
            "a_thread_that_does_not_block_the_signal_is_named",
            a_thread_that_does_not_block_the_signal_is_named,
        ),
        (
            "every_child_is_reaped_though_sigchld_collapses",
            every_child_is_reaped_though_sigchld_collapses,
        ),
        (
            "watch_child_reports_each_child_exactly",
            watch_child_reports_each_child_exactly,
        ),
        (
            "a_child_starts_with_an_empty_mask",
            a_child_starts_with_an_empty_mask,
        ),
        (
            "two_loops_watching_one_signal_read_it_once",
            two_loops_watching_one_signal_read_it_once,
        ),
        (
            "removing_the_source_and_dropping_the_loop_give_the_mask_back",
            removing_the_source_and_dropping_the_loop_give_the_mask_back,
        ),
    ];
    for (name, case) in cases {
        print!("test {name} ... ");
        case();
        println!("ok");
    }
    println!("\ntest result: ok. {} passed; 0 failed", cases.len());
}

fn new_loop() -> EventLoop {
    let mut lp = EventLoop::new().unwrap();
    lp.run_after(Duration::from_secs(30), |cx| {
        panic!("watchdog: the loop did not finish: {cx:?}")
    });
    lp
}

fn kill_self(sig: i32) {
    // SAFETY: kill(2) on our own process with a signal every thread blocks.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

fn a_signal_reaches_the_loop_with_its_sender() {
    let mut lp = new_loop();
    let got = Rc::new(RefCell::new(Vec::<SigInfo>::new()));
    let g = Rc::clone(&got);
    lp.add_signals(&[libc::SIGUSR1], move |info, cx| {
        g.borrow_mut().push(info);
        cx.quit();
    })
    .unwrap();
    kill_self(libc::SIGUSR1);
    lp.run().unwrap();
    let got = got.borrow();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].signo, libc::SIGUSR1);
    assert_eq!(got[0].pid, std::process::id(), "the sender");
}

fn sigterm_ends_the_run_gracefully() {
    let mut lp = new_loop();
    let cleaned = Rc::new(Cell::new(false));
    let c = Rc::clone(&cleaned);
    lp.add_signals(&[libc::SIGTERM], move |_, cx| {
        c.set(true);
        cx.quit();
    })
    .unwrap();
    let t = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        kill_self(libc::SIGTERM);
    });
    lp.run().unwrap();
    t.join().unwrap();
    assert!(
        cleaned.get(),
        "the process was not ended by SIGTERM's default action"
    );
}

fn a_thread_that_does_not_block_the_signal_is_named() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // This thread would take SIGUSR2 from any signalfd.
        // SAFETY: an initialized set with one valid signal.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        tx.send(rustix::thread::gettid().as_raw_nonzero().get())
            .unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let mut lp = new_loop();
    let e = lp.add_signals(&[libc::SIGUSR2], |_, _| {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains(&tid.to_string()),
        "names the thread: {e}"
    );
    // Refused: nothing changed on this thread (SIGUSR2 stays as it was).
    assert!(is_blocked(libc::SIGUSR2).unwrap());
    done_tx.send(()).unwrap();
    t.join().unwrap();
}

fn every_child_is_reaped_though_sigchld_collapses() {
    const CHILDREN: usize = 20;
    let mut lp = new_loop();
    let reaped = Rc::new(Cell::new(0));
    let signals = Rc::new(Cell::new(0));
    let (r, s) = (Rc::clone(&reaped), Rc::clone(&signals));
    lp.add_signals(&[libc::SIGCHLD], move |_, cx| {
        s.set(s.get() + 1);
        // One SIGCHLD may stand for many children: reap every one.
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            r.set(r.get() + 1);
        }
        if r.get() == CHILDREN {
            cx.quit();
        }
    })
    .unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| Command::new("true").spawn().unwrap())
        .collect();
    lp.run().unwrap();
    assert_eq!(reaped.get(), CHILDREN);
    println!("({CHILDREN} children reaped on {} SIGCHLD) ", signals.get());
    drop(children);
}

// The children are reaped by `watch_child`, which `wait` would race.
#[allow(clippy::zombie_processes)]
fn watch_child_reports_each_child_exactly() {
    let mut lp = new_loop();
    let codes = Rc::new(RefCell::new(Vec::new()));
    for code in 0..10 {
        let child = Command::new("sh")
            .args(["-c", &format!("exit {code}")])
            .spawn()
            .unwrap();
        let c = Rc::clone(&codes);
        lp.watch_child(child.id(), move |status, cx| {
            c.borrow_mut().push(status.unwrap().code().unwrap());
            if c.borrow().len() == 10 {
                cx.quit();
            }
        })
        .unwrap();
    }
    let killed = Command::new("sleep").arg("30").spawn().unwrap();
    let done = Rc::new(Cell::new(None));
    let d = Rc::clone(&done);
    lp.watch_child(killed.id(), move |status, _| {
        d.set(Some(status.unwrap()));
    })
    .unwrap();
    lp.run().unwrap();
    let mut codes = codes.borrow().clone();
    codes.sort();
    assert_eq!(codes, (0..10).collect::<Vec<_>>());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(killed.id() as i32, libc::SIGKILL) };
    let start = Instant::now();
    while done.get().is_none() && start.elapsed() < Duration::from_secs(10) {
        lp.run_once(Some(Duration::from_millis(50))).unwrap();
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(done.get().unwrap().signal(), Some(libc::SIGKILL));
}

fn a_child_starts_with_an_empty_mask() {
    let mut lp = new_loop();
    lp.add_signals(&[libc::SIGUSR1], |_, _| {}).unwrap();
    assert!(is_blocked(libc::SIGUSR1).unwrap());
    let out = Command::new("sh")
        .args(["-c", "grep SigBlk /proc/self/status"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let mask = u64::from_str_radix(line.trim().trim_start_matches("SigBlk:").trim(), 16).unwrap();
    assert_eq!(
        mask & (1 << (libc::SIGUSR1 - 1)),
        0,
        "the child inherited a blocked SIGUSR1: {line}"
    );
}

fn two_loops_watching_one_signal_read_it_once() {
    let total = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let (total, tx) = (Arc::clone(&total), tx.clone());
        threads.push(std::thread::spawn(move || {
            let mut lp = new_loop();
            let t = Arc::clone(&total);
            lp.add_signals(&[libc::SIGUSR1], move |_, _| {
                t.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            tx.send(lp.handle()).unwrap();
            lp.run().unwrap();
        }));
    }
    for _ in 0..2 {
        handles.push(rx.recv().unwrap());
    }
    for n in 1..=5 {
        kill_self(libc::SIGUSR1);
        let start = Instant::now();
        while total.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "signal {n} never read"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Time for a second reading, if there were one.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(total.load(Ordering::SeqCst), n, "read by both loops");
    }
    for h in handles {
        h.quit().unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn removing_the_source_and_dropping_the_loop_give_the_mask_back() {
    std::thread::spawn(|| {
        // This thread alone has SIGUSR2 unblocked (every other blocks it).
        // SAFETY: an initialized set with one valid signal.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        assert!(!is_blocked(libc::SIGUSR2).unwrap());
        let mut lp = new_loop();
        let id = lp.add_signals(&[libc::SIGUSR2], |_, _| {}).unwrap();
        let again = lp.add_signals(&[libc::SIGUSR2], |_, _| {}).unwrap();
        assert!(is_blocked(libc::SIGUSR2).unwrap());
        lp.remove_source(id).unwrap();
        assert!(
            is_blocked(libc::SIGUSR2).unwrap(),
            "the other source still wants it"
        );
        lp.remove_source(again).unwrap();
        assert!(
            !is_blocked(libc::SIGUSR2).unwrap(),
            "given back when the last went"
        );
        lp.add_signals(&[libc::SIGUSR2], |_, _| {}).unwrap();
        assert!(is_blocked(libc::SIGUSR2).unwrap());
        drop(lp);
        assert!(
            !is_blocked(libc::SIGUSR2).unwrap(),
            "given back with the loop"
        );
        // And a signal blocked before stays blocked after.
        let mut lp = new_loop();
        assert!(is_blocked(libc::SIGUSR1).unwrap());
        let id = lp.add_signals(&[libc::SIGUSR1], |_, _| {}).unwrap();
        lp.remove_source(id).unwrap();
        assert!(is_blocked(libc::SIGUSR1).unwrap());
    })
    .join()
    .unwrap();
}
