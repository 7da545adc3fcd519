"""Atomic file writes: every file the package writes goes through here, so a reader, or a run
killed mid-write, never sees half a file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotation: the CLI imports this module and stays light
    import pandas as pd


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Calls ``write(temporary path)`` beside ``path``, then renames the result over ``path``.

    The temporary name keeps the file's name at its end (Keras picks the format from the
    suffix) and the writer's process id (two processes never share one). Not tempfile.mkstemp:
    its files are private (mode 0600) and the rename would keep that.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        # Only left when the write failed; on a read-only or vanished folder the cleanup fails
        # too, and must not hide the error that says why.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Deletes the temporary files that writers killed mid-write (kill -9, power loss) left in
    `folder`: those of `atomic_write` whose process is gone. Returns what was deleted."""
    removed = []
    for tmp in Path(folder).glob(".tmp-*-*"):
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and not _running(int(pid)):
            if tmp.is_dir():  # a SavedModel export
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    """Indented JSON; values JSON does not know (paths, numpy scalars) are written as text."""
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """``df`` without its index."""
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
