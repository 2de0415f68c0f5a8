"""The early-exit API: predict at any exit, truncated models, evaluate_early_exit's
thresholds."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_spela import datasets

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


def test_predict_exits_shapes_and_consistency(trained_h3_mlp, digits):
    model = trained_h3_mlp
    _, (x, _) = digits
    x = x[:50]
    reference = {k: v.numpy() for k, v in model.exit_scores(tf.constant(x)).items()}
    assert list(reference) == ["h1", "h2", "h3"]

    last = model.predict(x, verbose=0)
    assert last.shape == (50, NUM_CLASSES)
    np.testing.assert_allclose(last, reference["h3"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, exit=-1, verbose=0), last)
    np.testing.assert_array_equal(model.predict(x, exit=2, verbose=0), last)
    np.testing.assert_array_equal(model.predict(x, exit="h3", verbose=0), last)

    first = model.predict(x, exit=0, verbose=0)
    assert first.shape == (50, NUM_CLASSES)
    np.testing.assert_allclose(first, reference["h1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, exit="h1", verbose=0), first)
    np.testing.assert_array_equal(model.predict(x, exit=-3, verbose=0), first)
    assert not np.allclose(first, last)

    everything = model.predict(x, exit="all", batch_size=16, verbose=0)
    assert set(everything) == {"h1", "h2", "h3"}
    for name, scores in everything.items():
        assert scores.shape == (50, NUM_CLASSES)
        np.testing.assert_allclose(scores, reference[name], rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(scores) <= 1 + 1e-5)
    # The default exit is restored after a predict(exit=...), and choosing
    # an exit reuses the traced predict function.
    traced = model.predict_function
    np.testing.assert_array_equal(model.predict(x, verbose=0), last)
    np.testing.assert_array_equal(model.predict(x, exit=0, verbose=0), first)
    assert model.predict_function is traced
    # One batch of 50 rows, not predict's batches of 32 and 18: oneDNN's
    # products may round differently.
    np.testing.assert_allclose(model.predict_on_batch(x), last, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.predict_on_batch(x, exit="all")["h1"], first, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(model(x).numpy(), last, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exit", [3, -4, "nope", 1.0])
def test_predict_unknown_exit_raises(exit, trained_h3_mlp):
    model = trained_h3_mlp
    with pytest.raises(ValueError, match="exit"):
        model.predict(np.zeros((2, 64), np.float32), exit=exit, verbose=0)


def test_truncated_predicts_like_the_exit(trained_h3_mlp, digits):
    model = trained_h3_mlp
    _, (x, _) = digits
    for exit, name in [(0, "h1"), ("h2", "h2")]:
        small = model.truncated(exit)
        assert [layer.name for layer in small.exit_layers] == (
            ["h1"] if name == "h1" else ["h1", "h2"]
        )
        np.testing.assert_allclose(
            small.predict(x, verbose=0),
            model.predict(x, exit=exit, verbose=0),
            rtol=1e-6,
            atol=1e-7,
        )
        # The weights are shared, not copied.
        assert small.exit_layers[0].kernel is model.exit_layers[0].kernel


def test_early_exit_thresholds(trained_h3_mlp, digits):
    model = trained_h3_mlp
    _, (x, y) = digits
    scores = model.predict(x, exit="all", verbose=0)
    stacked = np.stack([scores[n] for n in ("h1", "h2", "h3")])

    predictions, exits = model.predict_early_exit(x, threshold=0.0)
    np.testing.assert_array_equal(exits, 0)
    np.testing.assert_array_equal(predictions, np.argmax(stacked[0], axis=1))
    result = model.evaluate_early_exit(x, y, threshold=0.0)
    assert result["mean_depth"] == 1.0 and result["mean_exit"] == 0.0
    assert result["exit_fractions"] == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(result["accuracy"], np.mean(predictions == y))

    # Cosines are in [-1, 1], so a margin can never exceed 2.
    predictions, exits = model.predict_early_exit(x, threshold=2.5)
    np.testing.assert_array_equal(exits, 2)
    np.testing.assert_array_equal(predictions, np.argmax(stacked[2], axis=1))
    result = model.evaluate_early_exit(x, y, threshold=2.5)
    assert result["mean_depth"] == 3.0
    assert result["exit_fractions"] == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(result["accuracy"], np.mean(predictions == y))

    # An intermediate threshold: the first exit whose top-2 margin passes.
    threshold = float(np.median(np.diff(np.sort(stacked[0], axis=1)[:, -2:], axis=1)))
    predictions, exits = model.predict_early_exit(x, threshold=threshold, batch_size=64)
    for i in range(len(x)):
        margins = [np.sort(stacked[k, i])[-1] - np.sort(stacked[k, i])[-2] for k in range(3)]
        expected_exit = next((k for k in range(2) if margins[k] >= threshold), 2)
        assert exits[i] == expected_exit
        assert predictions[i] == np.argmax(stacked[expected_exit, i])
    result = model.evaluate_early_exit(x, y, threshold=threshold)
    np.testing.assert_allclose(result["accuracy"], np.mean(predictions == y))
    np.testing.assert_allclose(result["mean_depth"], np.mean(exits) + 1)
    np.testing.assert_allclose(sum(result["exit_fractions"]), 1.0)
    assert 0 < result["exit_fractions"][0] < 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
