"""The corpus readers: what a recording's path says about its speaker and emotion.

Every file-name convention of the package lives here, one parser per corpus in ``CORPORA``.
Nothing here decodes audio; ``aed_tf.prepare`` decodes, hashes and writes the manifest.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from aed_tf.audio import AUDIO_EXTENSIONS
from aed_tf.errors import InputError, UserError
from aed_tf.labels import CALM, MANIFEST_EMOTIONS


@dataclass(frozen=True)
class LabelledFile:
    """One recording and what its corpus layout says about it."""

    path: Path
    clip_id: str
    corpus: str
    speaker: str
    gender: str
    emotion: str
    source_label: str
    intensity: str


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the manifest, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Corpus:
    """One row of the registry: how to read a corpus and where to get it."""

    name: str
    parse: Callable[[Path], LabelledFile | None]  # None when the path is not of this corpus
    description: str
    source: str


# The project's own real recordings beside the checkout (../shared/<folder>): RAVDESS and TESS,
# and the corpora beyond the reference set (ASED).
SHARED_DATA_FOLDERS = ("datasets", "extra-datasets")


class MissingDataError(UserError):
    """No data root was given or found, or a given one does not exist."""


# -- RAVDESS: 03-01-05-01-01-01-07.wav --------------------------------------------------------

_RAVDESS_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
# emotion code -> (the RAVDESS word, the manifest emotion)
_RAVDESS_EMOTIONS = {
    "01": ("neutral", "neutral"),
    "02": ("calm", CALM),
    "03": ("happy", "happy"),
    "04": ("sad", "sad"),
    "05": ("angry", "angry"),
    "06": ("fearful", "fear"),
    "07": ("disgust", "disgust"),
    "08": ("surprised", "surprise"),
}
_RAVDESS_INTENSITIES = {"01": "normal", "02": "strong"}
_RAVDESS_MODALITIES = {"01", "02", "03"}  # audio-video, video-only, audio-only
_RAVDESS_CHANNELS = {"01", "02"}  # speech, song
_RAVDESS_TAKES = {"01", "02"}  # the statement and repetition codes
_RAVDESS_ACTORS = {f"{actor:02d}" for actor in range(1, 25)}


def _parse_ravdess(path: Path) -> LabelledFile | None:
    match = _RAVDESS_NAME.fullmatch(path.stem)
    if match is None:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    if not (
        modality in _RAVDESS_MODALITIES
        and channel in _RAVDESS_CHANNELS
        and emotion in _RAVDESS_EMOTIONS
        and intensity in _RAVDESS_INTENSITIES
        and statement in _RAVDESS_TAKES
        and repetition in _RAVDESS_TAKES
        and actor in _RAVDESS_ACTORS
    ):
        return None
    word, manifest_emotion = _RAVDESS_EMOTIONS[emotion]
    return LabelledFile(
        path=path,
        clip_id=f"ravdess/{path.stem}",
        corpus="ravdess",
        speaker=actor,
        gender="male" if int(actor) % 2 else "female",
        emotion=manifest_emotion,
        source_label=word,
        intensity=_RAVDESS_INTENSITIES[intensity],
    )


# -- CREMA-D: 1001_DFA_ANG_XX.wav -------------------------------------------------------------

_CREMA_D_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")
_CREMA_D_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
_CREMA_D_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": ""}  # XX: unspecified
_CREMA_D_ACTORS = range(1001, 1092)
# The corpus's speaker table; the file names do not say the speaker's sex.
_CREMA_D_DEMOGRAPHICS = "VideoDemographics.csv"


def _parse_crema_d(path: Path) -> LabelledFile | None:
    match = _CREMA_D_NAME.fullmatch(path.stem)
    if match is None:
        return None
    actor, _sentence, emotion, level = match.groups()
    if not (int(actor) in _CREMA_D_ACTORS and emotion in _CREMA_D_EMOTIONS and level in _CREMA_D_LEVELS):
        return None
    return LabelledFile(
        path=path,
        clip_id=f"crema-d/{path.stem}",
        corpus="crema-d",
        speaker=actor,
        gender="",
        emotion=_CREMA_D_EMOTIONS[emotion],
        source_label=emotion,
        intensity=_CREMA_D_LEVELS[level],
    )


def _read_crema_d_genders(csv_path: Path) -> dict[str, str]:
    """Actor id -> "male" / "female" from CREMA-D's VideoDemographics.csv."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"ActorID", "Sex"} <= rows[0].keys():
        raise InputError(f"{csv_path}: expected columns ActorID and Sex, found {list(rows[0])}")
    sexes = {"male": "male", "female": "female"}
    return {row["ActorID"].strip(): sexes.get(row["Sex"].strip().lower(), "") for row in rows}


# -- TESS: OAF_back_angry.wav -----------------------------------------------------------------

# OA is the corpus's own typo for OAF (OA_bite_neutral).
_TESS_NAME = re.compile(r"(OAF|YAF|OA)_([a-z]+)_([a-z_]+)", re.IGNORECASE)
# emotion token -> (the canonical TESS token, the manifest emotion)
_TESS_EMOTIONS = {
    "angry": ("angry", "angry"),
    "disgust": ("disgust", "disgust"),
    "fear": ("fear", "fear"),
    "happy": ("happy", "happy"),
    "neutral": ("neutral", "neutral"),
    "ps": ("ps", "surprise"),
    "pleasant_surprise": ("ps", "surprise"),
    "pleasant_surprised": ("ps", "surprise"),
    "sad": ("sad", "sad"),
}


def _parse_tess(path: Path) -> LabelledFile | None:
    # Labels come from the file name only: the folder names differ between distributions.
    match = _TESS_NAME.fullmatch(path.stem)
    if match is None or match[3].lower() not in _TESS_EMOTIONS:
        return None
    speaker = "OAF" if match[1].upper() == "OA" else match[1].upper()
    token, emotion = _TESS_EMOTIONS[match[3].lower()]
    return LabelledFile(
        path=path,
        # Canonical spelling, so that one utterance has one id in every distribution.
        clip_id=f"tess/{speaker}_{match[2].lower()}_{token}",
        corpus="tess",
        speaker=speaker,
        gender="female",
        emotion=emotion,
        source_label=match[3],
        intensity="",
    )


# -- SAVEE: DC_a01.wav or DC/a01.wav ----------------------------------------------------------

_SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
_SAVEE_EMOTIONS = {
    "a": "angry",
    "d": "disgust",
    "f": "fear",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprise",
}
_SAVEE_UTTERANCE = r"(a|d|f|h|n|sa|su)(\d\d)"
_SAVEE_FLAT_NAME = re.compile(rf"({'|'.join(_SAVEE_SPEAKERS)})_{_SAVEE_UTTERANCE}")
_SAVEE_FOLDER_NAME = re.compile(_SAVEE_UTTERANCE)


def _parse_savee(path: Path) -> LabelledFile | None:
    flat = _SAVEE_FLAT_NAME.fullmatch(path.stem)
    if flat is not None:
        speaker, prefix, number = flat.groups()
    else:
        in_folder = _SAVEE_FOLDER_NAME.fullmatch(path.stem)
        if in_folder is None or path.parent.name not in _SAVEE_SPEAKERS:
            return None
        speaker, (prefix, number) = path.parent.name, in_folder.groups()
    return LabelledFile(
        path=path,
        clip_id=f"savee/{speaker}_{prefix}{number}",
        corpus="savee",
        speaker=speaker,
        gender="male",
        emotion=_SAVEE_EMOTIONS[prefix],
        source_label=prefix,
        intensity="",
    )


# -- ASED (Amharic): 04Sad/s4-01-01-01-29.wav ----------------------------------------------------

# x n - yy - aa - gg - bb: emotion letter and folder number, sentence, repetition, gender, speaker.
_ASED_NAME = re.compile(r"([nfhsa])([1-5])-(\d\d)-(\d\d)-(0[12])-(\d\d)", re.IGNORECASE)
_ASED_EMOTIONS = {"n": "neutral", "f": "fear", "h": "happy", "s": "sad", "a": "angry"}
# The letter and the folder number say the same thing (01Neutral ... 05Angry).
_ASED_NUMBERS = {"n": "1", "f": "2", "h": "3", "s": "4", "a": "5"}
_ASED_SPEAKERS = range(1, 66)


def _parse_ased(path: Path) -> LabelledFile | None:
    match = _ASED_NAME.fullmatch(path.stem)
    if match is None:
        return None
    letter, number, sentence, repetition, gender, speaker = match.groups()
    letter = letter.lower()  # one file of the corpus spells it in upper case (S4-04-02-01-29)
    if _ASED_NUMBERS[letter] != number or int(speaker) not in _ASED_SPEAKERS:
        return None
    return LabelledFile(
        path=path,
        clip_id=f"ased/{letter}{number}-{sentence}-{repetition}-{gender}-{speaker}",
        corpus="ased",
        # The speaker number alone: five numbers occur with both gender codes in the corpus,
        # and a split must never put one number in two partitions.
        speaker=speaker,
        gender="female" if gender == "01" else "male",
        emotion=_ASED_EMOTIONS[letter],
        source_label=letter,
        intensity="",
    )


CORPORA: dict[str, Corpus] = {
    corpus.name: corpus
    for corpus in (
        Corpus(
            "ravdess",
            _parse_ravdess,
            "MM-VV-EE-II-SS-RR-AA.<ext> (e.g. Actor_07/03-01-05-01-01-01-07.wav): emotion EE "
            "01-08, intensity II 01-02, actor AA 01-24",
            "https://zenodo.org/record/1188976 (Livingstone & Russo, 2018)",
        ),
        Corpus(
            "crema-d",
            _parse_crema_d,
            "AAAA_SSS_EMO_LVL.<ext> (e.g. AudioWAV/1001_DFA_ANG_XX.wav): actor 1001-1091, "
            "emotion ANG DIS FEA HAP NEU SAD, level LO MD HI XX; VideoDemographics.csv beside "
            "it gives the speakers' sex",
            "https://github.com/CheyneyComputerScience/CREMA-D (Cao et al., 2014)",
        ),
        Corpus(
            "tess",
            _parse_tess,
            "<SPK>_<word>_<emotion>.<ext> (e.g. OAF_angry/OAF_back_angry.wav): speakers OAF "
            "and YAF, emotions angry disgust fear happy neutral ps sad",
            "https://doi.org/10.5683/SP2/E8H2MF (Dupuis & Pichora-Fuller, 2010)",
        ),
        Corpus(
            "savee",
            _parse_savee,
            "<SPK>_<emotion><NN>.<ext> or <SPK>/<emotion><NN>.<ext> (e.g. DC_a01.wav or "
            "DC/a01.wav): speakers DC JE JK KL, emotions a d f h n sa su",
            "http://kahlan.eps.surrey.ac.uk/savee/ (Haq & Jackson, 2009)",
        ),
        Corpus(
            "ased",
            _parse_ased,
            "<x><n>-<yy>-<aa>-<gg>-<bb>.<ext> (e.g. 04Sad/s4-01-01-01-29.wav): emotion letter n f "
            "h s a with its folder number 1-5, sentence, repetition, gender 01 female / 02 male, "
            "speaker 01-65 (Amharic; 5 emotions, no disgust or surprise)",
            "https://doi.org/10.1145/3529759 (Retta et al., ACM TALLIP 2022)",
        ),
    )
}

# The combined "audio emotions" layout merges the four corpora into one folder per emotion;
# its folder names (with the typo "Suprised") are the label.
_EMOTION_FOLDERS = {
    "angry": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "suprised": "surprise",
    "surprised": "surprise",
}

# Spellings accepted in the emotion column of a CSV manifest.
_EMOTION_SYNONYMS = {emotion: emotion for emotion in MANIFEST_EMOTIONS} | {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "suprised": "surprise",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "pleasant surprise": "surprise",
}

_NO_LAYOUT = (
    f"file name matches no corpus layout (not {', '.join(CORPORA)}, and its folder is not "
    "an emotion of the combined layout such as Angry/)"
)


def parse_path(path: Path) -> LabelledFile | None:
    """What the path says about a recording; None when it matches no layout."""
    path = Path(os.path.abspath(path))
    from_name = next(
        (labelled for corpus in CORPORA.values() if (labelled := corpus.parse(path)) is not None),
        None,
    )
    folder = path.parent.name
    folder_emotion = _EMOTION_FOLDERS.get(folder.lower())
    if folder_emotion is None:
        return from_name
    # Combined layout: the folder is the label, except that RAVDESS calm, which it files in
    # Neutral/, stays calm, so that `--calm` decides it as it does for the corpus's own layout.
    if from_name is not None:
        calm = from_name.emotion == "calm" and folder_emotion == "neutral"
        return replace(from_name, emotion="calm" if calm else folder_emotion, source_label=folder)
    # An unknown speaker must never silently join a split, so it stays "".
    return LabelledFile(
        path=path,
        clip_id=f"unknown/{folder}/{path.stem}",
        corpus="unknown",
        speaker="",
        gender="",
        emotion=folder_emotion,
        source_label=folder,
        intensity="",
    )


def read_csv_manifest(csv_path: Path) -> tuple[list[LabelledFile], list[SkippedFile]]:
    """Reads a ``path,emotion[,speaker]`` CSV; paths are absolute or relative to its folder."""
    csv_path = Path(os.path.abspath(csv_path))
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [name.strip().lower() for name in rows[0]] if rows else []
    missing = [name for name in ("path", "emotion") if name not in header]
    if missing:
        raise InputError(
            f"{csv_path}: the header must name the columns path,emotion[,speaker]; "
            f"missing {', '.join(missing)}"
        )
    labelled: list[LabelledFile] = []
    skipped: list[SkippedFile] = []
    # Row numbers as a spreadsheet shows them: the header is row 1.
    for row_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = dict(zip(header, (cell.strip() for cell in row)))
        where = f"row {row_number} of {csv_path}"
        if not cells.get("path"):
            skipped.append(SkippedFile(csv_path, f"{where}: empty path"))
            continue
        path = Path(os.path.normpath(csv_path.parent / cells["path"]))
        emotion = _EMOTION_SYNONYMS.get(cells.get("emotion", "").lower())
        if emotion is None:
            problem = (
                f"unknown emotion {cells.get('emotion', '')!r} "
                f"(expected one of {', '.join(MANIFEST_EMOTIONS)} or a synonym)"
            )
        elif path.suffix.lower() not in AUDIO_EXTENSIONS:
            problem = f"not an audio file (expected {', '.join(AUDIO_EXTENSIONS)})"
        elif not path.is_file():
            problem = "file not found"
        else:
            problem = ""
        if problem:
            skipped.append(SkippedFile(path, f"{where}: {problem}"))
            continue
        relative = Path(os.path.relpath(path, csv_path.parent)).with_suffix("")
        labelled.append(
            LabelledFile(
                path=path,
                clip_id=f"csv/{relative.as_posix()}",
                corpus="csv",
                speaker=cells.get("speaker", ""),
                gender="",
                emotion=emotion,
                source_label=cells["emotion"],
                intensity="",
            )
        )
    return labelled, skipped


def scan(roots: Sequence[str | Path]) -> tuple[list[LabelledFile], list[SkippedFile]]:
    """Labels every audio file under the roots (folders or CSV manifests), one per clip id.

    Files are taken in sorted order (by path within a root, roots in the given order); a later
    file with an already seen clip id is another copy of that recording and is skipped.
    """
    found: list[LabelledFile] = []
    skipped: list[SkippedFile] = []
    crema_d_genders: dict[str, str] = {}
    for root in (Path(os.path.abspath(r)) for r in roots):
        if root.is_dir():
            paths, unreadable = _visible_files(root)
            skipped += unreadable
            for path in paths:
                if path.name == _CREMA_D_DEMOGRAPHICS:
                    crema_d_genders |= _read_crema_d_genders(path)
                elif path.suffix.lower() in AUDIO_EXTENSIONS:
                    labelled = parse_path(path)
                    if labelled is None:
                        skipped.append(SkippedFile(path, _NO_LAYOUT))
                    else:
                        found.append(labelled)
        elif root.is_file() and root.suffix.lower() == ".csv":
            from_csv, skipped_rows = read_csv_manifest(root)
            found += from_csv
            skipped += skipped_rows
        elif not root.exists():
            raise MissingDataError(f"data root {root} does not exist")
        else:
            raise InputError(f"data root {root}: must be a folder or a .csv manifest")

    kept: dict[str, LabelledFile] = {}
    for labelled in found:
        first = kept.setdefault(labelled.clip_id, labelled)
        if first is not labelled:
            reason = f"another copy of {labelled.clip_id} (kept {first.path})"
            skipped.append(SkippedFile(labelled.path, reason))
    files = [
        replace(f, gender=crema_d_genders.get(f.speaker, "")) if f.corpus == "crema-d" else f
        for f in kept.values()
    ]
    return files, skipped


def _visible_files(root: Path) -> tuple[list[Path], list[SkippedFile]]:
    """Files under root in sorted order, skipping hidden ones; follows links, but not in loops.
    A folder that cannot be read is listed with the reason, and the others go on."""
    files: list[Path] = []
    unreadable: list[SkippedFile] = []
    seen_folders: set[tuple[int, int]] = set()

    def note(error: OSError) -> None:
        unreadable.append(
            SkippedFile(Path(error.filename), f"cannot read the folder ({error.strerror or error})")
        )

    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=note):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen_folders:
            subfolders.clear()
            continue
        seen_folders.add((stat.st_dev, stat.st_ino))
        # Sorted, so that a folder reached twice through links is always kept at the same path.
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        files += [Path(folder, name) for name in names if not name.startswith(".")]
    return sorted(files, key=lambda path: path.relative_to(root).parts), unreadable


def resolve_data_roots(data_roots: Sequence[str] = (), cwd: Path | None = None) -> list[Path]:
    """The given roots (which must exist), else data/, else those of ../shared/datasets and
    ../shared/extra-datasets that exist."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    if data_roots:
        roots = [cwd / root for root in data_roots]
        for root in roots:
            if not root.exists():
                raise MissingDataError(f"data root {root} does not exist")
        return roots
    if (cwd / "data").is_dir():
        return [cwd / "data"]
    shared = [cwd.parent / "shared" / name for name in SHARED_DATA_FOLDERS]
    if any(root.is_dir() for root in shared):
        return [root for root in shared if root.is_dir()]
    corpora = "\n".join(f"  {c.name}: {c.description}\n    get it from {c.source}" for c in CORPORA.values())
    raise MissingDataError(
        f"no data found: neither {cwd / 'data'} nor {cwd.parent / 'shared' / 'datasets'} is a "
        "folder. Download the corpora and put each under data/ in its own layout (any folder "
        "depth), or pass data roots or a CSV manifest (path,emotion[,speaker]):\n"
        + corpora
        + "\n  or the combined layout: folders Angry Disgusted Fearful Happy Neutral Sad "
        "Suprised holding files of these corpora"
    )
