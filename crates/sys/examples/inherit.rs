//! An eventfd shared across `exec`: the parent creates it without
//! `CLOEXEC`, starts children that each write a value, and reads the sum.
//!
//! ```text
//! cargo run -p rouse-sys --example inherit
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use rouse_sys::{EventFd, EventFdFlags};

const FD_VAR: &str = "INHERIT_EVENTFD";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(raw) = std::env::var(FD_VAR) {
        // Child: adopt the inherited descriptor and add our value.
        let raw: i32 = raw.parse()?;
        let value: u64 = std::env::args().nth(1).ok_or("missing value")?.parse()?;
        // SAFETY: the parent left this descriptor open across exec for this
        // process, and nothing else here owns it. `from_owned` checks that it
        // is an open eventfd.
        let fd = EventFd::from_owned(unsafe { OwnedFd::from_raw_fd(raw) })?;
        fd.write(value)?;
        return Ok(());
    }

    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--help" | "-h") => {
            println!("usage: inherit (no arguments)");
            return Ok(());
        }
        Some(_) => {
            eprintln!("usage: inherit (no arguments)\nerror: it takes no arguments");
            std::process::exit(2);
        }
    }
    // Parent: no CLOEXEC, so that the children inherit the descriptor.
    let fd = EventFd::new(0, EventFdFlags::empty())?;
    let me = std::env::current_exe()?;
    let values = [3u64, 5, 8, 13];
    for v in values {
        let status = Command::new(&me)
            .arg(v.to_string())
            .env(FD_VAR, fd.as_raw_fd().to_string())
            .status()?;
        assert!(status.success(), "child failed: {status}");
    }
    let sum = fd.read()?;
    println!("children wrote {values:?}; the parent read their sum: {sum}");
    assert_eq!(sum, values.iter().sum::<u64>());
    Ok(())
}
