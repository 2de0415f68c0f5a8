#!/usr/bin/env bash
# Runs the whole test suite: pytest, then the same tests as Bazel py_test targets.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest tests -q -p no:cacheprovider
KERAS_SPELA_VENV="$PWD/.venv" bash tools/bazel_test.sh
