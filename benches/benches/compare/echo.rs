//! Group `echo`: the rouse-loop TCP echo example beside a tokio echo server
//! (one `current_thread` runtime, as the loop is one thread), under the
//! same client load on loopback: 64 connections, each sending a 64-byte
//! message and waiting for its echo before the next.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rouse_benches::pin;
use rouse_loop::EventLoop;

use crate::Bench;

#[allow(dead_code, unreachable_pub)]
#[path = "../../../crates/loop/examples/echo.rs"]
mod example;

const CONNECTIONS: u64 = 64;
const SIZE: usize = 64;

/// Runs the rouse-loop echo server on a thread of its own (pinned to CPU 0).
fn rouse_server() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        pin(0);
        let mut lp = EventLoop::new().unwrap();
        example::serve(&mut lp, listener).unwrap();
        lp.run().unwrap();
    });
    Ok(addr)
}

/// Runs a tokio echo server on a `current_thread` runtime on a thread of
/// its own (pinned to CPU 0).
fn tokio_server() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        pin(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
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
                });
            }
        });
    });
    Ok(addr)
}

/// `messages` messages spread over the connections; the time from all
/// connected to all echoed.
fn load(addr: SocketAddr, messages: u64) -> Duration {
    let start = Arc::new(Barrier::new(CONNECTIONS as usize + 1));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let share = messages / CONNECTIONS + u64::from(c < messages % CONNECTIONS);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut out = [0u8; SIZE];
                let mut back = [0u8; SIZE];
                start.wait();
                for m in 0..share {
                    out.fill((c + m) as u8);
                    stream.write_all(&out).unwrap();
                    stream.read_exact(&mut back).unwrap();
                    assert_eq!(back, out, "the echo differs from the message");
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for c in clients {
        c.join().expect("a client panicked");
    }
    began.elapsed()
}

pub(crate) fn benches(out: &mut Vec<Bench>) {
    out.push(Bench::new("echo", "rouse_loop", || {
        let addr = rouse_server()?;
        Ok(move |messages| load(addr, messages))
    }));
    out.push(Bench::new("echo", "tokio", || {
        let addr = tokio_server()?;
        Ok(move |messages| load(addr, messages))
    }));
}
