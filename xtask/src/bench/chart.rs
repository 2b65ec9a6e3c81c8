//! The chart a visitor reads: time per operation, rouse beside each peer,
//! group by group, each group on its own scale.

use std::fmt::Write as _;

use super::measure::Measured;
use super::report::fmt_ns;
use super::rows::{GROUPS, ROWS, Row};

/// Who a row measures, for its colour.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Rouse,
    Peer,
    /// A floor or the bare system calls: what nothing can beat.
    Reference,
}

fn side(r: &Row) -> Side {
    let l = r.label;
    // The scale groups measure rouse itself at two sizes.
    if l.starts_with("rouse") || r.group.starts_with("scale") {
        Side::Rouse
    } else if ["futex", "null", "rustix", "raw"]
        .iter()
        .any(|p| l.starts_with(p))
    {
        Side::Reference
    } else {
        Side::Peer
    }
}

fn colour(s: Side) -> &'static str {
    match s {
        Side::Rouse => "#1f6fb5",
        Side::Peer => "#e08a1e",
        Side::Reference => "#9a9a9a",
    }
}

/// The SVG.
pub(crate) fn svg(m: &Measured, machine: &str, command: &str) -> String {
    let (w, label_w, value_w, bar_h, gap) = (1100.0, 440.0, 140.0, 15.0, 4.0);
    let bar_max = w - label_w - value_w - 20.0;
    let mut body = String::new();
    let mut y = 88.0;
    for &(group, title, _, unit) in GROUPS {
        let rows: Vec<(&Row, f64)> = ROWS
            .iter()
            .filter(|r| r.group == group)
            .filter_map(|r| Some((r, *m.median.get(&format!("{group}/{}", r.id))?)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let top = rows
            .iter()
            .map(|(r, med)| {
                m.interval
                    .get(&format!("{group}/{}", r.id))
                    .map_or(*med, |i| i.1.max(*med))
            })
            .fold(0.0, f64::max);
        y += 10.0;
        let _ = writeln!(
            body,
            "<text x=\"10\" y=\"{y:.0}\" font-weight=\"bold\">{} — time {unit}</text>",
            xml(title)
        );
        y += 8.0;
        for (r, med) in rows {
            let x = |v: f64| label_w + bar_max * (v / top);
            let id = format!("{group}/{}", r.id);
            let _ = writeln!(
                body,
                "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{}\"/>",
                label_w - 6.0,
                y + 12.0,
                xml(r.label),
                (x(med) - label_w).max(1.0),
                colour(side(r)),
            );
            let mut end = x(med);
            if let Some(&(lo, hi)) = m.interval.get(&id) {
                let cy = y + bar_h / 2.0;
                let _ = writeln!(
                    body,
                    "<line x1=\"{:.1}\" y1=\"{cy:.1}\" x2=\"{:.1}\" y2=\"{cy:.1}\" stroke=\"black\"/>",
                    x(lo),
                    x(hi)
                );
                end = end.max(x(hi));
            }
            let _ = writeln!(
                body,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                end + 5.0,
                y + 12.0,
                fmt_ns(med)
            );
            y += bar_h + gap;
        }
        y += 10.0;
    }
    let h = y + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">rouse beside its peers: \
         time per operation (shorter is faster; each group on its own scale)</text>\n\
         <text x=\"10\" y=\"42\">{}</text>\n<text x=\"10\" y=\"58\">{}</text>\n",
        xml(machine),
        xml(&format!(
            "{command}: criterion medians, black lines their 95% intervals"
        )),
    );
    let mut lx = 10.0;
    for (side, name) in [
        (Side::Rouse, "rouse"),
        (
            Side::Peer,
            "peers (mio, polling, calloop, tokio, crossbeam, muduo and nginx patterns)",
        ),
        (Side::Reference, "floors and bare system calls"),
    ] {
        let _ = writeln!(
            s,
            "<rect x=\"{lx:.0}\" y=\"66\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.0}\" y=\"77\">{name}</text>",
            colour(side),
            lx + 16.0
        );
        lx += 16.0 + 7.0 * name.chars().count() as f64 + 20.0;
    }
    s.push_str(&body);
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
