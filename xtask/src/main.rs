//! `cargo xtask <task>`: the project's automation, in Rust.
//!
//! See <https://github.com/matklad/cargo-xtask>.

use std::path::{Path, PathBuf};

use anyhow::bail;
use xshell::{Shell, cmd};

mod bench;
mod fuzz;

const TASKS: &str = "\
tasks (each answers --help):
  ci      fmt check, clippy -D warnings, tests (on each backend and on the pipe
          fallback), examples, loom models, benches in test mode, docs
  bench   rouse beside its peers: criterion runs, interleaved target ratios,
          syscall counts, and rouse-bench/report.md + report.svg in the
          target directory
  fuzz    the cargo-fuzz targets (nightly if installed, else RUSTC_BOOTSTRAP)
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
        Some("loom") => {
            if no_arguments("loom", LOOM_USAGE, &rest)? {
                loom(&sh)?;
            }
            Ok(())
        }
        Some("bench") => bench::bench(&sh, &rest),
        Some("fuzz") => fuzz::fuzz(&sh, &rest),
        Some("-h" | "--help" | "help") | None => {
            println!("{TASKS}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n{TASKS}"),
    }
}

const CI_USAGE: &str = "\
usage: cargo xtask ci
  fmt check, clippy -D warnings, the tests three times (epoll, the default;
  ROUSE_FORCE_PIPE=1, the pipe fallback; ROUSE_BACKEND=io_uring, skipped
  with the reason where the kernel refuses it), the examples at small sizes,
  the loom models, every benchmark once in criterion's test mode, and the
  docs with warnings denied. Takes no arguments.";

const LOOM_USAGE: &str = "\
usage: cargo xtask loom
  the loom models of the wake and queue protocols, built with --cfg loom in
  a target directory of their own (loom/ under cargo's target directory).
  Takes no arguments.";

/// `--help` prints `usage` and says not to run; anything else is refused.
fn no_arguments(task: &str, usage: &str, args: &[String]) -> anyhow::Result<bool> {
    match args.first().map(String::as_str) {
        None => Ok(true),
        Some("-h" | "--help") => {
            println!("{usage}");
            Ok(false)
        }
        Some(a) => bail!("{task} takes no arguments (got `{a}`)\n{usage}"),
    }
}

/// Everything CI checks, in the order that fails fastest.
fn ci(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    if !no_arguments("ci", CI_USAGE, args)? {
        return Ok(());
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
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example echo -- 64 5000"
    )
    .run()?;
    for mode in ["handoff", "reuseport"] {
        cmd!(
            sh,
            "cargo run --locked -p rouse-loop --example echo_group -- {mode} 2 200 5000"
        )
        .run()?;
    }
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example memory -- 200000 20000"
    )
    .run()?;
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
    packages(sh)?;
    msrv(sh)?;
    step("docs");
    {
        let _deny = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        cmd!(sh, "cargo doc --workspace --no-deps --locked").run()?;
    }
    step("ci passed");
    Ok(())
}

/// The library crates, as they would be published.
const CRATES: &[&str] = &["rouse-sys", "rouse-poll", "rouse-loop"];

/// Packages each library crate, unpacks the packages side by side, and runs
/// their tests from the packaged sources alone, each crate's dependency on
/// the others resolved to the packaged one: what a user of the published
/// crates would build.
fn packages(sh: &Shell) -> anyhow::Result<()> {
    step("packages: each crate packaged, unpacked and tested from its package");
    let target = target_dir(sh)?;
    let meta = metadata(sh)?;
    let mut args = Vec::new();
    for c in CRATES {
        args.push("-p".to_string());
        args.push(c.to_string());
    }
    // The working tree as it is, committed or not.
    cmd!(sh, "cargo package --locked --allow-dirty {args...}").run()?;
    let check = target.join("package-check");
    let _ = std::fs::remove_dir_all(&check);
    std::fs::create_dir_all(&check)?;
    let mut members = Vec::new();
    let mut patches = String::new();
    for c in CRATES {
        let v = package_field(&meta, c, "version")?;
        let dir = format!("{c}-{v}");
        let krate = target.join("package").join(format!("{dir}.crate"));
        cmd!(sh, "tar -xzf {krate} -C {check}").run()?;
        members.push(format!("\"{dir}\""));
        patches.push_str(&format!("{c} = {{ path = \"{dir}\" }}\n"));
    }
    std::fs::write(
        check.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [{}]\nresolver = \"3\"\n\n[patch.crates-io]\n{patches}",
            members.join(", ")
        ),
    )?;
    // The same dependency versions as the repository's build.
    std::fs::copy(project_root().join("Cargo.lock"), check.join("Cargo.lock"))?;
    let _dir = sh.push_dir(&check);
    let _target = sh.push_env("CARGO_TARGET_DIR", check.join("target"));
    cmd!(sh, "cargo test --workspace").run()?;
    Ok(())
}

/// Builds the library crates with the toolchain of the `rust-version` the
/// manifests claim, if it is installed here.
fn msrv(sh: &Shell) -> anyhow::Result<()> {
    let version = package_field(&metadata(sh)?, "rouse-sys", "rust_version")?;
    step(&format!("minimum supported Rust version ({version})"));
    let toolchain = format!("+{version}");
    let installed = cmd!(sh, "cargo {toolchain} --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !installed {
        eprintln!(
            "skipped: the {version} toolchain is not installed here (none can be fetched); \
             the crates are built only with the current one"
        );
        return Ok(());
    }
    let dir = target_dir(sh)?.join("msrv");
    let _dir = sh.push_env("CARGO_TARGET_DIR", &dir);
    cmd!(
        sh,
        "cargo {toolchain} check --locked -p rouse-sys -p rouse-poll -p rouse-loop"
    )
    .run()?;
    Ok(())
}

/// The loom models, in a target directory of their own: `--cfg loom`
/// rebuilds every dependency.
fn loom(sh: &Shell) -> anyhow::Result<()> {
    step("loom models");
    let dir = target_dir(sh)?.join("loom");
    let _cfg = sh.push_env("RUSTFLAGS", "--cfg loom");
    let _dir = sh.push_env("CARGO_TARGET_DIR", &dir);
    cmd!(
        sh,
        "cargo test --locked --release -p rouse-poll -p rouse-loop --lib loom_"
    )
    .run()?;
    Ok(())
}

/// `cargo metadata` of the workspace's own packages.
fn metadata(sh: &Shell) -> anyhow::Result<serde_json::Value> {
    let json = cmd!(sh, "cargo metadata --format-version 1 --no-deps")
        .quiet()
        .read()?;
    Ok(serde_json::from_str(&json)?)
}

/// A field of one of the workspace's packages, from `cargo metadata`.
fn package_field(meta: &serde_json::Value, package: &str, field: &str) -> anyhow::Result<String> {
    meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == package))
        .and_then(|p| p[field].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("cargo metadata gives {package} no {field}"))
}

/// The target directory, as cargo sees it (so `CARGO_TARGET_DIR` and
/// `build.target-dir` are honoured).
pub(crate) fn target_dir(sh: &Shell) -> anyhow::Result<PathBuf> {
    let v = metadata(sh)?;
    let dir = v["target_directory"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("cargo metadata gave no target_directory"))?;
    Ok(PathBuf::from(dir))
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
