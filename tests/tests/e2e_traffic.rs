//! Istio's Bookinfo networking samples (`samples/bookinfo/networking/`), applied unchanged to
//! the demo's Bookinfo-like Services (`conf/demo`), behave as written end to end through
//! captured sidecars: weighted splits within binomial tolerance over 1,000 requests, the
//! `end-user: jason` header routes, the ratings fault injections (7 s delay, 500 abort), the
//! details abort (555) and details v2, the ratings database variants, the RANDOM DestinationRule
//! and the subsets of the mTLS DestinationRule. Then the differential test: the same samples through an Envoy sidecar
//! give the same status codes and the same split as through `mesh-proxy`.
//!
//! The traffic comes from a `client` pod (app `client`): Bookinfo's VirtualServices have no
//! `sourceLabels`, so they apply to every sidecar, whichever Bookinfo service calls.
//! Every test builds its own topology (a harness slot), so they run in parallel.

mod common;
mod traffic_samples;
use traffic_samples::*;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::bookinfo::{
    binomial_within, check_split, requests, same_proportion, samples_or_skip, url, Bookinfo, Tally,
};
use common::wait_log;
use mesh_tests::harness::Peer;

/// Requests behind every split check.
const SPLIT_REQUESTS: usize = 1000;
/// Requests behind every all-or-nothing routing check.
const ROUTE_REQUESTS: usize = 60;
/// The usual limit of one request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// `virtual-service-ratings-test-delay.yaml`'s `fixedDelay`.
const DELAY: Duration = Duration::from_secs(7);
/// How late a delayed answer may come beyond the delay (two sidecars on a loaded machine).
const DELAY_SLACK: Duration = Duration::from_secs(3);
/// The header of Bookinfo's logged-in user.
const JASON: &str = "end-user: jason";

const REVIEWS_ALL: &[(&str, &str)] = &[("reviews", "v1"), ("reviews", "v2"), ("reviews", "v3")];

#[test]
fn every_sample_is_tested_or_skipped_for_a_reason() {
    let Some(dir) = samples_or_skip("every_sample_is_tested_or_skipped_for_a_reason") else {
        return;
    };
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let known: BTreeSet<String> = NOT_SIDECAR
        .iter()
        .copied()
        .chain(TESTED.iter().map(|(f, _)| *f))
        .map(str::to_owned)
        .collect();
    assert_eq!(on_disk, known, "samples in {}", dir.display());
}

/// The tolerance cannot let a wrong split pass: at 1,000 requests each sample's exact
/// expectation passes, and the count of a split 10 points away fails.
#[test]
fn split_tolerance_accepts_the_weights_and_rejects_a_split_10_points_off() {
    let n = SPLIT_REQUESTS;
    for p in [0.1, 0.2, 0.5, 0.8, 0.9] {
        let at = |q: f64| (q * n as f64).round() as usize;
        assert!(binomial_within("exact", at(p), n, p).is_ok(), "p = {p}");
        for wrong in [p - 0.1, p + 0.1] {
            if (0.0..=1.0).contains(&wrong) {
                assert!(
                    binomial_within("off", at(wrong), n, p).is_err(),
                    "{wrong} vs {p}"
                );
            }
        }
    }
    assert!(binomial_within("none", 0, n, 0.0).is_ok());
    assert!(binomial_within("some", 1, n, 0.0).is_err());
}

/// A split sample over reviews v1, v2 and v3: `SPLIT_REQUESTS` requests, every one a 200, each
/// version's share within binomial tolerance of its weight (absent versions get none).
fn split(test: &str, sample: &str, weights: &[(&str, f64)]) -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let bi = Bookinfo::new(test, &dir, &[sample], REVIEWS_ALL, false)?;
    bi.check(|| {
        let targets: Vec<(&str, &str)> = weights.iter().map(|(v, _)| ("reviews", *v)).collect();
        bi.wait_converged(&targets)?;
        let t = Tally::of(&requests(
            &bi.client,
            &url("reviews"),
            &[],
            SPLIT_REQUESTS,
            TIMEOUT,
        )?);
        t.all(200)?;
        check_split(sample, &t, weights)
    })
}

#[test]
fn reviews_50_v3_splits_v1_v3_half_and_half() -> Result<()> {
    let test = "reviews_50_v3_splits_v1_v3_half_and_half";
    split(
        test,
        "virtual-service-reviews-50-v3.yaml",
        &[("v1", 0.5), ("v3", 0.5)],
    )
}

#[test]
fn reviews_80_20_splits_v1_v2_eighty_twenty() -> Result<()> {
    let test = "reviews_80_20_splits_v1_v2_eighty_twenty";
    split(
        test,
        "virtual-service-reviews-80-20.yaml",
        &[("v1", 0.8), ("v2", 0.2)],
    )
}

#[test]
fn reviews_90_10_splits_v1_v2_ninety_ten() -> Result<()> {
    let test = "reviews_90_10_splits_v1_v2_ninety_ten";
    split(
        test,
        "virtual-service-reviews-90-10.yaml",
        &[("v1", 0.9), ("v2", 0.1)],
    )
}

#[test]
fn reviews_v2_v3_splits_v2_v3_half_and_half() -> Result<()> {
    let test = "reviews_v2_v3_splits_v2_v3_half_and_half";
    split(
        test,
        "virtual-service-reviews-v2-v3.yaml",
        &[("v2", 0.5), ("v3", 0.5)],
    )
}

/// Fails unless every one of `n` requests to `service` (with `headers`) from `bi`'s client is
/// a 200 from `service` `version`.
fn all_from(bi: &Bookinfo, service: &str, headers: &[&str], version: &str) -> Result<()> {
    let t = Tally::of(&requests(
        &bi.client,
        &url(service),
        headers,
        ROUTE_REQUESTS,
        TIMEOUT,
    )?);
    t.all(200)?;
    ensure!(
        t.count(&format!("{service} {version}")) == ROUTE_REQUESTS,
        "{service} with {headers:?}: want every answer from {version}: {t:?}"
    );
    Ok(())
}

#[test]
fn reviews_v3_routes_every_call_to_v3() -> Result<()> {
    let test = "reviews_v3_routes_every_call_to_v3";
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let bi = Bookinfo::new(
        test,
        &dir,
        &["virtual-service-reviews-v3.yaml"],
        REVIEWS_ALL,
        false,
    )?;
    bi.check(|| {
        bi.wait_converged(&[("reviews", "v3")])?;
        all_from(&bi, "reviews", &[], "v3")?;
        all_from(&bi, "reviews", &[JASON], "v3")
    })
}

/// A sample routing `end-user: jason` to `jason` and everyone else to `others`.
fn jason_route(test: &str, sample: &str, jason: &str, others: &str) -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let bi = Bookinfo::new(test, &dir, &[sample], REVIEWS_ALL, false)?;
    bi.check(|| {
        bi.wait_converged(&[("reviews", jason), ("reviews", others)])?;
        all_from(&bi, "reviews", &[JASON], jason)?;
        all_from(&bi, "reviews", &[], others)?;
        // An exact match: another user, or jason's name in another case, is not jason.
        all_from(&bi, "reviews", &["end-user: jason2"], others)?;
        all_from(&bi, "reviews", &["end-user: Jason"], others)
    })
}

#[test]
fn reviews_jason_v2_v3_routes_jason_to_v2_others_to_v3() -> Result<()> {
    let test = "reviews_jason_v2_v3_routes_jason_to_v2_others_to_v3";
    jason_route(test, "virtual-service-reviews-jason-v2-v3.yaml", "v2", "v3")
}

#[test]
fn reviews_test_v2_routes_jason_to_v2_others_to_v1() -> Result<()> {
    let test = "reviews_test_v2_routes_jason_to_v2_others_to_v1";
    jason_route(test, "virtual-service-reviews-test-v2.yaml", "v2", "v1")
}

#[test]
fn details_v2_routes_every_call_to_v2() -> Result<()> {
    let test = "details_v2_routes_every_call_to_v2";
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let pods = [("details", "v1"), ("details", "v2")];
    let bi = Bookinfo::new(
        test,
        &dir,
        &["virtual-service-details-v2.yaml"],
        &pods,
        false,
    )?;
    bi.check(|| {
        bi.wait_converged(&[("details", "v2")])?;
        all_from(&bi, "details", &[], "v2")
    })
}

#[test]
fn fault_injection_details_v1_aborts_every_call_with_555() -> Result<()> {
    let test = "fault_injection_details_v1_aborts_every_call_with_555";
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let sample = "fault-injection-details-v1.yaml";
    let bi = Bookinfo::new(test, &dir, &[sample], &[("details", "v1")], false)?;
    bi.check(|| {
        bi.wait_converged(&[("details", "v1")])?;
        for headers in [&[][..], &[JASON][..]] {
            let t = Tally::of(&requests(
                &bi.client,
                &url("details"),
                headers,
                ROUTE_REQUESTS,
                TIMEOUT,
            )?);
            t.all(555)?;
            ensure!(t.other_bodies == ["fault filter abort"], "{t:?}");
        }
        // The abort is the client sidecar's: flagged FI, and nothing reached details.
        wait_log(&bi.client, "a 555 flagged FI", |e| {
            e["response_code"] == 555 && e["response_flags"] == "FI"
        })?;
        let details = bi.pod("details", "v1")?;
        ensure!(
            common::access_log(details).is_empty(),
            "details' sidecar saw requests: {:?}",
            common::access_log(details)
        );
        Ok(())
    })
}

#[test]
fn ratings_test_abort_fails_jason_with_500() -> Result<()> {
    let test = "ratings_test_abort_fails_jason_with_500";
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let sample = "virtual-service-ratings-test-abort.yaml";
    let bi = Bookinfo::new(test, &dir, &[sample], &[("ratings", "v1")], false)?;
    bi.check(|| {
        bi.wait_converged(&[("ratings", "v1")])?;
        let t = Tally::of(&requests(
            &bi.client,
            &url("ratings"),
            &[JASON],
            ROUTE_REQUESTS,
            TIMEOUT,
        )?);
        t.all(500)?;
        ensure!(t.other_bodies == ["fault filter abort"], "{t:?}");
        wait_log(&bi.client, "a 500 flagged FI", |e| {
            e["response_code"] == 500 && e["response_flags"] == "FI"
        })?;
        all_from(&bi, "ratings", &[], "v1")?;
        all_from(&bi, "ratings", &["end-user: jason2"], "v1")
    })
}

#[test]
fn ratings_test_delay_delays_jason_by_7s() -> Result<()> {
    let test = "ratings_test_delay_delays_jason_by_7s";
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let sample = "virtual-service-ratings-test-delay.yaml";
    let bi = Bookinfo::new(test, &dir, &[sample], &[("ratings", "v1")], false)?;
    bi.check(|| {
        bi.wait_converged(&[("ratings", "v1")])?;
        let limit = DELAY + DELAY_SLACK + Duration::from_secs(5);
        // Jason's requests (four at once) and everyone else's, side by side.
        let (jason, others) = std::thread::scope(|s| {
            let jason = s.spawn(|| requests(&bi.client, &url("ratings"), &[JASON], 4, limit));
            let others = requests(&bi.client, &url("ratings"), &[], 40, TIMEOUT);
            (jason.join().expect("jason's requests"), others)
        });
        let (jason, others) = (jason?, others?);
        for l in &jason {
            let ms = l["elapsed_ms"].as_f64().context("elapsed_ms")?;
            ensure!(
                l["status"] == 200 && l["body"]["version"] == "v1",
                "a delayed request still reaches ratings v1: {l}"
            );
            ensure!(
                ms >= DELAY.as_millis() as f64 && ms < (DELAY + DELAY_SLACK).as_millis() as f64,
                "jason's request took {ms} ms, want {DELAY:?} to {:?}",
                DELAY + DELAY_SLACK
            );
        }
        for l in &others {
            let ms = l["elapsed_ms"].as_f64().context("elapsed_ms")?;
            ensure!(
                l["status"] == 200 && ms < (DELAY / 2).as_millis() as f64,
                "a request without end-user: jason was delayed or failed: {l}"
            );
        }
        wait_log(&bi.client, "a delayed 200 flagged DI", |e| {
            e["response_code"] == 200 && e["response_flags"] == "DI"
        })?;
        Ok(())
    })
}

/// A ratings database sample: reviews all to v3, ratings all to `ratings_version`.
fn ratings_db(test: &str, sample: &str, ratings_version: &str) -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let pods = [
        ("reviews", "v1"),
        ("reviews", "v3"),
        ("ratings", "v1"),
        ("ratings", ratings_version),
    ];
    let bi = Bookinfo::new(test, &dir, &[sample], &pods, false)?;
    bi.check(|| {
        bi.wait_converged(&[("reviews", "v3"), ("ratings", ratings_version)])?;
        all_from(&bi, "reviews", &[], "v3")?;
        all_from(&bi, "ratings", &[], ratings_version)
    })
}

#[test]
fn ratings_db_routes_reviews_to_v3_and_ratings_to_v2() -> Result<()> {
    let test = "ratings_db_routes_reviews_to_v3_and_ratings_to_v2";
    ratings_db(test, "virtual-service-ratings-db.yaml", "v2")
}

#[test]
fn ratings_mysql_routes_ratings_to_v2_mysql() -> Result<()> {
    let test = "ratings_mysql_routes_ratings_to_v2_mysql";
    ratings_db(test, "virtual-service-ratings-mysql.yaml", "v2-mysql")
}

#[test]
fn ratings_mysql_vm_routes_ratings_to_v2_mysql_vm() -> Result<()> {
    let test = "ratings_mysql_vm_routes_ratings_to_v2_mysql_vm";
    ratings_db(test, "virtual-service-ratings-mysql-vm.yaml", "v2-mysql-vm")
}

#[test]
fn destination_rule_reviews_spreads_reviews_over_every_version() -> Result<()> {
    let test = "destination_rule_reviews_spreads_reviews_over_every_version";
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    // No VirtualService: the default route to every endpoint, picked at RANDOM.
    let bi = Bookinfo::new(
        test,
        &dir,
        &["destination-rule-reviews.yaml"],
        REVIEWS_ALL,
        false,
    )?;
    bi.check(|| {
        bi.wait_converged(REVIEWS_ALL)?;
        let n = 600;
        let t = Tally::of(&requests(&bi.client, &url("reviews"), &[], n, TIMEOUT)?);
        t.all(200)?;
        check_split(
            "destination-rule-reviews.yaml",
            &t,
            &[("v1", 1.0 / 3.0), ("v2", 1.0 / 3.0), ("v3", 1.0 / 3.0)],
        )
    })
}

/// The subsets of `destination-rule-all-mtls.yaml` with `virtual-service-all-v1.yaml`. Its
/// `tls: ISTIO_MUTUAL` is accepted but not checked here: sidecar-to-sidecar mutual TLS on the
/// data path (transport sockets) is not part of traffic management and `mesh-proxy` does not
/// originate it yet.
#[test]
fn all_mtls_with_all_v1_routes_every_service_to_v1() -> Result<()> {
    let test = "all_mtls_with_all_v1_routes_every_service_to_v1";
    mesh_tests::skip_unless_netns!();
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let samples = [
        "destination-rule-all-mtls.yaml",
        "virtual-service-all-v1.yaml",
    ];
    let pods = [
        ("productpage", "v1"),
        ("reviews", "v1"),
        ("reviews", "v2"),
        ("ratings", "v1"),
        ("ratings", "v2"),
        ("details", "v1"),
        ("details", "v2"),
    ];
    let bi = Bookinfo::new(test, &dir, &samples, &pods, false)?;
    bi.check(|| {
        let services = ["productpage", "reviews", "ratings", "details"];
        let v1: Vec<(&str, &str)> = services.iter().map(|s| (*s, "v1")).collect();
        bi.wait_converged(&v1)?;
        for service in services {
            all_from(&bi, service, &[], "v1")?;
        }
        Ok(())
    })
}

/// The differential test's samples: a split and a fault, applied to both kinds of sidecar.
const DIFF_SAMPLES: &[&str] = &[
    "virtual-service-reviews-80-20.yaml",
    "virtual-service-ratings-test-abort.yaml",
];

/// What one client sidecar did with [`DIFF_SAMPLES`]: the reviews split, jason's ratings
/// calls and everyone else's.
fn diff_tallies(client: &mesh_tests::harness::Pod) -> Result<(Tally, Tally, Tally)> {
    let split = Tally::of(&requests(
        client,
        &url("reviews"),
        &[],
        SPLIT_REQUESTS,
        TIMEOUT,
    )?);
    let jason = Tally::of(&requests(
        client,
        &url("ratings"),
        &[JASON],
        ROUTE_REQUESTS,
        TIMEOUT,
    )?);
    let others = Tally::of(&requests(
        client,
        &url("ratings"),
        &[],
        ROUTE_REQUESTS,
        TIMEOUT,
    )?);
    Ok((split, jason, others))
}

#[test]
fn envoy_and_mesh_proxy_sidecars_agree_on_bookinfo_samples() -> Result<()> {
    let test = "envoy_and_mesh_proxy_sidecars_agree_on_bookinfo_samples";
    mesh_tests::skip_unless_peer!(Peer::Envoy);
    let Some(dir) = samples_or_skip(test) else {
        return Ok(());
    };
    let pods = [("reviews", "v1"), ("reviews", "v2"), ("ratings", "v1")];
    let bi = Bookinfo::new(test, &dir, DIFF_SAMPLES, &pods, true)?;
    bi.check(|| {
        bi.wait_converged(&pods)?;
        let envoy = bi.envoy_client.as_ref().context("the Envoy client")?;
        let (mp_split, mp_jason, mp_others) = diff_tallies(&bi.client)?;
        let (en_split, en_jason, en_others) = diff_tallies(envoy)?;
        eprintln!("mesh-proxy: {mp_split:?} {mp_jason:?} {mp_others:?}");
        eprintln!("Envoy:      {en_split:?} {en_jason:?} {en_others:?}");
        // The same status codes (and bodies of the local replies).
        ensure!(
            mp_split.statuses == en_split.statuses,
            "reviews statuses differ"
        );
        ensure!(
            mp_jason.statuses == en_jason.statuses
                && mp_jason.other_bodies == en_jason.other_bodies,
            "jason's ratings calls differ"
        );
        ensure!(mp_others == en_others, "other ratings calls differ");
        // And both right.
        mp_split.all(200)?;
        mp_jason.all(500)?;
        mp_others.all(200)?;
        ensure!(
            mp_others.count("ratings v1") == ROUTE_REQUESTS,
            "{mp_others:?}"
        );
        // The same split: each as written, and the two alike.
        let weights = [("v1", 0.8), ("v2", 0.2)];
        check_split("mesh-proxy", &mp_split, &weights)?;
        check_split("Envoy", &en_split, &weights)?;
        same_proportion(
            "reviews v2's share, mesh-proxy vs Envoy",
            (mp_split.count("reviews v2"), SPLIT_REQUESTS),
            (en_split.count("reviews v2"), SPLIT_REQUESTS),
            0.2,
        )?;
        // mesh-proxy's access log flags its aborts FI, as Envoy's does.
        wait_log(&bi.client, "a 500 flagged FI", |e| {
            e["response_code"] == 500 && e["response_flags"] == "FI"
        })?;
        Ok(())
    })
}
