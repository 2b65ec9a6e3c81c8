//! Async tasks on the loop: futures polled on the loop thread, woken at
//! rouse's price.
//!
//! * [`Ctx::spawn_local`] runs a `!Send` future on the loop thread;
//!   [`LoopHandle::spawn`](crate::LoopHandle::spawn) takes a `Send` one
//!   from any thread. Each returns a [`JoinHandle`], itself a future of the
//!   task's result.
//! * A task woken **on the loop thread** is queued in the loop's own list:
//!   no lock shared with other threads, no system call. A task woken **from
//!   another thread** is queued through the loop's task inbox, a queue like
//!   the functor queue with the same coalesced wake: no system call while
//!   the loop is awake, at most one per park, and no allocation. A task
//!   already queued is not queued again.
//! * A task spawned from another thread costs two allocations, both made
//!   by the spawning thread: one for its future, one shared by its join
//!   handle, its wakers and the loop. The loop takes it in without
//!   allocating.
//! * A task that panics unwinds out of [`run`](crate::EventLoop::run) with
//!   its payload, as a functor does; its join handle then says
//!   [`JoinError::Panicked`].
//! * **Dropping a task** ([`JoinHandle::abort`], or the loop dropped) drops
//!   its future, which drops what it waits on: a [`sleep`] cancels its
//!   timer, a [`Readiness`] wait removes its registration, an operation
//!   future cancels its operation (whose buffer the loop keeps until the
//!   kernel is done with it). Nothing the task set up calls back into it
//!   after it is gone.
//!
//! The futures a task awaits ([`sleep`], [`sleep_until`], [`readable`],
//! [`writable`], [`read_at`], [`recv`], [`send`], …) find their loop
//! through the task that polls them: they work inside tasks of a rouse
//! loop, and panic if polled anywhere else.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use rouse_loop::{EventLoop, task};
//!
//! let mut lp = EventLoop::new()?;
//! let job = lp.spawn_local(async {
//!     task::sleep(Duration::from_millis(5)).await;
//!     21 * 2
//! });
//! let handle = lp.handle();
//! lp.spawn_local(async move {
//!     let answer = job.await.unwrap();
//!     assert_eq!(answer, 42);
//!     handle.quit().unwrap();
//! });
//! lp.run()?;
//! # std::io::Result::Ok(())
//! ```

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::handle::Shared;
use crate::{Ctx, Error, LoopHandle};

mod futures;

pub use futures::{
    OpFuture, Readiness, Sleep, accept, connect, read_at, readable, recv, send, sleep, sleep_until,
    writable, write_at,
};

/// Why a task gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// It panicked (the panic unwound out of the loop's `run`).
    Panicked,
    /// It was aborted ([`JoinHandle::abort`]) or its loop was dropped
    /// before it finished.
    Cancelled,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JoinError::Panicked => "the task panicked",
            JoinError::Cancelled => "the task was cancelled",
        })
    }
}

impl std::error::Error for JoinError {}

/// What a task and its join handle share of its result.
struct JoinState<T> {
    result: Option<Result<T, JoinError>>,
    /// The task awaiting the handle.
    waiter: Option<Waker>,
    /// Taken by the handle.
    taken: bool,
}

/// A task's result, as a future; also how to abort it.
///
/// Dropping the handle detaches the task: it runs on, and its result is
/// dropped on the loop thread when it comes. `Send` when the result is.
pub struct JoinHandle<T> {
    cell: JoinCell<T>,
}

/// The cell a join handle shares with its task.
enum JoinCell<T> {
    /// A task spawned from another thread: its cell is its wakers' too.
    Sent(Arc<TaskCell<T, Header>>),
    /// A task spawned on the loop thread, whose result need not be `Send`:
    /// its wakers share only its header.
    Local(Arc<TaskCell<T, Arc<Header>>>),
}

impl<T> JoinCell<T> {
    fn header(&self) -> &Header {
        match self {
            JoinCell::Sent(c) => c.header.borrow(),
            JoinCell::Local(c) => c.header.borrow(),
        }
    }

    fn state(&self) -> &Mutex<JoinState<T>> {
        match self {
            JoinCell::Sent(c) => &c.state,
            JoinCell::Local(c) => &c.state,
        }
    }

    fn detached(&self) -> &AtomicBool {
        match self {
            JoinCell::Sent(c) => &c.detached,
            JoinCell::Local(c) => &c.detached,
        }
    }
}

/// Detaches the task: its result, when it comes, is dropped at once.
impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.cell.detached().store(true, Ordering::Release);
    }
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished (with a result, a panic or a cancel).
    pub fn is_finished(&self) -> bool {
        let st = self.lock();
        st.result.is_some() || st.taken
    }

    /// Drops the task at the loop's next chance, from any thread: its
    /// future is dropped on the loop thread, with what it waits on, and the
    /// handle then says [`JoinError::Cancelled`] (unless it had finished).
    pub fn abort(&self) {
        let header = self.cell.header();
        header.aborted.store(true, Ordering::Release);
        header.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JoinState<T>> {
        self.cell.state().lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.lock();
        match st.result.take() {
            Some(r) => {
                st.taken = true;
                Poll::Ready(r)
            }
            None if st.taken => Poll::Ready(Err(JoinError::Cancelled)),
            None => {
                st.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// A task's identity and wake state.
pub(crate) struct Header {
    id: u64,
    /// The loop, to queue the task from other threads.
    shared: Arc<Shared>,
    /// Queued to be polled (set by a wake, cleared just before a poll).
    queued: Queued,
    aborted: AtomicBool,
}

impl Header {
    /// Queues the task to be polled, unless it is queued already.
    fn wake(&self) {
        if !self.queued.wake() {
            return; // already queued
        }
        if self.shared.in_loop_thread() {
            // The loop's own list: the loop is awake (this thread runs it).
            self.shared
                .local_tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(self.id);
        } else {
            // Through the task inbox: coalesced wakes. A loop that is gone
            // has dropped the task: nothing to do.
            let _ = self.shared.push_task(Remote::Wake(self.id));
        }
    }
}

/// What reaches a loop's task inbox from other threads.
pub(crate) enum Remote {
    /// A task spawned by [`LoopHandle::spawn`].
    Spawn(SentTask),
    /// Task `id`, woken.
    Wake(u64),
}

/// A task's "queued to be polled" flag. A wake queues the task only if it
/// was not queued already; the loop clears the flag just before it polls
/// the task, so that a wake during the poll queues it again. Both sides
/// change it with one read-modify-write (acquire and release), so that
/// what a waker published before waking is seen by the poll that follows,
/// whether the waker queued the task or found it queued. The loom model
/// below checks that no wake is lost.
pub(crate) struct Queued(crate::sync::atomic::AtomicBool);

impl Queued {
    pub(crate) fn new(queued: bool) -> Queued {
        Queued(crate::sync::atomic::AtomicBool::new(queued))
    }

    /// A wake: whether the caller must queue the task.
    pub(crate) fn wake(&self) -> bool {
        !self.0.swap(true, crate::sync::atomic::Ordering::AcqRel)
    }

    /// Just before a poll.
    pub(crate) fn claim(&self) {
        self.0.swap(false, crate::sync::atomic::Ordering::AcqRel);
    }
}

/// What a task's join handle and its loop share: its header (inline, or
/// shared with its wakers) and its result.
struct TaskCell<T, H> {
    header: H,
    state: Mutex<JoinState<T>>,
    /// The join handle is gone: the result has no reader, and is dropped
    /// where it is made, without the lock.
    detached: AtomicBool,
}

impl<T, H> TaskCell<T, H> {
    fn new(header: H) -> Self {
        TaskCell {
            header,
            state: Mutex::new(JoinState {
                result: None,
                waiter: None,
                taken: false,
            }),
            detached: AtomicBool::new(false),
        }
    }

    /// Hands `result` to the join handle, unless it has one or is gone.
    fn finish(&self, result: Result<T, JoinError>) {
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.result.is_some() || st.taken {
            return;
        }
        st.result = Some(result);
        if let Some(w) = st.waiter.take() {
            drop(st);
            w.wake();
        }
    }
}

/// The loop's view of a task's cell.
trait Settle {
    fn header(&self) -> &Header;

    /// Settles the join handle with `why`, unless it has a result.
    fn settle(&self, why: JoinError);
}

impl<T, H: Borrow<Header>> Settle for TaskCell<T, H> {
    fn header(&self) -> &Header {
        self.header.borrow()
    }

    fn settle(&self, why: JoinError) {
        self.finish(Err(why));
    }
}

/// A task spawned from another thread is woken through its cell: one
/// allocation for its header, its result and its wakers.
impl<T: Send + 'static> Wake for TaskCell<T, Header> {
    fn wake(self: Arc<Self>) {
        self.header.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.header.wake();
    }
}

/// A task spawned on the loop thread is woken through its header.
impl Wake for Header {
    fn wake(self: Arc<Self>) {
        Header::wake(&self);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        Header::wake(self);
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A task spawned from another thread, on its way to the loop: made whole
/// there, so that the loop allocates nothing to take it in.
pub(crate) struct SentTask {
    /// The task's future, which settles its join handle when it finishes.
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
    cell: Arc<dyn Settle + Send + Sync>,
    waker: Waker,
}

/// A task as the loop holds it.
struct Task {
    /// The task's future, which settles its join handle when it finishes.
    future: BoxFuture,
    cell: Arc<dyn Settle>,
    waker: Waker,
}

/// The loop's tasks.
#[derive(Default)]
pub(crate) struct Tasks {
    tasks: std::collections::HashMap<
        u64,
        Task,
        std::hash::BuildHasherDefault<rouse_poll::op::IdHasher>,
    >,
    /// Tasks spawned and not yet polled: kept out of the table until their
    /// first poll, which most finish in, so that a burst of spawns costs the
    /// table nothing.
    new: VecDeque<Task>,
    /// How many tasks at the front of `new` this task phase polls (those
    /// spawned while it runs wait for the next one).
    new_turns: usize,
    /// The woken tasks this task phase polls (taken from
    /// `Shared::local_tasks` as it starts); what a panic leaves here, and
    /// in `new_turns`, is polled first in the next phase.
    running: VecDeque<u64>,
    /// The task inbox's vector, swapped in and out (see `Queue::take`).
    inbox: Vec<Remote>,
    /// The loop's side of the futures' requests (see [`Requests`]).
    requests: Rc<RefCell<Requests>>,
}

impl Tasks {
    /// Tasks that exist: polled and pending, or not yet polled.
    fn live(&self) -> usize {
        self.tasks.len() + self.new.len()
    }
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks").field("live", &self.live()).finish()
    }
}

impl Ctx {
    /// Runs `future` on the loop thread; it need not be `Send`. Returns
    /// its [`JoinHandle`]. The task is first polled in this iteration's task
    /// phase (or the next one's, if that has passed).
    pub fn spawn_local<F>(&mut self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let (task, handle) = local_task(&self.shared, future);
        self.insert_task(task);
        handle
    }

    /// Takes a task in and queues its first poll.
    fn insert_task(&mut self, task: Task) {
        self.tasks.new.push_back(task);
    }

    /// Takes what other threads put in the task inbox: new tasks and wakes,
    /// queued to be polled in this iteration's task phase.
    pub(crate) fn take_task_inbox(&mut self) {
        self.shared.task_inbox.take(&mut self.tasks.inbox, None);
        if self.tasks.inbox.is_empty() {
            return;
        }
        let mut ready = self
            .shared
            .local_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for item in self.tasks.inbox.drain(..) {
            match item {
                Remote::Wake(id) => ready.push_back(id),
                Remote::Spawn(sent) => self.tasks.new.push_back(sent.into()),
            }
        }
    }

    /// Tasks that exist (spawned, not yet finished or dropped).
    pub fn task_count(&self) -> usize {
        self.tasks.live()
    }

    /// Whether tasks are queued to be polled (so that the loop must not
    /// block).
    pub(crate) fn tasks_waiting(&self) -> bool {
        !self.tasks.running.is_empty()
            || !self.tasks.new.is_empty()
            || !self
                .shared
                .local_tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Polls the tasks queued on the loop thread (those queued while this
    /// runs wait for the next iteration, so that a task that wakes itself
    /// cannot starve the rest of the loop).
    pub(crate) fn run_tasks(&mut self) {
        if self.tasks.new_turns == 0 && self.tasks.running.is_empty() {
            self.tasks.new_turns = self.tasks.new.len();
            self.tasks.running.extend(
                self.shared
                    .local_tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain(..),
            );
            if self.tasks.new_turns == 0 && self.tasks.running.is_empty() {
                return;
            }
        }
        let _current = self.enter_tasks();
        while self.tasks.new_turns > 0 {
            self.tasks.new_turns -= 1;
            let task = self.tasks.new.pop_front().expect("counted task");
            self.poll_task(task);
        }
        while let Some(id) = self.tasks.running.pop_front() {
            // A task woken and finished or dropped since is gone.
            if let Some(task) = self.tasks.tasks.remove(&id) {
                self.poll_task(task);
            }
        }
    }

    /// Polls a task once (with the loop entered:
    /// [`enter_tasks`](Ctx::enter_tasks)); it goes back to the table if it
    /// is pending.
    fn poll_task(&mut self, mut task: Task) {
        task.cell.header().queued.claim();
        if task.cell.header().aborted.load(Ordering::Acquire) {
            self.drop_task(task);
            return;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            task.future
                .as_mut()
                .poll(&mut Context::from_waker(&task.waker))
        }));
        self.apply_requests();
        match outcome {
            Ok(Poll::Pending) => {
                self.tasks.tasks.insert(task.cell.header().id, task);
            }
            Ok(Poll::Ready(())) => {}
            Err(payload) => {
                task.cell.settle(JoinError::Panicked);
                drop(task);
                self.apply_requests();
                resume_unwind(payload);
            }
        }
    }

    /// Makes this loop the one whose tasks are being polled on this thread
    /// (so that futures polled or dropped reach it) until the guard goes.
    fn enter_tasks(&self) -> Entered {
        let current = Current {
            requests: Rc::clone(&self.tasks.requests),
            shared: Arc::clone(&self.shared),
        };
        Entered(CURRENT.with(|c| c.replace(Some(current))))
    }

    /// Drops a task (with the loop entered): its join handle is settled as
    /// cancelled, and its future goes, with what it waits on (whose drops
    /// ask the loop to cancel timers, registrations and operations).
    fn drop_task(&mut self, task: Task) {
        task.cell.settle(JoinError::Cancelled);
        drop(task);
        self.apply_requests();
    }

    /// Drops every task (the loop is going): their futures are dropped on
    /// the loop thread. Tasks spawned from other threads and still in the
    /// inbox go too; the inbox is closed, so that later spawns and wakes
    /// fail with [`Error::LoopGone`].
    pub(crate) fn drop_tasks(&mut self) {
        for item in self.shared.task_inbox.close() {
            if let Remote::Spawn(sent) = item {
                self.tasks.new.push_back(sent.into());
            }
        }
        let _current = self.enter_tasks();
        // Until none is left: a future's drop may spawn another.
        loop {
            let mut all: Vec<Task> = self.tasks.tasks.drain().map(|(_, t)| t).collect();
            all.extend(self.tasks.new.drain(..));
            self.tasks.new_turns = 0;
            self.tasks.running.clear();
            if all.is_empty() {
                return;
            }
            for t in all {
                self.drop_task(t);
            }
        }
    }

    /// Carries out what futures asked for: timers, registrations,
    /// operations, and their cancellations.
    fn apply_requests(&mut self) {
        loop {
            let batch = std::mem::take(&mut *self.tasks.requests.borrow_mut());
            if batch.0.is_empty() {
                return;
            }
            for r in batch.0 {
                r(self);
            }
        }
    }
}

/// The loop entered by [`Ctx::enter_tasks`]; restores the one before it
/// when dropped (unwinding included).
struct Entered(Option<Current>);

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| c.replace(previous));
    }
}

thread_local! {
    /// The requests of the loop whose task is being polled on this thread.
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Settles a join state: keeps `result` for the handle, unless the handle
/// has a result already or has taken one.
/// The loop whose task is being polled on this thread: its requests, and
/// what it shares with its handles (for tasks spawned from tasks).
#[derive(Clone)]
struct Current {
    requests: Rc<RefCell<Requests>>,
    shared: Arc<Shared>,
}

/// Work for the loop that futures ask for while they are polled (they
/// cannot reach `&mut Ctx` themselves): done right after the poll.
#[derive(Default)]
struct Requests(Vec<Request>);

/// One thing a future asks of its loop.
type Request = Box<dyn FnOnce(&mut Ctx)>;

/// Asks the loop of the task being polled to run `f` with its context
/// right after this poll.
///
/// # Panics
///
/// Outside a task of a rouse loop.
fn request(f: impl FnOnce(&mut Ctx) + 'static) {
    current().requests.borrow_mut().0.push(Box::new(f));
}

/// The loop of the task being polled.
///
/// # Panics
///
/// Outside a task of a rouse loop.
fn current() -> Current {
    CURRENT.with(|c| {
        c.borrow()
            .clone()
            .expect("rouse_loop::task futures must be polled by a task of a rouse loop")
    })
}

/// Spawns `future` on the loop of the task that calls this: what a task
/// does to start another (a connection's, say). It need not be `Send`.
///
/// # Panics
///
/// Outside a task of a rouse loop.
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let (task, handle) = local_task(&current().shared, future);
    request(move |cx| cx.insert_task(task));
    handle
}

/// Whether a task of a rouse loop is being polled on this thread.
fn in_task() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

impl LoopHandle {
    /// Runs `future` on the loop thread, from any thread: it is queued
    /// through the loop's task inbox, as its wakes from other threads are
    /// (a queue like the functor queue, with the same coalesced wake).
    ///
    /// # Errors
    ///
    /// [`Error::LoopGone`] if the loop has been dropped (the future is
    /// dropped).
    pub fn spawn<F>(&self, future: F) -> Result<JoinHandle<F::Output>, Error>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, handle) = sent_task(&self.shared, future);
        self.shared.push_task(Remote::Spawn(task))?;
        Ok(handle)
    }
}

impl From<SentTask> for Task {
    fn from(t: SentTask) -> Task {
        Task {
            future: t.future,
            cell: t.cell,
            waker: t.waker,
        }
    }
}

/// A new task's header, with its id from the loop's count; queued for its
/// first poll by whoever takes the task in (wakes meanwhile are that
/// poll's).
fn header(shared: &Arc<Shared>) -> Header {
    Header {
        id: shared.next_task.fetch_add(1, Ordering::Relaxed),
        shared: Arc::clone(shared),
        queued: Queued::new(true),
        aborted: AtomicBool::new(false),
    }
}

/// `future`, then its output handed to `cell`'s join handle: the future a
/// task's box holds.
async fn settling<F: Future, H>(future: F, cell: Arc<TaskCell<F::Output, H>>) {
    let out = future.await;
    cell.finish(Ok(out));
}

/// A task for the loop thread, and its join handle: its wakers share its
/// header, its handle its result (which need not be `Send`).
fn local_task<F>(shared: &Arc<Shared>, future: F) -> (Task, JoinHandle<F::Output>)
where
    F: Future + 'static,
    F::Output: 'static,
{
    let header = Arc::new(header(shared));
    let cell = Arc::new(TaskCell::new(Arc::clone(&header)));
    let task = Task {
        future: Box::pin(settling(future, Arc::clone(&cell))),
        cell: Arc::clone(&cell) as Arc<dyn Settle>,
        waker: Waker::from(header),
    };
    (
        task,
        JoinHandle {
            cell: JoinCell::Local(cell),
        },
    )
}

/// A task made on another thread, and its join handle: two allocations,
/// its cell (header, result, wakers) and its future.
fn sent_task<F>(shared: &Arc<Shared>, future: F) -> (SentTask, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let cell = Arc::new(TaskCell::new(header(shared)));
    let task = SentTask {
        future: Box::pin(settling(future, Arc::clone(&cell))),
        cell: Arc::clone(&cell) as Arc<dyn Settle + Send + Sync>,
        waker: Waker::from(Arc::clone(&cell)),
    };
    (
        task,
        JoinHandle {
            cell: JoinCell::Sent(cell),
        },
    )
}

#[cfg(all(test, loom))]
mod loom_models {
    //! `cargo xtask loom`, or
    //! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p rouse-loop --release --lib loom_`

    use super::Queued;
    use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use loom::sync::{Arc, Mutex};
    use std::collections::VecDeque;

    /// A task queued once, woken from another thread (which publishes a
    /// value first) while the loop takes it from the queue and polls it:
    /// whatever the interleaving, a poll sees the value, and the task is
    /// queued at most twice (its first queueing and this wake).
    #[test]
    fn loom_a_task_woken_during_its_poll_is_polled_again_and_sees_the_wake() {
        loom::model(|| {
            let queued = Arc::new(Queued::new(true));
            let queue = Arc::new(Mutex::new(VecDeque::from([1u32])));
            let data = Arc::new(AtomicUsize::new(0));
            let pushes = Arc::new(AtomicUsize::new(1));
            let waker = {
                let (queued, queue, data, pushes) = (
                    Arc::clone(&queued),
                    Arc::clone(&queue),
                    Arc::clone(&data),
                    Arc::clone(&pushes),
                );
                loom::thread::spawn(move || {
                    data.store(1, Relaxed);
                    if queued.wake() {
                        queue.lock().unwrap().push_back(1);
                        pushes.fetch_add(1, Relaxed);
                    }
                })
            };
            // The loop: take the queue and poll what it holds.
            let mut seen = 0;
            let poll = |seen: &mut usize| {
                let taken = queue.lock().unwrap().pop_front();
                if taken.is_some() {
                    queued.claim();
                    *seen = data.load(Relaxed);
                }
            };
            poll(&mut seen);
            waker.join().unwrap();
            // The loop's next iterations poll whatever was queued.
            poll(&mut seen);
            poll(&mut seen);
            assert_eq!(seen, 1, "the wake was lost");
            assert!(pushes.load(Relaxed) <= 2);
        });
    }
}
