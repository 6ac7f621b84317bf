#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (scripts/install-deps.sh), builds every
# binary (the end-to-end tests run them), then runs every test with cargo-nextest's `ci`
# profile (.config/nextest.toml). Extra arguments go to `cargo nextest run`.
#
# End-to-end tests build pods out of network namespaces and need root. As root, a test that
# cannot create namespaces fails instead of skipping (MESH_TESTS_REQUIRE_NETNS=1), and so does
# a test whose real peer (Envoy, Python grpcio: installed by install-deps.sh) is missing
# (MESH_TESTS_REQUIRE_PEERS=1); otherwise those tests print SKIPPED. Their logs are in
# target/e2e-logs/<test>/.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

if [[ $EUID -eq 0 ]]; then
  export MESH_TESTS_REQUIRE_NETNS=1
  export MESH_TESTS_REQUIRE_PEERS=1
else
  echo "test.sh: not root: the end-to-end tests will be SKIPPED" >&2
fi

# A one-off build gains nothing from incremental caches, and they would double the disk the
# build needs (CI's disk is small).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Istio's conformance material (DEVELOPERS.md): where it is, the tests that read it must find
# it (MESH_CONFORMANCE_REQUIRE=1 makes them fail instead of skip); where it is not, they are
# left out of the run, so nextest reports them skipped rather than passed.
conformance_filter=()
if [[ -n "${MESH_CONFORMANCE_DIR:-}" || -d ../shared/conformance/istio ]]; then
  export MESH_CONFORMANCE_REQUIRE=1
else
  echo "test.sh: Istio's conformance material (../shared/conformance/istio, or set" \
    "MESH_CONFORMANCE_DIR) not found: the tests that need it are SKIPPED" >&2
  conformance_filter=(-E 'not (binary(conformance_crds) | binary(authz_conformance)
    | (binary(golden) & test(=bookinfo_samples))
    | test(=bookinfo_samples_convert_in_the_proxy)
    | test(=capture::tests::capture_iptables_golden_cases)
    | (binary(e2e_traffic) & not test(=split_tolerance_accepts_the_weights_and_rejects_a_split_10_points_off)))')
fi

cargo build --workspace --bins
cargo test --workspace --doc
cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-ci}" "${conformance_filter[@]}" "$@"
