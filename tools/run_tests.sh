#!/usr/bin/env bash
# Runs the whole test suite: pytest, then the same tests as Bazel py_test targets.
# Uses <repo root>/.venv, or the virtualenv named by KERAS_SPELA_VENV (an activated
# virtualenv does not matter). pytest's settings are in pytest.ini (tests/ only, no cache).
set -euo pipefail
if [ -n "${KERAS_SPELA_VENV:-}" ]; then
  venv="$(cd "$KERAS_SPELA_VENV" && pwd)"
else
  venv="$(cd "$(dirname "$0")/.." && pwd)/.venv"
fi
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider
KERAS_SPELA_VENV="$venv" bash tools/bazel_test.sh
