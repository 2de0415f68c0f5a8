"""fit_multi_worker: two worker processes on localhost under
MultiWorkerMirroredStrategy end at the weights of one process.

The two-worker test starts this file twice as a worker (`python
tests/training/multi_worker_test.py worker ...`, TF_CONFIG on free localhost ports);
the workers save their final weights and History, and the test compares
them with `SpelaModel.fit` run here on the same global batches. A
MultiWorkerMirroredStrategy is never created in the pytest process (it
enables collective ops for the whole process).
"""

import functools
import json
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_spela import datasets  # noqa: E402
from keras_spela.core.acceptance import BatchRejectedError  # noqa: E402
from keras_spela.layers import SpelaDense  # noqa: E402
from keras_spela.training.model import SpelaModel  # noqa: E402
from keras_spela.training.multi_worker import fit_multi_worker  # noqa: E402

NUM_WORKERS = 2
GLOBAL_BATCH = 50  # split 25 + 25 over the two workers
EPOCHS = 2
EXAMPLES = 200
WORKER_TIMEOUT_S = 240
RELATIVE_TOLERANCE = 1e-5
# In a worker's output when its gRPC server could not bind its port (measured).
PORT_TAKEN = "Could not start gRPC server"
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(1.0),
    "adam": lambda: keras.optimizers.Adam(1e-2),
}


def _model(optimizer_name):
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [keras.Input((64,)), SpelaDense(32, name="a"), SpelaDense(34, name="b")],
        num_classes=datasets.DIGITS_NUM_CLASSES,
    )
    model.compile(optimizer=OPTIMIZERS[optimizer_name]())
    return model


def _data():
    (x, y), _ = datasets.load_digits()
    return x[:EXAMPLES], y[:EXAMPLES].astype("int32")


def _dataset():
    return tf.data.Dataset.from_tensor_slices(_data()).batch(GLOBAL_BATCH)


class _BatchCounter(keras.callbacks.Callback):
    """Counts the callback calls that fit_multi_worker makes."""

    def __init__(self):
        super().__init__()
        self.calls = {"train_begin": 0, "epoch_end": 0, "batch_end": 0, "train_end": 0}

    def on_train_begin(self, logs=None):
        self.calls["train_begin"] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.calls["epoch_end"] += 1

    def on_train_batch_end(self, batch, logs=None):
        self.calls["batch_end"] += 1

    def on_train_end(self, logs=None):
        self.calls["train_end"] += 1


def _relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


@functools.lru_cache(maxsize=None)
def _reference(optimizer_name):
    """One process, `SpelaModel.fit`, the same global batches (computed
    once per optimizer; read only)."""
    model = _model(optimizer_name)
    x, y = _data()
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    return model, history.history


# ------------------------------------------------------------------- worker
def _worker_main(ports, index, output_path):
    """Trains every optimizer's model under MultiWorkerMirroredStrategy and
    saves weights, History and callback counts to `output_path` (.npz)."""
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == NUM_WORKERS
    saved = {}
    for optimizer_name in OPTIMIZERS:
        with strategy.scope():
            model = _model(optimizer_name)
        counter = _BatchCounter()
        history = fit_multi_worker(model, _dataset(), epochs=EPOCHS, callbacks=[counter], verbose=0)
        for i, variable in enumerate(model.weights):
            saved[f"{optimizer_name}/weight{i}"] = variable.numpy()
        saved[f"{optimizer_name}/iterations"] = model.optimizer.iterations.numpy()
        for key, values in history.history.items():
            saved[f"{optimizer_name}/history/{key}"] = np.array(values)
        for key, count in counter.calls.items():
            saved[f"{optimizer_name}/calls/{key}"] = np.array(count)
    np.savez(output_path, **saved)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_workers(tmp_path, while_waiting, retries=1):
    """Starts the workers, calls `while_waiting()`, waits for them (killing
    both past the timeout) and returns their saved results; fails with both
    workers' output (after `retries` new starts if a port was taken)."""
    ports = _free_ports(NUM_WORKERS)
    outputs = [tmp_path / f"worker{i}.npz" for i in range(NUM_WORKERS)]
    logs = [tmp_path / f"worker{i}.log" for i in range(NUM_WORKERS)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env.pop("TF_CONFIG", None)
    processes = []
    for i in range(NUM_WORKERS):
        with open(logs[i], "w") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        os.path.abspath(__file__),
                        "worker",
                        ",".join(map(str, ports)),
                        str(i),
                        str(outputs[i]),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    try:
        while_waiting()
    except BaseException:
        for process in processes:
            process.kill()
        raise
    timed_out = False
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            timed_out = True
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    report = "\n".join(
        f"--- worker {i} (exit code {p.returncode}):\n{logs[i].read_text()[-3000:]}"
        for i, p in enumerate(processes)
    )
    if timed_out:
        pytest.fail(f"the workers did not finish within {WORKER_TIMEOUT_S} s\n{report}")
    if any(p.returncode != 0 for p in processes):
        if PORT_TAKEN in report and retries:
            # Another process took a port between _free_ports and the server.
            return _run_workers(tmp_path, lambda: None, retries - 1)
        pytest.fail(f"a worker failed\n{report}")
    return [dict(np.load(path)) for path in outputs]


# -------------------------------------------------------------------- tests
@pytest.mark.slow
def test_two_workers_end_at_the_single_process_weights(tmp_path):
    # The single-process references are trained while the workers start.
    workers = _run_workers(tmp_path, lambda: [_reference(name) for name in OPTIMIZERS])
    steps = EPOCHS * EXAMPLES // GLOBAL_BATCH
    for optimizer_name in OPTIMIZERS:
        reference, reference_history = _reference(optimizer_name)
        for index, saved in enumerate(workers):
            for i, expected in enumerate(v.numpy() for v in reference.weights):
                actual = saved[f"{optimizer_name}/weight{i}"]
                error = _relative_error(actual, expected)
                assert error <= RELATIVE_TOLERANCE, (
                    f"{optimizer_name}: worker {index}, "
                    f"{reference.weights[i].path}: relative error {error:.3g}"
                )
            assert int(saved[f"{optimizer_name}/iterations"]) == steps
            for key, values in reference_history.items():
                np.testing.assert_allclose(
                    saved[f"{optimizer_name}/history/{key}"],
                    values,
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"{optimizer_name}: worker {index}, {key}",
                )
            calls = {
                key.rsplit("/", 1)[1]: int(value)
                for key, value in saved.items()
                if key.startswith(f"{optimizer_name}/calls/")
            }
            assert calls == {
                "train_begin": 1,
                "epoch_end": EPOCHS,
                "batch_end": steps,
                "train_end": 1,
            }
        # The trainable weights moved (the comparison is not of two
        # untouched models).
        initial = _model(optimizer_name)
        for start, end in zip(initial.trainable_weights, reference.trainable_weights):
            assert np.max(np.abs(end.numpy() - start.numpy())) > 1e-3, end.path
    # Both workers hold the same weights, bit for bit.
    for key in workers[0]:
        np.testing.assert_array_equal(workers[0][key], workers[1][key], err_msg=key)


def test_one_process_default_strategy_equals_fit():
    """Without a strategy scope fit_multi_worker trains like fit (and
    EarlyStopping stops it)."""
    reference, reference_history = _reference("adam")
    model = _model("adam")
    history = fit_multi_worker(model, _dataset(), epochs=EPOCHS, verbose=0)
    for expected, actual in zip(reference.weights, model.weights):
        assert _relative_error(actual.numpy(), expected.numpy()) <= RELATIVE_TOLERANCE
    assert history.history.keys() == reference_history.keys()
    for key, values in reference_history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, atol=1e-6)

    model = _model("adam")
    # No epoch improves `accuracy` by 2 (mode "max" from SpelaModel).
    stop = keras.callbacks.EarlyStopping(monitor="accuracy", patience=0, min_delta=2.0)
    history = fit_multi_worker(model, _dataset(), epochs=5, callbacks=[stop], verbose=0)
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations.numpy()) == 2 * EXAMPLES // GLOBAL_BATCH


def test_steps_per_epoch_runs_on_across_epochs():
    model = _model("sgd")
    dataset = _dataset().repeat()
    history = fit_multi_worker(model, dataset, epochs=3, steps_per_epoch=3, verbose=0)
    assert len(history.history["loss"]) == 3
    assert int(model.optimizer.iterations.numpy()) == 9


def test_rejected_batch_is_one_error_and_changes_nothing():
    model = _model("sgd")
    before = [v.numpy().copy() for v in model.weights]
    x, y = _data()
    x = x.copy()
    x[3, 5] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    with pytest.raises(BatchRejectedError, match="NaN, infinite"):
        fit_multi_worker(model, dataset, verbose=0)
    for start, variable in zip(before, model.weights):
        np.testing.assert_array_equal(variable.numpy(), start)


@pytest.mark.parametrize(
    "make_arguments, message",
    [
        (lambda: (_model("sgd"), _data()), "takes a tf.data.Dataset of global batches"),
        (
            lambda: (SpelaModel([keras.Input((64,)), SpelaDense(8)], num_classes=10), _dataset()),
            "must be compiled",
        ),
        (
            lambda: (keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)]), _dataset()),
            "trains a keras_spela.SpelaModel",
        ),
    ],
    ids=["numpy_input", "not_compiled", "plain_keras_model"],
)
def test_user_mistakes_raise_naming_the_problem(make_arguments, message):
    model, data = make_arguments()
    with pytest.raises(ValueError, match=message):
        fit_multi_worker(model, data, verbose=0)


def test_model_not_built_raises():
    model = SpelaModel([SpelaDense(8)], num_classes=10)
    model.compile()
    with pytest.raises(ValueError, match="must be built"):
        fit_multi_worker(model, _dataset(), verbose=0)


def test_bad_epochs_raises():
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        fit_multi_worker(_model("sgd"), _dataset(), epochs=1.5, verbose=0)


def test_model_created_outside_the_strategy_scope_raises():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = _model("sgd")  # outside the scope
    with strategy.scope():
        with pytest.raises(ValueError, match="inside strategy.scope"):
            fit_multi_worker(model, _dataset(), verbose=0)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        _worker_main([int(p) for p in sys.argv[2].split(",")], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
