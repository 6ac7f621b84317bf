//! `Telemetry` (`telemetry.istio.io` v1, v1alpha1): per-workload access logging and tracing.
//! Types from Istio's `telemetry.proto`; the checks of Istio's `validateTelemetry` (selector,
//! sampling range, one tracing provider) plus this mesh's own: a `filter.expression` must be one
//! the proxies evaluate (xds-client's [`cel`] subset, parsed by the same code), and fields the proxies do not apply are warnings naming them.

use xds_client::model::telemetry as cel;

use serde::{Deserialize, Serialize};

use super::names::validate_selector_labels;
use super::types::{PolicyTargetReference, WorkloadSelector};
use super::Checker;

/// `Telemetry.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    /// Workloads the resource applies to (the whole namespace, or the mesh from the root
    /// namespace, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Gateway or waypoint targets (not applied to sidecars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Gateway or waypoint targets (not applied to sidecars).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    /// Metrics overrides (validated, not applied: the proxies report Istio's standard set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    /// Access-logging settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// `Telemetry.ProviderRef`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    /// A provider of the mesh config's `extensionProviders` (or `envoy`, the built-in
    /// standard-output access log).
    #[serde(default)]
    pub name: String,
}

/// Which side of a call a setting applies to (`WorkloadMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both sides.
    #[default]
    ClientAndServer,
    /// The caller's side (outbound).
    Client,
    /// The callee's side (inbound).
    Server,
}

impl WorkloadMode {
    /// Whether the mode covers the client (`outbound`) or the server side.
    pub fn covers(self, client: bool) -> bool {
        match self {
            WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => client,
            WorkloadMode::Server => !client,
        }
    }
}

/// `TracingSelector` / `AccessLogging.LogSelector`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    /// The side.
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// `Metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// Metrics providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Per-metric overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// How often metrics are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<super::Duration>,
}

/// `MetricsOverrides`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    /// Which metric.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    /// The metric is not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Label changes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tag_overrides: std::collections::BTreeMap<String, TagOverride>,
}

/// `MetricSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    /// One of Istio's standard metrics (`REQUEST_COUNT`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// A custom metric's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    /// The side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// `MetricsOverrides.TagOverride`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    /// `UPSERT` (the default) or `REMOVE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<TagOperation>,
    /// The value (a CEL expression), for `UPSERT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `TagOverride.Operation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    /// Insert or replace the label.
    Upsert,
    /// Remove the label.
    Remove,
}

/// `Tracing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Which side it applies to.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// The provider spans go to (one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Percentage of requests sampled when no upstream decision came with them (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// Spans are not reported (accepted, not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Custom span tags (accepted, not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_tags: Option<serde_json::Value>,
    /// Sampling keyed on the request id (accepted, not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Istio's span tags (always on in this mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

/// `AccessLogging.Filter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFilter {
    /// A CEL expression over the request's attributes; a line is written when it is true.
    #[serde(default)]
    pub expression: String,
}

/// `AccessLogging`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// Which side it applies to.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// The loggers it configures (the mesh's default, `envoy`, when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Logging off (`true`) or on (`false`); inherited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Which requests are logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<LogFilter>,
}

/// What is wrong with a Telemetry.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    /// `randomSamplingPercentage` outside 0-100.
    #[error("randomSamplingPercentage must be in range [0.0, 100.0]")]
    SamplingRange,
    /// More than one tracing provider.
    #[error("multiple providers is not currently supported")]
    MultipleProviders,
    /// A provider reference without a name.
    #[error("name in body should be at least 1 chars long")]
    EmptyProvider,
    /// A filter expression the proxies cannot evaluate.
    #[error("filter expression {expression:?} is not supported: {reason}")]
    Expression {
        /// The expression.
        expression: String,
        /// Why.
        reason: cel::ParseError,
    },
    /// `selector` together with `targetRef(s)`.
    #[error("only one of targetRefs or workloadSelector can be set")]
    SelectorAndTarget,
    /// `customMetric: ""`.
    #[error("customMetric in body should be at least 1 chars long")]
    EmptyCustomMetric,
    /// `UPSERT` without a value.
    #[error("value must be set when operation is UPSERT")]
    UpsertWithoutValue,
    /// `REMOVE` with a value.
    #[error("value must not be set when operation is REMOVE")]
    RemoveWithValue,
    /// A field that is accepted but not applied by this mesh's sidecars.
    #[error("{0} is not applied by this mesh's sidecars (accepted and ignored)")]
    NotApplied(&'static str),
}

/// Checks a Telemetry's spec.
pub(crate) fn check(c: &mut Checker, t: &Telemetry) {
    if let Some(sel) = &t.selector {
        validate_selector_labels(c, "spec.selector.matchLabels", &sel.match_labels);
        if t.target_ref.is_some() || !t.target_refs.is_empty() {
            c.err("spec.selector", Problem::SelectorAndTarget);
        }
    }
    if t.target_ref.is_some() || !t.target_refs.is_empty() {
        c.warn("spec.targetRefs", Problem::NotApplied("targetRefs"));
    }
    if !t.metrics.is_empty() {
        c.warn("spec.metrics", Problem::NotApplied("metrics"));
    }
    for (i, m) in t.metrics.iter().enumerate() {
        let at = format!("spec.metrics[{i}]");
        providers(c, &at, &m.providers);
        for (j, o) in m.overrides.iter().enumerate() {
            let at = format!("{at}.overrides[{j}]");
            if o.match_
                .as_ref()
                .and_then(|m| m.custom_metric.as_deref())
                .is_some_and(str::is_empty)
            {
                c.err(
                    format!("{at}.match.customMetric"),
                    Problem::EmptyCustomMetric,
                );
            }
            for (tag, t) in &o.tag_overrides {
                let field = super::key(&format!("{at}.tagOverrides"), tag);
                match (t.operation.unwrap_or(TagOperation::Upsert), &t.value) {
                    (TagOperation::Upsert, None) => c.err(field, Problem::UpsertWithoutValue),
                    (TagOperation::Remove, Some(_)) => c.err(field, Problem::RemoveWithValue),
                    _ => {}
                }
            }
        }
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let at = format!("spec.tracing[{i}]");
        if let Some(p) = tr.random_sampling_percentage {
            if !(0.0..=100.0).contains(&p) {
                c.err(
                    format!("{at}.randomSamplingPercentage"),
                    Problem::SamplingRange,
                );
            }
        }
        if tr.providers.len() > 1 {
            c.err(format!("{at}.providers"), Problem::MultipleProviders);
        }
        providers(c, &at, &tr.providers);
        for (field, set) in [
            ("customTags", tr.custom_tags.is_some()),
            ("disableSpanReporting", tr.disable_span_reporting.is_some()),
            (
                "useRequestIdForTraceSampling",
                tr.use_request_id_for_trace_sampling.is_some(),
            ),
        ] {
            if set {
                c.warn(format!("{at}.{field}"), Problem::NotApplied(field));
            }
        }
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        let at = format!("spec.accessLogging[{i}]");
        providers(c, &at, &al.providers);
        if let Some(f) = &al.filter {
            if let Err(reason) = cel::parse(&f.expression) {
                c.err(
                    format!("{at}.filter.expression"),
                    Problem::Expression {
                        expression: f.expression.clone(),
                        reason,
                    },
                );
            }
        }
    }
}

fn providers(c: &mut Checker, at: &str, providers: &[ProviderRef]) {
    for (j, p) in providers.iter().enumerate() {
        if p.name.is_empty() {
            c.err(format!("{at}.providers[{j}].name"), Problem::EmptyProvider);
        }
    }
}
