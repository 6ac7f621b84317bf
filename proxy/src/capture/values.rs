//! Parsing and validating single setting values (ports, IDs, CIDRs, interfaces, groups...)
//! taken from a flag or its environment variables; errors name where the value came from.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::config::{ConfigError, Origin};
use super::env::Environment;
use super::settings::{
    InterceptionMode, IpRanges, OwnerGroups, Settings, MAX_OWNER_GROUPS_INCLUDE,
};

/// One raw setting: its value and where it came from.
pub(super) struct Raw {
    pub(super) value: String,
    pub(super) origin: Origin,
}

/// Resolves a setting: the flag, else the first set variable of `envs`.
pub(super) fn lookup(
    env: &dyn Environment,
    flag: &Option<String>,
    long: &'static str,
    short: Option<char>,
    envs: &[&'static str],
) -> Option<Raw> {
    if let Some(value) = flag {
        return Some(Raw {
            value: value.clone(),
            origin: Origin::Flag { long, short },
        });
    }
    envs.iter().find_map(|var| {
        env.var(var).map(|value| Raw {
            value,
            origin: Origin::Env { var, long },
        })
    })
}

/// Resolves a boolean setting; an empty environment variable counts as unset (as in Istio).
pub(super) fn lookup_bool(
    env: &dyn Environment,
    flag: &Option<String>,
    long: &'static str,
    short: Option<char>,
    envs: &[&'static str],
) -> Result<bool, ConfigError> {
    let raw = match flag {
        Some(value) => Some(Raw {
            value: value.clone(),
            origin: Origin::Flag { long, short },
        }),
        None => envs.iter().find_map(|var| {
            env.var(var).filter(|v| !v.is_empty()).map(|value| Raw {
                value,
                origin: Origin::Env { var, long },
            })
        }),
    };
    let Some(raw) = raw else { return Ok(false) };
    match raw.value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(ConfigError::Bool {
            origin: raw.origin,
            value: raw.value,
        }),
    }
}

/// Splits a comma separated list, trimming items and dropping empty ones (`"6000,7000,"`).
pub(super) fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn port(origin: &Origin, item: &str) -> Result<u16, ConfigError> {
    match item.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConfigError::Port {
            origin: origin.clone(),
            value: item.to_owned(),
        }),
    }
}

pub(super) fn port_or(raw: Option<Raw>, default: u16) -> Result<u16, ConfigError> {
    match raw {
        Some(raw) => port(&raw.origin, raw.value.trim()),
        None => Ok(default),
    }
}

pub(super) fn port_list(raw: Option<Raw>) -> Result<Vec<u16>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    items(&raw.value)
        .map(|item| port(&raw.origin, item))
        .collect()
}

pub(super) fn ids(raw: &Raw) -> Result<Vec<u32>, ConfigError> {
    let list: Vec<u32> = items(&raw.value)
        .map(|item| {
            item.parse::<u32>().map_err(|_| ConfigError::Id {
                origin: raw.origin.clone(),
                value: item.to_owned(),
            })
        })
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(ConfigError::Id {
            origin: raw.origin.clone(),
            value: raw.value.clone(),
        });
    }
    Ok(list)
}

pub(super) fn number_or(raw: Option<Raw>, default: u32) -> Result<u32, ConfigError> {
    match raw {
        Some(raw) => raw.value.trim().parse().map_err(|_| ConfigError::Number {
            origin: raw.origin,
            value: raw.value,
        }),
        None => Ok(default),
    }
}

pub(super) fn ranges(raw: Option<Raw>, wildcard_allowed: bool) -> Result<IpRanges, ConfigError> {
    let Some(raw) = raw else {
        return Ok(IpRanges::default());
    };
    if raw.value.trim() == "*" {
        if !wildcard_allowed {
            return Err(ConfigError::Wildcard { origin: raw.origin });
        }
        return Ok(IpRanges {
            wildcard: true,
            ..IpRanges::default()
        });
    }
    let mut out = IpRanges::default();
    for item in items(&raw.value) {
        if item == "*" {
            return Err(ConfigError::Wildcard { origin: raw.origin });
        }
        match item.parse::<IpNet>() {
            Ok(IpNet::V4(net)) => out.v4.push(net),
            Ok(IpNet::V6(net)) => out.v6.push(net),
            Err(source) => {
                return Err(ConfigError::Cidr {
                    origin: raw.origin,
                    value: item.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Interface names: 1-15 bytes, no whitespace, `/`, quotes or leading `!`.
pub(super) fn interfaces(raw: Option<Raw>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    items(&raw.value)
        .map(|item| {
            let valid = item.len() <= 15
                && !item.starts_with('!')
                && !item
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '/' | '"' | '\''));
            if valid {
                Ok(item.to_owned())
            } else {
                Err(ConfigError::Interface {
                    origin: raw.origin.clone(),
                    value: item.to_owned(),
                })
            }
        })
        .collect()
}

/// Group names (`[A-Za-z_][A-Za-z0-9_.-]*`, at most 32 bytes) or numeric GIDs.
fn groups(raw: &Raw) -> Result<Vec<String>, ConfigError> {
    items(&raw.value)
        .map(|item| {
            let numeric = item.parse::<u32>().is_ok();
            let mut chars = item.chars();
            let named = item.len() <= 32
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if numeric || named {
                Ok(item.to_owned())
            } else {
                Err(ConfigError::Group {
                    origin: raw.origin.clone(),
                    value: item.to_owned(),
                })
            }
        })
        .collect()
}

pub(super) fn owner_groups(
    include: Option<Raw>,
    exclude: Option<Raw>,
) -> Result<OwnerGroups, ConfigError> {
    let include_all = include.as_ref().is_none_or(|raw| raw.value.trim() == "*");
    if include_all {
        let excluded = match &exclude {
            Some(raw) => groups(raw)?,
            None => Vec::new(),
        };
        return Ok(OwnerGroups::AllExcept(excluded));
    }
    let Some(raw) = include else {
        return Ok(OwnerGroups::AllExcept(Vec::new()));
    };
    let only = groups(&raw)?;
    if only.len() > MAX_OWNER_GROUPS_INCLUDE {
        return Err(ConfigError::TooManyGroups {
            origin: raw.origin,
            count: only.len(),
        });
    }
    Ok(OwnerGroups::Only(only))
}

pub(super) fn loopback_cidr(raw: Option<Raw>) -> Result<Ipv4Net, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Settings::default().host_ipv4_loopback_cidr);
    };
    match raw.value.trim().parse::<Ipv4Net>() {
        Ok(net) if net.addr().is_loopback() && (8..=32).contains(&net.prefix_len()) => Ok(net),
        _ => Err(ConfigError::LoopbackCidr {
            origin: raw.origin,
            value: raw.value,
        }),
    }
}

pub(super) fn mode(raw: Option<Raw>) -> Result<InterceptionMode, ConfigError> {
    let Some(raw) = raw else {
        return Ok(InterceptionMode::Redirect);
    };
    match raw.value.trim().to_ascii_uppercase().as_str() {
        "" | "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        _ => Err(ConfigError::Mode {
            origin: raw.origin,
            value: raw.value,
        }),
    }
}

/// Splits DNS servers by IP version, keeping their text. With `origin`, an unparsable entry
/// is an error; without (resolv.conf), it is skipped as Istio does.
pub(super) fn split_dns(
    servers: &[String],
    origin: Option<&Origin>,
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for server in servers {
        match (server.parse::<IpAddr>(), origin) {
            (Ok(IpAddr::V4(_)), _) => v4.push(server.clone()),
            (Ok(IpAddr::V6(_)), _) => v6.push(server.clone()),
            (Err(_), Some(origin)) => {
                return Err(ConfigError::Ip {
                    origin: origin.clone(),
                    value: server.clone(),
                });
            }
            (Err(_), None) => {}
        }
    }
    Ok((v4, v6))
}
