#!/usr/bin/env bash
# Builds and runs the demo mesh: installs what is missing (scripts/install-deps.sh), builds
# every binary, then runs `mesh-demo` (tests/src/bin/mesh-demo.rs). It starts the Bookinfo-like
# services of conf/demo/ as network-namespace pods, each with its sidecar, and the control
# plane on the host; sends traffic through the mesh; prints who answered, the status codes,
# where the admin ports and logs are; keeps running until Ctrl-C; then removes everything.
#
# Needs root (network namespaces, iptables inside them). Extra arguments go to mesh-demo:
# --requests N (per service, default 30), --no-wait (exit after the summary), --config-dir DIR
# (default conf/demo), --name NAME (logs in target/e2e-logs/NAME/).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "demo.sh: the demo builds network namespaces and needs root: sudo $0 $*" >&2
  exit 1
fi

./scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

cargo build --workspace --bins
# exec: Ctrl-C and SIGTERM go to mesh-demo itself, which removes everything before exiting.
exec "${CARGO_TARGET_DIR:-target}/debug/mesh-demo" "$@"
