#!/usr/bin/env bash
# The README's test command (and CI's, .ci/run). What runs where (each test runs once):
#   1. ruff format --check and ruff check over the repository (settings in pyproject.toml);
#   2. Bazel, in the background: the py_test targets tagged "ci" in BUILD (quick files of
#      each kind, listed by tools/bazel_ci_tests.py), so that the targets, their deps and
#      runfiles are exercised; tests/repo/build_test.py checks that every test file has its
#      target. Its output is printed when pytest is done. Its processes use the CPU that
#      pytest's leave idle while they wait on the processes their tests start;
#   3. pytest over every other file of tests/, every test (the `slow` ones too: examples,
#      benchmarks, command lines, the tflite-runtime virtualenv, multi-worker, Flower, the
#      browser, a fresh virtualenv), on two processes (pytest-xdist; --dist loadfile keeps
#      a file's tests, and its module fixtures, on one process).
# `pytest -m "not slow"` is the quick run while working (about 2 minutes): no process
# started and one export (the dense LiteRT / TFLite Micro parity case); every other export
# runs here.
# Uses <repo root>/.venv, or the virtualenv named by KERAS_SPELA_VENV (an activated
# virtualenv does not matter). pytest's settings are in pytest.ini (tests/ only, no cache).
# PYTEST_WORKERS sets the number of pytest processes (default 2, the CI machine's cores);
# BAZEL_TEST_TARGETS overrides step 2's targets (see tools/bazel_test.sh).
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
bazel_log="$(mktemp)"
KERAS_SPELA_VENV="$venv" bash tools/bazel_test.sh --test_tag_filters=ci >"$bazel_log" 2>&1 &
bazel_pid=$!
trap 'kill "$bazel_pid" 2>/dev/null; rm -f "$bazel_log"' EXIT
pytest_status=0
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider "${ignored[@]}" \
  -n "${PYTEST_WORKERS:-2}" --dist loadfile --durations=20 || pytest_status=$?
bazel_status=0
wait "$bazel_pid" || bazel_status=$?
echo "---- Bazel: the \"ci\" targets ($(echo $ci_files))"
cat "$bazel_log"
if [ "$pytest_status" -ne 0 ] || [ "$bazel_status" -ne 0 ]; then
  echo "run_tests.sh: pytest exit code $pytest_status, Bazel exit code $bazel_status" >&2
  exit 1
fi
