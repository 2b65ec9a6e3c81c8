//! Functors: closures queued to run on the loop thread, from other threads
//! (through the shared queue) or from the loop thread itself.

use std::sync::atomic::Ordering;

use crate::Ctx;
use crate::event_loop::{FUNCTOR_BATCH, LocalFunctor, SPARE};

impl Ctx {
    /// Calls to the waker made on behalf of queued functors (only the first
    /// functor queued after each drain makes one).
    pub fn functor_wakes(&self) -> u64 {
        self.shared.wake_calls.load(Ordering::Relaxed)
    }

    /// Queues `f` for the next functor phase (this one's, if functors are
    /// running now, is already closed). `f` stays on the loop thread, so it
    /// need not be `Send`; queuing it costs no lock and no wake.
    pub fn queue_in_loop(&mut self, f: impl FnOnce(&mut Ctx) + 'static) {
        self.local.push(Box::new(f));
        self.shared.held.fetch_add(1, Ordering::Relaxed);
    }

    /// Functors waiting to run: queued here, taken from other threads, or
    /// still in the shared queue.
    pub fn pending_functors(&self) -> usize {
        self.backlog.len() + self.local.len() + self.shared.queue.len()
    }

    pub(crate) fn run_functors(&mut self) {
        // Always: this iteration's poll may have consumed the wake of what
        // is queued, so it must not wait behind a long backlog.
        self.take_queue();
        for _ in 0..FUNCTOR_BATCH {
            let Some(f) = self.backlog.pop_front() else {
                break;
            };
            // Counted before it runs: a panic in it leaves the count to the
            // next phase, and `held` overcounts meanwhile, never under.
            self.ran += 1;
            f(self);
        }
        self.shared
            .held
            .fetch_sub(std::mem::take(&mut self.ran), Ordering::Relaxed);
        // A drained burst gives its memory back.
        if self.backlog.is_empty() && self.backlog.capacity() > SPARE {
            self.backlog.shrink_to(SPARE);
        }
    }

    /// Moves everything queued, from other threads and then from this one,
    /// to the end of the backlog.
    pub(crate) fn take_queue(&mut self) {
        self.queue_unseen = false;
        // Functors run before a panic ended the last phase.
        if self.ran > 0 {
            self.shared
                .held
                .fetch_sub(std::mem::take(&mut self.ran), Ordering::Relaxed);
        }
        self.shared
            .queue
            .take(&mut self.spare, Some(&self.shared.held));
        self.take_task_inbox();
        let taken = self.spare.len();
        self.backlog
            .extend(self.spare.drain(..).map(|f| f as LocalFunctor));
        self.backlog.extend(self.local.drain(..));
        if self.local.capacity() > SPARE {
            self.local.shrink_to(SPARE);
        }
        // The vector swapped out of the queue keeps its room for the next
        // burst, unless this take was small: then at most `SPARE` is kept,
        // and the queue's own vector is trimmed at the next take.
        if self.spare.capacity() > SPARE && taken < SPARE / 4 {
            self.spare = Vec::with_capacity(SPARE);
        }
    }
}
