//! Completions from outside the loop, through an eventfd: a ring the
//! caller owns (a storage library's `io_uring`, with
//! `IORING_REGISTER_EVENTFD`), and Linux AIO (`IOCB_FLAG_RESFD`), as nginx
//! is told of its thread pool's and its AIO's completions.
//!
//! The pitfalls, as these handle them, each with a test in
//! `tests/bridges.rs`:
//!
//! * completions already in a ring's queue when its eventfd is registered
//!   are never signalled: the queue is drained right after registering;
//! * the eventfd's count is a hint, not the number of completions: every
//!   completion there is is collected each time;
//! * a ring made with `IORING_SETUP_DEFER_TASKRUN` posts completions only
//!   inside an `io_uring_enter` with `GETEVENTS` (its eventfd says work is
//!   waiting): the watch makes that call when the eventfd fires and the
//!   queue is empty, from the loop thread, which must then be the ring's
//!   only submitter (`SINGLE_ISSUER`);
//! * AIO can push the eventfd's counter to its ceiling, `u64::MAX` (the
//!   state `rouse_sys::counter::Model` calls overflow): it is read like
//!   any count.

use std::io;

use rouse_poll::Interest;
use rouse_poll::aio::{Aio, AioCompletion};
use rouse_poll::io_uring::{IoUring, cqueue};

pub use rouse_poll::aio;
pub use rouse_poll::foreign::RingWatch;

use crate::sources::Ready;
use crate::{Ctx, SourceId};

impl Ctx {
    /// Watches `ring`, a ring the caller made and submits to: registers an
    /// eventfd with it, and calls `on_cqe` on the loop thread with each
    /// completion, and the ring (to submit more); or with the error of the
    /// `io_uring_enter` that runs a `DEFER_TASKRUN` ring's deferred work
    /// (`EEXIST` if the loop thread is not the ring's only submitter). The
    /// queue is drained once right after registering, for completions that
    /// came before (which the eventfd never signals).
    ///
    /// The ring is the loop's from now on, as a source:
    /// [`source_mut`](Ctx::source_mut)`::<RingWatch>(id)` reaches it,
    /// [`take_source`](Ctx::take_source) hands it back.
    ///
    /// # Errors
    ///
    /// The OS error of `eventfd(2)` or of `IORING_REGISTER_EVENTFD` (a ring
    /// that already has one: `EBUSY`), or of the registration with the
    /// poller. The ring is dropped on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_loop::EventLoop;
    /// use rouse_poll::io_uring::{IoUring, opcode};
    ///
    /// let mut lp = EventLoop::new()?;
    /// let mut ring = IoUring::new(8)?;
    /// let nop = opcode::Nop::new().build().user_data(42);
    /// // SAFETY: a NOP names no memory.
    /// unsafe { ring.submission().push(&nop).unwrap() };
    /// ring.submit()?;
    /// lp.watch_ring(ring, |cqe, _ring, cx| {
    ///     assert_eq!(cqe.unwrap().user_data(), 42);
    ///     cx.quit();
    /// })?;
    /// lp.run()?;
    /// # std::io::Result::Ok(())
    /// ```
    pub fn watch_ring(
        &mut self,
        ring: IoUring,
        mut on_cqe: impl FnMut(io::Result<cqueue::Entry>, &mut IoUring, &mut Ctx) + 'static,
    ) -> io::Result<SourceId> {
        let watch = RingWatch::new(ring)?;
        let id = self.add_source(
            watch,
            Interest::READABLE,
            move |w: &mut RingWatch, _ready, cx| {
                let (got, drained) = w.drain();
                for cqe in got {
                    on_cqe(Ok(cqe), w.ring(), cx);
                }
                if let Err(e) = drained {
                    // An enter from a thread that is not the ring's only
                    // submitter (EEXIST), say.
                    on_cqe(Err(e), w.ring(), cx);
                }
            },
        )?;
        // Completions from before the eventfd: drained now.
        self.dispatch(id, readable());
        Ok(id)
    }

    /// Watches `aio`: calls `on_done` on the loop thread with each
    /// completion, and the context (to submit more); or with the error of
    /// `io_getevents(2)`. Reaped once right after registering, for
    /// completions that came before.
    ///
    /// The context is the loop's from now on, as a source:
    /// [`source_mut`](Ctx::source_mut)`::<Aio>(id)` reaches it.
    ///
    /// # Errors
    ///
    /// The poller's, registering the eventfd.
    pub fn watch_aio(
        &mut self,
        aio: Aio,
        mut on_done: impl FnMut(io::Result<AioCompletion>, &mut Aio, &mut Ctx) + 'static,
    ) -> io::Result<SourceId> {
        let id =
            self.add_source(
                aio,
                Interest::READABLE,
                move |aio: &mut Aio, _ready, cx| match aio.reap() {
                    Ok(done) => {
                        for c in done {
                            on_done(Ok(c), aio, cx);
                        }
                    }
                    Err(e) => on_done(Err(e), aio, cx),
                },
            )?;
        self.dispatch(id, readable());
        Ok(id)
    }
}

fn readable() -> Ready {
    Ready {
        readable: true,
        writable: false,
        error: false,
        hangup: false,
    }
}
