//! A real eventfd against `counter::Model`, both modes, with writes biased to
//! the ceiling and beyond: see `rouse_sys::fuzz::counter`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rouse_sys::fuzz::counter(data));
