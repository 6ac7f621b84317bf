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
