//! What a run measured, read back from the files it left: criterion's
//! estimates, the bench process's counters, skips and targets, and perf's
//! counts.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::rows::ROWS;

/// Everything the report is made of.
#[derive(Default)]
pub(crate) struct Measured {
    /// Median ns per operation, by `group/id`.
    pub(crate) median: BTreeMap<String, f64>,
    /// The median's 95% confidence interval.
    pub(crate) interval: BTreeMap<String, (f64, f64)>,
    /// rouse's own counters: (ops, wakes, wake_syscalls).
    pub(crate) counters: BTreeMap<String, (u64, u64, u64)>,
    /// perf's counts per operation: (all syscalls, write syscalls).
    pub(crate) perf: BTreeMap<String, (f64, f64)>,
    pub(crate) skipped: BTreeMap<String, String>,
    pub(crate) targets: Vec<TargetResult>,
    /// Resident memory a row added per connection, in bytes.
    pub(crate) rss: BTreeMap<String, f64>,
    /// What the server threads alone cost, summed over every run of the
    /// row: (messages, user seconds, system seconds, system calls if
    /// counted).
    pub(crate) server: BTreeMap<String, (u64, f64, f64, Option<u64>)>,
}

impl Measured {
    /// The server's user and system CPU time per message (ns), and its
    /// system calls per message, for row `id`.
    pub(crate) fn server_per_message(&self, id: &str) -> Option<(f64, f64, Option<f64>)> {
        let &(n, user, sys, calls) = self.server.get(id)?;
        if n == 0 {
            return None;
        }
        let n = n as f64;
        Some((user * 1e9 / n, sys * 1e9 / n, calls.map(|c| c as f64 / n)))
    }
}

/// One target as the bench process measured it.
pub(crate) struct TargetResult {
    pub(crate) say: String,
    pub(crate) kind: TargetKind,
    pub(crate) median: f64,
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) note: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// A time ratio from interleaved rounds, with its interval.
    Ratio,
    /// One of rouse's counters, per operation.
    Counter,
    Skipped,
}

/// A target's verdict, judged on the interval.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Met,
    NotMet,
    /// The interval straddles a limit.
    Undecided,
    Skipped,
}

impl TargetResult {
    pub(crate) fn verdict(&self) -> Verdict {
        match self.kind {
            TargetKind::Skipped => Verdict::Skipped,
            _ if self.lo >= self.min && self.hi <= self.max => Verdict::Met,
            _ if self.hi < self.min || self.lo > self.max => Verdict::NotMet,
            _ => Verdict::Undecided,
        }
    }
}

pub(crate) fn read_medians(
    dir: &Path,
    since: std::time::SystemTime,
    m: &mut Measured,
) -> anyhow::Result<()> {
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

/// The files the bench process wrote into `out`.
pub(crate) fn read_outputs(out: &Path, m: &mut Measured) -> anyhow::Result<()> {
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
    if let Ok(text) = std::fs::read_to_string(out.join("targets.tsv")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [say, kind, median, lo, hi, min, max, note] = f[..] else {
                anyhow::bail!("targets.tsv: a line of {} fields: {line}", f.len());
            };
            let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
            m.targets.push(TargetResult {
                say: say.to_string(),
                kind: match kind {
                    "ratio" => TargetKind::Ratio,
                    "counter" => TargetKind::Counter,
                    _ => TargetKind::Skipped,
                },
                median: num(median),
                lo: num(lo),
                hi: num(hi),
                min: num(min),
                max: num(max),
                note: note.to_string(),
            });
        }
    }
    if let Ok(text) = std::fs::read_to_string(out.join("rss.tsv")) {
        // The last measurement of a row wins (its interleaved runs make it
        // again).
        let rows = text.lines().filter_map(|line| {
            let (id, v) = line.split_once('\t')?;
            Some((id.to_string(), v.parse::<f64>().ok()?))
        });
        m.rss.extend(rows);
    }
    if let Ok(text) = std::fs::read_to_string(out.join("server.tsv")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [id, n, user, sys, calls] = f[..] else {
                continue;
            };
            let (Ok(n), Ok(user), Ok(sys)) =
                (n.parse::<u64>(), user.parse::<f64>(), sys.parse::<f64>())
            else {
                continue;
            };
            let calls = calls.parse::<u64>().ok();
            let e = m
                .server
                .entry(id.to_string())
                .or_insert((0, 0.0, 0.0, Some(0)));
            e.0 += n;
            e.1 += user;
            e.2 += sys;
            e.3 = match (e.3, calls) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }
    if let Ok(text) = std::fs::read_to_string(out.join("perf.tsv")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [id, all, writes] = f[..] else { continue };
            if let (Ok(a), Ok(w)) = (all.parse(), writes.parse()) {
                m.perf.insert(id.to_string(), (a, w));
            }
        }
    }
    Ok(())
}
