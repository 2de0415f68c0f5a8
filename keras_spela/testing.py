"""Helpers for testing SPELA layer kinds: device training against `fit`.

A new `SpelaLayer` kind proves that it trains the same on the host and in
every exported runtime with `assert_devices_train_like_fit`:

```python
from keras_spela import testing
testing.assert_devices_train_like_fit(
    DeviceTrainer, {"litert": lite.path, "micro": micro.path}, model, x, y, 16
)
```
"""

import numpy as np

from keras_spela.layers import weight_name


def host_weights(model):
    """`{<layer>_<weight>: array}` of every SPELA layer's trainable weights,
    named as on the device."""
    return {
        f"{layer.name}_{weight_name(v)}": v.numpy()
        for layer in model.exit_layers
        for v in layer.trainable_variables
    }


def assert_devices_train_like_fit(trainer_class, paths, model, x, y, batch_size, tolerance=1e-5):
    """Fits `model` on `(x, y)` (one epoch, no shuffling), trains each
    exported model of `paths` (`{runtime: path}`) on the same data with
    `trainer_class` (DeviceTrainer), and asserts that every weight moved and
    ends within `tolerance` (max |a - b| / max |b|) of the host's."""
    initial = {
        k: np.array(v) for k, v in trainer_class(next(iter(paths.values()))).get_weights().items()
    }
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    expected = host_weights(model)
    for runtime, path in paths.items():
        trainer = trainer_class(path, runtime=runtime)
        trainer.fit(x, y, epochs=1, shuffle=False, verbose=0)
        weights = trainer.get_weights()
        for name, reference in expected.items():
            assert np.max(np.abs(reference - initial[name])) > 1e-4, name
            error = np.max(np.abs(weights[name] - reference)) / np.max(np.abs(reference))
            assert error <= tolerance, (runtime, name, error)
    return expected
