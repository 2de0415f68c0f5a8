#!/usr/bin/env bash
# Run this project's Python tests with Bazel, fully offline:
#     bash tools/bazel_test.sh [extra bazel test flags...]
# Runs `bazel test //...` (override the targets with BAZEL_TEST_TARGETS="//:digits_test");
# tools/run_tests.sh passes --test_tag_filters=ci: the targets tagged "ci" in BUILD (its
# pytest run leaves their files out). Each py_test runs one test file with pytest.
# Needs bazel (tools/install_bazel.sh) and a Python with the project's dependencies, chosen in
# this order: $KERAS_SPELA_VENV when set (even if another virtualenv is active), else the
# active virtualenv ($VIRTUAL_ENV) if it has them, else <repo root>/.venv, else python3 on PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

if ! command -v bazel >/dev/null 2>&1; then
  echo "bazel_test.sh: bazel not found; run: bash tools/install_bazel.sh" >&2
  exit 1
fi

# py_test runs the `python3` found on PATH (passed through by --test_env=PATH in .bazelrc).
check='import importlib.util as u, sys
missing = [m for m in ("pytest", "numpy", "tensorflow", "keras") if u.find_spec(m) is None]
sys.exit("missing: " + ", ".join(missing) if missing else 0)'

use_venv() {  # puts the virtualenv $1 first on PATH
  VIRTUAL_ENV="$(cd "$1" && pwd -P)"
  export VIRTUAL_ENV PATH="$VIRTUAL_ENV/bin:$PATH"
}

if [ -n "${KERAS_SPELA_VENV:-}" ]; then
  if [ ! -x "$KERAS_SPELA_VENV/bin/python3" ]; then
    echo "bazel_test.sh: KERAS_SPELA_VENV=$KERAS_SPELA_VENV has no bin/python3" >&2
    exit 1
  fi
  use_venv "$KERAS_SPELA_VENV"
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python3" ] \
    && "$VIRTUAL_ENV/bin/python3" -c "$check" 2>/dev/null; then
  use_venv "$VIRTUAL_ENV"
elif [ -x "$ROOT/.venv/bin/python3" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then
    echo "bazel_test.sh: the active virtualenv $VIRTUAL_ENV lacks the project's" \
         "dependencies; using $ROOT/.venv" >&2
  fi
  use_venv "$ROOT/.venv"
fi
if ! python3 -c "$check"; then
  echo "bazel_test.sh: $(command -v python3) lacks the modules above; activate the" \
       "project's virtualenv (or set KERAS_SPELA_VENV=/path/to/venv)" >&2
  exit 1
fi
echo "bazel_test.sh: repo root $ROOT; python3 = $(command -v python3)"

# Offline stubs for the repositories Bazel 4.2.3 would otherwise download. WORKSPACE already
# declares them with relative paths; the absolute overrides make that independent of how
# Bazel resolves the checkout.
stubs="$ROOT/third_party/bazel_stubs"
overrides=()
for repo in rules_cc rules_java remote_coverage_tools; do
  overrides+=("--override_repository=$repo=$stubs/$repo")
done

# Each checkout path gets its own output base (~/.cache/bazel/_bazel_$USER/<md5 of path>)
# and its own server, so two checkouts do not conflict. Pure-Python builds only create
# symlink trees there; `bazel clean --expunge` removes one.
set -x
# shellcheck disable=SC2086  # BAZEL_TEST_TARGETS is a space-separated list of targets.
# The tflite-runtime test drives <repo>/.venv-tflite (numpy<2, no TensorFlow) as a subprocess.
tflite_python="${KERAS_SPELA_TFLITE_PYTHON:-$ROOT/.venv-tflite/bin/python}"
exec bazel test "${overrides[@]}" "--test_env=KERAS_SPELA_TFLITE_PYTHON=$tflite_python" \
  "$@" -- ${BAZEL_TEST_TARGETS:-//...}
