//! `cargo xtask <task>`: the project's automation, in Rust.
//!
//! See <https://github.com/matklad/cargo-xtask>.

use std::path::{Path, PathBuf};

use anyhow::bail;
use xshell::{Shell, cmd};

mod bench;
mod fuzz;

const TASKS: &str = "\
tasks:
  ci      fmt check, clippy -D warnings, tests (on each backend and on the pipe
          fallback), examples, loom models, benches in test mode, docs
  bench   rouse beside its peers: criterion runs, syscall counts, and
          target/rouse-bench/report.md + report.svg (see `bench --help`)
  fuzz    the cargo-fuzz targets, on stable (see `fuzz --help`)
  loom    the loom models of the wake and queue protocols";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("ci") => ci(&sh, &rest),
        Some("loom") => loom(&sh),
        Some("bench") => bench::bench(&sh, &rest),
        Some("fuzz") => fuzz::fuzz(&sh, &rest),
        Some("-h" | "--help" | "help") | None => {
            println!("{TASKS}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n{TASKS}"),
    }
}

/// Everything CI checks, in the order that fails fastest.
fn ci(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    if let Some(a) = args.first() {
        bail!("ci takes no arguments (got `{a}`)");
    }
    step("format");
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    step("clippy");
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    step("tests");
    cmd!(sh, "cargo test --workspace --locked").run()?;
    step("tests on the pipe fallback (ROUSE_FORCE_PIPE=1)");
    {
        let _pipe = sh.push_env("ROUSE_FORCE_PIPE", "1");
        cmd!(sh, "cargo test --workspace --locked").run()?;
    }
    step("tests on the io_uring backend (ROUSE_BACKEND=io_uring)");
    match rouse_poll::Poller::with_backend(rouse_poll::Backend::IoUring) {
        Ok(_) => {
            let _uring = sh.push_env("ROUSE_BACKEND", "io_uring");
            cmd!(sh, "cargo test --workspace --locked").run()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!("skipped: this kernel refuses the io_uring backend: {e}");
        }
        Err(e) => return Err(e.into()),
    }
    step("examples, small runs");
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example queue_in_loop -- 20000"
    )
    .run()?;
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example worker_pool -- 2000"
    )
    .run()?;
    cmd!(sh, "cargo run --locked -p rouse-loop --example echo").run()?;
    cmd!(
        sh,
        "cargo run --locked -p rouse-poll --example wake_round_trip -- 2000"
    )
    .run()?;
    loom(sh)?;
    step("benchmarks, once each in criterion's test mode (nothing is timed)");
    cmd!(
        sh,
        "cargo bench --locked -p rouse-benches --bench compare -- --test"
    )
    .run()?;
    step("docs");
    {
        let _deny = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        cmd!(sh, "cargo doc --workspace --no-deps --locked").run()?;
    }
    step("ci passed");
    Ok(())
}

/// The loom models, in a target directory of their own: `--cfg loom`
/// rebuilds every dependency.
fn loom(sh: &Shell) -> anyhow::Result<()> {
    step("loom models");
    let _cfg = sh.push_env("RUSTFLAGS", "--cfg loom");
    let _dir = sh.push_env("CARGO_TARGET_DIR", "target/loom");
    cmd!(
        sh,
        "cargo test --locked --release -p rouse-poll -p rouse-loop --lib loom_"
    )
    .run()?;
    Ok(())
}

fn step(what: &str) {
    eprintln!("\n==> xtask: {what}");
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the workspace root")
        .to_path_buf()
}
