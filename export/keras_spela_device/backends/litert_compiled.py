"""LiteRT's CompiledModel API (`ai_edge_litert.compiled_model`) with
TensorBuffers, on the CPU: the API of LiteRT's Kotlin and C++ samples.
Never chosen by `runtime="auto"`."""

import numpy as np

from keras_spela_device import contract
from keras_spela_device.backends.signatures import SignatureModelBackend
from keras_spela_device.errors import ModelFileError
from keras_spela_device.errors import RuntimeUnavailableError
from keras_spela_device.errors import one_line
from keras_spela_device.native_stderr import capture_native_stderr
from keras_spela_device.native_stderr import drop_native_stderr_at_exit


def load_compiled_model_api():
    """LiteRT's CompiledModel API: `(CompiledModel, Options, CpuOptions,
    TensorBuffer)`.

    Raises:
        RuntimeUnavailableError: ai-edge-litert, or its CompiledModel API
            (ai-edge-litert 2.x), is not installed.
    """
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.compiled_model import CpuOptions
        from ai_edge_litert.compiled_model import Options
        from ai_edge_litert.tensor_buffer import TensorBuffer
    except ImportError as error:
        raise RuntimeUnavailableError(
            f"runtime 'litert_compiled' needs LiteRT's CompiledModel API, in "
            f"ai-edge-litert 2.x (pip install 'ai-edge-litert>=2'): {error}"
        ) from None
    return CompiledModel, Options, CpuOptions, TensorBuffer


def aligned_zeros(shape, dtype, alignment=64):
    """A C-contiguous zero array whose data starts at a multiple of
    `alignment` bytes (a view into a slightly larger array)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    raw = np.zeros(size + alignment // dtype.itemsize + 1, dtype)
    start = (-raw.ctypes.data % alignment) // dtype.itemsize
    return raw[start : start + size].reshape(shape)


class CompiledSignature:
    """One signature of a CompiledModel, run with TensorBuffers.

    The buffers are bound by position (`run_by_index`): LiteRT 2.3 names a
    signature's outputs after their tensors, so two names of one tensor
    (`scores` and `exit_<last>_scores` in `infer`) come back as one name
    twice, and `run_by_name` fails on `get_weights`. Which names each
    position carries comes from the file's signature defs instead.
    """

    def __init__(self, model, structure, name, tensor_buffer_class):
        definition = structure["signatures"][name]
        graph = structure["subgraphs"][definition["subgraph"]]
        self.name = name
        self.model = model
        self.tensor_buffer_class = tensor_buffer_class
        self.index = model.get_signature_index(name)
        by_tensor = {t.index: n for n, t in definition["inputs"].items()}
        self.input_names = [by_tensor[t.index] for t in graph["inputs"]]
        self.output_names = [
            [n for n, t in definition["outputs"].items() if t.index == tensor.index]
            for tensor in graph["outputs"]
        ]
        # The file's outputs: a resized batch replaces their first dimension.
        self.file_outputs = [(tuple(t.shape), np.dtype(t.dtype)) for t in graph["outputs"]]
        listed = model.get_signature_list()[name]
        if (
            list(listed["inputs"]) != self.input_names
            or len(listed["outputs"]) != len(self.output_names)
            or any(n not in names for n, names in zip(listed["outputs"], self.output_names))
        ):
            raise ValueError(
                f"CompiledModel lists the {name} signature as {listed}, not as the "
                f"file's inputs {self.input_names} and outputs {self.output_names}"
            )
        self.allocate()

    def allocate(self, batch=None):
        """(Re)creates the input and output buffers; with `batch`, outputs
        of `batch` rows in host memory that this object owns.

        LiteRT 2.3 does not propagate a resized input through a RESHAPE
        before the first run: `create_output_buffers` then returns buffers of
        the old batch, which the run overflows (a heap corruption that kills
        the process later), and after a resize any call of it makes the next
        run fail ("Custom allocation is too small"). Every output of a
        resized signature here has the batch as its first dimension
        (`infer`'s `(batch, classes)` scores), so its size is known from the
        file.
        """
        self.inputs = self.model.create_input_buffers(self.index)
        if batch is None:
            self.outputs = self.model.create_output_buffers(self.index)
            self.host_outputs = None
            self.output_layout = []
            for buffer in self.outputs:
                details = buffer.get_tensor_details()
                shape = tuple(int(d) for d in details["shape"])
                self.output_layout.append(
                    (shape, int(np.prod(shape, dtype=np.int64)), np.dtype(details["dtype"]))
                )
        else:
            # 64-byte aligned arrays: TensorBuffer binds them without a copy
            # (an aligned copy it made itself would not be kept alive).
            self.host_outputs = [
                aligned_zeros((batch,) + shape[1:], dtype) for shape, dtype in self.file_outputs
            ]
            self.outputs = [
                self.tensor_buffer_class.create_from_host_memory(a) for a in self.host_outputs
            ]
            self.output_layout = [(a.shape, a.size, a.dtype) for a in self.host_outputs]

    def resize_batch(self, name, shape):
        """Gives input `name` a new shape (`shape[0]`: the new batch) and
        allocates outputs of that batch."""
        self.model.resize_input_tensor(self.input_names.index(name), list(shape), self.index)
        self.allocate(batch=int(shape[0]))

    def __call__(self, **values):
        for name, buffer in zip(self.input_names, self.inputs):
            buffer.write(np.ascontiguousarray(values[name]))
        self.model.run_by_index(self.index, self.inputs, self.outputs)
        results = {}
        # Two positions of one tensor (infer's `scores` and its last exit):
        # the runtime writes the later binding, read last.
        for names, buffer, (shape, size, dtype) in zip(
            self.output_names, self.outputs, self.output_layout
        ):
            value = buffer.read(size, dtype).reshape(shape)
            for name in names:
                results[name] = value
        return results


class CompiledModelBackend(SignatureModelBackend):
    """An `export_tflite` model on LiteRT's CompiledModel API with
    TensorBuffers, on the CPU. The model keeps its weights and optimizer
    state in resource variables inside the compiled model, as with the
    Interpreter: they persist across `train` calls and are shared by the
    four signatures. (`export_tflite` writes `get_weights` outputs as
    computed tensors: a bare variable read is a dynamic tensor, which
    CompiledModel cannot bind to a TensorBuffer.)"""

    runtime = "litert_compiled"
    display_name = "LiteRT CompiledModel"
    install_hint = "LiteRT 2.x (pip install 'ai-edge-litert>=2')"

    @classmethod
    def check_installed(cls):
        load_compiled_model_api()

    def _load(self, model, num_threads, quiet):
        compiled_model_class, options_class, cpu_options_class, tensor_buffer_class = (
            load_compiled_model_api()
        )
        options = options_class(cpu_options=cpu_options_class(num_threads=num_threads or 0))
        self._quiet = quiet
        try:
            with capture_native_stderr(quiet):
                self._model_data = model.data
                self.compiled_model = compiled_model_class.from_buffer(model.data, options=options)
                self._train, self._infer, self._get, self._set = (
                    CompiledSignature(
                        self.compiled_model, model.structure, name, tensor_buffer_class
                    )
                    for name in contract.SIGNATURES
                )
                self._infer_batch = int(self._infer.inputs[0].get_tensor_details()["shape"][0])
                # Runs once so that the runtime allocates (and prints) now.
                self.infer(np.zeros((1,) + self.input_shape, np.float32))
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(
                f"{model.path}: litert_compiled (LiteRT CompiledModel) could not load "
                f"the model: {one_line(error)}"
            ) from None
        if quiet:
            drop_native_stderr_at_exit()

    def __del__(self):
        # The compiled model, its buffers and its environment go now; their
        # C++ destructors print INFO lines, captured like at creation.
        held = [
            n for n in ("_train", "_infer", "_get", "_set", "compiled_model") if n in vars(self)
        ]
        try:
            with capture_native_stderr(getattr(self, "_quiet", True)):
                for name in held:
                    delattr(self, name)
        except Exception:  # late in interpreter shutdown: nothing left to print to
            pass

    def infer(self, x):
        if len(x) != self._infer_batch:
            self._infer.resize_batch(contract.INFER_INPUT, x.shape)
            self._infer_batch = len(x)
        return super().infer(x)
