#!/usr/bin/env bash
# Installs what the browser side needs (web/, examples/browser/, tests/web_test.py,
# benchmarks/browser_speed.py): Debian's chromium and node/npm where apt-get runs as
# root, then `npm ci` in web/ (@litertjs/core, playwright-core; no browser download).
# Idempotent: says what it installed and what was already there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {  # apt_install PACKAGE... (apt-get update only if the first try fails)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null; }
}

can_apt() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]
}

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  echo "install_web.sh: chromium already at $CHROMIUM"
elif can_apt; then
  apt_install chromium
  echo "install_web.sh: installed the Debian package chromium ($CHROMIUM)"
else
  echo "install_web.sh: no chromium at $CHROMIUM and no root apt-get to install it" \
    "(apt-get install chromium, or CHROMIUM=/path/to/chromium); the browser tests skip" >&2
fi

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "install_web.sh: node $(node --version) and npm $(npm --version) already installed"
elif can_apt; then
  apt_install nodejs npm
  echo "install_web.sh: installed the Debian packages nodejs and npm (node $(node --version))"
else
  echo "install_web.sh: node/npm missing and no root apt-get to install them" \
    "(apt-get install nodejs npm); the browser tests skip" >&2
  exit 1
fi

# npm ci only when web/package-lock.json changed since the last install.
STAMP=web/node_modules/.install_web_lock_sha256
LOCK_SHA=$(sha256sum web/package-lock.json | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$LOCK_SHA" ]; then
  echo "install_web.sh: web/node_modules already matches web/package-lock.json"
else
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$LOCK_SHA" > "$STAMP"
  echo "install_web.sh: npm ci in web/ ($(node -p "require('./web/node_modules/@litertjs/core/package.json').version" 2>/dev/null | sed 's/^/@litertjs\/core /'), playwright-core $(node -p "require('./web/node_modules/playwright-core/package.json').version"))"
fi
