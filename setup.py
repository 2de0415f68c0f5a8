"""Packaging of keras_spela. The version is read from keras_spela/version.py by path."""

import os
import pathlib

from setuptools import find_namespace_packages
from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent
VERSION = {}
exec((HERE / "keras_spela" / "version.py").read_text(), VERSION)


# One TensorFlow distribution: `tensorflow`, or `tensorflow-cpu` (the same
# package without GPU support, Linux x86-64 and Windows only) when
# KERAS_SPELA_TENSORFLOW=tensorflow-cpu, as tools/install.sh sets it. What is
# installed cannot be probed here: pip runs this file in an isolated build
# environment.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu")


def tensorflow_requirement():
    """The TensorFlow requirement that `$KERAS_SPELA_TENSORFLOW` names."""
    name = os.environ.get("KERAS_SPELA_TENSORFLOW", "tensorflow")
    if name not in TENSORFLOW_DISTRIBUTIONS:
        raise SystemExit(
            f"error: KERAS_SPELA_TENSORFLOW must be one of {', '.join(TENSORFLOW_DISTRIBUTIONS)}; "
            f"received {name!r}"
        )
    return f"{name}>=2.16"


# TensorFlow imports ml_dtypes; ml_dtypes 0.7.0 spends about 1.3 s in its
# extension's initialisation (0.6.0: 0.01 s; `python -X importtime -c "import
# ml_dtypes"`), a fifth of `import keras_spela`. TensorFlow 2.21 asks for
# >=0.5.1,<1.0.
ML_DTYPES = "ml_dtypes>=0.5.1,<0.7"

LITERT = ["ai-edge-litert>=2.0"]
MICRO = ["tflite-micro"]
# tensorflow-datasets 4.9.10 imports importlib_resources to read its
# checksums (before any download) but declares it for Python < 3.9 only.
DATASETS = ["tensorflow-datasets>=4.9", "importlib_resources"]
# Flower (federated rounds over DeviceTrainer clients, examples/federated_flower.py).
FLOWER = ["flwr>=1.42"]
EXAMPLES = DATASETS + LITERT + MICRO + FLOWER + ["matplotlib"]

setup(
    name="keras_spela",
    version=VERSION["__version__"],
    description=(
        "SPELA (Solo Pass Embedded Learning Algorithm) for Keras 3: local, "
        "single-pass learning that keeps training inside TFLite / LiteRT / "
        "TFLite Micro models."
    ),
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Namespace discovery: keras_spela/datasets/data (no __init__.py) is a package of its own.
    packages=find_namespace_packages(include=["keras_spela", "keras_spela.*"])
    + find_packages("export", include=["keras_spela_device", "keras_spela_device.*"]),
    # The device package (export/keras_spela_device; `pip install ./export`
    # installs it alone, without TensorFlow): the exporters import its contract.
    package_dir={"keras_spela_device": "export/keras_spela_device"},
    entry_points={"console_scripts": ["keras-spela-device = keras_spela_device.cli:main"]},
    package_data={"keras_spela.datasets": ["data/*.npz", "data/DIGITS_LICENSE.txt"]},
    include_package_data=True,
    install_requires=[tensorflow_requirement(), ML_DTYPES, "keras>=3.5", "numpy", "absl-py"],
    extras_require={
        # LiteRT, the maintained runtime; tflite-runtime needs numpy<2 and so
        # lives in its own environment (see README).
        "litert": LITERT,
        "micro": MICRO,
        "flower": FLOWER,
        "datasets": DATASETS,
        "examples": EXAMPLES,
        # pytest-xdist: tools/run_tests.sh runs pytest on two processes; ruff (pinned:
        # its formatting changes between versions) checks format and lint first.
        "tests": EXAMPLES + ["pytest", "pytest-xdist", "ruff==0.17.6"],
    },
    license="Apache-2.0",
)
