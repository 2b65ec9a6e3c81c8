//! Blocking work on worker threads, completed back on the loop thread.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::event_loop::SPARE;
use crate::{Ctx, Error, LoopHandle};

/// A job, given the pool's handle to deliver its completion with.
type Job = Box<dyn FnOnce(&LoopHandle) + Send>;

/// A pool of worker threads whose results are delivered to a loop.
///
/// [`spawn`](WorkerPool::spawn) runs `work` on a worker and then `on_done`
/// with its result on the loop thread. Completions travel through the loop's
/// functor queue, so they share wakes when they can: a completion that
/// arrives while an earlier one is still queued, or while the loop is busy,
/// costs no wake at all, so completions that come faster than the loop
/// drains them cost a few wakes per thousand. A completion that finds the
/// loop idle, with nothing queued, must wake it: jobs that finish one at a
/// time, far apart, cost one wake (and one system call, if the loop sleeps)
/// each. The pool can be shared between threads (`Sync`), and dropping it
/// finishes the jobs already queued, then joins the workers.
///
/// A job that panics does not take its worker with it: the panic is caught
/// on the worker and resumed on the loop thread, where it unwinds out of
/// [`run`](crate::EventLoop::run) like a panic in any callback (its
/// `on_done` is dropped). A worker is woken only when one is idle, so a
/// burst of spawns onto busy workers makes no system call either.
///
/// # Examples
///
/// ```
/// use rouse_loop::{Ctx, EventLoop, WorkerPool};
///
/// let mut lp = EventLoop::new()?;
/// let pool = WorkerPool::new(&lp.handle(), 2)?;
/// pool.spawn(|| (1..=10u64).product::<u64>(), |n, cx: &mut Ctx| {
///     assert_eq!(n, 3_628_800);
///     cx.quit();
/// })?;
/// lp.run()?;
/// # Ok::<(), rouse_loop::Error>(())
/// ```
pub struct WorkerPool {
    shared: Arc<PoolShared>,
    threads: Vec<JoinHandle<()>>,
}

struct PoolShared {
    jobs: Mutex<Jobs>,
    ready: Condvar,
    handle: LoopHandle,
}

struct Jobs {
    queue: VecDeque<Job>,
    stopping: bool,
    /// Workers waiting on `ready`.
    idle: usize,
    /// Wake-ups sent to idle workers and not yet taken: a spawn signals
    /// only while `idle > signalled`, so a burst onto one idle worker makes
    /// one wake-up call, not one per job.
    signalled: usize,
}

impl WorkerPool {
    /// Starts `threads` workers (at least one) delivering to the loop of
    /// `handle`.
    ///
    /// # Errors
    ///
    /// The OS error if a thread cannot be spawned.
    pub fn new(handle: &LoopHandle, threads: usize) -> Result<WorkerPool, Error> {
        let shared = Arc::new(PoolShared {
            jobs: Mutex::new(Jobs {
                queue: VecDeque::new(),
                stopping: false,
                idle: 0,
                signalled: 0,
            }),
            ready: Condvar::new(),
            handle: handle.clone(),
        });
        let mut pool = WorkerPool {
            shared,
            threads: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let shared = Arc::clone(&pool.shared);
            let t = std::thread::Builder::new()
                .name(format!("rouse-worker-{i}"))
                .spawn(move || shared.work())?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Runs `work` on a worker thread, then `on_done(result)` on the loop
    /// thread. Callable from any thread, so `on_done` must be `Send`; from
    /// the loop thread, [`spawn_local`](WorkerPool::spawn_local) takes one
    /// that need not be.
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has already been dropped (nothing is
    /// run). If the loop is dropped while the job runs, `on_done` is dropped
    /// with the result.
    pub fn spawn<R, W, D>(&self, work: W, on_done: D) -> Result<(), Error>
    where
        R: Send + 'static,
        W: FnOnce() -> R + Send + 'static,
        D: FnOnce(R, &mut Ctx) + Send + 'static,
    {
        if self.shared.handle.shared.queue_closed() {
            return Err(Error::LoopGone);
        }
        self.enqueue(Box::new(move |handle: &LoopHandle| {
            // The loop may be gone by now; then the completion is dropped.
            let _ = match catch_unwind(AssertUnwindSafe(work)) {
                Ok(result) => handle.queue_in_loop(move |cx| on_done(result, cx)),
                Err(panic) => handle.queue_in_loop(move |_| resume_unwind(panic)),
            };
        }));
        Ok(())
    }

    /// [`spawn`](WorkerPool::spawn) from the loop thread, with a completion
    /// that stays there and so need not be `Send` (it may hold an `Rc`).
    /// Only the result crosses threads.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput) if
    /// `cx` is not the context of this pool's loop.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use rouse_loop::{EventLoop, WorkerPool};
    ///
    /// let mut lp = EventLoop::new()?;
    /// let pool = WorkerPool::new(&lp.handle(), 2)?;
    /// let total = Rc::new(Cell::new(0));
    /// let t = Rc::clone(&total);
    /// pool.spawn_local(&mut lp, || 6 * 7, move |n, cx| {
    ///     t.set(t.get() + n);
    ///     cx.quit();
    /// })?;
    /// lp.run()?;
    /// assert_eq!(total.get(), 42);
    /// # Ok::<(), rouse_loop::Error>(())
    /// ```
    pub fn spawn_local<R, W, D>(&self, cx: &mut Ctx, work: W, on_done: D) -> Result<(), Error>
    where
        R: Send + 'static,
        W: FnOnce() -> R + Send + 'static,
        D: FnOnce(R, &mut Ctx) + 'static,
    {
        if !cx.is_loop_of(&self.shared.handle) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "spawn_local: this context is not the loop this pool delivers to",
            )));
        }
        let job = cx.await_completion(Box::new(move |value, cx| {
            let value = value
                .downcast::<R>()
                .unwrap_or_else(|_| unreachable!("a job's result has the job's type"));
            on_done(*value, cx)
        }));
        self.enqueue(Box::new(move |handle: &LoopHandle| {
            let result =
                catch_unwind(AssertUnwindSafe(work)).map(|r| Box::new(r) as Box<dyn Any + Send>);
            // The loop may be gone by now; then the result is dropped, and
            // the completion with the loop.
            let _ = handle.queue_in_loop(move |cx| cx.complete(job, result));
        }));
        Ok(())
    }

    fn enqueue(&self, job: Job) {
        let signal = {
            let mut jobs = self.shared.lock();
            jobs.queue.push_back(job);
            let signal = jobs.idle > jobs.signalled;
            jobs.signalled += usize::from(signal);
            signal
        };
        if signal {
            self.shared.ready.notify_one();
        }
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        // Jobs run outside the lock, so a panicking job cannot poison it.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        loop {
            let job = {
                let mut jobs = self.lock();
                loop {
                    if let Some(job) = jobs.queue.pop_front() {
                        break job;
                    }
                    if jobs.stopping {
                        return;
                    }
                    jobs.idle += 1;
                    jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                    jobs.idle -= 1;
                    // Taken whether this wake-up was the signal or spurious:
                    // either way this worker now looks at the queue, and
                    // `signalled` never exceeds `idle`.
                    jobs.signalled = jobs.signalled.saturating_sub(1);
                }
            };
            job(&self.handle);
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            // Jobs' panics are caught, so a worker ends only by `stopping`.
            let _ = t.join();
        }
    }
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// A job's completion waiting on the loop thread for its result.
pub(crate) type JobDone = Box<dyn FnOnce(Box<dyn Any + Send>, &mut Ctx)>;

impl Ctx {
    /// Keeps a job's completion until its result comes back.
    pub(crate) fn await_completion(&mut self, done: JobDone) -> u64 {
        self.next_job += 1;
        self.completions.insert(self.next_job, done);
        self.next_job
    }

    /// Runs the completion of job `job` with its result (if the job panicked,
    /// drops it and resumes the panic here).
    pub(crate) fn complete(&mut self, job: u64, result: std::thread::Result<Box<dyn Any + Send>>) {
        let done = self
            .completions
            .remove(&job)
            .expect("each job completes once");
        if self.completions.is_empty() && self.completions.capacity() > SPARE {
            self.completions = HashMap::new();
        }
        match result {
            Ok(value) => done(value, self),
            Err(panic) => {
                drop(done);
                resume_unwind(panic);
            }
        }
    }
}
