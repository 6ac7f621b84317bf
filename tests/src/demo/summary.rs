//! The summary `mesh-demo` prints once traffic has gone through: who answered, status codes,
//! how to reach each sidecar's admin port, the control plane's debug address, the logs.

use std::fmt;

use super::mesh::{DemoMesh, CLIENT_POD};
use super::traffic::Tally;
use crate::harness::{ADMIN_PORT, DEBUG_PORT, READINESS_PORT, XDS_PORT};

/// The summary of a demo run; its `Display` is what `mesh-demo` prints.
#[derive(Debug)]
pub struct Summary<'a> {
    /// The mesh.
    pub mesh: &'a DemoMesh,
    /// What the requests to each Service got.
    pub tallies: &'a [Tally],
    /// Every problem found.
    pub problems: &'a [String],
    /// Whether the demo keeps running after printing it.
    pub waiting: bool,
}

/// `a x3, b x2`.
fn counts<'a>(items: impl IntoIterator<Item = (&'a String, &'a u32)>) -> String {
    let parts: Vec<String> = items
        .into_iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Writes `rows` as left-aligned columns, indented by two spaces.
fn table(f: &mut fmt::Formatter<'_>, rows: &[Vec<String>]) -> fmt::Result {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            line.push(' ');
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 1));
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(topo) = self.mesh.topology() else {
            return writeln!(f, "mesh-demo: the mesh is gone");
        };
        let config = self.mesh.config();
        let netns = |pod: &str| format!("{}-{pod}", topo.id());
        writeln!(
            f,
            "\n== mesh-demo: the mesh of {} is up ==\n",
            config.dir.display()
        )?;
        let requests = self.tallies.first().map_or(0, |t| t.requests);
        writeln!(
            f,
            "Traffic: {requests} HTTP requests from pod {CLIENT_POD} to each Service, by name, \
             through its sidecar and the answering pod's"
        )?;
        let mut rows = vec![vec![
            "SERVICE".to_owned(),
            "ADDRESS".to_owned(),
            "STATUS".to_owned(),
            "ANSWERED BY".to_owned(),
        ]];
        for (s, t) in config.services.iter().zip(self.tallies) {
            rows.push(vec![
                s.spec.name.clone(),
                format!("{}:{}", s.cluster_ip(), s.port()),
                counts(&t.statuses),
                counts(&t.answered),
            ]);
        }
        table(f, &rows)?;

        writeln!(
            f,
            "\nPods (topology {}: {} on bridge {}; each pod is a network namespace, \
             `ip netns exec NETNS CMD` runs CMD in it)",
            topo.id(),
            topo.subnet(),
            topo.bridge()
        )?;
        let mut rows = vec![vec![
            "POD".to_owned(),
            "IP".to_owned(),
            format!("SIDECAR ADMIN (127.0.0.1:{ADMIN_PORT} inside the pod)"),
        ]];
        let pods = self
            .mesh
            .pods()
            .iter()
            .map(|(_, p)| p)
            .chain(self.mesh.client());
        for p in pods {
            rows.push(vec![
                p.name().to_owned(),
                p.ip().to_string(),
                format!(
                    "ip netns exec {} curl -s 127.0.0.1:{ADMIN_PORT}/config_dump",
                    p.netns()
                ),
            ]);
        }
        table(f, &rows)?;
        writeln!(
            f,
            "  Readiness, from the host: curl http://POD_IP:{READINESS_PORT}/healthz/ready"
        )?;

        let host = topo.host_ip();
        writeln!(
            f,
            "\nControl plane (on the host): xDS {host}:{XDS_PORT}, debug http://{host}:{DEBUG_PORT}"
        )?;
        writeln!(
            f,
            "  curl -s http://{host}:{DEBUG_PORT}/debug/syncz       (each sidecar's acked config versions)"
        )?;
        writeln!(
            f,
            "  curl -s http://{host}:{DEBUG_PORT}/debug/registryz   (Services and their endpoints)"
        )?;
        writeln!(
            f,
            "  config: {} (a copy of {}; YAML added or changed there is reloaded)",
            topo.config_dir().display(),
            config.dir.display()
        )?;
        writeln!(
            f,
            "\nLogs: {}/\n  POD-proxy.out.log (access log), POD-proxy.err.log, POD-echo.err.log, \
             host-controlplane.err.log",
            topo.artifact_dir().display()
        )?;
        let showcase = config
            .services
            .iter()
            .find(|s| s.versions.len() > 1)
            .or(config.services.first());
        if let Some(s) = showcase {
            writeln!(
                f,
                "\nTry: ip netns exec {} curl -s http://{}:{}/",
                netns(CLIENT_POD),
                s.spec.name,
                s.port()
            )?;
        }
        if self.problems.is_empty() {
            writeln!(f, "\nProblems: none")?;
        } else {
            writeln!(f, "\nProblems ({}):", self.problems.len())?;
            for p in self.problems {
                writeln!(f, "  - {p}")?;
            }
        }
        if self.waiting {
            writeln!(
                f,
                "\nRunning. Ctrl-C (SIGINT) or SIGTERM stops it and removes everything."
            )?;
        }
        Ok(())
    }
}
