//! Traffic through the demo mesh: `mesh-echo client http` in the client pod, to each Service
//! by name, and what came back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::config::DemoService;
use super::mesh::DemoMesh;
use super::signals::Signals;
use super::DemoError;
use crate::harness::{bin, HarnessError, Pod};

/// Limit of each request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many distinct error messages a tally keeps.
const KEPT_ERRORS: usize = 3;

/// What the requests to one Service got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// The Service, `NAMESPACE/NAME`.
    pub service: String,
    /// The URL requested.
    pub url: String,
    /// Requests sent.
    pub requests: u32,
    /// Responses per status code; `error` for requests without a response.
    pub statuses: BTreeMap<String, u32>,
    /// Responses per workload that answered (`reviews v2`); `(not mesh-echo)` for responses
    /// that do not come from an app (the sidecar's own replies).
    pub answered: BTreeMap<String, u32>,
    /// Who should answer: the Service's name with each of its versions.
    pub expected: Vec<String>,
    /// The first few distinct transport errors and non-app replies.
    pub errors: Vec<String>,
}

impl Tally {
    /// What is wrong: requests without a 200, answers from outside the Service, versions
    /// that never answered.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let not_ok: u32 = self
            .statuses
            .iter()
            .filter(|(s, _)| s.as_str() != "200")
            .map(|(_, n)| n)
            .sum();
        if not_ok > 0 {
            out.push(format!(
                "{}: {not_ok} of {} requests to {} got no 200 ({})",
                self.service,
                self.requests,
                self.url,
                self.errors.join("; ")
            ));
        }
        for who in self.answered.keys() {
            if !self.expected.contains(who) && who != NOT_ECHO {
                out.push(format!(
                    "{}: answered by {who}, not one of its workloads",
                    self.service
                ));
            }
        }
        for who in &self.expected {
            if !self.answered.contains_key(who) {
                out.push(format!("{}: {who} never answered", self.service));
            }
        }
        out
    }

    fn record(&mut self, line: &Value) {
        let status = line["status"].as_u64();
        let key = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        *self.statuses.entry(key).or_default() += 1;
        let Some(status) = status else {
            self.keep_error(line["error"].as_str().unwrap_or("no response").to_owned());
            return;
        };
        let body = &line["body"];
        let who = match (body["name"].as_str(), body["version"].as_str()) {
            (Some(name), Some(version)) => format!("{name} {version}"),
            _ => {
                let text = match body {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let text: String = text.trim().chars().take(120).collect();
                self.keep_error(format!("{status} {text:?}"));
                NOT_ECHO.to_owned()
            }
        };
        *self.answered.entry(who).or_default() += 1;
    }

    fn keep_error(&mut self, e: String) {
        if self.errors.len() < KEPT_ERRORS && !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }
}

/// What [`Tally::answered`] calls a response whose body is not a `mesh-echo` reply.
const NOT_ECHO: &str = "(not mesh-echo)";

impl DemoMesh {
    /// Sends `requests` requests from the client pod to every Service and counts what came
    /// back.
    pub fn send_traffic(&self, requests: u32, signals: &Signals) -> Result<Vec<Tally>, DemoError> {
        let client = self
            .client()
            .ok_or(DemoError::Harness(HarnessError::TornDown(
                "mesh-demo".to_owned(),
            )))?;
        let mut tallies = Vec::new();
        for s in &self.config().services {
            signals.check()?;
            tallies.push(send(client, s, requests)?);
        }
        Ok(tallies)
    }
}

/// `mesh-echo client http http://NAME:PORT/ --count N` in `client`, tallied.
pub fn send(client: &Pod, service: &DemoService, requests: u32) -> Result<Tally, DemoError> {
    let url = format!("http://{}:{}/", service.spec.name, service.port());
    eprintln!(
        "mesh-demo: {requests} requests from {} to {url}",
        client.name()
    );
    let limit = REQUEST_TIMEOUT * requests.max(1) + Duration::from_secs(10);
    let out = client
        .command([bin("mesh-echo")])
        .args(["client", "http", url.as_str(), "--count"])
        .arg(requests.to_string())
        .args([
            "--timeout".to_owned(),
            format!("{}s", REQUEST_TIMEOUT.as_secs()),
        ])
        .timeout(limit)
        .exec()?;
    let mut tally = Tally {
        service: service.key(),
        url,
        requests,
        expected: service
            .versions
            .iter()
            .map(|v| format!("{} {v}", service.spec.name))
            .collect(),
        ..Tally::default()
    };
    let mut lines = 0;
    for line in out.stdout.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            tally.record(&v);
            lines += 1;
        }
    }
    if lines < requests {
        let missing = requests - lines;
        *tally.statuses.entry("error".to_owned()).or_default() += missing;
        tally.keep_error(format!(
            "the client printed {lines} results for {requests} requests (exit {}): {}",
            out.status,
            out.stderr.trim()
        ));
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(lines: &[Value]) -> Tally {
        let mut t = Tally {
            service: "default/reviews".to_owned(),
            url: "http://reviews:9080/".to_owned(),
            requests: u32::try_from(lines.len()).unwrap(),
            expected: vec!["reviews v1".to_owned(), "reviews v2".to_owned()],
            ..Tally::default()
        };
        lines.iter().for_each(|l| t.record(l));
        t
    }

    #[test]
    fn counts_statuses_and_answers() {
        let ok = |v: &str| serde_json::json!({"status": 200, "body": {"name": "reviews", "version": v}, "error": null});
        let t = tally(&[ok("v1"), ok("v2"), ok("v1")]);
        assert_eq!(t.statuses.get("200"), Some(&3));
        assert_eq!(t.answered.get("reviews v1"), Some(&2));
        assert!(t.problems().is_empty(), "{:?}", t.problems());
    }

    #[test]
    fn reports_failures_and_missing_versions() {
        let t = tally(&[
            serde_json::json!({"status": 503, "body": "no healthy upstream", "error": null}),
            serde_json::json!({"status": null, "body": null, "error": "connect: refused"}),
            serde_json::json!({"status": 200, "body": {"name": "ratings", "version": "v1"}}),
        ]);
        assert_eq!(t.statuses.get("503"), Some(&1));
        assert_eq!(t.statuses.get("error"), Some(&1));
        let problems = t.problems().join("\n");
        assert!(problems.contains("2 of 3 requests"), "{problems}");
        assert!(
            problems.contains("503 \"no healthy upstream\""),
            "{problems}"
        );
        assert!(problems.contains("connect: refused"), "{problems}");
        assert!(problems.contains("answered by ratings v1"), "{problems}");
        assert!(problems.contains("reviews v2 never answered"), "{problems}");
    }
}
