//! The futures a task awaits: [`sleep`] and [`sleep_until`] on the loop's
//! timers, [`readable`] and [`writable`] on its poller, and the operations
//! ([`read_at`], [`recv`], [`send`], …). Each finds its loop through the
//! task polling it (`request`), and undoes what it set up when dropped.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rouse_poll::Interest;
use rouse_poll::op::SharedFd;

use super::{in_task, request};
use crate::{Ctx, LoopHandle, OpId, SourceId, TimerId};

/// Sleeps until `deadline`, on the loop's timers. Dropping it cancels the
/// timer.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        state: Rc::new(SleepState::default()),
    }
}

/// Sleeps for `duration`, on the loop's timers (never less). Dropping it
/// cancels the timer.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(
        Instant::now()
            .checked_add(duration)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 100)),
    )
}

/// The future of [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    state: Rc<SleepState>,
}

#[derive(Default)]
struct SleepState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    requested: Cell<bool>,
    timer: Cell<Option<TimerId>>,
    handle: RefCell<Option<LoopHandle>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let st = &self.state;
        if st.fired.get() {
            return Poll::Ready(());
        }
        *st.waker.borrow_mut() = Some(cx.waker().clone());
        if !st.requested.replace(true) {
            let (state, deadline) = (Rc::clone(st), self.deadline);
            request(move |cx| {
                let s = Rc::clone(&state);
                let id = cx.run_at(deadline, move |_| {
                    s.fired.set(true);
                    if let Some(w) = s.waker.borrow_mut().take() {
                        w.wake();
                    }
                });
                state.timer.set(Some(id));
                *state.handle.borrow_mut() = Some(cx.handle());
            });
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(id), Some(h)) = (self.state.timer.get(), self.state.handle.borrow().as_ref()) {
            // Exact, from anywhere: the timer will not run.
            let _ = h.cancel(id);
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Waits until `fd` is readable (level-triggered: at once if it is). The
/// fd is registered with the loop while the future waits, and removed when
/// it completes or is dropped.
pub fn readable(fd: &SharedFd) -> Readiness {
    Readiness::new(fd, Interest::READABLE)
}

/// Waits until `fd` is writable; as [`readable`].
pub fn writable(fd: &SharedFd) -> Readiness {
    Readiness::new(fd, Interest::WRITABLE)
}

/// The future of [`readable`] and [`writable`]: the readiness seen.
#[must_use = "futures do nothing unless awaited"]
pub struct Readiness {
    fd: SharedFd,
    interest: Interest,
    state: Rc<ReadyState>,
}

#[derive(Default)]
struct ReadyState {
    ready: Cell<Option<crate::Ready>>,
    error: RefCell<Option<io::Error>>,
    waker: RefCell<Option<Waker>>,
    source: Cell<Option<SourceId>>,
    requested: Cell<bool>,
}

impl Readiness {
    fn new(fd: &SharedFd, interest: Interest) -> Readiness {
        Readiness {
            fd: fd.clone(),
            interest,
            state: Rc::new(ReadyState::default()),
        }
    }
}

impl Future for Readiness {
    type Output = io::Result<crate::Ready>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let st = &self.state;
        if let Some(e) = st.error.borrow_mut().take() {
            return Poll::Ready(Err(e));
        }
        if let Some(r) = st.ready.get() {
            return Poll::Ready(Ok(r));
        }
        *st.waker.borrow_mut() = Some(cx.waker().clone());
        if !st.requested.replace(true) {
            let (state, fd, interest) = (Rc::clone(st), self.fd.clone(), self.interest);
            request(move |cx| {
                let s = Rc::clone(&state);
                let added = cx.add_source(fd, interest, move |_fd, ready, cx| {
                    s.ready.set(Some(ready));
                    if let Some(me) = cx.current_source() {
                        let _ = cx.remove_source(me);
                    }
                    s.source.set(None);
                    if let Some(w) = s.waker.borrow_mut().take() {
                        w.wake();
                    }
                });
                match added {
                    Ok(id) => state.source.set(Some(id)),
                    Err(e) => {
                        *state.error.borrow_mut() = Some(e);
                        if let Some(w) = state.waker.borrow_mut().take() {
                            w.wake();
                        }
                    }
                }
            });
        }
        Poll::Pending
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        if let Some(id) = self.state.source.take() {
            // Dropped in its task's poll, or with its task: the loop is
            // reachable. (Elsewhere it cannot have registered anything.)
            if in_task() {
                request(move |cx| {
                    let _ = cx.remove_source(id);
                });
            }
        }
    }
}

/// An operation as a future: its result and buffer. Dropping it cancels
/// the operation; the loop keeps the buffer until the kernel is done.
#[must_use = "futures do nothing unless awaited"]
pub struct OpFuture<T> {
    state: Rc<OpState<T>>,
    start: Option<Start<T>>,
}

/// Submits an operation for its future.
type Start<T> = Box<dyn FnOnce(&mut Ctx, Rc<OpState<T>>)>;

struct OpState<T> {
    result: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
    id: Cell<Option<OpId>>,
}

impl<T: 'static> OpFuture<T> {
    fn new(start: impl FnOnce(&mut Ctx, Rc<OpState<T>>) + 'static) -> OpFuture<T> {
        OpFuture {
            state: Rc::new(OpState {
                result: RefCell::new(None),
                waker: RefCell::new(None),
                id: Cell::new(None),
            }),
            start: Some(Box::new(start)),
        }
    }
}

impl<T: 'static> Future for OpFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(r) = self.state.result.borrow_mut().take() {
            return Poll::Ready(r);
        }
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        if let Some(start) = self.start.take() {
            let state = Rc::clone(&self.state);
            request(move |cx| start(cx, state));
        }
        Poll::Pending
    }
}

impl<T> Drop for OpFuture<T> {
    fn drop(&mut self) {
        if self.state.result.borrow().is_some() {
            return;
        }
        if let Some(id) = self.state.id.get() {
            if in_task() {
                request(move |cx| {
                    let _ = cx.cancel_op(id);
                });
            }
        }
    }
}

/// Delivers an operation's outcome to its future, if the future is still
/// there (dropped, it lets the outcome go: its buffer is freed now that
/// the kernel is done with it).
fn deliver<T>(state: &Rc<OpState<T>>, value: T) {
    *state.result.borrow_mut() = Some(value);
    if let Some(w) = state.waker.borrow_mut().take() {
        w.wake();
    }
}

fn started<T>(state: &Rc<OpState<T>>, id: io::Result<OpId>, fail: impl FnOnce(io::Error) -> T) {
    match id {
        Ok(id) => state.id.set(Some(id)),
        Err(e) => deliver(state, fail(e)),
    }
}

/// [`Ctx::read_at`] as a future: the bytes read, and the buffer.
pub fn read_at(
    file: &SharedFd,
    offset: u64,
    buf: Vec<u8>,
) -> OpFuture<(io::Result<usize>, Vec<u8>)> {
    let file = file.clone();
    OpFuture::new(move |cx, st| {
        let s = Rc::clone(&st);
        let id = cx.read_at(&file, offset, buf, move |n, buf, _| deliver(&s, (n, buf)));
        started(&st, id, |e| (Err(e), Vec::new()));
    })
}

/// [`Ctx::write_at`] as a future: the bytes written (all of them), and
/// the buffer, emptied.
pub fn write_at(
    file: &SharedFd,
    offset: u64,
    buf: Vec<u8>,
) -> OpFuture<(io::Result<usize>, Vec<u8>)> {
    let file = file.clone();
    OpFuture::new(move |cx, st| {
        let s = Rc::clone(&st);
        let id = cx.write_at(&file, offset, buf, move |n, buf, _| deliver(&s, (n, buf)));
        started(&st, id, |e| (Err(e), Vec::new()));
    })
}

/// [`Ctx::recv`] as a future: the bytes received (0: end of file), and
/// the buffer.
pub fn recv(socket: &SharedFd, buf: Vec<u8>) -> OpFuture<(io::Result<usize>, Vec<u8>)> {
    let socket = socket.clone();
    OpFuture::new(move |cx, st| {
        let s = Rc::clone(&st);
        let id = cx.recv(&socket, buf, move |n, buf, _| deliver(&s, (n, buf)));
        started(&st, id, |e| (Err(e), Vec::new()));
    })
}

/// [`Ctx::send`] as a future: the bytes sent (all of them), and the
/// buffer, emptied.
pub fn send(socket: &SharedFd, buf: Vec<u8>) -> OpFuture<(io::Result<usize>, Vec<u8>)> {
    let socket = socket.clone();
    OpFuture::new(move |cx, st| {
        let s = Rc::clone(&st);
        let id = cx.send(&socket, buf, move |n, buf, _| deliver(&s, (n, buf)));
        started(&st, id, |e| (Err(e), Vec::new()));
    })
}

/// One connection accepted on `listener`, close-on-exec.
pub fn accept(listener: &SharedFd) -> OpFuture<io::Result<OwnedFd>> {
    let listener = listener.clone();
    OpFuture::new(move |cx, st| {
        let s = Rc::clone(&st);
        let id = cx.accept_one(&listener, move |conn, _| deliver(&s, conn));
        started(&st, id, Err);
    })
}

/// [`Ctx::connect`] as a future.
pub fn connect(socket: &SharedFd, addr: SocketAddr) -> OpFuture<io::Result<()>> {
    let socket = socket.clone();
    OpFuture::new(move |cx, st| {
        let s = Rc::clone(&st);
        let id = cx.connect(&socket, addr, move |r, _| deliver(&s, r));
        started(&st, id, Err);
    })
}
