//! Wakers: make a poll return from any thread.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::poller::{Shared, WakerSlot};
use crate::state::Notify;
use crate::sys::MsgSender;
use crate::{Poller, Token};

/// Makes a [`Poller`]'s current or next [`poll`](Poller::poll) return with an
/// event carrying the waker's token.
///
/// `Send + Sync`, and cheap to clone: clones share one token and one pending
/// flag. A poller can have several wakers, each with its own token.
///
/// Wakes coalesce. A wake while the poller is not blocked in the kernel costs
/// no system call; any number of wakes before the poller next runs cost at
/// most one in total; the polling side never makes one of its own for a wake
/// (an edge-triggered eventfd is not read; a pipe fallback is drained only
/// when it fired).
///
/// # Examples
///
/// ```
/// use rouse_poll::{Events, Poller, Token, Waker};
///
/// let poller = Poller::new()?;
/// let waker = Waker::new(&poller, Token(1))?;
/// let remote = waker.clone();
/// let t = std::thread::spawn(move || remote.wake());
///
/// let mut events = Events::with_capacity(8);
/// poller.poll(&mut events, None)?; // returns once the thread has woken it
/// assert_eq!(events.iter().next().unwrap().token(), Token(1));
/// t.join().unwrap()?;
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone)]
pub struct Waker {
    inner: Arc<Inner>,
}

struct Inner {
    slot: Arc<WakerSlot>,
    shared: Arc<Shared>,
    sender: Option<MsgSender>,
}

impl Waker {
    /// Creates a waker for `poller` whose wakes are reported with `token`.
    ///
    /// # Errors
    ///
    /// * [`io::ErrorKind::InvalidInput`] if `token` is `Token(usize::MAX)` or
    ///   already used by another waker of this poller. Tokens of
    ///   registrations are not checked (a registration whose file was closed
    ///   is never seen to go): choose waker tokens apart from them.
    /// * On the [`MsgRing`](crate::UringWake::MsgRing) path, the OS error if
    ///   the waker's own ring cannot be made (`EMFILE`, `ENOMEM`): it is made
    ///   here, so that a waker that exists can always wake.
    /// * [`Forked`](crate::Forked) in a child process.
    pub fn new(poller: &Poller, token: Token) -> io::Result<Waker> {
        let shared = Arc::clone(poller.shared());
        shared.check_fork()?;
        let sender = shared.signal.new_sender()?;
        let slot = shared.add_waker(token)?;
        Ok(Waker {
            inner: Arc::new(Inner {
                slot,
                shared,
                sender,
            }),
        })
    }

    /// Wakes the poller.
    ///
    /// # Errors
    ///
    /// * [`io::ErrorKind::NotConnected`] once the poller has been dropped;
    /// * [`Forked`](crate::Forked) in a child process;
    /// * the OS error if the wake system call fails. Nothing is then left
    ///   half-done: no wake is on its way, and the next wake (a retry, or any
    ///   other waker's) makes the call again and delivers this one too.
    pub fn wake(&self) -> io::Result<()> {
        let inner = &*self.inner;
        let shared = &*inner.shared;
        shared.check_fork()?;
        let slot = &*inner.slot;
        slot.wakes.fetch_add(1, Relaxed);
        if !slot.pending.set() && shared.state.is_notified_or_closed() {
            // Already pending, and the poller has been told (or is gone).
            if shared.state.is_closed() {
                return Err(not_connected());
            }
            return Ok(());
        }
        match shared.notify(inner.sender.as_ref())? {
            Notify::Closed => {
                slot.pending.take();
                Err(not_connected())
            }
            Notify::Syscall(_) | Notify::Nothing => Ok(()),
        }
    }

    /// The token this waker's events carry.
    pub fn token(&self) -> Token {
        self.inner.slot.token
    }

    /// The counters of this waker's poller (see [`Poller::stats`]), readable
    /// from any thread.
    pub fn stats(&self) -> crate::Stats {
        self.inner.shared.stats()
    }
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the poller of this waker has been dropped",
    )
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.remove_waker(&self.slot);
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker")
            .field("token", &self.token())
            .finish()
    }
}
