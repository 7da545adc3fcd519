"""Speaker-independent splits, folds and the leakage guard, on manifests the tests make."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aed_tf.errors import InputError
from aed_tf.files import write_csv
from aed_tf.labels import CLASSES
from aed_tf.splits import (
    ALL_SPEAKERS,
    CV,
    PARTITIONS,
    PROTOCOLS,
    SHARED_SI,
    LeakageError,
    UnknownSpeakerError,
    check_no_leakage,
    folds_path,
    load_split,
    make_folds,
    make_split,
    speaker_key,
    split_path,
)

CORPORA = ("ravdess", "tess", "crema-d", "savee")
PROPERTY = settings(max_examples=40, deadline=None)


def clip_row(corpus: str, speaker: str, emotion: str, n: int) -> dict[str, str]:
    clip_id = f"{corpus}/{speaker or 'anon'}_{emotion}_{n}"
    return {
        "clip_id": clip_id,
        "path": f"/data/{clip_id}.wav",
        "corpus": corpus,
        "speaker": speaker,
        "emotion": emotion,
        "audio_hash": f"hash-{clip_id}",
    }


def synthetic_manifest(
    seed: int, n_speakers: int, max_clips: int = 4, within_dups: int = 2, cross_dups: int = 1
) -> pd.DataFrame:
    """n_speakers spread over the corpora, 0..max_clips clips per emotion (at least one per
    speaker), with duplicate audio_hash pairs within a speaker and across speakers."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_speakers):
        corpus = CORPORA[s % len(CORPORA)]
        counts = rng.integers(0, max_clips + 1, size=len(CLASSES))
        counts[rng.integers(len(CLASSES))] += 1
        for emotion, count in zip(CLASSES, counts):
            rows += [clip_row(corpus, f"s{s:02d}", emotion, n) for n in range(count)]
    manifest = pd.DataFrame(rows)
    key = manifest["corpus"] + ":" + manifest["speaker"]
    for _ in range(within_dups):
        speaker_rows = np.flatnonzero(key == key.iloc[rng.integers(len(manifest))])
        if len(speaker_rows) >= 2:
            a, b = rng.choice(speaker_rows, size=2, replace=False)
            manifest.loc[b, "audio_hash"] = manifest.loc[a, "audio_hash"]
    for _ in range(cross_dups):
        a = rng.integers(len(manifest))
        others = np.flatnonzero(key != key.iloc[a])
        manifest.loc[rng.choice(others), "audio_hash"] = manifest.loc[a, "audio_hash"]
    return manifest


def manifests(min_speakers: int = 4, max_speakers: int = 14) -> st.SearchStrategy[pd.DataFrame]:
    return st.builds(
        synthetic_manifest,
        seed=st.integers(0, 2**32 - 1),
        n_speakers=st.integers(min_speakers, max_speakers),
    )


def shared_si_manifest() -> pd.DataFrame:
    """The speakers of ../shared/datasets, a few clips each; no audio needed."""
    speakers = [("ravdess", f"{a:02d}") for a in range(1, 21)] + [("tess", "OAF"), ("tess", "YAF")]
    rows = [clip_row(c, s, e, n) for c, s in speakers for e in CLASSES[:3] for n in range(2)]
    return pd.DataFrame(rows)


def joined(manifest: pd.DataFrame, assignment: pd.DataFrame) -> pd.DataFrame:
    return assignment.merge(manifest, on="clip_id", validate="one_to_one")


def places_per(table: pd.DataFrame, column: str, where: str) -> pd.Series:
    return table.groupby(column)[where].nunique()


def assert_every_clip_once(manifest: pd.DataFrame, assignment: pd.DataFrame) -> None:
    assert not assignment["clip_id"].duplicated().any()
    assert sorted(assignment["clip_id"]) == sorted(manifest["clip_id"])


# -- speaker-independent ---------------------------------------------------------------------


@PROPERTY
@given(manifest=manifests(), seed=st.integers(0, 1000))
def test_speaker_independent_split_keeps_speakers_and_duplicates_together(manifest, seed):
    split = make_split(manifest, seed=seed)
    assert list(split.columns) == ["clip_id", "partition", "protocol"]
    assert set(split["protocol"]) == {"speaker-independent"}
    assert_every_clip_once(manifest, split)
    assert list(split["clip_id"]) == list(manifest["clip_id"])  # manifest order
    assert set(split["partition"]) == set(PARTITIONS)  # every partition non-empty
    table = joined(manifest, split).assign(key=lambda d: d["corpus"] + ":" + d["speaker"])
    assert (places_per(table, "key", "partition") == 1).all()
    assert (places_per(table, "audio_hash", "partition") == 1).all()


@PROPERTY
@given(manifest=manifests(), seed=st.integers(0, 1000), protocol=st.sampled_from(list(PROTOCOLS)))
def test_same_seed_gives_the_same_split(manifest, seed, protocol):
    # The fixed protocols need their corpora's speakers (and refuse duplicates across them).
    if protocol == SHARED_SI:
        manifest = shared_si_manifest()
    elif protocol in (CV, ALL_SPEAKERS):
        manifest = cv_manifest()
    pd.testing.assert_frame_equal(
        make_split(manifest, protocol, seed=seed), make_split(manifest, protocol, seed=seed)
    )


@settings(max_examples=15, deadline=None)
@given(manifest=manifests(min_speakers=20, max_speakers=28), seed=st.integers(0, 1000))
def test_different_seeds_give_different_splits(manifest, seed):
    # A seed picks one of about 7 x 6 balanced (test, val) fold pairs; 6 seeds agreeing on one
    # would happen by chance with probability below 1e-7.
    splits = {tuple(make_split(manifest, seed=s)["partition"]) for s in range(seed, seed + 6)}
    assert len(splits) > 1


def test_fractions_are_shares_of_speakers():
    manifest = synthetic_manifest(seed=3, n_speakers=40, cross_dups=0)
    table = joined(manifest, make_split(manifest, val_fraction=0.2, test_fraction=0.25))
    speakers = table.groupby("partition")["speaker"].nunique()
    assert speakers["test"] == pytest.approx(0.25 * 40, abs=2)
    assert speakers["val"] == pytest.approx(0.2 * 40, abs=2)


def test_every_corpus_reaches_test_when_its_speakers_allow():
    manifest = synthetic_manifest(seed=5, n_speakers=48, cross_dups=0)
    split = joined(manifest, make_split(manifest))
    for partition in PARTITIONS:
        assert set(split.loc[split["partition"] == partition, "corpus"]) == set(CORPORA)


def test_no_partition_is_empty_even_where_stratification_would_leave_one():
    # Here StratifiedGroupKFold leaves the val fold empty when val is drawn from the rest.
    manifest = synthetic_manifest(seed=229536, n_speakers=7)
    assert set(make_split(manifest, seed=377)["partition"]) == set(PARTITIONS)


def test_three_speakers_are_enough_and_two_are_not():
    three = synthetic_manifest(seed=0, n_speakers=3, within_dups=0, cross_dups=0)
    assert set(make_split(three)["partition"]) == set(PARTITIONS)
    two = synthetic_manifest(seed=0, n_speakers=2, within_dups=0, cross_dups=0)
    with pytest.raises(ValueError, match="too few speakers to split: 2;"):
        make_split(two)


def test_speakers_joined_by_a_duplicate_count_as_one():
    manifest = synthetic_manifest(seed=0, n_speakers=3, within_dups=0, cross_dups=1)
    with pytest.raises(ValueError, match="too few speakers to split: 2;"):
        make_split(manifest)


def test_split_does_not_share_memory_with_the_manifest():
    manifest = synthetic_manifest(seed=0, n_speakers=6)
    before = manifest.copy()
    split = make_split(manifest)
    split.loc[0, "clip_id"] = "changed"
    pd.testing.assert_frame_equal(manifest, before)


def test_bad_arguments_are_refused():
    manifest = synthetic_manifest(seed=0, n_speakers=6)
    with pytest.raises(ValueError, match="unknown split protocol 'speaker'"):
        make_split(manifest, "speaker")
    with pytest.raises(ValueError, match="val_fraction=0.6 and test_fraction=0.5"):
        make_split(manifest, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"lacks the columns \['audio_hash'\]"):
        make_split(manifest.drop(columns="audio_hash"))
    with pytest.raises(ValueError, match="repeats clip ids: ravdess/s00"):
        make_split(pd.concat([manifest, manifest.iloc[:1]]))


# -- unknown speakers ------------------------------------------------------------------------


def with_unknown_speakers(manifest: pd.DataFrame, n: int) -> pd.DataFrame:
    unknown = pd.DataFrame([clip_row("unknown", "", CLASSES[i % 7], i) for i in range(n)])
    return pd.concat([manifest, unknown], ignore_index=True)


@pytest.mark.parametrize("make", [make_split, make_folds], ids=["split", "folds"])
def test_unknown_speakers_are_refused_with_the_ways_out(make):
    manifest = with_unknown_speakers(synthetic_manifest(seed=0, n_speakers=8), n=7)
    with pytest.raises(UnknownSpeakerError) as caught:
        make(manifest)
    message = str(caught.value)
    assert message.startswith("7 clips have no speaker")
    assert "/data/unknown/anon_angry_0.wav" in message and "and 2 more" in message
    assert "CSV manifest (columns path,emotion,speaker)" in message
    assert "drop_unknown_speakers=True (--drop-unknown-speakers)" in message


def test_speaker_column_read_as_missing_counts_as_unknown():
    manifest = synthetic_manifest(seed=0, n_speakers=8)
    manifest.loc[0, "speaker"] = np.nan
    with pytest.raises(UnknownSpeakerError, match="1 clips have no speaker"):
        make_split(manifest)


@pytest.mark.parametrize("make", [make_split, make_folds], ids=["split", "folds"])
def test_dropping_unknown_speakers_leaves_them_out(make, caplog):
    known = synthetic_manifest(seed=1, n_speakers=8)
    manifest = with_unknown_speakers(known, n=3)
    with caplog.at_level(logging.WARNING, logger="aed_tf.splits"):
        result = make(manifest, drop_unknown_speakers=True)
    assert_every_clip_once(known, result)
    assert "leaving 3 clips with unknown speakers out" in caplog.text


def test_random_split_needs_no_speakers():
    manifest = with_unknown_speakers(synthetic_manifest(seed=0, n_speakers=6), n=10)
    assert_every_clip_once(manifest, make_split(manifest, "random"))


# -- shared-si -------------------------------------------------------------------------------


def test_shared_si_gives_the_benchmark_partitions_for_any_seed():
    manifest = shared_si_manifest()
    split = make_split(manifest, SHARED_SI, seed=0)
    pd.testing.assert_frame_equal(split, make_split(manifest, SHARED_SI, seed=7, test_fraction=0.3))
    speakers = joined(manifest, split).groupby("partition")["speaker"].unique().map(sorted)
    assert speakers["train"] == [f"{a:02d}" for a in range(1, 15)] + ["OAF"]
    assert speakers["val"] == ["15", "16"]
    assert speakers["test"] == ["17", "18", "19", "20", "YAF"]


def test_shared_si_leaves_other_corpora_out():
    ased = pd.DataFrame([clip_row("ased", f"{s:02d}", "sad", 0) for s in range(1, 66)])
    manifest = pd.concat([shared_si_manifest(), ased], ignore_index=True)
    split = make_split(manifest, SHARED_SI)
    pd.testing.assert_frame_equal(split, make_split(shared_si_manifest(), SHARED_SI))


def test_shared_si_refuses_other_speakers_by_name():
    manifest = pd.concat(
        [shared_si_manifest(), pd.DataFrame([clip_row("ravdess", "21", "sad", 0)])],
        ignore_index=True,
    )
    with pytest.raises(ValueError, match="also has speakers ravdess:21"):
        make_split(manifest, SHARED_SI)


def test_shared_si_names_missing_speakers():
    manifest = shared_si_manifest()
    manifest = manifest[~manifest["speaker"].isin(["16", "YAF"])]
    with pytest.raises(ValueError, match="missing: ravdess:16, tess:YAF"):
        make_split(manifest, SHARED_SI)


# -- cv and all-speakers ---------------------------------------------------------------------


def cv_manifest(duplicates: bool = True) -> pd.DataFrame:
    """The speakers of both shared folders (RAVDESS 01-20, TESS OAF/YAF, ASED 01-65), a few clips
    each, with an exact duplicate inside one speaker (as RAVDESS Actor_07 has)."""
    ased = [("ased", f"{s:02d}") for s in range(1, 66)]
    rows = [clip_row(c, s, e, n) for c, s in ased for e in ("sad", "angry") for n in range(2)]
    manifest = pd.concat([shared_si_manifest(), pd.DataFrame(rows)], ignore_index=True)
    if duplicates:
        actor_07 = np.flatnonzero(manifest["speaker"] == "07")
        manifest.loc[actor_07[1], "audio_hash"] = manifest.loc[actor_07[0], "audio_hash"]
    return manifest


def speakers_of(table: pd.DataFrame, partition: str, corpus: str) -> list[str]:
    rows = table[(table["partition"] == partition) & (table["corpus"] == corpus)]
    return sorted(rows["speaker"].unique())


def test_cv_folds_are_the_named_ones_and_test_every_speaker_once():
    manifest = cv_manifest()
    tested: list[tuple[str, str]] = []
    for fold in range(1, 6):
        split = make_split(manifest, CV, fold=str(fold), seed=fold)  # the seed changes nothing
        pd.testing.assert_frame_equal(split, make_split(manifest, CV, fold=str(fold), seed=0))
        table = joined(manifest, split)
        # No speaker and no exact duplicate in two of train, val and test.
        assert (places_per(table.assign(key=speaker_key(table)), "key", "partition") == 1).all()
        assert (places_per(table, "audio_hash", "partition") == 1).all()
        ravdess = [f"{a:02d}" for a in range(4 * fold - 3, 4 * fold + 1)]
        ased = [f"{s:02d}" for s in range(13 * fold - 12, 13 * fold + 1)]
        assert speakers_of(table, "test", "ravdess") == ravdess
        assert speakers_of(table, "test", "ased") == ased
        assert speakers_of(table, "test", "tess") == {1: ["OAF"], 2: ["YAF"]}.get(fold, [])
        # Validation: training speakers of the next fold, RAVDESS one male and one female.
        following = fold % 5 + 1
        assert speakers_of(table, "val", "ravdess") == [
            f"{4 * following - 3:02d}",
            f"{4 * following - 2:02d}",
        ]
        assert speakers_of(table, "val", "ased") == [
            f"{s:02d}" for s in range(13 * following - 12, 13 * following - 5)
        ]
        assert speakers_of(table, "val", "tess") == []
        tested += [tuple(k.split(":")) for k in speaker_key(table[table["partition"] == "test"]).unique()]
    assert sorted(tested) == sorted({tuple(k.split(":")) for k in speaker_key(manifest)})
    assert len(tested) == len(set(tested))


@pytest.mark.parametrize("corpus", ["ravdess", "tess", "ased"])
def test_cv_leaves_one_corpus_out(corpus):
    manifest = cv_manifest()
    table = joined(manifest, make_split(manifest, CV, fold=corpus))
    assert set(table.loc[table["partition"] == "test", "corpus"]) == {corpus}
    assert (table.loc[table["corpus"] == corpus, "partition"] == "test").all()
    val = table[table["partition"] == "val"]
    assert len(val) and corpus not in set(val["corpus"])
    assert set(table.loc[table["partition"] == "train", "corpus"]) == {"ravdess", "tess", "ased"} - {corpus}


def test_cv_and_all_speakers_refuse_data_without_validation_speakers():
    # RAVDESS and TESS alone: leaving RAVDESS out leaves TESS's two speakers, none for validation.
    manifest = cv_manifest()
    manifest = manifest[manifest["corpus"] != "ased"].reset_index(drop=True)
    make_split(manifest, CV, fold="tess")  # RAVDESS still gives validation speakers
    with pytest.raises(
        InputError,
        match=r"'ravdess' of the cv protocol has no validation speakers: .* other than ravdess \(this data: ravdess 20 speakers, tess 2 speakers\)",
    ):
        make_split(manifest, CV, fold="ravdess")
    tess = manifest[manifest["corpus"] == "tess"].reset_index(drop=True)
    with pytest.raises(InputError, match="fold '1' of the cv protocol has no validation speakers"):
        make_split(tess, CV, fold="1")
    with pytest.raises(InputError, match="all-speakers protocol has no validation speakers"):
        make_split(tess, ALL_SPEAKERS)


def test_cv_refuses_an_unknown_fold_and_a_duplicate_across_folds():
    manifest = cv_manifest()
    for fold in ("0", "6", "savee", ""):
        with pytest.raises(ValueError, match="tests a speaker fold 1-5 or a corpus"):
            make_split(manifest, CV, fold=fold)
    # Fixed folds cannot keep an exact duplicate of two folds' speakers together: refused.
    manifest.loc[manifest["speaker"] == "01", "audio_hash"] = manifest.loc[
        manifest["speaker"] == "05", "audio_hash"
    ].iloc[0]
    with pytest.raises(LeakageError, match="exact duplicates"):
        make_split(manifest, CV, fold="1")


def test_all_speakers_trains_on_every_speaker_but_the_validation_ones():
    manifest = cv_manifest()
    table = joined(manifest, make_split(manifest, ALL_SPEAKERS))
    assert set(table["partition"]) == {"train", "val"}
    assert speakers_of(table, "val", "ravdess") == ["01", "02"]
    assert speakers_of(table, "val", "ased") == [f"{s:02d}" for s in range(1, 8)]
    assert not PROTOCOLS[ALL_SPEAKERS].has_test and "NO held-out test" in PROTOCOLS[ALL_SPEAKERS].description


def test_cv_split_files_are_named_by_fold(tmp_path):
    assert split_path(tmp_path, CV, 0, "ased").name == "cv-foldased-seed0.csv"
    assert split_path(tmp_path, CV, 1, "3").name == "cv-fold3-seed1.csv"
    manifest = cv_manifest()
    split = make_split(manifest, CV, fold="2")
    write_csv(split, tmp_path / "s.csv")
    pd.testing.assert_frame_equal(load_split(tmp_path / "s.csv", manifest), split)


# -- random ----------------------------------------------------------------------------------


@PROPERTY
@given(manifest=manifests(), seed=st.integers(0, 1000))
def test_random_split_keeps_duplicates_together(manifest, seed):
    split = make_split(manifest, "random", seed=seed)
    assert set(split["protocol"]) == {"random"}
    assert_every_clip_once(manifest, split)
    assert (places_per(joined(manifest, split), "audio_hash", "partition") == 1).all()


def test_random_split_is_speaker_dependent():
    assert not PROTOCOLS["random"].speaker_independent
    assert "SPEAKER-DEPENDENT" in PROTOCOLS["random"].description
    assert "only for comparison" in PROTOCOLS["random"].description
    manifest = synthetic_manifest(seed=0, n_speakers=6, max_clips=8)
    split = make_split(manifest, "random")
    table = joined(manifest, split).assign(key=lambda d: d["corpus"] + ":" + d["speaker"])
    assert (places_per(table, "key", "partition") > 1).any()
    with pytest.raises(LeakageError, match="speakers in more than one partition"):
        check_no_leakage(manifest, split, speaker_independent=True)


def test_registry_describes_every_protocol():
    assert set(PROTOCOLS) == {"speaker-independent", CV, ALL_SPEAKERS, SHARED_SI, "random"}
    assert PROTOCOLS["speaker-independent"].speaker_independent
    assert PROTOCOLS[SHARED_SI].speaker_independent
    for name, protocol in PROTOCOLS.items():
        assert protocol.name == name
        assert protocol.description.endswith(".")


# -- folds -----------------------------------------------------------------------------------


@PROPERTY
@given(manifest=manifests(min_speakers=6), seed=st.integers(0, 1000), k=st.integers(2, 5))
def test_folds_keep_speakers_and_duplicates_together(manifest, seed, k):
    folds = make_folds(manifest, k=k, seed=seed)
    assert list(folds.columns) == ["clip_id", "fold"]
    assert_every_clip_once(manifest, folds)
    assert sorted(set(folds["fold"])) == list(range(k))
    table = joined(manifest, folds).assign(key=lambda d: d["corpus"] + ":" + d["speaker"])
    assert (places_per(table, "key", "fold") == 1).all()
    assert (places_per(table, "audio_hash", "fold") == 1).all()
    pd.testing.assert_frame_equal(folds, make_folds(manifest, k=k, seed=seed))


def test_no_fold_is_empty_even_where_stratification_would_leave_one():
    # On this manifest StratifiedGroupKFold leaves one of 6 folds empty, for any seed.
    manifest = synthetic_manifest(seed=111, n_speakers=7)
    assert sorted(set(make_folds(manifest, k=6)["fold"])) == list(range(6))


def test_more_folds_than_speakers_is_refused():
    manifest = synthetic_manifest(seed=0, n_speakers=4, cross_dups=0)
    with pytest.raises(ValueError, match=r"5 folds need 2 <= k <= the number of speakers \(4"):
        make_folds(manifest, k=5)


# -- the guard -------------------------------------------------------------------------------


@pytest.fixture
def manifest() -> pd.DataFrame:
    return synthetic_manifest(seed=2, n_speakers=10, within_dups=0, cross_dups=0)


@pytest.fixture
def split(manifest) -> pd.DataFrame:
    return make_split(manifest, seed=0)


def first_clip_of(split: pd.DataFrame, partition: str) -> int:
    return int(np.flatnonzero(split["partition"] == partition)[0])


def test_guard_catches_a_speaker_in_two_partitions(manifest, split):
    row = first_clip_of(split, "test")
    split.loc[row, "partition"] = "train"
    moved = speaker_key(manifest)[manifest["clip_id"] == split.loc[row, "clip_id"]].item()
    with pytest.raises(LeakageError, match=f"speakers in .* partition: {moved} \\(test, train\\)"):
        check_no_leakage(manifest, split)
    check_no_leakage(manifest, split, speaker_independent=False)


def test_guard_catches_duplicates_in_two_partitions_for_every_protocol(manifest, split):
    a, b = first_clip_of(split, "train"), first_clip_of(split, "test")
    manifest.loc[manifest["clip_id"] == split.loc[b, "clip_id"], "audio_hash"] = "shared-audio"
    manifest.loc[manifest["clip_id"] == split.loc[a, "clip_id"], "audio_hash"] = "shared-audio"
    for speaker_independent in (True, False):
        with pytest.raises(
            LeakageError,
            match=r"exact duplicates \(audio_hash\) in more than "
            r"one partition: shared-audio \(test, train\)",
        ):
            check_no_leakage(manifest, split, speaker_independent)


def test_guard_catches_a_clip_placed_twice(manifest, split):
    doubled = pd.concat([split, split.iloc[[0]]], ignore_index=True)
    with pytest.raises(LeakageError, match=f"assigned more than once: {split.loc[0, 'clip_id']}"):
        check_no_leakage(manifest, doubled)


def test_guard_catches_clips_not_in_the_manifest(manifest, split):
    split.loc[0, "clip_id"] = "ravdess/nobody"
    with pytest.raises(LeakageError) as caught:
        check_no_leakage(manifest, split)
    assert "clip ids not in the manifest: ravdess/nobody" in str(caught.value)
    assert f"1 clips with known speakers are in no partition: {manifest.loc[0, 'clip_id']}" in str(
        caught.value
    )


def test_guard_catches_unknown_partition_names(manifest, split):
    split["partition"] = split["partition"].replace("val", "validation")
    with pytest.raises(LeakageError, match="partition names not in .*: validation"):
        check_no_leakage(manifest, split)


def test_guard_allows_only_unknown_speakers_to_be_missing(manifest, split):
    with_unknown = with_unknown_speakers(manifest, n=2)
    check_no_leakage(with_unknown, split)
    placed_unknown = pd.concat(
        [split, pd.DataFrame({"clip_id": with_unknown["clip_id"].iloc[-2:], "partition": "train"})]
    )
    with pytest.raises(LeakageError, match="unknown speakers cannot be checked"):
        check_no_leakage(with_unknown, placed_unknown)
    check_no_leakage(with_unknown, placed_unknown, speaker_independent=False)


def test_guard_messages_stay_short(manifest, split):
    split["partition"] = ["train", "test"] * (len(split) // 2) + ["val"] * (len(split) % 2)
    with pytest.raises(LeakageError, match=r"and \d+ more") as caught:
        check_no_leakage(manifest, split)
    assert len(str(caught.value)) < 600


# -- files -----------------------------------------------------------------------------------


def test_paths_name_protocol_seed_and_k(tmp_path):
    assert split_path(tmp_path, "speaker-independent", 0) == (
        tmp_path / "splits" / "speaker-independent-seed0.csv"
    )
    assert folds_path(tmp_path, 5, 3) == tmp_path / "splits" / "folds-k5-seed3.csv"
    with pytest.raises(ValueError, match="unknown split protocol"):
        split_path(tmp_path, "speaker_independent", 0)


@pytest.mark.parametrize("protocol", ["speaker-independent", "random"])
def test_write_and_load_round_trip(tmp_path, manifest, protocol):
    # Speakers like RAVDESS's "07" must come back as text, not as the number 7.
    manifest["speaker"] = manifest["speaker"].str.replace("s", "0")
    split = make_split(manifest, protocol, seed=4)
    path = write_csv(split, split_path(tmp_path, protocol, 4))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    pd.testing.assert_frame_equal(load_split(path, manifest), split)


def test_load_refuses_a_tampered_split(tmp_path, manifest, split):
    path = write_csv(split, tmp_path / "split.csv")
    lines = path.read_text().splitlines()
    row = 1 + first_clip_of(split, "test")
    lines[row] = lines[row].replace(",test,", ",train,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LeakageError, match=f"{path}: split leaks:\nspeakers in more than one"):
        load_split(path, manifest)


def test_load_names_the_file_it_cannot_read(tmp_path, manifest):
    not_a_split = write_csv(manifest, tmp_path / "manifest.csv")
    with pytest.raises(ValueError, match=f"{not_a_split}: not a split CSV, columns"):
        load_split(not_a_split, manifest)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"{empty}: not a split CSV"):
        load_split(empty, manifest)
