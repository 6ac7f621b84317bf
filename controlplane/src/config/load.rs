//! Reading a config directory: the files (recursively, sorted), their YAML documents, and
//! each document's header and body, into objects or errors. Nothing here keeps state; the
//! store ([`super::ConfigStore`]) merges the outcome with the previous snapshot.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_norway::Value;

use super::objects::{Kind, Object, ObjectKey};
use super::validate::{self, FieldProblem, Problems};
use super::{istio, ConfigError, ConfigWarning, ObjectRef, UnsupportedReason};

/// What one document became.
#[derive(Clone, Debug)]
pub(crate) enum DocOutcome {
    /// A valid object, and the warnings Istio would report about it.
    Valid(Object, Vec<ConfigWarning>),
    /// A rejected document: its key when the header named a supported kind, and the errors.
    Rejected(Option<ObjectKey>, Vec<ConfigError>),
}

/// What one file became.
#[derive(Clone, Debug)]
pub(crate) struct FileOutcome {
    /// The file.
    pub file: PathBuf,
    /// Its documents, in order, up to the first YAML syntax error.
    pub docs: Vec<DocOutcome>,
    /// A read or YAML syntax error that stopped the file early: what it held after that point
    /// is unknown.
    pub broken: Option<ConfigError>,
}

/// Whether a file name is one the store reads.
fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml") | Some("json")
    )
}

/// Every config file under `root`, recursively, sorted; hidden entries (names starting with
/// `.`, such as a ConfigMap volume's `..data`) are skipped, directory symlinks are followed
/// once.
pub(crate) fn list_files(root: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    walk(root, &mut files, &mut seen).map_err(|source| ConfigError::Directory {
        dir: root.to_path_buf(),
        source: Arc::new(source),
    })?;
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, seen: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    if !seen.insert(fs::canonicalize(dir)?) {
        return Ok(());
    }
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follows symlinks; an entry that vanished meanwhile is skipped.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, files, seen)?;
        } else if meta.is_file() && is_config_file(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads and parses one file.
pub(crate) fn load_file(file: &Path) -> FileOutcome {
    match fs::read_to_string(file) {
        Ok(text) => parse_text(file, &text),
        Err(source) => FileOutcome {
            file: file.to_path_buf(),
            docs: Vec::new(),
            broken: Some(ConfigError::Read {
                file: file.to_path_buf(),
                source: Arc::new(source),
            }),
        },
    }
}

/// Parses the text of one file, document by document.
pub(crate) fn parse_text(file: &Path, text: &str) -> FileOutcome {
    let mut out = FileOutcome {
        file: file.to_path_buf(),
        docs: Vec::new(),
        broken: None,
    };
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(value) => out.docs.push(parse_document(file, doc, value)),
            Err(source) => {
                out.broken = Some(ConfigError::Yaml {
                    file: file.to_path_buf(),
                    doc,
                    source: Arc::new(source),
                });
                break;
            }
        }
    }
    out
}

fn header_str<'a>(value: &'a Value, key: &str) -> Result<Option<&'a str>, FieldProblem> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldProblem::Decode("expected a string".to_string())),
    }
}

/// The header of a document: apiVersion, kind, metadata.name and metadata.namespace.
fn header(file: &Path, doc: usize, value: &Value) -> Result<ObjectRef, ConfigError> {
    let bad = |field: &'static str, problem| ConfigError::Header {
        file: file.to_path_buf(),
        doc,
        field,
        problem,
    };
    if !value.is_mapping() {
        return Err(bad(
            "(document)",
            FieldProblem::Decode("expected a mapping".to_string()),
        ));
    }
    let api_version = header_str(value, "apiVersion")
        .map_err(|p| bad("apiVersion", p))?
        .ok_or_else(|| bad("apiVersion", FieldProblem::Required))?;
    let kind = header_str(value, "kind")
        .map_err(|p| bad("kind", p))?
        .ok_or_else(|| bad("kind", FieldProblem::Required))?;
    let meta = value.get("metadata").unwrap_or(&Value::Null);
    let name = header_str(meta, "name")
        .map_err(|p| bad("metadata.name", p))?
        .ok_or_else(|| bad("metadata.name", FieldProblem::Required))?;
    let namespace = header_str(meta, "namespace").map_err(|p| bad("metadata.namespace", p))?;
    Ok(ObjectRef {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
    })
}

/// API groups of Istio's configuration kinds.
const ISTIO_GROUPS: [&str; 4] = [
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
];

fn parse_document(file: &Path, doc: usize, value: Value) -> DocOutcome {
    let mut object = match header(file, doc, &value) {
        Ok(o) => o,
        Err(e) => return DocOutcome::Rejected(None, vec![e]),
    };
    let Some(kind) = Kind::from_type(&object.api_version, &object.kind) else {
        let group = object.api_version.split_once('/').map_or("", |(g, _)| g);
        let reason = if ISTIO_GROUPS.contains(&group) {
            // Istio's kinds are all namespaced.
            object
                .namespace
                .get_or_insert_with(|| "default".to_string());
            match Kind::istio(group, &object.kind) {
                Some(k) => UnsupportedReason::Version(k.istio_versions()),
                None => UnsupportedReason::NotYet,
            }
        } else {
            UnsupportedReason::Unknown
        };
        return DocOutcome::Rejected(
            None,
            vec![ConfigError::Unsupported {
                file: file.to_path_buf(),
                object: Box::new(object),
                reason,
            }],
        );
    };
    let namespace = if kind.is_namespaced() {
        object
            .namespace
            .get_or_insert_with(|| "default".to_string())
            .clone()
    } else {
        object.namespace = None;
        String::new()
    };
    let key = ObjectKey {
        kind,
        namespace: namespace.clone(),
        name: object.name.clone(),
    };
    let mut problems = Problems::default();
    if kind.is_namespaced() && !validate::NameRule::Dns1123Label.accepts(&namespace) {
        problems.0.push((
            "metadata.namespace".to_string(),
            FieldProblem::BadName {
                value: namespace.clone(),
                rule: validate::NameRule::Dns1123Label,
            },
        ));
    }
    let name = object.name.clone();
    let result = match kind {
        Kind::Namespace => {
            decode(value).and_then(|raw| validate::namespace(&name, raw).map(Object::Namespace))
        }
        Kind::Service => decode(value)
            .and_then(|raw| validate::service(&namespace, &name, raw).map(Object::Service)),
        Kind::Endpoints => decode(value)
            .and_then(|raw| validate::endpoints(&namespace, &name, raw).map(Object::Endpoints)),
        Kind::EndpointSlice => decode(value).and_then(|raw| {
            validate::endpoint_slice(&namespace, &name, raw).map(Object::EndpointSlice)
        }),
        Kind::ConfigMap => decode(value)
            .and_then(|raw| validate::config_map(&namespace, &name, raw).map(Object::ConfigMap)),
        _ => return istio_document(file, &object, key, kind, value, problems),
    };
    match result {
        Ok(o) if problems.0.is_empty() => DocOutcome::Valid(o, Vec::new()),
        Ok(_) => DocOutcome::Rejected(Some(key), invalid(file, &object, problems)),
        Err(more) => {
            problems.0.extend(more.0);
            DocOutcome::Rejected(Some(key), invalid(file, &object, problems))
        }
    }
}

/// A document of one of Istio's kinds.
fn istio_document(
    file: &Path,
    object: &ObjectRef,
    key: ObjectKey,
    kind: Kind,
    value: Value,
    mut problems: Problems,
) -> DocOutcome {
    match istio::parse(kind, object, value) {
        Ok((o, warnings)) if problems.0.is_empty() => {
            let warnings = warnings
                .into_iter()
                .map(|(field, problem)| ConfigWarning {
                    file: file.to_path_buf(),
                    object: Box::new(object.clone()),
                    field,
                    problem,
                })
                .collect();
            DocOutcome::Valid(o, warnings)
        }
        Ok(_) => DocOutcome::Rejected(Some(key), invalid(file, object, problems)),
        Err(more) => {
            problems.0.extend(more.0);
            DocOutcome::Rejected(Some(key), invalid(file, object, problems))
        }
    }
}

fn invalid(file: &Path, object: &ObjectRef, problems: Problems) -> Vec<ConfigError> {
    problems
        .0
        .into_iter()
        .map(|(field, problem)| ConfigError::Invalid {
            file: file.to_path_buf(),
            object: Box::new(object.clone()),
            field,
            problem,
        })
        .collect()
}

/// Decodes a document into its YAML shape, naming the field that does not fit.
fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Problems> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Problems(vec![(
            field,
            FieldProblem::Decode(e.into_inner().to_string()),
        )])
    })
}
