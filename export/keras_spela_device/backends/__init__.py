"""The device runtimes behind DeviceTrainer, one module each, chosen here.

`REGISTRY` maps a runtime's name to its `Backend` class ("module:class",
imported when used). Its order is the order in which `runtime="auto"`
tries the backends that are `chosen_by_auto` for a model's kind. Adding a
runtime is one new module with a `backends.base.Backend` subclass and one
line here.
"""

import importlib

from keras_spela_device import contract
from keras_spela_device.errors import ModelFileError
from keras_spela_device.errors import RuntimeUnavailableError

REGISTRY = {
    "litert": "keras_spela_device.backends.litert:LiteRTBackend",
    "tflite_runtime": "keras_spela_device.backends.tflite_runtime:TFLiteRuntimeBackend",
    "micro": "keras_spela_device.backends.micro:MicroBackend",
    "litert_compiled": "keras_spela_device.backends.litert_compiled:CompiledModelBackend",
}
RUNTIMES = tuple(REGISTRY)


def backend_class(runtime):
    """The Backend class registered as `runtime`.

    Raises:
        ValueError: an unknown runtime.
    """
    if runtime not in REGISTRY:
        raise ValueError(f"runtime must be 'auto' or one of {RUNTIMES}, received {runtime!r}.")
    module, name = REGISTRY[runtime].split(":")
    return getattr(importlib.import_module(module), name)


def runtimes_for(kind):
    """The registered runtimes that run models of `kind`."""
    return [r for r in RUNTIMES if backend_class(r).model_kind == kind]


def choose_backend(runtime, model):
    """The Backend class for `runtime` ("auto" or a registered name) and a
    checked `ModelFile`.

    Raises:
        ModelFileError: the runtime does not run this kind of model.
        RuntimeUnavailableError: "auto" found no installed runtime for it.
    """
    if runtime != "auto":
        cls = backend_class(runtime)
        if cls.model_kind != model.kind:
            fitting = [repr(r) for r in runtimes_for(model.kind)]
            listed = " or ".join(
                [", ".join(fitting[:-1])] + fitting[-1:] if fitting[:-1] else fitting
            )
            raise ModelFileError(
                f"{model.path}: {contract.MODEL_KINDS[model.kind]}, not "
                f"{contract.MODEL_KINDS[cls.model_kind].split(' (')[0]}; run it with "
                f"runtime={listed}, or give {runtime!r} the {cls.model_kind} export of the model"
            )
        return cls
    candidates = [
        cls
        for cls in map(backend_class, RUNTIMES)
        if cls.model_kind == model.kind and cls.chosen_by_auto
    ]
    error = None
    for cls in candidates:
        try:
            cls.check_installed()
            return cls
        except RuntimeUnavailableError as missing:
            error = missing
    if len(candidates) == 1:  # it says what is missing, after checking the model
        return candidates[0]
    raise RuntimeUnavailableError(
        f"running an {model.kind} model here needs "
        f"{' or '.join(c.install_hint for c in candidates)}: {error}"
    )
