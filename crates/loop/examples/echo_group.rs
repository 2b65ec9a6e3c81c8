//! A TCP echo server on a group of loops, in one of two designs:
//!
//! * `handoff`: loop 0 accepts, and hands each connection to the next loop
//!   of the group, round-robin (muduo's `TcpServer`);
//! * `reuseport`: every loop has its own `SO_REUSEPORT` listener on the same
//!   port and accepts for itself; the kernel spreads the connections.
//!
//! It drives itself with a built-in, event-driven load (bounded in messages
//! and time, loopback only) and prints messages per second, connections per
//! loop, and wakes per handoff.
//!
//! ```text
//! cargo run --release -p rouse-loop --example echo_group -- [handoff|reuseport] [LOOPS] [CONNECTIONS] [MESSAGES]
//! ```

#[allow(dead_code)]
mod common {
    pub(crate) mod args;
    pub(crate) mod echo_server;
    pub(crate) mod load;
}

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::{echo_server, load::Client};
use rouse_loop::LoopGroup;

const USAGE: &str =
    "usage: echo_group [--completions] [handoff|reuseport] [LOOPS] [CONNECTIONS] [MESSAGES]
  --completions  the server written with operations (completions) instead of
                 readiness callbacks
  LOOPS        loops in the group, at least 1 (default 2)
  CONNECTIONS  connections of the built-in load, at least 1 (default 1,000)
  MESSAGES     messages echoed in all, at least 1 (default 200,000)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (args, flags) = common::args::Args::parse_with_flags(USAGE, 4, &["--completions"]);
    let completions = flags[0];
    let handoff = args.choice(0, "the design", &["handoff", "reuseport"]) == "handoff";
    let loops = args.number(1, "LOOPS", 1, 2) as usize;
    let connections = args.number(2, "CONNECTIONS", 1, 1000) as usize;
    let messages = args.number(3, "MESSAGES", 1, 200_000);
    let size = 64;

    let group = LoopGroup::builder(loops).name("echo").pin_each().build()?;
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let (addr, accepted) = match (completions, handoff) {
        (true, true) => echo_server::serve_handoff_ops_group(&group, addr)?,
        (true, false) => echo_server::serve_group_ops(&group, addr)?,
        (false, _) => echo_server::serve_group(&group, addr, handoff)?,
    };

    let mut client = Client::connect(addr, connections, 1, Vec::new())?;
    client.run(connections as u64, size)?; // every connection accepted and warm
    let wakes_before: u64 = group.handles().iter().map(|h| h.functor_wakes()).sum();
    let took = client.run(messages, size)?;

    // Per loop, its connections and its listener (or acceptor): sources
    // for the readiness server; for the completions server, operations in
    // flight (at rest, one receive per connection and one accept).
    let mut per_loop = Vec::new();
    for h in group.handles() {
        let (tx, rx) = std::sync::mpsc::channel();
        h.queue_in_loop(move |cx| {
            let _ = tx.send(if completions {
                cx.ops_in_flight()
            } else {
                cx.source_count()
            });
        })?;
        per_loop.push(rx.recv()?);
    }
    let syscalls: u64 = group
        .handles()
        .iter()
        .map(|h| h.poller_stats().wake_syscalls)
        .sum();
    for outcome in group.shutdown() {
        outcome?;
    }
    println!(
        "echo on {loops} loops ({}, {}): {connections} connections × {size}-byte messages: \
         {messages} echoed in {took:.2?}, {:.0} messages/s",
        if handoff { "handoff" } else { "reuseport" },
        if completions {
            "completions"
        } else {
            "readiness"
        },
        messages as f64 / took.as_secs_f64()
    );
    let listeners = if handoff { vec![1] } else { vec![1; loops] };
    let counts: Vec<usize> = per_loop
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(listeners.get(i).copied().unwrap_or(0)))
        .collect();
    println!("  connections per loop: {counts:?}");
    if handoff {
        let h = accepted.load(Ordering::Relaxed);
        println!(
            "  {h} handoffs: {} functor wakes, {} wake system calls in all (set-up included), {:.3} wakes per handoff",
            wakes_before,
            syscalls,
            wakes_before as f64 / h.max(1) as f64
        );
    }
    Ok(())
}
