//! The loop's error type.

use std::fmt;
use std::io;

/// What a [`LoopHandle`](crate::LoopHandle) call can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The loop has been dropped. Whatever the call was given (a functor, a
    /// timer callback) was dropped on the calling thread.
    LoopGone,
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LoopGone => f.write_str("the event loop has been dropped"),
            // The io::Error itself is the source: error chains print it once.
            Error::Io(_) => f.write_str("a system call of the event loop failed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::LoopGone => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}
