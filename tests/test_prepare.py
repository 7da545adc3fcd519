import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from aed_tf import cli
from aed_tf.config import Config
from aed_tf.errors import InputError
from aed_tf.partitions import load_training_data
from aed_tf.prepare import MANIFEST_COLUMNS, OTHER_COPY, UNREADABLE, load_manifest, prepare
from aed_tf.splits import UnknownSpeakerError, load_split
from tests.synth import write_audio

EMOTION_CODES = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}


def make_dataset(root: Path) -> Path:
    """RAVDESS-named tones for 6 actors, CREMA-D and SAVEE clips, and a few bad files."""
    for actor in range(1, 7):
        for i, code in enumerate(EMOTION_CODES):
            name = f"03-01-{code}-01-01-01-{actor:02d}.wav"
            write_audio(
                root / "ravdess" / f"Actor_{actor:02d}" / name,
                seconds=0.5,
                freq=150 + 40 * i + 7 * actor,
                seed=actor * 10 + i,
            )
    write_audio(root / "crema" / "1001_DFA_ANG_XX.wav", seconds=0.4, sample_rate=48000, channels=2)
    write_audio(root / "savee" / "DC" / "a01.flac", seconds=0.4, sample_rate=44100, freq=300)
    # An exact duplicate under another actor's name, and another copy of a clip (same clip id).
    dup = root / "ravdess" / "Actor_01" / "03-01-03-01-01-01-01.wav"
    (root / "ravdess" / "Actor_02" / "03-01-03-01-02-01-02.wav").write_bytes(dup.read_bytes())
    write_audio(root / "zz_copies" / "03-01-01-01-01-01-01.flac", seconds=0.5)
    # Bad files: each must be left out with its reason, and none may stop the rest.
    bad = root / "ravdess" / "Actor_03"
    (bad / "03-01-05-02-01-01-03.wav").write_bytes(b"")
    (bad / "03-01-05-02-02-01-03.wav").write_text("not audio at all")
    sf.write(bad / "03-01-05-02-01-02-03.wav", np.zeros(8000, np.float32), 16000)
    write_audio(bad / "03-01-05-02-02-02-03.wav", seconds=3.0)
    write_audio(bad / "03-01-06-02-02-02-03.wav", seconds=0.01)  # 160 samples: no whole frame
    (root / "notes.txt").write_text("ignored")
    write_audio(root / "unnamed" / "my_recording.wav", seconds=0.3)
    return root


def config_for(tmp_path: Path, data_root: Path, **changes) -> Config:
    return Config().replace(
        data_roots=[str(data_root)],
        prepared_dir=str(tmp_path / "prepared"),
        cache_dir=str(tmp_path / "cache"),
        max_clip_seconds=2.0,
        **changes,
    )


def test_prepare_writes_manifest_summary_and_split(tmp_path):
    config = config_for(tmp_path, make_dataset(tmp_path / "data"))
    prepared = prepare(config, progress=False)

    manifest = load_manifest(tmp_path / "prepared")
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert len(manifest) == 6 * len(EMOTION_CODES) + 1 + 1 + 1  # the grid, the duplicate, CREMA-D, SAVEE
    assert manifest["clip_id"].is_unique
    assert set(manifest["corpus"]) == {"ravdess", "crema-d", "savee"}
    assert manifest.loc[manifest["corpus"] == "ravdess", "speaker"].str.len().eq(2).all()
    crema = manifest.set_index("corpus").loc["crema-d"]
    assert (crema["sample_rate"], crema["channels"], crema["emotion"]) == (48000, 2, "angry")
    assert crema["duration"] == pytest.approx(0.4, abs=1e-3)
    pd.testing.assert_frame_equal(manifest, prepared.manifest.astype(manifest.dtypes.to_dict()))

    reasons = dict(zip(prepared.rejected["path"].map(lambda p: Path(p).name), prepared.rejected["reason"]))
    assert "empty" in reasons["03-01-05-02-01-01-03.wav"]
    assert "not a readable audio file" in reasons["03-01-05-02-02-01-03.wav"]
    assert "silent" in reasons["03-01-05-02-01-02-03.wav"]
    assert "too long" in reasons["03-01-05-02-02-02-03.wav"]
    assert (
        "too short: 160 samples, less than one analysis window (400)" in reasons["03-01-06-02-02-02-03.wav"]
    )
    assert "matches no corpus layout" in reasons["my_recording.wav"]
    assert "another copy of ravdess/03-01-01-01-01-01-01" in reasons["03-01-01-01-01-01-01.flac"]
    kinds = prepared.rejected.set_index(prepared.rejected["path"].map(lambda p: Path(p).name))["kind"]
    assert kinds["03-01-01-01-01-01-01.flac"] == OTHER_COPY
    assert kinds["03-01-05-02-01-02-03.wav"] == UNREADABLE
    assert len(pd.read_csv(tmp_path / "prepared" / "rejected.csv")) == 7

    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["clips"] == len(manifest)
    assert summary["speakers"] == 6 + 1 + 1
    assert summary["exact_duplicates"] == [["ravdess/03-01-03-01-01-01-01", "ravdess/03-01-03-01-02-01-02"]]
    assert summary["clips_per_corpus_emotion"]["ravdess"]["happy"] == 7
    assert summary["split"]["speaker_independent"] is True

    split = load_split(prepared.split_path, manifest)
    assert set(split["clip_id"]) == set(manifest["clip_id"])
    assert prepared.folds_path.is_file()


def test_data_whose_every_file_is_rejected_stops_training_with_the_reason(tmp_path):
    actor = tmp_path / "data" / "ravdess" / "Actor_01"
    actor.mkdir(parents=True)
    sf.write(actor / "03-01-05-01-01-01-01.wav", np.zeros(8000, np.float32), 16000)
    config = config_for(tmp_path, tmp_path / "data")
    with pytest.raises(
        InputError, match=r"no usable clips in .*data: every file was rejected; .*rejected.csv says why"
    ):
        load_training_data(config, progress=False)
    assert "silent" in pd.read_csv(tmp_path / "prepared" / "rejected.csv")["reason"].iloc[0]


def test_fewer_speakers_than_folds_still_prepare_a_split_without_a_fold_file(tmp_path, caplog):
    # SAVEE alone: 4 speakers, fewer than the 5 folds.
    for i, speaker in enumerate(("DC", "JE", "JK", "KL")):
        for j, code in enumerate(("a", "n", "sa", "h")):
            write_audio(
                tmp_path / "savee" / f"{speaker}_{code}01.wav", seconds=0.3, freq=150 + 30 * j + 7 * i
            )
    with caplog.at_level("WARNING", logger="aed_tf.prepare"):
        prepared = prepare(config_for(tmp_path, tmp_path / "savee"), progress=False)
    assert prepared.folds_path is None and "no fold file written: 5 folds need" in caplog.text
    split = load_split(prepared.split_path, prepared.manifest)
    assert set(split["partition"]) == {"train", "val", "test"}


def test_second_run_decodes_nothing_and_gives_the_same_files(tmp_path):
    config = config_for(tmp_path, make_dataset(tmp_path / "data"))
    first = prepare(config, progress=False)
    files = {p: p.read_bytes() for p in (tmp_path / "prepared").rglob("*.csv")}
    second = prepare(config, progress=False)
    assert first.summary["decoded"] > 0
    assert second.summary["decoded"] == 0
    assert {p: p.read_bytes() for p in (tmp_path / "prepared").rglob("*.csv")} == files


def test_unknown_speakers_refuse_the_split_but_keep_the_manifest(tmp_path):
    data = tmp_path / "data"
    for i, folder in enumerate(["Angry", "Sad", "Suprised"]):
        write_audio(data / folder / f"clip{i}.wav", seconds=0.3, freq=200 + 50 * i)
    write_audio(data / "Sad" / "03-01-04-01-01-01-09.wav", seconds=0.3)
    with pytest.raises(UnknownSpeakerError, match="drop.unknown.speakers"):
        prepare(config_for(tmp_path, data), progress=False)
    manifest = load_manifest(tmp_path / "prepared")
    assert len(manifest) == 4 and (manifest["speaker"] == "").sum() == 3


def test_prepare_hands_back_the_decoded_clips_of_the_manifest(tmp_path):
    config = config_for(tmp_path, make_dataset(tmp_path / "data"))
    prepared = prepare(config, progress=False)
    assert list(prepared.waveforms) == list(prepared.manifest["clip_id"])
    waveforms = list(prepared.waveforms.values())
    assert all(w.dtype == np.float32 and w.ndim == 1 for w in waveforms)
    durations = prepared.manifest["duration"].to_numpy()
    assert np.allclose([len(w) / 16000 for w in waveforms], durations, atol=1e-3)


@pytest.mark.shared_data
def test_prepare_on_the_shared_datasets(shared_datasets, shared_cache, tmp_path):
    config = Config().replace(
        data_roots=[str(shared_datasets)],
        prepared_dir=str(tmp_path / "prepared"),
        cache_dir=str(shared_cache),
    )
    prepared = prepare(config, progress=False)
    summary = prepared.summary
    counts = prepared.manifest.groupby("corpus").size().to_dict()
    assert counts == {"ravdess": 1200, "tess": 2798}
    assert summary["speakers"] == 22
    assert summary["exact_duplicates"] == [["ravdess/03-01-03-01-02-01-07", "ravdess/03-01-03-01-02-02-07"]]
    assert (prepared.rejected["kind"] == OTHER_COPY).sum() == 44
    assert (prepared.rejected["kind"] == UNREADABLE).sum() == 0
    assert 2.7 < summary["hours"] < 3.0


def test_cli_prepare_prints_the_summary(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    code = cli.main(
        [
            "prepare",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--max-clip-seconds",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "clips per corpus x emotion" in out and "exact duplicates: 1 group" in out
    assert "silent" in out and (tmp_path / "out" / "manifest.csv").is_file()


def test_cli_without_data_says_where_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prepare", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "no data found" in err and "data/" in err
    assert all(name in err for name in ("ravdess", "tess", "crema-d", "savee"))


def test_cli_rejects_a_bad_parameter_without_a_traceback(tmp_path, capsys):
    assert cli.main(["prepare", str(tmp_path), "--val-fraction", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "val_fraction" in err and "Traceback" not in err


def test_a_folder_that_cannot_be_read_is_listed_and_the_rest_goes_on(tmp_path, monkeypatch):
    """(Permissions cannot be taken from root, which runs the tests: the folder listing fails
    instead, as it does for an unreadable folder.)"""
    import os

    root = make_dataset(tmp_path / "data")
    locked = root / "ravdess" / "Actor_04"
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    prepared = prepare(
        Config().replace(
            data_roots=[str(root)], prepared_dir=str(tmp_path / "prepared"), cache_dir=str(tmp_path / "cache")
        ),
        progress=False,
    )
    row = prepared.rejected[prepared.rejected["path"] == str(locked)].iloc[0]
    assert (row["kind"], row["reason"]) == (UNREADABLE, "cannot read the folder (Permission denied)")
    speakers = set(prepared.manifest.loc[prepared.manifest["corpus"] == "ravdess", "speaker"])
    assert "04" not in speakers and {"01", "02", "05", "06"} <= speakers


def test_speaker_keys_name_speakers_apart_across_corpora_and_keep_unknown_ones_apart():
    from aed_tf.prepare import speaker_keys

    manifest = pd.DataFrame(
        {
            "corpus": ["ravdess", "ased", "ased", "csv", "csv"],
            "speaker": ["07", "07", "07", "", ""],
            "clip_id": ["r1", "a1", "a2", "c1", "c2"],
        }
    )
    assert list(speaker_keys(manifest)) == ["ravdess:07", "ased:07", "ased:07", "csv:?c1", "csv:?c2"]
