//! A pure model of the kernel's eventfd counter.
//!
//! [`Model`] performs no system calls and allocates nothing. It reproduces,
//! operation by operation, what `fs/eventfd.c` does to one eventfd object, so
//! that property tests and fuzz targets can hold a real [`EventFd`] against it:
//! apply the same operation to both and compare the results, the counter and
//! the readiness.
//!
//! The rules, in the order the kernel checks them:
//!
//! * **read** of a buffer shorter than 8 bytes is [`Outcome::InvalidInput`];
//!   at count 0 it is [`Outcome::WouldBlock`] on a non-blocking object (or
//!   with `RWF_NOWAIT`) and [`Outcome::Blocks`] otherwise; else it returns the
//!   whole count and zeroes it, or in semaphore mode returns 1 and decrements.
//! * **write** of a buffer that is not exactly 8 bytes (Linux ≥ 6.9), or of the
//!   value `u64::MAX`, is [`Outcome::InvalidInput`]; a write that would take the
//!   count past [`MAX`] is `WouldBlock` or `Blocks`; anything else adds.
//! * a **kernel-side signal** (an AIO or io_uring completion) adds 1 and
//!   saturates at [`OVERFLOW`], the only way to reach that value.
//!
//! Every operation that fails leaves the state unchanged.
//!
//! # Examples
//!
//! ```
//! use rouse_sys::counter::{Model, Outcome, MAX};
//! use rouse_sys::EventFdFlags;
//!
//! let mut m = Model::new(0, EventFdFlags::NONBLOCK);
//! assert_eq!(m.write(MAX), Outcome::Done(()));
//! assert_eq!(m.write(1), Outcome::WouldBlock); // past the ceiling
//! assert_eq!(m.write(u64::MAX), Outcome::InvalidInput);
//! assert_eq!(m.read(), Outcome::Done(MAX));
//! assert_eq!(m.read(), Outcome::WouldBlock);
//! ```
//!
//! [`EventFd`]: crate::EventFd

use std::io;

use crate::EventFdFlags;

/// The highest count `write(2)` can produce: `0xffff_ffff_ffff_fffe`.
pub const MAX: u64 = u64::MAX - 1;

/// The count reachable only through a kernel-side signal: `u64::MAX`.
///
/// At this value the object reports `POLLERR`, every write would block, and a
/// non-semaphore read returns `u64::MAX`.
pub const OVERFLOW: u64 = u64::MAX;

/// The bits `eventfd2(2)` accepts: `EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC`.
///
/// Any other bit makes the call fail with `EINVAL`.
pub const VALID_RAW_FLAGS: u32 = 0x1 | 0o4000 | 0o2000000;

/// The result of one operation on the counter.
///
/// # Examples
///
/// ```
/// use rouse_sys::counter::{Model, Outcome, MAX};
/// use rouse_sys::EventFdFlags;
///
/// let mut blocking = Model::new(0, EventFdFlags::empty());
/// assert_eq!(blocking.read(), Outcome::Blocks);
/// assert_eq!(blocking.read_buf(8, true), Outcome::WouldBlock); // RWF_NOWAIT
/// assert_eq!(blocking.read_buf(4, false), Outcome::InvalidInput);
/// assert_eq!(blocking.write(MAX), Outcome::Done(()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome<T> {
    /// The operation took effect (`Ok`).
    Done(T),
    /// `EAGAIN`: the object is non-blocking (or the read used `RWF_NOWAIT`)
    /// and the operation cannot proceed now.
    WouldBlock,
    /// `EINVAL`: the operation is refused whatever the count.
    InvalidInput,
    /// The caller would sleep until another operation makes room; the state is
    /// unchanged until then.
    Blocks,
}

impl<T> Outcome<T> {
    /// Classifies the result of a real call the way the model reports it.
    ///
    /// `WouldBlock` and `InvalidInput` errors become the matching variants;
    /// any other error is handed back unchanged, since the model has no
    /// counterpart for it (a closed descriptor, say).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use rouse_sys::counter::Outcome;
    ///
    /// let r: io::Result<u64> = Err(io::ErrorKind::WouldBlock.into());
    /// assert_eq!(Outcome::from_result(r).unwrap(), Outcome::WouldBlock);
    /// assert_eq!(Outcome::from_result(Ok(3u64)).unwrap(), Outcome::Done(3));
    /// ```
    pub fn from_result(result: io::Result<T>) -> io::Result<Outcome<T>> {
        match result {
            Ok(v) => Ok(Outcome::Done(v)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Outcome::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(Outcome::InvalidInput),
            Err(e) => Err(e),
        }
    }

    /// Maps the value of `Done`, leaving the other outcomes as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_sys::counter::Outcome;
    ///
    /// // A raw write(2) returns a byte count; the model's write returns ().
    /// assert_eq!(Outcome::Done(8usize).map(drop), Outcome::Done(()));
    /// assert_eq!(Outcome::<usize>::WouldBlock.map(drop), Outcome::WouldBlock);
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(v) => Outcome::Done(f(v)),
            Outcome::WouldBlock => Outcome::WouldBlock,
            Outcome::InvalidInput => Outcome::InvalidInput,
            Outcome::Blocks => Outcome::Blocks,
        }
    }
}

/// One eventfd object, as user space sees it.
///
/// See the [module documentation](self) for the rules it follows.
///
/// # Examples
///
/// Hold a real eventfd against the model, one operation at a time:
///
/// ```
/// use rouse_sys::counter::{Model, Outcome, MAX};
/// use rouse_sys::{EventFd, EventFdFlags};
///
/// let flags = EventFdFlags::NONBLOCK | EventFdFlags::SEMAPHORE;
/// let fd = EventFd::new(1, flags)?;
/// let mut model = Model::new(1, flags);
/// for n in [MAX - 1, 1, u64::MAX, 0] {
///     assert_eq!(Outcome::from_result(fd.write(n))?, model.write(n));
/// }
/// assert_eq!(model.count(), MAX);
/// assert!(model.readable() && !model.writable());
/// assert_eq!(Outcome::from_result(fd.read())?, model.read());
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Model {
    count: u64,
    semaphore: bool,
    nonblock: bool,
}

impl Model {
    /// Models `eventfd(initval, flags)`.
    ///
    /// `CLOEXEC` has no effect on the counter and is ignored.
    pub fn new(initval: u32, flags: EventFdFlags) -> Model {
        Model {
            count: u64::from(initval),
            semaphore: flags.contains(EventFdFlags::SEMAPHORE),
            nonblock: flags.contains(EventFdFlags::NONBLOCK),
        }
    }

    /// Models `eventfd2(initval, flags)` with raw flag bits.
    ///
    /// Returns `None` where the kernel returns `EINVAL`: when any bit outside
    /// [`VALID_RAW_FLAGS`] is set. No object is created then.
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_sys::counter::Model;
    /// assert!(Model::from_raw_flags(0, 0x1 | 0o4000).is_some());
    /// assert!(Model::from_raw_flags(0, 0x2).is_none());
    /// ```
    pub fn from_raw_flags(initval: u32, flags: u32) -> Option<Model> {
        if flags & !VALID_RAW_FLAGS != 0 {
            return None;
        }
        Some(Model::new(initval, EventFdFlags::from_bits_truncate(flags)))
    }

    /// Models a state reached by other means, such as kernel-side signals.
    ///
    /// Any `count` is allowed, [`OVERFLOW`] included.
    pub fn with_count(count: u64, semaphore: bool, nonblock: bool) -> Model {
        Model {
            count,
            semaphore,
            nonblock,
        }
    }

    /// The current count.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether the object was created in semaphore mode.
    pub fn is_semaphore(&self) -> bool {
        self.semaphore
    }

    /// Whether `O_NONBLOCK` is set on the open file description.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblock
    }

    /// Models `fcntl(F_SETFL)` changing `O_NONBLOCK`.
    ///
    /// The flag belongs to the open file description, so it affects every
    /// descriptor `dup`ed from it.
    pub fn set_nonblocking(&mut self, nonblock: bool) {
        self.nonblock = nonblock;
    }

    /// Models `read(2)` of an 8-byte buffer, as [`EventFd::read`] does.
    ///
    /// [`EventFd::read`]: crate::EventFd::read
    pub fn read(&mut self) -> Outcome<u64> {
        self.read_buf(8, false)
    }

    /// Models `read(2)` of a `len`-byte buffer, or with `nowait` set,
    /// `preadv2(2)` with `RWF_NOWAIT`.
    ///
    /// A successful read writes exactly 8 bytes whatever `len` is.
    pub fn read_buf(&mut self, len: usize, nowait: bool) -> Outcome<u64> {
        if len < 8 {
            return Outcome::InvalidInput;
        }
        if self.count == 0 {
            return if self.nonblock || nowait {
                Outcome::WouldBlock
            } else {
                Outcome::Blocks
            };
        }
        let v = if self.semaphore { 1 } else { self.count };
        self.count -= v;
        Outcome::Done(v)
    }

    /// Models `write(2)` of the 8-byte value `n`, as [`EventFd::write`] does.
    ///
    /// [`EventFd::write`]: crate::EventFd::write
    pub fn write(&mut self, n: u64) -> Outcome<()> {
        self.write_buf(8, n)
    }

    /// Models `write(2)` of a `len`-byte buffer whose first 8 bytes hold `n`.
    ///
    /// Any `len` other than 8 is `InvalidInput` (the rule since Linux 6.9).
    pub fn write_buf(&mut self, len: usize, n: u64) -> Outcome<()> {
        if len != 8 || n == OVERFLOW {
            return Outcome::InvalidInput;
        }
        if OVERFLOW - self.count > n {
            self.count += n;
            return Outcome::Done(());
        }
        if self.nonblock {
            Outcome::WouldBlock
        } else {
            Outcome::Blocks
        }
    }

    /// Models a kernel-side `eventfd_signal()`: adds 1, saturating at
    /// [`OVERFLOW`].
    pub fn kernel_signal(&mut self) {
        if self.count < OVERFLOW {
            self.count += 1;
        }
    }

    /// `POLLIN`: the count is above zero.
    pub fn readable(&self) -> bool {
        self.count > 0
    }

    /// `POLLOUT`: a write of 1 would not block (the count is below [`MAX`]).
    pub fn writable(&self) -> bool {
        self.count < MAX
    }

    /// `POLLERR`: the count is at [`OVERFLOW`].
    pub fn pollerr(&self) -> bool {
        self.count == OVERFLOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb(count: u64) -> Model {
        Model::with_count(count, false, true)
    }

    #[test]
    fn write_table_matches_the_kernel_at_the_boundaries() {
        use Outcome::*;
        let ns = [0, 1, 2, MAX - 1, MAX, OVERFLOW];
        let rows: [(u64, [Outcome<u64>; 6]); 5] = [
            (
                0,
                [
                    Done(0),
                    Done(1),
                    Done(2),
                    Done(MAX - 1),
                    Done(MAX),
                    InvalidInput,
                ],
            ),
            (
                1,
                [
                    Done(1),
                    Done(2),
                    Done(3),
                    Done(MAX),
                    WouldBlock,
                    InvalidInput,
                ],
            ),
            (
                MAX - 1,
                [
                    Done(MAX - 1),
                    Done(MAX),
                    WouldBlock,
                    WouldBlock,
                    WouldBlock,
                    InvalidInput,
                ],
            ),
            (
                MAX,
                [
                    Done(MAX),
                    WouldBlock,
                    WouldBlock,
                    WouldBlock,
                    WouldBlock,
                    InvalidInput,
                ],
            ),
            (
                OVERFLOW,
                [
                    WouldBlock,
                    WouldBlock,
                    WouldBlock,
                    WouldBlock,
                    WouldBlock,
                    InvalidInput,
                ],
            ),
        ];
        for (count, expected) in rows {
            for (n, want) in ns.iter().zip(expected) {
                let mut m = nb(count);
                let got = match m.write(*n) {
                    Done(()) => Done(m.count()),
                    WouldBlock => WouldBlock,
                    InvalidInput => InvalidInput,
                    Blocks => Blocks,
                };
                assert_eq!(got, want, "count {count:#x}, write {n:#x}");
                if got != Done(m.count()) {
                    assert_eq!(m.count(), count, "a failed write changed the count");
                }
            }
        }
    }

    #[test]
    fn read_table_matches_the_kernel() {
        let mut m = nb(0);
        assert_eq!(m.read(), Outcome::WouldBlock);
        let mut m = nb(5);
        assert_eq!(m.read(), Outcome::Done(5));
        assert_eq!(m.count(), 0);
        let mut m = Model::with_count(5, true, true);
        assert_eq!(m.read(), Outcome::Done(1));
        assert_eq!(m.count(), 4);
        let mut m = nb(OVERFLOW);
        assert_eq!(m.read(), Outcome::Done(OVERFLOW));
        let mut m = Model::with_count(OVERFLOW, true, true);
        assert_eq!(m.read(), Outcome::Done(1));
        assert_eq!(m.count(), MAX);
    }

    #[test]
    fn short_buffers_are_invalid_before_the_count_is_looked_at() {
        for len in [0, 1, 4, 7] {
            let mut m = Model::with_count(0, false, false);
            assert_eq!(m.read_buf(len, false), Outcome::InvalidInput);
        }
        for len in [0, 1, 4, 7, 9, 16] {
            let mut m = Model::with_count(OVERFLOW, false, false);
            assert_eq!(m.write_buf(len, 0), Outcome::InvalidInput);
        }
        let mut m = nb(3);
        assert_eq!(m.read_buf(4096, false), Outcome::Done(3));
    }

    #[test]
    fn blocking_objects_block_where_nonblocking_ones_would_block() {
        let mut m = Model::with_count(0, false, false);
        assert_eq!(m.read(), Outcome::Blocks);
        assert_eq!(m.read_buf(8, true), Outcome::WouldBlock);
        let mut m = Model::with_count(MAX, false, false);
        assert_eq!(m.write(1), Outcome::Blocks);
        assert_eq!(m.write(u64::MAX), Outcome::InvalidInput);
        m.set_nonblocking(true);
        assert_eq!(m.write(1), Outcome::WouldBlock);
    }

    #[test]
    fn kernel_signal_saturates_at_overflow() {
        let mut m = nb(MAX);
        m.kernel_signal();
        assert_eq!(m.count(), OVERFLOW);
        assert!(m.pollerr() && m.readable() && !m.writable());
        m.kernel_signal();
        assert_eq!(m.count(), OVERFLOW);
    }

    #[test]
    fn readiness_follows_the_count() {
        assert_eq!((nb(0).readable(), nb(0).writable()), (false, true));
        assert_eq!((nb(1).readable(), nb(1).writable()), (true, true));
        assert_eq!(
            (nb(MAX - 1).readable(), nb(MAX - 1).writable()),
            (true, true)
        );
        assert_eq!((nb(MAX).readable(), nb(MAX).writable()), (true, false));
        assert!(!nb(MAX).pollerr());
    }

    #[test]
    fn raw_flags_outside_the_three_known_bits_are_invalid() {
        for bit in 0..32 {
            let flag = 1u32 << bit;
            let valid = flag & VALID_RAW_FLAGS != 0;
            assert_eq!(Model::from_raw_flags(7, flag).is_some(), valid, "bit {bit}");
        }
        let m = Model::from_raw_flags(7, VALID_RAW_FLAGS).unwrap();
        assert!(m.is_semaphore() && m.is_nonblocking());
        assert_eq!(m.count(), 7);
    }
}
