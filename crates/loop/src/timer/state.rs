//! The state of every timer, shared by the loop and its handles, so that a
//! cancel is exact from any thread.
//!
//! Each timer slot has one 32-bit word: a generation (new each time the
//! slot is reused, so that a stale id never touches a newer timer), whether
//! the timer repeats, and its state:
//!
//! ```text
//!            alloc              fire (loop)
//!   VACANT ---------> PENDING -------------> RUNNING --(once: done)--> VACANT
//!                       |   ^                 |   |
//!                       |   +--(repeats: run  |   | cancel, if it repeats
//!               cancel  |       again)--------+   v
//!                       +--------------------> CANCELLED --(loop frees)--> VACANT
//! ```
//!
//! A cancel and the loop's decision to fire are each one compare-and-swap
//! on the word, so exactly one of them wins: a cancel that returned `true`
//! was before the firing, and the timer never runs; `false` means it has
//! run (or is running, for a timer that fires once), was cancelled
//! already, or never existed. The loom models at the end check every
//! interleaving of a cancel with the loop's fire and reschedule.
//!
//! Words live in chunks that double in size and never move, so that any
//! thread can read one while the owner adds chunks. Slots come in two
//! kinds with separate numbering: those made on the loop thread, whose free
//! list only the loop touches, and those a handle makes before the loop
//! has seen the timer, allocated under a lock (the handle's path already
//! takes the functor queue's lock).

use std::sync::{Mutex, OnceLock};

use crate::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*};

const STATE: u32 = 0b11;
const VACANT: u32 = 0;
const PENDING: u32 = 1;
const RUNNING: u32 = 2;
const CANCELLED: u32 = 3;
const REPEATS: u32 = 0b100;
/// One generation, above the state and the repeat bit.
const GEN: u32 = 0b1000;

fn gen_of(word: u32) -> u32 {
    word & !(STATE | REPEATS)
}

/// A new pending timer's word, a generation after `old`'s.
pub(crate) fn pending_after(old: u32, repeats: bool) -> u32 {
    gen_of(old).wrapping_add(GEN) | if repeats { REPEATS } else { 0 } | PENDING
}

/// The generation part of a word, as ids carry it.
pub(crate) fn generation(word: u32) -> u32 {
    gen_of(word)
}

/// Cancels the timer of generation `g`: true if it will not run (again).
pub(crate) fn try_cancel(word: &AtomicU32, g: u32) -> bool {
    let mut w = word.load(Acquire);
    loop {
        if gen_of(w) != g {
            return false;
        }
        let cancellable = match w & STATE {
            PENDING => true,
            // A repeating timer whose callback is running: no further runs.
            RUNNING => w & REPEATS != 0,
            _ => false,
        };
        if !cancellable {
            return false;
        }
        match word.compare_exchange_weak(w, (w & !STATE) | CANCELLED, AcqRel, Acquire) {
            Ok(_) => return true,
            Err(now) => w = now,
        }
    }
}

/// The loop, about to run the timer of generation `g`: true if it may (it
/// is now running), false if it was cancelled.
pub(crate) fn try_fire(word: &AtomicU32, g: u32) -> bool {
    let w = word.load(Relaxed);
    debug_assert_eq!(gen_of(w), g);
    w & STATE == PENDING
        && word
            .compare_exchange(w, (w & !STATE) | RUNNING, AcqRel, Acquire)
            .is_ok()
}

/// A repeating timer's callback returned: true if it is pending again,
/// false if it was cancelled while it ran.
pub(crate) fn try_rearm(word: &AtomicU32, g: u32) -> bool {
    let w = word.load(Relaxed);
    debug_assert_eq!(gen_of(w), g);
    w & STATE == RUNNING
        && word
            .compare_exchange(w, (w & !STATE) | PENDING, AcqRel, Acquire)
            .is_ok()
}

/// Whether the timer of generation `g` is cancelled (and not yet freed).
pub(crate) fn is_cancelled(word: &AtomicU32, g: u32) -> bool {
    let w = word.load(Acquire);
    gen_of(w) == g && w & STATE == CANCELLED
}

/// Frees the slot: its word keeps the generation, so stale ids stay stale.
pub(crate) fn vacate(word: &AtomicU32) {
    let w = word.load(Relaxed);
    word.store(gen_of(w) | VACANT, Release);
}

/// Words for up to 2^31 slots, in chunks of 64, 128, 256, … that never
/// move.
#[derive(Default)]
pub(crate) struct Words {
    chunks: [OnceLock<Box<[AtomicU32]>>; 26],
}

fn locate(slot: u32) -> (usize, usize) {
    let q = u64::from(slot) / 64 + 1;
    let k = 63 - q.leading_zeros() as usize;
    (k, (u64::from(slot) - 64 * ((1 << k) - 1)) as usize)
}

impl Words {
    /// The word of `slot`, if its chunk exists.
    pub(crate) fn get(&self, slot: u32) -> Option<&AtomicU32> {
        let (k, i) = locate(slot);
        self.chunks.get(k)?.get().map(|c| &c[i])
    }

    /// The word of `slot`, making its chunk if needed.
    pub(crate) fn get_or_grow(&self, slot: u32) -> &AtomicU32 {
        let (k, i) = locate(slot);
        &self.chunks[k].get_or_init(|| (0..64usize << k).map(|_| AtomicU32::new(0)).collect())[i]
    }
}

/// What the loop shares with its handles about timers.
pub(crate) struct TimerStates {
    /// Which loop these are, unique in the process: every id carries it, so
    /// that an id of one loop means nothing to another.
    pub(crate) owner: u64,
    /// Slots made on the loop thread.
    pub(crate) local: Words,
    /// Slots made by handles.
    pub(crate) remote: Words,
    remote_slots: Mutex<RemoteSlots>,
    /// Ids cancelled off the loop's own path, whose memory the loop frees at
    /// its next iteration.
    reaped: Mutex<Vec<(u32, u32)>>,
    reap_pending: crate::sync::atomic::AtomicBool,
    /// Timers that may still run: one more when a timer is made, one less
    /// when a cancel succeeds or a timer that fires once has started.
    pub(crate) pending: AtomicUsize,
}

impl Default for TimerStates {
    fn default() -> Self {
        // Not a loom atomic: it only numbers loops.
        static NEXT_OWNER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        TimerStates {
            owner: NEXT_OWNER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            local: Words::default(),
            remote: Words::default(),
            remote_slots: Mutex::default(),
            reaped: Mutex::default(),
            reap_pending: Default::default(),
            pending: AtomicUsize::new(0),
        }
    }
}

#[derive(Default)]
struct RemoteSlots {
    free: Vec<u32>,
    next: u32,
}

impl TimerStates {
    /// A slot for a timer a handle makes: its index and new word.
    pub(crate) fn alloc_remote(&self, repeats: bool) -> (u32, u32) {
        let mut slots = self.remote_slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.free.pop().unwrap_or_else(|| {
            slots.next += 1;
            slots.next - 1
        });
        let word = self.remote.get_or_grow(slot);
        let w = pending_after(word.load(Relaxed), repeats);
        word.store(w, Release);
        self.pending.fetch_add(1, Relaxed);
        (slot, w)
    }

    /// Cancels the timer whose word is `word`, of generation `g`: true if it
    /// will not run (again), and then it no longer counts as pending.
    pub(crate) fn cancel(&self, word: &AtomicU32, g: u32) -> bool {
        let done = try_cancel(word, g);
        if done {
            self.pending.fetch_sub(1, Relaxed);
        }
        done
    }

    /// Frees a handle-made slot.
    pub(crate) fn free_remote(&self, slot: u32) {
        if let Some(word) = self.remote.get(slot) {
            vacate(word);
        }
        let mut slots = self.remote_slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.free.push(slot);
        // Every handle-made timer is gone: forget the numbering, so that the
        // loop's slab for them can shrink back.
        if slots.free.len() as u32 == slots.next {
            slots.free = Vec::new();
            slots.next = 0;
        }
    }

    /// Notes a cancel whose timer's memory the loop should free.
    pub(crate) fn reap_later(&self, slot: u32, g: u32) {
        self.reaped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((slot, g));
        self.reap_pending.store(true, Release);
    }

    /// Whether cancels have been noted since the last take: one load.
    #[inline]
    pub(crate) fn any_reaped(&self) -> bool {
        self.reap_pending.load(Relaxed)
    }

    /// The cancels noted since the last call.
    pub(crate) fn take_reaped(&self, out: &mut Vec<(u32, u32)>) {
        if self.reap_pending.swap(false, Acquire) {
            let mut r = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *r, out);
            if r.capacity() > 1024 {
                *r = Vec::new();
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! `cargo xtask loom`
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU32;

    use super::*;

    /// A timer that fires once, cancelled from another thread while the
    /// loop fires it: exactly one of the two wins.
    #[test]
    fn loom_a_cancel_and_a_firing_never_both_win() {
        loom::model(|| {
            let word = Arc::new(AtomicU32::new(pending_after(0, false)));
            let g = generation(word.load(Relaxed));
            let canceller = {
                let word = Arc::clone(&word);
                loom::thread::spawn(move || try_cancel(&word, g))
            };
            let fired = try_fire(&word, g);
            if fired {
                vacate(&word);
            }
            let cancelled = canceller.join().unwrap();
            assert!(fired != cancelled, "fired {fired}, cancelled {cancelled}");
        });
    }

    /// A repeating timer: the loop fires it and re-arms it twice while
    /// another thread cancels. A cancel that returns true is followed by no
    /// further firing.
    #[test]
    fn loom_a_repeating_timer_never_fires_after_its_cancel_returned_true() {
        loom::model(|| {
            let word = Arc::new(AtomicU32::new(pending_after(0, true)));
            let g = generation(word.load(Relaxed));
            let cancelled_at = Arc::new(AtomicU32::new(0));
            let fired_count = Arc::new(AtomicU32::new(0));
            let canceller = {
                let (word, cancelled_at, fired_count) = (
                    Arc::clone(&word),
                    Arc::clone(&cancelled_at),
                    Arc::clone(&fired_count),
                );
                loom::thread::spawn(move || {
                    if try_cancel(&word, g) {
                        // Firings begun by the time the cancel returned.
                        cancelled_at.store(fired_count.load(SeqCst) + 1, SeqCst);
                    }
                })
            };
            for _ in 0..2 {
                if !try_fire(&word, g) {
                    break;
                }
                fired_count.fetch_add(1, SeqCst);
                if !try_rearm(&word, g) {
                    break;
                }
            }
            canceller.join().unwrap();
            let at = cancelled_at.load(SeqCst);
            if at != 0 {
                assert!(
                    fired_count.load(SeqCst) < at + 1,
                    "fired after the cancel returned"
                );
                assert!(is_cancelled(&word, g));
            }
        });
    }

    /// A stale id (an older generation) never cancels a newer timer.
    #[test]
    fn loom_a_stale_id_never_cancels_the_slot_s_next_timer() {
        loom::model(|| {
            let word = Arc::new(AtomicU32::new(pending_after(0, false)));
            let old = generation(word.load(Relaxed));
            assert!(try_fire(&word, old));
            vacate(&word);
            let canceller = {
                let word = Arc::clone(&word);
                loom::thread::spawn(move || try_cancel(&word, old))
            };
            word.store(pending_after(word.load(Relaxed), false), Release);
            let new = generation(word.load(Relaxed));
            assert!(!canceller.join().unwrap());
            assert!(try_fire(&word, new));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_chunks_that_double() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        assert_eq!(locate(u32::MAX >> 1).0, 25);
        let w = Words::default();
        assert!(w.get(1000).is_none());
        w.get_or_grow(1000).store(7, Relaxed);
        assert_eq!(w.get(1000).unwrap().load(Relaxed), 7);
    }

    #[test]
    fn cancel_wins_or_fire_wins_and_generations_keep_ids_apart() {
        let word = AtomicU32::new(0);
        word.store(pending_after(0, false), Relaxed);
        let g = generation(word.load(Relaxed));
        assert!(try_cancel(&word, g));
        assert!(!try_cancel(&word, g));
        assert!(!try_fire(&word, g));
        assert!(is_cancelled(&word, g));
        vacate(&word);
        word.store(pending_after(word.load(Relaxed), true), Relaxed);
        let g2 = generation(word.load(Relaxed));
        assert_ne!(g, g2);
        assert!(!try_cancel(&word, g), "a stale id");
        assert!(try_fire(&word, g2));
        assert!(try_rearm(&word, g2));
        assert!(try_fire(&word, g2));
        assert!(try_cancel(&word, g2), "a repeating timer, while it runs");
        assert!(!try_rearm(&word, g2));
    }
}
