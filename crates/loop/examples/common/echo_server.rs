//! The echo server the `echo` and `echo_group` examples run, and the
//! benchmarks load: on one loop, or on a group of loops with connections
//! handed off by an acceptor or accepted by each loop for itself; written
//! with readiness callbacks, or with operations (`serve_ops`).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rouse_loop::{Ctx, Interest, LoopGroup, LoopHandle, OpId, Ready, SharedFd, SourceId};

/// Pending output above which a connection stops reading until its peer
/// catches up.
const HIGH_WATER: usize = 1 << 20;
/// What one read takes at most.
const READ: usize = 16 * 1024;

thread_local! {
    /// One read buffer per loop thread, allocated (and zeroed) once rather
    /// than on every callback.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ]);
}

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

/// Registers `listener` on `cx`: every connection it accepts is echoed on
/// this loop until its peer closes it.
pub(crate) fn serve(cx: &mut Ctx, listener: TcpListener) -> io::Result<SourceId> {
    serve_counting(cx, listener, Arc::new(AtomicU64::new(0)))
}

/// [`serve`], counting the connections accepted in `accepted`.
pub(crate) fn serve_counting(
    cx: &mut Ctx,
    listener: TcpListener,
    accepted: Arc<AtomicU64>,
) -> io::Result<SourceId> {
    listener.set_nonblocking(true)?;
    cx.add_source(listener, Interest::READABLE, move |listener, _ready, cx| {
        accept_all(listener, |stream| {
            accepted.fetch_add(1, Ordering::Relaxed);
            add_conn(cx, stream)
        });
    })
}

/// Registers `listener` on `cx` as an acceptor that hands each connection to
/// the next of `loops`, round-robin (muduo's `TcpServer`). Returns the
/// count of handoffs, as it grows.
pub(crate) fn serve_handoff(
    cx: &mut Ctx,
    listener: TcpListener,
    loops: Vec<LoopHandle>,
) -> io::Result<Arc<AtomicU64>> {
    listener.set_nonblocking(true)?;
    let handoffs = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handoffs);
    let mut next = 0;
    cx.add_source(
        listener,
        Interest::READABLE,
        move |listener, _ready, _cx| {
            accept_all(listener, |stream| {
                let target = &loops[next % loops.len()];
                next += 1;
                count.fetch_add(1, Ordering::Relaxed);
                // The stream crosses threads; its callback is made over there.
                target
                    .queue_in_loop(move |cx| {
                        if let Err(e) = add_conn(cx, stream) {
                            eprintln!("echo: dropping a connection: {e}");
                        }
                    })
                    .map_err(io::Error::from)
            });
        },
    )?;
    Ok(handoffs)
}

/// A listener on `addr` with `SO_REUSEPORT`, so that several loops can each
/// have one on the same port and the kernel spreads connections over them.
pub(crate) fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(TcpListener::from(fd))
}

/// Serves `addr` on `group`, by handoff from loop 0 or with a
/// `SO_REUSEPORT` listener on every loop; returns the address (with its
/// port, if `addr` asked for any) and the count of connections accepted
/// (the handoffs, in handoff mode).
pub(crate) fn serve_group(
    group: &LoopGroup,
    addr: SocketAddr,
    handoff: bool,
) -> io::Result<(SocketAddr, Arc<AtomicU64>)> {
    if handoff {
        let (tx, rx) = std::sync::mpsc::channel();
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let loops = group.handles().to_vec();
        group
            .get(0)
            .expect("a group has a loop")
            .queue_in_loop(move |cx| {
                let _ = tx.send(serve_handoff(cx, listener, loops));
            })
            .map_err(io::Error::from)?;
        let handoffs = rx.recv().map_err(io::Error::other)??;
        Ok((addr, handoffs))
    } else {
        // The first listener picks the port; the others share it.
        let first = reuseport_listener(addr)?;
        let addr = first.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut listeners = vec![first];
        for _ in 1..group.len() {
            listeners.push(reuseport_listener(addr)?);
        }
        let accepted = Arc::new(AtomicU64::new(0));
        for (h, listener) in group.handles().iter().zip(listeners) {
            let (tx, accepted) = (tx.clone(), Arc::clone(&accepted));
            h.queue_in_loop(move |cx| {
                let _ = tx.send(serve_counting(cx, listener, accepted).map(drop));
            })
            .map_err(io::Error::from)?;
        }
        for _ in 0..group.len() {
            rx.recv().map_err(io::Error::other)??;
        }
        Ok((addr, accepted))
    }
}

/// Accepts until the backlog is empty, handing each stream to `each`.
fn accept_all(listener: &mut TcpListener, mut each: impl FnMut(TcpStream) -> io::Result<()>) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                if let Err(e) = each(stream) {
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
}

fn add_conn(cx: &mut Ctx, stream: TcpStream) -> io::Result<()> {
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
///
/// Readiness is level-triggered, so a read that comes back short has
/// drained the socket: no read to `EAGAIN` follows it. What is read is
/// written straight from the read buffer; only what the socket does not
/// take is copied aside.
fn echo(conn: &mut Conn, ready: Ready) -> io::Result<bool> {
    if ready.writable && !flush(conn)? {
        return Ok(true);
    }
    if !(ready.readable || ready.hangup || ready.error) {
        return Ok(true);
    }
    BUF.with(|buf| {
        let buf = &mut buf.borrow_mut()[..];
        while conn.pending.len() < HIGH_WATER {
            let n = match conn.stream.read(buf) {
                Ok(0) => return Ok(!conn.pending.is_empty()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if conn.pending.is_empty() {
                let written = write_some(&mut conn.stream, &buf[..n])?;
                conn.pending.extend_from_slice(&buf[written..n]);
            } else {
                conn.pending.extend_from_slice(&buf[..n]);
                flush(conn)?;
            }
            if n < buf.len() || !conn.pending.is_empty() {
                break;
            }
        }
        Ok(true)
    })
}

/// Writes as much of `data` as the socket takes now.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Writes pending output; `Ok(true)` when all of it went.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let written = write_some(&mut conn.stream, &conn.pending)?;
    conn.pending.drain(..written);
    Ok(conn.pending.is_empty())
}

/// Registers `listener` on `cx` as an echo server written with operations
/// (completions) only: a multishot accept; per connection, a receive into a
/// buffer of its own, then a send of what came, then the next receive with
/// the same buffer. On io_uring the kernel does every step, and everything
/// an iteration queues goes to the kernel in the one `io_uring_enter` that
/// also waits; on epoll the loop performs the same steps on readiness.
pub(crate) fn serve_ops(cx: &mut Ctx, listener: TcpListener) -> io::Result<OpId> {
    serve_ops_counting(cx, listener, Arc::new(AtomicU64::new(0)))
}

/// [`serve_ops`], counting the connections accepted in `accepted`.
pub(crate) fn serve_ops_counting(
    cx: &mut Ctx,
    listener: TcpListener,
    accepted: Arc<AtomicU64>,
) -> io::Result<OpId> {
    let listener = SharedFd::new(listener);
    cx.accept(&listener, move |conn, cx| match conn {
        Ok(conn) => {
            accepted.fetch_add(1, Ordering::Relaxed);
            let stream = TcpStream::from(conn);
            let _ = stream.set_nodelay(true);
            let sock = SharedFd::new(stream);
            if let Err(e) = recv_then_echo(cx, sock, Vec::with_capacity(READ)) {
                eprintln!("echo: dropping a connection: {e}");
            }
        }
        // ECANCELED when the server stops; EMFILE and the like end it too.
        Err(e) if e.raw_os_error() == Some(125) => {}
        Err(e) => eprintln!("echo: accept: {e}"),
    })
}

/// Receives into `buf`; sends back what came; then receives again.
fn recv_then_echo(cx: &mut Ctx, sock: SharedFd, mut buf: Vec<u8>) -> io::Result<()> {
    buf.clear();
    let s = sock.clone();
    cx.recv(&sock, buf, move |n, buf, cx| match n {
        Ok(n) if n > 0 => {
            let again = s.clone();
            let sent = cx.send(&s, buf, move |r, buf, cx| {
                if r.is_ok() {
                    let _ = recv_then_echo(cx, again, buf);
                }
            });
            if let Err(e) = sent {
                eprintln!("echo: send: {e}");
            }
        }
        // End of file or an error: the connection is done; dropping the
        // last `SharedFd` closes it.
        _ => {}
    })?;
    Ok(())
}

/// [`serve_group`], with [`serve_ops`] on every loop (each with its own
/// `SO_REUSEPORT` listener).
pub(crate) fn serve_group_ops(
    group: &LoopGroup,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, Arc<AtomicU64>)> {
    let first = reuseport_listener(addr)?;
    let addr = first.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut listeners = vec![first];
    for _ in 1..group.len() {
        listeners.push(reuseport_listener(addr)?);
    }
    let accepted = Arc::new(AtomicU64::new(0));
    for (h, listener) in group.handles().iter().zip(listeners) {
        let (tx, accepted) = (tx.clone(), Arc::clone(&accepted));
        h.queue_in_loop(move |cx| {
            let _ = tx.send(serve_ops_counting(cx, listener, accepted).map(drop));
        })
        .map_err(io::Error::from)?;
    }
    for _ in 0..group.len() {
        rx.recv().map_err(io::Error::other)??;
    }
    Ok((addr, accepted))
}

/// Serves `addr` on `group` with operations, by handoff: loop 0 accepts
/// (a multishot accept) and hands each connection to the next loop,
/// round-robin, where it is echoed with operations. Returns the address
/// and the count of handoffs.
pub(crate) fn serve_handoff_ops_group(
    group: &LoopGroup,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let loops = group.handles().to_vec();
    let handoffs = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handoffs);
    let (tx, rx) = std::sync::mpsc::channel();
    group
        .get(0)
        .expect("a group has a loop")
        .queue_in_loop(move |cx| {
            let listener = SharedFd::new(listener);
            let mut next = 0;
            let started = cx.accept(&listener, move |conn, _cx| {
                let Ok(conn) = conn else { return };
                let target = &loops[next % loops.len()];
                next += 1;
                count.fetch_add(1, Ordering::Relaxed);
                let _ = target.queue_in_loop(move |cx| {
                    let stream = TcpStream::from(conn);
                    let _ = stream.set_nodelay(true);
                    let _ = recv_then_echo(cx, SharedFd::new(stream), Vec::with_capacity(READ));
                });
            });
            let _ = tx.send(started.map(drop));
        })
        .map_err(io::Error::from)?;
    rx.recv().map_err(io::Error::other)??;
    Ok((addr, handoffs))
}
