//! The config store: a directory of Kubernetes-style YAML, read recursively into validated
//! objects.
//!
//! Contract:
//! - Every file ending in `.yaml`, `.yml` or `.json` under the directory is read (hidden
//!   entries skipped); each may hold several documents.
//! - Each document becomes one [`Object`] or one or more [`ConfigError`]s naming the file, the
//!   object (`Service default/reviews`) and the field (`spec.ports[0].port`). A bad document
//!   never stops the others.
//! - Kinds that are not supported (yet) are reported as [`ConfigError::Unsupported`], never
//!   silently ignored.
//! - Istio's kinds ([`istio`]) are typed and validated as Istio validates them; what Istio
//!   reports as a warning (the object is accepted) is a [`ConfigWarning`].
//! - On reload, an object that became invalid (or whose file became unreadable or malformed)
//!   keeps its last valid version, marked [`StoredObject::kept`]; an object that disappeared
//!   from the files is removed.

pub mod istio;
mod load;
pub mod objects;
mod raw;
mod references;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use objects::{Kind, Object, ObjectKey};
pub use validate::FieldProblem;

use crate::watch::Trigger;
use load::DocOutcome;

/// An object as its document names it, valid or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace` (defaulted to `default` for namespaced kinds).
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// `Service default/reviews`, or `Namespace bookinfo`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Why a kind is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsupportedReason {
    /// An Istio kind the control plane does not implement (yet).
    NotYet,
    /// A supported Istio kind in a version the store does not accept.
    Version(&'static [&'static str]),
    /// A kind the control plane does not know.
    Unknown,
}

impl fmt::Display for UnsupportedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsupportedReason::NotYet => f.write_str("is not supported yet"),
            UnsupportedReason::Version(v) => write!(
                f,
                "is not a supported version of this kind (supported: {})",
                v.join(", ")
            ),
            UnsupportedReason::Unknown => f.write_str("is not a supported kind"),
        }
    }
}

/// Something Istio reports about a valid object without rejecting it (a deprecated field, a
/// selector without labels, a rule that can never match...).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}: {object}: {field}: {problem}", file.display())]
pub struct ConfigWarning {
    /// The file.
    pub file: PathBuf,
    /// The object.
    pub object: Box<ObjectRef>,
    /// The field path.
    pub field: String,
    /// What Istio says.
    pub problem: istio::IstioProblem,
}

/// A problem found while loading the config directory.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfigError {
    /// The directory itself could not be listed.
    #[error("{}: cannot read directory: {source}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// A file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// A document is not valid YAML; the rest of that file is unknown.
    #[error("{}: document {doc}: invalid YAML: {source}", file.display())]
    Yaml {
        /// The file.
        file: PathBuf,
        /// The 1-based document index.
        doc: usize,
        /// The parser's error (with line and column).
        source: Arc<serde_norway::Error>,
    },
    /// A document does not say what it is (apiVersion, kind, metadata.name).
    #[error("{}: document {doc}: {field}: {problem}", file.display())]
    Header {
        /// The file.
        file: PathBuf,
        /// The 1-based document index.
        doc: usize,
        /// The header field.
        field: &'static str,
        /// What is wrong.
        problem: FieldProblem,
    },
    /// A kind that is not supported (yet).
    #[error("{}: {object}: {} {reason}", file.display(), object.api_version)]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// The object.
        object: Box<ObjectRef>,
        /// Not yet, or unknown.
        reason: UnsupportedReason,
    },
    /// A field of an object is invalid; the object is rejected.
    #[error("{}: {object}: {field}: {problem}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The object.
        object: Box<ObjectRef>,
        /// The field path, e.g. `spec.ports[0].port`.
        field: String,
        /// What is wrong.
        problem: FieldProblem,
    },
    /// The same object is defined twice; the first definition (in path order) wins.
    #[error("{}: {key}: already defined in {}", file.display(), first.display())]
    Duplicate {
        /// The file of the second definition.
        file: PathBuf,
        /// The object.
        key: ObjectKey,
        /// The file of the definition in force.
        first: PathBuf,
    },
}

impl ConfigError {
    /// The file (or directory) the error is about.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Directory { dir, .. } => dir,
            ConfigError::Read { file, .. }
            | ConfigError::Yaml { file, .. }
            | ConfigError::Header { file, .. }
            | ConfigError::Unsupported { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::Duplicate { file, .. } => file,
        }
    }

    /// The object, as `Kind ns/name`, when the document named one.
    pub fn object(&self) -> Option<String> {
        match self {
            ConfigError::Unsupported { object, .. } | ConfigError::Invalid { object, .. } => {
                Some(object.to_string())
            }
            ConfigError::Duplicate { key, .. } => Some(key.to_string()),
            _ => None,
        }
    }

    /// The field path, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Header { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// One object in force.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredObject {
    /// The validated object.
    pub object: Object,
    /// The file it was read from.
    pub file: PathBuf,
    /// True when the current file content is invalid and this is the last valid version.
    pub kept: bool,
}

/// The outcome of one load of the directory: the objects in force and every error.
#[derive(Clone, Debug, Default)]
pub struct ConfigSnapshot {
    /// The directory.
    pub root: PathBuf,
    /// Objects in force, by key.
    pub objects: BTreeMap<ObjectKey, StoredObject>,
    /// Every problem found by this load, in file order.
    pub errors: Vec<ConfigError>,
    /// Warnings about objects in force (not about kept ones), in file order.
    pub warnings: Vec<ConfigWarning>,
    /// Objects valid on their own but rejected for their references to other objects (a
    /// VirtualService routing to a subset no DestinationRule defines), with an error in
    /// `errors`; not in force, kept apart for `meshctl analyze`.
    pub unresolved: Vec<StoredObject>,
    /// Load counter: 1 for the first load, incremented on every reload.
    pub generation: u64,
    /// The burst of file changes this load answers (none for the first load).
    pub trigger: Option<Trigger>,
}

impl ConfigSnapshot {
    /// The objects in force, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.values().map(|s| &s.object)
    }
}

/// Loads a directory and reloads it, keeping last valid versions. A file whose text is
/// unchanged since the last load is not parsed again: its documents are taken from the last
/// load (a change to one file of a big directory costs that file's parse).
#[derive(Debug)]
pub struct ConfigStore {
    root: PathBuf,
    domain: String,
    current: Arc<ConfigSnapshot>,
    /// Per file, its text and what it became, as of the last load.
    parsed: BTreeMap<PathBuf, (String, load::FileOutcome)>,
}

impl ConfigStore {
    /// Loads `root` for the first time, short host names meaning Services of the
    /// `cluster.local` domain. Errors are in the snapshot, never returned.
    pub fn load(root: impl Into<PathBuf>) -> ConfigStore {
        ConfigStore::load_in_domain(root, "cluster.local")
    }

    /// Loads `root` for the first time; short host names (`reviews`) mean Services of
    /// `domain` (`reviews.NS.svc.DOMAIN`) in the checks across objects.
    pub fn load_in_domain(root: impl Into<PathBuf>, domain: &str) -> ConfigStore {
        let root = root.into();
        let empty = Arc::new(ConfigSnapshot {
            root: root.clone(),
            ..Default::default()
        });
        let mut store = ConfigStore {
            root,
            domain: domain.to_string(),
            current: empty,
            parsed: BTreeMap::new(),
        };
        store.reload();
        store
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<ConfigSnapshot> {
        self.current.clone()
    }

    /// Reads the directory again and returns the new snapshot. When the directory cannot be
    /// listed at all, every object stays in force (kept) and the error is reported.
    pub fn reload(&mut self) -> Arc<ConfigSnapshot> {
        self.reload_triggered(None)
    }

    /// [`ConfigStore::reload`], recording the burst of file changes that caused it.
    pub fn reload_triggered(&mut self, trigger: Option<Trigger>) -> Arc<ConfigSnapshot> {
        let previous = self.current.clone();
        let mut next = ConfigSnapshot {
            root: self.root.clone(),
            generation: previous.generation + 1,
            trigger,
            ..Default::default()
        };
        let files = match load::list_files(&self.root) {
            Ok(files) => files,
            Err(e) => {
                next.errors.push(e);
                next.objects = previous.objects.clone();
                next.objects.values_mut().for_each(|o| o.kept = true);
                self.current = Arc::new(next);
                return self.current.clone();
            }
        };
        let mut parsed = BTreeMap::new();
        let outcomes: Vec<_> = files
            .iter()
            .map(|f| {
                let Ok(text) = std::fs::read_to_string(f) else {
                    return load::load_file(f);
                };
                let outcome = match self.parsed.remove(f) {
                    Some((before, outcome)) if before == text => outcome,
                    _ => load::parse_text(f, &text),
                };
                parsed.insert(f.clone(), (text, outcome.clone()));
                outcome
            })
            .collect();
        self.parsed = parsed;
        let mut rejected_keys = BTreeSet::new();
        let mut broken_files = BTreeSet::new();
        for outcome in outcomes {
            for doc in outcome.docs {
                match doc {
                    DocOutcome::Valid(object, warnings) => {
                        next.warnings.extend(warnings);
                        let key = object.key();
                        if let Some(first) = next.objects.get(&key) {
                            next.errors.push(ConfigError::Duplicate {
                                file: outcome.file.clone(),
                                key,
                                first: first.file.clone(),
                            });
                        } else {
                            next.objects.insert(
                                key,
                                StoredObject {
                                    object,
                                    file: outcome.file.clone(),
                                    kept: false,
                                },
                            );
                        }
                    }
                    DocOutcome::Rejected(key, errors) => {
                        rejected_keys.extend(key);
                        next.errors.extend(errors);
                    }
                }
            }
            if let Some(e) = outcome.broken {
                next.errors.push(e);
                broken_files.insert(outcome.file);
            }
        }
        // Last valid versions: of objects rejected now, and of objects whose file broke.
        for (key, stored) in &previous.objects {
            if next.objects.contains_key(key) {
                continue;
            }
            if rejected_keys.contains(key) || broken_files.contains(&stored.file) {
                let mut kept = stored.clone();
                kept.kept = true;
                next.objects.insert(key.clone(), kept);
            }
        }
        references::check(&mut next, &previous, &self.domain);
        self.current = Arc::new(next);
        self.current.clone()
    }
}

/// What the documents of one text became: the valid objects (duplicates included, in order),
/// the errors and the warnings, as [`ConfigStore`] would report them for a file `file` holding
/// `text`.
#[derive(Debug, Default)]
pub struct ParsedText {
    /// Valid objects, in document order.
    pub objects: Vec<Object>,
    /// Errors, in document order.
    pub errors: Vec<ConfigError>,
    /// Warnings about the valid objects.
    pub warnings: Vec<ConfigWarning>,
}

/// Parses and validates `text` as the content of `file` (which is not read).
pub fn parse_str(file: &Path, text: &str) -> ParsedText {
    let outcome = load::parse_text(file, text);
    let mut out = ParsedText::default();
    for doc in outcome.docs {
        match doc {
            DocOutcome::Valid(o, w) => {
                out.objects.push(o);
                out.warnings.extend(w);
            }
            DocOutcome::Rejected(_, e) => out.errors.extend(e),
        }
    }
    out.errors.extend(outcome.broken);
    out
}

#[cfg(test)]
mod tests;
