//! Interleavings of two wakers and a poller over the real wake state
//! machine, scheduled by the fuzzer's bytes: see
//! `rouse_poll::fuzz::wake_protocol`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rouse_poll::fuzz::wake_protocol(data);
});
