//! `cargo xtask fuzz [--time SECONDS] [TARGET]`: runs the cargo-fuzz targets
//! in `fuzz/` on this stable toolchain, minimises and keeps any finding.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::step;

const TARGETS: &[&str] = &["counter", "wake_fd", "wake_protocol"];

pub(crate) const USAGE: &str = "\
usage: cargo xtask fuzz [--time SECONDS] [TARGET]
  --time S   seconds per target (default 60)
  TARGET     one of: counter, wake_fd, wake_protocol (default: all)";

pub(crate) fn fuzz(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    let mut time = 60u64;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                time = it
                    .next()
                    .context("--time wants a number of seconds")?
                    .parse()
                    .context("--time wants a number of seconds")?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            t if TARGETS.contains(&t) => only = Some(t.to_string()),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    ensure_cargo_fuzz(sh)?;
    let root = sh.current_dir();
    let mut summary = Vec::new();
    for &target in TARGETS {
        if only.as_deref().is_some_and(|o| o != target) {
            continue;
        }
        step(&format!("fuzzing {target} for {time} s"));
        let work = root.join("fuzz/work").join(target);
        let seeds = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&work)?;
        let artifacts = root.join("fuzz/artifacts").join(target);
        let before = list(&artifacts);
        // cargo-fuzz needs nightly flags (sanitizers, -Z options): allow them
        // for this command only.
        let mut child = Command::new("cargo")
            .current_dir(&root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={time}"))
            .arg("-print_final_stats=1")
            .stderr(Stdio::piped())
            .spawn()
            .context("running cargo fuzz")?;
        let mut execs = None;
        let mut rate = None;
        let stderr = child.stderr.take().expect("piped");
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
                execs = v.trim().parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
                rate = v.trim().parse::<u64>().ok();
            }
            eprintln!("{line}");
        }
        let status = child.wait()?;
        let found: Vec<_> = list(&artifacts)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if !status.success() || !found.is_empty() {
            for artifact in &found {
                step(&format!("minimising {}", artifact.display()));
                let _bootstrap = sh.push_env("RUSTC_BOOTSTRAP", "1");
                let _ = cmd!(sh, "cargo fuzz tmin {target} {artifact}").run();
            }
            bail!(
                "{target}: a finding (kept in {}; replayed by `cargo test` as a regression once committed)",
                artifacts.display()
            );
        }
        summary.push((target, execs, rate));
    }
    step("fuzzing finished without a finding");
    for (target, execs, rate) in summary {
        let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        println!(
            "{target:14} {time} s: {} executions, {} exec/s",
            show(execs),
            show(rate)
        );
    }
    Ok(())
}

fn ensure_cargo_fuzz(sh: &Shell) -> anyhow::Result<()> {
    if cmd!(sh, "cargo fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
    {
        return Ok(());
    }
    step("installing cargo-fuzz");
    cmd!(sh, "cargo install cargo-fuzz --locked").run()?;
    Ok(())
}

fn list(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
