"""SpelaModel.export(path, format="litert") writes the on-device-trainable model."""

import sys

import keras
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel


@pytest.mark.slow
def test_keras_export_verb_writes_the_trainable_litert_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = SpelaModel([keras.Input((64,)), SpelaDense(32), SpelaDense(16)], num_classes=10)
    export = model.export(
        str(tmp_path / "verb.tflite"),
        format="litert",
        batch_size=8,
        optimizer="sgd",
        learning_rate=0.5,
    )
    direct = keras_spela.export_tflite(
        model, str(tmp_path / "direct.tflite"), batch_size=8, optimizer="sgd", learning_rate=0.5
    )
    assert (tmp_path / "verb.tflite").read_bytes() == (tmp_path / "direct.tflite").read_bytes()
    assert export.weight_names == direct.weight_names
    with pytest.raises(ValueError, match=r"Unknown argument\(s\) \['optimizations'\]"):
        model.export(str(tmp_path / "x.tflite"), format="litert", optimizations=[])
    with pytest.raises(ValueError, match="input_signature is not used"):
        model.export(str(tmp_path / "x.tflite"), format="litert", input_signature=[])
    # Keras' other formats keep working (inference only).
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    assert (tmp_path / "saved" / "saved_model.pb").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
