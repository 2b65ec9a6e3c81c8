//! `WakeFd` wake/consume sequences on both kinds, full objects included:
//! see `rouse_sys::fuzz::wake_fd`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rouse_sys::fuzz::wake_fd(data));
