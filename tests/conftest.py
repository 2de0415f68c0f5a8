"""What the tests share: the checkout on sys.path, its path, the data sets, the model
factories used by several files and the subprocess helpers of the script tests.

pytest reads this file before it imports any test module; Bazel's py_test targets find it
in the :pytest_support filegroup. Fixtures that load data or build a model are
session-scoped and hand out read-only arrays (a test that needs to change one takes a copy).
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

# The checkout (under Bazel this file is a symlink into the runfiles tree: resolved, it is
# the source tree's).
REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

# TensorFlow's C++ log lines (glog/absl: "I0000 00:00:1796152149.301752 1803 file.cc:31] ...",
# "2026-12-01 19:00:00.000000: I tensorflow/...") and its usual notices, which a script run
# by a user must not print.
TF_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |"
    r"oneDNN|cuda|TF_ENABLE_ONEDNN_OPTS|cpu_feature_guard|Logging error|Traceback",
    re.IGNORECASE,
)


def _read_only(tree):
    """`tree` (nested tuples of arrays) with every array made read-only."""
    if isinstance(tree, tuple):
        return tuple(_read_only(t) for t in tree)
    tree.setflags(write=False)
    return tree


# Fixtures that export models: the converter takes seconds per model, so a test that uses
# one (directly or through another fixture) is `slow`. A test module names its own in
# `EXPORTING_FIXTURES`.
EXPORTING_FIXTURES = ("dense_exports",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Marks `slow` every test that uses an exporting fixture (before `-m` selects)."""
    for item in items:
        module = getattr(item, "module", None)
        exporting = set(EXPORTING_FIXTURES) | set(getattr(module, "EXPORTING_FIXTURES", ()))
        if exporting & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def repo():
    """The checkout's root directory (a `pathlib.Path`)."""
    return REPO


@pytest.fixture(scope="session")
def digits():
    """`keras_spela.datasets.load_digits()`: `((x_train, y_train), (x_test, y_test))`,
    1,437 + 360 rows of 64 features in [0, 1]."""
    import keras_spela

    return _read_only(keras_spela.datasets.load_digits())


@pytest.fixture(scope="session")
def canvas_digits():
    """`keras_spela.datasets.load_canvas_digits()`: the digits at random offsets on a
    20x20 canvas, `(N, 20, 20, 1)`."""
    import keras_spela

    return _read_only(keras_spela.datasets.load_canvas_digits())


@pytest.fixture(scope="session")
def fashion_subset():
    """The first 1,000 training images of Fashion-MNIST (uint8, 28x28) and their labels,
    from the real files (the Debian package or Keras' cache)."""
    import keras_spela

    (x, y), _ = keras_spela.datasets.load_fashion_mnist()
    return _read_only((x[:1000].copy(), y[:1000].copy()))


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    """A directory for the exports that session fixtures make once."""
    return tmp_path_factory.mktemp("exports")


def build_spela_mlp(
    units=(64, 34),
    num_classes=10,
    input_dim=64,
    seed=0,
    names="h",
    extra_layers=(),
    local_loss=None,
    **kwargs,
):
    """A SpelaModel `input_dim -> SpelaDense(u) for u in units`.

    Args:
        units: Units of each SpelaDense layer.
        num_classes: Classes of the model.
        input_dim: Features of the input.
        seed: Passed to `keras.utils.set_random_seed` first (None: no reseeding).
        names: "h": layers named h1, h2, ...; a sequence: those names; None: Keras' names.
        extra_layers: Plain Keras layers between the input and the first SpelaDense.
        local_loss: One local loss for every layer or one per layer (None: the default).
        **kwargs: `SpelaModel` arguments (`train_layers`, `max_classes`) and, for the
            rest, `SpelaDense` arguments of every layer.

    Returns:
        The (uncompiled) SpelaModel.
    """
    import keras

    from keras_spela import SpelaDense
    from keras_spela import SpelaModel

    if seed is not None:
        keras.utils.set_random_seed(seed)
    model_kwargs = {k: kwargs.pop(k) for k in ("train_layers", "max_classes") if k in kwargs}
    if names == "h":
        names = [f"h{i + 1}" for i in range(len(units))]
    names = names or [None] * len(units)
    losses = local_loss if isinstance(local_loss, (list, tuple)) else [local_loss] * len(units)
    layers = [keras.Input((input_dim,)), *extra_layers]
    for u, name, loss in zip(units, names, losses):
        layer_kwargs = dict(kwargs, **({"local_loss": loss} if loss else {}))
        layers.append(SpelaDense(u, name=name, **layer_kwargs))
    return SpelaModel(layers, num_classes=num_classes, **model_kwargs)


@pytest.fixture(scope="session")
def spela_mlp():
    """The factory `build_spela_mlp` (see its docstring)."""
    return build_spela_mlp


@pytest.fixture(scope="session")
def trained_h3_mlp(digits):
    """A 64-64-34-34 MLP (layers h1, h2, h3; seed 3) trained with compile()'s defaults for
    4 epochs on the first 500 training digits. Tests must not train or change it."""
    (x, y), _ = digits
    model = build_spela_mlp(units=(64, 34, 34), seed=3)
    model.compile()
    model.fit(x[:500], y[:500], epochs=4, batch_size=50, verbose=0)
    return model


@pytest.fixture(scope="session")
def trained_h2_mlp(digits):
    """A 64-32-16 MLP (layers h1, h2; seed 0) trained with compile()'s defaults for 5 epochs
    on the training digits. Tests must not train or change it."""
    (x, y), _ = digits
    model = build_spela_mlp(units=(32, 16))
    model.compile()
    model.fit(x, y, batch_size=50, epochs=5, verbose=0)
    return model


def _script_env(tmp_path):
    """The environment of a script's process: the checkout's keras_spela first,
    TensorFlow's log level as a user has it, and a writable matplotlib cache (Bazel's
    sandbox has a read-only home, and matplotlib says so on stderr)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_SPELA_EXAMPLE_MOCK_TFDS")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + env.get("PYTHONPATH", "").split(os.pathsep))
    # Its own folder: tests check that a script writes nothing into tmp_path.
    mpl_config = tmp_path.parent / f"{tmp_path.name}_matplotlib"
    mpl_config.mkdir(exist_ok=True)
    env["MPLCONFIGDIR"] = str(mpl_config)
    return env


# What an example must not print either: XLA's notices.
EXAMPLE_LOG_LINE = re.compile(TF_LOG_LINE.pattern + "|XLA", re.IGNORECASE)


class ScriptRunner:
    """Runs the repository's scripts (examples, benchmarks) as a user runs them."""

    def env(self, tmp_path):
        return _script_env(tmp_path)

    def run(self, script, *args, cwd, env_update=None, expect_code=0, tail=3000):
        """Runs `python script args` in `cwd`; asserts its exit code (None: any). The
        output shown on failure ends with the last `tail` characters of stdout and stderr
        (None: all of them).

        Returns:
            `(result, output)`: the `CompletedProcess` and a text to show on failure.
        """
        env = _script_env(cwd)
        env.update(env_update or {})
        result = subprocess.run(
            [sys.executable, str(script), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=cwd,
        )
        tail = tail or None
        output = (
            f"exit code {result.returncode}\nstdout:\n{result.stdout[-tail if tail else 0 :]}\n"
            f"stderr:\n{result.stderr[-tail if tail else 0 :]}"
        )
        if expect_code is not None:
            assert result.returncode == expect_code, output
        return result, output

    def assert_quiet(self, result, output, example=False):
        """No TensorFlow log line or traceback on the script's stderr (nor, for an
        `example`, XLA's notices)."""
        pattern = EXAMPLE_LOG_LINE if example else TF_LOG_LINE
        noisy = [line for line in result.stderr.splitlines() if pattern.search(line)]
        assert not noisy, f"TensorFlow log lines or a traceback on stderr: {noisy[:5]}\n{output}"


@pytest.fixture(scope="session")
def scripts():
    """A `ScriptRunner`: `scripts.run(path, *args, cwd=...)`, `scripts.assert_quiet(...)`."""
    return ScriptRunner()


# The optimizers of the session's exports (`dense_exports`).
_EXPORT_OPTIMIZERS = {
    "sgd": lambda keras: keras.optimizers.SGD(learning_rate=0.5),
    "momentum": lambda keras: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
    "adam": lambda keras: keras.optimizers.Adam(learning_rate=1e-2),
}


@pytest.fixture(scope="session")
def dense_exports(export_dir):
    """Exports made once, at batch 16, from untrained 64-32-16 models (never fitted
    afterwards).

    Returns:
        `{"model": the 64-32-16 model (seed 1), "big_model": a 64-512-16 model (seed 2),
        "exports": {name: export result}, "paths": {name: path}}` with the names "sgd",
        "momentum", "adam" (LiteRT exports of `model`), "micro" (its TFLite Micro train step,
        Adam 1e-2; paths "micro_train" and "micro_infer"), "big_float" and "quantized"
        (`big_model` with its first layer frozen, float32 and int8).
    """
    import keras

    import keras_spela

    out = export_dir / "dense"
    out.mkdir()
    model = build_spela_mlp(units=(32, 16), seed=1, names=None)
    result = {"model": model, "paths": {}, "exports": {}}
    for name, optimizer in _EXPORT_OPTIMIZERS.items():
        export = keras_spela.export_tflite(
            model, str(out / f"{name}.tflite"), batch_size=16, optimizer=optimizer(keras)
        )
        result["exports"][name] = export
        result["paths"][name] = export.path
    micro = keras_spela.export_tflite_micro(
        model, str(out / "micro.tflite"), batch_size=16, optimizer="adam", learning_rate=1e-2
    )
    result["exports"]["micro"] = micro
    result["paths"]["micro_train"] = micro.path
    result["paths"]["micro_infer"] = micro.inference_path
    # A large first layer (64 x 512) that stays frozen; the last layer learns.
    big = build_spela_mlp(units=(512, 16), seed=2, names=None)
    result["big_model"] = big
    for name, quantize in (("big_float", False), ("quantized", True)):
        export = keras_spela.export_tflite(
            big,
            str(out / f"{name}.tflite"),
            batch_size=16,
            optimizer="adam",
            learning_rate=1e-2,
            train_layers=1,
            quantize_frozen=quantize,
        )
        result["exports"][name] = export
        result["paths"][name] = export.path
    return result
