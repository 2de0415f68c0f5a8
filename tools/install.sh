#!/usr/bin/env bash
# Installs keras_spela into ./.venv (Python 3.11), with the device runtimes.
#   bash tools/install.sh          the library, LiteRT, TFLite Micro, Flower (flwr), examples
#   bash tools/install.sh tests    also pytest, the tflite-runtime venv
#                                  (./.venv-tflite: numpy<2, no TensorFlow), Bazel,
#                                  Chromium and LiteRT.js (tools/install_web.sh)
# Both also install Fashion-MNIST (Debian package dataset-fashion-mnist) where
# apt-get runs as root. KERAS_SPELA_TENSORFLOW=tensorflow|tensorflow-cpu picks
# the TensorFlow distribution (default: tensorflow-cpu on Linux x86-64, where it
# is published, else tensorflow).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

# One TensorFlow distribution, named here and passed on to setup.py: pip runs
# setup.py in an isolated build environment, which cannot see what is installed.
if [ -z "${KERAS_SPELA_TENSORFLOW:-}" ]; then
  if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then
    KERAS_SPELA_TENSORFLOW=tensorflow-cpu
  else
    KERAS_SPELA_TENSORFLOW=tensorflow
  fi
fi
export KERAS_SPELA_TENSORFLOW
.venv/bin/python -m pip install -q "$KERAS_SPELA_TENSORFLOW==2.21.0"
echo "install.sh: TensorFlow distribution $KERAS_SPELA_TENSORFLOW 2.21.0 in .venv"
for other in tensorflow tensorflow-cpu; do
  if [ "$other" != "$KERAS_SPELA_TENSORFLOW" ] && .venv/bin/python -m pip show -q "$other" 2>/dev/null; then
    echo "install.sh: .venv also holds $other (both share one 'tensorflow' module);" \
      "remove .venv and run this again for one distribution" >&2
  fi
done

if [ "${1:-}" = "tests" ]; then
  .venv/bin/python -m pip install -q -e ".[tests]"
  [ -x .venv-tflite/bin/python ] || "$PYTHON" -m venv .venv-tflite
  .venv-tflite/bin/python -m pip install -q "numpy<2" "tflite-runtime==2.14.0"
  # The device package alone (no TensorFlow), from this checkout.
  .venv-tflite/bin/python -m pip install -q -e ./export
  bash tools/install_bazel.sh
  # Chromium and LiteRT.js (npm) for the browser tests (tests/web_test.py).
  bash tools/install_web.sh
else
  .venv/bin/python -m pip install -q -e ".[examples]"
fi

# Fashion-MNIST's files for keras_spela.datasets.load_fashion_mnist (the
# examples and tests); without them it downloads them through Keras.
FASHION_DIR=/usr/share/datasets/fashion-mnist
if [ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "install.sh: Fashion-MNIST already in $FASHION_DIR"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; then
    echo "install.sh: installed the Debian package dataset-fashion-mnist ($FASHION_DIR)"
  else
    echo "install.sh: apt-get could not install dataset-fashion-mnist;" \
      "load_fashion_mnist will download Fashion-MNIST on first use" >&2
  fi
else
  echo "install.sh: Fashion-MNIST not installed (needs root: apt-get install" \
    "dataset-fashion-mnist); load_fashion_mnist will download it on first use"
fi
