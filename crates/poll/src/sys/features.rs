//! What the io_uring backend needs of the kernel, found out by asking it
//! (a setup flag it accepts, an opcode its probe lists, a feature bit),
//! never inferred from the version string; and, for each refusal, the
//! reason in words.
//!
//! | feature | used for | since |
//! |---|---|---|
//! | `IORING_SETUP_SINGLE_ISSUER`, `DEFER_TASKRUN` | completions only inside the polling thread's wait | 6.1 |
//! | `IORING_FEAT_EXT_ARG` | a wait's timeout in the same call | 5.11 |
//! | `IORING_FEAT_NODROP` | no completion lost when the queue overflows | 5.5 |
//! | multishot `IORING_OP_POLL_ADD` | the wake fd, and the epoll set where `EPOLL_WAIT` is missing | 5.13 (implied by `DEFER_TASKRUN`) |
//! | `IORING_OP_EPOLL_WAIT` | reading the epoll set inside the wait (else: a poll of the set's fd, then `epoll_wait`) | 6.15 |
//! | `IORING_OP_MSG_RING`, `IOSQE_CQE_SKIP_SUCCESS` | the `MSG_RING` wake | 5.18 |
//! | `IORING_REGISTER_PBUF_RING` | multishot receives (asked for on first use) | 5.19 |
//! | multishot accept | `AcceptMulti` (one accept at a time where refused) | 5.19 |
//!
//! [`PRETEND_MISSING_ENV`] makes the backend act as if the kernel lacked
//! features, so that every refusal and every fallback can be tested on a
//! kernel that has them all.

use std::io;

use rustix::io::Errno;

/// The environment variable that makes the io_uring backend act as if the
/// kernel lacked features: a comma-separated list of `io_uring` (refused
/// outright, as by a seccomp filter: `ENOSYS`), `single_issuer`,
/// `defer_taskrun`, `ext_arg`, `nodrop`, `epoll_wait`, `msg_ring`. For
/// testing how rouse answers an older or restricted kernel; an unknown name
/// is an error.
pub const PRETEND_MISSING_ENV: &str = "ROUSE_URING_PRETEND_MISSING";

const NAMES: &[&str] = &[
    "io_uring",
    "single_issuer",
    "defer_taskrun",
    "ext_arg",
    "nodrop",
    "epoll_wait",
    "msg_ring",
];

/// The features [`PRETEND_MISSING_ENV`] names.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pretend {
    names: Vec<&'static str>,
}

impl Pretend {
    pub(crate) fn from_env() -> io::Result<Pretend> {
        let Ok(v) = std::env::var(PRETEND_MISSING_ENV) else {
            return Ok(Pretend::default());
        };
        let mut names = Vec::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match NAMES.iter().find(|n| **n == part) {
                Some(n) => names.push(*n),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{PRETEND_MISSING_ENV}: unknown feature {part:?}; expected some of {}",
                            NAMES.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(Pretend { names })
    }

    pub(crate) fn missing(&self, name: &str) -> bool {
        self.names.contains(&name)
    }
}

/// The error of an io_uring backend the kernel refuses, with the reason.
pub(crate) fn unsupported(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("io_uring backend unavailable: {why}"),
    )
}

/// Why `io_uring_setup` failed, in words.
pub(crate) fn setup_refused(e: io::Error, flags: &str) -> io::Error {
    match Errno::from_io_error(&e) {
        // Out of descriptors or memory: the caller's problem, not the kernel's.
        Some(Errno::MFILE | Errno::NFILE | Errno::NOMEM) => e,
        Some(Errno::INVAL) => unsupported(&format!(
            "io_uring_setup refused {flags} (Linux 6.1 or later has them): {e}"
        )),
        Some(Errno::PERM | Errno::ACCESS) => match disabled_sysctl() {
            Some(n) => unsupported(&format!(
                "io_uring is turned off by the kernel.io_uring_disabled sysctl (= {n}; \
                 0 turns it on, 1 allows it to the io_uring_group only)"
            )),
            None => unsupported(&format!(
                "io_uring_setup was refused ({e}): a seccomp filter (Docker's default \
                 profile blocks io_uring) or a security module forbids it"
            )),
        },
        Some(Errno::NOSYS) => unsupported(&format!(
            "the kernel has no io_uring_setup ({e}): built without io_uring, or a seccomp \
             filter answers ENOSYS for it"
        )),
        _ => unsupported(&format!("io_uring_setup failed: {e}")),
    }
}

/// `kernel.io_uring_disabled`, where the kernel has it (6.6) and it is not 0.
fn disabled_sysctl() -> Option<u32> {
    let v: u32 = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (v != 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_setup_says_why_in_words() {
        let e = setup_refused(io::Error::from_raw_os_error(libc::ENOSYS), "x");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("seccomp"), "{e}");
        let e = setup_refused(io::Error::from_raw_os_error(libc::EINVAL), "SINGLE_ISSUER");
        assert!(e.to_string().contains("6.1"), "{e}");
        let e = setup_refused(io::Error::from_raw_os_error(libc::EPERM), "x");
        assert!(
            e.to_string().contains("io_uring_disabled") || e.to_string().contains("seccomp"),
            "{e}"
        );
        // Running out of descriptors is not the kernel refusing io_uring.
        let e = setup_refused(io::Error::from_raw_os_error(libc::EMFILE), "x");
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
    }
}
