//! The rows of the report, their groups, and how many operations a system
//! call count runs. The targets live beside the benchmarks
//! (`benches/benches/compare/targets.rs`), which measure them.

/// One row's display name and role.
pub(crate) struct Row {
    pub(crate) group: &'static str,
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
}

const fn row(group: &'static str, id: &'static str, label: &'static str) -> Row {
    Row { group, id, label }
}

/// Every row, in report order. The first row of each group named in
/// `FLOORS` is the group's reference.
pub(crate) const ROWS: &[Row] = &[
    row("sys", "null_syscall", "null system call (getppid)"),
    row("sys", "rustix_eventfd", "rustix eventfd write+read"),
    row("sys", "rouse_eventfd", "rouse-sys EventFd write+read"),
    row(
        "sys",
        "rouse_wakefd_eventfd",
        "rouse-sys WakeFd (eventfd) wake+consume",
    ),
    row("sys", "rustix_pipe", "rustix pipe write+read"),
    row(
        "sys",
        "rouse_wakefd_pipe",
        "rouse-sys WakeFd (pipe) wake+consume",
    ),
    row("wake_1cpu", "futex", "futex park/unpark (floor)"),
    row("wake_1cpu", "rouse_poll_epoll", "rouse-poll epoll"),
    row(
        "wake_1cpu",
        "rouse_poll_uring_eventfd",
        "rouse-poll io_uring (DEFER_TASKRUN), eventfd wake",
    ),
    row(
        "wake_1cpu",
        "rouse_poll_uring_msgring",
        "rouse-poll io_uring (DEFER_TASKRUN), MSG_RING wake",
    ),
    row("wake_1cpu", "rouse_loop", "rouse-loop run_in_loop"),
    row(
        "wake_1cpu",
        "raw_epoll_eventfd",
        "raw epoll + eventfd (read per wake)",
    ),
    row("wake_1cpu", "mio", "mio Poll + Waker"),
    row("wake_1cpu", "polling", "polling notify"),
    row("wake_1cpu", "calloop", "calloop ping"),
    row("wake_1cpu", "tokio", "tokio current_thread + Notify"),
    row("wake_2cpu", "futex", "futex park/unpark (floor)"),
    row("wake_2cpu", "rouse_poll_epoll", "rouse-poll epoll"),
    row(
        "wake_2cpu",
        "rouse_poll_epoll_spin",
        "rouse-poll epoll, spin 50 µs before park",
    ),
    row(
        "wake_2cpu",
        "rouse_poll_uring_eventfd",
        "rouse-poll io_uring (DEFER_TASKRUN), eventfd wake",
    ),
    row(
        "wake_2cpu",
        "rouse_poll_uring_msgring",
        "rouse-poll io_uring (DEFER_TASKRUN), MSG_RING wake",
    ),
    row("wake_2cpu", "rouse_loop", "rouse-loop run_in_loop"),
    row(
        "wake_2cpu",
        "rouse_loop_spin",
        "rouse-loop run_in_loop, spin 50 µs",
    ),
    row(
        "wake_2cpu",
        "raw_epoll_eventfd",
        "raw epoll + eventfd (read per wake)",
    ),
    row("wake_2cpu", "mio", "mio Poll + Waker"),
    row("wake_2cpu", "polling", "polling notify"),
    row("wake_2cpu", "calloop", "calloop ping"),
    row("wake_2cpu", "tokio", "tokio current_thread + Notify"),
    row("functors_1p", "rouse_loop", "rouse-loop queue_in_loop"),
    row(
        "functors_1p",
        "muduo",
        "muduo: mutex + vector + wake per task",
    ),
    row("functors_1p", "calloop_channel", "calloop channel"),
    row(
        "functors_1p",
        "tokio_spawn",
        "tokio Handle::spawn (current_thread)",
    ),
    row(
        "functors_1p",
        "crossbeam",
        "crossbeam-channel, blocking recv",
    ),
    row("functors_2p", "rouse_loop", "rouse-loop queue_in_loop"),
    row(
        "functors_2p",
        "muduo",
        "muduo: mutex + vector + wake per task",
    ),
    row("functors_2p", "calloop_channel", "calloop channel"),
    row(
        "functors_2p",
        "tokio_spawn",
        "tokio Handle::spawn (current_thread)",
    ),
    row(
        "functors_2p",
        "crossbeam",
        "crossbeam-channel, blocking recv",
    ),
    row("pool", "rouse_pool", "rouse-loop WorkerPool"),
    row("pool", "nginx", "nginx: done queue + eventfd write per job"),
    row("scale_poll", "epoll_10", "epoll, 10 idle fds + 1 ready"),
    row(
        "scale_poll",
        "epoll_10000",
        "epoll, 10,000 idle fds + 1 ready",
    ),
    row("scale_poll", "uring_10", "io_uring, 10 idle fds + 1 ready"),
    row(
        "scale_poll",
        "uring_10000",
        "io_uring, 10,000 idle fds + 1 ready",
    ),
    row(
        "scale_timers",
        "timers_1000",
        "insert+cancel+expire, 1,000 live timers",
    ),
    row(
        "scale_timers",
        "timers_1000000",
        "insert+cancel+expire, 1,000,000 live",
    ),
    row("echo", "rouse_loop_64", "rouse-loop, 64 connections"),
    row("echo", "tokio_64", "tokio current_thread, 64 connections"),
    row("echo", "rouse_loop_1000", "rouse-loop, 1,000 connections"),
    row(
        "echo",
        "tokio_1000",
        "tokio current_thread, 1,000 connections",
    ),
    row(
        "echo_2loops",
        "rouse_handoff_64",
        "rouse-loop group, handoff, 64 connections",
    ),
    row(
        "echo_2loops",
        "rouse_reuseport_64",
        "rouse-loop group, SO_REUSEPORT, 64 connections",
    ),
    row(
        "echo_2loops",
        "tokio_multi_thread_64",
        "tokio multi-thread (2 workers), 64 connections",
    ),
    row(
        "echo_2loops",
        "tokio_per_core_64",
        "tokio current_thread per CPU, SO_REUSEPORT, 64 connections",
    ),
    row(
        "echo_2loops",
        "rouse_handoff_1000",
        "rouse-loop group, handoff, 1,000 connections",
    ),
    row(
        "echo_2loops",
        "rouse_reuseport_1000",
        "rouse-loop group, SO_REUSEPORT, 1,000 connections",
    ),
    row(
        "echo_2loops",
        "tokio_multi_thread_1000",
        "tokio multi-thread (2 workers), 1,000 connections",
    ),
    row(
        "echo_2loops",
        "tokio_per_core_1000",
        "tokio current_thread per CPU, SO_REUSEPORT, 1,000 connections",
    ),
    row(
        "file_cached",
        "pread_1",
        "one thread's pread, one at a time",
    ),
    row(
        "file_cached",
        "rouse_uring",
        "rouse-loop read ops, io_uring (no thread pool)",
    ),
    row(
        "file_cached",
        "rouse_epoll",
        "rouse-loop read ops, epoll (the poller's pool)",
    ),
    row(
        "file_cached",
        "rouse_pool2",
        "nginx: WorkerPool of 2 threads, pread",
    ),
    row("file_cached", "threads64", "64 blocking threads, pread"),
    row("file_cached", "tokio_fs", "tokio::fs seek + read, 64 tasks"),
    row(
        "file_cached",
        "tokio_blocking",
        "tokio spawn_blocking(pread), 64 in flight",
    ),
    row(
        "file_cached",
        "monoio",
        "monoio read_at (io_uring driver), 64 tasks",
    ),
    row(
        "file_cached",
        "rouse_uring_cpu",
        "CPU time: rouse-loop read ops, io_uring",
    ),
    row("file_cached", "pread_1_cpu", "CPU time: one thread's pread"),
    row("file_cached", "tokio_fs_cpu", "CPU time: tokio::fs"),
    row(
        "file_cached",
        "tokio_blocking_cpu",
        "CPU time: tokio spawn_blocking(pread)",
    ),
    row(
        "file_direct",
        "pread_1",
        "one thread's pread, one at a time",
    ),
    row(
        "file_direct",
        "rouse_uring",
        "rouse-loop read ops, io_uring (no thread pool)",
    ),
    row(
        "file_direct",
        "rouse_epoll",
        "rouse-loop read ops, epoll (the poller's pool)",
    ),
    row(
        "file_direct",
        "rouse_pool2",
        "nginx: WorkerPool of 2 threads, pread",
    ),
    row("file_direct", "threads64", "64 blocking threads, pread"),
    row("file_direct", "tokio_fs", "tokio::fs seek + read, 64 tasks"),
    row(
        "file_direct",
        "tokio_blocking",
        "tokio spawn_blocking(pread), 64 in flight",
    ),
    row(
        "file_direct",
        "rouse_uring_cpu",
        "CPU time: rouse-loop read ops, io_uring",
    ),
    row("file_direct", "pread_1_cpu", "CPU time: one thread's pread"),
    row("file_direct", "tokio_fs_cpu", "CPU time: tokio::fs"),
    row(
        "file_direct",
        "tokio_blocking_cpu",
        "CPU time: tokio spawn_blocking(pread)",
    ),
    row(
        "echo",
        "rouse_ops_64",
        "rouse-loop operations (io_uring), 64 connections",
    ),
    row("echo", "mio_64", "mio, 64 connections"),
    row(
        "echo",
        "monoio_64",
        "monoio (io_uring driver), 64 connections",
    ),
    row(
        "echo_2loops",
        "rouse_ops_64",
        "rouse-loop group, operations (io_uring), SO_REUSEPORT, 64 connections",
    ),
    row(
        "echo_2loops",
        "monoio_per_core_64",
        "monoio per CPU, SO_REUSEPORT, 64 connections",
    ),
    row(
        "echo",
        "rouse_ops_1000",
        "rouse-loop operations (io_uring), 1,000 connections",
    ),
    row("echo", "mio_1000", "mio, 1,000 connections"),
    row(
        "echo",
        "monoio_1000",
        "monoio (io_uring driver), 1,000 connections",
    ),
    row(
        "echo_2loops",
        "rouse_ops_1000",
        "rouse-loop group, operations (io_uring), SO_REUSEPORT, 1,000 connections",
    ),
    row(
        "echo_2loops",
        "monoio_per_core_1000",
        "monoio per CPU, SO_REUSEPORT, 1,000 connections",
    ),
    row(
        "echo_2loops_unpinned",
        "tokio_multi_thread_64",
        "tokio multi-thread (2 workers), 64 connections",
    ),
    row(
        "echo_2loops_unpinned",
        "rouse_handoff_64",
        "rouse-loop group, handoff, 64 connections",
    ),
    row(
        "echo_2loops_unpinned",
        "rouse_reuseport_64",
        "rouse-loop group, SO_REUSEPORT, 64 connections",
    ),
    row(
        "echo_2loops_unpinned",
        "rouse_ops_64",
        "rouse-loop group, operations (io_uring), SO_REUSEPORT, 64 connections",
    ),
    row("tasks_1p", "rouse_spawn", "rouse-loop LoopHandle::spawn"),
    row(
        "tasks_1p",
        "tokio_spawn",
        "tokio Handle::spawn (current_thread)",
    ),
    row(
        "tasks_1p",
        "calloop_executor",
        "calloop executor, Scheduler::schedule",
    ),
    row(
        "tasks_1p",
        "rouse_wake",
        "rouse-loop: one task woken (per wake)",
    ),
    row(
        "wake_1cpu",
        "rouse_task",
        "rouse-loop task woken by its waker",
    ),
    row(
        "wake_2cpu",
        "rouse_task",
        "rouse-loop task woken by its waker",
    ),
    row(
        "echo",
        "rouse_tasks_64",
        "rouse-loop async tasks (io_uring), 64 connections",
    ),
    row(
        "echo",
        "rouse_tasks_1000",
        "rouse-loop async tasks (io_uring), 1,000 connections",
    ),
];

/// What each group measures, and the row its ratios are taken against.
pub(crate) const GROUPS: &[(&str, &str, &str, &str)] = &[
    (
        "sys",
        "System calls, one wake and its consume per operation",
        "null_syscall",
        "per op",
    ),
    (
        "wake_1cpu",
        "Wake round trip, both threads pinned to CPU 0",
        "futex",
        "per round trip",
    ),
    (
        "wake_2cpu",
        "Wake round trip, threads pinned to CPUs 0 and 1",
        "futex",
        "per round trip",
    ),
    (
        "functors_1p",
        "Functor throughput, 1 producer (CPU 1) → loop (CPU 0)",
        "rouse_loop",
        "per functor",
    ),
    (
        "functors_2p",
        "Functor throughput, 2 producers (CPU 1) → loop (CPU 0)",
        "rouse_loop",
        "per functor",
    ),
    (
        "pool",
        "Worker-pool completions (2 workers), bursts of jobs",
        "rouse_pool",
        "per job",
    ),
    (
        "scale_poll",
        "One poll (zero timeout) beside idle registered fds",
        "epoll_10",
        "per poll",
    ),
    (
        "scale_timers",
        "Timer insert + cancel + expire beside live timers",
        "timers_1000",
        "per op",
    ),
    (
        "echo",
        "TCP echo on loopback, one server thread (CPU 0), client on CPU 1, 64-byte messages",
        "tokio_64",
        "per message",
    ),
    (
        "echo_2loops",
        "TCP echo on loopback, two server threads (CPUs 0 and 1), client beside them, 64-byte messages",
        "tokio_multi_thread_64",
        "per message",
    ),
    (
        "file_cached",
        "Random 4 KiB reads of a 256 MiB file from the page cache, 64 in flight",
        "pread_1",
        "per read",
    ),
    (
        "file_direct",
        "Random 4 KiB reads of a 256 MiB file with O_DIRECT, 64 in flight",
        "pread_1",
        "per read",
    ),
    (
        "echo_2loops_unpinned",
        "TCP echo on loopback, two server threads unpinned, client on CPU 1, 64-byte messages",
        "tokio_multi_thread_64",
        "per message",
    ),
    (
        "tasks_1p",
        "Async tasks, 1 producer (CPU 1) → loop (CPU 0)",
        "rouse_spawn",
        "per task",
    ),
];

/// How `N` is chosen for a syscall count, per group: operations per run.
pub(crate) fn count_ops(group: &str) -> Option<u64> {
    match group {
        "wake_1cpu" => Some(20_000),
        "wake_2cpu" => Some(5_000),
        "functors_1p" | "functors_2p" => Some(200_000),
        "pool" => Some(10_000),
        "tasks_1p" => Some(200_000),
        "echo" | "echo_2loops" | "echo_2loops_unpinned" => Some(20_000),
        _ => None,
    }
}

/// Targets on system calls per operation, from `perf stat`: row `a`'s
/// count at most row `b`'s.
pub(crate) const PERF_TARGETS: &[(&str, &str, &str)] = &[
    (
        "echo, one loop, 1,000 connections: system calls per message ≤ tokio's",
        "echo/rouse_loop_1000",
        "echo/tokio_1000",
    ),
    (
        "echo, one loop, 64 connections: system calls per message ≤ tokio's",
        "echo/rouse_loop_64",
        "echo/tokio_64",
    ),
];

/// What a server target compares a row's figure with.
pub(crate) enum Than {
    /// At most this many server system calls per message.
    Syscalls(f64),
    /// Server user CPU per message at most that of this row's.
    UserOf(&'static str),
}

/// A target on what the server threads alone cost per message
/// (`server.tsv`), judged on each row's totals over all its runs.
pub(crate) struct ServerTarget {
    pub(crate) say: &'static str,
    pub(crate) a: &'static str,
    pub(crate) than: Than,
}

const fn server(say: &'static str, a: &'static str, than: Than) -> ServerTarget {
    ServerTarget { say, a, than }
}

pub(crate) const SERVER_TARGETS: &[ServerTarget] = &[
    server(
        "echo, one loop, operations, 64 connections: ≤ 0.5 server system calls per message",
        "echo/rouse_ops_64",
        Than::Syscalls(0.5),
    ),
    server(
        "echo, one loop, operations, 1,000 connections: ≤ 0.5 server system calls per message",
        "echo/rouse_ops_1000",
        Than::Syscalls(0.5),
    ),
    server(
        "echo, one loop, operations, 64 connections: server user CPU per message ≤ tokio's",
        "echo/rouse_ops_64",
        Than::UserOf("echo/tokio_64"),
    ),
    server(
        "echo, one loop, operations, 64 connections: server user CPU per message ≤ monoio's",
        "echo/rouse_ops_64",
        Than::UserOf("echo/monoio_64"),
    ),
    server(
        "echo, one loop, operations, 1,000 connections: server user CPU per message ≤ tokio's",
        "echo/rouse_ops_1000",
        Than::UserOf("echo/tokio_1000"),
    ),
    server(
        "echo, one loop, operations, 1,000 connections: server user CPU per message ≤ monoio's",
        "echo/rouse_ops_1000",
        Than::UserOf("echo/monoio_1000"),
    ),
];
