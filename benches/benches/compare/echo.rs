//! Groups `echo` and `echo_2loops`: TCP echo on loopback, 64-byte messages,
//! one in flight per connection, driven by the same event-driven client for
//! every row (`crates/loop/examples/common/load.rs`).
//!
//! * `echo`: one server thread on CPU 0 (a rouse loop, or a tokio
//!   `current_thread` runtime), the client on CPU 1;
//! * `echo_2loops`: two server threads on CPUs 0 and 1 (a rouse
//!   `LoopGroup` handing connections off or accepting with `SO_REUSEPORT`,
//!   tokio's multi-thread runtime with 2 workers, or one tokio
//!   `current_thread` runtime per CPU with `SO_REUSEPORT`), the client
//!   unpinned beside them (this machine has two CPUs).
//!
//! Each at 64 and at 1,000 connections. Each row also records the RSS it
//! adds per connection (server and client, which is the same for all rows).

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rouse_benches::{Counts, pin, record_line};
use rouse_loop::{EventLoop, LoopGroup};

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
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// A row: a server and its client's connections.
struct Echo {
    // Dropped first: the connections close before the server stops.
    client: Client,
    _server: Server,
}

impl Runner for Echo {
    fn run(&mut self, messages: u64) -> Duration {
        self.client
            .run(messages, SIZE)
            .expect("the echo load failed")
    }

    fn counts(&self) -> Option<Counts> {
        None
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
        client,
        _server: server,
    })
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

/// One rouse loop on its own thread, pinned to CPU 0.
fn rouse_one() -> std::io::Result<Server> {
    let listener = TcpListener::bind(loopback())?;
    let addr = listener.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        pin(0);
        let mut lp = EventLoop::new().unwrap();
        echo_server::serve(&mut lp, listener).unwrap();
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
    })
}

/// Two rouse loops on CPUs 0 and 1.
fn rouse_two(handoff: bool) -> std::io::Result<Server> {
    let group = LoopGroup::builder(2)
        .pin_to([0, 1])
        .build()
        .map_err(std::io::Error::from)?;
    let (addr, _) = echo_server::serve_group(&group, loopback(), handoff)?;
    Ok(Server {
        addr,
        stop: Some(Box::new(move || drop(group.shutdown()))),
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
    for (listener, cpu) in listeners.into_iter().zip(cpus) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        stops.push(stop_tx);
        threads.push(std::thread::spawn(move || {
            pin(cpu);
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
    })
}

/// tokio's multi-thread runtime with two workers, pinned to CPUs 0 and 1.
fn tokio_multi_thread() -> std::io::Result<Server> {
    let listener = TcpListener::bind(loopback())?;
    let addr = listener.local_addr()?;
    let next_cpu = std::sync::atomic::AtomicUsize::new(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            pin(next_cpu.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2);
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
    })
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    for (connections, suffix) in [(64, "64"), (1000, "1000")] {
        let client_cpu = if rouse_benches::cpus() > 1 {
            vec![1]
        } else {
            vec![]
        };
        let id =
            |name: &str| -> &'static str { Box::leak(format!("{name}_{suffix}").into_boxed_str()) };
        let (rouse, tokio) = (id("rouse_loop"), id("tokio"));
        let cpus = client_cpu.clone();
        out.push(Bench::new("echo", rouse, move || {
            row(
                &format!("echo/{rouse}"),
                connections,
                cpus.clone(),
                rouse_one,
            )
        }));
        let cpus = client_cpu.clone();
        out.push(Bench::new("echo", tokio, move || {
            row(&format!("echo/{tokio}"), connections, cpus.clone(), || {
                tokio_current_thread(vec![TcpListener::bind(loopback())?], vec![0])
            })
        }));
    }
    for (connections, suffix) in [(64, "64"), (1000, "1000")] {
        let id =
            |name: &str| -> &'static str { Box::leak(format!("{name}_{suffix}").into_boxed_str()) };
        let group = "echo_2loops";
        for (name, handoff) in [("rouse_handoff", true), ("rouse_reuseport", false)] {
            let name = id(name);
            out.push(Bench::new(group, name, move || {
                row(&format!("{group}/{name}"), connections, Vec::new(), || {
                    rouse_two(handoff)
                })
            }));
        }
        let name = id("tokio_multi_thread");
        out.push(Bench::new(group, name, move || {
            row(
                &format!("{group}/{name}"),
                connections,
                Vec::new(),
                tokio_multi_thread,
            )
        }));
        let name = id("tokio_per_core");
        out.push(Bench::new(group, name, move || {
            row(&format!("{group}/{name}"), connections, Vec::new(), || {
                let first = echo_server::reuseport_listener(loopback())?;
                let second = echo_server::reuseport_listener(first.local_addr()?)?;
                tokio_current_thread(vec![first, second], vec![0, 1])
            })
        }));
    }
}
