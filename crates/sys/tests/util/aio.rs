//! Kernel-side eventfd signals, driven by Linux AIO.
//!
//! An AIO write to `/dev/null` submitted with `IOCB_FLAG_RESFD` makes the
//! kernel call `eventfd_signal()` on completion: the only way to add to an
//! eventfd's counter from the kernel side, and so the only way to reach
//! `u64::MAX`.

use std::os::fd::{AsFd, AsRawFd};

const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_FLAG_RESFD: u32 = 1;

/// `struct iocb` from `<linux/aio_abi.h>` (little-endian field order).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// One AIO context and an open `/dev/null`, reused for every signal.
pub(crate) struct KernelSignal {
    ctx: libc::c_ulong,
    null: std::fs::File,
}

impl KernelSignal {
    /// Sets up an AIO context, or says why the kernel refuses one.
    pub(crate) fn new() -> Result<KernelSignal, std::io::Error> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context id into `ctx`, which lives
        // for the call.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, 1 as libc::c_long, &mut ctx) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        Ok(KernelSignal { ctx, null })
    }

    /// Completes one AIO write whose completion signals `fd` once.
    pub(crate) fn signal(&self, fd: impl AsFd) {
        let byte = [0u8; 1];
        let mut cb = Iocb {
            aio_lio_opcode: IOCB_CMD_PWRITE,
            aio_fildes: self.null.as_raw_fd() as u32,
            aio_buf: byte.as_ptr() as u64,
            aio_nbytes: 1,
            aio_flags: IOCB_FLAG_RESFD,
            aio_resfd: fd.as_fd().as_raw_fd() as u32,
            ..Iocb::default()
        };
        let mut cbs = [&mut cb as *mut Iocb];
        // SAFETY: `cb` and `byte` outlive the request: io_getevents below
        // waits for its completion before either is dropped.
        let n = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.ctx,
                1 as libc::c_long,
                cbs.as_mut_ptr(),
            )
        };
        assert_eq!(n, 1, "io_submit: {}", std::io::Error::last_os_error());
        let mut ev = IoEvent::default();
        // SAFETY: room for exactly one event; a null timeout waits for it.
        let n = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.ctx,
                1 as libc::c_long,
                1 as libc::c_long,
                &mut ev as *mut IoEvent,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        assert_eq!(n, 1, "io_getevents: {}", std::io::Error::last_os_error());
        assert_eq!(ev.res, 1, "the write to /dev/null failed");
    }
}

impl Drop for KernelSignal {
    fn drop(&mut self) {
        // SAFETY: the context is ours and no request is in flight.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}
