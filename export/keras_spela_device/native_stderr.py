"""What native (C++) code prints to file descriptor 2, captured.

TensorFlow, LiteRT and TFLite Micro print INFO lines and notices from C++
straight to fd 2 (`INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.`, oneDNN and CUDA notices, ...), where no Python setting reaches them.
"""

import atexit
import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def capture_native_stderr(enabled=True):
    """Captures what native code writes to file descriptor 2 in the block.

    Inside the block fd 2 goes to a temporary file; if the block raises,
    what was captured is written to stderr before the exception propagates,
    otherwise it is dropped. Python's `sys.stderr` (warnings, logging) keeps
    going to the real stderr. Process-wide: output that other threads send
    to fd 2 meanwhile is captured too; if the process crashes inside the
    block (a segfault), what was captured is lost (use `enabled=False`, the
    CLIs' `--verbose`, to see it).

    Args:
        enabled: False runs the block without capturing (`--verbose`).

    Example:

    ```python
    with capture_native_stderr():
        interpreter = Interpreter(model_content=data)
    ```
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2
        yield
        return
    python_stderr, replacement, failed = sys.stderr, None, False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            try:
                if python_stderr.fileno() == 2:
                    replacement = os.fdopen(os.dup(saved), "w", buffering=1)
                    sys.stderr = replacement
            except (OSError, ValueError, AttributeError):
                pass  # sys.stderr is not fd 2 (pytest, a notebook): leave it
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if replacement is not None:
                if sys.stderr is replacement:
                    sys.stderr = python_stderr
                replacement.close()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                captured.seek(0)
                text = captured.read()
                if text:
                    try:
                        os.write(2, text)
                    except OSError:
                        pass


def _drop_native_stderr():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


_dropping_at_exit = []


def drop_native_stderr_at_exit():
    """Sends file descriptor 2 to /dev/null once Python is done with it.

    A runtime that keeps native state until the process ends (LiteRT's
    CompiledModel and its accelerator registry) prints from its C++
    destructors after the interpreter has shut down, where no capture
    reaches. Registers the redirection once; it runs after the program's own
    output, last of the atexit functions registered after it."""
    if not _dropping_at_exit:
        atexit.register(_drop_native_stderr)
        _dropping_at_exit.append(True)
