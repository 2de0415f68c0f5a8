"""Reads the operators of a .tflite flatbuffer, without TensorFlow.

Uses the schema module shipped with ai-edge-litert, so it also runs on a
device. `check_builtin_only` is what the exporter and the tests use to prove
that a model needs no Flex (SELECT_TF_OPS) and no custom operator.
"""

import collections


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - TensorFlow ships the same module
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def read_operators(model_bytes):
    """Operators used by every subgraph of a TFLite model.

    Args:
        model_bytes: the content of a .tflite file.

    Returns:
        A `collections.Counter` of operator names: builtin names such as
        `"FULLY_CONNECTED"`, and `"CUSTOM:<code>"` for custom operators
        (Flex ops appear as `"CUSTOM:FlexReluGrad"` and the like).
    """
    schema = _schema()
    model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            custom = custom.decode() if isinstance(custom, bytes) else str(custom)
            codes.append(f"CUSTOM:{custom}")
        else:
            codes.append(names.get(builtin, f"BUILTIN_{builtin}"))
    counts = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            counts[codes[subgraph.Operators(o).OpcodeIndex()]] += 1
    return counts


def count_resource_variables(model_bytes):
    """The number of distinct resource variables (VAR_HANDLE shared names) of
    a TFLite model: what TFLite Micro's `MicroResourceVariables::Create`
    needs. Reads the operators only, not the buffers."""
    schema = _schema()
    model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
    var_handle = [
        max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.VAR_HANDLE
        for code in (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))
    ]
    shared_names = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(o)
            if var_handle[operator.OpcodeIndex()]:
                options = schema.VarHandleOptions()
                table = operator.BuiltinOptions()
                options.Init(table.Bytes, table.Pos)
                shared_names.add(options.SharedName())
    return len(shared_names)


def non_builtin_operators(model_bytes):
    """Names of the custom (including Flex) operators a model uses."""
    return sorted(name for name in read_operators(model_bytes) if name.startswith("CUSTOM:"))


def check_builtin_only(model_bytes, what="model"):
    """Raises ValueError if the model uses any non-builtin operator.

    Returns:
        The `Counter` of operators, when all are builtins.
    """
    operators = read_operators(model_bytes)
    custom = sorted(name for name in operators if name.startswith("CUSTOM:"))
    if custom:
        raise ValueError(
            f"The exported {what} uses non-builtin operators {custom}; it would "
            "need the Flex delegate, which tflite-runtime, TFLite Micro and "
            "GPU/NNAPI delegates lack."
        )
    return operators
