#!/usr/bin/env bash
# The README's test command (and CI's, .ci/run). What runs where (each test runs once):
#   1. ruff format --check and ruff check over the repository (settings in pyproject.toml);
#   2. pytest over tests/ but the files of step 3, every test (the `slow` ones too:
#      examples, benchmarks, command lines, the tflite-runtime virtualenv, multi-worker,
#      Flower, the browser, a fresh virtualenv), on two processes (pytest-xdist; --dist
#      loadfile keeps a file's tests, and its module fixtures, on one process);
#   3. Bazel: the py_test targets tagged "ci" in BUILD (quick files of each kind, listed by
#      tools/bazel_ci_tests.py), so that the targets, their deps and runfiles are
#      exercised; tests/repo/build_test.py (one of them) checks that every test file has
#      its target.
# `pytest -m "not slow"` is the quick run while working (about 2 minutes): no process
# started and one export (the dense LiteRT / TFLite Micro parity case); every other export
# runs here.
# Uses <repo root>/.venv, or the virtualenv named by KERAS_SPELA_VENV (an activated
# virtualenv does not matter). pytest's settings are in pytest.ini (tests/ only, no cache).
# PYTEST_WORKERS sets the number of pytest processes (default 2, the CI machine's cores);
# BAZEL_TEST_TARGETS overrides step 3's targets (see tools/bazel_test.sh; pytest still
# leaves out the "ci" files).
set -euo pipefail
if [ -n "${KERAS_SPELA_VENV:-}" ]; then
  venv="$(cd "$KERAS_SPELA_VENV" && pwd)"
else
  venv="$(cd "$(dirname "$0")/.." && pwd)/.venv"
fi
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
"$venv/bin/python" -m ruff format --check .
"$venv/bin/python" -m ruff check .
ci_files="$("$venv/bin/python" tools/bazel_ci_tests.py)"
ignored=()
for file in $ci_files; do
  ignored+=("--ignore=$file")
done
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider "${ignored[@]}" \
  -n "${PYTEST_WORKERS:-2}" --dist loadfile --durations=20
KERAS_SPELA_VENV="$venv" bash tools/bazel_test.sh --test_tag_filters=ci
