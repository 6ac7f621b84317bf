//! What a test does when Istio's conformance material is missing.

/// Set to `1` by the test command (`scripts/test.sh`) when the material is present: a test
/// that cannot find it then fails instead of reporting itself skipped.
const REQUIRE_ENV: &str = "MESH_CONFORMANCE_REQUIRE";

/// Prints `SKIPPED: {what}` for a test whose conformance material is missing; panics instead
/// when [`REQUIRE_ENV`] is `1`.
pub fn conformance_missing(what: &str) {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{what} ({REQUIRE_ENV}=1: the material is required)");
    }
    println!("SKIPPED: {what}");
}
