//! An eventfd shared with a child process.
//!
//! This test binary runs without libtest's harness because it re-executes
//! itself as the child: with `ROUSE_TEST_CHILD_FD` set it plays the child,
//! otherwise it runs the parent side of each case.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, ExitCode};

use rouse_sys::{EventFd, EventFdFlags};

const CHILD_FD: &str = "ROUSE_TEST_CHILD_FD";
/// The child's exit code when the descriptor it was given is not an open eventfd.
const NOT_INHERITED: i32 = 3;

fn main() -> ExitCode {
    if let Ok(raw) = std::env::var(CHILD_FD) {
        return child(raw.parse().expect("the parent passes a descriptor number"));
    }
    let cases: [(&str, fn()); 2] = [
        (
            "child_writes_reach_the_parent_through_an_inherited_eventfd",
            child_writes_reach_the_parent_through_an_inherited_eventfd,
        ),
        (
            "a_cloexec_eventfd_is_not_inherited",
            a_cloexec_eventfd_is_not_inherited,
        ),
    ];
    for (name, case) in cases {
        print!("test {name} ... ");
        case();
        println!("ok");
    }
    println!("\ntest result: ok. {} passed; 0 failed", cases.len());
    ExitCode::SUCCESS
}

/// Adopts the inherited descriptor and writes 1 through 10 to it.
fn child(raw: i32) -> ExitCode {
    // SAFETY: the parent names a descriptor it left open across exec for this
    // process alone; nothing else in this process owns that number. If it was
    // not inherited, `from_owned` refuses it and it is forgotten, not closed.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    match EventFd::from_owned(fd) {
        Ok(fd) => {
            for n in 1..=10 {
                fd.write(n).expect("write to the inherited eventfd");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Why, for the parent to show if it did not expect this; the
            // parent reads it, so a passing run prints nothing.
            eprintln!("{e}");
            std::mem::forget(e.into_fd());
            ExitCode::from(NOT_INHERITED as u8)
        }
    }
}

/// Runs the child on `fd`: its exit status and what it said on stderr.
fn run_child(fd: &EventFd) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_FD, fd.as_raw_fd().to_string())
        .output()
        .expect("spawn the child");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn child_writes_reach_the_parent_through_an_inherited_eventfd() {
    // No CLOEXEC: the child inherits the descriptor.
    let fd = EventFd::new(0, EventFdFlags::NONBLOCK).unwrap();
    let (status, said) = run_child(&fd);
    assert!(status.success(), "child failed: {status}: {said}");
    assert_eq!(fd.read().unwrap(), 55);
}

fn a_cloexec_eventfd_is_not_inherited() {
    let fd = EventFd::new(0, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC).unwrap();
    let (status, said) = run_child(&fd);
    assert_eq!(
        status.code(),
        Some(NOT_INHERITED),
        "child: {status}: {said}"
    );
    assert!(
        said.contains("cannot be adopted as an eventfd"),
        "the child saw no eventfd, and said: {said}"
    );
    assert_eq!(
        fd.read().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}
