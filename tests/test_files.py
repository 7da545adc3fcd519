import os
import stat

import pandas as pd
import pytest

from aed_tf.files import write_csv, write_json


def test_atomic_files_follow_the_umask(tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = write_csv(pd.DataFrame({"a": [1]}), tmp_path / "table.csv")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = write_csv(pd.DataFrame({"a": [1]}), tmp_path / "out" / "table.csv")

    class Unwritable(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_csv(Unwritable({"a": [2]}), path)
    assert path.read_text() == "a\n1\n"
    assert [p.name for p in path.parent.iterdir()] == ["table.csv"]


def test_write_json_writes_paths_and_numpy_scalars_as_text(tmp_path):
    import json

    import numpy as np

    path = write_json(tmp_path / "a" / "b.json", {"path": tmp_path, "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"path": str(tmp_path), "n": "3"}


def test_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from aed_tf.files import remove_stale_temporaries

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()  # a process that has exited
    stale = tmp_path / f".tmp-{gone}-config.json"
    stale.write_text("{")
    stale_dir = tmp_path / f".tmp-{gone}-savedmodel"
    stale_dir.mkdir()
    (stale_dir / "saved_model.pb").write_bytes(b"")
    live = tmp_path / f".tmp-{os.getpid()}-history.csv"
    live.write_text("")
    kept = tmp_path / "config.json"
    kept.write_text("{}")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([stale, stale_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, kept.name])


def test_a_failed_write_on_a_read_only_folder_keeps_its_own_error(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from aed_tf.files import write_text

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x.json"))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)  # the cleanup fails the same way
    with pytest.raises(OSError) as raised:
        write_text(tmp_path / "x.json", "{}")
    assert raised.value.errno == errno.EROFS and raised.value.__context__ is None
