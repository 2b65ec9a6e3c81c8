//! `cargo xtask fuzz [--time SECONDS] [TARGET]`: runs the cargo-fuzz targets
//! in `fuzz/` on this stable toolchain, minimises and keeps any finding.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::step;

/// Each target, and the crate whose `corpus/TARGET` holds its seeds (and
/// the findings kept as regressions, which that crate's tests replay).
const TARGETS: &[&str] = &["counter", "wake_fd", "wake_protocol"];

fn corpus_of(root: &Path, target: &str) -> std::path::PathBuf {
    let krate = if target == "wake_protocol" {
        "poll"
    } else {
        "sys"
    };
    root.join("crates").join(krate).join("corpus").join(target)
}

pub(crate) const USAGE: &str = "\
usage: cargo xtask fuzz [--time SECONDS] [TARGET]
  --time S   seconds per target, at least 1 (default 60)
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
                // libFuzzer reads -max_total_time=0 as "no limit".
                if time == 0 {
                    bail!("--time 0 would fuzz forever: give at least 1 second\n{USAGE}");
                }
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
    let nightly = nightly_installed(sh);
    eprintln!(
        "xtask: cargo-fuzz needs nightly flags: {}",
        if nightly {
            "using the installed nightly toolchain"
        } else {
            "no nightly toolchain installed, so RUSTC_BOOTSTRAP=1 for the fuzz commands only"
        }
    );
    let root = sh.current_dir();
    let mut summary = Vec::new();
    for &target in TARGETS {
        if only.as_deref().is_some_and(|o| o != target) {
            continue;
        }
        step(&format!("fuzzing {target} for {time} s"));
        let work = root.join("fuzz/work").join(target);
        let seeds = corpus_of(&root, target);
        std::fs::create_dir_all(&work)?;
        let artifacts = root.join("fuzz/artifacts").join(target);
        let before = list(&artifacts);
        let mut child = fuzz_command(&root, nightly)
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
                let _ = fuzz_command(&root, nightly)
                    .args(["fuzz", "tmin", target])
                    .arg(artifact)
                    .status();
                // Kept beside the seeds, where the crate's tests replay it.
                if let Some(name) = artifact.file_name() {
                    std::fs::copy(artifact, seeds.join(name))?;
                }
            }
            bail!(
                "{target}: a finding, kept in {} (replayed by `cargo test` as a regression once committed)",
                seeds.display()
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
    step("cargo-fuzz is not installed: installing it (cargo install cargo-fuzz --locked)");
    cmd!(sh, "cargo install cargo-fuzz --locked").run()?;
    Ok(())
}

/// Whether a nightly toolchain is installed (none can be fetched here).
fn nightly_installed(sh: &Shell) -> bool {
    cmd!(sh, "cargo +nightly --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// `cargo` for a cargo-fuzz command, which needs nightly flags (sanitizers,
/// `-Z` options): on the nightly toolchain if one is installed, otherwise on
/// this one with `RUSTC_BOOTSTRAP=1` for this command only.
fn fuzz_command(root: &Path, nightly: bool) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root);
    if nightly {
        c.arg("+nightly");
    } else {
        c.env("RUSTC_BOOTSTRAP", "1");
    }
    c
}

fn list(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
