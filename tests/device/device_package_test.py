"""The device package, keras_spela_device (export/): its contract is what the
exporters write, a runtime is one module plus one registry line, no file puts
export/ on sys.path, and `pip install ./export[litert]` in a fresh virtualenv
(no TensorFlow) runs the README's device snippet and the `keras-spela-device`
command (marked slow: it installs from the package registry)."""

import ast
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela.core import acceptance
from keras_spela_device import DeviceTrainer
from keras_spela_device import DeviceTrainingError
from keras_spela_device import backends
from keras_spela_device import cli
from keras_spela_device import contract
from keras_spela_device.tflite_file import io_names
from keras_spela_device.tflite_file import read_model_structure

# Fixtures that export models: the tests that use them are `slow` (tests/conftest.py).
EXPORTING_FIXTURES = ("exports",)

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = REPO / "export" / "keras_spela_device"
BATCH = 16


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A max_classes model trained a little on the host, exported with Adam
    (export_tflite) and SGD with momentum (export_tflite_micro), and data."""
    out = tmp_path_factory.mktemp("device_package")
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [keras.Input((64,)), SpelaDense(32, name="hidden"), SpelaDense(16, name="last")],
        num_classes=10,
        max_classes=12,
    )
    model.compile()
    (x, y), (x_test, y_test) = keras_spela.datasets.load_digits()
    model.fit(x[:160], y[:160], batch_size=BATCH, epochs=1, verbose=0)
    lite = keras_spela.export_tflite(model, str(out / "spela.tflite"), batch_size=BATCH)
    micro = keras_spela.export_tflite_micro(
        model,
        str(out / "micro.tflite"),
        batch_size=8,
        optimizer=keras_spela.DeviceOptimizer("sgd", 0.1, momentum=0.9),
    )
    data = out / "data.npz"
    np.savez(data, x_train=x[:200], y_train=y[:200], x_test=x_test, y_test=y_test)
    return {"dir": out, "lite": lite, "micro": micro, "data": data}


# --------------------------------------------------------------- contract
def test_the_exporters_write_the_contract(exports):
    structure = read_model_structure(pathlib.Path(exports["lite"].path).read_bytes())
    assert contract.model_kind(structure) == contract.SIGNATURE_MODEL
    assert contract.signature_model_problems(structure) == []
    signatures = structure["signatures"]
    assert sorted(signatures) == sorted(contract.SIGNATURES)
    assert sorted(signatures[contract.TRAIN]["inputs"]) == sorted(contract.TRAIN_INPUTS)
    assert list(signatures[contract.INFER]["inputs"]) == [contract.INFER_INPUT]
    assert list(signatures[contract.GET_WEIGHTS]["inputs"]) == [contract.GET_WEIGHTS_INPUT]
    assert sorted(signatures[contract.TRAIN]["outputs"]) == sorted(
        [contract.ACCEPTED_OUTPUT, contract.LOSS_OUTPUT, contract.PADDING_OUTPUT]
        + [contract.exit_loss_name(contract.exit_name(k)) for k in (0, 1)]
    )
    assert sorted(signatures[contract.INFER]["outputs"]) == sorted(
        [contract.SCORES_OUTPUT]
        + [contract.exit_scores_name(contract.exit_name(k)) for k in (0, 1)]
    )
    assert list(signatures[contract.SET_WEIGHTS]["outputs"]) == [contract.ACCEPTED_OUTPUT]
    # Optimizer state, as the exporter names it and as the contract tells it apart.
    names = set(signatures[contract.GET_WEIGHTS]["outputs"])
    state = set(exports["lite"].state_names)
    assert contract.optimizer_state_names(names) == state
    assert names - state == set(exports["lite"].weight_names) | {contract.CLASS_MASK}
    assert acceptance.PADDING_LABEL == contract.PADDING_LABEL

    micro = exports["micro"]
    data = pathlib.Path(micro.path).read_bytes()
    structure = read_model_structure(data)
    assert contract.model_kind(structure) == contract.MICRO_STEP
    description = json.loads(pathlib.Path(micro.path[: -len(".tflite")] + ".json").read_text())
    assert contract.micro_description_problems(description, data, structure) == []
    assert set(contract.MICRO_DESCRIPTION_KEYS) | {
        contract.CLASS_MASK,
        contract.MODEL_SHA256,
    } <= set(description)
    assert io_names(structure, 0, "inputs") == micro.inputs
    assert contract.CLASS_MASK in micro.inputs
    assert description["exits"] == [contract.exit_name(k) for k in (0, 1)]
    assert sorted(
        contract.optimizer_state_names(
            ["last_kernel", "last_kernel_momentum", "momentum_started", "last_bias"]
        )
    ) == ["last_kernel_momentum", "momentum_started"]


def test_the_contract_loads_on_its_own():
    """Other device sides (the JavaScript trainer's test) read the names from
    the file alone."""
    spec = importlib.util.spec_from_file_location("standalone_contract", PACKAGE / "contract.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SIGNATURES == contract.SIGNATURES
    assert (module.PADDING_LABEL, module.CLASS_MASK) == (-1, "active_classes")


# ---------------------------------------------------------------- backends
ECHO_BACKEND = '''
"""A runtime added to keras_spela_device: one module (this one)."""

from keras_spela_device.backends.litert import LiteRTBackend


class EchoBackend(LiteRTBackend):
    """LiteRT's Interpreter under another name, scoring the last exit only
    and without set_weights: DeviceTrainer reads what it can do from these
    flags, never from its class."""

    runtime = "echo"
    display_name = "Echo"
    chosen_by_auto = False
    scores_every_exit = False
    sets_weights = False
    infer_calls = 0

    def infer(self, x):
        EchoBackend.infer_calls += 1
        return {self.exits[-1]: super().infer(x)[self.exits[-1]]}
'''


def test_a_runtime_is_one_module_and_one_registry_line(exports, tmp_path, monkeypatch, capsys):
    (tmp_path / "echo_runtime.py").write_text(ECHO_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    # The one registry line.
    monkeypatch.setitem(backends.REGISTRY, "echo", "echo_runtime:EchoBackend")
    path = exports["lite"].path
    trainer = DeviceTrainer(path, runtime="echo")
    assert trainer.runtime == "echo" and type(trainer._backend).__name__ == "EchoBackend"
    assert DeviceTrainer(path).runtime == "litert"  # "auto" never picks it
    (x, y), (x_test, y_test) = keras_spela.datasets.load_digits()
    reference = DeviceTrainer(path, runtime="litert")
    assert trainer.fit(x[:64], y[:64], verbose=0) == reference.fit(x[:64], y[:64], verbose=0)
    # Its capabilities, honoured: the last exit only, no set_weights.
    assert trainer.scored_exits == ["exit_1"] and not trainer.sets_weights
    np.testing.assert_array_equal(trainer.predict(x_test), reference.predict(x_test))
    assert trainer.evaluate(x_test, y_test) == {
        "exit_1_accuracy": reference.evaluate(x_test, y_test)["exit_1_accuracy"]
    }
    with pytest.raises(ValueError, match=r"This Echo model scores its last exit only"):
        trainer.predict(x_test, exit=0)
    with pytest.raises(NotImplementedError, match="Echo models have no set_weights"):
        trainer.set_weights(trainer.get_weights())
    assert trainer._backend.infer_calls == 3
    # The command line takes it too, and refuses --load_weights by its name.
    monkeypatch.setattr(cli.backends, "RUNTIMES", tuple(backends.REGISTRY))
    assert (
        cli.main(
            [
                "--model",
                path,
                "--data",
                str(exports["data"]),
                "--runtime",
                "echo",
                "--load_weights",
                str(tmp_path / "w.npz"),
            ]
        )
        == 1
    )
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "error: --load_weights: Echo models have no set_weights (their weights live in the "
            "model); re-export from the host to change them"
        )
    )


def test_backends_declare_their_capabilities():
    for runtime in backends.RUNTIMES:
        cls = backends.backend_class(runtime)
        assert cls.runtime == runtime and cls.display_name and cls.install_hint, runtime
        assert cls.model_kind in contract.MODEL_KINDS, runtime
    assert backends.runtimes_for(contract.MICRO_STEP) == ["micro"]
    assert [r for r in backends.RUNTIMES if backends.backend_class(r).chosen_by_auto] == [
        "litert",
        "tflite_runtime",
        "micro",
    ]
    with pytest.raises(ValueError, match=r"runtime must be 'auto' or one of \('litert'"):
        backends.backend_class("gpu")


def test_no_file_puts_export_on_sys_path():
    """Everything imports the device package; nothing reaches into export/."""
    offenders = []
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if (
            parts[0].startswith((".", "bazel-"))
            or parts[0] in ("third_party", "web")
            or ("node_modules" in parts)
        ):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("insert", "append")
                and ast.unparse(node.func.value) == "sys.path"
                and "export" in ast.unparse(node)
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in (
                "device_trainer",
                "tflite_file",
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {node.module}")
    assert not offenders, offenders


def test_weights_of_a_micro_step_are_refused_by_name(exports):
    trainer = DeviceTrainer(exports["micro"].path)
    assert not trainer.sets_weights and not trainer.exposes_weights
    with pytest.raises(DeviceTrainingError, match="expose_weights=True"):
        trainer.get_weights()


# ----------------------------------------------------- pip install ./export
def _readme_device_snippet():
    """The README's Python block that trains with DeviceTrainer."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    snippets = [
        b
        for b in blocks
        if "DeviceTrainer(" in b and "keras_spela." not in b and "import keras\n" not in b
    ]
    assert snippets, "README.md has no device snippet (a python block with DeviceTrainer)"
    return snippets[0]


@pytest.mark.slow
def test_pip_install_of_the_device_package_runs_the_readme_snippet_and_the_cli(exports, tmp_path):
    python = shutil.which("python3") or sys.executable
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    venv_python = str(venv / "bin" / "python")
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    start = time.perf_counter()
    install = subprocess.run(
        [venv_python, "-m", "pip", "install", "-q", f"{REPO / 'export'}[litert]"],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=tmp_path,
    )
    print(f"pip install ./export[litert] into a fresh venv: {time.perf_counter() - start:.1f} s")
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    installed = subprocess.run(
        [venv_python, "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(installed)}
    assert "keras-spela-device" in names and "ai-edge-litert" in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "keras-spela"}, names
    probe = subprocess.run(
        [venv_python, "-c", "import tensorflow"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr

    # The README's snippet, as written, on the exported model.
    work = tmp_path / "device"
    work.mkdir()
    shutil.copy(exports["lite"].path, work / "spela.tflite")
    snippet = (
        textwrap.dedent(
            f"""
        import sys
        import numpy as np
        with np.load({str(exports["data"])!r}) as data:
            x_new, y_new = data["x_train"], data["y_train"]
            x_test, y_test = data["x_test"], data["y_test"]
        """
        )
        + _readme_device_snippet()
        + textwrap.dedent(
            """
        print("accuracy", trainer.evaluate(x_test, y_test))
        assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")]
        """
        )
    )
    result = subprocess.run(
        [venv_python, "-c", snippet], capture_output=True, text=True, timeout=600, env=env, cwd=work
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (work / "personal.npz").exists()
    accuracy = json.loads(result.stdout.split("accuracy ", 1)[1].replace("'", '"'))
    assert max(accuracy.values()) > 0.6, accuracy  # it learned (exit_0: 81 % measured)

    # The command, as installed.
    cli_result = subprocess.run(
        [
            str(venv / "bin" / "keras-spela-device"),
            "--model",
            str(work / "spela.tflite"),
            "--data",
            str(exports["data"]),
            "--epochs",
            "2",
            "--save_weights",
            str(work / "w.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=work,
    )
    assert cli_result.returncode == 0, cli_result.stderr[-3000:]
    assert cli_result.stderr == ""
    assert cli_result.stdout.startswith("runtime litert, batch 16"), cli_result.stdout
    assert (work / "w.npz").exists()
    bad = subprocess.run(
        [
            str(venv / "bin" / "keras-spela-device"),
            "--model",
            str(work / "nope.tflite"),
            "--data",
            str(exports["data"]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=work,
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        f"keras-spela-device: error: {work / 'nope.tflite'}: the model file does not exist"
    ]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
