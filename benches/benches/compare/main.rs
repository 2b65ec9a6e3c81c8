//! rouse beside its peers, in one process run: see `cargo xtask bench`.
//!
//! Every benchmark is a [`Runner`] timed with criterion's `iter_custom`, so
//! that set-up (threads, loops, thousands of fds) stays out of the timing.
//! With `ROUSE_BENCH_COUNT="GROUP/ID N"` in the environment the binary runs
//! one benchmark for `N` operations instead and exits: `cargo xtask bench`
//! runs that under `perf stat` to count each row's system calls.

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::Criterion;
use rouse_benches::{Counts, record};

mod echo;
mod files;
mod functors;
mod pool;
mod scale;
mod sys;
mod targets;
mod tasks;
mod wake;

use targets::{Rounds, TARGETS, Target};

/// The environment variable that limits a run to the rows whose
/// `GROUP/ID` matches a regex (set by `cargo xtask bench --filter`).
const FILTER_ENV: &str = "ROUSE_BENCH_FILTER";
/// `quick` or `full`: how long the interleaved ratio runs are.
const ROUNDS_ENV: &str = "ROUSE_BENCH_ROUNDS";

/// A benchmark, ready to run: `run(n)` performs `n` operations and returns
/// the time they took.
pub trait Runner {
    /// Performs `iters` operations; returns the time they took.
    fn run(&mut self, iters: u64) -> Duration;

    /// Wake counts accumulated over every run so far, where the subject
    /// keeps them.
    fn counts(&self) -> Option<Counts> {
        None
    }
}

impl<F: FnMut(u64) -> Duration> Runner for F {
    fn run(&mut self, iters: u64) -> Duration {
        self(iters)
    }
}

/// Checks a peer's wait: `EINTR`, which some peers hand to their caller
/// (an io_uring's task work can cause it on a thread that owns a ring), is
/// a wait that ended early, and the caller's loop waits again.
pub fn peer_ok<T>(r: std::io::Result<T>) {
    if let Err(e) = r {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "a peer's wait failed: {e}"
        );
    }
}

/// Makes a runner, or says why this one cannot run here.
pub type Make = Box<dyn Fn() -> Result<Box<dyn Runner>, String>>;

/// One row of a group.
pub struct Bench {
    /// The group, e.g. `wake_1cpu`.
    pub group: &'static str,
    /// The row, e.g. `mio`.
    pub id: &'static str,
    /// Builds the runner.
    pub make: Make,
}

impl Bench {
    fn new<R: Runner + 'static>(
        group: &'static str,
        id: &'static str,
        make: impl Fn() -> Result<R, String> + 'static,
    ) -> Bench {
        Bench {
            group,
            id,
            make: Box::new(move || make().map(|r| Box::new(r) as Box<dyn Runner>)),
        }
    }
}

fn all() -> Vec<Bench> {
    let mut benches = Vec::new();
    sys::benches(&mut benches);
    wake::benches(&mut benches);
    functors::benches(&mut benches);
    pool::benches(&mut benches);
    scale::benches(&mut benches);
    echo::benches(&mut benches);
    files::benches(&mut benches);
    tasks::benches(&mut benches);
    benches
}

fn main() {
    if let Ok(spec) = std::env::var("ROUSE_BENCH_COUNT") {
        count(&spec);
        return;
    }
    let test_mode = std::env::args().any(|a| a == "--test");
    let filter = std::env::var(FILTER_ENV)
        .ok()
        .filter(|f| !f.is_empty())
        .map(|f| regex::Regex::new(&f).unwrap_or_else(|e| panic!("{FILTER_ENV}: {e}")));
    let selected = |id: &str| filter.as_ref().is_none_or(|f| f.is_match(id));
    let mut c = Criterion::default().configure_from_args();
    let benches = all();
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut i = 0;
    while i < benches.len() {
        let name = benches[i].group;
        let mut group = c.benchmark_group(name);
        while i < benches.len() && benches[i].group == name {
            let bench = &benches[i];
            let id = format!("{}/{}", bench.group, bench.id);
            let mut runner: Option<Result<Box<dyn Runner>, String>> = None;
            if selected(&id) {
                group.bench_function(bench.id, |b| {
                    let r = runner.get_or_insert_with(|| (bench.make)());
                    match r {
                        Ok(r) => b.iter_custom(|iters| r.run(iters)),
                        // Criterion needs a measurement: report the skip and
                        // time nothing; the report lists the row as skipped.
                        Err(_) => b.iter_custom(|_| Duration::ZERO),
                    }
                });
            }
            match runner {
                Some(Ok(r)) => {
                    if let Some(n) = r.counts() {
                        record(&id, n);
                        counts.insert(id, n);
                    }
                }
                Some(Err(why)) => {
                    eprintln!("{id}: skipped: {why}");
                    rouse_benches::record_skip(&id, &why);
                }
                None => {}
            }
            i += 1;
        }
        group.finish();
    }
    c.final_summary();

    let rounds = if test_mode {
        Rounds::TEST
    } else if std::env::var(ROUNDS_ENV).as_deref() == Ok("full") {
        Rounds::FULL
    } else {
        Rounds::QUICK
    };
    judge(&benches, &counts, rounds, &selected);
}

/// Measures every target whose rows this run selected: ratios in
/// interleaved rounds, counters from the counts the rows kept. Each result
/// is printed and written to `$ROUSE_BENCH_OUT/targets.tsv`, one line of
/// tab-separated fields: what, kind (`ratio`, `counter` or `skipped`),
/// median, interval low, interval high, lower limit, upper limit, a note.
fn judge(
    benches: &[Bench],
    counts: &BTreeMap<String, Counts>,
    rounds: Rounds,
    selected: &dyn Fn(&str) -> bool,
) {
    let find = |group: &str, id: &str| benches.iter().find(|b| b.group == group && b.id == id);
    eprintln!(
        "\ntargets: ratios from {} interleaved rounds of ~{:?} batches per side",
        rounds.rounds, rounds.batch
    );
    for t in TARGETS {
        if !t.rows().iter().all(|r| selected(r)) {
            continue;
        }
        let line = match *t {
            Target::Ratio {
                group,
                a,
                b,
                min,
                max,
                ..
            } => {
                let (Some(ba), Some(bb)) = (find(group, a), find(group, b)) else {
                    panic!("target {:?} names a row that does not exist", t.say());
                };
                match targets::interleaved(ba, bb, rounds) {
                    Ok(r) => {
                        eprintln!(
                            "  {}: {:.3} ({:.3} – {:.3}), limit {max:.3}",
                            t.say(),
                            r.median,
                            r.lo,
                            r.hi
                        );
                        format!(
                            "{}\tratio\t{}\t{}\t{}\t{min}\t{max}\t{} interleaved rounds",
                            t.say(),
                            r.median,
                            r.lo,
                            r.hi,
                            r.rounds
                        )
                    }
                    Err(why) => format!("{}\tskipped\t\t\t\t{min}\t{max}\t{why}", t.say()),
                }
            }
            Target::Counter {
                group,
                a,
                wakes,
                max,
                ..
            } => match counts.get(&format!("{group}/{a}")) {
                Some(n) if n.ops > 0 => {
                    let v = if wakes { n.wakes } else { n.wake_syscalls } as f64 / n.ops as f64;
                    eprintln!("  {}: {v:.4}/op, limit {max:.4}", t.say());
                    format!(
                        "{}\tcounter\t{v}\t{v}\t{v}\t0\t{max}\t{} operations",
                        t.say(),
                        n.ops
                    )
                }
                _ => format!("{}\tskipped\t\t\t\t0\t{max}\tno counts", t.say()),
            },
        };
        rouse_benches::record_line("targets.tsv", &line);
    }
}

/// `GROUP/ID N`: runs one benchmark for `N` operations.
fn count(spec: &str) {
    let (id, n) = spec
        .split_once(' ')
        .unwrap_or_else(|| panic!("ROUSE_BENCH_COUNT wants `GROUP/ID N`, got `{spec}`"));
    let n: u64 = n.parse().expect("N is a count");
    let bench = all()
        .into_iter()
        .find(|b| format!("{}/{}", b.group, b.id) == id)
        .unwrap_or_else(|| panic!("no benchmark `{id}`"));
    match (bench.make)() {
        Ok(mut r) => {
            let took = r.run(n);
            println!("{id}: {n} operations in {took:?}");
        }
        Err(why) => {
            eprintln!("{id}: skipped: {why}");
            std::process::exit(2);
        }
    }
}
