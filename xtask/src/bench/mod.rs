//! `cargo xtask bench`: runs the comparison benches, counts system calls,
//! and writes `rouse-bench/report.md` and `report.svg` in the target
//! directory.
//!
//! * `rows`: what each row and group is called;
//! * `measure`: reading back what a run measured;
//! * `perf`: system calls per operation, counted with `perf stat`;
//! * `report`: the Markdown tables and targets;
//! * `chart`: the SVG chart.
//!
//! The benchmarks, and the targets with the interleaved runs that judge
//! them, are in `benches/`.

mod chart;
mod measure;
mod perf;
mod report;
mod rows;

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::step;
use measure::Measured;
use rows::ROWS;

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench [--full] [--filter REGEX] [--no-count] [--readme] [--report-only]
  --full         criterion's normal sampling, and longer interleaved target runs
                 (default: a quick run, about 12 minutes on two CPUs)
  --filter RE    only the rows whose GROUP/ID matches RE, and the targets whose
                 rows all match
  --no-count     skip the system-call counts (perf stat)
  --readme       copy the resulting tables into README.md, the chart to docs/
  --report-only  run nothing: rebuild the report from the last run's files
Writes rouse-bench/report.md and report.svg in the target directory (as
`cargo metadata` gives it, so CARGO_TARGET_DIR is honoured). Fails if a row
the run asked for was not measured.";

/// Where the bench process writes its counters, skips and targets.
const OUT_ENV: &str = "ROUSE_BENCH_OUT";
/// The row filter, for the bench process's interleaved target runs.
const FILTER_ENV: &str = "ROUSE_BENCH_FILTER";
/// `quick` or `full`.
const ROUNDS_ENV: &str = "ROUSE_BENCH_ROUNDS";

struct Options {
    full: bool,
    count: bool,
    readme: bool,
    filter: Option<String>,
    report_only: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        full: false,
        count: true,
        readme: false,
        filter: None,
        report_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--full" => o.full = true,
            "--no-count" => o.count = false,
            "--readme" => o.readme = true,
            "--report-only" => o.report_only = true,
            "--filter" => {
                o.filter = Some(it.next().context("--filter wants a regex")?.clone());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Some(o))
}

pub(crate) fn bench(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    let filter = o
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--filter")?;
    let root = sh.current_dir();
    let target = crate::target_dir(sh)?;
    let out = target.join("rouse-bench");
    let criterion_dir = target.join("criterion");
    let mut m = Measured::default();
    if o.report_only {
        // The last run's files: its start time was recorded beside them.
        let since = std::fs::read_to_string(out.join("started"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .with_context(|| format!("no earlier run to report on ({})", out.display()))?;
        measure::read_medians(&criterion_dir, since, &mut m)?;
        measure::read_outputs(&out, &mut m)?;
    } else {
        std::fs::create_dir_all(&out)?;
        for f in ["counters.tsv", "skipped.tsv", "perf.tsv", "targets.tsv"] {
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

        step(if o.full {
            "running the benches (full sampling)"
        } else {
            "running the benches (quick)"
        });
        let mut crit: Vec<String> = Vec::new();
        if !o.full {
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
        if let Some(f) = &o.filter {
            crit.push(f.clone());
        }
        {
            let _out = sh.push_env(OUT_ENV, &out);
            let _filter = sh.push_env(FILTER_ENV, o.filter.as_deref().unwrap_or(""));
            let _rounds = sh.push_env(ROUNDS_ENV, if o.full { "full" } else { "quick" });
            cmd!(
                sh,
                "cargo bench --locked -p rouse-benches --bench compare -- {crit...}"
            )
            .run()?;
        }
        measure::read_medians(&criterion_dir, began, &mut m)?;
        measure::read_outputs(&out, &mut m)?;
        if o.count {
            perf::count_syscalls(sh, &out, &mut m)?;
        }
    }

    let machine = machine(sh);
    // The command that measured: what this run was asked, less the
    // options that only shape the output; for --report-only, the last run's.
    let command = if o.report_only {
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
    let counted = !m.perf.is_empty();
    let report = report::report(&m, &machine, &command, counted);
    let chart = chart::svg(&m, &machine, &command);
    std::fs::write(out.join("report.md"), &report)?;
    std::fs::write(out.join("report.svg"), &chart)?;
    println!("\n{report}");
    eprintln!(
        "xtask: wrote {} and {}",
        out.join("report.md").display(),
        out.join("report.svg").display()
    );

    // Every row asked for must have been measured (or skipped, with the
    // reason, where this machine cannot run it).
    let missing: Vec<String> = ROWS
        .iter()
        .map(|r| format!("{}/{}", r.group, r.id))
        .filter(|id| filter.as_ref().is_none_or(|f| f.is_match(id)))
        .filter(|id| !m.median.contains_key(id) && !m.skipped.contains_key(id))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} row(s) asked for were not measured: {}",
            missing.len(),
            missing.join(", ")
        );
    }
    if m.median.is_empty() {
        bail!("the run measured nothing");
    }

    if o.readme {
        report::update_readme(&root.join("README.md"), &m, &machine, &command)?;
        std::fs::create_dir_all(root.join("docs"))?;
        std::fs::write(root.join("docs/bench.svg"), &chart)?;
        eprintln!("xtask: updated README.md and docs/bench.svg");
    }
    Ok(())
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
