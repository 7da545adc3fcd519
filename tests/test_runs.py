"""The run record: one writer (`write_record`), one reader (`Run`), and the record of a run that
an earlier version wrote still loads."""

from pathlib import Path

import numpy as np
import pytest

from aed_tf.config import Config, FrontEndConfig
from aed_tf.errors import UserError
from aed_tf.runs import CONFIG_FILE, Run, environment, latest_run, write_record

# config.json and training_statistics.json of a per-speaker audiocnn run written by aed-tf at
# commit 233a5c6, before the serving package and the record's writer moved here (no model files).
OLD_RUN = Path(__file__).parent / "fixtures" / "run-0.1"


def test_a_record_written_by_the_earlier_version_still_loads():
    run = Run.load(OLD_RUN)
    assert run.record["git_commit"].startswith("233a5c6")
    assert run.config.train.backbone == "audiocnn" and run.config.data.protocol == "cv"
    assert run.frontend == FrontEndConfig(normalization="speaker") and run.backbone == "audiocnn"
    assert len(run.classes) == 7 and run.split["protocol"] == "cv" and run.split["speaker_independent"]
    assert {"tensorflow", "keras", "aed_tf"} <= set(run.versions)
    assert run.training_statistics().shape == (2, 128)
    assert run.status == "finished" and not run.finished  # the fixture has no serving.keras
    with pytest.raises(UserError, match="no finished run"):
        latest_run(OLD_RUN.parent)


def test_the_writer_writes_what_the_reader_reads(tmp_path):
    config = Config().replace(backbone="audiocnn", weights="none", normalization="speaker", seed=3)
    split = {"protocol": "cv", "speaker_independent": True, "description": "…", "clips": {"train": 5}}
    write_record(tmp_path, config.replace(resume=True), "training", ("a", "b"), 128, split, {"gpus": []})
    run = Run.load(tmp_path)
    assert run.config == config  # resume is never recorded
    assert (run.status, run.classes, run.frontend, run.split) == (
        "training",
        ("a", "b"),
        config.frontend,
        split,
    )
    assert run.versions == {**environment()["versions"]}
    assert run.record["hardware"]["cpus"] >= 1 and run.record["hardware"]["gpus"] == []
    assert run.record["seed"] == 3 and run.record["weights"].startswith("from scratch")


def test_a_folder_that_is_not_a_run_is_refused_with_the_reason(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        Run.load(tmp_path / "missing")
    with pytest.raises(UserError, match=f"not a run folder \\(no {CONFIG_FILE}\\)"):
        Run.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(UserError, match="unreadable run record"):
        Run.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="not a run record"):
        Run.load(tmp_path)
    assert np.isfinite(Run.load(OLD_RUN).training_statistics()).all()
