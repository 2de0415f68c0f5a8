"""setup.py's requirements: one TensorFlow distribution, named by $KERAS_SPELA_TENSORFLOW
(tools/install.sh sets it; pip builds the package in an isolated environment, where what is
installed cannot be seen), and what the documented TFDS data sets need. setup.py runs with
setuptools.setup replaced by a recorder, tools/install.sh with a stub Python and apt-get:
nothing is installed, a few seconds."""

import os
import pathlib
import platform
import runpy
import subprocess
import sys

import pytest
import setuptools

# Under Bazel this file is a symlink in the runfiles tree: follow it back to the checkout.
ROOT = pathlib.Path(os.path.realpath(__file__)).parents[2]


def setup_arguments(monkeypatch, tensorflow=None):
    """The keyword arguments setup.py passes to setuptools.setup."""
    if tensorflow is None:
        monkeypatch.delenv("KERAS_SPELA_TENSORFLOW", raising=False)
    else:
        monkeypatch.setenv("KERAS_SPELA_TENSORFLOW", tensorflow)
    recorded = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: recorded.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return recorded


def tensorflow_requirements(arguments):
    return [r for r in arguments["install_requires"] if r.startswith("tensorflow")]


def test_plain_tensorflow_by_default_whatever_is_installed(monkeypatch):
    # Also where tensorflow-cpu is installed (as in tools/install.sh's venv on Linux x86-64):
    # the build environment that runs setup.py does not have it.
    assert tensorflow_requirements(setup_arguments(monkeypatch)) == ["tensorflow>=2.16"]


def test_tensorflow_cpu_when_the_environment_names_it(monkeypatch):
    arguments = setup_arguments(monkeypatch, "tensorflow-cpu")
    assert tensorflow_requirements(arguments) == ["tensorflow-cpu>=2.16"]


def test_unknown_tensorflow_distribution_is_one_error(monkeypatch):
    with pytest.raises(SystemExit) as error:
        setup_arguments(monkeypatch, "tensorflow-gpu")
    assert str(error.value) == (
        "error: KERAS_SPELA_TENSORFLOW must be one of tensorflow, tensorflow-cpu; "
        "received 'tensorflow-gpu'"
    )


@pytest.mark.parametrize("extra", ["datasets", "examples", "tests"])
def test_tfds_extras_bring_importlib_resources(monkeypatch, extra):
    # tensorflow-datasets imports it to read a set's checksums but declares it for
    # Python < 3.9 only.
    requirements = setup_arguments(monkeypatch)["extras_require"][extra]
    assert any(r.startswith("tensorflow-datasets") for r in requirements)
    assert "importlib_resources" in requirements


STUB_PYTHON = """#!/bin/sh
echo "KERAS_SPELA_TENSORFLOW=${KERAS_SPELA_TENSORFLOW-} $*" >> "$STUB_LOG"
case "$*" in *" pip show "*) exit 1 ;; esac
"""
STUB_APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$STUB_LOG"
"""


FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def run_install_script(tmp_path, *args, tensorflow=None, fashion_dir=FASHION_DIR):
    """tools/install.sh on a copy of itself (Fashion-MNIST's directory replaced by
    `fashion_dir`), with a stub .venv/bin/python and apt-get that record their calls
    (nothing is installed). Returns (calls, stdout)."""
    script = (ROOT / "tools" / "install.sh").read_text()
    assert script.count(FASHION_DIR) == 1
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "install.sh").write_text(script.replace(FASHION_DIR, str(fashion_dir)))
    for stub, text in (
        (tmp_path / ".venv" / "bin" / "python", STUB_PYTHON),
        (tmp_path / "bin" / "apt-get", STUB_APT_GET),
    ):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(text)
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_SPELA_TENSORFLOW"}
    env.update(STUB_LOG=str(tmp_path / "calls.log"), PATH=f"{tmp_path / 'bin'}:{env['PATH']}")
    if tensorflow:
        env["KERAS_SPELA_TENSORFLOW"] = tensorflow
    result = subprocess.run(
        ["bash", str(tmp_path / "tools" / "install.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return (tmp_path / "calls.log").read_text().splitlines(), result.stdout


@pytest.mark.slow
def test_install_script_installs_one_tensorflow_and_passes_it_to_setup(tmp_path):
    expected = (
        "tensorflow-cpu"
        if platform.system() == "Linux" and (platform.machine() == "x86_64")
        else "tensorflow"
    )
    calls, out = run_install_script(tmp_path)
    pip_installs = [c for c in calls if " -m pip install " in c and "--upgrade pip" not in c]
    assert pip_installs == [
        f"KERAS_SPELA_TENSORFLOW={expected} -m pip install -q {expected}==2.21.0",
        f"KERAS_SPELA_TENSORFLOW={expected} -m pip install -q -e .[examples]",
    ], calls
    assert f"install.sh: TensorFlow distribution {expected} 2.21.0 in .venv" in out, out


@pytest.mark.slow
def test_install_script_takes_the_distribution_from_the_environment(tmp_path):
    calls, _ = run_install_script(tmp_path, tensorflow="tensorflow")
    assert "KERAS_SPELA_TENSORFLOW=tensorflow -m pip install -q tensorflow==2.21.0" in calls
    assert "KERAS_SPELA_TENSORFLOW=tensorflow -m pip install -q -e .[examples]" in calls


@pytest.mark.slow
@pytest.mark.parametrize("installed", [True, False])
def test_install_script_says_what_it_did_with_fashion_mnist(tmp_path, installed):
    fashion_dir = tmp_path / "fashion-mnist"
    if installed:
        fashion_dir.mkdir()
        (fashion_dir / "train-images-idx3-ubyte.gz").write_bytes(b"")
    calls, out = run_install_script(tmp_path, fashion_dir=fashion_dir)
    said = [line for line in out.splitlines() if "ashion" in line]
    assert len(said) == 1, out
    apt_calls = [c for c in calls if c.startswith("apt-get ")]
    if installed:
        assert said == [f"install.sh: Fashion-MNIST already in {fashion_dir}"], out
        assert apt_calls == [], calls
    elif os.getuid() == 0:
        assert apt_calls == ["apt-get install -y -q dataset-fashion-mnist"], calls
        assert said == [
            f"install.sh: installed the Debian package dataset-fashion-mnist ({fashion_dir})"
        ], out
    else:
        assert apt_calls == [], calls
        assert "apt-get install dataset-fashion-mnist" in said[0], out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
