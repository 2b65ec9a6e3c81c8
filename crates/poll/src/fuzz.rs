//! The wake protocol driven step by step by the fuzzer's bytes, as an
//! ordinary function, so that the fuzz target in `fuzz/`, a proptest and the
//! corpus replay in `cargo test` all run the same check.
//!
//! Enabled by the `fuzzing` feature; not part of the stable API.

use rouse_sys::fuzz::Bytes;

use crate::state::{Notify, Pending, Ticket, WakeState};

/// Where a waker is in one `wake()`: mark its slot, notify, make the
/// system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WakerAt {
    SetPending,
    Notify,
    Syscall(Ticket),
}

/// Where the poller is in one `poll()`: park, block in the kernel, unpark,
/// scan the wakers' slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollerAt {
    Park,
    Blocked,
    Unpark,
    Scan,
}

/// The kernel side, as epoll sees an edge-triggered eventfd that is never
/// read: each write queues an edge; a blocked wait returns once an edge is
/// queued (even one queued before it began) and takes them all.
#[derive(Default)]
struct Kernel {
    edges: u32,
    writes: u32,
}

struct Waker {
    slot: usize,
    wakes_left: u32,
    at: WakerAt,
    failures: u32,
}

/// How the run ended, for the caller's own assertions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// Completed `wake()` calls.
    pub wakes: u32,
    /// Wake system calls (kernel writes).
    pub syscalls: u32,
    /// Successful parks (times the poller was allowed to block).
    pub parks: u32,
    /// Whether the poller closed during the run.
    pub closed: bool,
    /// Wake system calls that failed (and were retried).
    pub failed: u32,
}

/// Runs two wakers and one poller over the real [`WakeState`] and
/// [`Pending`] slots, one atomic step at a time, in the order that `data`
/// picks, and panics if:
///
/// * a wake is lost: the poller blocks for good (every waker done, no edge
///   queued) while a slot is still pending;
/// * a wake costs a system call while the poller is not parked;
/// * there are more system calls than parks, or than wakes.
///
/// The first byte sets how many wakes each waker makes (1 to 4 each, which
/// waker uses which slot, both may share one); each later byte picks the
/// next actor to step (0: the poller, 1 and 2: the wakers; 3: the poller
/// closes; 4 and 5: the wakers, with a system call made in that step
/// failing, after which the waker takes its notification back and retries,
/// as a caller of `Waker::wake` that got the error would). Once the bytes
/// run out, the remaining steps run in a fixed order until everything
/// settles.
pub fn wake_protocol(data: &[u8]) -> Run {
    let mut b = Bytes::new(data);
    let shape = b.u8();
    let state = WakeState::new();
    let slots = [Pending::new(), Pending::new()];
    let mut kernel = Kernel::default();
    let mut wakers = [
        Waker {
            slot: 0,
            wakes_left: u32::from(shape & 3) + 1,
            at: WakerAt::SetPending,
            failures: 0,
        },
        Waker {
            slot: usize::from(shape & 16 == 0),
            wakes_left: u32::from(shape >> 2 & 3) + 1,
            at: WakerAt::SetPending,
            failures: 0,
        },
    ];
    let mut poller = PollerAt::Park;
    let mut parked = false;
    let mut closed = false;
    let mut run = Run::default();
    // A generous bound: every actor finishes in far fewer steps.
    for _ in 0..10_000 {
        let wakers_done = wakers.iter().all(|w| w.wakes_left == 0);
        let poller_stuck = poller == PollerAt::Blocked && kernel.edges == 0;
        if wakers_done && (poller_stuck || closed) {
            break;
        }
        let choice = if b.is_empty() {
            // Settle: wakers first, then the poller.
            match wakers.iter().position(|w| w.wakes_left > 0) {
                Some(i) => i as u8 + 1,
                None => 0,
            }
        } else {
            b.u8() % 6
        };
        // 4 and 5 step waker 1 or 2 as 1 and 2 do, but a system call made
        // in that step fails.
        let fail = choice >= 4;
        let choice = if fail { choice - 3 } else { choice };
        match choice {
            1 | 2 if wakers[usize::from(choice - 1)].wakes_left > 0 => {
                let w = &mut wakers[usize::from(choice - 1)];
                match w.at {
                    WakerAt::SetPending => {
                        if slots[w.slot].set() || !state.is_notified_or_closed() {
                            w.at = WakerAt::Notify;
                        } else {
                            w.wakes_left -= 1;
                            run.wakes += 1;
                        }
                    }
                    WakerAt::Notify => match state.notify() {
                        Notify::Syscall(ticket) => {
                            assert!(parked, "a wake system call while the poller is not parked");
                            assert!(!closed, "a wake system call after close");
                            w.at = WakerAt::Syscall(ticket);
                        }
                        Notify::Nothing | Notify::Closed => {
                            if closed {
                                assert_eq!(state.notify(), Notify::Closed);
                            }
                            w.at = WakerAt::SetPending;
                            w.wakes_left -= 1;
                            run.wakes += 1;
                        }
                    },
                    // The system call fails: the notification is taken
                    // back and the waker retries, as a caller of `wake`
                    // that got the error would. Twice at most per waker, so
                    // that every run settles.
                    WakerAt::Syscall(ticket) if fail && w.failures < 2 => {
                        w.failures += 1;
                        run.failed += 1;
                        state.retract(ticket);
                        w.at = WakerAt::SetPending;
                    }
                    WakerAt::Syscall(_) => {
                        kernel.edges += 1;
                        kernel.writes += 1;
                        w.at = WakerAt::SetPending;
                        w.wakes_left -= 1;
                        run.wakes += 1;
                    }
                }
            }
            3 if !closed && poller != PollerAt::Blocked => {
                state.close();
                closed = true;
            }
            _ if closed => {}
            _ => match poller {
                PollerAt::Park => {
                    if state.park() {
                        parked = true;
                        run.parks += 1;
                        poller = PollerAt::Blocked;
                    } else {
                        poller = PollerAt::Unpark;
                    }
                }
                // Blocked with no edge queued: it stays blocked.
                PollerAt::Blocked => {
                    if kernel.edges > 0 {
                        kernel.edges = 0;
                        poller = PollerAt::Unpark;
                    }
                }
                PollerAt::Unpark => {
                    parked = false;
                    poller = if state.unpark() {
                        PollerAt::Scan
                    } else {
                        PollerAt::Park
                    };
                }
                PollerAt::Scan => {
                    for s in &slots {
                        s.take();
                    }
                    poller = PollerAt::Park;
                }
            },
        }
    }
    assert!(
        wakers.iter().all(|w| w.wakes_left == 0),
        "the run did not settle: {:?}",
        wakers
            .iter()
            .map(|w| (w.wakes_left, w.at))
            .collect::<Vec<_>>()
    );
    if !closed {
        assert_eq!(poller, PollerAt::Blocked, "the poller settles blocked");
        for (i, s) in slots.iter().enumerate() {
            assert!(
                !s.is_set(),
                "a lost wake: slot {i} is pending and the poller is blocked for good"
            );
        }
    }
    run.syscalls = kernel.writes;
    run.closed = closed;
    assert!(
        run.syscalls <= run.parks,
        "{} wake system calls for {} parks",
        run.syscalls,
        run.parks
    );
    assert!(run.syscalls <= run.wakes);
    run
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::wake_protocol;

    #[test]
    fn the_wake_protocol_corpus_replays_clean() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/wake_protocol");
        rouse_sys::fuzz::replay(&dir, |data| {
            wake_protocol(data);
        });
    }

    #[test]
    fn a_wake_while_the_poller_runs_costs_nothing_and_one_while_parked_costs_one() {
        // Shape 0: one wake each, on different slots. Waker 1 wakes fully
        // before the poller parks: no syscall, and the park then fails.
        let run = wake_protocol(&[0, 1, 1, 0, 0, 0, 0, 2, 2]);
        assert_eq!(run.wakes, 2);
        // Poller parks first; then waker 1's notify must make the call.
        let run = wake_protocol(&[0, 0, 1, 1, 1]);
        assert_eq!((run.parks >= 1, run.syscalls), (true, 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn no_interleaving_loses_a_wake_or_overspends(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            wake_protocol(&data);
        }
    }
}
