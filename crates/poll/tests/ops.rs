//! Operations on every backend: the same results from io_uring and from
//! epoll (which performs them itself), buffers handed back, cancels that
//! stop what has not yet happened, and nothing lost under pressure.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rouse_poll::op::{Completion, Op, OpId, Output, SharedFd};
use rouse_poll::{Backend, Events, Poller};
use util::pollers;

const LONG: Duration = Duration::from_secs(10);

/// Polls until `n` completions have come (or ten seconds pass).
fn completions(poller: &Poller, n: usize) -> Vec<Completion> {
    let mut events = Events::with_capacity(16);
    let mut out = Vec::new();
    let deadline = Instant::now() + LONG;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} completions came",
            out.len()
        );
        poller
            .poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        poller.take_completions(&mut out);
    }
    out
}

fn one(poller: &Poller, id: OpId) -> (std::io::Result<usize>, Output) {
    let mut c = completions(poller, 1);
    assert_eq!(c.len(), 1);
    let c = c.pop().unwrap();
    assert_eq!(c.id(), id);
    assert!(!c.more());
    c.into_parts()
}

fn buf(out: Output) -> Vec<u8> {
    match out {
        Output::Buf(b) => b,
        other => panic!("expected a buffer, got {other:?}"),
    }
}

/// A file of `data` in the temporary directory, already unlinked.
fn temp_file(data: &[u8]) -> std::fs::File {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "rouse-ops-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, data).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

#[test]
fn files_are_read_written_and_synced_at_offsets() {
    for (name, poller) in pollers() {
        let file = SharedFd::new(temp_file(b"0123456789"));
        let id = poller
            .submit(Op::WriteAt {
                fd: file.clone(),
                offset: 2,
                buf: b"ab".to_vec(),
            })
            .unwrap();
        let (n, out) = one(&poller, id);
        assert_eq!(n.unwrap(), 2, "{name}");
        assert_eq!(buf(out), b"ab", "{name}: the buffer comes back");

        let id = poller.submit(Op::Fsync { fd: file.clone() }).unwrap();
        assert_eq!(one(&poller, id).0.unwrap(), 0, "{name}");

        // Into the spare capacity, after what the buffer holds.
        let mut b = Vec::with_capacity(8);
        b.extend_from_slice(b">");
        let id = poller
            .submit(Op::ReadAt {
                fd: file.clone(),
                offset: 1,
                buf: b,
            })
            .unwrap();
        let (n, out) = one(&poller, id);
        assert_eq!(n.unwrap(), 7, "{name}");
        assert_eq!(buf(out), b">1ab4567", "{name}");

        // At the end: 0 bytes.
        let id = poller
            .submit(Op::ReadAt {
                fd: file,
                offset: 100,
                buf: Vec::with_capacity(8),
            })
            .unwrap();
        let (n, out) = one(&poller, id);
        assert_eq!(n.unwrap(), 0, "{name}");
        assert!(buf(out).is_empty());
        assert_eq!(poller.ops_in_flight(), 0, "{name}");
    }
}

/// Thousands of file reads, in bursts of 64 and one at a time (so that, on
/// epoll, the pool's threads go idle and are called back again and again):
/// each completes exactly once, with the bytes at its offset.
#[test]
fn file_reads_in_bursts_and_one_by_one_each_complete_once_with_their_bytes() {
    const LEN: usize = 1 << 20;
    const READ: usize = 512;
    let data: Vec<u8> = (0..LEN)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    for (name, poller) in pollers() {
        let file = SharedFd::new(temp_file(&data));
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut offsets = std::collections::HashMap::new();
        let mut done = 0;
        for round in 0..60 {
            let depth = if round % 2 == 0 { 64 } else { 1 };
            for _ in 0..depth {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let offset = seed % (LEN - READ) as u64;
                let id = poller
                    .submit(Op::ReadAt {
                        fd: file.clone(),
                        offset,
                        buf: Vec::with_capacity(READ),
                    })
                    .unwrap();
                assert!(offsets.insert(id, offset).is_none(), "{name}: an id reused");
            }
            for c in completions(&poller, depth) {
                let id = c.id();
                let offset = offsets
                    .remove(&id)
                    .expect("a completion of a read in flight, once");
                let (n, out) = c.into_parts();
                assert_eq!(n.unwrap(), READ, "{name}");
                let at = offset as usize;
                assert_eq!(buf(out), &data[at..at + READ], "{name}: read at {offset}");
                done += 1;
            }
        }
        assert!(
            offsets.is_empty(),
            "{name}: {} reads never completed",
            offsets.len()
        );
        assert_eq!(done, 30 * 65, "{name}");
        assert_eq!(poller.ops_in_flight(), 0, "{name}");
    }
}

#[test]
fn sockets_accept_connect_send_and_receive() {
    for (name, poller) in pollers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = SharedFd::new(listener);
        let accept = poller
            .submit(Op::Accept {
                fd: listener.clone(),
            })
            .unwrap();

        let client = std::net::TcpStream::from(
            rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::STREAM,
                None,
            )
            .unwrap(),
        );
        let client = SharedFd::new(client);
        let connect = poller
            .submit(Op::Connect {
                fd: client.clone(),
                addr,
            })
            .unwrap();
        let mut got = completions(&poller, 2);
        got.sort_by_key(|c| c.id());
        assert_eq!((got[0].id(), got[1].id()), (accept, connect), "{name}");
        let mut got = got.into_iter();
        let (a, out) = got.next().unwrap().into_parts();
        a.unwrap();
        let Output::Accepted(server) = out else {
            panic!("{name}: {out:?}")
        };
        let (c, _) = got.next().unwrap().into_parts();
        c.unwrap();
        let server = SharedFd::new(server);

        // A receive waits for data; a send brings it.
        let recv = poller
            .submit(Op::Recv {
                fd: server.clone(),
                buf: Vec::with_capacity(64),
            })
            .unwrap();
        let send = poller
            .submit(Op::Send {
                fd: client.clone(),
                buf: b"ping".to_vec(),
            })
            .unwrap();
        let mut got = completions(&poller, 2);
        got.sort_by_key(|c| c.id());
        assert_eq!(got[0].id(), recv);
        assert_eq!(got[1].id(), send);
        let mut got = got.into_iter();
        let (n, out) = got.next().unwrap().into_parts();
        assert_eq!(n.unwrap(), 4, "{name}");
        assert_eq!(buf(out), b"ping", "{name}");
        let (n, out) = got.next().unwrap().into_parts();
        assert_eq!(n.unwrap(), 4, "{name}");
        assert_eq!(buf(out), b"ping");

        // End of file: the peer closes, through an operation.
        let recv = poller
            .submit(Op::Recv {
                fd: server.clone(),
                buf: Vec::with_capacity(64),
            })
            .unwrap();
        let close = poller
            .submit(Op::Close {
                fd: client.try_into_owned().unwrap(),
            })
            .unwrap();
        let got = completions(&poller, 2);
        for c in got {
            let id = c.id();
            let (r, _) = c.into_parts();
            if id == recv {
                assert_eq!(r.unwrap(), 0, "{name}: end of file");
            } else {
                assert_eq!(id, close);
                r.unwrap();
            }
        }
        assert_eq!(poller.ops_in_flight(), 0, "{name}");
    }
}

#[test]
fn multishot_accept_and_receive_bring_each_connection_and_every_byte() {
    for (name, poller) in pollers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = poller
            .submit(Op::AcceptMulti {
                fd: SharedFd::new(listener),
            })
            .unwrap();
        let clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let accepted = completions(&poller, 5);
        let mut servers = Vec::new();
        for c in accepted {
            assert_eq!(c.id(), accept);
            assert!(c.more(), "{name}: a multishot accept goes on");
            let (r, out) = c.into_parts();
            r.unwrap();
            let Output::Accepted(fd) = out else {
                panic!("{name}: {out:?}")
            };
            servers.push(SharedFd::new(fd));
        }
        // Every byte of every client, in order per connection.
        let mut ids = Vec::new();
        for s in &servers {
            ids.push(poller.submit(Op::RecvMulti { fd: s.clone() }).unwrap());
        }
        let mut clients = clients;
        for (i, c) in clients.iter_mut().enumerate() {
            for k in 0..3 {
                c.write_all(format!("{i}:{k};").as_bytes()).unwrap();
            }
        }
        drop(clients);
        let mut data: std::collections::HashMap<OpId, Vec<u8>> = Default::default();
        let mut ended = 0;
        let mut events = Events::with_capacity(16);
        let deadline = Instant::now() + LONG;
        while ended < 5 {
            assert!(Instant::now() < deadline, "{name}: {ended} of 5 ended");
            poller
                .poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            let mut got = Vec::new();
            poller.take_completions(&mut got);
            for c in got {
                let id = c.id();
                let more = c.more();
                let (r, out) = c.into_parts();
                let n = r.unwrap();
                match out {
                    Output::Data(d) => {
                        assert!(more);
                        assert_eq!(d.len(), n);
                        data.entry(id).or_default().extend(d);
                    }
                    Output::Nothing => {
                        assert!(!more && n == 0, "{name}: the last one is end of file");
                        ended += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        let mut all: Vec<String> = data
            .values()
            .map(|d| String::from_utf8(d.clone()).unwrap())
            .collect();
        all.sort();
        let want: Vec<String> = (0..5).map(|i| format!("{i}:0;{i}:1;{i}:2;")).collect();
        assert_eq!(all, want, "{name}");
        // The accept goes on until cancelled.
        poller.cancel(accept).unwrap();
        let (r, _) = one(&poller, accept);
        assert_eq!(
            r.unwrap_err().raw_os_error(),
            Some(libc::ECANCELED),
            "{name}"
        );
        assert_eq!(poller.ops_in_flight(), 0, "{name}");
    }
}

#[test]
fn a_cancelled_receive_hands_its_buffer_back_and_takes_no_data() {
    for (name, poller) in pollers() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = SharedFd::new(a);
        let mut buf = Vec::with_capacity(16);
        buf.push(7);
        let id = poller.submit(Op::Recv { fd: a.clone(), buf }).unwrap();
        // It is in the kernel (or waiting) after a poll.
        let mut events = Events::with_capacity(4);
        poller.poll(&mut events, Some(Duration::ZERO)).unwrap();
        poller.cancel(id).unwrap();
        let (r, out) = one(&poller, id);
        assert_eq!(
            r.unwrap_err().raw_os_error(),
            Some(libc::ECANCELED),
            "{name}"
        );
        assert_eq!(buf_of(out), [7], "{name}: handed back as it was");
        // The data sent after goes to whoever reads next.
        b.write_all(b"x").unwrap();
        let mut s = std::os::unix::net::UnixStream::from(a.try_into_owned().unwrap());
        let mut one_byte = [0];
        s.read_exact(&mut one_byte).unwrap();
        assert_eq!(&one_byte, b"x");
    }
}

fn buf_of(out: Output) -> Vec<u8> {
    buf(out)
}

/// Tens of thousands of completions in one iteration: the submission queue
/// is submitted and refilled, and completions the completion queue has no
/// room for wait in the kernel and are all read.
#[test]
fn twenty_thousand_completions_in_one_poll_are_all_reported_once() {
    for (name, poller) in pollers() {
        let file = SharedFd::new(temp_file(&[5; 64]));
        const N: usize = 20_000;
        let mut ids = std::collections::HashSet::new();
        for i in 0..N {
            let id = poller
                .submit(Op::ReadAt {
                    fd: file.clone(),
                    offset: (i % 64) as u64,
                    buf: Vec::with_capacity(1),
                })
                .unwrap();
            ids.insert(id);
        }
        let got = completions(&poller, N);
        assert_eq!(got.len(), N, "{name}");
        for c in got {
            assert!(ids.remove(&c.id()), "{name}: reported twice or unknown");
            let (r, out) = c.into_parts();
            assert_eq!(r.unwrap(), 1);
            assert_eq!(buf(out), [5]);
        }
        assert!(ids.is_empty());
        if poller.backend() == Backend::IoUring {
            let flushes = poller.stats().overflow_flushes;
            assert!(flushes > 0, "{name}: the completion queue never overflowed");
            println!("{name}: {N} completions, {flushes} overflow flushes");
        }
    }
}

/// More multishot receives with data than the provided-buffer ring has
/// buffers: those that find it empty are re-armed, and no byte is lost.
#[test]
fn an_empty_buffer_ring_rearms_and_loses_nothing() {
    for (name, poller) in pollers() {
        const SOCKETS: usize = 700;
        let mut peers = Vec::new();
        let mut ids = std::collections::HashMap::new();
        // Data waits in every socket before its receive is submitted, so
        // that the receives all take a buffer in the same submission.
        let mut sockets = Vec::new();
        for i in 0..SOCKETS {
            let (a, mut b) = UnixStream::pair().unwrap();
            b.write_all(format!("{i:04}").as_bytes()).unwrap();
            sockets.push(a);
            peers.push(b);
        }
        for (i, a) in sockets.into_iter().enumerate() {
            let id = poller
                .submit(Op::RecvMulti {
                    fd: SharedFd::new(a),
                })
                .unwrap();
            ids.insert(id, i);
        }
        let mut events = Events::with_capacity(16);
        let mut data = vec![Vec::new(); SOCKETS];
        let mut total = 0;
        let deadline = Instant::now() + LONG;
        while total < SOCKETS * 4 {
            assert!(Instant::now() < deadline, "{name}: {total} bytes came");
            poller
                .poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            let mut got = Vec::new();
            poller.take_completions(&mut got);
            for c in got {
                let i = ids[&c.id()];
                let (r, out) = c.into_parts();
                let n = r.unwrap_or_else(|e| panic!("{name}: socket {i}: {e}"));
                if let Output::Data(d) = out {
                    total += n;
                    data[i].extend(d);
                }
            }
        }
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d, format!("{i:04}").as_bytes(), "{name}");
        }
        if poller.backend() == Backend::IoUring {
            let rearms = poller.stats().buffer_ring_rearms;
            assert!(rearms > 0, "{name}: the buffer ring never ran dry");
            println!("{name}: {rearms} receives re-armed after ENOBUFS");
        }
        for id in ids.keys() {
            poller.cancel(*id).unwrap();
        }
        let ended = completions(&poller, SOCKETS);
        assert!(ended.iter().all(|c| !c.more()), "{name}");
        assert_eq!(poller.ops_in_flight(), 0, "{name}");
    }
}

#[test]
fn operations_are_submitted_from_the_polling_thread_only_between_polls() {
    for (name, poller) in pollers() {
        let poller = std::sync::Arc::new(poller);
        let p = std::sync::Arc::clone(&poller);
        let t = std::thread::spawn(move || {
            let mut events = Events::with_capacity(4);
            p.poll(&mut events, Some(Duration::from_millis(300)))
                .unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        let (a, _b) = UnixStream::pair().unwrap();
        let e = poller
            .submit(Op::Recv {
                fd: SharedFd::new(a),
                buf: Vec::with_capacity(4),
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceBusy, "{name}: {e}");
        t.join().unwrap();
    }
}
