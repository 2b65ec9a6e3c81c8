//! `cargo xtask bench`: runs the comparison benches, counts system calls,
//! and writes `target/rouse-bench/report.md` and `report.svg`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::step;

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench [--full] [--filter REGEX] [--no-count] [--readme] [--report-only]
  --full         criterion's normal sampling (default: a quick run, ~12 min)
  --filter RE    only the benchmarks whose GROUP/ID matches RE
  --no-count     skip the system-call counts (perf stat)
  --readme       copy the resulting table into README.md, the chart to docs/
  --report-only  run nothing: rebuild the report from the last run's files";

/// One row's display name and role.
struct Row {
    group: &'static str,
    id: &'static str,
    label: &'static str,
}

const fn row(group: &'static str, id: &'static str, label: &'static str) -> Row {
    Row { group, id, label }
}

/// Every row, in report order. The first row of each group named in
/// `FLOORS` is the group's reference.
const ROWS: &[Row] = &[
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
    row("echo", "rouse_loop", "rouse-loop echo example"),
    row("echo", "tokio", "tokio echo (current_thread)"),
];

/// What each group measures, and the row its ratios are taken against.
const GROUPS: &[(&str, &str, &str, &str)] = &[
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
        "TCP echo on loopback, 64 connections × 64-byte messages",
        "tokio",
        "per message",
    ),
];

/// How `N` is chosen for a syscall count, per group: operations per run.
fn count_ops(group: &str) -> Option<u64> {
    match group {
        "wake_1cpu" => Some(20_000),
        "wake_2cpu" => Some(5_000),
        "functors_1p" | "functors_2p" => Some(200_000),
        "pool" => Some(10_000),
        _ => None,
    }
}

/// A target: `a` over `b` (times per operation) at most `max`, or a count.
enum Check {
    /// time(a) / time(b) ≤ max.
    Ratio {
        group: &'static str,
        a: &'static str,
        b: &'static str,
        max: f64,
        say: &'static str,
    },
    /// rouse's own counter (wake_syscalls or wakes per op) ≤ max.
    Counter {
        group: &'static str,
        a: &'static str,
        wakes: bool,
        max: f64,
        say: &'static str,
    },
}

const fn ratio(
    group: &'static str,
    a: &'static str,
    b: &'static str,
    max: f64,
    say: &'static str,
) -> Check {
    Check::Ratio {
        group,
        a,
        b,
        max,
        say,
    }
}

const CHECKS: &[Check] = &[
    ratio(
        "sys",
        "rouse_eventfd",
        "rustix_eventfd",
        1.03,
        "EventFd ≤ 1.03× rustix",
    ),
    ratio(
        "sys",
        "rouse_wakefd_eventfd",
        "rustix_eventfd",
        1.03,
        "WakeFd (eventfd) ≤ 1.03× rustix",
    ),
    ratio(
        "sys",
        "rouse_wakefd_pipe",
        "rustix_pipe",
        1.03,
        "WakeFd (pipe) ≤ 1.03× rustix",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_epoll",
        "futex",
        1.0,
        "one CPU: rouse-poll epoll ≤ 1.0× futex floor",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_epoll",
        "mio",
        0.85,
        "one CPU: rouse-poll epoll ≤ 0.85× mio",
    ),
    ratio(
        "wake_1cpu",
        "rouse_loop",
        "futex",
        1.1,
        "one CPU: rouse-loop ping-pong ≤ 1.1× floor",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_epoll",
        "mio",
        1.0,
        "two CPUs: rouse-poll epoll ≤ 1.0× mio",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_epoll_spin",
        "mio",
        0.1,
        "two CPUs: rouse-poll with spin ≤ 0.1× mio",
    ),
    ratio(
        "wake_2cpu",
        "rouse_loop_spin",
        "mio",
        0.1,
        "two CPUs: rouse-loop with spin ≤ 0.1× mio",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_uring_eventfd",
        "rouse_poll_epoll",
        1.0,
        "one CPU: io_uring (eventfd) ≤ 1.0× epoll",
    ),
    ratio(
        "wake_1cpu",
        "rouse_poll_uring_msgring",
        "rouse_poll_epoll",
        1.0,
        "one CPU: io_uring (MSG_RING) ≤ 1.0× epoll",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_uring_eventfd",
        "rouse_poll_epoll",
        1.0,
        "two CPUs: io_uring (eventfd) ≤ 1.0× epoll",
    ),
    ratio(
        "wake_2cpu",
        "rouse_poll_uring_msgring",
        "rouse_poll_epoll",
        1.0,
        "two CPUs: io_uring (MSG_RING) ≤ 1.0× epoll",
    ),
    Check::Counter {
        group: "wake_1cpu",
        a: "rouse_poll_uring_msgring",
        wakes: false,
        max: 2.0,
        say: "MSG_RING path ≤ 2 wake syscalls per round trip",
    },
    ratio(
        "functors_1p",
        "rouse_loop",
        "muduo",
        1.0 / 6.0,
        "1 producer: ≥ 6× muduo",
    ),
    ratio(
        "functors_1p",
        "rouse_loop",
        "calloop_channel",
        1.0 / 6.0,
        "1 producer: ≥ 6× calloop channel",
    ),
    ratio(
        "functors_1p",
        "rouse_loop",
        "tokio_spawn",
        1.0 / 8.0,
        "1 producer: ≥ 8× tokio spawn",
    ),
    ratio(
        "functors_1p",
        "rouse_loop",
        "crossbeam",
        1.0 / 1.5,
        "1 producer: ≥ 1.5× crossbeam-channel",
    ),
    Check::Counter {
        group: "functors_1p",
        a: "rouse_loop",
        wakes: false,
        max: 0.01,
        say: "1 producer: ≤ 0.01 wake syscalls per functor",
    },
    ratio(
        "functors_2p",
        "rouse_loop",
        "muduo",
        1.0 / 6.0,
        "2 producers: ≥ 6× muduo",
    ),
    ratio(
        "functors_2p",
        "rouse_loop",
        "calloop_channel",
        1.0 / 6.0,
        "2 producers: ≥ 6× calloop channel",
    ),
    ratio(
        "functors_2p",
        "rouse_loop",
        "tokio_spawn",
        1.0 / 8.0,
        "2 producers: ≥ 8× tokio spawn",
    ),
    ratio(
        "functors_2p",
        "rouse_loop",
        "crossbeam",
        1.0 / 1.5,
        "2 producers: ≥ 1.5× crossbeam-channel",
    ),
    Check::Counter {
        group: "functors_2p",
        a: "rouse_loop",
        wakes: false,
        max: 0.01,
        say: "2 producers: ≤ 0.01 wake syscalls per functor",
    },
    Check::Counter {
        group: "pool",
        a: "rouse_pool",
        wakes: true,
        max: 0.1,
        say: "worker pool: ≤ 0.1 wakes per completion",
    },
    ratio(
        "scale_poll",
        "epoll_10000",
        "epoll_10",
        1.2,
        "epoll: 10,000 idle fds ≤ 1.2× 10",
    ),
    ratio(
        "scale_poll",
        "uring_10000",
        "uring_10",
        1.2,
        "io_uring: 10,000 idle fds ≤ 1.2× 10",
    ),
    ratio(
        "scale_timers",
        "timers_1000000",
        "timers_1000",
        2.0,
        "1,000,000 timers ≤ 2× the cost of 1,000",
    ),
    ratio(
        "echo",
        "rouse_loop",
        "tokio",
        1.0,
        "echo: ≥ 1.0× tokio's messages per second",
    ),
];

#[derive(Default)]
struct Measured {
    /// Median ns per operation, by `group/id`.
    median: BTreeMap<String, f64>,
    /// The median's 95% confidence interval.
    interval: BTreeMap<String, (f64, f64)>,
    /// rouse's own counters: (ops, wakes, wake_syscalls).
    counters: BTreeMap<String, (u64, u64, u64)>,
    /// perf's counts per operation: (all syscalls, write syscalls).
    perf: BTreeMap<String, (f64, f64)>,
    skipped: BTreeMap<String, String>,
}

pub(crate) fn bench(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    let mut full = false;
    let mut count = true;
    let mut readme = false;
    let mut filter: Option<String> = None;
    let mut report_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--full" => full = true,
            "--no-count" => count = false,
            "--readme" => readme = true,
            "--report-only" => report_only = true,
            "--filter" => {
                filter = Some(it.next().context("--filter wants a regex")?.clone());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let root = sh.current_dir();
    let out = root.join("target/rouse-bench");
    let criterion_dir = root.join("target/criterion");
    let mut m = Measured::default();
    if report_only {
        // The last run's files: its start time was recorded beside them.
        let since = std::fs::read_to_string(out.join("started"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .context("no earlier run to report on (target/rouse-bench/started)")?;
        read_medians(&criterion_dir, since, &mut m)?;
        read_counters(&out, &mut m)?;
        read_perf(&out, &mut m);
    } else {
        std::fs::create_dir_all(&out)?;
        for f in ["counters.tsv", "skipped.tsv", "perf.tsv"] {
            let _ = std::fs::remove_file(out.join(f));
        }
        // Only rows that this run measured reach the report.
        let began = std::time::SystemTime::now();
        let secs = began.duration_since(std::time::UNIX_EPOCH)?.as_secs();
        std::fs::write(out.join("started"), secs.to_string())?;

        step("building the benches");
        cmd!(
            sh,
            "cargo bench --locked -p rouse-benches --bench compare --no-run"
        )
        .run()?;

        step(if full {
            "running the benches (full sampling)"
        } else {
            "running the benches (quick)"
        });
        let mut crit: Vec<String> = Vec::new();
        if !full {
            crit.extend(
                [
                    "--warm-up-time",
                    "1",
                    "--measurement-time",
                    "4",
                    "--sample-size",
                    "10",
                ]
                .map(String::from),
            );
        }
        crit.push("--noplot".into());
        if let Some(f) = &filter {
            crit.push(f.clone());
        }
        {
            let _out = sh.push_env(OUT_ENV, &out);
            cmd!(
                sh,
                "cargo bench --locked -p rouse-benches --bench compare -- {crit...}"
            )
            .run()?;
        }
        read_medians(&criterion_dir, began, &mut m)?;
        read_counters(&out, &mut m)?;
        if count {
            count_syscalls(sh, &root, &mut m)?;
        }
    }

    let machine = machine(sh);
    // The command that measured: what this run was asked, less the
    // options that only shape the output; for --report-only, the last run's.
    let command = if report_only {
        std::fs::read_to_string(out.join("command"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "cargo xtask bench".into())
    } else {
        let measured = std::iter::once("cargo xtask bench".to_string())
            .chain(args.iter().filter(|a| *a != "--readme").cloned())
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(out.join("command"), &measured)?;
        measured
    };
    let (report, table, checks) = report(&m, &machine, &command, count);
    std::fs::write(out.join("report.md"), &report)?;
    std::fs::write(out.join("report.svg"), svg(&checks))?;
    println!("\n{report}");
    eprintln!(
        "xtask: wrote {} and {}",
        out.join("report.md").display(),
        out.join("report.svg").display()
    );
    if readme {
        update_readme(&root.join("README.md"), &table, &machine, &command)?;
        std::fs::copy(out.join("report.svg"), root.join("docs/bench.svg")).or_else(|_| {
            std::fs::create_dir_all(root.join("docs"))?;
            std::fs::copy(out.join("report.svg"), root.join("docs/bench.svg"))
        })?;
        eprintln!("xtask: updated README.md and docs/bench.svg");
    }
    Ok(())
}

/// Where the bench process writes its counters (`rouse_benches::OUT_ENV`).
const OUT_ENV: &str = "ROUSE_BENCH_OUT";

fn read_medians(dir: &Path, since: std::time::SystemTime, m: &mut Measured) -> anyhow::Result<()> {
    for r in ROWS {
        let path = dir.join(r.group).join(r.id).join("new/estimates.json");
        let fresh = std::fs::metadata(&path)
            .and_then(|md| md.modified())
            .is_ok_and(|t| t >= since);
        if !fresh {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let median = v["median"]["point_estimate"]
            .as_f64()
            .with_context(|| format!("no median in {}", path.display()))?;
        let ci = &v["median"]["confidence_interval"];
        if let (Some(lo), Some(hi)) = (ci["lower_bound"].as_f64(), ci["upper_bound"].as_f64()) {
            m.interval.insert(format!("{}/{}", r.group, r.id), (lo, hi));
        }
        m.median.insert(format!("{}/{}", r.group, r.id), median);
    }
    Ok(())
}

fn read_counters(out: &Path, m: &mut Measured) -> anyhow::Result<()> {
    if let Ok(text) = std::fs::read_to_string(out.join("counters.tsv")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if let [id, ops, wakes, sys] = f[..] {
                m.counters
                    .insert(id.to_string(), (ops.parse()?, wakes.parse()?, sys.parse()?));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(out.join("skipped.tsv")) {
        for line in text.lines() {
            if let Some((id, why)) = line.split_once('\t') {
                m.skipped.insert(id.to_string(), why.to_string());
                m.median.remove(id);
            }
        }
    }
    Ok(())
}

fn read_perf(out: &Path, m: &mut Measured) {
    if let Ok(text) = std::fs::read_to_string(out.join("perf.tsv")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [id, all, writes] = f[..] else { continue };
            if let (Ok(a), Ok(w)) = (all.parse(), writes.parse()) {
                m.perf.insert(id.to_string(), (a, w));
            }
        }
    }
}

/// The bench executable, as cargo reports it.
fn bench_exe(sh: &Shell) -> anyhow::Result<PathBuf> {
    let json = cmd!(
        sh,
        "cargo bench --locked -p rouse-benches --bench compare --no-run --message-format=json"
    )
    .ignore_stderr()
    .read()?;
    for line in json.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_bench = v["reason"] == "compiler-artifact" && v["target"]["name"] == "compare";
        match v["executable"].as_str() {
            Some(exe) if is_bench => return Ok(PathBuf::from(exe)),
            _ => {}
        }
    }
    bail!("cargo did not report the bench executable")
}

/// Runs each counted row for N and for 2N operations under `perf stat`; the
/// difference over N is the count per operation, with set-up and teardown
/// cancelled out.
fn count_syscalls(sh: &Shell, root: &Path, m: &mut Measured) -> anyhow::Result<()> {
    step("counting system calls (perf stat, N and 2N operations per row)");
    if cmd!(sh, "perf --version")
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        eprintln!("xtask: perf not found; the report will carry no system-call counts");
        return Ok(());
    }
    let exe = bench_exe(sh)?;
    for r in ROWS {
        let Some(n) = count_ops(r.group) else {
            continue;
        };
        let id = format!("{}/{}", r.group, r.id);
        // Only rows this run measured (the filter applied), and not skipped.
        if !m.median.contains_key(&id) {
            continue;
        }
        let mut per = Vec::new();
        for ops in [n, 2 * n] {
            let spec = format!("{id} {ops}");
            let csv = root.join("target/rouse-bench/perf.csv");
            let _spec = sh.push_env("ROUSE_BENCH_COUNT", &spec);
            let res = cmd!(
                sh,
                "perf stat -x, -o {csv} -e raw_syscalls:sys_enter,syscalls:sys_enter_write -- {exe}"
            )
            .quiet()
            .ignore_stdout()
            .run();
            if let Err(e) = res {
                eprintln!("xtask: {id}: perf stat failed: {e}");
                per.clear();
                break;
            }
            let text = std::fs::read_to_string(&csv)?;
            per.push(parse_perf(&text));
        }
        if let [(a_all, a_w), (b_all, b_w)] = per[..] {
            let all = (b_all - a_all) / n as f64;
            let writes = (b_w - a_w) / n as f64;
            eprintln!("  {id}: {all:.3} syscalls, {writes:.3} writes per op");
            let line = format!("{id}\t{all}\t{writes}\n");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join("target/rouse-bench/perf.tsv"))
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))?;
            m.perf.insert(id, (all, writes));
        }
    }
    Ok(())
}

/// (raw_syscalls:sys_enter, syscalls:sys_enter_write) from `perf stat -x,`.
fn parse_perf(text: &str) -> (f64, f64) {
    let mut all = f64::NAN;
    let mut writes = f64::NAN;
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 3 {
            continue;
        }
        let value = f[0].parse::<f64>().unwrap_or(f64::NAN);
        if f[2] == "raw_syscalls:sys_enter" {
            all = value;
        } else if f[2] == "syscalls:sys_enter_write" {
            writes = value;
        }
    }
    (all, writes)
}

fn machine(sh: &Shell) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = cmd!(sh, "uname -r")
        .quiet()
        .read()
        .unwrap_or_else(|_| "?".into());
    let date = cmd!(sh, "date -u +%Y-%m-%d")
        .quiet()
        .read()
        .unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("{date}, {nproc} CPUs ({cpu}), Linux {kernel}")
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

struct CheckResult {
    say: &'static str,
    value: Option<f64>,
    max: f64,
    /// Whether `value` is a time ratio (else a count per operation).
    is_ratio: bool,
}

impl CheckResult {
    fn met(&self) -> Option<bool> {
        self.value.map(|v| v <= self.max)
    }
}

fn evaluate(m: &Measured) -> Vec<CheckResult> {
    CHECKS
        .iter()
        .map(|c| match *c {
            Check::Ratio {
                group,
                a,
                b,
                max,
                say,
            } => {
                let get = |id: &str| m.median.get(&format!("{group}/{id}")).copied();
                CheckResult {
                    say,
                    value: get(a).zip(get(b)).map(|(a, b)| a / b),
                    max,
                    is_ratio: true,
                }
            }
            Check::Counter {
                group,
                a,
                wakes,
                max,
                say,
            } => {
                let value = m
                    .counters
                    .get(&format!("{group}/{a}"))
                    .and_then(|&(ops, w, s)| {
                        (ops > 0).then(|| if wakes { w } else { s } as f64 / ops as f64)
                    });
                CheckResult {
                    say,
                    value,
                    max,
                    is_ratio: false,
                }
            }
        })
        .collect()
}

/// The report, the table for the README, and the checks.
fn report(
    m: &Measured,
    machine: &str,
    command: &str,
    counted: bool,
) -> (String, String, Vec<CheckResult>) {
    let mut t = String::new();
    for &(group, title, reference, unit) in GROUPS {
        let rows: Vec<&Row> = ROWS.iter().filter(|r| r.group == group).collect();
        let any = rows
            .iter()
            .any(|r| m.median.contains_key(&format!("{group}/{}", r.id)));
        if !any {
            continue;
        }
        let base = m.median.get(&format!("{group}/{reference}")).copied();
        let _ = writeln!(t, "\n#### {title}\n");
        let _ = writeln!(
            t,
            "| row | median {unit} | 95% interval | × {reference} | rouse counters: wakes / wake syscalls {unit} | perf: syscalls / writes {unit} |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
        for r in rows {
            let id = format!("{group}/{}", r.id);
            if let Some(why) = m.skipped.get(&id) {
                let _ = writeln!(t, "| {} | skipped: {why} | | | | |", r.label);
                continue;
            }
            let Some(&med) = m.median.get(&id) else {
                continue;
            };
            let ratio = base.map_or("–".into(), |b| format!("{:.2}", med / b));
            let ctr = m.counters.get(&id).map_or("–".into(), |&(ops, w, s)| {
                format!(
                    "{:.4} / {:.4}",
                    w as f64 / ops as f64,
                    s as f64 / ops as f64
                )
            });
            let perf = m
                .perf
                .get(&id)
                .map_or("–".into(), |&(all, w)| format!("{all:.3} / {w:.3}"));
            let interval = m.interval.get(&id).map_or("–".into(), |&(lo, hi)| {
                format!("{} – {}", fmt_ns(lo), fmt_ns(hi))
            });
            let _ = writeln!(
                t,
                "| {} | {} | {interval} | {ratio} | {ctr} | {perf} |",
                r.label,
                fmt_ns(med)
            );
        }
    }
    let checks = evaluate(m);
    let mut c =
        String::from("\n#### Targets\n\n| target | measured | limit | |\n|---|---:|---:|---|\n");
    for r in &checks {
        let (value, limit) = if r.is_ratio {
            (
                r.value.map(|v| format!("{v:.3}×")),
                format!("{:.3}×", r.max),
            )
        } else {
            (
                r.value.map(|v| format!("{v:.4}/op")),
                format!("{:.4}/op", r.max),
            )
        };
        let verdict = match r.met() {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(
            c,
            "| {} | {} | {limit} | {verdict} |",
            r.say,
            value.unwrap_or("–".into())
        );
    }
    let mut report = format!(
        "# rouse benchmark report\n\n{machine}. Command: `{command}`.\n\n\
         Medians of criterion samples; every group ran in the same process, so compare \
         ratios, not absolute times. Throughput targets (\"≥ k×\") are checked as time \
         ratios (≤ 1/k). rouse counters are rouse's own `Poller::stats()` and loop \
         counters, summed over every sample. perf counts are `perf stat -e \
         raw_syscalls:sys_enter,syscalls:sys_enter_write` over the whole process, run \
         for N and for 2N operations, (count(2N) − count(N)) / N, so set-up cancels out; \
         they include every thread's calls (both ends of a round trip, producers and \
         consumer).{}\n",
        if counted {
            ""
        } else {
            " (System calls were not counted in this run.)"
        }
    );
    report.push_str(&t);
    report.push_str(&c);
    let table = format!("{t}{c}");
    (report, table, checks)
}

/// A bar per target: the measured value as a fraction of its limit, so
/// every bar that ends left of the line is met.
fn svg(checks: &[CheckResult]) -> String {
    let rows: Vec<&CheckResult> = checks.iter().filter(|c| c.value.is_some()).collect();
    let (w, left, bar_h, gap, top) = (900.0, 380.0, 16.0, 6.0, 40.0);
    let h = top + rows.len() as f64 * (bar_h + gap) + 30.0;
    let scale_max = rows
        .iter()
        .map(|c| c.value.unwrap() / c.max)
        .fold(2.0_f64, f64::max)
        .min(10.0);
    let x = |f: f64| left + (w - left - 60.0) * (f / scale_max).min(1.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">rouse: each target's measured value ÷ its limit (left of the dashed line = met; bars stop at {scale_max:.0}×)</text>\n"
    );
    for (i, c) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let f = c.value.unwrap() / c.max;
        let color = if f <= 1.0 { "#3a7d44" } else { "#c0392b" };
        let _ = writeln!(
            s,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{f:.2}</text>",
            left - 6.0,
            y + 12.0,
            xml(c.say),
            x(f) - left,
            x(f) + 4.0,
            y + 12.0,
        );
    }
    let one = x(1.0);
    let _ = writeln!(
        s,
        "<line x1=\"{one:.1}\" y1=\"{:.1}\" x2=\"{one:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n</svg>",
        top - 6.0,
        h - 24.0
    );
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

fn update_readme(path: &Path, table: &str, machine: &str, command: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        bail!("README.md has no {START} … {END} block");
    };
    let body = format!(
        "{START}\nMeasured {machine}, with `{command}` (chart: [docs/bench.svg](docs/bench.svg)).\n{table}\n{END}"
    );
    let new = format!("{}{}{}", &text[..a], body, &text[b + END.len()..]);
    std::fs::write(path, new)?;
    Ok(())
}
