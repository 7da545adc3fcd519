"""The run folder: what `aed-tf train` writes, and what evaluation, serving and the reports read.

    saved_models/<run_id>/
        config.json               the run record (`Run`): the config, status, classes, front end,
                                  split, versions, hardware
        classifier.keras          log-mel features -> probabilities (evaluation)
        serving.keras             waveform -> probabilities (recognizer, exports, web demo)
        training_statistics.json  per-speaker normalisation: the training clips' statistics
        metrics.json, history.csv, split.csv, tensorboard/

This module is light (no TensorFlow, no training code), so that serving depends on the folder's
layout and record, never on the code that wrote them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aed_tf.config import Config, FrontEndConfig
from aed_tf.errors import UserError

CONFIG_FILE = "config.json"
CLASSIFIER_FILE = "classifier.keras"
SERVING_FILE = "serving.keras"
# Per-speaker normalisation: the band means and deviations over every training clip, for a clip
# whose speaker has no other audio.
TRAINING_STATISTICS_FILE = "training_statistics.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.csv"
TENSORBOARD_DIR = "tensorboard"
FINISHED = "finished"


@dataclass(frozen=True)
class Run:
    """A run folder and its record (config.json as written, in `record`)."""

    path: Path
    record: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """The run in `path`; a UserError when there is no such folder or no readable record."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path}: no such run folder")
        record_file = path / CONFIG_FILE
        if not record_file.is_file():
            raise UserError(f"{path}: not a run folder (no {CONFIG_FILE})")
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{record_file}: unreadable run record ({error})") from None
        if not isinstance(record, dict):
            raise UserError(f"{record_file}: not a run record (a JSON object)")
        return cls(path, record)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str | None:
        """ "training", "finished" or "failed: <why>"."""
        return self.record.get("status")

    @property
    def finished(self) -> bool:
        return self.status == FINISHED and (self.path / SERVING_FILE).is_file()

    @property
    def config(self) -> Config:
        return Config.from_dict(self.record["config"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.record["classes"])

    @property
    def frontend(self) -> FrontEndConfig:
        """The front end the run was trained with (fields added since take their defaults)."""
        return FrontEndConfig(**self.record["frontend"])

    @property
    def backbone(self) -> str | None:
        return self.record.get("config", {}).get("train", {}).get("backbone")

    @property
    def split(self) -> dict[str, Any]:
        """protocol, speaker_independent, description and clips per partition."""
        return self.record["split"]

    def training_statistics(self) -> np.ndarray | None:
        """[2, n_mels] band means and deviations of the training clips, for a run that normalises
        per speaker; None otherwise."""
        path = self.path / TRAINING_STATISTICS_FILE
        if self.frontend.normalization != "speaker":
            return None
        if not path.is_file():
            raise UserError(f"{self.path}: a per-speaker run without its {TRAINING_STATISTICS_FILE}")
        pooled = json.loads(path.read_text())
        return np.array([pooled["mean"], pooled["deviation"]], np.float32)

    def metrics(self) -> dict[str, Any]:
        """metrics.json ({} before the run has finished)."""
        path = self.path / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}


def latest_run(output_dir: str | Path = "saved_models", backbone: str | None = None) -> Path:
    """The most recently written finished run in `output_dir` (of `backbone` when given)."""
    runs = []
    for record_file in Path(output_dir).glob(f"*/{CONFIG_FILE}"):
        try:
            run = Run.load(record_file.parent)
        except UserError:
            continue
        if run.finished and backbone in (None, run.backbone):
            runs.append(run.path)
    if not runs:
        which = f"{backbone} run" if backbone else "run"
        raise UserError(f"no finished {which} in {output_dir}/: train one (aed-tf train) or pass --run-dir")
    return max(runs, key=lambda run: (run / SERVING_FILE).stat().st_mtime)
