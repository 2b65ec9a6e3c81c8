//! The Markdown report: a table per group, then the targets.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;

use super::measure::{Measured, TargetKind, Verdict};
use super::rows::{GROUPS, PERF_TARGETS, ROWS, Row, SERVER_TARGETS, Than};

pub(crate) fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// A perf count per operation. (count(2N) − count(N)) / N comes out below
/// zero when set-up cost more system calls in the N run than in the 2N one
/// (threads starting, a pipe filling): the operations then cost none
/// measurable, shown as 0.
fn fmt_count(v: f64) -> String {
    format!("{:.3}", v.max(0.0))
}

/// The per-group tables.
pub(crate) fn tables(m: &Measured) -> String {
    let mut t = String::new();
    for &(group, title, reference, unit) in GROUPS {
        let rows: Vec<&Row> = ROWS.iter().filter(|r| r.group == group).collect();
        let any = rows.iter().any(|r| {
            let id = format!("{group}/{}", r.id);
            m.median.contains_key(&id) || m.skipped.contains_key(&id)
        });
        if !any {
            continue;
        }
        let base = m.median.get(&format!("{group}/{reference}")).copied();
        let with_rss = rows
            .iter()
            .any(|r| m.rss.contains_key(&format!("{group}/{}", r.id)));
        let with_server = rows
            .iter()
            .any(|r| m.server.contains_key(&format!("{group}/{}", r.id)));
        let _ = writeln!(t, "\n#### {title}\n");
        let _ = write!(
            t,
            "| row | median {unit} | 95% interval | × {reference} | rouse counters: wakes / wake syscalls {unit} | perf: syscalls / writes {unit} |"
        );
        let _ = writeln!(
            t,
            "{}{}",
            if with_rss {
                " RSS per connection |"
            } else {
                ""
            },
            if with_server {
                " server CPU per message: user / system | server syscalls per message |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            t,
            "|---|---:|---:|---:|---:|---:|{}{}",
            if with_rss { "---:|" } else { "" },
            if with_server { "---:|---:|" } else { "" }
        );
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
            let perf = m.perf.get(&id).map_or("–".into(), |&(all, w)| {
                format!("{} / {}", fmt_count(all), fmt_count(w))
            });
            let interval = m.interval.get(&id).map_or("–".into(), |&(lo, hi)| {
                format!("{} – {}", fmt_ns(lo), fmt_ns(hi))
            });
            let rss = if with_rss {
                m.rss
                    .get(&id)
                    .map_or(" – |".into(), |b| format!(" {b:.0} B |"))
            } else {
                String::new()
            };
            let server = if with_server {
                match m.server_per_message(&id) {
                    Some((user, sys, calls)) => format!(
                        " {} / {} | {} |",
                        fmt_ns(user),
                        fmt_ns(sys),
                        calls.map_or("–".into(), |c| format!("{c:.3}"))
                    ),
                    None => " – | – |".into(),
                }
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "| {} | {} | {interval} | {ratio} | {ctr} | {perf} |{rss}{server}",
                r.label,
                fmt_ns(med)
            );
        }
    }
    t
}

/// The targets table.
pub(crate) fn targets(m: &Measured) -> String {
    let mut c = String::from(
        "\n#### Targets\n\nRatios are measured in interleaved rounds (A B, B A, … in one process) \
         and judged on their 95% interval: met when the whole interval is within the limit, \
         not met when it is wholly beyond it, undecided when it straddles the limit.\n\n\
         | target | measured | 95% interval | limit | | how |\n|---|---:|---:|---:|---|---|\n",
    );
    for r in &m.targets {
        let limit = if r.min > 0.0 {
            format!("{:.3} – {:.3}", r.min, r.max)
        } else {
            format!("≤ {:.3}", r.max)
        };
        let (value, interval) = match r.kind {
            TargetKind::Ratio => (
                format!("{:.3}×", r.median),
                format!("{:.3} – {:.3}", r.lo, r.hi),
            ),
            TargetKind::Counter => (format!("{:.4}/op", r.median), "–".into()),
            TargetKind::Skipped => ("–".into(), "–".into()),
        };
        let verdict = match r.verdict() {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::Undecided => "undecided",
            Verdict::Skipped => "skipped",
        };
        let _ = writeln!(
            c,
            "| {} | {value} | {interval} | {limit} | {verdict} | {} |",
            r.say, r.note
        );
    }
    for t in SERVER_TARGETS {
        let Some((ua, _, ca)) = m.server_per_message(t.a) else {
            continue;
        };
        let (value, limit, met) = match t.than {
            Than::Syscalls(max) => {
                let Some(c) = ca else { continue };
                (format!("{c:.3}/msg"), format!("≤ {max:.3}"), c <= max)
            }
            Than::UserOf(b) => {
                let Some((ub, _, _)) = m.server_per_message(b) else {
                    continue;
                };
                (fmt_ns(ua), format!("≤ {}", fmt_ns(ub)), ua <= ub)
            }
        };
        let verdict = if met { "met" } else { "**not met**" };
        let _ = writeln!(
            c,
            "| {} | {value} | – | {limit} | {verdict} | server threads only, summed over the rows' runs (not interleaved) |",
            t.say
        );
    }
    for &(say, a, b) in PERF_TARGETS {
        let (Some(&(pa, _)), Some(&(pb, _))) = (m.perf.get(a), m.perf.get(b)) else {
            continue;
        };
        let verdict = if pa <= pb { "met" } else { "**not met**" };
        let _ = writeln!(
            c,
            "| {say} | {} | – | ≤ {} | {verdict} | perf stat, N and 2N operations |",
            fmt_count(pa),
            fmt_count(pb)
        );
    }
    c
}

/// The whole report.
pub(crate) fn report(m: &Measured, machine: &str, command: &str, counted: bool) -> String {
    let mut report = format!(
        "# rouse benchmark report\n\n{machine}. Command: `{command}`.\n\n\
         Each row's median and interval are criterion's, from samples taken row after row; \
         the \"×\" column divides medians taken minutes apart, so it is indicative only. \
         The targets below are measured again in interleaved rounds, which is what they are \
         judged on. Throughput targets (\"≥ k×\") are checked as time ratios (≤ 1/k). rouse \
         counters are rouse's own `Poller::stats()` and loop counters, summed over every \
         sample. perf counts are `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_write` \
         over the whole process, run for N and for 2N operations, (count(2N) − count(N)) / N, \
         so set-up cancels out (a difference below zero, where set-up varied more than the \
         operations cost, is shown as 0); they include \
         every thread's calls (both ends of a round trip, producers and consumer).{}\n\n\
         ![rouse beside its peers](report.svg)\n",
        if counted {
            ""
        } else {
            " (System calls were not counted in this run.)"
        }
    );
    report.push_str(&tables(m));
    report.push_str(&targets(m));
    report
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

/// Puts the chart, the tables and the targets between the README's bench
/// markers.
pub(crate) fn update_readme(
    path: &Path,
    m: &Measured,
    machine: &str,
    command: &str,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        bail!("README.md has no {START} … {END} block");
    };
    let body = format!(
        "{START}\nMeasured {machine}, with `{command}`.\n\n\
         ![Time per operation, rouse beside its peers, group by group](docs/bench.svg)\n{}{}\n{END}",
        tables(m),
        targets(m)
    );
    let new = format!("{}{}{}", &text[..a], body, &text[b + END.len()..]);
    std::fs::write(path, new)?;
    Ok(())
}
