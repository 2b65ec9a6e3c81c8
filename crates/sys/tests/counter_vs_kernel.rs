//! Property: a real non-blocking `EventFd` and `counter::Model` agree on every
//! result, on the counter, and on readiness, for random operation sequences.
//!
//! The operations are reads, writes and kernel-side signals (an AIO
//! completion, one reused AIO context), so the sequences reach `OVERFLOW`,
//! which no write can. At least 1,000 cases per mode; `PROPTEST_CASES`
//! raises it.

mod util;

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rouse_sys::counter::{MAX, Model, Outcome};
use rouse_sys::{EventFd, EventFdFlags};
use util::aio::KernelSignal;
use util::{fdinfo_count, readiness};

#[derive(Clone, Copy, Debug)]
enum Op {
    Read,
    /// Write a fixed value.
    Write(u64),
    /// Write `MAX - count + delta`: around the exact fit at the ceiling.
    WriteToCeiling(i8),
    /// A kernel-side `eventfd_signal()`: adds 1, saturating at `OVERFLOW`.
    KernelSignal,
}

/// The AIO context every case shares (setting one up and tearing it down
/// costs tens of milliseconds), or `None` where the kernel refuses one.
fn kernel_signal() -> Option<&'static KernelSignal> {
    static K: OnceLock<Option<KernelSignal>> = OnceLock::new();
    K.get_or_init(|| match KernelSignal::new() {
        Ok(k) => Some(k),
        Err(e) => {
            println!("kernel-side signals skipped: the kernel refuses an AIO context ({e})");
            None
        }
    })
    .as_ref()
}

fn initval() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => Just(u32::MAX),
        1 => Just(u32::MAX - 1),
        2 => Just(0),
        2 => Just(1),
        3 => any::<u32>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Read),
        2 => Just(Op::Write(0)),
        2 => Just(Op::Write(1)),
        2 => Just(Op::Write(MAX)),
        1 => Just(Op::Write(MAX - 1)),
        2 => Just(Op::Write(u64::MAX)),
        1 => (0u64..1000).prop_map(Op::Write),
        2 => any::<u64>().prop_map(Op::Write),
        4 => (-2i8..=2).prop_map(Op::WriteToCeiling),
        2 => Just(Op::KernelSignal),
    ]
}

fn cases() -> u32 {
    let asked = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    asked.unwrap_or(0).max(1000)
}

fn check(mode: EventFdFlags, init: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let flags = mode | EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC;
    let fd = EventFd::new(init, flags).unwrap();
    let mut model = Model::new(init, flags);
    let (mut written, mut read) = (0u128, 0u128);
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Read => {
                let want = model.read();
                let got = Outcome::from_result(fd.read()).unwrap();
                prop_assert_eq!(got, want, "step {}: {:?}", i, op);
                if let Outcome::Done(v) = got {
                    prop_assert!(v != 0, "read returned 0");
                    read += u128::from(v);
                }
            }
            Op::KernelSignal => {
                let Some(k) = kernel_signal() else { continue };
                k.signal(&fd);
                if model.count() < rouse_sys::counter::OVERFLOW {
                    written += 1;
                }
                model.kernel_signal();
            }
            Op::Write(_) | Op::WriteToCeiling(_) => {
                let n = match *op {
                    Op::Write(n) => n,
                    Op::WriteToCeiling(d) => MAX
                        .wrapping_sub(model.count())
                        .wrapping_add_signed(i64::from(d)),
                    Op::Read | Op::KernelSignal => unreachable!(),
                };
                let want = model.write(n);
                let got = Outcome::from_result(fd.write(n)).unwrap();
                prop_assert_eq!(got, want, "step {}: write {:#x}", i, n);
                if got == Outcome::Done(()) {
                    written += u128::from(n);
                }
            }
        }
        prop_assert_eq!(fdinfo_count(&fd), model.count(), "count after step {}", i);
        let (r, w, e) = readiness(&fd);
        prop_assert_eq!(
            (r, w, e),
            (model.readable(), model.writable(), model.pollerr()),
            "readiness after step {}",
            i
        );
    }
    // Nothing is created or lost: what went in is what came out plus the rest.
    prop_assert_eq!(u128::from(init) + written, read + u128::from(model.count()));
    Ok(())
}

fn run(mode: EventFdFlags) {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (initval(), prop::collection::vec(op(), 1..40));
    runner
        .run(&strategy, |(init, ops)| check(mode, init, &ops))
        .unwrap();
}

#[test]
fn normal_mode_eventfd_matches_the_model() {
    run(EventFdFlags::empty());
}

#[test]
fn semaphore_mode_eventfd_matches_the_model() {
    run(EventFdFlags::SEMAPHORE);
}
