"""The eGeMAPS functionals, the fusion head as arrays, and the fusion itself."""

import json
import os

import numpy as np
import pytest

from aed_tf import baseline, functionals
from aed_tf.functionals import (
    FusionHead,
    egemaps_feature_matrix,
    fusable_per_speaker,
    fuse,
    fuse_heads,
    moments,
    standardize,
    standardize_per_speaker,
)


def separable(classes=(0, 2, 3), clips=20, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(classes, clips)
    features = rng.normal(size=(len(labels), 88))
    features[:, 0] += labels  # separable enough to learn
    return features, labels


def test_fusion_multiplies_the_models_probabilities_by_the_exponentiated_margins():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    margins = np.array([[-1.0, 0.5, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(fuse(probabilities, margins, 0.0)[0], probabilities[0])
    fused = fuse(probabilities, margins, 1.0)
    expected = probabilities[0] * np.exp(margins[0])
    np.testing.assert_allclose(fused[0], expected / expected.sum())
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    assert fused[1].argmax() == 2 and fused[1, 0] > 0  # a probability kept as 0 counts as 1e-6
    assert fuse(probabilities, margins, 100.0)[0].argmax() == 1  # the margins decide


def test_the_heads_margins_are_the_svms_and_a_class_it_never_saw_is_never_favoured():
    features, labels = separable()
    model = baseline.fit_linear_svm_baseline(features, labels)
    scores = FusionHead.from_pipeline(model, 5).margins(features)
    assert scores.shape == (60, 5)
    np.testing.assert_allclose(scores[:, [0, 2, 3]], model.decision_function(features))
    for unseen in (1, 4):
        np.testing.assert_allclose(scores[:, unseen], scores[:, [0, 2, 3]].min(axis=1))
    two = baseline.fit_linear_svm_baseline(features[:40], labels[:40])  # classes 0 and 2
    margins = FusionHead.from_pipeline(two, 3).margins(features[:40])
    np.testing.assert_array_equal(margins[:, [0, 2]].argmax(axis=1) * 2, two.predict(features[:40]))
    np.testing.assert_allclose(margins[:, 0], -margins[:, 2])
    np.testing.assert_allclose(margins[:, 2], two.decision_function(features[:40]))


@pytest.mark.parametrize("classes", [(0, 2, 3), (0, 2)], ids=["three classes", "two classes"])
def test_a_head_survives_json_unchanged(classes):
    features, labels = separable(classes)
    head = FusionHead.from_pipeline(baseline.fit_linear_svm_baseline(features, labels), 4, weight=1.5)
    again = FusionHead.from_dict(json.loads(json.dumps(head.to_dict())))
    assert again.weight == 1.5 and again.classes_seen == head.classes_seen
    np.testing.assert_array_equal(again.margins(features), head.margins(features))


def test_heads_fuse_at_their_own_weights_and_an_ensemble_averages_them():
    features, labels = separable()
    head = FusionHead.from_pipeline(baseline.fit_linear_svm_baseline(features, labels), 4)
    probabilities = np.full((len(features), 4), 0.25)
    margins = head.margins(features)
    np.testing.assert_allclose(
        fuse_heads(probabilities, [head.with_weight(2.0)], features), fuse(probabilities, margins, 2.0)
    )
    np.testing.assert_allclose(fuse_heads(probabilities, [head.with_weight(0.0)], features), probabilities)
    both = fuse_heads(probabilities, [head.with_weight(1.0), head.with_weight(3.0)], features)
    np.testing.assert_allclose(both, fuse(probabilities, margins, 2.0))


def test_per_speaker_standardisation_uses_each_speakers_own_clips():
    rng = np.random.default_rng(1)
    features = np.concatenate([rng.normal(5, 2, (30, 3)), rng.normal(-3, 0.5, (20, 3))])
    speakers = ["a"] * 30 + ["b"] * 20
    out = standardize_per_speaker(features, speakers)
    for rows in (slice(0, 30), slice(30, 50)):
        np.testing.assert_allclose(out[rows].mean(axis=0), 0, atol=1e-9)
        np.testing.assert_allclose(out[rows].std(axis=0), 1, atol=1e-6)
    np.testing.assert_allclose(out[30:], standardize(features[30:], moments(features[30:])))
    features[0, 1] = np.nan  # a clip openSMILE found too short: it counts for nothing
    out = standardize_per_speaker(features, speakers)
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1:30], standardize(features[1:30], moments(features[1:30])))
    np.testing.assert_allclose(out[30:], standardize(features[30:], moments(features[30:])))
    assert np.isnan(standardize_per_speaker(features, speakers, min_clips=25)[30:]).all()  # b has 20


def test_egemaps_gives_88_functionals_per_clip_the_same_in_one_process_or_two():
    rng = np.random.default_rng(2)
    t = np.arange(16000) / 16000
    clips = [
        (np.sin(2 * np.pi * (120 + 40 * i) * t) * (0.3 + 0.1 * i) + 0.01 * rng.normal(size=t.size)).astype(
            np.float32
        )
        for i in range(4)
    ]
    alone = egemaps_feature_matrix(clips, 16000, workers=1)
    assert alone.shape == (4, 88) and np.isfinite(alone).all()
    np.testing.assert_allclose(egemaps_feature_matrix(clips, 16000, workers=2), alone)
    assert egemaps_feature_matrix([], 16000, workers=1).shape == (0, 88)


def test_the_reference_features_are_the_recipes_three_librosa_calls():
    import librosa

    waveform = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)
    recipe = np.concatenate(
        [
            librosa.feature.mfcc(y=waveform, sr=16000, n_mfcc=40).mean(axis=1),
            librosa.feature.chroma_stft(S=np.abs(librosa.stft(waveform)), sr=16000).mean(axis=1),
            librosa.feature.melspectrogram(y=waveform, sr=16000).mean(axis=1),
        ]
    )
    features = baseline.reference_features(waveform, 16000)
    assert features.shape == (baseline.REFERENCE_SIZE,)
    np.testing.assert_allclose(features, recipe, rtol=1e-6)


def test_the_rbf_svm_learns_classes_that_no_plane_separates():
    rng = np.random.default_rng(0)

    def ball_and_ring(clips):  # a ring around a ball: no hyperplane separates them
        ring = rng.normal(size=(clips, 88))
        ring *= 2.0 * np.sqrt(88) / np.linalg.norm(ring, axis=1, keepdims=True)
        return np.concatenate([rng.normal(size=(clips, 88)), ring]), np.repeat([0, 1], clips)

    features, labels = ball_and_ring(300)
    test, test_labels = ball_and_ring(100)

    def uar(model):
        predicted = model.predict(test)
        return np.mean([(predicted[test_labels == c] == c).mean() for c in (0, 1)])

    assert uar(baseline.fit_rbf_svm_baseline(features, labels)) > 0.95
    assert uar(baseline.fit_linear_svm_baseline(features, labels)) < 0.7  # the plane cannot


@pytest.mark.parametrize(
    "module, cached, computed, folder",
    [
        (functionals, "cached_egemaps_matrix", "egemaps_feature_matrix", functionals.EGEMAPS_CACHE_VERSION),
        (baseline, "cached_reference_matrix", "reference_feature_matrix", baseline.REFERENCE_CACHE_VERSION),
    ],
)
def test_cached_features_equal_the_computed_ones_and_are_read_back(
    tmp_path, monkeypatch, module, cached, computed, folder
):
    """Each wrapper of `aed_tf.audio.cached_clip_features` (whose test covers damaged entries and
    killed runs) keeps its own features in its own folder."""
    t = np.arange(8000) / 16000
    rng = np.random.default_rng(3)
    clips = [
        (np.sin(2 * np.pi * f * t) * 0.3 + 0.01 * rng.normal(size=t.size)).astype(np.float32)
        for f in (150, 220)
    ]
    first = getattr(module, cached)(clips, 16000, tmp_path)
    np.testing.assert_allclose(first, getattr(module, computed)(clips, 16000))
    entries = list((tmp_path / folder / "16000hz").rglob("*.npy"))
    assert len(entries) == 2 and not list(tmp_path.rglob(".tmp*"))

    def not_again(*args, **kwargs):
        raise AssertionError("computed again: not read from the cache")

    monkeypatch.setattr(module, computed, not_again)
    np.testing.assert_array_equal(getattr(module, cached)(clips[::-1], 16000, tmp_path), first[::-1])


def test_background_caching_fills_the_cache_from_workers_at_the_lowest_priority(tmp_path, monkeypatch):
    """What training starts before it fits the network: the functionals of its clips, cached by
    worker processes that yield to every other process."""
    t = np.arange(8000) / 16000
    clips = [(np.sin(2 * np.pi * f * t) * 0.3).astype(np.float32) for f in (150, 220, 330)]
    computed = functionals.cache_in_background(clips, 16000, tmp_path).result(timeout=120)
    np.testing.assert_allclose(computed, egemaps_feature_matrix(clips, 16000))
    assert len(list((tmp_path / functionals.EGEMAPS_CACHE_VERSION).rglob("*.npy"))) == 3

    parent = os.nice(0)
    worker = functionals._pool(2, functionals.BACKGROUND_NICENESS).submit(os.nice, 0).result(timeout=60)
    assert worker == min(19, parent + functionals.BACKGROUND_NICENESS)
    assert functionals._pool(2).submit(os.nice, 0).result(timeout=60) == parent  # serving's: not lowered

    def not_again(*args, **kwargs):
        raise AssertionError("computed again: not read from the cache")

    monkeypatch.setattr(functionals, "egemaps_feature_matrix", not_again)
    np.testing.assert_array_equal(functionals.cached_egemaps_matrix(clips, 16000, tmp_path), computed)


def test_background_caching_hands_its_error_to_whoever_waits_for_it(tmp_path):
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    clip = np.sin(np.arange(8000) / 10).astype(np.float32)
    with pytest.raises(OSError):
        functionals.cache_in_background([clip], 16000, blocked).result(timeout=120)


def test_the_fusion_applies_to_clips_with_functionals_of_speakers_with_enough_of_them(monkeypatch):
    monkeypatch.setattr(functionals, "MIN_REFERENCE_WINDOWS", 3)
    rng = np.random.default_rng(4)
    features = rng.normal(size=(9, 88))
    features[1, 5] = np.nan  # a clip too short for openSMILE
    speakers = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 2)
    standardized, usable = fusable_per_speaker(features, speakers)
    # a: 3 clips with functionals, fused; b: 3; c: 2, too few.
    np.testing.assert_array_equal(usable, [True, False, True, True, True, True, True, False, False])
    rows = [0, 2, 3]
    np.testing.assert_allclose(standardized[rows], standardize(features[rows], moments(features[rows])))
    assert fusable_per_speaker(features, speakers, min_clips=2)[1][7:].all()  # training's rule
    head = FusionHead(7, (0, 1, 2), np.zeros(88), np.ones(88), rng.normal(size=(3, 88)), np.zeros(3), 1.0)
    probabilities = np.full((9, 7), 1 / 7)
    fused = fuse_heads(probabilities, [head], standardized)
    np.testing.assert_allclose(fused[~usable], probabilities[~usable])  # the model alone
    np.testing.assert_allclose(
        fused[usable], fuse(probabilities[usable], head.margins(standardized[usable]), 1.0)
    )


def test_a_head_that_is_not_one_is_refused_naming_its_file():
    from aed_tf.errors import UserError

    features, labels = separable()
    good = FusionHead.from_pipeline(baseline.fit_linear_svm_baseline(features, labels), 4).to_dict()
    assert FusionHead.from_dict(good).coef.shape == (3, 88)
    for broken in (
        {**good, "coef": good["coef"][:2]},  # rows unlike its classes
        {**good, "mean": good["mean"][:10]},  # another feature set
        {**good, "classes_seen": [0, 2, 9]},  # a class the model does not have
        {**good, "weight": float("nan")},
        {key: value for key, value in good.items() if key != "intercept"},
    ):
        with pytest.raises(UserError, match=r"^run/fusion.json: not a readable fusion head"):
            FusionHead.from_dict(broken, source="run/fusion.json")
