//! The loop's side of timers: adding and cancelling them through `Ctx`,
//! and running those that are due.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Task, TimerId, next_period, period_nanos};
use crate::Ctx;
use crate::event_loop::{EveryFn, OnceFn, SPARE};
use crate::handle::{SendTask, check_period};

impl Ctx {
    /// Runs `f` on the loop thread once `delay` has passed. A delay past what
    /// [`Instant`] can hold means never (the timer can still be cancelled).
    pub fn run_after(&mut self, delay: Duration, f: impl FnOnce(&mut Ctx) + 'static) -> TimerId {
        let deadline = self.timers.nanos(Instant::now().checked_add(delay));
        self.timers.insert(deadline, Task::Once(Box::new(f)))
    }

    /// Runs `f` on the loop thread at `deadline`, never before.
    pub fn run_at(&mut self, deadline: Instant, f: impl FnOnce(&mut Ctx) + 'static) -> TimerId {
        let deadline = self.timers.nanos(Some(deadline));
        self.timers.insert(deadline, Task::Once(Box::new(f)))
    }

    /// Runs `f` after `first`, then every `period`. A timer overdue by more
    /// than a period fires once and is rescheduled a period later, rather
    /// than catching up in a burst. A time past what [`Instant`] can hold
    /// means never.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a zero `period`, which would run
    /// the timer in every iteration.
    pub fn run_every(
        &mut self,
        first: Duration,
        period: Duration,
        f: impl FnMut(&mut Ctx) + 'static,
    ) -> io::Result<TimerId> {
        check_period(period)?;
        let deadline = self.timers.nanos(Instant::now().checked_add(first));
        let f: EveryFn = Box::new(f);
        let period = period_nanos(period);
        Ok(self.timers.insert(deadline, Task::Every { period, f }))
    }

    /// Cancels a timer, at once: returns whether it was stopped before it ran
    /// (for a repeating timer, before its next run; one may cancel itself
    /// from its callback). Works for ids made here and by handles.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    /// The number of timers that may still run (see
    /// [`LoopHandle::pending_timers`](crate::LoopHandle::pending_timers)).
    pub fn timer_count(&self) -> usize {
        self.shared.timers.pending.load(Ordering::Relaxed)
    }

    /// Adds a timer whose id a handle made.
    pub(crate) fn insert_remote_timer(
        &mut self,
        id: TimerId,
        deadline: Option<Instant>,
        task: SendTask,
    ) {
        let deadline = self.timers.nanos(deadline);
        let task = match task {
            Task::Once(f) => Task::Once(f as OnceFn),
            Task::Every { period, f } => Task::Every {
                period,
                f: f as EveryFn,
            },
        };
        self.timers.insert_remote(id, deadline, task);
    }

    pub(crate) fn run_timers(&mut self) {
        if self.shared.timers.pending.load(Ordering::Relaxed) == 0 {
            self.timers.shrink();
            return;
        }
        let now = Instant::now();
        // Only timers due now: one added by a timer callback waits for the
        // next iteration even if it is due already. Each is started (which
        // a cancel that came first prevents) only when its turn comes.
        let mut due = std::mem::take(&mut self.due);
        while let Some(t) = self.timers.pop_due(now) {
            due.push(t);
        }
        let mut batch = due.drain(..);
        while let Some((id, deadline, task)) = batch.next() {
            if !self.timers.start(id) {
                continue; // cancelled since it was taken
            }
            let outcome = match task {
                Task::Once(f) => {
                    self.timers.finish(id);
                    catch_unwind(AssertUnwindSafe(|| f(self)))
                }
                Task::Every { period, mut f } => {
                    let outcome = catch_unwind(AssertUnwindSafe(|| f(self)));
                    let now = self.timers.nanos(Some(Instant::now()));
                    let next = next_period(deadline, period, now);
                    self.timers.reschedule(id, next, Task::Every { period, f });
                    outcome
                }
            };
            if let Err(payload) = outcome {
                // The rest stay scheduled, as they were.
                for (id, deadline, task) in batch {
                    self.timers.put_back(id, deadline, task);
                }
                self.due = due;
                resume_unwind(payload);
            }
        }
        drop(batch);
        // A burst of due timers gives its room back, as a functor burst does.
        if due.capacity() > SPARE {
            due.shrink_to(SPARE);
        }
        self.due = due;
        self.timers.shrink();
    }
}
