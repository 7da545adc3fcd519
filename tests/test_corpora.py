"""The corpus readers: labels from real file names, generated layouts, CSV manifests, roots."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from aed_tf.corpora import (
    CORPORA,
    MissingDataError,
    parse_path,
    read_csv_manifest,
    resolve_data_roots,
    scan,
)
from tests.conftest import ASED_DIR, ORIGINALS_DIR, RAVDESS_DIR, TESS_DIR
from tests.synth import write_audio


def touch(path: Path) -> Path:
    """An empty file: the parsers read names only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


# -- real recordings ---------------------------------------------------------------------------


@pytest.mark.shared_data
def test_ravdess_real_files(shared_datasets: Path) -> None:
    files, skipped = scan([RAVDESS_DIR])
    assert len(files) == 1200 and skipped == []
    assert {f.corpus for f in files} == {"ravdess"}
    per_speaker = Counter(f.speaker for f in files)
    assert sorted(per_speaker) == [f"{actor:02d}" for actor in range(1, 21)]
    assert set(per_speaker.values()) == {60}
    emotions = Counter(f.emotion for f in files)
    assert emotions == {"neutral": 80} | {
        e: 160 for e in ("calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
    }
    genders = Counter(gender for _, gender in {(f.speaker, f.gender) for f in files})
    assert genders == {"male": 10, "female": 10}
    by_id = {f.clip_id: f for f in files}
    fearful = by_id["ravdess/03-01-06-02-01-01-07"]
    assert (fearful.emotion, fearful.source_label) == ("fear", "fearful")
    assert fearful.intensity == "strong"
    assert fearful.path == RAVDESS_DIR / "Actor_07" / "03-01-06-02-01-01-07.flac"


@pytest.mark.shared_data
def test_tess_real_files(shared_datasets: Path) -> None:
    files, skipped = scan([TESS_DIR])
    assert len(files) == 2798 and skipped == []
    assert {f.corpus for f in files} == {"tess"}
    assert Counter(f.speaker for f in files) == {"OAF": 1399, "YAF": 1399}
    assert {f.gender for f in files} == {"female"}
    expected = {e: 400 for e in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")}
    expected["angry"] -= 1  # OAF_back_angry is absent from this copy
    expected["sad"] -= 1  # and so is YAF_beg_sad
    assert Counter(f.emotion for f in files) == expected
    by_id = {f.clip_id: f for f in files}
    assert "tess/OAF_back_angry" not in by_id and "tess/YAF_beg_sad" not in by_id
    typo = by_id["tess/OAF_bite_neutral"]
    assert typo.speaker == "OAF" and typo.path.name == "OA_bite_neutral.flac"
    assert by_id["tess/YAF_back_ps"].source_label == "ps"


@pytest.mark.shared_data
def test_whole_shared_root_keeps_one_copy_of_each_clip(shared_datasets: Path) -> None:
    files, skipped = scan([shared_datasets])
    assert Counter(f.corpus for f in files) == {"ravdess": 1200, "tess": 2798}
    assert len({(f.corpus, f.speaker) for f in files}) == 22
    assert len(skipped) == 44
    kept = {f.clip_id: f.path for f in files}
    for copy in skipped:
        assert copy.path.is_relative_to(ORIGINALS_DIR) and copy.path.suffix == ".wav"
        clip_id = parse_path(copy.path).clip_id
        assert copy.reason == f"another copy of {clip_id} (kept {kept[clip_id]})"
        assert kept[clip_id].suffix == ".flac"


# -- RAVDESS ---------------------------------------------------------------------------------

RAVDESS_NAMES = [
    # stem, emotion, source_label, intensity, speaker, gender
    ("03-01-01-01-01-01-01", "neutral", "neutral", "normal", "01", "male"),
    ("03-01-02-02-01-02-02", "calm", "calm", "strong", "02", "female"),
    ("03-01-03-01-02-01-03", "happy", "happy", "normal", "03", "male"),
    ("03-01-04-02-02-02-10", "sad", "sad", "strong", "10", "female"),
    ("03-01-05-01-01-01-11", "angry", "angry", "normal", "11", "male"),
    ("03-01-06-02-01-01-12", "fear", "fearful", "strong", "12", "female"),
    ("03-01-07-01-01-01-23", "disgust", "disgust", "normal", "23", "male"),
    ("03-01-08-02-01-01-24", "surprise", "surprised", "strong", "24", "female"),
    ("01-02-03-01-01-01-05", "happy", "happy", "normal", "05", "male"),  # audio-video, song
    ("02-01-04-01-01-01-06", "sad", "sad", "normal", "06", "female"),  # video-only
]


@pytest.mark.parametrize("stem, emotion, source_label, intensity, speaker, gender", RAVDESS_NAMES)
def test_ravdess_names(
    tmp_path: Path,
    stem: str,
    emotion: str,
    source_label: str,
    intensity: str,
    speaker: str,
    gender: str,
) -> None:
    path = tmp_path / f"Actor_{speaker}" / f"{stem}.wav"
    labelled = parse_path(path)
    assert labelled is not None
    assert (labelled.corpus, labelled.clip_id) == ("ravdess", f"ravdess/{stem}")
    assert labelled.path == path
    assert (labelled.emotion, labelled.source_label, labelled.intensity) == (
        emotion,
        source_label,
        intensity,
    )
    assert (labelled.speaker, labelled.gender) == (speaker, gender)


@pytest.mark.parametrize(
    "stem",
    [
        "03-01-09-01-01-01-01",  # emotion 09
        "03-01-00-01-01-01-01",  # emotion 00
        "03-01-01-01-01-01-00",  # actor 00
        "03-01-01-01-01-01-25",  # actor 25
        "04-01-01-01-01-01-01",  # modality 04
        "03-03-01-01-01-01-01",  # vocal channel 03
        "03-01-01-03-01-01-01",  # intensity 03
        "03-01-01-01-03-01-01",  # statement 03
        "03-01-01-01-01-00-01",  # repetition 00
        "03-01-01-01-01-01",  # six fields
        "03-01-01-01-01-01-01-01",  # eight fields
        "3-01-01-01-01-01-01",  # one digit
    ],
)
def test_invalid_ravdess_codes_are_not_ravdess(tmp_path: Path, stem: str) -> None:
    assert parse_path(tmp_path / "clips" / f"{stem}.wav") is None


# -- CREMA-D ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, emotion",
    [
        ("ANG", "angry"),
        ("DIS", "disgust"),
        ("FEA", "fear"),
        ("HAP", "happy"),
        ("NEU", "neutral"),
        ("SAD", "sad"),
    ],
)
def test_crema_d_emotions(tmp_path: Path, code: str, emotion: str) -> None:
    labelled = parse_path(tmp_path / "AudioWAV" / f"1042_IEO_{code}_HI.wav")
    assert labelled is not None
    assert (labelled.corpus, labelled.clip_id) == ("crema-d", f"crema-d/1042_IEO_{code}_HI")
    assert (labelled.emotion, labelled.source_label) == (emotion, code)
    assert (labelled.speaker, labelled.gender) == ("1042", "")


@pytest.mark.parametrize(
    "stem, speaker, intensity",
    [
        ("1001_DFA_ANG_LO", "1001", "low"),
        ("1091_TIE_SAD_MD", "1091", "medium"),
        ("1050_WSI_NEU_HI", "1050", "high"),
        ("1001_IWW_HAP_XX", "1001", ""),
    ],
)
def test_crema_d_levels_and_actor_bounds(tmp_path: Path, stem: str, speaker: str, intensity: str) -> None:
    labelled = parse_path(tmp_path / f"{stem}.wav")
    assert labelled is not None
    assert (labelled.speaker, labelled.intensity) == (speaker, intensity)


@pytest.mark.parametrize(
    "stem",
    [
        "1000_DFA_ANG_XX",
        "1092_DFA_ANG_XX",
        "1001_DFA_XYZ_XX",
        "1001_DFA_ANG_LX",
        "1001_DF_ANG_XX",
        "1001_dfa_ANG_XX",
        "1001_DFA_ang_XX",
        "101_DFA_ANG_XX",
    ],
)
def test_invalid_crema_d_codes_are_not_crema_d(tmp_path: Path, stem: str) -> None:
    assert parse_path(tmp_path / "AudioWAV" / f"{stem}.wav") is None


def test_crema_d_gender_from_video_demographics(tmp_path: Path) -> None:
    (tmp_path / "CREMA-D").mkdir()
    (tmp_path / "CREMA-D" / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,Caucasian,Not Hispanic\n"
    )
    for actor in ("1001", "1002", "1003"):
        touch(tmp_path / "CREMA-D" / "AudioWAV" / f"{actor}_DFA_ANG_XX.wav")
    files, _ = scan([tmp_path])
    assert {f.speaker: f.gender for f in files} == {"1001": "male", "1002": "female", "1003": ""}


def test_malformed_video_demographics_names_the_file(tmp_path: Path) -> None:
    table = tmp_path / "VideoDemographics.csv"
    table.write_text("Actor,Gender\n1001,Male\n")
    with pytest.raises(ValueError, match=f"{re.escape(str(table))}.*ActorID and Sex"):
        scan([tmp_path])


# -- TESS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stem, speaker, emotion, clip_id",
    [
        ("OAF_back_angry", "OAF", "angry", "tess/OAF_back_angry"),
        ("YAF_bar_disgust", "YAF", "disgust", "tess/YAF_bar_disgust"),
        ("OAF_base_fear", "OAF", "fear", "tess/OAF_base_fear"),
        ("YAF_bath_happy", "YAF", "happy", "tess/YAF_bath_happy"),
        ("OAF_bean_neutral", "OAF", "neutral", "tess/OAF_bean_neutral"),
        ("YAF_beg_ps", "YAF", "surprise", "tess/YAF_beg_ps"),
        ("OAF_bite_sad", "OAF", "sad", "tess/OAF_bite_sad"),
        ("OA_bite_neutral", "OAF", "neutral", "tess/OAF_bite_neutral"),  # the corpus's typo
        ("YAF_back_pleasant_surprise", "YAF", "surprise", "tess/YAF_back_ps"),
        ("YAF_back_pleasant_surprised", "YAF", "surprise", "tess/YAF_back_ps"),
        ("OAF_Back_Fear", "OAF", "fear", "tess/OAF_back_fear"),
    ],
)
def test_tess_names(tmp_path: Path, stem: str, speaker: str, emotion: str, clip_id: str) -> None:
    labelled = parse_path(tmp_path / f"{speaker}_anything" / f"{stem}.wav")
    assert labelled is not None
    assert (labelled.corpus, labelled.clip_id, labelled.speaker) == ("tess", clip_id, speaker)
    assert (labelled.emotion, labelled.source_label) == (emotion, stem.split("_", 2)[2])
    assert (labelled.gender, labelled.intensity) == ("female", "")


def test_tess_label_comes_from_the_file_name_not_the_folder(tmp_path: Path) -> None:
    assert parse_path(tmp_path / "YAF_sad" / "OAF_back_angry.wav").emotion == "angry"


@pytest.mark.parametrize(
    "stem", ["XAF_back_angry", "OAF_back_calm", "OAF_back_surprise", "OAF_angry", "OAF__angry"]
)
def test_invalid_tess_names_are_not_tess(tmp_path: Path, stem: str) -> None:
    assert parse_path(tmp_path / "clips" / f"{stem}.wav") is None


@pytest.mark.shared_data
def test_ased_real_files(extra_datasets: Path) -> None:
    files, skipped = scan([ASED_DIR])
    assert len(files) == 2474 and skipped == []
    assert {f.corpus for f in files} == {"ased"}
    per_speaker = Counter(f.speaker for f in files)
    assert sorted(per_speaker) == [f"{speaker:02d}" for speaker in range(1, 66)]
    assert min(per_speaker.values()) == 4 and max(per_speaker.values()) == 70
    assert set(Counter(f.emotion for f in files)) == {"neutral", "fear", "happy", "sad", "angry"}
    upper = next(f for f in files if f.path.stem == "S4-04-02-01-29")
    assert (upper.emotion, upper.speaker, upper.clip_id) == ("sad", "29", "ased/s4-04-02-01-29")


# -- ASED ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stem, emotion",
    [
        ("n1-01-01-01-01", "neutral"),
        ("f2-03-02-02-09", "fear"),
        ("h3-10-01-01-65", "happy"),
        ("s4-04-02-01-29", "sad"),
        ("S4-04-02-01-29", "sad"),
        ("a5-12-03-02-40", "angry"),
    ],
)
def test_ased_names(tmp_path: Path, stem: str, emotion: str) -> None:
    labelled = parse_path(tmp_path / "ASED" / "any folder" / f"{stem}.wav")
    assert labelled is not None and labelled.corpus == "ased"
    assert labelled.emotion == emotion and labelled.clip_id == f"ased/{stem.lower()}"
    assert labelled.speaker == stem[-2:]
    assert labelled.gender == {"01": "female", "02": "male"}[stem[-5:-3]]


def test_ased_speaker_is_the_number_alone_whatever_the_gender_code(tmp_path: Path) -> None:
    # Speakers 09, 15, 21, 23 and 25 occur with both gender codes in the corpus.
    female, male = (parse_path(tmp_path / f"{stem}.wav") for stem in ("n1-01-01-01-09", "h3-02-01-02-09"))
    assert female.speaker == male.speaker == "09"


@pytest.mark.parametrize(
    "stem",
    [
        "n2-01-01-01-01",  # the letter and the folder number disagree
        "x1-01-01-01-01",  # no such emotion
        "n1-01-01-03-01",  # gender code 03
        "n1-01-01-01-66",  # speakers are 01-65
        "n1-01-01-01-00",
        "n1-1-01-01-01",
    ],
)
def test_invalid_ased_names_are_not_ased(tmp_path: Path, stem: str) -> None:
    labelled = parse_path(tmp_path / f"{stem}.wav")
    assert labelled is None or labelled.corpus != "ased"


def test_scan_reads_an_ased_tree_the_tests_make(tmp_path: Path) -> None:
    for stem in ("n1-01-01-01-01", "a5-12-01-02-01", "s4-03-01-01-02"):
        folder = {"n": "01Neutral", "a": "05Angry", "s": "04Sad"}[stem[0]]
        write_audio(tmp_path / "ASED" / folder / f"{stem}.wav", seconds=0.1)
    files, skipped = scan([tmp_path / "ASED"])
    assert skipped == []
    assert [(f.speaker, f.emotion) for f in files] == [("01", "neutral"), ("02", "sad"), ("01", "angry")]


# -- SAVEE -----------------------------------------------------------------------------------

SAVEE_PREFIXES = [
    ("DC", "a", "angry"),
    ("JE", "d", "disgust"),
    ("JK", "f", "fear"),
    ("KL", "h", "happy"),
    ("DC", "n", "neutral"),
    ("JE", "sa", "sad"),
    ("JK", "su", "surprise"),
]


@pytest.mark.parametrize("speaker, prefix, emotion", SAVEE_PREFIXES)
def test_savee_flat_and_folder_layouts_give_the_same_clip(
    tmp_path: Path, speaker: str, prefix: str, emotion: str
) -> None:
    flat = parse_path(tmp_path / "AudioData" / f"{speaker}_{prefix}07.wav")
    in_folder = parse_path(tmp_path / "AudioData" / speaker / f"{prefix}07.wav")
    assert flat is not None and in_folder is not None
    for labelled in (flat, in_folder):
        assert (labelled.corpus, labelled.clip_id) == ("savee", f"savee/{speaker}_{prefix}07")
        assert (labelled.speaker, labelled.gender, labelled.intensity) == (speaker, "male", "")
        assert (labelled.emotion, labelled.source_label) == (emotion, prefix)


@pytest.mark.parametrize(
    "relative",
    [
        "XX_a01.wav",
        "DC_b01.wav",
        "DC_a1.wav",
        "DC_a001.wav",
        "dc_a01.wav",
        "XX/a01.wav",
        "DC/b01.wav",
        "clips/a01.wav",
    ],
)
def test_invalid_savee_names_are_not_savee(tmp_path: Path, relative: str) -> None:
    assert parse_path(tmp_path / "AudioData" / relative) is None


# -- the combined layout ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder, stem, corpus, speaker, gender, emotion",
    [
        ("Angry", "03-01-05-01-01-01-07", "ravdess", "07", "male", "angry"),
        ("Neutral", "03-01-01-01-01-01-08", "ravdess", "08", "female", "neutral"),
        # RAVDESS calm, filed in Neutral/, stays calm: `--calm` decides it, as for its own layout.
        ("Neutral", "03-01-02-01-01-01-08", "ravdess", "08", "female", "calm"),
        ("Disgusted", "1001_DFA_DIS_XX", "crema-d", "1001", "", "disgust"),
        ("FEARFUL", "DC_f01", "savee", "DC", "male", "fear"),
        ("Happy", "YAF_back_happy", "tess", "YAF", "female", "happy"),
        ("sad", "KL_sa15", "savee", "KL", "male", "sad"),
        ("Suprised", "OAF_back_ps", "tess", "OAF", "female", "surprise"),
        ("Surprised", "03-01-08-01-01-01-01", "ravdess", "01", "male", "surprise"),
    ],
)
def test_combined_layout_takes_the_label_from_the_folder(
    tmp_path: Path, folder: str, stem: str, corpus: str, speaker: str, gender: str, emotion: str
) -> None:
    labelled = parse_path(tmp_path / "audio emotions" / folder / f"{stem}.wav")
    assert labelled is not None
    assert (labelled.corpus, labelled.speaker, labelled.gender) == (corpus, speaker, gender)
    assert labelled.clip_id == CORPORA[corpus].parse(Path(f"{stem}.wav")).clip_id
    assert (labelled.emotion, labelled.source_label) == (emotion, folder)


@pytest.mark.parametrize("folder, stem", [("Angry", "clip_0001"), ("Sad", "a01"), ("Happy", "x")])
def test_combined_layout_with_unknown_names_has_no_speaker(tmp_path: Path, folder: str, stem: str) -> None:
    labelled = parse_path(tmp_path / folder / f"{stem}.mp3")
    assert labelled is not None
    assert (labelled.corpus, labelled.speaker, labelled.gender) == ("unknown", "", "")
    assert labelled.clip_id == f"unknown/{folder}/{stem}"


# -- CSV manifests ---------------------------------------------------------------------------


def test_csv_manifest_paths_speakers_and_bad_rows(tmp_path: Path) -> None:
    elsewhere = touch(tmp_path / "elsewhere" / "c.ogg")
    touch(tmp_path / "set" / "a.wav")
    touch(tmp_path / "set" / "sub" / "b.flac")
    touch(tmp_path / "set" / "notes.txt")
    manifest = tmp_path / "set" / "labels.csv"
    manifest.write_text(
        "path,emotion,speaker\n"
        "a.wav,Fearful,s1\n"
        "sub/b.flac,ps,\n"
        f"{elsewhere},angry,s2\n"
        "\n"
        "a.wav,bored,s1\n"
        "missing.wav,sad,s3\n"
        "notes.txt,sad,s3\n"
    )
    files, skipped = read_csv_manifest(manifest)
    assert [(f.clip_id, f.path, f.emotion, f.source_label, f.speaker) for f in files] == [
        ("csv/a", tmp_path / "set" / "a.wav", "fear", "Fearful", "s1"),
        ("csv/sub/b", tmp_path / "set" / "sub" / "b.flac", "surprise", "ps", ""),
        ("csv/../elsewhere/c", elsewhere, "angry", "angry", "s2"),
    ]
    assert {f.corpus for f in files} == {"csv"}
    assert [(s.path.name, s.reason) for s in skipped] == [
        (
            "a.wav",
            f"row 6 of {manifest}: unknown emotion 'bored' (expected one of angry, "
            "disgust, fear, happy, neutral, sad, surprise, calm or a synonym)",
        ),
        ("missing.wav", f"row 7 of {manifest}: file not found"),
        (
            "notes.txt",
            f"row 8 of {manifest}: not an audio file (expected .wav, .flac, .ogg, .oga, "
            ".opus, .mp3, .aiff, .aif, .au, .w64, .caf)",
        ),
    ]


@pytest.mark.parametrize(
    "cell, emotion",
    [
        ("angry", "angry"),
        ("Anger", "angry"),
        ("disgusted", "disgust"),
        ("FEARFUL", "fear"),
        ("happiness", "happy"),
        ("neutral", "neutral"),
        ("calm", "calm"),
        ("Sadness", "sad"),
        ("surprised", "surprise"),
        ("Suprised", "surprise"),
        ("PS", "surprise"),
        ("pleasant_surprise", "surprise"),
    ],
)
def test_csv_emotion_synonyms_without_speaker_column(tmp_path: Path, cell: str, emotion: str) -> None:
    touch(tmp_path / "clip.wav")
    (tmp_path / "labels.csv").write_text(f"path,emotion\nclip.wav,{cell}\n")
    (labelled,), skipped = read_csv_manifest(tmp_path / "labels.csv")
    assert (labelled.emotion, labelled.speaker, skipped) == (emotion, "", [])


def test_csv_without_emotion_column_names_the_file(tmp_path: Path) -> None:
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nclip.wav,angry\n")
    with pytest.raises(ValueError, match=f"{re.escape(str(manifest))}.*missing emotion"):
        read_csv_manifest(manifest)


def test_csv_root_in_scan_keeps_one_copy_per_file(tmp_path: Path) -> None:
    clip = touch(tmp_path / "clip.wav")
    (tmp_path / "labels.csv").write_text(f"path,emotion\nclip.wav,sad\n{clip},sad\n")
    files, skipped = scan([tmp_path / "labels.csv"])
    assert [f.clip_id for f in files] == ["csv/clip"]
    assert [s.reason for s in skipped] == [f"another copy of csv/clip (kept {clip})"]


# -- scanning folders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extension",
    [".wav", ".flac", ".ogg", ".mp3", ".WAV", ".Flac", ".OGG", ".MP3", ".aiff", ".au", ".w64", ".caf"],
)
def test_scan_reads_every_audio_extension(tmp_path: Path, extension: str) -> None:
    path = write_audio(tmp_path / "savee" / f"DC_h03{extension}", seconds=0.1, format=extension[1:].upper())
    files, skipped = scan([tmp_path])
    assert [(f.path, f.clip_id) for f in files] == [(path, "savee/DC_h03")] and skipped == []


def test_scan_ignores_non_audio_and_hidden_files(tmp_path: Path) -> None:
    clip = touch(tmp_path / "Actor_01" / "03-01-01-01-01-01-01.wav")
    for name in (
        "README.md",
        "Actor_01/notes.txt",
        "labels.csv",
        "cover.jpg",
        "Actor_01/._03-01-01-01-01-01-02.wav",
        ".hidden.wav",
        ".cache/03-01-01-01-01-01-03.wav",
    ):
        touch(tmp_path / name)
    files, skipped = scan([tmp_path])
    assert [f.path for f in files] == [clip] and skipped == []


def test_scan_skips_audio_matching_no_layout(tmp_path: Path) -> None:
    touch(tmp_path / "clips" / "DC_a01.wav")
    odd = [touch(tmp_path / "clips" / name) for name in ("03-01-09-01-01-01-01.wav", "take1.flac")]
    files, skipped = scan([tmp_path])
    assert [f.clip_id for f in files] == ["savee/DC_a01"]
    assert [s.path for s in skipped] == odd
    assert all(s.reason.startswith("file name matches no corpus layout") for s in skipped)


def test_scan_keeps_the_first_copy_in_sorted_order(tmp_path: Path) -> None:
    first_root, second_root = tmp_path / "b", tmp_path / "a"
    kept = touch(first_root / "flac" / "OAF_back_sad.flac")
    copies = [
        touch(first_root / "wav" / "OAF_back_sad.wav"),
        touch(second_root / "OAF_back_sad.wav"),
        touch(second_root / "Sad" / "OAF_back_sad.wav"),
    ]
    files, skipped = scan([first_root, second_root])
    assert [f.path for f in files] == [kept]
    assert [s.path for s in skipped] == copies
    assert {s.reason for s in skipped} == {f"another copy of tess/OAF_back_sad (kept {kept})"}


def test_scan_follows_links_but_not_loops(tmp_path: Path) -> None:
    root = tmp_path / "data"
    clip = touch(root / "ravdess" / "03-01-05-01-01-01-07.wav")
    os.symlink(root, root / "ravdess" / "loop")
    outside = touch(tmp_path / "elsewhere" / "DC_a01.wav")
    os.symlink(outside.parent, root / "savee")
    files, skipped = scan([root])
    assert [f.path for f in files] == [clip, root / "savee" / "DC_a01.wav"] and skipped == []


def test_scan_walks_a_folder_reached_twice_once(tmp_path: Path) -> None:
    touch(tmp_path / "z_real" / "DC_a01.wav")
    os.symlink(tmp_path / "z_real", tmp_path / "a_link")
    files, skipped = scan([tmp_path])
    assert [f.path for f in files] == [tmp_path / "a_link" / "DC_a01.wav"] and skipped == []


def test_parse_path_makes_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_path(Path("clips/DC_a01.wav")).path == tmp_path / "clips" / "DC_a01.wav"


@pytest.mark.parametrize(
    "root, error, message",
    [
        ("absent", MissingDataError, "does not exist"),
        ("notes.txt", ValueError, "must be a folder or a .csv manifest"),
    ],
)
def test_scan_rejects_bad_roots(tmp_path: Path, root: str, error: type, message: str) -> None:
    touch(tmp_path / "notes.txt")
    with pytest.raises(error, match=f"{re.escape(str(tmp_path / root))}.*{re.escape(message)}"):
        scan([tmp_path / root])


# -- finding the data ------------------------------------------------------------------------


def test_resolve_explicit_roots(tmp_path: Path) -> None:
    touch(tmp_path / "labels.csv")
    (tmp_path / "corpora").mkdir()
    absolute = str(tmp_path / "corpora")
    assert resolve_data_roots(["labels.csv", absolute], cwd=tmp_path) == [
        tmp_path / "labels.csv",
        tmp_path / "corpora",
    ]
    with pytest.raises(MissingDataError, match=re.escape(str(tmp_path / "nowhere"))):
        resolve_data_roots(["corpora", "nowhere"], cwd=tmp_path)


def test_resolve_prefers_data_then_shared_datasets(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    project.mkdir()
    assert resolve_data_roots(cwd=project) == [tmp_path / "shared" / "datasets"]
    (tmp_path / "shared" / "extra-datasets").mkdir()
    assert resolve_data_roots(cwd=project) == [
        tmp_path / "shared" / "datasets",
        tmp_path / "shared" / "extra-datasets",
    ]
    (project / "data").mkdir()
    assert resolve_data_roots(cwd=project) == [project / "data"]


def test_resolve_without_data_says_where_to_get_each_corpus(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    with pytest.raises(MissingDataError) as raised:
        resolve_data_roots(cwd=tmp_path / "project")
    message = str(raised.value)
    assert "data/" in message
    for name, url in [
        ("ravdess", "https://zenodo.org/record/1188976"),
        ("tess", "https://doi.org/10.5683/SP2/E8H2MF"),
        ("crema-d", "https://github.com/CheyneyComputerScience/CREMA-D"),
        ("savee", "http://kahlan.eps.surrey.ac.uk/savee/"),
    ]:
        assert f"{name}: {CORPORA[name].description}" in message and url in message
