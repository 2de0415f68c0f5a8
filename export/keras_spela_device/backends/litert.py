"""LiteRT's Interpreter (`ai-edge-litert`): the first choice for an
`export_tflite` model."""

from keras_spela_device.backends.signatures import InterpreterBackend
from keras_spela_device.errors import RuntimeUnavailableError


class LiteRTBackend(InterpreterBackend):
    """An `export_tflite` model on LiteRT's Interpreter, through its
    signature runners."""

    runtime = "litert"
    display_name = "LiteRT"
    chosen_by_auto = True
    install_hint = "LiteRT (pip install ai-edge-litert)"

    @classmethod
    def interpreter_class(cls):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise RuntimeUnavailableError(
                f"runtime 'litert' needs the ai-edge-litert package "
                f"(pip install ai-edge-litert): {error}"
            ) from None
        return Interpreter
