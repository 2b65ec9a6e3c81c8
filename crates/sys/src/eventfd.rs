//! An owned `eventfd(2)` object.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use rustix::event::EventfdFlags;
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::retry;

bitflags::bitflags! {
    /// Flags for [`EventFd::new`].
    ///
    /// Each has the value of the kernel's `EFD_*` constant.
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_sys::{EventFd, EventFdFlags};
    ///
    /// // A non-blocking semaphore, closed across exec.
    /// let flags = EventFdFlags::CLOEXEC | EventFdFlags::NONBLOCK | EventFdFlags::SEMAPHORE;
    /// let fd = EventFd::new(2, flags)?;
    /// assert_eq!((fd.read()?, fd.read()?), (1, 1));
    ///
    /// // Bits the kernel does not know are refused before any system call.
    /// let unknown = EventFdFlags::from_bits_retain(0x2);
    /// let err = EventFd::new(0, unknown).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// # std::io::Result::Ok(())
    /// ```
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct EventFdFlags: u32 {
        /// `EFD_CLOEXEC`: close the descriptor across `execve(2)`.
        const CLOEXEC = EventfdFlags::CLOEXEC.bits();
        /// `EFD_NONBLOCK`: an operation that cannot proceed fails with
        /// [`io::ErrorKind::WouldBlock`] instead of sleeping.
        const NONBLOCK = EventfdFlags::NONBLOCK.bits();
        /// `EFD_SEMAPHORE`: a read returns 1 and decrements the counter,
        /// instead of returning the whole counter and zeroing it.
        const SEMAPHORE = EventfdFlags::SEMAPHORE.bits();
    }
}

/// An owned eventfd: a 64-bit counter in the kernel behind a descriptor.
///
/// [`write(n)`](EventFd::write) adds `n` to the counter; [`read`](EventFd::read)
/// returns the counter and zeroes it, or in [`SEMAPHORE`] mode returns 1 and
/// decrements it. The descriptor is readable while the counter is above zero
/// and writable while 1 can still be added.
///
/// The calls behave exactly as the kernel does; the only things hidden are
/// `EINTR`, which is retried, and a write of `u64::MAX`, which is refused
/// before any system call is made. [`counter::Model`] describes every case.
///
/// # Examples
///
/// ```
/// use rouse_sys::{EventFd, EventFdFlags};
///
/// let fd = EventFd::new(0, EventFdFlags::CLOEXEC | EventFdFlags::NONBLOCK)?;
/// fd.write(1)?;
/// fd.write(2)?;
/// assert_eq!(fd.read()?, 3);
/// assert_eq!(fd.read().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
/// # std::io::Result::Ok(())
/// ```
///
/// # Implementation notes
///
/// The counter's ceiling is [`counter::MAX`] (`0xffff_ffff_ffff_fffe`). A write
/// that would pass it sleeps until a read makes room, or fails with
/// `WouldBlock` on a non-blocking descriptor. Since Linux 6.9 a write of any
/// buffer other than exactly 8 bytes is `EINVAL`; this type always uses 8.
///
/// [`SEMAPHORE`]: EventFdFlags::SEMAPHORE
/// [`counter::Model`]: crate::counter::Model
/// [`counter::MAX`]: crate::counter::MAX
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with counter `initval`, with `eventfd2(2)`.
    ///
    /// Pass [`EventFdFlags::CLOEXEC`] unless the descriptor is meant to be
    /// inherited by a child process.
    ///
    /// # Errors
    ///
    /// * Flag bits other than the three defined ones (possible only through
    ///   [`EventFdFlags::from_bits_retain`]) fail with the kernel's own
    ///   error, `EINVAL` ([`io::ErrorKind::InvalidInput`]), but without a
    ///   system call.
    /// * Otherwise the OS error of `eventfd2(2)`: `EMFILE` or `ENFILE` when
    ///   descriptors run out, `ENOSYS` where the kernel has no eventfd.
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_sys::{EventFd, EventFdFlags};
    ///
    /// let sem = EventFd::new(2, EventFdFlags::SEMAPHORE | EventFdFlags::NONBLOCK)?;
    /// assert_eq!(sem.read()?, 1);
    /// assert_eq!(sem.read()?, 1);
    /// assert!(sem.read().is_err());
    /// # std::io::Result::Ok(())
    /// ```
    #[doc(alias = "eventfd2")]
    pub fn new(initval: u32, flags: EventFdFlags) -> io::Result<EventFd> {
        if flags.bits() & !EventFdFlags::all().bits() != 0 {
            // What eventfd2(2) answers, without the call.
            return Err(Errno::INVAL.into());
        }
        let fd = rustix::event::eventfd(initval, EventfdFlags::from_bits_retain(flags.bits()))?;
        Ok(EventFd { fd })
    }

    /// Another descriptor for the same eventfd (`F_DUPFD_CLOEXEC`): both
    /// share one counter, so one can be handed to a thread that writes
    /// while the other is read or polled.
    ///
    /// # Errors
    ///
    /// The OS error of `fcntl(2)`, e.g. `EMFILE`.
    ///
    /// # Examples
    ///
    /// ```
    /// use rouse_sys::{EventFd, EventFdFlags};
    ///
    /// let fd = EventFd::new(0, EventFdFlags::NONBLOCK)?;
    /// let writer = fd.try_clone()?;
    /// std::thread::spawn(move || writer.write(2)).join().unwrap()?;
    /// assert_eq!(fd.read()?, 2);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn try_clone(&self) -> io::Result<EventFd> {
        Ok(EventFd {
            fd: rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?,
        })
    }

    /// Adopts a descriptor that refers to an eventfd, such as one inherited
    /// from a parent process.
    ///
    /// What can be checked is checked: the descriptor must be open, must be an
    /// anonymous inode, and where `/proc` is mounted, must be named
    /// `anon_inode:[eventfd]`. The semaphore and non-blocking modes are
    /// whatever the creator chose.
    ///
    /// # Errors
    ///
    /// Gives the descriptor back inside an [`AdoptError`] when it is closed
    /// (`EBADF`) or is not an eventfd ([`io::ErrorKind::InvalidInput`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// use rouse_sys::{EventFd, EventFdFlags};
    ///
    /// let owned: OwnedFd = EventFd::new(5, EventFdFlags::NONBLOCK)?.into();
    /// let fd = EventFd::from_owned(owned)?;
    /// assert_eq!(fd.read()?, 5);
    ///
    /// let (_r, w) = std::io::pipe()?;
    /// let err = EventFd::from_owned(w.into()).unwrap_err();
    /// assert_eq!(err.error().kind(), std::io::ErrorKind::InvalidInput);
    /// let _pipe_end: OwnedFd = err.into_fd(); // nothing is lost
    /// # std::io::Result::Ok(())
    /// ```
    pub fn from_owned(fd: OwnedFd) -> Result<EventFd, AdoptError> {
        match check_eventfd(fd.as_fd()) {
            Ok(()) => Ok(EventFd { fd }),
            Err(error) => Err(AdoptError { error, fd }),
        }
    }

    /// Reads the counter with `read(2)`.
    ///
    /// Returns the whole counter and sets it to zero, or in semaphore mode
    /// returns 1 and decrements it. The value returned is never 0.
    ///
    /// # Errors
    ///
    /// At counter 0 a blocking eventfd sleeps until a write; a non-blocking
    /// one fails with [`io::ErrorKind::WouldBlock`]. `EINTR` is retried.
    #[inline]
    pub fn read(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        let n = retry(|| rustix::io::read(&self.fd, &mut buf))?;
        // The kernel's eventfd_read() either fails or fills exactly 8 bytes.
        debug_assert_eq!(n, 8);
        Ok(u64::from_ne_bytes(buf))
    }

    /// Adds `n` to the counter with `write(2)`.
    ///
    /// # Errors
    ///
    /// * `n == u64::MAX` fails at once with the kernel's own error, `EINVAL`
    ///   ([`io::ErrorKind::InvalidInput`]), but without a system call.
    /// * A write that would take the counter past `0xffff_ffff_ffff_fffe`
    ///   sleeps until a read makes room, or on a non-blocking eventfd fails
    ///   with [`io::ErrorKind::WouldBlock`], leaving the counter unchanged.
    ///
    /// `EINTR` is retried.
    #[inline]
    pub fn write(&self, n: u64) -> io::Result<()> {
        if n == u64::MAX {
            // What write(2) answers, without the call.
            return Err(Errno::INVAL.into());
        }
        let n = retry(|| rustix::io::write(&self.fd, &n.to_ne_bytes()))?;
        debug_assert_eq!(n, 8);
        Ok(())
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for EventFd {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl From<EventFd> for OwnedFd {
    fn from(fd: EventFd) -> OwnedFd {
        fd.fd
    }
}

impl TryFrom<OwnedFd> for EventFd {
    type Error = AdoptError;

    /// The same as [`EventFd::from_owned`].
    fn try_from(fd: OwnedFd) -> Result<EventFd, AdoptError> {
        EventFd::from_owned(fd)
    }
}

impl fmt::Debug for EventFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFd")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// The error of [`EventFd::from_owned`]: why the descriptor was refused, and
/// the descriptor itself, returned unclosed.
///
/// # Examples
///
/// ```
/// use std::io::{ErrorKind, Read, Write};
/// use rouse_sys::EventFd;
///
/// let (r, mut w) = std::io::pipe()?;
/// let (reason, fd) = EventFd::from_owned(r.into()).unwrap_err().into_parts();
/// assert_eq!(reason.kind(), ErrorKind::InvalidInput);
/// // The refused descriptor still works.
/// w.write_all(b"x")?;
/// let mut byte = [0; 1];
/// std::fs::File::from(fd).read_exact(&mut byte)?;
/// assert_eq!(&byte, b"x");
/// # std::io::Result::Ok(())
/// ```
pub struct AdoptError {
    error: io::Error,
    fd: OwnedFd,
}

impl AdoptError {
    /// Why the descriptor was refused.
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// Gives the refused descriptor back.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Splits the error into its reason and the refused descriptor.
    pub fn into_parts(self) -> (io::Error, OwnedFd) {
        (self.error, self.fd)
    }
}

impl fmt::Debug for AdoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdoptError")
            .field("error", &self.error)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl fmt::Display for AdoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fd {} cannot be adopted as an eventfd: {}",
            self.fd.as_raw_fd(),
            self.error
        )
    }
}

impl std::error::Error for AdoptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<AdoptError> for io::Error {
    /// Keeps the reason; the descriptor is closed.
    fn from(e: AdoptError) -> io::Error {
        e.error
    }
}

/// Checks, as far as the system allows, that `fd` is an open eventfd.
fn check_eventfd(fd: BorrowedFd<'_>) -> io::Result<()> {
    let not_eventfd = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {} is not an eventfd ({what})", fd.as_raw_fd()),
        )
    };
    // fstat fails with EBADF on a closed descriptor.
    let stat = rustix::fs::fstat(fd)?;
    // Anonymous inodes (eventfd, epoll, timerfd, ...) carry no file type bits.
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::Unknown {
        return Err(not_eventfd(&format!("it is a {kind:?}")));
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match rustix::fs::readlinkat(rustix::fs::CWD, path.as_str(), Vec::new()) {
        Ok(name) if name.as_bytes() == b"anon_inode:[eventfd]" => Ok(()),
        Ok(name) => Err(not_eventfd(&format!("it is {}", name.to_string_lossy()))),
        // Without /proc the anonymous-inode check is all that can be done.
        Err(_) => Ok(()),
    }
}
