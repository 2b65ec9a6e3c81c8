//! `EventFd` against the kernel: one test per rule of the counter, in both
//! normal and semaphore mode.

mod util;

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rouse_sys::counter::MAX;
use rouse_sys::{EventFd, EventFdFlags};
use util::{fdinfo_count, readiness};

/// How long a call that should block is watched before it is released. A
/// call that wrongly blocks fails later; one that wrongly returns is caught
/// here unless the machine stalls for this long.
const BLOCKED_WINDOW: Duration = Duration::from_millis(100);

const MODES: [EventFdFlags; 2] = [EventFdFlags::empty(), EventFdFlags::SEMAPHORE];

fn nonblocking(initval: u32, mode: EventFdFlags) -> EventFd {
    EventFd::new(
        initval,
        mode | EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC,
    )
    .unwrap()
}

fn blocking(initval: u32, mode: EventFdFlags) -> Arc<EventFd> {
    Arc::new(EventFd::new(initval, mode | EventFdFlags::CLOEXEC).unwrap())
}

/// Fills the counter to `count` with non-blocking writes (the mode of an
/// eventfd is per open file, so this is done before the test's own calls).
fn fill(fd: &EventFd, count: u64) {
    let base = fdinfo_count(fd);
    fd.write(count - base).unwrap();
    assert_eq!(fdinfo_count(fd), count);
}

#[test]
fn writes_add_to_the_counter() {
    for mode in MODES {
        let fd = nonblocking(3, mode);
        fd.write(4).unwrap();
        fd.write(0).unwrap();
        fd.write(10).unwrap();
        assert_eq!(fdinfo_count(&fd), 17, "{mode:?}");
    }
}

#[test]
fn read_returns_the_whole_counter_and_zeroes_it() {
    let fd = nonblocking(5, EventFdFlags::empty());
    fd.write(6).unwrap();
    assert_eq!(fd.read().unwrap(), 11);
    assert_eq!(fdinfo_count(&fd), 0);
}

#[test]
fn semaphore_read_returns_one_and_decrements() {
    let fd = nonblocking(3, EventFdFlags::SEMAPHORE);
    for left in (0..3).rev() {
        assert_eq!(fd.read().unwrap(), 1);
        assert_eq!(fdinfo_count(&fd), left);
    }
    assert_eq!(fd.read().unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn initial_value_can_be_u32_max_and_the_ceiling_is_reached_from_it() {
    for mode in MODES {
        let fd = nonblocking(u32::MAX, mode);
        assert_eq!(fdinfo_count(&fd), u64::from(u32::MAX));
        fd.write(MAX - u64::from(u32::MAX)).unwrap();
        assert_eq!(fdinfo_count(&fd), MAX, "{mode:?}");
    }
}

#[test]
fn reading_zero_without_blocking_is_would_block() {
    for mode in MODES {
        let fd = nonblocking(0, mode);
        let err = fd.read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{mode:?}");
        assert_eq!(fdinfo_count(&fd), 0);
    }
}

/// Readers blocked on `fd`: `n` threads, each sending what its `read`
/// returned, checked to be still blocked after [`BLOCKED_WINDOW`].
struct BlockedReaders {
    values: mpsc::Receiver<u64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BlockedReaders {
    fn start(fd: &Arc<EventFd>, n: usize) -> BlockedReaders {
        let (tx, values) = mpsc::channel();
        let threads = (0..n)
            .map(|_| {
                let (fd, tx) = (Arc::clone(fd), tx.clone());
                std::thread::spawn(move || tx.send(fd.read().unwrap()).unwrap())
            })
            .collect();
        let readers = BlockedReaders { values, threads };
        readers.assert_still_blocked("a read at 0 returned");
        readers
    }

    fn next(&self) -> u64 {
        self.values.recv().unwrap()
    }

    fn assert_still_blocked(&self, what: &str) {
        assert!(self.values.recv_timeout(BLOCKED_WINDOW).is_err(), "{what}");
    }

    fn join(self) {
        self.threads.into_iter().for_each(|t| t.join().unwrap());
    }
}

#[test]
fn blocking_read_at_zero_waits_for_a_write_from_another_thread() {
    for mode in MODES {
        let fd = blocking(0, mode);
        let reader = BlockedReaders::start(&fd, 1);
        fd.write(3).unwrap();
        let expected = if mode.contains(EventFdFlags::SEMAPHORE) {
            1
        } else {
            3
        };
        assert_eq!(reader.next(), expected, "{mode:?}");
        reader.join();
        assert_eq!(fdinfo_count(&*fd), 3 - expected);
    }
}

#[test]
fn a_write_of_zero_does_not_release_a_blocked_read() {
    for mode in MODES {
        let fd = blocking(0, mode);
        let reader = BlockedReaders::start(&fd, 1);
        fd.write(0).unwrap();
        reader.assert_still_blocked(&format!("write(0) released a read, {mode:?}"));
        fd.write(1).unwrap();
        assert_eq!(reader.next(), 1);
        reader.join();
    }
}

#[test]
fn each_write_releases_one_of_several_blocked_readers_with_the_whole_count() {
    let fd = blocking(0, EventFdFlags::empty());
    let writes = [5u64, 7, 11];
    let readers = BlockedReaders::start(&fd, writes.len());
    for n in writes {
        fd.write(n).unwrap();
        // One reader takes the whole count; the others keep sleeping.
        assert_eq!(readers.next(), n);
        readers.assert_still_blocked(&format!("write({n}) released a second reader"));
        assert_eq!(fdinfo_count(&*fd), 0);
    }
    readers.join();
}

#[test]
fn each_unit_of_a_semaphore_releases_one_blocked_reader() {
    let fd = blocking(0, EventFdFlags::SEMAPHORE);
    let readers = BlockedReaders::start(&fd, 4);
    // Three units release exactly three readers, with 1 each.
    fd.write(3).unwrap();
    for _ in 0..3 {
        assert_eq!(readers.next(), 1);
    }
    readers.assert_still_blocked("three units released a fourth reader");
    assert_eq!(fdinfo_count(&*fd), 0);
    fd.write(1).unwrap();
    assert_eq!(readers.next(), 1);
    readers.join();
}

#[test]
fn writing_up_to_the_ceiling_succeeds_and_past_it_would_block() {
    for mode in MODES {
        let fd = nonblocking(0, mode);
        fd.write(MAX - 1).unwrap();
        assert_eq!(fd.write(2).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert_eq!(
            fdinfo_count(&fd),
            MAX - 1,
            "a refused write changed the counter"
        );
        fd.write(1).unwrap();
        assert_eq!(fdinfo_count(&fd), MAX);
        assert_eq!(fd.write(1).unwrap_err().kind(), ErrorKind::WouldBlock);
        // Adding nothing still fits.
        fd.write(0).unwrap();
        assert_eq!(fdinfo_count(&fd), MAX, "{mode:?}");
    }
}

#[test]
fn blocking_write_past_the_ceiling_waits_for_a_read() {
    let fd = blocking(0, EventFdFlags::empty());
    fill(&fd, MAX);
    let (tx, rx) = mpsc::channel();
    let writer = {
        let fd = Arc::clone(&fd);
        std::thread::spawn(move || tx.send(fd.write(5)).unwrap())
    };
    assert!(
        rx.recv_timeout(BLOCKED_WINDOW).is_err(),
        "write at the ceiling returned"
    );
    assert_eq!(fd.read().unwrap(), MAX);
    rx.recv().unwrap().unwrap();
    writer.join().unwrap();
    assert_eq!(fdinfo_count(&*fd), 5);
}

#[test]
fn semaphore_blocking_write_waits_until_enough_reads_make_room() {
    let fd = blocking(0, EventFdFlags::SEMAPHORE);
    fill(&fd, MAX);
    let (tx, rx) = mpsc::channel();
    let writer = {
        let fd = Arc::clone(&fd);
        std::thread::spawn(move || tx.send(fd.write(2)).unwrap())
    };
    assert!(
        rx.recv_timeout(BLOCKED_WINDOW).is_err(),
        "write at the ceiling returned"
    );
    // One read leaves room for 1 only: the write of 2 keeps waiting.
    assert_eq!(fd.read().unwrap(), 1);
    assert!(
        rx.recv_timeout(BLOCKED_WINDOW).is_err(),
        "write of 2 fitted in room for 1"
    );
    assert_eq!(fd.read().unwrap(), 1);
    rx.recv().unwrap().unwrap();
    writer.join().unwrap();
    assert_eq!(fdinfo_count(&*fd), MAX);
}

#[test]
fn writing_u64_max_is_invalid_input_and_changes_nothing() {
    for mode in MODES {
        let fd = nonblocking(7, mode);
        let err = fd.write(u64::MAX).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{mode:?}");
        // The kernel's own error, so that code matching on errno works.
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::INVAL.raw_os_error())
        );
        assert_eq!(fdinfo_count(&fd), 7);
        // On a blocking eventfd at the ceiling it is refused at once too.
        let fd = blocking(0, mode);
        fill(&fd, MAX);
        assert_eq!(
            fd.write(u64::MAX).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(fdinfo_count(&*fd), MAX);
    }
}

#[test]
fn the_kernel_refuses_u64_max_the_same_way_the_wrapper_does() {
    let fd = nonblocking(0, EventFdFlags::empty());
    let err = rustix::io::write(&fd, &u64::MAX.to_ne_bytes()).unwrap_err();
    assert_eq!(err, rustix::io::Errno::INVAL);
}

#[test]
fn readable_above_zero_and_writable_while_one_more_fits() {
    for mode in MODES {
        let fd = nonblocking(0, mode);
        assert_eq!(readiness(&fd), (false, true, false), "at 0, {mode:?}");
        fd.write(1).unwrap();
        assert_eq!(readiness(&fd), (true, true, false), "at 1");
        fd.write(MAX - 2).unwrap();
        assert_eq!(readiness(&fd), (true, true, false), "at MAX - 1");
        fd.write(1).unwrap();
        assert_eq!(readiness(&fd), (true, false, false), "at MAX");
    }
}

#[test]
fn flags_reach_the_descriptor() {
    use rustix::fs::OFlags;
    use rustix::io::FdFlags;
    for cloexec in [false, true] {
        for nonblock in [false, true] {
            let mut flags = EventFdFlags::empty();
            flags.set(EventFdFlags::CLOEXEC, cloexec);
            flags.set(EventFdFlags::NONBLOCK, nonblock);
            let fd = EventFd::new(0, flags).unwrap();
            let fd_flags = rustix::io::fcntl_getfd(&fd).unwrap();
            assert_eq!(fd_flags.contains(FdFlags::CLOEXEC), cloexec);
            let status = rustix::fs::fcntl_getfl(&fd).unwrap();
            assert_eq!(status.contains(OFlags::NONBLOCK), nonblock);
        }
    }
}

#[test]
fn an_eventfd_is_adopted_with_its_counter() {
    let owned: OwnedFd = nonblocking(9, EventFdFlags::SEMAPHORE).into();
    let fd = EventFd::try_from(owned).unwrap();
    assert_eq!(fd.read().unwrap(), 1);
    assert_eq!(fdinfo_count(&fd), 8);
}

#[test]
fn adopting_something_else_is_invalid_input_and_gives_the_fd_back() {
    let (read, _write) = std::io::pipe().unwrap();
    let err = EventFd::from_owned(read.into()).unwrap_err();
    assert_eq!(err.error().kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("not an eventfd"), "{err}");
    let back = err.into_fd();
    assert!(
        rustix::fs::fstat(&back).is_ok(),
        "the refused fd was closed"
    );

    // An anonymous inode that is not an eventfd.
    let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).unwrap();
    let err = EventFd::from_owned(epoll).unwrap_err();
    assert_eq!(err.error().kind(), ErrorKind::InvalidInput, "{err}");

    let file = std::fs::File::open("/proc/self/status").unwrap();
    let err = EventFd::from_owned(file.into()).unwrap_err();
    assert_eq!(err.error().kind(), ErrorKind::InvalidInput, "{err}");
}

#[test]
fn interrupted_reads_and_writes_are_retried() {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SIGNALS: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn on_signal(_: libc::c_int) {
        SIGNALS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: installs a handler that only touches an atomic, without
    // SA_RESTART, so that a blocked read(2) returns EINTR to the wrapper.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }

    let fd = blocking(0, EventFdFlags::empty());
    let full = blocking(0, EventFdFlags::empty());
    fill(&full, MAX);
    let (tx, rx) = mpsc::channel();
    let reader = {
        let (fd, tx) = (Arc::clone(&fd), tx.clone());
        std::thread::spawn(move || tx.send(fd.read().map(|_| ())).unwrap())
    };
    let writer = {
        let full = Arc::clone(&full);
        std::thread::spawn(move || tx.send(full.write(1)).unwrap())
    };
    std::thread::sleep(BLOCKED_WINDOW);
    for _ in 0..3 {
        for t in [reader.as_pthread_t(), writer.as_pthread_t()] {
            // SAFETY: both threads are alive until joined below.
            assert_eq!(unsafe { libc::pthread_kill(t, libc::SIGUSR1) }, 0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        SIGNALS.load(Ordering::Relaxed) >= 6,
        "signals were not delivered"
    );
    assert!(
        rx.try_recv().is_err(),
        "an interrupted call returned instead of retrying"
    );
    fd.write(1).unwrap();
    full.read().unwrap();
    rx.recv().unwrap().unwrap();
    rx.recv().unwrap().unwrap();
    reader.join().unwrap();
    writer.join().unwrap();
}
