"""Operator order for a small TFLite Micro arena.

TFLite Micro plans its arena from tensor lifetimes in operator order, and its
READ_VARIABLE copies the whole variable into a new tensor. The TFLite
converter places every READ_VARIABLE at the top of the graph, merges the
reads of one variable and computes values long before they are assigned, so
copies of every weight live through the step. `schedule_for_micro` gives
every user of a read its own READ_VARIABLE and then orders the operators on
demand: each ASSIGN_VARIABLE (and each subgraph output), in the converter's
order, is preceded by whatever it still needs, depth first. Data
dependencies and the order of the reads and writes of each variable are
kept, so every operator sees the values it saw before.
"""

import copy

from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

_OPS = schema.BuiltinOperator


def _builtin_code(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def schedule_for_micro(model_bytes, subgraph_index=0):
    """Reorders a subgraph's operators for a small TFLite Micro arena.

    Args:
        model_bytes: a converted `.tflite` model.
        subgraph_index: the subgraph to reschedule.

    Returns:
        The rescheduled model, as bytes.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    _split_variable_reads(model, model.subgraphs[subgraph_index])
    _order_on_demand(model, model.subgraphs[subgraph_index])
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _variables(model, ops):
    """The variable (VAR_HANDLE container and shared name) behind each
    resource tensor."""
    variable_of = {}
    for op in ops:
        if _builtin_code(model, op) == _OPS.VAR_HANDLE:
            options = op.builtinOptions
            variable_of[op.outputs[0]] = (options.container, options.sharedName)
    return variable_of


def _order_on_demand(model, subgraph):
    ops = list(subgraph.operators)
    codes = [_builtin_code(model, op) for op in ops]
    variable_of = _variables(model, ops)
    producer = {t: i for i, op in enumerate(ops) for t in op.outputs}
    needs = [{producer[t] for t in op.inputs if t >= 0 and t in producer} for op in ops]
    # Keep each variable's reads and writes in order.
    last_write, reads_since = {}, {}
    for i, (op, code) in enumerate(zip(ops, codes)):
        if code not in (_OPS.READ_VARIABLE, _OPS.ASSIGN_VARIABLE):
            continue
        variable = variable_of.get(op.inputs[0])
        extra = [last_write[variable]] if variable in last_write else []
        if code == _OPS.READ_VARIABLE:
            reads_since.setdefault(variable, []).append(i)
        else:
            extra += reads_since.pop(variable, [])
            last_write[variable] = i
        needs[i] |= set(extra)
    # Depth first, variable reads last (a read is made just before its
    # user), and of an operator's other inputs the one with the most work
    # behind it first, so that the smaller results wait for it, not it for
    # them (Sethi-Ullman's order).
    work = _ancestor_counts(needs)
    needs = [sorted(n, key=lambda c: (codes[c] == _OPS.READ_VARIABLE, -work[c], c)) for n in needs]

    outputs = set(subgraph.outputs)
    first = [i for i, c in enumerate(codes) if c in (_OPS.CALL_ONCE, _OPS.VAR_HANDLE)]
    anchors = [
        i
        for i, (op, code) in enumerate(zip(ops, codes))
        if code == _OPS.ASSIGN_VARIABLE or outputs.intersection(op.outputs)
    ]
    order, emitted = [], set()
    for root in first + anchors + list(range(len(ops))):
        stack = [(root, iter(needs[root]))]
        if root in emitted:
            continue
        while stack:
            node, pending = stack[-1]
            child = next((c for c in pending if c not in emitted), None)
            if child is None:
                stack.pop()
                if node not in emitted:
                    emitted.add(node)
                    order.append(node)
            else:
                stack.append((child, iter(needs[child])))
    subgraph.operators = [ops[i] for i in order]


def _ancestor_counts(needs):
    """How many operators each operator depends on, directly or not."""
    ancestors = [None] * len(needs)
    for i in range(len(needs)):  # the converter's order is topological
        found = set()
        for c in needs[i]:
            found.add(c)
            found |= ancestors[c] if ancestors[c] is not None else set()
        ancestors[i] = found
    return [len(a) for a in ancestors]


def _split_variable_reads(model, subgraph):
    """Gives every user of a READ_VARIABLE its own read, right before it,
    unless the variable is written in between (that user keeps the original
    read, as does a subgraph output)."""
    ops = list(subgraph.operators)
    codes = [_builtin_code(model, op) for op in ops]
    variable_of = _variables(model, ops)
    writes = {}
    for position, (op, code) in enumerate(zip(ops, codes)):
        if code == _OPS.ASSIGN_VARIABLE and op.inputs[0] in variable_of:
            writes.setdefault(variable_of[op.inputs[0]], []).append(position)
    users = {}
    for position, op in enumerate(ops):
        for tensor in set(op.inputs):
            users.setdefault(tensor, []).append(position)

    subgraph_outputs = set(subgraph.outputs)
    inserted = {}  # position -> reads to run just before it
    dropped = set()
    for position, (op, code) in enumerate(zip(ops, codes)):
        if code != _OPS.READ_VARIABLE or op.inputs[0] not in variable_of:
            continue
        variable = variable_of[op.inputs[0]]
        value = op.outputs[0]
        movable = [
            user
            for user in users.get(value, [])
            if user > position and not any(position < w < user for w in writes.get(variable, []))
        ]
        keep_original = value in subgraph_outputs or len(movable) < len(users.get(value, []))
        for k, user in enumerate(movable):
            if k == 0 and not keep_original:
                # The original read's tensor moves with it: an orphan tensor
                # would still get arena memory in TFLite Micro.
                new_value = value
            else:
                tensor = copy.copy(subgraph.tensors[value])
                tensor.name = _name(tensor.name) + f"/read_{user}"
                tensor.buffer = len(model.buffers)
                model.buffers.append(schema.BufferT())
                subgraph.tensors.append(tensor)
                new_value = len(subgraph.tensors) - 1
            read = copy.copy(op)
            read.inputs = list(op.inputs)
            read.outputs = [new_value]
            inserted.setdefault(user, []).append(read)
            ops[user].inputs = [new_value if t == value else t for t in ops[user].inputs]
        if not keep_original:
            dropped.add(position)

    scheduled = []
    for position, op in enumerate(ops):
        scheduled.extend(inserted.get(position, []))
        if position not in dropped:
            scheduled.append(op)
    subgraph.operators = scheduled


def _name(name):
    return name.decode() if isinstance(name, bytes) else str(name)
