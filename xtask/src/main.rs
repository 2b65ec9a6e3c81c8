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
  ci      fmt check, clippy -D warnings, tests (on each backend, io_uring wake
          path and on the pipe fallback), examples (and their refusal of bad
          arguments), loom models, benches in test mode, packages, MSRV, docs
  bench   rouse beside its peers: criterion runs, interleaved target ratios,
          syscall counts, and rouse-bench/report.md + report.svg in the
          target directory
  fuzz    the cargo-fuzz targets (nightly if installed, else RUSTC_BOOTSTRAP)
  loom    the loom models of the wake, queue and timer-cancel protocols
  msrv    what can be checked of the minimum Rust version here";

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
        Some("msrv") => {
            if no_arguments("msrv", MSRV_USAGE, &rest)? {
                msrv(&sh)?;
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
  in order: fmt check; clippy -D warnings; the tests six times (epoll, the
  default; ROUSE_FORCE_PIPE=1, the pipe fallback; ROUSE_BACKEND=io_uring, and
  again with ROUSE_URING_WAKE=msg_ring, then both with
  ROUSE_URING_EPOLL_WAIT=0, the path for kernels without EPOLL_WAIT; the
  io_uring passes skipped with the reason where the kernel refuses io_uring); every example at a small size, and each with bad
  arguments, which it must refuse; the loom models; every benchmark once in
  criterion's test mode (nothing timed); each library crate packaged and
  tested from its package alone; the minimum Rust version (clippy's
  incompatible_msrv lint always, a build with that toolchain where it is
  installed); the docs with warnings denied. Takes no arguments.";

const LOOM_USAGE: &str = "\
usage: cargo xtask loom
  the loom models of the wake, queue and timer-cancel protocols, built with
  --cfg loom in a target directory of their own (loom/ under cargo's target
  directory). Takes no arguments.";

const MSRV_USAGE: &str = "\
usage: cargo xtask msrv
  the minimum-Rust-version checks of `ci` that need no clippy run: every
  locked dependency of the library crates declares a rust-version no newer
  than the crates' own, and the crates build with that toolchain if it is
  installed (none can be fetched here). Takes no arguments.";

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
            step("tests on io_uring with the MSG_RING wake (ROUSE_URING_WAKE=msg_ring)");
            {
                let _msg = sh.push_env("ROUSE_URING_WAKE", "msg_ring");
                cmd!(sh, "cargo test --workspace --locked").run()?;
            }
            // The path for kernels without IORING_OP_EPOLL_WAIT (6.1 to
            // 6.14), on both wakes.
            let _old = sh.push_env("ROUSE_URING_EPOLL_WAIT", "0");
            step("tests on io_uring without EPOLL_WAIT (ROUSE_URING_EPOLL_WAIT=0)");
            cmd!(sh, "cargo test --workspace --locked").run()?;
            step("tests on io_uring without EPOLL_WAIT, MSG_RING wake");
            let _msg = sh.push_env("ROUSE_URING_WAKE", "msg_ring");
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
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example echo -- --completions 64 5000"
    )
    .run()?;
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example read_file -- 8 5000 64"
    )
    .run()?;
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example daemon -- --self-test 100"
    )
    .run()?;
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example aio_read -- 8 2000 32"
    )
    .run()?;
    cmd!(
        sh,
        "cargo run --locked -p rouse-loop --example foreign_ring -- 5000 32"
    )
    .run()?;
    for mode in ["handoff", "reuseport"] {
        cmd!(
            sh,
            "cargo run --locked -p rouse-loop --example echo_group -- {mode} 2 200 5000"
        )
        .run()?;
        cmd!(
            sh,
            "cargo run --locked -p rouse-loop --example echo_group -- --completions {mode} 2 200 5000"
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
    cmd!(sh, "cargo run --locked -p rouse-sys --example inherit").run()?;
    bad_arguments(sh)?;
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

/// Every example, given arguments it must refuse: each must exit with
/// status 2, its usage on stderr, before it runs (and so never print a
/// figure made of nothing, such as NaN or inf).
fn bad_arguments(sh: &Shell) -> anyhow::Result<()> {
    step("examples refuse bad arguments");
    let cases: &[(&str, &str, &[&str])] = &[
        ("rouse-loop", "queue_in_loop", &["0"]),
        ("rouse-loop", "queue_in_loop", &["x"]),
        ("rouse-loop", "worker_pool", &["0"]),
        ("rouse-loop", "worker_pool", &["10", "x"]),
        ("rouse-loop", "echo", &["10", "0"]),
        ("rouse-loop", "echo", &["0"]),
        ("rouse-loop", "echo_group", &["reuseport", "2", "0", "100"]),
        ("rouse-loop", "echo_group", &["handoff", "0", "10", "10"]),
        ("rouse-loop", "echo_group", &["sideways"]),
        ("rouse-loop", "memory", &["x"]),
        ("rouse-loop", "memory", &["0", "0"]),
        ("rouse-loop", "read_file", &["0"]),
        ("rouse-loop", "daemon", &[]),
        ("rouse-loop", "aio_read", &["8", "10", "5000"]),
        ("rouse-loop", "foreign_ring", &["0"]),
        ("rouse-loop", "daemon", &["--self-test", "0"]),
        ("rouse-loop", "read_file", &["--direct", "8", "x"]),
        ("rouse-poll", "wake_round_trip", &["0"]),
        ("rouse-poll", "wake_round_trip", &["x"]),
        ("rouse-poll", "wake_round_trip", &["10", "three"]),
        ("rouse-sys", "inherit", &["x"]),
    ];
    for &(package, example, args) in cases {
        let out = cmd!(
            sh,
            "cargo run --quiet --locked -p {package} --example {example} -- {args...}"
        )
        .quiet()
        .ignore_status()
        .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown = format!("{example} {}", args.join(" "));
        if out.status.code() != Some(2) || !stderr.starts_with("usage:") {
            bail!(
                "`{shown}` should be refused with its usage and status 2; got {}\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            );
        }
        if stdout.contains("NaN") || stdout.contains("inf") {
            bail!("`{shown}` printed a figure made of nothing: {stdout}");
        }
        eprintln!("refused, as it should be: {shown}");
    }
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
    // The working tree as it is, committed or not. Cargo's own check of
    // the packages (`--no-verify` skips it) is what follows, done more
    // fully: it would build each crate against copies of the others that
    // cargo extracts once under CARGO_HOME and never refreshes, so that a
    // machine that packaged an earlier state of the crates checks against
    // that state.
    cmd!(
        sh,
        "cargo package --locked --allow-dirty --no-verify {args...}"
    )
    .run()?;
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

/// Checks the `rust-version` the manifests claim as far as this machine can:
/// clippy's `incompatible_msrv` lint (run by the clippy step, warnings
/// denied) refuses any standard-library item newer than it; here, every
/// locked dependency of the library crates must declare a `rust-version`
/// no newer; and the crates are built with that toolchain if it is
/// installed.
fn msrv(sh: &Shell) -> anyhow::Result<()> {
    let version = package_field(&metadata(sh)?, "rouse-sys", "rust_version")?;
    step(&format!("minimum supported Rust version ({version})"));
    dependencies_fit(sh, &version)?;
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

/// Every package the library crates depend on (normal dependencies, as
/// locked) declares a `rust-version` no newer than `msrv`, or none.
fn dependencies_fit(sh: &Shell, msrv: &str) -> anyhow::Result<()> {
    let json = cmd!(sh, "cargo metadata --format-version 1 --locked")
        .quiet()
        .read()?;
    let meta: serde_json::Value = serde_json::from_str(&json)?;
    let version = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let limit = version(msrv);
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let nodes = meta["resolve"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let id_of = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["id"].as_str())
            .map(str::to_string)
    };
    // The normal (not dev, not build-only) dependency closure of the crates.
    let mut todo: Vec<String> = CRATES.iter().filter_map(|c| id_of(c)).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(node) = nodes.iter().find(|n| n["id"] == id.as_str()) else {
            continue;
        };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            match dep["pkg"].as_str() {
                Some(p) if normal => todo.push(p.to_string()),
                _ => {}
            }
        }
    }
    let mut newer = Vec::new();
    for p in packages
        .iter()
        .filter(|p| seen.contains(p["id"].as_str().unwrap_or("")))
    {
        match p["rust_version"].as_str() {
            Some(rv) if version(rv) > limit => {
                newer.push(format!("{} {} needs Rust {rv}", p["name"], p["version"]));
            }
            _ => {}
        }
    }
    if !newer.is_empty() {
        bail!(
            "dependencies newer than rust-version {msrv}:\n  {}",
            newer.join("\n  ")
        );
    }
    eprintln!(
        "{} locked dependencies of the library crates declare a rust-version no newer than {msrv} (or none)",
        seen.len().saturating_sub(CRATES.len())
    );
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
