"""DeviceTrainer's refusals around class slots (a class beyond max_classes, a class
activated twice, labels of an inactive class, weights of a model with other shapes) each
raise DeviceTrainingError naming the problem and change nothing."""

import re
import sys

import numpy as np
import pytest

import keras_spela
from keras_spela_device import DeviceTrainer
from keras_spela_device import DeviceTrainingError

# Fixtures that export models: the tests that use them are `slow` (tests/conftest.py).
EXPORTING_FIXTURES = ("exports",)

BATCH = 8
HOST_CLASSES = 8
MAX_CLASSES = 10


@pytest.fixture(scope="module")
def exports(tmp_path_factory, spela_mlp):
    """LiteRT exports (Adam: optimizer state too) of a max_classes model, of one
    with another hidden width and of one without max_classes; a TFLite Micro
    step of the first that outputs its weights."""
    out = tmp_path_factory.mktemp("new_classes")
    paths = {}
    for name, model in [
        (
            "litert",
            spela_mlp(
                (32, 16),
                names=("hidden", "last"),
                num_classes=HOST_CLASSES,
                max_classes=MAX_CLASSES,
            ),
        ),
        (
            "other_width",
            spela_mlp(
                (24, 16),
                names=("hidden", "last"),
                num_classes=HOST_CLASSES,
                max_classes=MAX_CLASSES,
            ),
        ),
        (
            "no_slots",
            spela_mlp(
                (32, 16), names=("hidden", "last"), num_classes=HOST_CLASSES, max_classes=None
            ),
        ),
    ]:
        paths[name] = keras_spela.export_tflite(
            model, str(out / f"{name}.tflite"), batch_size=BATCH, optimizer="adam"
        ).path
    paths["micro"] = keras_spela.export_tflite_micro(
        spela_mlp(
            (32, 16), names=("hidden", "last"), num_classes=HOST_CLASSES, max_classes=MAX_CLASSES
        ),
        str(out / "micro.tflite"),
        batch_size=BATCH,
        optimizer="adam",
        expose_weights=True,
    ).path
    return paths


def state(trainer):
    """Every weight and optimizer slot, and the active classes."""
    return {k: v.copy() for k, v in trainer.get_weights().items()}, trainer.active_classes


def assert_unchanged(trainer, before):
    weights, active = state(trainer)
    assert active == before[1]
    assert sorted(weights) == sorted(before[0])
    for name, value in weights.items():
        np.testing.assert_array_equal(value, before[0][name], err_msg=name)


@pytest.mark.parametrize("runtime", ["litert", "micro"])
@pytest.mark.parametrize("class_id", [MAX_CLASSES, -1, 3.0, True])
def test_class_outside_the_slots_is_refused(exports, runtime, class_id):
    trainer = DeviceTrainer(exports[runtime], runtime=runtime)
    before = state(trainer)
    with pytest.raises(
        DeviceTrainingError,
        match=re.escape(
            f"class_id must be an integer in [0, max_classes={MAX_CLASSES}), received {class_id!r}"
        ),
    ):
        trainer.activate_class(class_id)
    assert_unchanged(trainer, before)


@pytest.mark.parametrize("runtime", ["litert", "micro"])
def test_class_activated_twice_is_refused(exports, runtime):
    trainer = DeviceTrainer(exports[runtime], runtime=runtime)
    with pytest.raises(DeviceTrainingError, match=r"Class 3 is already active"):
        trainer.activate_class(3)  # active from the start
    trainer.activate_class(8)
    before = state(trainer)
    assert before[1] == list(range(9))
    with pytest.raises(
        DeviceTrainingError,
        match=re.escape("Class 8 is already active (active: [0, 1, 2, 3, 4, 5, 6, 7, 8])"),
    ):
        trainer.activate_class(8)
    assert_unchanged(trainer, before)


@pytest.mark.parametrize("runtime", ["litert", "micro"])
def test_labels_of_an_inactive_class_are_refused(exports, runtime, digits):
    (x, y), _ = digits
    trainer = DeviceTrainer(exports[runtime], runtime=runtime)
    trainer.activate_class(8)
    before = state(trainer)
    pick = np.concatenate([np.flatnonzero(y == 9)[:2], np.flatnonzero(y < 9)[: BATCH - 2]])
    message = re.escape(
        "Labels of classes that are not active: [9]; call activate_class first "
        "(active: [0, 1, 2, 3, 4, 5, 6, 7, 8])"
    )
    with pytest.raises(DeviceTrainingError, match=message):
        trainer.train_batch(x[pick], y[pick])
    with pytest.raises(DeviceTrainingError, match=message):
        trainer.fit(x[pick], y[pick], epochs=1, verbose=0)
    assert_unchanged(trainer, before)
    # The same batch without class 9 trains: the refusal was about the label.
    keep = pick[y[pick] != 9]
    trainer.train_batch(x[keep], y[keep])
    assert not np.array_equal(trainer.get_weights()["last_kernel"], before[0]["last_kernel"])


def test_weights_of_a_model_with_other_shapes_are_refused(exports):
    trainer = DeviceTrainer(exports["litert"], runtime="litert")
    trainer.activate_class(9)
    before = state(trainer)
    other = DeviceTrainer(exports["other_width"], runtime="litert").get_weights()
    with pytest.raises(
        DeviceTrainingError,
        match=r"Weight 'hidden_\w+' must have shape \((64, 32|32,)\), received \((64, 24|24,)\)",
    ):
        trainer.set_weights(other)
    assert_unchanged(trainer, before)
    no_slots = DeviceTrainer(exports["no_slots"], runtime="litert").get_weights()
    with pytest.raises(
        DeviceTrainingError,
        match=re.escape(
            "set_weights needs exactly the names of get_weights; missing ['active_classes']"
        ),
    ):
        trainer.set_weights(no_slots)
    assert_unchanged(trainer, before)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
