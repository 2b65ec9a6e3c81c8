//! A TCP echo server on the loop.
//!
//! With no arguments it serves on a loopback port and drives itself with a
//! built-in load (64 connections, each sending 64-byte messages and waiting
//! for each echo), then prints messages per second. With `--listen ADDR` it
//! serves until killed.
//!
//! ```text
//! cargo run --release -p rouse-loop --example echo
//! cargo run --release -p rouse-loop --example echo -- --listen 127.0.0.1:7000
//! ```
//!
//! [`serve`] is what the benchmarks load: it registers a listener on a loop
//! and echoes every connection it accepts.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use rouse_loop::{Ctx, EventLoop, Interest, Ready, SourceId};

/// Pending output above which a connection stops reading until its peer
/// catches up.
const HIGH_WATER: usize = 1 << 20;

/// One accepted connection and the echo its peer has not yet taken.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    interest: Interest,
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Registers `listener` on `cx`: every connection it accepts is echoed until
/// its peer closes it.
pub fn serve(cx: &mut Ctx, listener: TcpListener) -> io::Result<SourceId> {
    listener.set_nonblocking(true)?;
    cx.add_source(listener, Interest::READABLE, |listener, _ready, cx| {
        loop {
            match listener.accept() {
                Ok((stream, _peer)) => {
                    if let Err(e) = accept(cx, stream) {
                        eprintln!("echo: dropping a connection: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EMFILE and the like: try again on the next readiness.
                Err(e) => {
                    eprintln!("echo: accept: {e}");
                    break;
                }
            }
        }
    })
}

fn accept(cx: &mut Ctx, stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    let conn = Conn {
        stream,
        pending: Vec::new(),
        interest: Interest::READABLE,
    };
    cx.add_source(conn, Interest::READABLE, on_ready)?;
    Ok(())
}

fn on_ready(conn: &mut Conn, ready: Ready, cx: &mut Ctx) {
    let me = cx.current_source().expect("called as an I/O callback");
    match echo(conn, ready) {
        Ok(true) => {
            // Read when there is room; ask for writability while output waits.
            let mut want = Interest::READABLE;
            if conn.pending.len() >= HIGH_WATER {
                want = Interest::WRITABLE;
            } else if !conn.pending.is_empty() {
                want = Interest::READABLE | Interest::WRITABLE;
            }
            if want != conn.interest && cx.modify_source(me, want).is_ok() {
                conn.interest = want;
            }
        }
        // The peer closed, or the connection failed: either way it is done.
        Ok(false) | Err(_) => {
            let _ = cx.remove_source(me);
        }
    }
}

/// Reads what is there and writes it back. `Ok(false)` once the peer has
/// closed its side and everything has been written.
fn echo(conn: &mut Conn, ready: Ready) -> io::Result<bool> {
    let mut open = true;
    if ready.writable && !flush(conn)? {
        return Ok(true);
    }
    if ready.readable || ready.hangup || ready.error {
        let mut buf = [0u8; 16 * 1024];
        while conn.pending.len() < HIGH_WATER {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    conn.pending.extend_from_slice(&buf[..n]);
                    if !flush(conn)? {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(open || !conn.pending.is_empty())
}

/// Writes pending output; `Ok(true)` when all of it went.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let mut written = 0;
    while written < conn.pending.len() {
        match conn.stream.write(&conn.pending[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.pending.drain(..written);
    Ok(conn.pending.is_empty())
}

/// `connections` clients, each sending `messages` messages of `size` bytes
/// one at a time and reading each echo back whole. Returns messages/s.
pub fn load(
    addr: std::net::SocketAddr,
    connections: usize,
    messages: usize,
    size: usize,
) -> io::Result<f64> {
    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || -> io::Result<()> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                let mut out = vec![0u8; size];
                let mut back = vec![0u8; size];
                for m in 0..messages {
                    out.fill((c + m) as u8);
                    stream.write_all(&out)?;
                    stream.read_exact(&mut back)?;
                    if back != out {
                        return Err(io::Error::other("the echo differs from the message"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client panicked")?;
    }
    Ok((connections * messages) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut lp = EventLoop::new()?;
    match args.as_slice() {
        [flag, addr] if flag == "--listen" => {
            let listener = TcpListener::bind(addr.as_str())?;
            println!("echo: serving on {}", listener.local_addr()?);
            serve(&mut lp, listener)?;
            lp.run()?;
        }
        [] => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            serve(&mut lp, listener)?;
            let handle = lp.handle();
            let (connections, messages, size) = (64, 2_000, 64);
            let client = std::thread::spawn(move || {
                let rate = load(addr, connections, messages, size);
                let _ = handle.queue_in_loop(|cx: &mut Ctx| cx.quit());
                rate
            });
            lp.run()?;
            let rate = client.join().expect("the load panicked")?;
            println!(
                "echo on {:?}: {connections} connections × {messages} messages of {size} bytes: \
                 {:.0} messages/s",
                lp.poller().backend(),
                rate
            );
        }
        _ => return Err("usage: echo [--listen ADDR]".into()),
    }
    Ok(())
}
