//! The counter at `u64::MAX`, which only a kernel-side signal can reach.

mod util;

use rouse_sys::counter::{MAX, Model, OVERFLOW, Outcome};
use rouse_sys::{EventFd, EventFdFlags};
use util::aio::KernelSignal;
use util::{fdinfo_count, readiness};

fn kernel_signal() -> Option<KernelSignal> {
    match KernelSignal::new() {
        Ok(k) => Some(k),
        Err(e) => {
            println!("skipped: the kernel refuses an AIO context ({e}), so no kernel-side signal");
            None
        }
    }
}

#[test]
fn a_kernel_signal_at_the_ceiling_reaches_overflow_as_the_model_says() {
    let Some(k) = kernel_signal() else { return };
    for semaphore in [false, true] {
        let mut flags = EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC;
        flags.set(EventFdFlags::SEMAPHORE, semaphore);
        let fd = EventFd::new(0, flags).unwrap();
        let mut model = Model::new(0, flags);
        fd.write(MAX).unwrap();
        assert_eq!(model.write(MAX), Outcome::Done(()));

        k.signal(&fd);
        model.kernel_signal();
        assert_eq!(fdinfo_count(&fd), OVERFLOW);
        assert_eq!(model.count(), OVERFLOW);
        // Readable, with POLLERR, and not writable.
        assert_eq!(readiness(&fd), (true, false, true));
        assert_eq!(
            (model.readable(), model.writable(), model.pollerr()),
            (true, false, true)
        );

        // Another signal saturates instead of wrapping.
        k.signal(&fd);
        model.kernel_signal();
        assert_eq!(fdinfo_count(&fd), OVERFLOW);

        for n in [0, 1, MAX, u64::MAX] {
            let got = Outcome::from_result(fd.write(n)).unwrap();
            assert_eq!(got, model.write(n), "write {n:#x} at OVERFLOW");
        }
        assert_eq!(fdinfo_count(&fd), OVERFLOW);

        let got = Outcome::from_result(fd.read()).unwrap();
        assert_eq!(got, model.read());
        let expected = if semaphore { (1, MAX) } else { (OVERFLOW, 0) };
        assert_eq!(got, Outcome::Done(expected.0));
        assert_eq!(fdinfo_count(&fd), expected.1);
        assert_eq!(model.count(), expected.1);
    }
}

#[test]
fn kernel_signals_add_one_each() {
    let Some(k) = kernel_signal() else { return };
    let fd = EventFd::new(5, EventFdFlags::NONBLOCK).unwrap();
    for _ in 0..3 {
        k.signal(&fd);
    }
    assert_eq!(fd.read().unwrap(), 8);
}
