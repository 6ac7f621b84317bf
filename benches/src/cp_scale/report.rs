//! The text table of `mesh-bench cp-scale`.

use std::fmt::Write as _;

use super::{ChangeTimes, CpScaleResults};

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn change(out: &mut String, what: &str, c: &ChangeTimes) {
    let _ = writeln!(
        out,
        "  {what:<22} change to all acked p50 {:>7.1} ms  p99 {:>7.1} ms | push (after the {:.0} ms debounce) p50 {:>7.1} ms  p99 {:>7.1} ms | per proxy p50 {:>7.1} ms  p99 {:>7.1} ms | {} per proxy{} | CPU per change: control plane {:.0} ms, simulated proxies {:.0} ms",
        c.change_to_all_acked_ms.p50,
        c.change_to_all_acked_ms.p99,
        c.debounce_ms,
        c.push_ms.p50,
        c.push_ms.p99,
        c.per_proxy_ms.p50,
        c.per_proxy_ms.p99,
        kib(c.bytes_per_proxy),
        if c.eds_only { ", EDS only" } else { "" },
        c.cp_cpu_ms,
        c.clients_cpu_ms
    );
}

/// The results as text.
pub fn render(r: &CpScaleResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mesh-bench cp-scale{}: {} services, {} endpoints, {} simulated ADS clients, {} changes of each kind (load average {:.1} at the start)",
        if r.smoke { " (SMOKE RUN)" } else { "" },
        r.services,
        r.endpoints,
        r.proxies,
        r.rounds,
        r.loadavg
    );
    for p in &r.passes {
        let _ = writeln!(
            out,
            "{}: first sync of all proxies {:.0} ms; per proxy {:.0} clusters, {} | control plane RSS {:.1} MiB (peak {:.1} MiB)",
            if p.scoped {
                "with a root-namespace Sidecar (egress ./*)"
            } else {
                "without Sidecar scoping"
            },
            p.first_sync_ms,
            p.clusters_per_proxy,
            kib(p.first_sync_bytes_per_proxy),
            p.cp_rss_mb,
            p.cp_peak_rss_mb
        );
        if let Some(c) = &p.full_push {
            change(&mut out, "full push (new Service)", c);
        }
        if let Some(c) = &p.endpoint_change {
            change(&mut out, "endpoint-only change", c);
        }
    }
    if r.scoping_applied == Some(false) {
        let _ = writeln!(
            out,
            "scoping NOT applied: the control plane does not limit what it sends by the Sidecar's egress hosts yet, so the scoped pass carries the whole mesh"
        );
    }
    out
}
