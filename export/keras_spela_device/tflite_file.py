"""A pure-Python reader of TFLite flatbuffers (no TensorFlow, no runtime).

It checks a `.tflite` file's structure against its size and returns its
subgraphs' input and output tensors (name, dtype, shape) and its signatures,
so that `DeviceTrainer` can tell which kind of model a file is and refuse
a broken one with a clear error before any interpreter (whose C++ code may
crash on bad bytes) sees it. The format is the public TFLite schema: root
table `Model` -> `subgraphs` -> `tensors` / `inputs` / `outputs`, and
`signature_defs`; file identifier "TFL3" at bytes 4..8.

As a script, it prints what it read:

    python -m keras_spela_device.tflite_file spela.tflite
"""

import re
import struct
import sys


class TFLiteFormatError(ValueError):
    """The bytes are not a well-formed TFLite flatbuffer."""


# TensorType of the TFLite schema.
_TENSOR_TYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    8: "complex64",
    9: "int8",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
    18: "bfloat16",
}


class TensorInfo(tuple):
    """`(name, shape, dtype, index)` of one tensor of a subgraph."""

    __slots__ = ()

    def __new__(cls, name, shape, dtype, index):
        return super().__new__(cls, (name, tuple(shape), dtype, index))

    name = property(lambda self: self[0])
    shape = property(lambda self: self[1])
    dtype = property(lambda self: self[2])
    index = property(lambda self: self[3])


def _need(data, pos, size, what):
    if pos < 0 or size < 0 or pos + size > len(data):
        raise TFLiteFormatError(
            f"{what} reaches byte {pos + size}, past the end of the file "
            f"({len(data)} bytes): the file is truncated or corrupt"
        )


def _read(data, fmt, pos, what):
    _need(data, pos, struct.calcsize(fmt), what)
    return struct.unpack_from(fmt, data, pos)[0]


class _Table:
    """One flatbuffer table; every read is bounds-checked."""

    def __init__(self, data, pos, what):
        self.data, self.pos, self.what = data, pos, what
        self.vtable = pos - _read(data, "<i", pos, what)
        self.vtable_size = _read(data, "<H", self.vtable, what)
        self.table_size = _read(data, "<H", self.vtable + 2, what)
        if self.vtable_size < 4 or self.vtable_size % 2 or self.table_size < 4:
            raise TFLiteFormatError(f"{what} has a corrupt vtable: the file is not a TFLite model")
        _need(data, self.vtable, self.vtable_size, what)
        _need(data, pos, self.table_size, what)

    def _field(self, index):
        entry = 4 + 2 * index
        if entry >= self.vtable_size:
            return None
        offset = _read(self.data, "<H", self.vtable + entry, self.what)
        if offset == 0:
            return None
        if offset >= self.table_size:
            raise TFLiteFormatError(f"{self.what}: field {index} lies outside its table")
        return self.pos + offset

    def scalar(self, index, fmt, default=0):
        pos = self._field(index)
        return default if pos is None else _read(self.data, fmt, pos, self.what)

    def _target(self, index):
        pos = self._field(index)
        return None if pos is None else pos + _read(self.data, "<I", pos, self.what)

    def table(self, index, what):
        target = self._target(index)
        return None if target is None else _Table(self.data, target, what)

    def _vector(self, index, element_size, what):
        target = self._target(index)
        if target is None:
            return None, 0
        length = _read(self.data, "<I", target, what)
        _need(self.data, target + 4, length * element_size, what)
        return target + 4, length

    def tables(self, index, what):
        start, length = self._vector(index, 4, what)
        tables = []
        for i in range(length):
            slot = start + 4 * i
            tables.append(
                _Table(self.data, slot + _read(self.data, "<I", slot, what), f"{what} {i}")
            )
        return tables

    def ints(self, index, what):
        start, length = self._vector(index, 4, what)
        return list(struct.unpack_from(f"<{length}i", self.data, start)) if length else []

    def byte_vector(self, index, what):
        return self._vector(index, 1, what)[1]

    def string(self, index, what):
        start, length = self._vector(index, 1, what)
        if start is None:
            return None
        return bytes(self.data[start : start + length]).decode("utf-8", "replace")


def read_model_structure(data):
    """Reads the structure of a `.tflite` flatbuffer in pure Python.

    Walks the schema's root table `Model` (operator codes, subgraphs with
    their tensors, inputs, outputs and operators, buffers, metadata,
    signature defs), checking every offset against the file size, so that a
    truncated or corrupt file is refused before an interpreter (which may
    crash on it) sees it.

    Args:
        data: the bytes of the file.

    Returns:
        `{"subgraphs": [{"name", "inputs", "outputs", "tensors"}],
        "signatures": {key: {"subgraph", "inputs", "outputs"}}}`: inputs and
        outputs of a subgraph are lists of `TensorInfo` in index order,
        those of a signature dicts `{name: TensorInfo}`.

    Raises:
        TFLiteFormatError: what is wrong with the bytes.
    """
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        if len(data) == 0:
            raise TFLiteFormatError("the file is empty")
        if bytes(data[:4]) == b"PK\x03\x04":
            raise TFLiteFormatError(
                "it is a zip archive (a saved .keras model?), not a .tflite flatbuffer; "
                "export the model with keras_spela.export_tflite or export/export_tflite.py"
            )
        if bytes(data[:8]) == b"\x89HDF\r\n\x1a\n":
            raise TFLiteFormatError(
                "it is an HDF5 file (a .h5 Keras model?), not a .tflite flatbuffer"
            )
        raise TFLiteFormatError(
            "it lacks the TFLite file identifier 'TFL3' at bytes 4..8: not a .tflite model"
        )
    root = _Table(data, _read(data, "<I", 0, "the root offset"), "the Model table")
    codes = root.tables(1, "operator code")
    for code in codes:
        code.string(1, "an operator code's custom name")
    root.string(3, "the model description")
    buffers = root.tables(4, "buffer")
    for i, buffer in enumerate(buffers):
        buffer.byte_vector(0, f"the data of buffer {i}")
        offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
        if offset > 1:
            _need(data, offset, size, f"the data of buffer {i}")
    for i, metadata in enumerate(root.tables(6, "metadata")):
        metadata.string(0, f"the name of metadata {i}")
        if metadata.scalar(1, "<I") >= len(buffers):
            raise TFLiteFormatError(f"metadata {i} names a buffer that does not exist")
    subgraphs = []
    for s, subgraph in enumerate(root.tables(2, "subgraph")):
        where = f"subgraph {s}"
        tensors = []
        for t, tensor in enumerate(subgraph.tables(0, f"{where} tensor")):
            if tensor.scalar(2, "<I") >= max(len(buffers), 1):
                raise TFLiteFormatError(f"{where} tensor {t} names a buffer that does not exist")
            dtype = tensor.scalar(1, "<b")
            tensor.ints(7, f"{where} tensor {t} shape signature")
            tensors.append(
                TensorInfo(
                    tensor.string(3, f"{where} tensor {t} name") or "",
                    tensor.ints(0, f"{where} tensor {t} shape"),
                    _TENSOR_TYPES.get(dtype, f"type {dtype}"),
                    t,
                )
            )

        def tensor_list(indices, what, optional=False):
            for i in indices:
                if not (-1 if optional else 0) <= i < len(tensors):
                    raise TFLiteFormatError(f"{what} name tensor {i} of {len(tensors)}")
            return [tensors[i] for i in indices if i >= 0]

        inputs = tensor_list(subgraph.ints(1, f"{where} inputs"), f"{where} inputs")
        outputs = tensor_list(subgraph.ints(2, f"{where} outputs"), f"{where} outputs")
        for o, op in enumerate(subgraph.tables(3, f"{where} operator")):
            what = f"{where} operator {o}"
            if op.scalar(0, "<I") >= len(codes):
                raise TFLiteFormatError(f"{what} uses an operator code that does not exist")
            for field, kind in ((1, "inputs"), (2, "outputs"), (8, "intermediates")):
                tensor_list(op.ints(field, f"{what} {kind}"), f"{what} {kind}", optional=True)
            op.table(4, f"{what} options")
            op.byte_vector(5, f"{what} custom options")
        subgraphs.append(
            {
                "name": subgraph.string(4, f"{where} name") or "",
                "inputs": inputs,
                "outputs": outputs,
                "tensors": tensors,
            }
        )
    if not subgraphs:
        raise TFLiteFormatError("it has no subgraph")
    signatures = {}
    for g, signature in enumerate(root.tables(7, "signature")):
        key = signature.string(2, f"signature {g} key") or ""
        index = signature.scalar(4, "<I")
        if index >= len(subgraphs):
            raise TFLiteFormatError(f"signature {key!r} names a subgraph that does not exist")
        tensors = subgraphs[index]["tensors"]
        entry = {"subgraph": index}
        for field, kind in ((0, "inputs"), (1, "outputs")):
            named = {}
            for m, tensor_map in enumerate(signature.tables(field, f"signature {key!r} {kind}")):
                name = tensor_map.string(0, f"signature {key!r} {kind} {m} name") or ""
                t = tensor_map.scalar(1, "<I")
                if t >= len(tensors):
                    raise TFLiteFormatError(f"signature {key!r} names a tensor that does not exist")
                named[name] = tensors[t]
            entry[kind] = named
        signatures[key] = entry
    return {"subgraphs": subgraphs, "signatures": signatures}


def io_names(structure, subgraph_index, kind):
    """Names of the inputs/outputs of a subgraph, in index order: from the
    signature over that subgraph when there is one, else from the tensor
    names (`serving_default_x:0` -> `x`); None for an output without a name."""
    tensors = structure["subgraphs"][subgraph_index][kind]
    for signature in structure["signatures"].values():
        if signature["subgraph"] == subgraph_index:
            by_index = {t.index: name for name, t in signature[kind].items()}
            return [by_index.get(t.index) for t in tensors]
    if kind == "outputs":
        return [None] * len(tensors)
    return [re.sub(r"^serving_default_|:\d+$", "", t.name) for t in tensors]


def main(argv=None):
    """Prints the subgraphs and signatures of the file named in `argv`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m keras_spela_device.tflite_file MODEL.tflite", file=sys.stderr)
        return 2
    try:
        with open(argv[0], "rb") as f:
            structure = read_model_structure(f.read())
    except (OSError, TFLiteFormatError) as error:
        print(f"error: {argv[0]}: {error}", file=sys.stderr)
        return 1
    for index, subgraph in enumerate(structure["subgraphs"]):
        for kind in ("inputs", "outputs"):
            names = io_names(structure, index, kind)
            tensors = [
                f"{n or t.name} {t.dtype}{list(t.shape)}" for n, t in zip(names, subgraph[kind])
            ]
            print(f"subgraph {index} {kind}: {', '.join(tensors) or '-'}")
    for key, signature in structure["signatures"].items():
        print(
            f"signature {key}: subgraph {signature['subgraph']}, inputs "
            f"{sorted(signature['inputs'])}, outputs {sorted(signature['outputs'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
