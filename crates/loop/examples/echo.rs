//! A TCP echo server on one loop.
//!
//! With no arguments it serves on a loopback port and drives itself with a
//! built-in, event-driven load (64 connections by default, each with one
//! 64-byte message in flight, from one client thread on another CPU), then
//! prints messages per second and the loop's system calls per message. With
//! `--listen ADDR` it serves until killed.
//!
//! ```text
//! cargo run --release -p rouse-loop --example echo [-- CONNECTIONS [MESSAGES]]
//! cargo run --release -p rouse-loop --example echo -- --listen 127.0.0.1:7000
//! ```

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
    pub(crate) mod echo_server;
    pub(crate) mod load;
}

use std::net::TcpListener;

use common::{echo_server, load::Client};
use rouse_loop::EventLoop;

const USAGE: &str =
    "usage: echo [--completions] [CONNECTIONS [MESSAGES]] | echo [--completions] --listen ADDR
  --completions  the server written with operations (completions) instead of
                 readiness callbacks
  CONNECTIONS    connections of the built-in load, at least 1 (default 64)
  MESSAGES       messages echoed in all, at least 1 (default 200,000)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (args, flags) = common::args::Args::parse_with_flags(USAGE, 2, &["--completions"]);
    let completions = flags[0];
    let serve = move |lp: &mut EventLoop, listener: TcpListener| -> std::io::Result<()> {
        if completions {
            echo_server::serve_ops(lp, listener).map(drop)
        } else {
            echo_server::serve(lp, listener).map(drop)
        }
    };
    if let [flag, addr] = args.all() {
        if flag == "--listen" {
            let mut lp = EventLoop::new()?;
            let listener = match TcpListener::bind(addr.as_str()) {
                Ok(l) => l,
                Err(e) => args.fail(&format!("cannot listen on {addr:?}: {e}")),
            };
            println!("echo: serving on {}", listener.local_addr()?);
            serve(&mut lp, listener)?;
            lp.run()?;
            return Ok(());
        }
    }
    let connections = args.number(0, "CONNECTIONS", 1, 64) as usize;
    let messages = args.number(1, "MESSAGES", 1, 200_000);
    let size = 64;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        pin(0);
        let mut lp = EventLoop::new()?;
        serve(&mut lp, listener)?;
        tx.send(lp.handle()).expect("main is waiting");
        lp.run()?;
        let stats = lp.poller().stats();
        println!(
            "  loop: {} polls, {} of them blocking",
            stats.polls, stats.polls_blocked
        );
        Ok(())
    });
    let handle = rx.recv()?;
    let cpus = if rouse_cpus() > 1 { vec![1] } else { vec![] };
    let mut client = Client::connect(addr, connections, 1, cpus)?;
    client.run(connections as u64, size)?; // every connection accepted and warm
    let took = client.run(messages, size)?;
    handle.quit()?;
    server.join().expect("the server panicked")?;
    println!(
        "echo, one loop ({}): {connections} connections × {size}-byte messages: {messages} echoed in {took:.2?}, {:.0} messages/s",
        if completions {
            "completions"
        } else {
            "readiness"
        },
        messages as f64 / took.as_secs_f64()
    );
    Ok(())
}

fn rouse_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}
