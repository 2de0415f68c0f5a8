"""tflite-runtime's Interpreter (`tflite-runtime`, numpy<2): the fallback for
an `export_tflite` model on Linux boards without LiteRT."""

from keras_spela_device.backends.signatures import InterpreterBackend
from keras_spela_device.errors import RuntimeUnavailableError


class TFLiteRuntimeBackend(InterpreterBackend):
    """An `export_tflite` model on tflite-runtime's Interpreter, through its
    signature runners."""

    runtime = "tflite_runtime"
    display_name = "tflite-runtime"
    chosen_by_auto = True
    install_hint = "tflite-runtime"

    @classmethod
    def interpreter_class(cls):
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as error:
            raise RuntimeUnavailableError(
                f"running an export_tflite model here needs the tflite-runtime package: {error}"
            ) from None
        return Interpreter
