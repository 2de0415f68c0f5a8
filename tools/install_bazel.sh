#!/usr/bin/env bash
# Idempotently install Bazel for this project's offline test run (tools/bazel_test.sh).
# Uses Debian's bazel-bootstrap package (Bazel 4.2.3). Skips when `bazel` is already on PATH.
set -euo pipefail

if command -v bazel >/dev/null 2>&1; then
  echo "install_bazel.sh: bazel already installed: $(command -v bazel)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install_bazel.sh: need root or sudo to apt-get install bazel-bootstrap" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends bazel-bootstrap

command -v bazel >/dev/null 2>&1 || { echo "install_bazel.sh: bazel not found after install" >&2; exit 1; }
echo "install_bazel.sh: installed $(command -v bazel)"
