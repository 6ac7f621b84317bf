//! Istio's `agent.ValidateLocalityLbSetting`: distribution weights, failover regions and
//! overlapping localities.

use std::collections::{BTreeMap, BTreeSet};

use super::check::Problem;
use super::LocalityLbSetting;
use crate::config::istio::{at, idx, key, Checker};

const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// `agent.ValidateLocalityLbSetting`.
pub(super) fn check_locality(c: &mut Checker, path: &str, l: &LocalityLbSetting, outlier: bool) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        c.err(path, Problem::DistributeAndFailover);
        return;
    }
    if !l.failover.is_empty() {
        if let Some(label) = l
            .failover_priority
            .iter()
            .find(|p| TOPOLOGY_LABELS.contains(&p.as_str()))
        {
            c.err(
                at(path, "failoverPriority"),
                Problem::FailoverTopologyPriority(label.clone()),
            );
            return;
        }
    }
    let mut sources = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = idx(&at(path, "distribute"), i);
        sources.push(d.from.clone());
        let mut total: u64 = 0;
        for (loc, w) in &d.to {
            if *w == 0 || *w > 100 {
                c.err(key(&at(&dp, "to"), loc), Problem::LocalityWeight);
                return;
            }
            total += u64::from(*w);
        }
        if total != 100 {
            c.err(at(&dp, "to"), Problem::LocalityTotal(total));
            return;
        }
        let dests: Vec<String> = d.to.keys().cloned().collect();
        c.check(at(&dp, "to"), localities(&dests));
    }
    c.check(at(path, "distribute"), localities(&sources));
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !outlier {
        c.warn(path, Problem::FailoverWithoutOutlier);
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fp = idx(&at(path, "failover"), i);
        if f.from == f.to {
            c.err(fp.clone(), Problem::FailoverSameRegion);
        }
        if f.from.contains('/') || f.to.contains('/') {
            c.err(fp.clone(), Problem::FailoverRegionOnly);
        }
        if f.from.contains('*') || f.to.contains('*') {
            c.err(fp, Problem::FailoverWildcard);
        }
    }
}

/// Localities (`region/zone/subzone`, a trailing `*` allowed) that do not overlap.
fn localities(list: &[String]) -> Result<(), Problem> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut map: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for locality in list {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(Problem::LocalityWildcard(locality.clone()));
        }
        let overlap = || Problem::LocalityOverlap(locality.clone());
        if map.contains_key("*") {
            return Err(overlap());
        }
        let items: Vec<&str> = locality.splitn(3, '/').collect();
        if items.iter().any(|s| s.is_empty()) {
            return Err(Problem::LocalityEmptyPart(locality.clone()));
        }
        let region = items[0].to_string();
        match items.len() {
            1 => {
                if map.contains_key(&region) {
                    return Err(overlap());
                }
                let all = BTreeMap::from([("*".to_string(), BTreeSet::from(["*".to_string()]))]);
                map.insert(region, all);
            }
            2 => {
                let zone = items[1].to_string();
                let zones = map.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(&zone) {
                    return Err(overlap());
                }
                zones.insert(zone, BTreeSet::from(["*".to_string()]));
            }
            _ => {
                let (zone, subzone) = (items[1].to_string(), items[2].to_string());
                let zones = map.entry(region).or_default();
                if zones.contains_key("*") {
                    return Err(overlap());
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains("*") || !subzones.insert(subzone) {
                    return Err(overlap());
                }
            }
        }
    }
    Ok(())
}
