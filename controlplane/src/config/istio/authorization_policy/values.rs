//! Istio's `pkg/config/security` checks of AuthorizationPolicy values: empty values, IPs and
//! CIDRs, ports, service accounts, path templates and condition attributes.

use std::sync::LazyLock;

use regex::Regex;

use super::Problem;

pub(super) fn check_empty_values(name: &'static str, values: &[String]) -> Result<(), Problem> {
    if values.iter().any(String::is_empty) {
        return Err(Problem::EmptyValue(name));
    }
    Ok(())
}

pub(super) fn validate_ips(values: &[String]) -> Vec<Problem> {
    values
        .iter()
        .filter_map(|v| {
            if v.contains('/') {
                v.parse::<ipnet::IpNet>()
                    .err()
                    .map(|_| Problem::BadCidr(v.clone()))
            } else {
                v.parse::<std::net::IpAddr>()
                    .err()
                    .map(|_| Problem::BadIp(v.clone()))
            }
        })
        .collect()
}

pub(super) fn validate_ports(values: &[String]) -> Vec<Problem> {
    values
        .iter()
        .filter(|p| p.parse::<u32>().map_or(true, |n| n > 65535))
        .map(|p| Problem::BadPort(p.clone()))
        .collect()
}

/// `security.CheckServiceAccount`.
pub(super) fn check_service_accounts(key: &'static str, values: &[String]) -> Result<(), Problem> {
    if values.len() > 16 {
        return Err(Problem::TooManyServiceAccounts);
    }
    for v in values {
        if v.is_empty() {
            return Err(Problem::EmptyValue(key));
        }
        if v.contains('*') {
            return Err(Problem::ServiceAccountWildcard(key));
        }
        let format = || Problem::ServiceAccountFormat {
            value: v.clone(),
            key,
        };
        if v.matches('/').count() > 1 {
            return Err(format());
        }
        if v.len() > 320 {
            return Err(Problem::ServiceAccountLength {
                value: v.clone(),
                key,
            });
        }
        if let Some((ns, sa)) = v.split_once('/') {
            if ns.is_empty() || sa.is_empty() {
                return Err(format());
            }
        }
    }
    Ok(())
}

/// RFC 3986 `pchar` literals allowed around path templates.
static LITERAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$").expect("static pattern"));

/// `security.CheckValidPathTemplate`: `{*}` anywhere, `{**}` last, no other braces.
pub(super) fn check_path_templates(key: &'static str, paths: &[String]) -> Result<(), Problem> {
    for path in paths {
        let template = path.contains("{*}") || path.contains("{**}");
        let trimmed = path.trim_matches('/');
        let err = |reason: String| Problem::PathTemplate {
            path: trimmed.to_string(),
            key,
            reason,
        };
        let mut any_seen = false;
        for glob in trimmed.split('/') {
            let is_one = glob == "{*}";
            let is_any = glob == "{**}";
            if (is_one || is_any) && any_seen {
                return Err(err("{**} is not the last operator".to_string()));
            }
            if is_one {
                continue;
            }
            if is_any {
                any_seen = true;
                continue;
            }
            if glob.contains(['{', '}']) {
                return Err(err(
                    "Contains '{' or '}' beyond a supported path template".to_string()
                ));
            }
            if template && !LITERAL.is_match(glob) {
                return Err(err(format!(
                    "Contains segment {glob} with invalid string literal"
                )));
            }
        }
    }
    Ok(())
}

fn validate_map_key(key: &str) -> Result<(), Problem> {
    let open = key.find('[');
    if key.ends_with(']') && open.is_some_and(|o| o > 0 && o < key.len() - 2) {
        return Ok(());
    }
    Err(Problem::MapKey(key.to_string()))
}

/// `security.ValidateAttribute`: the condition keys Istio knows and their values.
pub(super) fn validate_attribute(key: &str, values: &[String]) -> Result<(), Problem> {
    if values.iter().any(String::is_empty) {
        return Err(Problem::EmptyConditionValue(key.to_string()));
    }
    let first = |errors: Vec<Problem>| errors.into_iter().next().map_or(Ok(()), Err);
    match key {
        k if k.starts_with("request.headers") => validate_map_key(k),
        k if k.starts_with("request.experimental.inline.headers") => validate_map_key(k),
        "source.ip" | "remote.ip" | "destination.ip" => first(validate_ips(values)),
        "source.serviceAccount" => check_service_accounts("source.serviceAccount", values),
        "source.namespace"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(()),
        k if k.starts_with("request.auth.claims") => validate_map_key(k),
        "destination.port" => first(validate_ports(values)),
        k if k.starts_with("experimental.envoy.filters.") => validate_map_key(k),
        "destination.namespace" => Err(Problem::ReplacedByNamespace(key.to_string())),
        k if k.starts_with("destination.labels") => {
            Err(Problem::ReplacedBySelector(key.to_string()))
        }
        "destination.name" | "destination.user" => {
            Err(Problem::DeprecatedAttribute(key.to_string()))
        }
        _ => Err(Problem::UnknownAttribute(key.to_string())),
    }
}
