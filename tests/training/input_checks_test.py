"""Inputs fit, evaluate and predict cannot take are one clear error: unbatched datasets,
the wrong number of features, x as a dict."""

import sys

import numpy as np
import pytest
import tensorflow as tf


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_unbatched_dataset_one_clear_error(method, trained_h2_mlp, digits):
    _, (x_test, y_test) = digits
    dataset = tf.data.Dataset.from_tensor_slices((x_test, y_test))
    kwargs = {"epochs": 1} if method == "fit" else {}
    with pytest.raises(ValueError, match=r"single examples .*dataset.batch\(32\)"):
        getattr(trained_h2_mlp, method)(dataset, verbose=0, **kwargs)


def test_wrong_number_of_features_one_clear_error(spela_mlp, digits):
    model = spela_mlp(units=(16, 12))
    model.compile()
    (x, y), _ = digits
    # Traced once for the right shape: a retraced step would see unknown shapes.
    model.fit(x[:16], y[:16], epochs=1, verbose=0)
    model.predict(x[:16], verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    x, y = x[:16, :63], y[:16]
    calls = {
        "fit": lambda: model.fit(x, y, epochs=1, verbose=0),
        "fit_dataset": lambda: model.fit(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0
        ),
        "evaluate": lambda: model.evaluate(x, y, verbose=0),
        "predict": lambda: model.predict(x, verbose=0),
        "predict_on_batch": lambda: model.predict_on_batch(x),
        "train_on_batch": lambda: model.train_on_batch(x, y),
        "call": lambda: model(x),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"shape \(64,\) .*\((16|None), 63\)"):
            call()
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_x_as_a_dict_one_clear_error(method, trained_h2_mlp, digits):
    _, (x_test, y_test) = digits
    args = (x_test[:20],) if method == "predict" else (x_test[:20], y_test[:20])
    with pytest.raises(ValueError, match=r"one array or tensor .*x\['pixels'\]"):
        getattr(trained_h2_mlp, method)({"pixels": args[0]}, *args[1:], verbose=0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
