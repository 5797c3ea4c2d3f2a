#!/usr/bin/env bash
# Installs (with apt-get) what kvferry's build and tests need, when something is missing.
# When everything is present it does nothing at all: no apt-get update, no sudo.
# Debian 12 (bookworm) or a derivative with the same package names.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
  libxxhash-dev liburing-dev libfmt-dev clang-format
  clang-14 libclang-rt-14-dev  # libFuzzer and the sanitizer runtimes (scripts/fuzz.sh)
  python3-venv python3-dev
  libucx-dev iproute2
  libcurl4-openssl-dev etcd-server etcd-client
  libssl-dev  # HMAC-SHA256 for shared-secret authentication (src/core/peer_auth.cc)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "bootstrap: installing ${missing[*]}" >&2
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo --non-interactive)
  else
    echo "bootstrap: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
