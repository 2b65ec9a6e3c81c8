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
    sender: MsgSender,
}

impl Waker {
    /// Creates a waker for `poller` whose wakes are reported with `token`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `token` is `Token(usize::MAX)` or
    /// already used by a waker or registration of this poller.
    pub fn new(poller: &Poller, token: Token) -> io::Result<Waker> {
        let shared = Arc::clone(poller.shared());
        let slot = shared.add_waker(token)?;
        Ok(Waker {
            inner: Arc::new(Inner {
                slot,
                shared,
                sender: MsgSender::default(),
            }),
        })
    }

    /// Wakes the poller.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] once the poller has been dropped; the
    /// OS error if the wake system call fails.
    pub fn wake(&self) -> io::Result<()> {
        let inner = &*self.inner;
        let slot = &*inner.slot;
        slot.wakes.fetch_add(1, Relaxed);
        if !slot.pending.set() {
            // Already pending: whoever set it has notified, or is about to.
            return Ok(());
        }
        match inner.shared.notify(&inner.sender)? {
            Notify::Closed => {
                slot.pending.take();
                Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the poller of this waker has been dropped",
                ))
            }
            Notify::Syscall | Notify::Nothing => Ok(()),
        }
    }

    /// The token this waker's events carry.
    pub fn token(&self) -> Token {
        self.inner.slot.token
    }
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
