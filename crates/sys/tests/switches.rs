//! Environment switches: the usual spellings of on and off are accepted,
//! and anything else is refused with the variable's name, never ignored.
//!
//! One test in a binary of its own: it sets the environment, which no other
//! thread may read meanwhile.

use std::io::ErrorKind;

use rouse_sys::{FORCE_PIPE_ENV, WakeFd, WakeKind, env_switch};

#[test]
fn switches_accept_on_and_off_and_refuse_the_rest_by_name() {
    let set = |v: &str| {
        // SAFETY: this binary's only test; no other thread touches the
        // environment while it runs.
        unsafe { std::env::set_var(FORCE_PIPE_ENV, v) }
    };
    for on in ["1", "true", "TRUE", "yes", "On"] {
        set(on);
        assert_eq!(env_switch(FORCE_PIPE_ENV).unwrap(), Some(true), "{on}");
        assert_eq!(WakeFd::new().unwrap().kind(), WakeKind::Pipe, "{on}");
    }
    for off in ["0", "false", "No", "off"] {
        set(off);
        assert_eq!(env_switch(FORCE_PIPE_ENV).unwrap(), Some(false), "{off}");
        assert_eq!(WakeFd::new().unwrap().kind(), WakeKind::EventFd, "{off}");
    }
    set("");
    assert_eq!(env_switch(FORCE_PIPE_ENV).unwrap(), None);
    for bad in ["2", "y", "pipe", " 1"] {
        set(bad);
        let e = WakeFd::new().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(e.to_string().contains(FORCE_PIPE_ENV), "{e}");
    }
    // SAFETY: as above.
    unsafe { std::env::remove_var(FORCE_PIPE_ENV) };
    assert_eq!(env_switch(FORCE_PIPE_ENV).unwrap(), None);
}
