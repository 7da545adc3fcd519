"""Data preparation: recordings in their corpora's layouts -> a manifest, a summary and splits.

Idempotent in the SpeechBrain ``*_prepare.py`` sense: it can be run again at any time and gives
the same files; decoded audio comes from the content-keyed cache, so a second run decodes nothing.
Outputs under ``prepared_dir``:

- ``manifest.csv``: one row per usable clip (see ``MANIFEST_COLUMNS``);
- ``rejected.csv``: every file left out, with the reason (unreadable, silent, too long, not a
  corpus file, another copy of a clip already found);
- ``summary.json``: the figures ``prepare`` prints;
- ``splits/``: the split of the configured protocol and the speaker-independent folds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from aed_tf import splits
from aed_tf.audio import AudioCache, AudioError, DecodedAudio, decode_many, is_silent
from aed_tf.config import Config
from aed_tf.corpora import LabelledFile, resolve_data_roots, scan
from aed_tf.errors import InputError
from aed_tf.files import write_csv, write_json
from aed_tf.labels import MANIFEST_EMOTIONS

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "clip_id",
    "path",
    "corpus",
    "speaker",
    "gender",
    "emotion",
    "source_label",
    "intensity",
    "duration",
    "sample_rate",
    "channels",
    "file_hash",
    "audio_hash",
)
# Read back as strings: speakers such as "07" and "1001" are ids, not numbers.
_STRING_COLUMNS = {c: str for c in MANIFEST_COLUMNS if c not in ("duration", "sample_rate", "channels")}

# Why a file is left out: only the last kind is a problem with the file itself.
OTHER_COPY = "other copies of clips already found"
NOT_A_CORPUS_FILE = "names that match no corpus layout"
UNREADABLE = "unreadable or unusable"


@dataclass
class Prepared:
    """What `prepare` produced."""

    manifest: pd.DataFrame
    rejected: pd.DataFrame
    summary: dict
    manifest_path: Path
    split_path: Path | None
    folds_path: Path | None
    waveforms: dict[str, np.ndarray]  # clip_id -> decoded samples, already in memory: no second load


def manifest_path(prepared_dir: str | Path) -> Path:
    return Path(prepared_dir) / "manifest.csv"


def prepare(config: Config, progress: bool = True) -> Prepared:
    """Scans the data roots, decodes every clip once (cached) and writes manifest, summary and splits.

    The manifest and the list of rejected files are written before the split is made, so a split
    that cannot be made (unknown speakers, say) loses nothing that was already done.
    """
    started = time.perf_counter()
    data = config.data
    roots = resolve_data_roots(data.data_roots)
    files, skipped = scan(roots)
    cache = AudioCache(data.cache_dir or None, sample_rate=config.frontend.sample_rate)
    decoded = decode_many(
        [f.path for f in files],
        cache,
        workers=data.workers,
        max_seconds=data.max_clip_seconds,
        progress=progress,
    )

    rows, waveforms = [], {}
    window = config.frontend.window_length
    rejected = [_rejection(s.path, _skip_kind(s.reason), s.reason) for s in skipped]
    for labelled, result in zip(files, decoded):
        if isinstance(result, AudioError):
            rejected.append(_rejection(labelled.path, UNREADABLE, result.reason))
        elif is_silent(result.samples):
            rejected.append(_rejection(labelled.path, UNREADABLE, "silent: no sample above -60 dBFS"))
        elif len(result.samples) < window:  # no whole frame: nothing to learn or normalise by
            reason = f"too short: {len(result.samples)} samples, less than one analysis window ({window})"
            rejected.append(_rejection(labelled.path, UNREADABLE, reason))
        else:
            rows.append(_manifest_row(labelled, result))
            waveforms[labelled.clip_id] = result.samples
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    rejected_df = pd.DataFrame(rejected, columns=["path", "kind", "reason"])

    out = Path(data.prepared_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(manifest, manifest_path(out))
    write_csv(rejected_df, out / "rejected.csv")
    summary = summarize(manifest, rejected_df, roots, time.perf_counter() - started)
    summary["decoded"] = cache.decodes  # 0 on a second run: everything came from the cache
    write_json(out / "summary.json", summary)

    split_file = folds_file = None
    if len(manifest):
        split = splits.make_split(
            manifest,
            data.protocol,
            seed=data.seed,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            drop_unknown_speakers=data.drop_unknown_speakers,
            fold=data.fold,
        )
        split_file = write_csv(split, splits.split_path(out, data.protocol, data.seed, data.fold))
        if splits.PROTOCOLS[data.protocol].speaker_independent:
            # The k folds are for the user's own cross-validation; the split above is what
            # training needs, so data of fewer speakers than folds (SAVEE alone) still trains.
            try:
                folds = splits.make_folds(
                    manifest, data.folds, seed=data.seed, drop_unknown_speakers=data.drop_unknown_speakers
                )
            except splits.LeakageError:
                raise
            except InputError as error:
                log.warning("no fold file written: %s", error)
            else:
                folds_file = write_csv(folds, splits.folds_path(out, data.folds, data.seed))
        summary["split"] = split_summary(manifest, split, data.protocol)
        write_json(out / "summary.json", summary)
    return Prepared(manifest, rejected_df, summary, manifest_path(out), split_file, folds_file, waveforms)


def speaker_keys(manifest: pd.DataFrame) -> np.ndarray:
    """Each clip's speaker, named apart across corpora ("ravdess:07"). A clip whose speaker is
    unknown is a speaker of its own: per-speaker statistics must not pool strangers."""
    known = manifest["speaker"] != ""
    keys = manifest["corpus"] + ":" + manifest["speaker"].where(known, "?" + manifest["clip_id"])
    return keys.to_numpy(dtype=str)


def load_manifest(prepared_dir: str | Path) -> pd.DataFrame:
    path = manifest_path(prepared_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run `aed-tf prepare` first")
    manifest = pd.read_csv(path, dtype=_STRING_COLUMNS, keep_default_na=False)
    missing = set(MANIFEST_COLUMNS) - set(manifest.columns)
    if missing:
        raise InputError(f"{path}: not an aed-tf manifest (missing columns {sorted(missing)})")
    return manifest


def summarize(manifest: pd.DataFrame, rejected: pd.DataFrame, roots: Sequence[Path], seconds: float) -> dict:
    """The figures of a prepared dataset, JSON-able (printed by `format_summary`)."""
    speakers = manifest[["corpus", "speaker"]].drop_duplicates()
    duplicate_groups = [
        sorted(group["clip_id"]) for _, group in manifest.groupby("audio_hash") if len(group) > 1
    ]
    counts = pd.crosstab(manifest["corpus"], manifest["emotion"]) if len(manifest) else pd.DataFrame()
    emotions = [e for e in MANIFEST_EMOTIONS if e in counts.columns]
    return {
        "roots": [str(r) for r in roots],
        "clips": int(len(manifest)),
        "hours": round(float(manifest["duration"].sum()) / 3600, 3),
        "clips_per_corpus_emotion": {
            corpus: {e: int(counts.loc[corpus, e]) for e in emotions} for corpus in counts.index
        },
        "hours_per_corpus": {
            c: round(float(h) / 3600, 3) for c, h in manifest.groupby("corpus")["duration"].sum().items()
        },
        "speakers": int(len(speakers)),
        "speakers_per_corpus": {c: int(n) for c, n in speakers.groupby("corpus").size().items()},
        "unknown_speaker_clips": int((manifest["speaker"] == "").sum()),
        "exact_duplicates": duplicate_groups,
        "rejected": rejected.to_dict(orient="records"),
        "seconds": round(seconds, 1),
    }


def split_summary(manifest: pd.DataFrame, split: pd.DataFrame, protocol: str) -> dict:
    joined = split.merge(manifest[["clip_id", "corpus", "speaker"]], on="clip_id")
    return {
        "protocol": protocol,
        "speaker_independent": splits.PROTOCOLS[protocol].speaker_independent,
        "description": splits.PROTOCOLS[protocol].description,
        "partitions": {
            name: {
                "clips": int(len(part)),
                "speakers": sorted(
                    f"{c}:{s}" for c, s in part[["corpus", "speaker"]].drop_duplicates().values
                ),
            }
            for name, part in joined.groupby("partition")
        },
    }


def format_summary(summary: dict) -> str:
    """The summary as a person reads it at the end of `aed-tf prepare`."""
    lines = [
        f"{summary['clips']} clips, {summary['hours']:.2f} h, {summary['speakers']} speakers "
        f"from {', '.join(summary['roots'])} ({summary['seconds']:.0f} s, "
        f"{summary.get('decoded', 0)} files decoded, the rest from the cache)"
    ]
    table = pd.DataFrame(summary["clips_per_corpus_emotion"]).T.fillna(0).astype(int)
    if len(table):
        table["total"] = table.sum(axis=1)
        table.loc["total"] = table.sum(axis=0)
        lines += ["", "clips per corpus x emotion:", table.to_string()]
    hours = ", ".join(f"{c} {h:.2f} h" for c, h in summary["hours_per_corpus"].items())
    per_corpus = ", ".join(f"{c} {n}" for c, n in summary["speakers_per_corpus"].items())
    lines += ["", f"hours: {hours}", f"speakers: {summary['speakers']} ({per_corpus})"]
    if summary["unknown_speaker_clips"]:
        lines.append(f"clips with an unknown speaker: {summary['unknown_speaker_clips']}")
    dups = summary["exact_duplicates"]
    lines.append(f"exact duplicates: {len(dups)} group(s)")
    lines += [f"  {' = '.join(group)}" for group in dups]
    rejected = summary["rejected"]
    lines.append(f"left out: {len(rejected)} file(s)")
    for kind in (OTHER_COPY, NOT_A_CORPUS_FILE, UNREADABLE):
        of_kind = [r for r in rejected if r["kind"] == kind]
        if of_kind:
            lines.append(f"  {kind}: {len(of_kind)}")
    unreadable = [r for r in rejected if r["kind"] == UNREADABLE]
    lines += [f"    {r['path']}: {r['reason']}" for r in unreadable[:50]]
    if len(unreadable) > 50:
        lines.append(f"    ... and {len(unreadable) - 50} more in rejected.csv")
    if "split" in summary:
        split = summary["split"]
        lines += ["", f"split {split['protocol']}: {split['description']}"]
        for name in splits.PARTITIONS:
            part = split["partitions"].get(name, {"clips": 0, "speakers": []})
            lines.append(f"  {name:5s} {part['clips']:5d} clips, {len(part['speakers'])} speakers")
    return "\n".join(lines)


def _skip_kind(reason: str) -> str:
    if reason.startswith("another copy"):
        return OTHER_COPY
    return UNREADABLE if reason.startswith("cannot read the folder") else NOT_A_CORPUS_FILE


def _rejection(path: Path, kind: str, reason: str) -> dict:
    return {"path": str(path), "kind": kind, "reason": reason}


def _manifest_row(labelled: LabelledFile, audio: DecodedAudio) -> dict:
    row = {k: v for k, v in asdict(labelled).items() if k in MANIFEST_COLUMNS}
    row.update(
        path=str(labelled.path),
        duration=round(audio.duration, 4),
        sample_rate=audio.source_sample_rate,
        channels=audio.channels,
        file_hash=audio.file_hash,
        audio_hash=audio.audio_hash,
    )
    return row
