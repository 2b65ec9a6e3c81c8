//! I/O sources: an fd registered with an interest and a callback, owned by
//! the loop while registered, and the dispatch of their readiness.

use std::any::{Any, TypeId};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use rouse_poll::{Interest, Token};

use crate::Ctx;

/// Identifies an I/O source registered with the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(u64);

impl SourceId {
    /// The source a poll event's token names.
    pub(crate) fn from_token(token: Token) -> SourceId {
        SourceId(token.0 as u64)
    }

    fn new(slot: u32, generation: u32) -> SourceId {
        SourceId(u64::from(generation) << 32 | u64::from(slot))
    }

    fn slot(self) -> usize {
        self.0 as u32 as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// The readiness an I/O callback is called with. Level-triggered: a source
/// that stays ready is called again in the next iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Data to read, end-of-file, or a peer's shutdown.
    pub readable: bool,
    /// Room to write.
    pub writable: bool,
    /// An error is pending on the file.
    pub error: bool,
    /// The peer hung up.
    pub hangup: bool,
}

pub(crate) enum Slot {
    Vacant {
        generation: u32,
    },
    Occupied {
        generation: u32,
        interest: Interest,
        entry: Box<dyn AnySource>,
        /// A change of interest asked for in the source's own callback that
        /// failed when it was applied: the next `modify_source` returns it.
        failed: Option<io::Error>,
    },
    /// Its callback is running; what the callback asked for meanwhile.
    Running {
        generation: u32,
        /// The interest it is registered with.
        interest: Interest,
        removed: bool,
        reinterest: Option<Interest>,
    },
}

impl Ctx {
    /// The source whose I/O callback is running, so that a callback can
    /// [`modify`](Ctx::modify_source) or [`remove`](Ctx::remove_source)
    /// itself; `None` outside I/O callbacks (in functors and timers).
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    /// use rouse_loop::{EventLoop, Interest};
    ///
    /// let mut lp = EventLoop::new()?;
    /// let (a, mut b) = UnixStream::pair()?;
    /// assert_eq!(lp.current_source(), None);
    /// lp.add_source(a, Interest::READABLE, |_a, _ready, cx| {
    ///     let me = cx.current_source().unwrap();
    ///     cx.remove_source(me).unwrap();
    ///     cx.quit();
    /// })?;
    /// b.write_all(b"x")?;
    /// lp.run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn current_source(&self) -> Option<SourceId> {
        self.current_source
    }

    /// The number of registered I/O sources.
    pub fn source_count(&self) -> usize {
        self.sources.len() - self.free.len()
    }

    /// Registers `io` for `interest`; `callback` is called on the loop thread
    /// with `&mut io` each time it is ready (level-triggered).
    ///
    /// The loop owns `io` until [`take_source`](Ctx::take_source) hands it
    /// back or [`remove_source`](Ctx::remove_source) drops it. The callback is
    /// never called after its source is removed, even if the fd number is
    /// reused.
    ///
    /// # Errors
    ///
    /// The poller's: `EBADF`, `AlreadyExists` for an fd already registered,
    /// `EPERM` for a regular file on epoll.
    pub fn add_source<T, F>(
        &mut self,
        io: T,
        interest: Interest,
        callback: F,
    ) -> io::Result<SourceId>
    where
        T: AsFd + 'static,
        F: FnMut(&mut T, Ready, &mut Ctx) + 'static,
    {
        let (slot, generation) = match self.free.pop() {
            Some(slot) => match self.sources[slot as usize] {
                Slot::Vacant { generation } => (slot, generation),
                _ => unreachable!("a free slot is vacant"),
            },
            None => {
                self.sources.push(Slot::Vacant { generation: 0 });
                ((self.sources.len() - 1) as u32, 0)
            }
        };
        let id = SourceId::new(slot, generation);
        if let Err(e) = self
            .poller
            .register(io.as_fd(), Token(id.0 as usize), interest)
        {
            self.free.push(slot);
            return Err(e);
        }
        self.sources[slot as usize] = Slot::Occupied {
            generation,
            interest,
            entry: Box::new(Entry { io, callback }),
            failed: None,
        };
        Ok(id)
    }

    /// Changes a source's interest.
    ///
    /// From the source's own callback, the change is applied when the
    /// callback returns (its object is borrowed until then): the call checks
    /// only that the source is there and not being removed. If applying it
    /// fails, the interest stays as it was
    /// ([`source_interest`](Ctx::source_interest) tells), and the next
    /// `modify_source` for the source returns that error, once, and changes
    /// nothing; call it again to retry.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was removed; the
    /// poller's error if it refuses the change; the error of a change asked
    /// for in the source's own callback that failed when it was applied.
    pub fn modify_source(&mut self, id: SourceId, interest: Interest) -> io::Result<()> {
        match self.sources.get_mut(id.slot()) {
            Some(Slot::Occupied {
                generation,
                interest: current,
                entry,
                failed,
            }) if *generation == id.generation() => {
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                self.poller
                    .reregister(entry.fd(), Token(id.0 as usize), interest)?;
                *current = interest;
                Ok(())
            }
            Some(Slot::Running {
                generation,
                removed: false,
                reinterest,
                ..
            }) if *generation == id.generation() => {
                *reinterest = Some(interest);
                Ok(())
            }
            _ => Err(no_source(id)),
        }
    }

    /// The interest a source is registered with now; from its own callback,
    /// the interest it was called for (a change asked for there is applied
    /// when the callback returns).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was removed.
    pub fn source_interest(&self, id: SourceId) -> io::Result<Interest> {
        match self.sources.get(id.slot()) {
            Some(Slot::Occupied {
                generation,
                interest,
                ..
            }) if *generation == id.generation() => Ok(*interest),
            Some(Slot::Running {
                generation,
                removed: false,
                interest,
                ..
            }) if *generation == id.generation() => Ok(*interest),
            _ => Err(no_source(id)),
        }
    }

    /// Removes a source and drops its object. A source may remove itself from
    /// its own callback: it is then dropped when the callback returns.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was already removed.
    pub fn remove_source(&mut self, id: SourceId) -> io::Result<()> {
        match self.sources.get_mut(id.slot()) {
            Some(Slot::Running {
                generation,
                removed,
                ..
            }) if *generation == id.generation() && !*removed => {
                *removed = true;
                Ok(())
            }
            Some(Slot::Occupied {
                generation, entry, ..
            }) if *generation == id.generation() => {
                // Deregistered first: if that fails (in a forked child, say),
                // the source stays as it was.
                self.poller.deregister(entry.fd())?;
                drop(self.vacate(id.slot()));
                Ok(())
            }
            _ => Err(no_source(id)),
        }
    }

    /// The object of a source, to use in place (a watched ring to submit
    /// to, say).
    ///
    /// # Errors
    ///
    /// As [`take_source`](Ctx::take_source): `NotFound`, `InvalidInput`
    /// for another type, `ResourceBusy` from the source's own callback
    /// (which has the object already).
    pub fn source_mut<T: AsFd + 'static>(&mut self, id: SourceId) -> io::Result<&mut T> {
        match self.sources.get_mut(id.slot()) {
            Some(Slot::Occupied {
                generation, entry, ..
            }) if *generation == id.generation() => entry
                .io_mut()
                .downcast_mut::<T>()
                .ok_or_else(|| wrong_type::<T>(id)),
            Some(Slot::Running {
                generation,
                removed: false,
                ..
            }) if *generation == id.generation() => Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "a source's object is its own callback's while that runs",
            )),
            _ => Err(no_source(id)),
        }
    }

    /// Removes a source and hands its object back.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a source that was removed;
    /// [`io::ErrorKind::InvalidInput`] if `T` is not the source's type (the
    /// source stays registered); [`io::ErrorKind::ResourceBusy`] from the
    /// source's own callback, whose object is borrowed (use
    /// [`remove_source`](Ctx::remove_source) there).
    pub fn take_source<T: AsFd + 'static>(&mut self, id: SourceId) -> io::Result<T> {
        match self.sources.get(id.slot()) {
            Some(Slot::Occupied {
                generation, entry, ..
            }) if *generation == id.generation() => {
                if entry.io_type() != TypeId::of::<T>() {
                    return Err(wrong_type::<T>(id));
                }
            }
            Some(Slot::Running {
                generation,
                removed: false,
                ..
            }) if *generation == id.generation() => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "a source cannot take itself back from its own callback; use remove_source",
                ));
            }
            _ => return Err(no_source(id)),
        }
        if let Some(Slot::Occupied { entry, .. }) = self.sources.get(id.slot()) {
            self.poller.deregister(entry.fd())?;
        }
        let entry = self.vacate(id.slot());
        Ok(*entry
            .into_io()
            .downcast::<T>()
            .expect("the type was checked above"))
    }

    pub(crate) fn dispatch(&mut self, id: SourceId, ready: Ready) {
        let slot = id.slot();
        let (generation, interest) = match self.sources.get(slot) {
            Some(Slot::Occupied {
                generation,
                interest,
                ..
            }) if *generation == id.generation() => (*generation, *interest),
            // Removed earlier in this iteration: never called again.
            _ => return,
        };
        let running = Slot::Running {
            generation,
            interest,
            removed: false,
            reinterest: None,
        };
        let Slot::Occupied {
            mut entry, failed, ..
        } = std::mem::replace(&mut self.sources[slot], running)
        else {
            unreachable!("checked above")
        };
        self.current_source = Some(id);
        let outcome = catch_unwind(AssertUnwindSafe(|| entry.dispatch(ready, self)));
        self.current_source = None;
        // Put the source back (or drop it), whether or not the callback panicked.
        let Slot::Running {
            generation,
            removed,
            reinterest,
            ..
        } = std::mem::replace(&mut self.sources[slot], Slot::Vacant { generation: 0 })
        else {
            unreachable!("only dispatch changes a running slot's kind")
        };
        let token = Token(id.0 as usize);
        if removed {
            self.sources[slot] = Slot::Vacant {
                generation: generation.wrapping_add(1),
            };
            self.free.push(slot as u32);
            // The fd is still open (the entry owns it), so this cannot be EBADF.
            let _ = self.poller.deregister(entry.fd());
        } else {
            let mut interest = interest;
            let mut failed = failed;
            if let Some(new) = reinterest {
                match self.poller.reregister(entry.fd(), token, new) {
                    Ok(()) => interest = new,
                    Err(e) => failed = Some(deferred_failure(id, new, e)),
                }
            }
            self.sources[slot] = Slot::Occupied {
                generation,
                interest,
                entry,
                failed,
            };
        }
        if let Err(payload) = outcome {
            resume_unwind(payload);
        }
    }

    fn vacate(&mut self, slot: usize) -> Box<dyn AnySource> {
        let generation = match self.sources[slot] {
            Slot::Occupied { generation, .. } => generation,
            _ => unreachable!("vacate is called on occupied slots"),
        };
        self.free.push(slot as u32);
        match std::mem::replace(
            &mut self.sources[slot],
            Slot::Vacant {
                generation: generation.wrapping_add(1),
            },
        ) {
            Slot::Occupied { entry, .. } => entry,
            _ => unreachable!(),
        }
    }
}

/// The error of a change of interest that a source's callback asked for and
/// that failed when the callback returned.
fn deferred_failure(id: SourceId, interest: Interest, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "the change of {id:?} to {interest:?}, asked for in its own callback, \
             failed when the callback returned (the interest stays as it was): {e}"
        ),
    )
}

fn no_source(id: SourceId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{id:?} is not registered with this loop"),
    )
}

/// A source with its type erased.
pub(crate) trait AnySource {
    fn fd(&self) -> BorrowedFd<'_>;
    fn dispatch(&mut self, ready: Ready, cx: &mut Ctx);
    fn io_type(&self) -> TypeId;
    fn into_io(self: Box<Self>) -> Box<dyn Any>;
    fn io_mut(&mut self) -> &mut dyn Any;
}

struct Entry<T, F> {
    io: T,
    callback: F,
}

impl<T, F> AnySource for Entry<T, F>
where
    T: AsFd + 'static,
    F: FnMut(&mut T, Ready, &mut Ctx) + 'static,
{
    fn fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }

    fn dispatch(&mut self, ready: Ready, cx: &mut Ctx) {
        (self.callback)(&mut self.io, ready, cx);
    }

    fn io_type(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn io_mut(&mut self) -> &mut dyn Any {
        &mut self.io
    }

    fn into_io(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.io)
    }
}

/// The error of a source asked for as a type it does not hold.
fn wrong_type<T>(id: SourceId) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "source {id:?} does not hold a {}",
            std::any::type_name::<T>()
        ),
    )
}
