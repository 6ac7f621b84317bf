//! Conformance with Istio's own CRD validation tests: every document of
//! `istio/pkg/config/validation/testdata/crds/*-valid.yaml` and `*-invalid.yaml` (Istio's
//! repository, kept under `../shared/conformance/istio` beside the checkout, or where
//! `$MESH_CONFORMANCE_DIR` points: the `istio/` directory or its parent).
//!
//! - Kinds the store supports: every valid document is accepted; every invalid one is
//!   rejected with errors naming the file, the object and the field; where the document has an
//!   `_err` (Istio's expected message), one of our messages carries its meaning (see
//!   `conformance_crds/expected.rs`) and both are logged.
//! - Kinds it does not support (EnvoyFilter, ProxyConfig, RequestAuthentication, WasmPlugin,
//!   WorkloadGroup) are reported as unsupported, valid or not.
//!
//! Without the material the test prints SKIPPED (and the test command, which sets
//! `MESH_CONFORMANCE_REQUIRE=1` when the material is there, leaves it out of the run).

#[path = "conformance_crds/expected.rs"]
mod expected;
mod skip;

use std::path::{Path, PathBuf};

use controlplane::config::{parse_str, ConfigError};
use serde_norway::Value;

const SUPPORTED: [&str; 9] = [
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "WorkloadEntry",
    "Sidecar",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "Telemetry",
];

const UNSUPPORTED: [&str; 5] = [
    "EnvoyFilter",
    "ProxyConfig",
    "RequestAuthentication",
    "WasmPlugin",
    "WorkloadGroup",
];

const TESTDATA: &str = "pkg/config/validation/testdata/crds";

fn conformance_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MESH_CONFORMANCE_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            vec![d.clone(), d.join("istio")]
        }
        None => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            vec![manifest.join("../../shared/conformance/istio")]
        }
    };
    candidates.into_iter().find(|d| d.join(TESTDATA).is_dir())
}

/// One document of a test file.
struct Doc {
    file: PathBuf,
    index: usize,
    kind: String,
    name: String,
    want_err: Option<String>,
    text: String,
}

/// A document our YAML parser (libyaml's rules) reads differently from Istio's (Go's yaml).
struct YamlDivergence {
    file: &'static str,
    index: usize,
    why: &'static str,
    /// The same text written so that both parsers read it alike (checked like the original).
    rewrite: (&'static str, &'static str),
}

const YAML_DIVERGENCES: &[YamlDivergence] = &[YamlDivergence {
    file: "serviceentry-valid.yaml",
    index: 1,
    why: "the flow sequence `[1.2.3.4, 001:db8::]`: libyaml rejects a plain scalar whose `:` \
          is followed by `]`; Go's YAML reads the IPv6 address",
    rewrite: ("001:db8::]", "\"001:db8::\"]"),
}];

/// The documents of a file, split on `---` lines so that one our parser rejects does not hide
/// the others; `Err` holds the index, the text and the parser's message.
fn documents(file: &Path) -> Vec<Result<Doc, (usize, String, String)>> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut chunks = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else {
            let last = chunks.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    chunks
        .iter()
        .enumerate()
        .filter_map(|(i, chunk)| document(file, i + 1, chunk))
        .collect()
}

fn document(
    file: &Path,
    index: usize,
    chunk: &str,
) -> Option<Result<Doc, (usize, String, String)>> {
    {
        let mut value = match serde_norway::from_str::<Value>(chunk) {
            Ok(v) => v,
            Err(e) => return Some(Err((index, chunk.to_string(), e.to_string()))),
        };
        let Value::Mapping(map) = &mut value else {
            return None;
        };
        let want_err = map
            .remove("_err")
            .and_then(|v| v.as_str().map(str::to_string));
        let kind = map
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Some(Ok(Doc {
            file: file.to_path_buf(),
            index,
            kind,
            name,
            want_err,
            text: serde_norway::to_string(&value).unwrap(),
        }))
    }
}

#[derive(Default)]
struct Tally {
    valid: (usize, usize),
    invalid: (usize, usize),
    unsupported: (usize, usize),
    yaml_divergences: usize,
    failures: Vec<String>,
}

fn check_supported(doc: &Doc, valid: bool, t: &mut Tally) {
    let parsed = parse_str(&doc.file, &doc.text);
    let what = format!(
        "{} document {} ({} {})",
        doc.file.display(),
        doc.index,
        doc.kind,
        doc.name
    );
    if valid {
        t.valid.1 += 1;
        if parsed.errors.is_empty() && parsed.objects.len() == 1 {
            t.valid.0 += 1;
            for w in &parsed.warnings {
                println!("  warning (accepted): {w}");
            }
        } else {
            let msgs: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
            t.failures
                .push(format!("{what}: valid but rejected: {msgs:#?}"));
        }
        return;
    }
    t.invalid.1 += 1;
    if !parsed.objects.is_empty() || parsed.errors.is_empty() {
        t.failures.push(format!("{what}: invalid but accepted"));
        return;
    }
    for e in &parsed.errors {
        let named = e.file() == doc.file && e.object().is_some() && e.field().is_some();
        if !named {
            t.failures
                .push(format!("{what}: error without file, object and field: {e}"));
            return;
        }
    }
    let msgs: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
    if let Some(want) = &doc.want_err {
        println!(
            "  {what}\n    istio: {want}\n    ours:  {}",
            msgs.join("\n           ")
        );
        let Some((_, words)) = expected::MEANINGS.iter().find(|(w, _)| w == want) else {
            t.failures
                .push(format!("{what}: no expected meaning for _err {want:?}"));
            return;
        };
        let path = want
            .split_once(": ")
            .map(|(p, _)| p)
            .filter(|p| p.starts_with("spec"));
        let matches = parsed.errors.iter().any(|e| {
            let text = e.to_string();
            words.iter().all(|w| text.contains(w))
                && path.is_none_or(|p| e.field().is_some_and(|f| f.starts_with(p)))
        });
        if !matches {
            t.failures.push(format!(
                "{what}: no error means {want:?} (needs {words:?}{}): {msgs:#?}",
                path.map(|p| format!(" at {p}")).unwrap_or_default()
            ));
            return;
        }
    }
    t.invalid.0 += 1;
}

fn check_unsupported(doc: &Doc, t: &mut Tally) {
    t.unsupported.1 += 1;
    let parsed = parse_str(&doc.file, &doc.text);
    let reported = parsed.objects.is_empty()
        && parsed.errors.len() == 1
        && matches!(parsed.errors[0], ConfigError::Unsupported { .. });
    if reported {
        t.unsupported.0 += 1;
    } else {
        let msgs: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
        t.failures.push(format!(
            "{} document {} ({} {}): not reported as unsupported: {} objects, {msgs:?}",
            doc.file.display(),
            doc.index,
            doc.kind,
            doc.name,
            parsed.objects.len()
        ));
    }
}

#[test]
fn istio_crd_testdata() {
    let Some(dir) = conformance_dir() else {
        skip::conformance_missing(&format!(
            "istio_crd_testdata: Istio's conformance material ({TESTDATA}) not found; \
             set MESH_CONFORMANCE_DIR to the istio/ directory or its parent"
        ));
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(TESTDATA))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut t = Tally::default();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let valid = name.ends_with("-valid.yaml");
        assert!(
            valid || name.ends_with("-invalid.yaml"),
            "unexpected file {name}"
        );
        for doc in documents(file) {
            let doc = match doc {
                Ok(doc) => doc,
                Err((index, chunk, error)) => {
                    let known = YAML_DIVERGENCES
                        .iter()
                        .find(|d| d.file == name && d.index == index);
                    let Some(d) = known else {
                        t.failures
                            .push(format!("{name} document {index}: invalid YAML: {error}"));
                        continue;
                    };
                    println!(
                        "  {name} document {index}: known YAML divergence: {}",
                        d.why
                    );
                    println!("    our parser: {error}");
                    t.yaml_divergences += 1;
                    let rewritten = chunk.replace(d.rewrite.0, d.rewrite.1);
                    match document(file, index, &rewritten) {
                        Some(Ok(doc)) => doc,
                        _ => {
                            t.failures
                                .push(format!("{name} document {index}: rewrite does not parse"));
                            continue;
                        }
                    }
                }
            };
            if SUPPORTED.contains(&doc.kind.as_str()) {
                check_supported(&doc, valid, &mut t);
            } else {
                assert!(
                    UNSUPPORTED.contains(&doc.kind.as_str()),
                    "{name}: kind {} is in neither list",
                    doc.kind
                );
                check_unsupported(&doc, &mut t);
            }
        }
    }
    println!(
        "conformance: valid accepted {}/{}, invalid rejected {}/{}, unsupported reported {}/{}, \
         YAML divergences {}",
        t.valid.0,
        t.valid.1,
        t.invalid.0,
        t.invalid.1,
        t.unsupported.0,
        t.unsupported.1,
        t.yaml_divergences
    );
    assert_eq!(t.yaml_divergences, YAML_DIVERGENCES.len());
    assert!(t.valid.1 > 0 && t.invalid.1 > 0 && t.unsupported.1 > 0);
    assert!(t.failures.is_empty(), "{:#?}", t.failures);
}

/// The Bookinfo sample's Gateway, VirtualService, DestinationRule and ServiceEntry files: each
/// loads without an error or a warning (the directory as a whole holds alternatives of the
/// same objects, so files are checked one by one).
#[test]
fn istio_bookinfo_samples_load() {
    let Some(dir) = conformance_dir() else {
        skip::conformance_missing(
            "istio_bookinfo_samples_load: Istio's conformance material not found",
        );
        return;
    };
    let samples = dir.join("samples/bookinfo/networking");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut objects = 0;
    for file in &files {
        let parsed = parse_str(file, &std::fs::read_to_string(file).unwrap());
        let errors: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
        let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert!(
            warnings.is_empty() || file.ends_with("fault-injection-details-v1.yaml"),
            "{warnings:#?}"
        );
        assert!(!parsed.objects.is_empty(), "{}", file.display());
        objects += parsed.objects.len();
    }
    println!(
        "bookinfo samples: {} files, {objects} objects, all valid",
        files.len()
    );
}
