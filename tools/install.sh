#!/usr/bin/env bash
# Installs keras_spela into ./.venv (Python 3.11), with the device runtimes.
#   bash tools/install.sh          the library, LiteRT, TFLite Micro, Flower (flwr), examples
#   bash tools/install.sh tests    also pytest, the tflite-runtime venv
#                                  (./.venv-tflite: numpy<2, no TensorFlow) and Bazel
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of TensorFlow (setup.py then requires tensorflow-cpu).
.venv/bin/python -m pip install -q "tensorflow-cpu==2.21.0"
if [ "${1:-}" = "tests" ]; then
  .venv/bin/python -m pip install -q -e ".[tests]"
  [ -x .venv-tflite/bin/python ] || "$PYTHON" -m venv .venv-tflite
  .venv-tflite/bin/python -m pip install -q "numpy<2" "tflite-runtime==2.14.0"
  bash tools/install_bazel.sh
else
  .venv/bin/python -m pip install -q -e ".[examples]"
fi
