//! The kernel's `EINVAL` cases, and the buffer-size rules behind them, held
//! against `counter::Model` on a real eventfd.
//!
//! `EventFd` itself always passes valid flags and 8-byte buffers; these
//! tests go around it with raw system calls, so that the model (which the
//! property tests and the fuzz targets trust) is checked on every input the
//! kernel can be given, not only on the ones the wrapper produces.

mod util;

use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::sync::mpsc;
use std::time::Duration;

use rouse_sys::counter::{Model, Outcome, VALID_RAW_FLAGS};
use rouse_sys::{EventFd, EventFdFlags};
use rustix::event::EventfdFlags;
use rustix::io::{Errno, ReadWriteFlags};
use util::fdinfo_count;

/// What a raw result means to the model.
fn outcome<T>(result: rustix::io::Result<T>) -> Outcome<T> {
    Outcome::from_result(result.map_err(std::io::Error::from)).expect("an error the model lacks")
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

const MODES: [EventFdFlags; 2] = [EventFdFlags::empty(), EventFdFlags::SEMAPHORE];

#[test]
fn every_flag_bit_but_the_three_known_ones_is_refused_as_the_model_says() {
    for bit in 0..32 {
        let raw = 1u32 << bit;
        let kernel = rustix::event::eventfd(7, EventfdFlags::from_bits_retain(raw));
        let model = Model::from_raw_flags(7, raw);
        match (&kernel, &model) {
            (Ok(fd), Some(m)) => assert_eq!(fdinfo_count(fd), m.count(), "bit {bit}"),
            (Err(e), None) => assert_eq!(*e, Errno::INVAL, "bit {bit}"),
            _ => panic!(
                "bit {bit}: kernel {:?}, model {:?}",
                kernel.map(drop),
                model
            ),
        }
        // The wrapper refuses the same bits with the kernel's own error
        // (without making the call), so that code matching on errno works.
        let wrapped = EventFd::new(7, EventFdFlags::from_bits_retain(raw));
        assert_eq!(wrapped.is_ok(), model.is_some(), "bit {bit}");
        if let Err(e) = wrapped {
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert_eq!(e.raw_os_error(), Some(Errno::INVAL.raw_os_error()), "{e}");
        }
    }
    assert!(Model::from_raw_flags(0, VALID_RAW_FLAGS).is_some());
    assert!(rustix::event::eventfd(0, EventfdFlags::from_bits_retain(VALID_RAW_FLAGS)).is_ok());
}

#[test]
fn reads_of_fewer_than_8_bytes_are_invalid_and_longer_ones_fill_only_8() {
    for mode in MODES {
        for count in [0u32, 3] {
            for len in 0..=16 {
                let flags = mode | EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC;
                let fd = EventFd::new(count, flags).unwrap();
                let mut model = Model::new(count, flags);
                let mut buf = [0xa5u8; 16];
                let got = outcome(rustix::io::read(&fd, &mut buf[..len]));
                let want = model.read_buf(len, false);
                match (got, want) {
                    (Outcome::Done(n), Outcome::Done(v)) => {
                        assert_eq!(n, 8, "len {len}: bytes read");
                        assert_eq!(u64::from_ne_bytes(buf[..8].try_into().unwrap()), v);
                        assert!(buf[8..].iter().all(|&b| b == 0xa5), "bytes past 8 changed");
                    }
                    (got, want) => assert_eq!(
                        got.map(drop),
                        want.map(drop),
                        "{mode:?}, count {count}, len {len}"
                    ),
                }
                assert_eq!(fdinfo_count(&fd), model.count(), "len {len}");
            }
        }
    }
}

#[test]
fn a_short_read_is_invalid_at_once_even_where_it_would_block() {
    let fd = EventFd::new(0, EventFdFlags::CLOEXEC).unwrap();
    let mut model = Model::new(0, EventFdFlags::empty());
    assert_eq!(model.read_buf(7, false), Outcome::InvalidInput);
    assert_eq!(model.read_buf(8, false), Outcome::Blocks);
    // On a blocking eventfd at 0 this returns at once; a wrong model would
    // hang here, so the call runs on a thread that is given a deadline.
    let (tx, rx) = mpsc::channel();
    let fd = std::sync::Arc::new(fd);
    let reader = {
        let fd = std::sync::Arc::clone(&fd);
        std::thread::spawn(move || {
            let mut buf = [0u8; 7];
            tx.send(rustix::io::read(&*fd, &mut buf)).unwrap();
        })
    };
    let got = rx.recv_timeout(Duration::from_secs(10));
    if got.is_err() {
        // Release the reader before failing, so the test process can end.
        fd.write(1).unwrap();
    }
    reader.join().unwrap();
    assert_eq!(got.expect("a 7-byte read blocked"), Err(Errno::INVAL));
}

#[test]
fn writes_of_any_length_but_8_are_invalid_and_change_nothing() {
    // Before Linux 6.9 a longer buffer had its first 8 bytes added; the
    // model follows the kernel this crate is tested on.
    let strict = kernel_version() >= (6, 9);
    if !strict {
        println!(
            "kernel {:?} is older than 6.9: writes longer than 8 bytes are not checked",
            kernel_version()
        );
    }
    for mode in MODES {
        for len in 0..=16 {
            if len > 8 && !strict {
                continue;
            }
            let flags = mode | EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC;
            let fd = EventFd::new(5, flags).unwrap();
            let mut model = Model::new(5, flags);
            let mut buf = [0u8; 16];
            buf[..8].copy_from_slice(&2u64.to_ne_bytes());
            let got = outcome(rustix::io::write(&fd, &buf[..len]));
            let want = model.write_buf(len, 2);
            assert_eq!(got.map(drop), want, "{mode:?}, len {len}");
            assert_eq!(fdinfo_count(&fd), model.count(), "len {len}");
        }
    }
}

#[test]
fn a_nowait_read_at_zero_is_would_block_even_on_a_blocking_eventfd() {
    for mode in MODES {
        let fd = EventFd::new(0, mode | EventFdFlags::CLOEXEC).unwrap();
        let mut model = Model::new(0, mode);
        let mut buf = [0u8; 8];
        let mut read_nowait = || {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            // An offset of u64::MAX uses the file position, as readv does.
            outcome(rustix::io::preadv2(
                &fd,
                &mut bufs,
                u64::MAX,
                ReadWriteFlags::NOWAIT,
            ))
        };
        let got = read_nowait();
        assert_eq!(got, Outcome::WouldBlock, "{mode:?}");
        assert_eq!(model.read_buf(8, true), Outcome::WouldBlock);
        fd.write(4).unwrap();
        model.write(4);
        assert_eq!(read_nowait(), Outcome::Done(8));
        let want = model.read_buf(8, true);
        assert_eq!(Outcome::Done(u64::from_ne_bytes(buf)), want, "{mode:?}");
        assert_eq!(fdinfo_count(&fd), model.count());
    }
}

#[test]
fn vectored_reads_count_the_total_length_and_vectored_writes_go_slice_by_slice() {
    let fd = EventFd::new(6, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC).unwrap();

    // readv: only the total length counts, so 4 + 4 is a valid read...
    let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
    let n = rustix::io::readv(&fd, &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)]);
    assert_eq!(n, Ok(8));
    let value = u64::from_ne_bytes([a, b].concat().try_into().unwrap());
    assert_eq!(value, 6);
    // ...4 + 3 is not, and nothing at all is a no-op that returns 0.
    fd.write(1).unwrap();
    let (mut a, mut b) = ([0u8; 4], [0u8; 3]);
    let n = rustix::io::readv(&fd, &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)]);
    assert_eq!(n, Err(Errno::INVAL));
    assert_eq!(rustix::io::readv(&fd, &mut []), Ok(0));
    assert_eq!(fdinfo_count(&fd), 1);

    // writev: each slice is a write of its own, so 8 + 8 adds both values...
    let (x, y) = (2u64.to_ne_bytes(), 3u64.to_ne_bytes());
    let n = rustix::io::writev(&fd, &[IoSlice::new(&x), IoSlice::new(&y)]);
    assert_eq!(n, Ok(16));
    assert_eq!(fdinfo_count(&fd), 6);
    // ...and 4 + 4 fails on the first slice, adding nothing.
    let n = rustix::io::writev(&fd, &[IoSlice::new(&x[..4]), IoSlice::new(&x[4..])]);
    assert_eq!(n, Err(Errno::INVAL));
    assert_eq!(rustix::io::writev(&fd, &[]), Ok(0));
    assert_eq!(fdinfo_count(&fd), 6);
}
