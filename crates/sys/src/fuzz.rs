//! The checks that the fuzz targets in `fuzz/` run, as ordinary functions
//! of the fuzzer's bytes, so that the same logic replays the committed
//! corpus in `cargo test` on stable (see the tests below).
//!
//! Enabled by the `fuzzing` feature; not part of the stable API.

use std::io;
use std::os::fd::AsFd;

use rustix::event::{PollFd, PollFlags, poll};

use crate::counter::{MAX, Model, Outcome};
use crate::wake::Inner;
use crate::{EventFd, EventFdFlags, WakeFd, WakeKind};

/// Reads the fuzzer's bytes as a stream of choices; an exhausted stream
/// reads as zeros.
pub struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes(data)
    }

    /// The next byte, or 0 once the data is used up.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next 8 bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| v << 8 | u64::from(self.u8()))
    }

    /// Whether the data is used up.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// (readable, writable, error) as `poll(2)` reports them now.
fn readiness(fd: impl AsFd) -> (bool, bool, bool) {
    let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::OUT)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).expect("poll(2) on a live fd");
    let r = fds[0].revents();
    (
        r.contains(PollFlags::IN),
        r.contains(PollFlags::OUT),
        r.contains(PollFlags::ERR),
    )
}

/// The counter as `/proc/self/fdinfo` reports it.
fn fdinfo_count(fd: impl AsFd) -> u64 {
    use std::os::fd::AsRawFd;
    let raw = fd.as_fd().as_raw_fd();
    let info =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).expect("fdinfo of a live fd");
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("eventfd-count:"))
        .expect("an eventfd's fdinfo has eventfd-count");
    u64::from_str_radix(line.trim(), 16).expect("eventfd-count is hex")
}

/// A write amount, biased to the values where the counter's rules change.
fn amount(b: &mut Bytes<'_>, count: u64) -> u64 {
    match b.u8() % 8 {
        0 => 0,
        1 => 1,
        2 => MAX,
        3 => u64::MAX,
        4 => MAX - u64::from(b.u8()),
        5 => u64::from(b.u8()),
        6 => b.u64(),
        // Straddles the room left below the ceiling.
        _ => (MAX - count).wrapping_add_signed(i64::from(b.u8() as i8 % 3)),
    }
}

/// Applies the operations that `data` encodes to a real non-blocking
/// eventfd and to [`Model`], and panics at the first difference: a result
/// (value, `WouldBlock`, `InvalidInput`), the readiness after a step, or
/// the final count.
///
/// The first byte picks the mode (bit 0: semaphore) and the initial value's
/// kind; then each operation is a byte (even: read; odd: write) followed by
/// its amount.
pub fn counter(data: &[u8]) {
    let mut b = Bytes(data);
    let mode = b.u8();
    let mut flags = EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC;
    if mode & 1 != 0 {
        flags |= EventFdFlags::SEMAPHORE;
    }
    let init = match (mode >> 1) % 4 {
        0 => 0,
        1 => 1,
        2 => u32::MAX,
        _ => u32::from(b.u8()) << 8 | u32::from(b.u8()),
    };
    let fd = EventFd::new(init, flags).expect("creating an eventfd");
    let mut model = Model::new(init, flags);
    let (mut written, mut read) = (u128::from(init), 0u128);
    let mut step = 0;
    while !b.is_empty() && step < 256 {
        step += 1;
        if b.u8() % 2 == 0 {
            let want = model.read();
            let got = Outcome::from_result(fd.read()).expect("read: an error the model lacks");
            assert_eq!(got, want, "step {step}: read");
            if let Outcome::Done(v) = got {
                assert_ne!(v, 0, "step {step}: a read returned 0");
                read += u128::from(v);
            }
        } else {
            let n = amount(&mut b, model.count());
            let want = model.write(n);
            let got = Outcome::from_result(fd.write(n)).expect("write: an error the model lacks");
            assert_eq!(got, want, "step {step}: write {n:#x}");
            if got == Outcome::Done(()) {
                written += u128::from(n);
            }
        }
        assert_eq!(
            readiness(&fd),
            (model.readable(), model.writable(), model.pollerr()),
            "step {step}: readiness (readable, writable, error) with count {:#x}",
            model.count()
        );
    }
    assert_eq!(fdinfo_count(&fd), model.count(), "the final count");
    // Nothing created or lost: what went in came out, or is still there.
    assert_eq!(written, read + u128::from(model.count()));
}

/// Applies the `wake`/`consume` sequence that `data` encodes to a
/// [`WakeFd`] of the kind its first byte picks, and panics if a wake is ever
/// lost (after any wake the fd stays readable until a consume, and that
/// consume reports it) or a consume blocks or reports a wake that was never
/// made.
///
/// Besides wake and consume, operations fill the pipe to capacity, or push
/// the eventfd's counter to the ceiling, behind the `WakeFd`'s back: a wake
/// on a full object must still be a wake.
pub fn wake_fd(data: &[u8]) {
    let mut b = Bytes(data);
    let kind = if b.u8() % 2 == 0 {
        WakeKind::EventFd
    } else {
        WakeKind::Pipe
    };
    let fd = WakeFd::with_kind(kind).expect("creating a wake fd");
    let mut pending = false;
    let mut step = 0;
    while !b.is_empty() && step < 256 {
        step += 1;
        match b.u8() % 5 {
            0 | 1 => {
                fd.wake().expect("wake");
                pending = true;
            }
            2 | 3 => {
                // The fd is non-blocking: a consume that would block fails
                // with WouldBlock, which `consume` turns into `false`.
                let got = fd.consume().expect("consume never fails or blocks");
                assert_eq!(got, pending, "step {step}: consume reported {got}");
                pending = false;
            }
            _ => {
                saturate(&fd).expect("filling the object");
                pending = true;
            }
        }
        let (readable, _, _) = readiness(&fd);
        assert_eq!(readable, pending, "step {step}: readable");
    }
}

/// Fills a pipe to capacity or puts an eventfd's counter at the ceiling.
fn saturate(fd: &WakeFd) -> io::Result<()> {
    match &fd.inner {
        Inner::EventFd(e) => {
            let room = MAX - fdinfo_count(e);
            if room > 0 {
                e.write(room)?;
            }
            Ok(())
        }
        Inner::Pipe(p) => {
            let chunk = [0u8; 4096];
            loop {
                match rustix::io::write(p.write_end(), &chunk) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::AGAIN) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Runs `check` on every file of the corpus directory `dir` (a crate's
/// `corpus/TARGET`: the seeds the fuzzer grew, and any finding kept there as
/// a regression), and returns how many there were.
///
/// # Panics
///
/// Names the first file that `check` panics on, and panics when there is no
/// file at all, so that a moved corpus cannot pass as an empty one.
pub fn replay(dir: &std::path::Path, check: fn(&[u8])) -> usize {
    let mut n = 0;
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable corpus directory").path();
        let data = std::fs::read(&path).expect("a readable corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "an empty corpus at {}", dir.display());
    n
}

#[cfg(test)]
mod tests {
    //! Replays every file of the committed corpora (`corpus/counter`,
    //! `corpus/wake_fd` in this crate, findings kept as regressions
    //! included) through the same checks.

    use std::path::Path;

    fn replay(target: &str, check: fn(&[u8])) {
        super::replay(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target),
            check,
        );
    }

    #[test]
    fn the_counter_corpus_replays_clean() {
        replay("counter", super::counter);
    }

    #[test]
    fn the_wake_fd_corpus_replays_clean() {
        replay("wake_fd", super::wake_fd);
    }

    #[test]
    fn a_straddling_write_sequence_matches() {
        // normal mode, init 1; write straddle(+1) (refused), write 1, read.
        super::counter(&[2, 1, 7, 1, 1, 1, 0]);
        super::counter(&[3, 1, 2, 0, 0, 1, 3]);
    }
}
