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
