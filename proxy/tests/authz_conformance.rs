//! Conformance with Istio's authorization builder: for every input under
//! `pilot/pkg/security/authz/builder/testdata/` (Istio's conformance material, beside the
//! checkout in `../shared/conformance/istio` or where `$MESH_CONFORMANCE_DIR` points), the
//! RBAC filters Istio builds from it (`*-out*.yaml`) are read into the protobuf messages a
//! proxy receives, converted by the xDS client and compiled by `proxy::authz`, exactly as the
//! data path does. Requests are then built from each expected output — for every policy, one
//! that satisfies its permission and principal trees, and near misses that undo one attribute
//! of it — and every filter's verdict (enforced, dry-run shadow, audit log), its effective
//! policy and the chain's combined verdict must be what the expected output says.
//!
//! Filters that are not RBAC (the `ext_authz` filter of CUSTOM providers) are listed as not
//! evaluated; the RBAC filters next to them still are.

#[path = "authz_conformance/matchers.rs"]
mod matchers;
#[path = "authz_conformance/oracle.rs"]
mod oracle;
#[path = "authz_conformance/pb.rs"]
mod pb;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use oracle::{matches, near_miss, policy_tree, witness, Req};
use proxy::authz::{check_all, Attributes, FilterOutcome, RbacFilter, RequestAttributes};
use proxy::stats::Counters;
use serde_json::Value;
use xds_client::model::rbac::Rbac;

const TESTDATA: &str = "pilot/pkg/security/authz/builder/testdata";

/// Inputs whose outputs are not named after them (Istio's builder test runs one input with
/// several mesh configs).
const EXTRA_OUTPUTS: &[(&str, &[&str])] = &[(
    "http/custom-simple-http",
    &[
        "custom-grpc-provider-no-namespace",
        "custom-grpc-provider",
        "custom-http-provider",
        "custom-bad",
    ],
)];

fn conformance_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MESH_CONFORMANCE_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            vec![d.clone(), d.join("istio")]
        }
        None => vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/istio")],
    };
    candidates.into_iter().find(|d| d.join(TESTDATA).is_dir())
}

/// One expected filter.
struct Expected {
    file: String,
    /// `typedConfig`.
    config: Value,
    /// The converted and compiled filter.
    filter: RbacFilter,
}

/// What the expected output says one filter does with `req`.
fn expected(config: &Value, req: &Req) -> FilterOutcome {
    let verdict = |rules: &Value| -> (bool, Option<String>, String) {
        let action = rules["action"].as_str().unwrap_or("ALLOW").to_string();
        let mut names: Vec<&String> = rules["policies"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        names.sort();
        let matched = names
            .into_iter()
            .find(|n| matches(&policy_tree(&rules["policies"][n.as_str()]), req))
            .cloned();
        let allowed = match action.as_str() {
            "ALLOW" => matched.is_some(),
            "DENY" => matched.is_none(),
            _ => true,
        };
        (allowed, matched, action)
    };
    let shadow = config.get("shadowRules").map(|r| {
        let (allowed, policy, _) = verdict(r);
        proxy::authz::ShadowOutcome {
            allowed,
            policy: policy.map(Into::into),
        }
    });
    let Some(rules) = config.get("rules") else {
        return FilterOutcome {
            allowed: true,
            denied_details: None,
            shadow,
            log: false,
        };
    };
    let (allowed, policy, action) = verdict(rules);
    FilterOutcome {
        allowed,
        denied_details: (!allowed).then(|| {
            format!(
                "rbac_access_denied_matched_policy[{}]",
                policy.as_deref().unwrap_or("none")
            )
            .into()
        }),
        shadow,
        log: action == "LOG" && policy.is_some(),
    }
}

/// Runs `check` with `req` as the data path's attributes.
fn with_attributes<T>(req: &Req, check: impl FnOnce(&Attributes<'_>) -> T) -> T {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &req.headers {
        headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let request = RequestAttributes {
        method: &req.method,
        path: &req.path,
        authority: &req.authority,
        scheme: "http",
        headers: &headers,
        remote_ip: req.remote,
    };
    let attrs = Attributes {
        source: SocketAddr::new(req.source, 40000),
        destination: SocketAddr::new(req.dest_ip, req.port),
        principal: req.principal.as_deref(),
        server_name: req.sni.as_deref(),
        request: req.http.then_some(&request),
    };
    check(&attrs)
}

/// Reads an expected output: the RBAC filter, or `None` for another filter.
fn load(path: &Path, counters: &Counters) -> Option<Expected> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let config = doc["typedConfig"].clone();
    let rbac = match doc["name"].as_str().unwrap() {
        "envoy.filters.http.rbac" => Rbac::try_from(pb::http_rbac(&config)),
        "envoy.filters.network.rbac" => Rbac::try_from(pb::network_rbac(&config)),
        _ => return None,
    }
    .unwrap_or_else(|e| panic!("{file}: the xDS client refuses Istio's filter: {e}"));
    let filter = RbacFilter::new(&rbac, counters, "conformance");
    Some(Expected {
        file,
        config,
        filter,
    })
}

/// The requests built from a chain's expected filters.
fn requests(chain: &[Expected], http: bool) -> (Vec<Req>, Vec<String>) {
    let mut out = vec![Req::base(http)];
    let mut unsatisfiable = Vec::new();
    for e in chain {
        for rules in ["rules", "shadowRules"] {
            let Some(policies) = e.config[rules]["policies"].as_object() else {
                continue;
            };
            for (name, p) in policies {
                let tree = policy_tree(p);
                match witness(&tree, http, true) {
                    Some((req, attrs)) => {
                        for a in &attrs {
                            out.extend(near_miss(&req, a));
                        }
                        out.push(req);
                    }
                    None => unsatisfiable.push(format!("{}: {name}", e.file)),
                }
                if let Some((req, _)) = witness(&tree, http, false) {
                    out.push(req);
                }
            }
        }
    }
    (out, unsatisfiable)
}

/// One expected chain: input, chain name, output files in filter order.
type Case = (String, String, Vec<PathBuf>);

/// The expected chains of every input, and every output file there is.
fn cases(dir: &Path) -> (Vec<Case>, BTreeSet<PathBuf>) {
    let mut all_outputs = BTreeSet::new();
    let mut out = Vec::new();
    for kind in ["http", "tcp"] {
        let mut files: Vec<String> = std::fs::read_dir(dir.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        files.sort();
        for f in files.iter().filter(|f| f.contains("-out")) {
            all_outputs.insert(dir.join(kind).join(f));
        }
        for input in files.iter().filter_map(|f| f.strip_suffix("-in.yaml")) {
            let key = format!("{kind}/{input}");
            let mut stems = vec![input.to_string()];
            if let Some((_, extra)) = EXTRA_OUTPUTS.iter().find(|(k, _)| *k == key) {
                stems.extend(extra.iter().map(|s| s.to_string()));
            }
            let mut chains = Vec::new();
            for stem in &stems {
                for variant in ["", "extended-"] {
                    let prefix = format!("{variant}{stem}-out");
                    let chain: Vec<PathBuf> = files
                        .iter()
                        .filter(|f| {
                            f.strip_prefix(&prefix)
                                .and_then(|r| r.strip_suffix(".yaml"))
                                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                        })
                        .map(|f| dir.join(kind).join(f))
                        .collect();
                    if !chain.is_empty() {
                        chains.push((key.clone(), format!("{variant}{stem}"), chain));
                    }
                }
            }
            if chains.is_empty() {
                // Istio builds no filter for it (CUSTOM on TCP with only HTTP fields).
                chains.push((key.clone(), format!("{input} (no filter)"), Vec::new()));
            }
            out.extend(chains);
        }
    }
    (out, all_outputs)
}

#[test]
fn istio_authz_builder_testdata() {
    let Some(root) = conformance_dir() else {
        mesh_tests::conformance::missing(&format!(
            "istio_authz_builder_testdata: Istio's conformance material ({TESTDATA}) \
             not found; set MESH_CONFORMANCE_DIR to the istio/ directory or its parent"
        ));
        return;
    };
    let dir = root.join(TESTDATA);
    let (cases, all_outputs) = cases(&dir);
    let mut used = BTreeSet::new();
    let mut mismatches = Vec::new();
    let mut not_evaluated = Vec::new();
    let mut unsatisfiable_total = Vec::new();
    let mut totals = (0usize, 0usize);
    let mut inputs = BTreeMap::<String, (usize, usize)>::new();
    for (input, name, files) in &cases {
        let http = input.starts_with("http/");
        let counters = Counters::default();
        let mut chain = Vec::new();
        for f in files {
            used.insert(f.clone());
            match load(f, &counters) {
                Some(e) => chain.push(e),
                None => not_evaluated.push(format!("{input}: {}", f.display())),
            }
        }
        let (reqs, unsatisfiable) = requests(&chain, http);
        unsatisfiable_total.extend(unsatisfiable);
        let (mut allowed, mut denied) = (0, 0);
        for req in &reqs {
            let mut all_allowed = true;
            for e in &chain {
                let want = expected(&e.config, req);
                let got = with_attributes(req, |a| e.filter.check(a));
                if got != want {
                    mismatches.push(format!(
                        "{input} [{name}] {}: {req:?}\n  expected {want:?}\n  got      {got:?}",
                        e.file
                    ));
                }
                all_allowed &= want.allowed;
            }
            let got_all =
                with_attributes(req, |a| check_all(chain.iter().map(|e| &e.filter), a)).allowed;
            if got_all != all_allowed {
                mismatches.push(format!(
                    "{input} [{name}] chain: {req:?}: expected allowed={all_allowed}"
                ));
            }
            if all_allowed {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
        println!(
            "{input} [{name}]: {} filters, {} requests: {allowed} allowed, {denied} denied",
            chain.len(),
            reqs.len()
        );
        let e = inputs.entry(input.clone()).or_default();
        e.0 += allowed;
        e.1 += denied;
        totals.0 += allowed;
        totals.1 += denied;
    }
    for (input, (allowed, denied)) in &inputs {
        // Every input's expected output allows some requests or denies some, as it says.
        assert!(allowed + denied > 0, "{input}: no request built");
    }
    let unused: Vec<_> = all_outputs.difference(&used).collect();
    assert!(unused.is_empty(), "outputs no input maps to: {unused:?}");
    println!(
        "conformance: {} inputs, {} chains, {} requests ({} allowed, {} denied); \
         not evaluated (not RBAC): {not_evaluated:?}; policies no request can match \
         (contradictory or JWT/metadata-only): {}",
        inputs.len(),
        cases.len(),
        totals.0 + totals.1,
        totals.0,
        totals.1,
        unsatisfiable_total.len()
    );
    for u in &unsatisfiable_total {
        println!("  unsatisfiable: {u}");
    }
    assert!(totals.0 > 0 && totals.1 > 0);
    assert!(
        mismatches.is_empty(),
        "{} disagreements with Istio's expected RBAC:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
