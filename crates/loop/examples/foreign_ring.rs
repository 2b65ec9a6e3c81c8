//! A ring the program owns (as a storage library would), its completions
//! delivered on the loop: the loop registers an eventfd with the ring
//! (`IORING_REGISTER_EVENTFD`), watches it, and drains the completion queue
//! when it fires. Here the ring reads a file at random offsets, `DEPTH`
//! reads in flight, each completion submitting the next.
//!
//! ```text
//! cargo run --release -p rouse-loop --example foreign_ring [-- [READS [DEPTH]]]
//! ```

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
}

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use rouse_loop::EventLoop;
use rouse_poll::io_uring::{IoUring, opcode, types};

const USAGE: &str = "usage: foreign_ring [READS [DEPTH]]
  READS  random 4 KiB reads of a 16 MiB file, at least 1 (default 50,000)
  DEPTH  reads in flight, 1 to 256 (default 64)";

const BLOCK: usize = 4096;
const BLOCKS: u64 = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::args::Args::parse(USAGE, 2);
    let reads = args.number(0, "READS", 1, 50_000);
    let depth = args.number(1, "DEPTH", 1, 64) as usize;
    if depth > 256 {
        args.fail("DEPTH is at most 256");
    }
    let path = std::env::temp_dir().join(format!("rouse-foreign-ring-{}", std::process::id()));
    std::fs::write(
        &path,
        (0..BLOCKS as usize * BLOCK)
            .map(|i| i as u8)
            .collect::<Vec<_>>(),
    )?;
    let file = std::fs::File::open(&path)?;
    std::fs::remove_file(&path)?;
    let fd = file.as_raw_fd();

    // The program's own ring, with a buffer per slot that stays put.
    let mut ring = IoUring::new(256)?;
    let mut bufs: Vec<Box<[u8; BLOCK]>> = (0..depth).map(|_| Box::new([0; BLOCK])).collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % BLOCKS
    };
    let read = move |slot: usize, buf: &mut [u8; BLOCK], block: u64| {
        opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), BLOCK as u32)
            .offset(block * BLOCK as u64)
            .build()
            .user_data((block << 16) | slot as u64)
    };
    let started = Rc::new(Cell::new(0u64));
    for (slot, buf) in bufs.iter_mut().enumerate().take(depth.min(reads as usize)) {
        // SAFETY: the buffer is boxed; the boxes move into the watch's
        // callback, with the ring, and live until the loop ends, after
        // every read has completed.
        unsafe { ring.submission().push(&read(slot, buf, next()))? };
        started.set(started.get() + 1);
    }
    ring.submit()?;

    let mut lp = EventLoop::new()?;
    let done = Rc::new(Cell::new(0u64));
    let (s, d) = (Rc::clone(&started), Rc::clone(&done));
    let begin = Instant::now();
    lp.watch_ring(ring, move |cqe, ring, cx| {
        let cqe = cqe.expect("the watched ring");
        assert_eq!(cqe.result(), BLOCK as i32, "a read failed");
        let (block, slot) = (cqe.user_data() >> 16, (cqe.user_data() & 0xffff) as usize);
        // The buffers moved in here with their boxes, which do not move.
        let buf = &mut bufs[slot];
        assert_eq!(buf[1], (block * BLOCK as u64 + 1) as u8, "the bytes read");
        d.set(d.get() + 1);
        if s.get() < reads {
            s.set(s.get() + 1);
            // SAFETY: the slot's box lives in this callback, as above.
            unsafe {
                ring.submission()
                    .push(&read(slot, buf, next()))
                    .expect("room")
            };
            ring.submit().expect("submit");
        } else if d.get() == reads {
            cx.quit();
        }
    })?;
    lp.run()?;
    let took = begin.elapsed();
    println!(
        "{reads} random 4 KiB reads on the program's own ring, {depth} in flight, completed on \
         the loop: {:.2} µs per read",
        took.as_secs_f64() * 1e6 / reads as f64
    );
    Ok(())
}
