//! System calls per operation, counted from outside with `perf stat`.

use std::path::{Path, PathBuf};

use anyhow::bail;
use xshell::{Shell, cmd};

use super::measure::Measured;
use super::rows::{ROWS, count_ops};
use crate::step;

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
/// cancelled out. Appends to `out/perf.tsv`.
pub(crate) fn count_syscalls(sh: &Shell, out: &Path, m: &mut Measured) -> anyhow::Result<()> {
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
            let csv = out.join("perf.csv");
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
                .open(out.join("perf.tsv"))
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
