"""TensorFlow without its start-up noise.

Importing TensorFlow and finding its devices prints lines such as "oneDNN custom operations are
on", "Could not find cuda drivers" and "failed call to cuInit" from C++, to the process's standard
error, before absl logging is set up: TF_CPP_MIN_LOG_LEVEL does not reach them. `import_quietly`
does both steps with file descriptor 2 pointed at /dev/null, so a command's console holds its own
output. ``AED_TF_VERBOSE=1`` (or ``aed-tf --verbose``) leaves them alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

VERBOSE_ENV = "AED_TF_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def import_quietly() -> None:
    """Imports TensorFlow and lists its GPUs with the C++ start-up lines silenced (unless
    verbose); later imports are then silent, and errors still reach standard error."""
    if verbose() or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # where "failed call to cuInit" is printed


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block (unless verbose): for native
    libraries that print to it, such as LiteRT's "Created TensorFlow Lite XNNPACK delegate"."""
    if verbose():
        yield
        return
    with _stderr_silenced():
        yield


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no standard error at all (2>&-): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
