"""Every example ends a bad numeric flag with one error line before it imports TensorFlow, and
nothing is downloaded: a TFDS set that is not on the machine, with its servers made
unreachable, is one error line."""

import ast
import os
import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CNN_EXAMPLE = EXAMPLES / "cifar_svhn_cnn.py"


# Makes every server unreachable in the example's process (a stand-in for a machine
# without internet, also where there is one): imported before the script runs.
OFFLINE_SITECUSTOMIZE = """import errno, socket
def _unreachable(address, *args, **kwargs):
    raise OSError(errno.ENETUNREACH, "Network is unreachable")
socket.create_connection = _unreachable
"""

# Makes TensorFlow impossible to import in the example's process: a flag checked before the
# import still gets its one error line.
NO_TENSORFLOW_SITECUSTOMIZE = """import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("tensorflow is blocked in this test")
sys.meta_path.insert(0, _NoTensorFlow())
"""


@pytest.mark.parametrize("script", [CNN_EXAMPLE, EXAMPLES / "mnist_mlp.py"])
def test_tfds_set_missing_offline_is_one_error_line(tmp_path, script, scripts):
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    env = scripts.env(tmp_path)
    result, output = scripts.run(
        script,
        "--dataset",
        "cifar10",
        "--data_dir",
        tmp_path / "tfds",
        "--epochs",
        1,
        cwd=tmp_path,
        env_update={"PYTHONPATH": os.pathsep.join([str(tmp_path / "offline"), env["PYTHONPATH"]])},
        expect_code=None,
        tail=None,
    )
    assert result.returncode == 1, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert re.match(
        f"error: Dataset cifar10 is not in {re.escape(str(tmp_path / 'tfds'))}/cifar10/[0-9.]+ "
        r"and its server www\.cs\.toronto\.edu cannot be reached \(Network is unreachable\)\. "
        "It must be downloaded once: run this where the internet is reachable",
        lines[0],
    ), output
    assert "Downloading" not in result.stdout and "Dl Completed" not in result.stderr, output


@pytest.mark.parametrize(
    "script, flag, message",
    [
        ("cifar_svhn_cnn.py", ["--epochs", "0"], "flag --epochs=0: 0 is not a positive integer"),
        (
            "cifar_svhn_cnn.py",
            ["--max_examples", "-5"],
            "flag --max_examples=-5: -5 is not a non-negative integer",
        ),
        ("mnist_mlp.py", ["--hidden", "0"], "flag --hidden=0: 0 is not a positive integer"),
        ("transfer_head.py", ["--epochs", "0"], "flag --epochs=0: 0 is not a positive integer"),
        (
            "on_device_finetune.py",
            ["--host_epochs", "0"],
            "flag --host_epochs=0: 0 is not a positive integer",
        ),
        ("new_classes.py", ["--seed", "-1"], "flag --seed=-1: -1 is not a non-negative integer"),
        ("multi_worker.py", ["--epochs", "0"], "flag --epochs=0: 0 is not a positive integer"),
        ("federated_flower.py", ["--rounds", "0"], "flag --rounds=0: 0 is not a positive integer"),
    ],
)
def test_bad_numeric_flag_is_one_error_line(tmp_path, script, flag, message, scripts):
    """The flags are checked before TensorFlow is imported (it cannot be, here)."""
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "sitecustomize.py").write_text(NO_TENSORFLOW_SITECUSTOMIZE)
    env = scripts.env(tmp_path)
    result, output = scripts.run(
        EXAMPLES / script,
        *flag,
        cwd=tmp_path,
        env_update={"PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), env["PYTHONPATH"]])},
        expect_code=None,
        tail=None,
    )
    assert result.returncode == 2, output
    assert result.stderr.strip().splitlines() == [f"{script}: error: {message} (see --helpfull)"], (
        output
    )
    assert not result.stdout, output


def _module_constant(script, name):
    """The value of a constant assigned at the top level of an example (read, not run)."""
    tree = ast.parse((EXAMPLES / script).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{script} assigns no {name}")


def test_constants_written_before_the_import_match_keras_spela():
    """What an example writes out, to check its flags without TensorFlow, is the library's."""
    import keras_spela

    supported = keras_spela.datasets.SUPPORTED_TFDS_DATASETS
    assert _module_constant("transfer_head.py", "DATASETS") == ("digits",) + supported
    assert _module_constant("new_classes.py", "MAX_CLASSES") == (
        keras_spela.datasets.DIGITS_NUM_CLASSES
    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
