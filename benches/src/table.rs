//! The table printed on stdout: per path, one row of medians per peer and one of min-max
//! ranges under it, each peer's ratio to `mesh-proxy`, then the targets and the conditions.

use std::fmt::Write as _;

use crate::peers::Peer;
use crate::results::{PathResult, PeerResult, RunResults, Stat};

fn num(x: f64) -> String {
    if x.abs() >= 10_000.0 {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 && c.is_ascii_digit() {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn med(s: Option<Stat>) -> String {
    s.map_or("-".to_owned(), |s| num(s.median))
}

fn range(s: Option<Stat>) -> String {
    s.map_or(String::new(), |s| format!("{}-{}", num(s.min), num(s.max)))
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".to_owned(), |r| format!("{r:.2}x"))
}

const HEAD: [(&str, usize); 15] = [
    ("peer", 11),
    ("mtls", 16),
    ("p50", 9),
    ("p90", 9),
    ("p99", 9),
    ("p99.9", 9),
    ("max rps", 14),
    ("CPU ms/1k", 11),
    ("idle MB", 8),
    ("peak MB", 11),
    ("errors", 7),
    ("p99 x", 7),
    ("CPU x", 7),
    ("idle x", 7),
    ("peak x", 7),
];

fn row(cells: &[String]) -> String {
    let mut line = String::new();
    for (i, (cell, (_, w))) in cells.iter().zip(HEAD).enumerate() {
        if i < 2 {
            let _ = write!(line, "{cell:<w$} ");
        } else {
            let _ = write!(line, "{cell:>w$} ");
        }
    }
    line.trim_end().to_owned()
}

fn peer_rows(p: &PeerResult) -> (String, String) {
    let s = p.summary.clone();
    let get = |f: fn(&crate::results::PeerSummary) -> Option<Stat>| s.as_ref().and_then(f);
    let direct = p.peer == Peer::Direct;
    let r = &p.vs_mesh_proxy;
    let name = if direct { "direct*" } else { p.peer.name() };
    let mtls = if direct {
        "-".to_owned()
    } else {
        p.mtls.to_string()
    };
    let idle = if direct {
        "-".to_owned()
    } else {
        num(p.idle_rss_mb)
    };
    let main = row(&[
        name.to_owned(),
        mtls,
        med(get(|x| x.p50)),
        med(get(|x| x.p90)),
        med(get(|x| x.p99)),
        med(get(|x| x.p999)),
        med(get(|x| x.max_rps)),
        med(get(|x| x.cpu_ms_per_1k)),
        idle,
        med(get(|x| x.peak_rss_mb)),
        s.as_ref().map_or("-".to_owned(), |x| x.errors.to_string()),
        ratio(r.added_p99),
        ratio(r.cpu_per_1k),
        ratio(r.idle_rss),
        ratio(r.peak_rss),
    ]);
    let ranges = row(&[
        String::new(),
        "  min-max".to_owned(),
        range(get(|x| x.p50)),
        range(get(|x| x.p90)),
        range(get(|x| x.p99)),
        range(get(|x| x.p999)),
        range(get(|x| x.max_rps)),
        range(get(|x| x.cpu_ms_per_1k)),
        String::new(),
        range(get(|x| x.peak_rss_mb)),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    (main, ranges)
}

fn path_table(out: &mut String, path: &PathResult, r: &RunResults) {
    let s = &r.settings;
    let _ = writeln!(
        out,
        "\n{}  {}\n    {}, {} rps, {} connections, {} B bodies, {} repetition(s); latency in µs added over direct (direct*: absolute)",
        path.id,
        path.title,
        path.protocol,
        s.rate,
        s.connections,
        s.body_size,
        r.repetitions.len()
    );
    let head: Vec<String> = HEAD.iter().map(|(h, _)| (*h).to_owned()).collect();
    let _ = writeln!(out, "{}", row(&head));
    for p in &path.peers {
        let (main, ranges) = peer_rows(p);
        let _ = writeln!(out, "{main}");
        if r.repetitions.len() > 1 {
            let _ = writeln!(out, "{ranges}");
        }
    }
}

/// The whole report as text.
pub fn render(r: &RunResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mesh-bench: {} ({} CPUs, kernel {}), mesh-proxy {}{}",
        r.machine.cpu_model,
        r.machine.cpus,
        r.machine.kernel,
        r.mesh_proxy_binary,
        if r.release_build {
            ""
        } else {
            " (NOT a release build)"
        }
    );
    if r.smoke {
        let _ = writeln!(
            out,
            "SMOKE RUN: a few seconds per path; the numbers mean nothing."
        );
    }
    let _ = writeln!(
        out,
        "proxies pinned to CPU {}, load generator and upstream apps to CPU {}; columns \"x\" are the peer's figure / mesh-proxy's",
        r.pinning.proxy, r.pinning.load
    );
    for path in &r.paths {
        path_table(&mut out, path, r);
    }
    if let Some(scale) = &r.scale {
        crate::scale::render(&mut out, scale);
    }
    if !r.targets.is_empty() {
        let _ = writeln!(out, "\nTargets (reported, not asserted):");
        for t in &r.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "n/a",
            };
            let _ = writeln!(
                out,
                "  {:<52} {:>7}   target <= {:.1}x   {verdict}",
                t.what,
                ratio(t.ratio),
                t.at_most
            );
        }
    }
    let _ = writeln!(out, "\nConditions:");
    for rep in &r.repetitions {
        let _ = writeln!(
            out,
            "  repetition {}: 1-min load average {:.2} -> {:.2}, background up to {:.2} cores{}",
            rep.index,
            rep.loadavg_1m_start,
            rep.loadavg_1m_end,
            rep.max_background_cores,
            if rep.heavy_background_load {
                "  HEAVY BACKGROUND LOAD: treat with care"
            } else {
                ""
            }
        );
    }
    for s in &r.skipped {
        let _ = writeln!(
            out,
            "  skipped {}{}: {}",
            s.peer,
            s.path.map(|p| format!(" on {p}")).unwrap_or_default(),
            s.reason
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::num;

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(123456.0), "123,456");
        assert_eq!(num(250.4), "250");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
    }
}
