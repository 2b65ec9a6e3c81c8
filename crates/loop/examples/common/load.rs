//! An event-driven load generator for echo servers: a few threads, each
//! driving many connections from one poller, every connection with one
//! message in flight at a time. Far cheaper per message than a blocking
//! thread per connection, so that what is measured is the server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rouse_poll::{Backend, Events, Interest, Poller, Token};

/// Connections to one server, spread over client threads.
pub(crate) struct Client {
    shards: Vec<Vec<TcpStream>>,
    cpus: Vec<usize>,
}

/// One connection's message in flight.
struct Flight {
    stream: TcpStream,
    /// Messages still to send after the one in flight.
    left: u64,
    /// Which message this is, to fill and check it.
    seq: u64,
    sent: usize,
    got: usize,
    active: bool,
}

impl Client {
    /// Opens `connections` connections to `addr`, to be driven by `threads`
    /// threads, pinned to `cpus` in turn (unpinned if empty).
    pub(crate) fn connect(
        addr: SocketAddr,
        connections: usize,
        threads: usize,
        cpus: Vec<usize>,
    ) -> io::Result<Client> {
        let threads = threads.max(1);
        let mut shards: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
        for c in 0..connections {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            shards[c % threads].push(stream);
        }
        Ok(Client { shards, cpus })
    }

    /// The number of connections.
    pub(crate) fn connections(&self) -> usize {
        self.shards.iter().map(Vec::len).sum()
    }

    /// Echoes `messages` messages of `size` bytes, spread evenly over the
    /// connections, each connection sending its next message only once the
    /// last one is back whole and checked. Returns the time from the start
    /// to the last echo.
    pub(crate) fn run(&mut self, messages: u64, size: usize) -> io::Result<Duration> {
        let total = self.connections() as u64;
        let start = Arc::new(Barrier::new(self.shards.len() + 1));
        let mut first = 0u64;
        let mut threads = Vec::new();
        for (i, shard) in std::mem::take(&mut self.shards).into_iter().enumerate() {
            let quotas: Vec<u64> = (0..shard.len() as u64)
                .map(|k| {
                    let c = first + k;
                    messages / total + u64::from(c < messages % total)
                })
                .collect();
            first += shard.len() as u64;
            let cpu = (!self.cpus.is_empty()).then(|| self.cpus[i % self.cpus.len()]);
            let start = Arc::clone(&start);
            threads.push(std::thread::spawn(move || {
                drive(shard, quotas, size, cpu, &start)
            }));
        }
        start.wait();
        let began = Instant::now();
        let mut result = Ok(began);
        for t in threads {
            match t.join().expect("a client thread panicked") {
                Ok((shard, done)) => {
                    self.shards.push(shard);
                    if let Ok(last) = &mut result {
                        *last = (*last).max(done);
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        result.map(|last| last - began)
    }
}

/// One client thread: drives its connections until each has sent its
/// quota; gives the connections back, with the moment the last echo came.
fn drive(
    shard: Vec<TcpStream>,
    quotas: Vec<u64>,
    size: usize,
    cpu: Option<usize>,
    start: &Barrier,
) -> io::Result<(Vec<TcpStream>, Instant)> {
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set)?;
    }
    let poller = Poller::with_backend(Backend::Epoll)?;
    let mut flights: Vec<Flight> = shard
        .into_iter()
        .zip(quotas)
        .enumerate()
        .map(|(i, (stream, left))| Flight {
            stream,
            left,
            seq: i as u64 * 1_000_003,
            sent: 0,
            got: 0,
            active: false,
        })
        .collect();
    for (i, f) in flights.iter().enumerate() {
        poller.register(f.stream.as_fd(), Token(i), Interest::READABLE)?;
    }
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    start.wait();
    let mut active = 0;
    for f in &mut flights {
        if f.left > 0 {
            f.left -= 1;
            f.active = true;
            active += 1;
            send(f, &mut out)?;
        }
    }
    let mut events = Events::with_capacity(1024);
    while active > 0 {
        poller.poll(&mut events, Some(Duration::from_secs(30)))?;
        if events.is_empty() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo for 30 s"));
        }
        for ev in &events {
            let f = &mut flights[ev.token().0];
            if f.sent < size {
                send(f, &mut out)?;
            }
            loop {
                match f.stream.read(&mut back[f.got..]) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => f.got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                if f.got == size {
                    break;
                }
            }
            if f.got < size {
                continue;
            }
            fill(&mut out, f.seq);
            if back != out {
                return Err(io::Error::other("an echo differs from its message"));
            }
            f.got = 0;
            if f.left == 0 {
                f.active = false;
                active -= 1;
            } else {
                f.left -= 1;
                f.seq += 1;
                f.sent = 0;
                send(f, &mut out)?;
            }
        }
    }
    let done = Instant::now();
    for f in &flights {
        poller.deregister(f.stream.as_fd())?;
    }
    Ok((flights.into_iter().map(|f| f.stream).collect(), done))
}

fn fill(out: &mut [u8], seq: u64) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = (seq as usize).wrapping_add(i) as u8;
    }
}

/// Sends what is left of `f`'s message, as far as the socket takes it (a
/// message of a few bytes always goes in one write).
fn send(f: &mut Flight, out: &mut [u8]) -> io::Result<()> {
    fill(out, f.seq);
    while f.sent < out.len() {
        match f.stream.write(&out[f.sent..]) {
            Ok(n) => f.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Rare: the rest goes once the echo side reads; retried on
                // the connection's next event.
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
