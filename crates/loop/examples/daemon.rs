//! A small daemon: a TCP echo server written as async tasks on the loop,
//! that shuts down cleanly on `SIGTERM` or `SIGINT`: it stops accepting,
//! lets the connections in flight finish their echo, and says what it did.
//!
//! The signals are blocked at the very start of `main`, before any thread
//! exists, so that every thread inherits the block and only the loop reads
//! them (through a signalfd).
//!
//! ```text
//! cargo run -p rouse-loop --example daemon -- --listen 127.0.0.1:7000   # until SIGTERM / Ctrl-C
//! cargo run -p rouse-loop --example daemon -- --self-test 100          # 100 echoes, then SIGTERM to itself
//! ```

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
}

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use rouse_loop::{EventLoop, JoinHandle, SharedFd, task};

const USAGE: &str = "usage: daemon --listen ADDR | daemon --self-test ECHOES
  --listen ADDR     serve on ADDR until SIGTERM or SIGINT
  --self-test N     serve on a loopback port, make N echoes (at least 1) from a
                    client thread, then send SIGTERM to this process";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before any thread: every thread inherits the block.
    rouse_sys::signal::block(&[libc::SIGTERM, libc::SIGINT])?;
    let args = common::args::Args::parse(USAGE, 2);
    let (listener, self_test) = match args.all() {
        [flag, addr] if flag == "--listen" => match TcpListener::bind(addr.as_str()) {
            Ok(l) => (l, None),
            Err(e) => args.fail(&format!("cannot listen on {addr:?}: {e}")),
        },
        [flag, _] if flag == "--self-test" => (
            TcpListener::bind("127.0.0.1:0")?,
            Some(args.number(1, "ECHOES", 1, 0)),
        ),
        _ => args.fail("give --listen ADDR or --self-test N"),
    };
    let addr = listener.local_addr()?;
    println!("daemon: serving on {addr}");

    let mut lp = EventLoop::new()?;
    let echoes = Rc::new(Cell::new(0u64));
    let listener = SharedFd::new(listener);
    let e = Rc::clone(&echoes);
    let acceptor: JoinHandle<()> = lp.spawn_local(async move {
        loop {
            let Ok(conn) = task::accept(&listener).await else {
                continue;
            };
            let e = Rc::clone(&e);
            task::spawn_local(async move {
                let sock = SharedFd::new(TcpStream::from(conn));
                let mut buf = Vec::with_capacity(4096);
                loop {
                    buf.clear();
                    let (n, b) = task::recv(&sock, buf).await;
                    buf = b;
                    if !matches!(n, Ok(n) if n > 0) {
                        return;
                    }
                    let (sent, b) = task::send(&sock, buf).await;
                    buf = b;
                    if sent.is_err() {
                        return;
                    }
                    e.set(e.get() + 1);
                }
            });
        }
    });
    let stopping = Rc::new(Cell::new(false));
    let s = Rc::clone(&stopping);
    lp.add_signals(&[libc::SIGTERM, libc::SIGINT], move |info, cx| {
        println!(
            "daemon: signal {} from pid {}: shutting down",
            info.signo, info.pid
        );
        s.set(true);
        // Stop accepting; the connections' tasks finish what is in flight.
        acceptor.abort();
        cx.run_after(Duration::from_millis(100), |cx| cx.quit());
    })?;

    let client = self_test.map(|n| {
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            for i in 0..n {
                let msg = format!("echo {i}\n");
                s.write_all(msg.as_bytes())?;
                let mut back = vec![0; msg.len()];
                s.read_exact(&mut back)?;
                assert_eq!(back, msg.as_bytes());
            }
            drop(s);
            // SAFETY: kill(2) on this process with a signal every thread
            // blocks (so the loop reads it).
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            Ok(())
        })
    });
    lp.run()?;
    if let Some(c) = client {
        c.join().expect("the client panicked")?;
    }
    assert!(stopping.get(), "the loop ended without a signal");
    println!(
        "daemon: shut down cleanly after {} echoes; {} task(s) left",
        echoes.get(),
        lp.task_count()
    );
    Ok(())
}
