"""Which clip goes where: train/val/test splits, cross-validation folds and the leakage guard.

Scores are speaker-independent by default: a random split puts the same speaker in train and
test, and on our data that turns 33% (held-out speakers) into 88%. Every split and fold is checked
by ``check_no_leakage`` before anyone can use it, and again when it is read back from disk.

A speaker is the pair (corpus, speaker). Exact duplicates (equal ``audio_hash``) always stay in
one partition, even across speakers, so splitters group speakers that share audio.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from aed_tf.errors import InputError

logger = logging.getLogger(__name__)

PARTITIONS = ("train", "val", "test")
SHARED_SI = "shared-si"
CV = "cv"
ALL_SPEAKERS = "all-speakers"
# The fixed cross-validation folds: each corpus's speakers, in sorted order, cut into this many
# consecutive groups (numpy.array_split). On the shared data: RAVDESS actors 01-04, 05-08, ...
# (2 male, 2 female each), ASED speakers 01-13, 14-26, 27-39, 40-52, 53-65, TESS OAF in fold 1
# and YAF in fold 2.
CV_FOLDS = 5
# Corpora with fewer speakers than folds (TESS, SAVEE) give no validation speakers: each of their
# speakers is needed for training or test.

_MANIFEST_COLUMNS = ("clip_id", "corpus", "speaker", "emotion", "audio_hash")
_SPLIT_COLUMNS = ("clip_id", "partition", "protocol")
_EXAMPLES = 5  # items shown in an error message before "and N more"


class LeakageError(InputError):
    """A split or fold assignment that would let test clips leak into training."""


class UnknownSpeakerError(InputError):
    """Clips without a speaker cannot be placed in a speaker-independent split."""


@dataclass(frozen=True)
class Protocol:
    """A split protocol. ``make(manifest, *, seed, val_fraction, test_fraction, fold)`` returns
    the columns clip_id and partition for every clip of ``manifest`` of the protocol's
    ``corpora`` (None: every corpus); clips of other corpora are left out."""

    name: str
    speaker_independent: bool
    description: str
    make: Callable[..., pd.DataFrame]
    corpora: tuple[str, ...] | None = None
    has_test: bool = True


# -- the protocols ---------------------------------------------------------------------------


def _speaker_independent(
    manifest: pd.DataFrame, *, seed: int, val_fraction: float, test_fraction: float, **_: object
) -> pd.DataFrame:
    groups = _linked_groups(speaker_key(manifest), manifest["audio_hash"])
    partition = _grouped_split(_strata(manifest), groups, seed, val_fraction, test_fraction, unit="speakers")
    return pd.DataFrame({"clip_id": manifest["clip_id"], "partition": partition})


def _random(
    manifest: pd.DataFrame, *, seed: int, val_fraction: float, test_fraction: float, **_: object
) -> pd.DataFrame:
    # Each clip is its own group, except that exact duplicates are joined.
    groups = _linked_groups(manifest["clip_id"], manifest["audio_hash"])
    partition = _grouped_split(
        _strata(manifest), groups, seed, val_fraction, test_fraction, unit="distinct clips"
    )
    return pd.DataFrame({"clip_id": manifest["clip_id"], "partition": partition})


# The benchmark on ../shared/datasets (RAVDESS actors 01-20, TESS OAF and YAF). Validation speakers
# come out of the training speakers: RAVDESS actors 15 (male) and 16 (female). TESS cannot give
# one: it has a single training speaker, and taking OAF for validation would leave TESS out of
# training altogether.
_SHARED_SI_PARTITION = {
    **{f"ravdess:{actor:02d}": "train" for actor in range(1, 15)},
    "tess:OAF": "train",
    "ravdess:15": "val",
    "ravdess:16": "val",
    **{f"ravdess:{actor:02d}": "test" for actor in range(17, 21)},
    "tess:YAF": "test",
}


def _shared_si(manifest: pd.DataFrame, **_: object) -> pd.DataFrame:
    """The fixed benchmark split; seed and fractions do not change it."""
    keys = speaker_key(manifest)
    foreign = sorted(set(keys) - set(_SHARED_SI_PARTITION))
    if foreign:
        raise InputError(
            f"the {SHARED_SI} protocol is defined for RAVDESS actors 01-20 and TESS OAF/YAF only; "
            f"the manifest also has speakers {_listing(foreign)}: use another protocol "
            "(e.g. speaker-independent) for other data"
        )
    missing = sorted(set(_SHARED_SI_PARTITION) - set(keys))
    if missing:
        raise InputError(
            f"the {SHARED_SI} protocol needs clips of every one of its speakers; missing: {_listing(missing)}"
        )
    partition = keys.map(_SHARED_SI_PARTITION)
    return pd.DataFrame({"clip_id": manifest["clip_id"], "partition": partition})


def cv_folds(manifest: pd.DataFrame) -> pd.Series:
    """The cross-validation fold (1..CV_FOLDS) of every clip: each corpus's speakers in sorted
    order, cut into CV_FOLDS consecutive groups. Fixed: no seed, the same for every model."""
    fold = pd.Series(0, index=manifest.index, dtype=int)
    for _, clips in manifest.groupby("corpus"):
        speakers = sorted(clips["speaker"].astype(str).unique())
        groups = np.array_split(np.array(speakers, dtype=object), CV_FOLDS)
        number = {speaker: i + 1 for i, group in enumerate(groups) for speaker in group}
        fold[clips.index] = clips["speaker"].astype(str).map(number)
    return fold


def cv_validation_speakers(manifest: pd.DataFrame, fold: int) -> pd.Series:
    """True for the clips of the validation speakers drawn from ``fold``: in each corpus with at
    least CV_FOLDS speakers, the first half (rounded up) of that fold's speakers in sorted order
    (RAVDESS 05-06 of fold 2: one male, one female; ASED 14-20)."""
    folds = cv_folds(manifest)
    chosen = pd.Series(False, index=manifest.index)
    for _, clips in manifest[folds == fold].groupby("corpus"):
        if manifest.loc[manifest["corpus"] == clips["corpus"].iloc[0], "speaker"].nunique() < CV_FOLDS:
            continue
        speakers = sorted(clips["speaker"].astype(str).unique())
        chosen[clips.index[clips["speaker"].astype(str).isin(speakers[: -(-len(speakers) // 2)])]] = True
    return chosen


def _cv(manifest: pd.DataFrame, *, fold: str = "1", **_: object) -> pd.DataFrame:
    """Test one fold (1..CV_FOLDS) of speakers, or all of one corpus (``fold`` names it); the
    validation speakers come from the next fold (from fold 1 when a corpus is left out), so they
    are always training speakers of the fold tested; every other speaker trains."""
    corpora = sorted(manifest["corpus"].astype(str).unique())
    if fold in corpora:
        test = manifest["corpus"] == fold
        val = cv_validation_speakers(manifest, 1) & ~test
    elif fold.isdigit() and 1 <= int(fold) <= CV_FOLDS:
        test = cv_folds(manifest) == int(fold)
        val = cv_validation_speakers(manifest, int(fold) % CV_FOLDS + 1)
    else:
        raise InputError(
            f"fold {fold!r}: the {CV} protocol tests a speaker fold 1-{CV_FOLDS} or a corpus of "
            f"the data ({', '.join(corpora)})"
        )
    left_out = fold if fold in corpora else None
    _require_validation(val, manifest, f"fold {fold!r} of the {CV} protocol", left_out)
    partition = np.where(test, "test", np.where(val, "val", "train"))
    return pd.DataFrame({"clip_id": manifest["clip_id"], "partition": partition})


def _require_validation(
    val: pd.Series, manifest: pd.DataFrame, what: str, left_out: str | None = None
) -> None:
    """Refuses a split without validation speakers, saying why: training chooses its epoch on
    them, and would otherwise fail later, after decoding the data (in `bench cv`, after the folds
    before this one trained)."""
    if val.any():
        return
    counts = manifest.groupby("corpus")["speaker"].nunique()
    raise InputError(
        f"{what} has no validation speakers: they come only from corpora with at least "
        f"{CV_FOLDS} speakers"
        + (f" other than {left_out}" if left_out else "")
        + f" (this data: {', '.join(f'{corpus} {n} speakers' for corpus, n in counts.items())}); "
        "add such a corpus, or use the speaker-independent protocol"
    )


def _all_speakers(manifest: pd.DataFrame, **_: object) -> pd.DataFrame:
    """For the model one ships: every speaker trains but the validation speakers of the cv
    protocol's fold 1 (RAVDESS 01-02, ASED 01-07); there is no test partition."""
    val = cv_validation_speakers(manifest, 1)
    _require_validation(val, manifest, f"the {ALL_SPEAKERS} protocol")
    return pd.DataFrame({"clip_id": manifest["clip_id"], "partition": np.where(val, "val", "train")})


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "speaker-independent",
            True,
            "Speaker-independent: each speaker is in exactly one of train, val and test, drawn "
            "at random for the seed with emotions balanced per corpus as far as the speakers "
            "allow.",
            _speaker_independent,
        ),
        Protocol(
            SHARED_SI,
            True,
            "Speaker-independent benchmark: train on RAVDESS actors 01-14 and TESS OAF, validate "
            "on RAVDESS actors 15 (male) and 16 (female) since TESS has only one training "
            "speaker, test on RAVDESS actors 17-20 and TESS YAF; the same for every seed. Other "
            "corpora are left out.",
            _shared_si,
            corpora=("ravdess", "tess"),
        ),
        Protocol(
            CV,
            True,
            "Speaker-independent cross-validation: each corpus's speakers, in sorted order, are "
            f"cut into {CV_FOLDS} fixed folds; the test fold's speakers (or, leaving a corpus out, "
            "all of that corpus) are never heard in training, and validation speakers are "
            "training speakers of another fold (the first half of the next fold's speakers in "
            "every corpus with enough speakers).",
            _cv,
        ),
        Protocol(
            ALL_SPEAKERS,
            True,
            "Every speaker trains except the validation speakers (the first half of cv fold 1's "
            "speakers in every corpus with enough speakers): the model to ship. There is NO "
            "held-out test; its figures come from the cv benchmark.",
            _all_speakers,
            has_test=False,
        ),
        Protocol(
            "random",
            False,
            "SPEAKER-DEPENDENT, only for comparison with published numbers: clips are split at "
            "random (stratified by emotion, exact duplicates kept together), so the same "
            "speakers are in train and test and scores are inflated.",
            _random,
        ),
    )
}


# -- public API ------------------------------------------------------------------------------


def speaker_key(manifest: pd.DataFrame) -> pd.Series:
    """The grouping key ``"corpus:speaker"`` of every clip; missing where the speaker is unknown."""
    key = manifest["corpus"].astype(str) + ":" + manifest["speaker"].astype(str)
    return key.where(~_unknown_speaker(manifest))


def make_split(
    manifest: pd.DataFrame,
    protocol: str = "speaker-independent",
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    drop_unknown_speakers: bool = False,
    fold: str = "1",
) -> pd.DataFrame:
    """Runs ``protocol`` and checks the result; returns clip_id, partition and protocol.

    Rows follow the manifest's order; clips of corpora the protocol does not cover are left out.
    Clips with unknown speakers raise ``UnknownSpeakerError`` in speaker-independent protocols,
    or are left out with ``drop_unknown_speakers``.
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown split protocol {protocol!r}: choose one of {list(PROTOCOLS)}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction}: each must be in "
            "(0, 1) and their sum below 1"
        )
    spec = PROTOCOLS[protocol]
    _check_manifest(manifest)
    manifest = protocol_clips(manifest, protocol)
    clips = manifest
    if spec.speaker_independent:
        clips = _known_speakers(manifest, drop_unknown_speakers)
    split = spec.make(
        clips.reset_index(drop=True),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        fold=str(fold),
    ).assign(protocol=spec.name)
    check_no_leakage(manifest, split, spec.speaker_independent)
    return split


def protocol_clips(manifest: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The clips of the corpora that ``protocol`` covers."""
    corpora = PROTOCOLS[protocol].corpora
    return manifest if corpora is None else manifest[manifest["corpus"].isin(corpora)]


def make_folds(
    manifest: pd.DataFrame, k: int = 5, seed: int = 0, drop_unknown_speakers: bool = False
) -> pd.DataFrame:
    """Speaker-independent cross-validation folds: clip_id and fold (0..k-1), manifest order."""
    _check_manifest(manifest)
    clips = _known_speakers(manifest, drop_unknown_speakers).reset_index(drop=True)
    groups = _linked_groups(speaker_key(clips), clips["audio_hash"])
    n_groups = len(np.unique(groups))
    if not 2 <= k <= n_groups:
        raise InputError(
            f"{k} folds need 2 <= k <= the number of speakers ({n_groups}, counting speakers "
            "that share exact duplicates as one)"
        )
    fold = np.empty(len(clips), dtype=int)
    for i, test_rows in enumerate(_stratified_group_folds(_strata(clips), groups, k, seed)):
        fold[test_rows] = i
    folds = pd.DataFrame({"clip_id": clips["clip_id"], "fold": fold})
    problems = _leaks(manifest, folds["clip_id"], folds["fold"], speaker_independent=True)
    if problems:
        raise LeakageError("folds leak:\n" + "\n".join(problems))
    return folds


def check_no_leakage(manifest: pd.DataFrame, split: pd.DataFrame, speaker_independent: bool = True) -> None:
    """Raises ``LeakageError`` listing every way ``split`` lets evaluation clips leak.

    Checked: partition names, clip ids (unique, all in the manifest, every clip with a known
    speaker placed), exact duplicates in one partition, and, when ``speaker_independent``, every
    speaker in one partition and no clip of an unknown speaker.
    """
    _check_manifest(manifest)
    missing = [c for c in ("clip_id", "partition") if c not in split.columns]
    if missing:
        raise InputError(f"a split needs the columns clip_id and partition; missing: {missing}")
    problems = []
    bad_names = sorted(set(split["partition"].astype(str)) - set(PARTITIONS))
    if bad_names:
        problems.append(f"partition names not in {PARTITIONS}: {_listing(bad_names)}")
    problems += _leaks(manifest, split["clip_id"], split["partition"], speaker_independent)
    if problems:
        raise LeakageError("split leaks:\n" + "\n".join(problems))


def split_path(prepared_dir: str | Path, protocol: str, seed: int, fold: str = "1") -> Path:
    """Where ``prepare`` keeps a split, e.g. ``prepared/splits/speaker-independent-seed0.csv``
    or ``prepared/splits/cv-fold3-seed0.csv``."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown split protocol {protocol!r}: choose one of {list(PROTOCOLS)}")
    name = f"{protocol}-fold{fold}" if protocol == CV else protocol
    return Path(prepared_dir) / "splits" / f"{name}-seed{seed}.csv"


def folds_path(prepared_dir: str | Path, k: int, seed: int) -> Path:
    """Where ``prepare`` keeps folds, e.g. ``prepared/splits/folds-k5-seed0.csv``."""
    return Path(prepared_dir) / "splits" / f"folds-k{k}-seed{seed}.csv"


def load_split(path: str | Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """Reads a split written by ``prepare`` and checks it again against ``manifest``."""
    path = Path(path)
    try:
        split = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a split CSV ({err})") from None
    missing = [c for c in _SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise InputError(f"{path}: not a split CSV, columns {missing} are missing")
    protocols = sorted(set(split["protocol"]))
    if len(protocols) != 1 or protocols[0] not in PROTOCOLS:
        raise InputError(f"{path}: the protocol column must hold one of {list(PROTOCOLS)}, found {protocols}")
    try:
        check_no_leakage(
            protocol_clips(manifest, protocols[0]), split, PROTOCOLS[protocols[0]].speaker_independent
        )
    except LeakageError as err:
        raise LeakageError(f"{path}: {err}") from None
    return split[list(_SPLIT_COLUMNS)]


# -- helpers ---------------------------------------------------------------------------------


def _check_manifest(manifest: pd.DataFrame) -> None:
    missing = [c for c in _MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise InputError(f"the manifest lacks the columns {missing} that splitting needs")
    repeated = manifest["clip_id"][manifest["clip_id"].duplicated()]
    if len(repeated):
        raise InputError(f"the manifest repeats clip ids: {_listing(sorted(set(repeated)))}")


def _unknown_speaker(manifest: pd.DataFrame) -> pd.Series:
    speaker = manifest["speaker"]
    return speaker.isna() | (speaker.astype(str).str.strip() == "")


def _has_hash(audio_hashes: pd.Series) -> pd.Series:
    """Clips without a hash are linked to no other clip."""
    return audio_hashes.notna() & (audio_hashes.astype(str) != "")


def _known_speakers(manifest: pd.DataFrame, drop_unknown_speakers: bool) -> pd.DataFrame:
    unknown = _unknown_speaker(manifest)
    if not unknown.any():
        return manifest
    names = manifest["path"] if "path" in manifest.columns else manifest["clip_id"]
    examples = _listing(names[unknown].astype(str).tolist())
    if not drop_unknown_speakers:
        raise UnknownSpeakerError(
            f"{int(unknown.sum())} clips have no speaker, so a speaker-independent split cannot "
            f"keep each speaker in one partition: {examples}. Either give their speakers in a CSV "
            "manifest (columns path,emotion,speaker), or leave them out with "
            "drop_unknown_speakers=True (--drop-unknown-speakers)"
        )
    logger.warning(
        "leaving %d clips with unknown speakers out of the split: %s", int(unknown.sum()), examples
    )
    return manifest.loc[~unknown]


def _strata(manifest: pd.DataFrame) -> np.ndarray:
    """corpus/emotion: each corpus is spread over the partitions as far as its speakers allow."""
    return (manifest["corpus"].astype(str) + "/" + manifest["emotion"].astype(str)).to_numpy()


def _linked_groups(keys: pd.Series, audio_hashes: pd.Series) -> np.ndarray:
    """One group id per clip: clips are grouped by key, and groups sharing an audio hash merge."""
    key_codes, key_values = pd.factorize(keys)
    hash_codes, hash_values = pd.factorize(audio_hashes.where(_has_hash(audio_hashes)))
    # A bipartite graph of keys and hashes; each clip with a hash is an edge between the two.
    n_nodes = len(key_values) + len(hash_values)
    linked = hash_codes >= 0
    edges = coo_matrix(
        (np.ones(linked.sum()), (key_codes[linked], len(key_values) + hash_codes[linked])),
        shape=(n_nodes, n_nodes),
    )
    _, component = connected_components(edges, directed=False)
    return component[key_codes]


def _stratified_group_folds(
    strata: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[np.ndarray]:
    """The test rows of each of ``n_splits`` folds, stratified as far as the groups allow; every
    fold gets at least one group."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if (pd.Series(strata).value_counts() >= n_splits).any():  # else scikit-learn refuses
        with warnings.catch_warnings():
            # Small strata are expected (few speakers per corpus).
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            folds = [rows for _, rows in splitter.split(strata, strata, groups)]
        if all(len(rows) for rows in folds):
            return folds
    # Stratified, the splitter can (rarely) leave a fold empty when the emotion balance of two
    # folds ties; with one stratum it always fills the emptiest fold first, so none stays empty.
    one_stratum = np.zeros(len(groups), dtype=int)
    return [rows for _, rows in splitter.split(one_stratum, one_stratum, groups)]


def _grouped_split(
    strata: np.ndarray,
    groups: np.ndarray,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    unit: str,
) -> np.ndarray:
    """train/val/test per row: test is one of round(1 / test_fraction) group folds, val one of
    round((1 - test_fraction) / val_fraction) folds of the rest: fractions are shares of groups."""
    n_groups = len(np.unique(groups))
    if n_groups < 3:
        raise InputError(
            f"too few {unit} to split: {n_groups}; train, val and test need one each, and {unit} "
            "linked by exact duplicates count as one"
        )
    # StratifiedGroupKFold's shuffle only reorders groups whose emotion counts spread equally, so
    # on real corpora most seeds would give the same folds: the seed also picks which fold is used.
    rng = np.random.default_rng(seed)
    n_test_folds = min(max(2, round(1 / test_fraction)), n_groups)
    folds = _stratified_group_folds(strata, groups, n_test_folds, seed)
    # No fold is empty, so with 3+ folds every one leaves train and val a group each; with 2
    # folds of 3 groups, only the smaller does.
    folds = [rows for rows in folds if n_groups - len(np.unique(groups[rows])) >= 2]
    partition = np.full(len(groups), "train", dtype=object)
    partition[folds[rng.integers(len(folds))]] = "test"

    rest = np.flatnonzero(partition == "train")
    n_rest = len(np.unique(groups[rest]))
    n_val_folds = min(max(2, round((1 - test_fraction) / val_fraction)), n_rest)
    folds = _stratified_group_folds(strata[rest], groups[rest], n_val_folds, seed)
    partition[rest[folds[rng.integers(n_val_folds)]]] = "val"
    return partition


def _leaks(
    manifest: pd.DataFrame,
    clip_ids: pd.Series,
    assignment: pd.Series,
    speaker_independent: bool,
) -> list[str]:
    """Problems of an assignment of clips to partitions (or folds), one line each."""
    problems = []
    repeated = clip_ids[clip_ids.duplicated()]
    if len(repeated):
        problems.append(f"clip ids assigned more than once: {_listing(sorted(set(repeated)))}")
    strangers = clip_ids[~clip_ids.isin(manifest["clip_id"])]
    if len(strangers):
        problems.append(f"clip ids not in the manifest: {_listing(sorted(set(strangers)))}")

    unknown = _unknown_speaker(manifest)
    unplaced = manifest["clip_id"][~manifest["clip_id"].isin(clip_ids) & ~unknown]
    if len(unplaced):
        problems.append(
            f"{len(unplaced)} clips with known speakers are in no partition: {_listing(unplaced.tolist())}"
        )

    placed = pd.DataFrame({"clip_id": clip_ids, "where": assignment.astype(str)})
    placed = placed.merge(
        manifest.assign(speaker_key=speaker_key(manifest), unknown=unknown)[
            ["clip_id", "speaker_key", "unknown", "audio_hash"]
        ],
        on="clip_id",
    )
    if speaker_independent:
        problems += _crossing(placed, "speaker_key", "speakers")
        if placed["unknown"].any():
            problems.append(
                "clips with unknown speakers cannot be checked for speaker leakage: "
                f"{_listing(placed.loc[placed['unknown'], 'clip_id'].tolist())}"
            )
    problems += _crossing(
        placed[_has_hash(placed["audio_hash"])], "audio_hash", "exact duplicates (audio_hash)"
    )
    return problems


def _crossing(placed: pd.DataFrame, key: str, what: str) -> list[str]:
    """A problem line naming the values of ``key`` found in more than one partition."""
    places = placed.dropna(subset=[key]).groupby(key)["where"].unique()
    crossing = places[places.map(len) > 1]
    if crossing.empty:
        return []
    items = [f"{value} ({', '.join(sorted(where))})" for value, where in crossing.items()]
    return [f"{what} in more than one partition: {_listing(items)}"]


def _listing(items: list[str]) -> str:
    """The first few items, then how many more, so messages stay readable."""
    shown = ", ".join(str(i) for i in items[:_EXAMPLES])
    more = len(items) - _EXAMPLES
    return shown + (f" and {more} more" if more > 0 else "")
