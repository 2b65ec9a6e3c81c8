//! File reads with Linux AIO completing on the loop, as nginx reads files
//! with `aio on` and `directio`: `io_submit` with `IOCB_FLAG_RESFD`, an
//! eventfd the loop watches, and `io_getevents` when it is readable. Each
//! completion submits the next read, so that `DEPTH` stay in flight.
//!
//! AIO is asynchronous only with `O_DIRECT` (a buffered read is done inside
//! `io_submit`), so the file is opened that way where the file system
//! allows it, and read into aligned buffers.
//!
//! ```text
//! cargo run --release -p rouse-loop --example aio_read [-- [SIZE_MIB [READS [DEPTH]]]]
//! ```

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
}

use std::cell::Cell;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::time::Instant;

use rouse_loop::{EventLoop, SharedFd};
use rouse_poll::aio::Aio;

const USAGE: &str = "usage: aio_read [SIZE_MIB [READS [DEPTH]]]
  SIZE_MIB  the file's size, at least 1 (default 64)
  READS     random 4 KiB reads, at least 1 (default 20,000)
  DEPTH     reads in flight, 1 to 1,024 (default 64)";

const BLOCK: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::args::Args::parse(USAGE, 3);
    let size_mib = args.number(0, "SIZE_MIB", 1, 64);
    let reads = args.number(1, "READS", 1, 20_000);
    let depth = args.number(2, "DEPTH", 1, 64);
    if depth > 1024 {
        args.fail("DEPTH is at most 1,024");
    }
    let blocks = size_mib * (1 << 20) / BLOCK as u64;
    let path = std::env::temp_dir().join(format!("rouse-aio-read-{}", std::process::id()));
    std::fs::write(
        &path,
        (0..(size_mib as usize) << 20)
            .map(|i| i as u8)
            .collect::<Vec<_>>(),
    )?;
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let (file, how) = match direct {
        Ok(f) => (f, "O_DIRECT"),
        Err(_) => (
            std::fs::File::open(&path)?,
            "buffered (this file system refuses O_DIRECT)",
        ),
    };
    std::fs::remove_file(&path)?;
    let file = SharedFd::new(file);

    let mut aio = Aio::new(depth as u32)?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_block = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % blocks
    };
    let started = Rc::new(Cell::new(0u64));
    let done = Rc::new(Cell::new(0u64));
    for _ in 0..depth.min(reads) {
        let buf = vec![0u8; 2 * BLOCK];
        let at = buf.as_ptr().align_offset(BLOCK);
        aio.read(&file, next_block() * BLOCK as u64, buf, at, BLOCK)?;
        started.set(started.get() + 1);
    }
    let mut lp = EventLoop::new()?;
    let begin = Instant::now();
    let (s, d, f) = (Rc::clone(&started), Rc::clone(&done), file.clone());
    lp.watch_aio(aio, move |c, aio, cx| {
        let c = c.expect("io_getevents");
        assert_eq!(c.result.expect("a read failed"), BLOCK);
        d.set(d.get() + 1);
        if s.get() < reads {
            s.set(s.get() + 1);
            let at = c.buf.as_ptr().align_offset(BLOCK);
            aio.read(&f, next_block() * BLOCK as u64, c.buf, at, BLOCK)
                .expect("submit a read");
        } else if d.get() == reads {
            cx.quit();
        }
    })?;
    lp.run()?;
    let took = begin.elapsed();
    println!(
        "{reads} random 4 KiB AIO reads ({how}), {depth} in flight, completed on the loop: \
         {:.2} µs per read, {:.0} reads/s",
        took.as_secs_f64() * 1e6 / reads as f64,
        reads as f64 / took.as_secs_f64()
    );
    Ok(())
}
