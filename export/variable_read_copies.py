"""Makes an `export_tflite` model's `get_weights` readable through LiteRT's
CompiledModel API. Imports no TensorFlow (flatbuffers and ai-edge-litert's
generated TFLite schema only).

CompiledModel binds every output of a signature to a caller's TensorBuffer as
a TFLite "custom allocation", which TFLite allows for arena tensors only. An
output that is the result of a `READ_VARIABLE` op is a dynamic tensor (the op
sizes it from the variable at run time), so LiteRT 2.3's `run_by_index` fails
on `get_weights` from its second call on ("Failed to set custom allocation
for output tensor"), and the first call leaves some outputs unwritten
(measured: `adam_beta_1_power` read 1.8e34 instead of 1.0). `copy_variable_reads`
rewrites the flatbuffer so that each such output is a copy,
`SELECT_V2(true, v, v)`, an arena tensor with the same values bit for bit
(a builtin op that the XNNPACK delegate leaves to the reference kernel:
`MAXIMUM(v, v)` crashed XNNPACK, which does not expect dynamic inputs). The
train / infer / set_weights graphs are not touched, and a model without such
outputs comes back unchanged.

As a script (for an app that loads the file into Kotlin's CompiledModel):

    python export/variable_read_copies.py spela.tflite spela_compiled.tflite
"""

import sys

import numpy as np

# Names of the output tensors this module adds (their index order is kept).
COPY_SUFFIX = "/compiled_model_copy"
TRUE_TENSOR_NAME = "keras_spela/compiled_model_true"


def _schema():
    """ai-edge-litert's generated TFLite schema and flatbuffers (imported on
    first use: the Interpreter runtimes do not need them)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated

    return flatbuffers, schema_py_generated


def _builtin(model, operator):
    code = model.operatorCodes[operator.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _operator_code_index(model, schema, builtin):
    """The index of `builtin` in the model's operator codes (added if absent)."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # 127: "placeholder for the extended codes"
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _shape(vector):
    # The object API gives an absent vector as 0, a present one as an array.
    return [] if vector is None or isinstance(vector, int) else [int(d) for d in vector]


def variable_read_outputs(model, schema):
    """`{signature name: [output tensor indices that are READ_VARIABLE results]}`
    of an unpacked `ModelT` (signatures without such outputs are left out)."""
    found = {}
    for signature in model.signatureDefs or []:
        graph = model.subgraphs[signature.subgraphIndex]
        reads = {
            int(op.outputs[0])
            for op in graph.operators or []
            if _builtin(model, op) == schema.BuiltinOperator.READ_VARIABLE
        }
        outputs = sorted({int(t) for t in _shape(graph.outputs)} & reads)
        if outputs:
            found[signature.signatureKey.decode()] = outputs
    return found


def copy_variable_reads(data):
    """The model with each signature output that is a `READ_VARIABLE` result
    replaced by a `SELECT_V2(true, v, v)` copy of it.

    Args:
        data: the bytes of a `.tflite` model (an `export_tflite` model:
            `get_weights` reads the variables straight into its outputs).

    Returns:
        `(new bytes, number of outputs copied)`; `(data, 0)` when no output
        needed a copy.

    Example:

    ```python
    data, copied = copy_variable_reads(open("spela.tflite", "rb").read())
    model = CompiledModel.from_buffer(data)  # get_weights now runs every time
    ```
    """
    flatbuffers, schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    targets = variable_read_outputs(model, schema)
    if not targets:
        return data, 0
    select = _operator_code_index(model, schema, schema.BuiltinOperator.SELECT_V2)
    true_buffer = schema.BufferT()
    true_buffer.data = np.ones(1, np.uint8)
    model.buffers.append(true_buffer)
    copied = 0
    for signature in model.signatureDefs:
        outputs = targets.get(signature.signatureKey.decode())
        if not outputs:
            continue
        graph = model.subgraphs[signature.subgraphIndex]
        condition = schema.TensorT()
        condition.shape, condition.type = [], schema.TensorType.BOOL
        condition.buffer, condition.name = len(model.buffers) - 1, TRUE_TENSOR_NAME.encode()
        graph.tensors.append(condition)
        condition_index = len(graph.tensors) - 1
        copies = {}
        for index in outputs:
            source = graph.tensors[index]
            copy = schema.TensorT()
            copy.shape, copy.type, copy.hasRank = _shape(source.shape), source.type, source.hasRank
            if not isinstance(source.shapeSignature, (int, type(None))):
                copy.shapeSignature = _shape(source.shapeSignature)
            copy.name = (source.name or b"") + COPY_SUFFIX.encode()
            graph.tensors.append(copy)
            copies[index] = len(graph.tensors) - 1
            operator = schema.OperatorT()
            operator.opcodeIndex = select
            operator.inputs, operator.outputs = [condition_index, index, index], [copies[index]]
            operator.builtinOptionsType = schema.BuiltinOptions.SelectV2Options
            operator.builtinOptions = schema.SelectV2OptionsT()
            graph.operators.append(operator)
        graph.outputs = [copies.get(t, t) for t in _shape(graph.outputs)]
        for output in signature.outputs:
            output.tensorIndex = copies.get(output.tensorIndex, output.tensorIndex)
        copied += len(copies)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), copied


def _main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: variable_read_copies.py INPUT.tflite OUTPUT.tflite", file=sys.stderr)
        return 2
    source, target = argv
    try:
        with open(source, "rb") as f:
            data = f.read()
        if data[4:8] != b"TFL3":
            raise ValueError("not a .tflite model (no TFL3 file identifier at bytes 4..8)")
        new, copied = copy_variable_reads(data)
        with open(target, "wb") as f:
            f.write(new)
    except ImportError as error:
        print(
            f"variable_read_copies.py: error: needs ai-edge-litert (pip install ai-edge-litert): {error}",
            file=sys.stderr,
        )
        return 1
    except Exception as error:  # a file that is no TFLite model: one line
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"variable_read_copies.py: error: {source}: {message}", file=sys.stderr)
        return 1
    print(f"{target}: {copied} variable read{'s' if copied != 1 else ''} copied")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
