"""The arena a TFLite Micro model needs, measured with its interpreter."""

import os
import re
import sys
import tempfile

import numpy as np

from keras_spela_device.tflite_file import read_model_structure


def measure_micro_arena(data, arena_size=64 * 1024 * 1024, resolution=256):
    """The smallest arena, in bytes, in which a TFLite Micro model runs, or
    None without tflite-micro.

    Runs the interpreter once on zeros with labels of -1 (no update) and
    reads the total of its allocation record; memory planning needs some
    temporary bytes beyond that total, so the size is then searched (to
    `resolution` bytes) for the smallest arena that allocates and runs.
    """
    try:
        from tflite_micro import runtime as micro_runtime
    except ImportError:
        return None

    inputs = len(read_model_structure(data)["subgraphs"][0]["inputs"])

    def run(size):
        interpreter = micro_runtime.Interpreter.from_bytes(data, arena_size=size)
        for index in range(inputs):
            detail = interpreter.get_input_details(index)
            fill = -1 if np.issubdtype(detail["dtype"], np.integer) else 0
            interpreter.set_input(np.full(detail["shape"], fill, detail["dtype"]), index)
        interpreter.invoke()
        return interpreter

    def runs(size):
        try:
            log = captured_output(lambda: run(size))
        except RuntimeError:
            return False
        # The memory planner can report running out of its own scratch
        # space ("Too many buffers") and still go on: not a usable size.
        return "Too many buffers" not in log

    report = captured_output(run(arena_size).print_allocations)
    match = re.search(r"Arena allocation total (\d+) bytes", report)
    if not match:
        return None
    low = int(match.group(1)) - 1  # does not run (or is the floor)
    high = low + 1
    while not runs(high):
        low, high = high, 2 * high
    while high - low > resolution:
        middle = (low + high) // 2
        low, high = (low, middle) if runs(middle) else (middle, high)
    return high


def captured_output(function):
    """Runs `function` and returns what it printed on the C-level stdout and
    stderr (TFLite Micro's allocation report)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            function()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
        capture.seek(0)
        return capture.read().decode(errors="replace")
