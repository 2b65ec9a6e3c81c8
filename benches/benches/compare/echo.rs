//! Groups `echo` and `echo_2loops`: TCP echo on loopback, 64-byte messages,
//! one in flight per connection, driven by the same event-driven client for
//! every row (`crates/loop/examples/common/load.rs`).
//!
//! * `echo`: one server thread on CPU 0 (a rouse loop, or a tokio
//!   `current_thread` runtime), the client on CPU 1;
//!   — and beside them the rouse server written with operations on io_uring
//!   (`rouse_ops`), mio, and monoio on its io_uring driver;
//! * `echo_2loops`: two server threads on CPUs 0 and 1 (a rouse
//!   `LoopGroup` handing connections off or accepting with `SO_REUSEPORT`,
//!   the same with operations, tokio's multi-thread runtime with 2 workers,
//!   one tokio `current_thread` runtime per CPU with `SO_REUSEPORT`, one
//!   monoio runtime per CPU with `SO_REUSEPORT`), the client unpinned beside
//!   them (this machine has two CPUs);
//! * `echo_2loops_unpinned`: the same servers unpinned, and the client
//!   pinned to CPU 1, the placement most users have (64 connections).
//!
//! Each at 64 and at 1,000 connections. Each row also records the RSS it
//! adds per connection (server and client, which is the same for all rows),
//! and what the server threads alone cost per message: their user and
//! system CPU time, and their system calls (`ServerThreads`), in
//! `server.tsv`.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rouse_benches::{Counts, ServerCost, ServerThreads, pin, record_line};
use rouse_loop::{Backend, EventLoop, LoopGroup, Poller};

use crate::{Bench, Runner};

#[allow(dead_code, unreachable_pub)]
#[path = "../../../crates/loop/examples/common/echo_server.rs"]
mod echo_server;
#[allow(dead_code, unreachable_pub)]
#[path = "../../../crates/loop/examples/common/load.rs"]
mod load;

use load::Client;

const SIZE: usize = 64;

/// A running server, stopped (threads joined, sockets closed) on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<Box<dyn FnOnce()>>,
    threads: ServerThreads,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// A row: a server and its client's connections, and what the server's
/// threads cost over the runs.
struct Echo {
    id: String,
    // Dropped first: the connections close before the server stops.
    client: Client,
    server: Server,
    messages: u64,
    cost: ServerCost,
}

impl Runner for Echo {
    fn run(&mut self, messages: u64) -> Duration {
        let before = self.server.threads.cost();
        let took = self
            .client
            .run(messages, SIZE)
            .expect("the echo load failed");
        let after = self.server.threads.cost();
        self.messages += messages;
        self.cost.user += after.user - before.user;
        self.cost.system += after.system - before.system;
        self.cost.syscalls = match (self.cost.syscalls, before.syscalls, after.syscalls) {
            (Some(t), Some(b), Some(a)) => Some(t + (a - b)),
            _ => None,
        };
        took
    }

    fn counts(&self) -> Option<Counts> {
        None
    }
}

impl Drop for Echo {
    /// Writes what the server cost, per message, over every run of this
    /// runner: `id, messages, user s, system s, system calls (or -)`.
    fn drop(&mut self) {
        if self.messages > 0 {
            let syscalls = self.cost.syscalls.map_or("-".into(), |n| n.to_string());
            record_line(
                "server.tsv",
                &format!(
                    "{}\t{}\t{}\t{}\t{syscalls}",
                    self.id, self.messages, self.cost.user, self.cost.system
                ),
            );
        }
    }
}

/// Resident set size, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(0, |pages| pages * rustix::param::page_size() as u64)
}

/// Starts `server`, connects `connections`, echoes a message on each (so
/// that every connection is accepted and has its state), and records the
/// RSS that added per connection.
fn row(
    id: &str,
    connections: usize,
    client_cpus: Vec<usize>,
    server: impl FnOnce() -> std::io::Result<Server>,
) -> Result<Echo, String> {
    rouse_benches::raise_fd_limit().map_err(|e| e.to_string())?;
    let before = rss();
    let server = server().map_err(|e| e.to_string())?;
    let mut client =
        Client::connect(server.addr, connections, 1, client_cpus).map_err(|e| e.to_string())?;
    client
        .run(connections as u64, SIZE)
        .map_err(|e| e.to_string())?;
    let per = rss().saturating_sub(before) as f64 / connections as f64;
    record_line("rss.tsv", &format!("{id}\t{per}"));
    Ok(Echo {
        id: id.to_string(),
        client,
        server,
        messages: 0,
        cost: ServerCost {
            syscalls: Some(0),
            ..ServerCost::default()
        },
    })
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

/// One rouse loop on its own thread, pinned to CPU 0: the readiness
/// server on the default backend, or (`ops`) the server written with
/// operations on io_uring.
fn rouse_one(ops: bool) -> std::io::Result<Server> {
    let poller = if ops {
        Poller::with_backend(Backend::IoUring)?
    } else {
        Poller::new()?
    };
    rouse_pinned(poller, move |lp, listener| {
        if ops {
            echo_server::serve_ops(lp, listener).map(drop)
        } else {
            echo_server::serve(lp, listener).map(drop)
        }
    })
}

/// One rouse loop (io_uring) pinned to CPU 0, the server written as async
/// tasks: one accepting, one per connection receiving and sending with
/// operation futures.
fn rouse_tasks() -> std::io::Result<Server> {
    use rouse_loop::{SharedFd, task};
    let poller = Poller::with_backend(Backend::IoUring)?;
    rouse_pinned(poller, |lp, listener| {
        let listener = SharedFd::new(listener);
        lp.spawn_local(async move {
            loop {
                let Ok(conn) = task::accept(&listener).await else {
                    continue;
                };
                let stream = std::net::TcpStream::from(conn);
                let _ = stream.set_nodelay(true);
                let sock = SharedFd::new(stream);
                task::spawn_local(async move {
                    let mut buf = Vec::with_capacity(16 * 1024);
                    loop {
                        buf.clear();
                        let (n, b) = task::recv(&sock, buf).await;
                        buf = b;
                        match n {
                            Ok(n) if n > 0 => {}
                            _ => return,
                        }
                        let (sent, b) = task::send(&sock, buf).await;
                        buf = b;
                        if sent.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(())
    })
}

/// A rouse loop on `poller`, on a thread pinned to CPU 0 (counted as the
/// server's), serving a loopback listener as `serve` sets it up.
fn rouse_pinned(
    poller: Poller,
    serve: impl FnOnce(&mut EventLoop, TcpListener) -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<Server> {
    let listener = TcpListener::bind(loopback())?;
    let addr = listener.local_addr()?;
    let threads = ServerThreads::default();
    let probe = threads.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        pin(0);
        probe.register();
        let mut lp = EventLoop::with_poller(poller).unwrap();
        serve(&mut lp, listener).unwrap();
        tx.send(lp.handle()).unwrap();
        lp.run().unwrap();
    });
    let handle = rx.recv().map_err(std::io::Error::other)?;
    Ok(Server {
        addr,
        stop: Some(Box::new(move || {
            let _ = handle.quit();
            let _ = thread.join();
        })),
        threads,
    })
}

/// How a two-loop rouse server accepts.
#[derive(Clone, Copy)]
enum Design {
    Handoff,
    Reuseport,
    /// With operations on io_uring, `SO_REUSEPORT`.
    Ops,
}

/// Two rouse loops, pinned to CPUs 0 and 1 or not.
fn rouse_two(design: Design, pinned: bool) -> std::io::Result<Server> {
    let threads = ServerThreads::default();
    let probe = threads.clone();
    let mut builder = LoopGroup::builder(2).on_start(move |_, _| {
        probe.register();
        Ok(())
    });
    if pinned {
        builder = builder.pin_to([0, 1]);
    }
    if let Design::Ops = design {
        builder = builder.backend(Backend::IoUring);
    }
    let group = builder.build().map_err(std::io::Error::from)?;
    let (addr, _) = match design {
        Design::Handoff => echo_server::serve_group(&group, loopback(), true)?,
        Design::Reuseport => echo_server::serve_group(&group, loopback(), false)?,
        Design::Ops => echo_server::serve_group_ops(&group, loopback())?,
    };
    Ok(Server {
        addr,
        stop: Some(Box::new(move || drop(group.shutdown()))),
        threads,
    })
}

/// The tokio echo: read up to 16 KiB, write it back.
async fn tokio_echo(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Accepts on `listener` until `stop` fires, spawning an echo per
/// connection.
async fn tokio_accept(listener: std::net::TcpListener, stop: tokio::sync::oneshot::Receiver<()>) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let accept = async {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(tokio_echo(stream));
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stop => {}
    }
}

/// One tokio `current_thread` runtime per listener, each on its own thread
/// pinned to `cpus[i]`.
fn tokio_current_thread(listeners: Vec<TcpListener>, cpus: Vec<usize>) -> std::io::Result<Server> {
    let addr = listeners[0].local_addr()?;
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    let probes = ServerThreads::default();
    for (listener, cpu) in listeners.into_iter().zip(cpus) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        stops.push(stop_tx);
        let probe = probes.clone();
        threads.push(std::thread::spawn(move || {
            pin(cpu);
            probe.register();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(tokio_accept(listener, stop_rx));
        }));
    }
    Ok(Server {
        addr,
        stop: Some(Box::new(move || {
            for s in stops {
                let _ = s.send(());
            }
            for t in threads {
                let _ = t.join();
            }
        })),
        threads: probes,
    })
}

/// tokio's multi-thread runtime with two workers, pinned to CPUs 0 and 1 or
/// not.
fn tokio_multi_thread(pinned: bool) -> std::io::Result<Server> {
    let listener = TcpListener::bind(loopback())?;
    let addr = listener.local_addr()?;
    let next_cpu = std::sync::atomic::AtomicUsize::new(0);
    let threads = ServerThreads::default();
    let probe = threads.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            if pinned {
                pin(next_cpu.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2);
            }
            probe.register();
        })
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    rt.spawn(tokio_accept(listener, stop_rx));
    Ok(Server {
        addr,
        stop: Some(Box::new(move || {
            let _ = stop_tx.send(());
            rt.shutdown_timeout(Duration::from_secs(5));
        })),
        threads,
    })
}

/// monoio's echo: read into a buffer it owns, write it back.
async fn monoio_echo(mut stream: monoio::net::TcpStream) {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (r, b) = stream.read(buf).await;
        buf = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (r, b) = stream.write_all(buf).await;
        buf = b;
        if r.is_err() {
            return;
        }
        buf.clear();
    }
}

/// One monoio runtime (io_uring driver) per listener, each on its own
/// thread, pinned to `cpus[i]` if given.
fn monoio_per_core(
    listeners: Vec<TcpListener>,
    cpus: Vec<Option<usize>>,
) -> std::io::Result<Server> {
    let addr = listeners[0].local_addr()?;
    let probes = ServerThreads::default();
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for (listener, cpu) in listeners.into_iter().zip(cpus) {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        stops.push(std::sync::Arc::clone(&stop));
        let (probe, ready) = (probes.clone(), ready_tx.clone());
        threads.push(std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin(cpu);
            }
            probe.register();
            let mut rt = match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = monoio::net::TcpListener::from_std(listener).unwrap();
                let _ = ready.send(Ok(()));
                // Stopped by a last connection made after `stop` is set
                // (a cancelled accept could lose a connection).
                loop {
                    let accepted = listener.accept().await;
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    if let Ok((stream, _)) = accepted {
                        monoio::spawn(monoio_echo(stream));
                    }
                }
            });
        }));
    }
    for _ in 0..threads.len() {
        ready_rx.recv().map_err(std::io::Error::other)??;
    }
    Ok(Server {
        addr,
        stop: Some(Box::new(move || {
            for s in &stops {
                s.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            // One connection per listener ends its accept loop (with
            // SO_REUSEPORT the kernel picks the listener: keep connecting
            // until every thread is done).
            let mut pokes = Vec::new();
            while threads.iter().any(|t| !t.is_finished()) && pokes.len() < 1000 {
                if let Ok(c) = std::net::TcpStream::connect(addr) {
                    pokes.push(c);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            for t in threads {
                let _ = t.join();
            }
        })),
        threads: probes,
    })
}

/// A mio echo server on one thread pinned to CPU 0: edge-triggered, each
/// readable connection read until `WouldBlock` and written straight back
/// (what the socket does not take waits for writability).
fn mio_one() -> std::io::Result<Server> {
    use std::io::{ErrorKind, Read, Write};
    let listener = TcpListener::bind(loopback())?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let threads = ServerThreads::default();
    let probe = threads.clone();
    let mut poll = mio::Poll::new()?;
    let waker = std::sync::Arc::new(mio::Waker::new(
        poll.registry(),
        mio::Token(usize::MAX - 1),
    )?);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = std::sync::Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        pin(0);
        probe.register();
        let mut listener = mio::net::TcpListener::from_std(listener);
        poll.registry()
            .register(
                &mut listener,
                mio::Token(usize::MAX - 2),
                mio::Interest::READABLE,
            )
            .unwrap();
        let mut conns: Vec<Option<(mio::net::TcpStream, Vec<u8>)>> = Vec::new();
        let mut events = mio::Events::with_capacity(1024);
        let mut buf = vec![0u8; 16 * 1024];
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = poll.poll(&mut events, None) {
                assert_eq!(e.kind(), ErrorKind::Interrupted, "mio poll: {e}");
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    mio::Token(t) if t == usize::MAX - 2 => loop {
                        match listener.accept() {
                            Ok((mut s, _)) => {
                                let _ = s.set_nodelay(true);
                                let token = mio::Token(conns.len());
                                poll.registry()
                                    .register(
                                        &mut s,
                                        token,
                                        mio::Interest::READABLE | mio::Interest::WRITABLE,
                                    )
                                    .unwrap();
                                conns.push(Some((s, Vec::new())));
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => break,
                        }
                    },
                    mio::Token(t) if t == usize::MAX - 1 => {}
                    mio::Token(i) => {
                        let Some(Some((s, pending))) = conns.get_mut(i) else {
                            continue;
                        };
                        let mut closed = false;
                        // Flush what waited, then read to WouldBlock.
                        while !pending.is_empty() {
                            match s.write(pending) {
                                Ok(n) => {
                                    pending.drain(..n);
                                }
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        while !closed {
                            match s.read(&mut buf) {
                                Ok(0) => closed = true,
                                Ok(n) => {
                                    let mut at = 0;
                                    if pending.is_empty() {
                                        while at < n {
                                            match s.write(&buf[at..n]) {
                                                Ok(w) => at += w,
                                                Err(_) => break,
                                            }
                                        }
                                    }
                                    pending.extend_from_slice(&buf[at..n]);
                                }
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(_) => closed = true,
                            }
                        }
                        if closed {
                            conns[i] = None;
                        }
                    }
                }
            }
        }
    });
    Ok(Server {
        addr,
        stop: Some(Box::new(move || {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = waker.wake();
            let _ = thread.join();
        })),
        threads,
    })
}

fn leak(name: &str, suffix: &str) -> &'static str {
    Box::leak(format!("{name}_{suffix}").into_boxed_str())
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    let client_cpu = if rouse_benches::cpus() > 1 {
        vec![1]
    } else {
        vec![]
    };
    for (connections, suffix) in [(64, "64"), (1000, "1000")] {
        type Start = fn() -> std::io::Result<Server>;
        let servers: [(&str, Start); 6] = [
            ("rouse_loop", || rouse_one(false)),
            ("rouse_ops", || rouse_one(true)),
            ("rouse_tasks", rouse_tasks),
            ("tokio", || {
                tokio_current_thread(vec![TcpListener::bind(loopback())?], vec![0])
            }),
            ("mio", mio_one),
            ("monoio", || {
                monoio_per_core(vec![TcpListener::bind(loopback())?], vec![Some(0)])
            }),
        ];
        for (name, start) in servers {
            let id = leak(name, suffix);
            let cpus = client_cpu.clone();
            out.push(Bench::new("echo", id, move || {
                row(&format!("echo/{id}"), connections, cpus.clone(), start)
            }));
        }
    }
    for (connections, suffix) in [(64, "64"), (1000, "1000")] {
        let group = "echo_2loops";
        type Start = fn() -> std::io::Result<Server>;
        let servers: [(&str, Start); 6] = [
            ("rouse_handoff", || rouse_two(Design::Handoff, true)),
            ("rouse_reuseport", || rouse_two(Design::Reuseport, true)),
            ("rouse_ops", || rouse_two(Design::Ops, true)),
            ("tokio_multi_thread", || tokio_multi_thread(true)),
            ("tokio_per_core", || {
                let first = echo_server::reuseport_listener(loopback())?;
                let second = echo_server::reuseport_listener(first.local_addr()?)?;
                tokio_current_thread(vec![first, second], vec![0, 1])
            }),
            ("monoio_per_core", || {
                let first = echo_server::reuseport_listener(loopback())?;
                let second = echo_server::reuseport_listener(first.local_addr()?)?;
                monoio_per_core(vec![first, second], vec![Some(0), Some(1)])
            }),
        ];
        for (name, start) in servers {
            let id = leak(name, suffix);
            out.push(Bench::new(group, id, move || {
                row(&format!("{group}/{id}"), connections, Vec::new(), start)
            }));
        }
    }
    // Most users do not pin: the servers float, the client is on CPU 1.
    let group = "echo_2loops_unpinned";
    type Start = fn() -> std::io::Result<Server>;
    let servers: [(&str, Start); 4] = [
        ("rouse_handoff", || rouse_two(Design::Handoff, false)),
        ("rouse_reuseport", || rouse_two(Design::Reuseport, false)),
        ("rouse_ops", || rouse_two(Design::Ops, false)),
        ("tokio_multi_thread", || tokio_multi_thread(false)),
    ];
    for (name, start) in servers {
        let id = leak(name, "64");
        let cpus = client_cpu.clone();
        out.push(Bench::new(group, id, move || {
            row(&format!("{group}/{id}"), 64, cpus.clone(), start)
        }));
    }
}
