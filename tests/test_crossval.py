"""The cross-validation benchmark on a synthetic tree of three corpora: folds, baselines, tables."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aed_tf import cli
from aed_tf.bench import ENVIRONMENT_KEYS, benchmark_environment, cv
from aed_tf.bench.cv import (
    FUSION_WEIGHTS,
    SPEAKER_FOLDS,
    default_folds,
    format_cv_table,
    model_name,
    predictions_file,
    seed_ensemble,
    summarize,
    validation_summary,
)
from aed_tf.config import Config
from aed_tf.errors import InputError
from aed_tf.evaluate import evaluate
from aed_tf.labels import class_names
from aed_tf.prepare import prepare
from aed_tf.runs import Run
from tests.synth import make_ased_tree, make_ravdess_tree, tiny_config


@pytest.fixture(scope="module")
def three_corpora(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv-data")
    make_ravdess_tree(root / "RAVDESS", actors=range(1, 11), takes=1)
    make_ased_tree(root / "ASED", speakers=range(1, 11))
    return root


def test_bench_cv_writes_every_fold_corpus_and_baseline(three_corpora, tmp_path, capsys, monkeypatch):
    from aed_tf import functionals

    monkeypatch.setattr(functionals, "MIN_REFERENCE_WINDOWS", 2)  # its test speakers have 4 clips
    output = tmp_path / "cv.json"
    config = tiny_config(tmp_path, three_corpora)
    argv = [
        "bench",
        "cv",
        "--test-folds",
        "1",
        "ased",
        "--seeds",
        "0",
        "1",
        "--output",
        str(output),
        "--data-roots",
        str(three_corpora),
        "--prepared-dir",
        config.data.prepared_dir,
        "--cache-dir",
        config.data.cache_dir,
        "--output-dir",
        config.train.output_dir,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--clip-seconds",
        "0.5",
        "--n-mels",
        "32",
        "--time-mask-width",
        "5",
        "--freq-mask-width",
        "4",
    ]
    assert cli.main(argv) == 0
    result = json.loads(output.read_text())
    assert "ravdess: 1: 01-02, 2: 03-04" in result["folds_description"]
    assert "fold 1: ased 03, ravdess 03" in result["validation_description"]
    models = [row["model"] for row in result["rows"]]
    assert models[0].startswith("audiocnn (") and "epochs=1" in models[0]
    # The recommended setting normalises per speaker: measured with the test speakers' clips and
    # each clip alone, fused with the per-speaker eGeMAPS SVM, and fused as each run serves (its
    # own head and weight); each but the last also as the ensemble of its two seeds.
    assert "fusion" not in models[0]  # the same network: the fused rows say they are fused
    assert len(models) == 15 and sum("per-speaker standardised" in m for m in models) == 3
    assert sum(m.startswith("eGeMAPS + RBF SVM") for m in models) == 2
    assert sum(m.endswith(", ensemble of its seeds") for m in models) == 4
    assert sum(m.endswith("each clip alone (training statistics)") for m in models) == 1
    assert sum(m.endswith("each clip alone (its own statistics)") for m in models) == 1
    model_row = result["rows"][0]
    assert model_row["seeds"] == [0, 1] and model_row["folds"] == ["1", "ased"]
    summary = model_row["summary"]
    # Fold 1 tests RAVDESS actors 01-02 and ASED speakers 01-02: 2 x 4 clips each.
    assert summary["per_corpus"]["ravdess"]["clips"] == 8 and summary["per_corpus"]["ased"]["clips"] == 8
    assert summary["per_corpus"]["ravdess"]["uar"]["n"] == 2
    assert set(summary["per_corpus"]["ravdess"]["recall_per_class"]) == {"angry", "happy", "neutral", "sad"}
    assert summary["leave_corpus_out"]["ased"]["clips"] == 40
    head = summary["headline_uar"]
    per_seed = [
        np.mean([summary["per_corpus"][c]["uar_per_seed"][str(s)] for c in ("ased", "ravdess")])
        for s in (0, 1)
    ]
    assert head["mean"] == pytest.approx(np.mean(per_seed))
    # Settings are chosen by validation: each speaker-fold run's kept-epoch validation UAR, read
    # from its own metrics.json; leave-one-corpus-out runs do not count.
    validation = model_row["validation"]
    assert [(r["seed"], r["fold"]) for r in validation["per_run"]] == [(0, "1"), (1, "1")]
    speaker_fold_runs = [
        path.parent
        for path in Path(config.train.output_dir).glob("bench-audiocnn-*/config.json")
        if Run.load(path.parent).config.data.fold == "1"
    ]
    assert sorted((r["seed"], r["uar"]) for r in validation["per_run"]) == sorted(
        (Run.load(run).config.data.seed, Run.load(run).metrics()["val"]["uar"]) for run in speaker_fold_runs
    )
    # And the mean over corpora of each corpus's validation UAR, of the network alone.
    of_corpora = {
        Run.load(run).config.data.seed: evaluate(run, "val", fusion=False).per_corpus["uar"].mean()
        for run in speaker_fold_runs
    }
    assert {r["seed"]: r["uar_of_corpora"] for r in validation["per_run"]} == pytest.approx(of_corpora)
    assert validation["uar"]["mean"] == pytest.approx(np.mean([r["uar"] for r in validation["per_run"]]))
    # The fused row: each fold's weight chosen on the validation speakers of both seeds' fold-1
    # runs (the only runs with validation predictions), without ASED's for ASED left out.
    fused = next(
        row
        for row in result["rows"]
        if row["model"] == f"{models[0]}, fused with the per-speaker eGeMAPS SVM"
    )
    per_fold = fused["fusion"]["per_fold"]
    assert list(per_fold) == ["1", "ased"] and all(c["weight"] in FUSION_WEIGHTS for c in per_fold.values())
    assert all(c["runs"] == [[0, "1"], [1, "1"]] for c in per_fold.values())
    assert set(per_fold["1"]["validation_uar_of_corpora_per_weight"]) == {str(w) for w in FUSION_WEIGHTS}
    assert fused["summary"]["per_corpus"]["ravdess"]["clips"] == 8 and fused["folds"] == ["1", "ased"]
    assert fused["summary"]["leave_corpus_out"]["ased"]["clips"] == 40
    assert fused["command"] == model_row["command"] and fused["seeds"] == [0, 1]
    # As served: every run fitted its head, and the row is what evaluate gives each run fused.
    served = next(
        row
        for row in result["rows"]
        if row["model"] == f"{models[0]}, fused as served (each run's eGeMAPS head and weight)"
    )
    assert served["seeds"] == [0, 1] and served["folds"] == ["1", "ased"]
    assert served["summary"]["leave_corpus_out"]["ased"]["clips"] == 40
    run_dirs = [path.parent for path in Path(config.train.output_dir).glob("bench-audiocnn-*/config.json")]
    assert len(run_dirs) == 4 and all(Run.load(run).fusion_head() is not None for run in run_dirs)
    fold_1 = [run for run in run_dirs if Run.load(run).config.data.fold == "1"]
    ravdess_fused = [
        evaluate(run, "test").per_corpus.set_index("corpus").loc["ravdess", "uar"] for run in fold_1
    ]
    per_seed = served["summary"]["per_corpus"]["ravdess"]["uar_per_seed"]
    assert sorted(per_seed.values()) == pytest.approx(sorted(ravdess_fused), abs=1e-9)
    assert all(
        "validation" not in row for row in result["rows"][1:]
    )  # the lone-clip, fused and baseline rows
    assert set(ENVIRONMENT_KEYS) <= set(result)  # the block every benchmark result records
    table = output.with_suffix(".md").read_text()
    of = validation["uar_of_corpora"]
    assert (
        f"{validation['uar']['mean']:.3f} ± {validation['uar']['std']:.3f} ({of['mean']:.3f} ± {of['std']:.3f})"
        in table
    )
    for expected in (
        "headline",
        "Leave one corpus out",
        "eGeMAPS + linear SVM, per-speaker standardised",
        "eGeMAPS + RBF SVM, per-speaker standardised",
        "Each fold's weight w is chosen on the validation speakers of the runs",
        f"1: {per_fold['1']['weight']:g} (",
        "Recall per class",
        "UAR per fold",
        "aed-tf bench cv --test-folds 1 ased",
        f"Measured with {result['cpu_count']} CPUs",
        f"TensorFlow {benchmark_environment()['tensorflow_version']}",
    ):
        assert expected in table
    assert "fold ased seed 1" in capsys.readouterr().out

    # Again: every finished run is reused, and a row another command made is kept.
    runs = sorted(Path(config.train.output_dir).glob("bench-audiocnn-*/serving.keras"))
    assert len(runs) == 4
    stamps = [run.stat().st_mtime_ns for run in runs]
    result["rows"].append({**model_row, "model": "earlier model", "command": "earlier command"})
    output.write_text(json.dumps(result))
    assert cli.main(argv + ["--no-baselines"]) == 0
    again = json.loads(output.read_text())
    assert [run.stat().st_mtime_ns for run in runs] == stamps
    assert "earlier model" in [row["model"] for row in again["rows"]]
    assert again["rows"][0]["summary"] == summary
    # Without the baselines there are no margins to fuse: an earlier fused row is not kept beside
    # a model row that may now hold other runs.
    assert not any(row["model"].startswith(fused["model"]) for row in again["rows"])

    # A seed and fold measured by another command join the row: the predictions kept beside the
    # result stand in for the runs (gone here), and the spread is over the three seeds.
    for run in Path(config.train.output_dir).glob("bench-audiocnn-*"):
        shutil.rmtree(run)
    later = [
        "bench",
        "cv",
        "--test-folds",
        "2",
        "--seeds",
        "2",
        *argv[argv.index("--output") :],
        "--no-baselines",
    ]
    assert cli.main(later) == 0
    merged = json.loads(output.read_text())["rows"][0]
    assert merged["model"] == model_row["model"]
    assert merged["seeds"] == [0, 1, 2] and merged["folds"] == ["1", "2", "ased"]
    assert merged["runs"] == {"0": ["1", "ased"], "1": ["1", "ased"], "2": ["2"]}
    assert merged["command"].startswith(
        again["rows"][0]["command"] + " && aed-tf bench cv --test-folds 2 --seeds 2"
    )
    ravdess = merged["summary"]["per_corpus"]["ravdess"]
    for seed in ("0", "1"):
        assert ravdess["uar_per_seed"][seed] == summary["per_corpus"]["ravdess"]["uar_per_seed"][seed]
    assert ravdess["uar"]["n"] == 3 and ravdess["clips"] == 16 and set(ravdess["uar_per_fold"]) == {"1", "2"}
    assert merged["summary"]["leave_corpus_out"] == summary["leave_corpus_out"]  # seed 2 left none out
    assert [(r["seed"], r["fold"]) for r in merged["validation"]["per_run"]] == [(0, "1"), (1, "1"), (2, "2")]
    assert "| 1 (seed 0); 1 (seed 1); 2 (seed 2) | 3 |" in output.with_suffix(".md").read_text()
    kept = pd.read_csv(predictions_file(output), dtype={"fold": str})
    assert set(kept["seed"]) == {0, 1, 2} and set(kept["fold"]) == {"1", "2", "ased"}
    # With each clip's class probabilities, for ensembles of seeds made later without the runs.
    probabilities = kept[[f"p_{name}" for name in class_names("neutral")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    np.testing.assert_array_equal(
        probabilities[np.arange(len(kept)), kept["predicted"]], probabilities.max(axis=1)
    )
    # The ensemble of seeds 0 and 1 on the folds both ran; fold 2 has seed 2 alone.
    ensemble = next(
        row
        for row in json.loads(output.read_text())["rows"]
        if row["model"] == f"{model_row['model']}, ensemble of its seeds"
    )
    assert ensemble["folds"] == ["1", "ased"] and ensemble["seeds"] == [0, 1]
    assert ensemble["summary"]["leave_corpus_out"]["ased"]["clips"] == 40
    assert f"| {ensemble['model']} | 1 | ensemble of 2 |" in output.with_suffix(".md").read_text()
    # The same command again reuses its run: the row, its figures and its commands are unchanged.
    assert cli.main(later) == 0
    rerun = json.loads(output.read_text())["rows"][0]
    assert rerun["command"] == merged["command"] and rerun["summary"] == merged["summary"]
    assert len(pd.read_csv(predictions_file(output))) == len(kept)


def test_a_per_speaker_model_is_measured_with_its_speakers_clips_and_each_clip_alone(
    three_corpora, tmp_path, capsys
):
    output = tmp_path / "cv.json"
    config = tiny_config(tmp_path, three_corpora)
    assert (
        cli.main(
            [
                "bench",
                "cv",
                "--test-folds",
                "1",
                "--seeds",
                "0",
                "--no-baselines",
                "--output",
                str(output),
                "--data-roots",
                str(three_corpora),
                "--prepared-dir",
                config.data.prepared_dir,
                "--cache-dir",
                config.data.cache_dir,
                "--output-dir",
                config.train.output_dir,
                "--epochs",
                "1",
                "--clip-seconds",
                "0.5",
                "--n-mels",
                "32",
                "--time-mask-width",
                "5",
                "--freq-mask-width",
                "4",
                "--normalization",
                "speaker",
            ]
        )
        == 0
    )
    rows = {row["model"]: row for row in json.loads(output.read_text())["rows"]}
    own = min(rows, key=len)  # the model's row: the others are named after it
    alone = rows[f"{own}, each clip alone (training statistics)"]
    itself = rows[f"{own}, each clip alone (its own statistics)"]
    served = rows[f"{own}, fused as served (each run's eGeMAPS head and weight)"]  # the setting's fusion
    assert len(rows) == 4 and itself["summary"]["per_corpus"]["ased"]["clips"] == 8
    assert served["summary"]["per_corpus"]["ased"]["clips"] == 8
    for corpus in ("ased", "ravdess"):
        assert (
            alone["summary"]["per_corpus"][corpus]["clips"]
            == rows[own]["summary"]["per_corpus"][corpus]["clips"]
            == 8
        )
    assert "each clip alone (training statistics)" in output.with_suffix(".md").read_text()


def test_only_corpora_whose_absence_leaves_validation_speakers_are_left_out_by_default(tmp_path, monkeypatch):
    """RAVDESS (10 actors) and ASED (4 speakers): without RAVDESS no corpus has the 5 speakers
    that give validation speakers. The default folds skip that row and say so; asked for, it is
    refused before anything trains."""
    root = tmp_path / "data"
    make_ravdess_tree(root / "RAVDESS", actors=range(1, 11), takes=1)
    make_ased_tree(root / "ASED", speakers=range(1, 5))
    config = tiny_config(tmp_path, root)
    prepared = prepare(config.replace(protocol="cv", fold="1"), progress=False)
    assert default_folds(prepared.manifest) == [*SPEAKER_FOLDS, "ased"]

    trained = []
    monkeypatch.setattr(cv, "model_predictions", lambda *args, **kwargs: trained.append(args))
    with pytest.raises(InputError, match="'ravdess' of the cv protocol has no validation speakers"):
        cv.bench_cv(config, ["1", "ravdess"], [0], "aed-tf bench cv", baselines=False, progress=False)
    assert not trained


def test_summary_pools_out_of_fold_predictions_per_corpus():
    classes = ("angry", "sad")
    rows = []
    # Seed 0: every ravdess clip right, tess half right; seed 1 the same but one more tess miss.
    for seed, tess_hits in ((0, 2), (1, 1)):
        for fold in ("1", "2"):
            rows += [
                {
                    "clip_id": f"r{fold}{i}",
                    "corpus": "ravdess",
                    "speaker": fold,
                    "label": i % 2,
                    "predicted": i % 2,
                    "seed": seed,
                    "fold": fold,
                }
                for i in range(2)
            ]
        for i in range(4):
            rows.append(
                {
                    "clip_id": f"t{i}",
                    "corpus": "tess",
                    "speaker": "OAF",
                    "label": i % 2,
                    "predicted": i % 2 if i < tess_hits else 1 - i % 2,
                    "seed": seed,
                    "fold": "1",
                }
            )
    rows.append(
        {
            "clip_id": "x",
            "corpus": "tess",
            "speaker": "YAF",
            "label": 0,
            "predicted": 0,
            "seed": 0,
            "fold": "tess",
        }
    )
    summary = summarize(pd.DataFrame(rows), classes)
    assert summary["per_corpus"]["ravdess"]["uar"]["mean"] == 1.0
    assert summary["per_corpus"]["tess"]["uar_per_seed"] == {0: 0.5, 1: 0.25}
    assert summary["headline_uar_per_seed"] == {0: 0.75, 1: 0.625}
    assert summary["headline_uar"]["std"] == pytest.approx(0.0625)
    assert summary["leave_corpus_out"]["tess"]["uar"]["mean"] == 1.0


def test_a_row_of_corpora_left_out_alone_is_tabled_with_them_and_not_with_the_speaker_folds():
    """`--test-folds ravdess tess` into a new result: no speaker fold, so no headline."""
    rows = [
        {
            "clip_id": f"{corpus}{i}",
            "corpus": corpus,
            "speaker": "s",
            "label": i % 2,
            "predicted": 0,
            "seed": 0,
            "fold": corpus,
        }
        for corpus in ("ravdess", "tess")
        for i in range(4)
    ]
    summary = summarize(pd.DataFrame(rows), ("angry", "sad"))
    assert summary["headline_uar"] is None and summary["per_corpus"] == {}
    result = {
        "folds_description": "the folds",
        "validation_description": "the validation speakers",
        "rows": [
            {"model": "cnn", "summary": summary, "command": "aed-tf bench cv", "seconds": 60.0},
            # A row without corpora left out (an ensemble of seeds) has no line in their table.
            {
                "model": "cnn of speaker folds",
                "summary": {**summary, "leave_corpus_out": {}},
                "command": "aed-tf bench cv",
                "seconds": 0.0,
            },
        ],
        **benchmark_environment(),
    }
    table = format_cv_table(result)
    loco = table.split("## Leave one corpus out")[1].split("##")[0]
    assert "| cnn | 0.500 ± 0.000 | 0.500 ± 0.000 |" in loco
    assert table.count("| cnn |") == 1 and "| cnn of speaker folds |" not in table


def test_the_seed_ensemble_averages_the_probabilities_of_the_seeds_of_each_fold():
    def clip(seed, fold, clip_id, label, p_angry):
        return {
            "clip_id": clip_id,
            "corpus": "tess",
            "speaker": "OAF",
            "label": label,
            "seed": seed,
            "fold": fold,
            "p_angry": p_angry,
            "p_sad": 1 - p_angry,
        }

    predictions = pd.DataFrame(
        [
            clip(0, "1", "a", 0, 0.9),
            clip(1, "1", "a", 0, 0.3),  # mean 0.6: angry
            clip(0, "1", "b", 1, 0.6),
            clip(1, "1", "b", 1, 0.2),  # mean 0.4: sad
            clip(0, "2", "c", 0, 0.9),  # fold 2 has one seed: no ensemble there
        ]
    )
    ensemble, members = seed_ensemble(predictions, ("angry", "sad"))
    assert members == [0, 1]
    assert list(ensemble["clip_id"]) == ["a", "b"] and set(ensemble["fold"]) == {"1"}
    np.testing.assert_allclose(ensemble["p_angry"], [0.6, 0.4])
    assert list(ensemble["predicted"]) == [0, 1] and list(ensemble["seeds"]) == [2, 2]
    # A seed kept by an earlier version, without probabilities, is no member.
    older = pd.DataFrame([clip(2, "1", "a", 0, np.nan), clip(2, "1", "b", 1, np.nan)])
    with_older, members = seed_ensemble(pd.concat([predictions, older]), ("angry", "sad"))
    assert members == [0, 1]
    assert list(with_older["seeds"]) == [2, 2]
    np.testing.assert_allclose(with_older["p_angry"], [0.6, 0.4])
    # Without probabilities (an earlier version's predictions) or with one seed: no ensemble.
    assert seed_ensemble(predictions.drop(columns=["p_angry", "p_sad"]), ("angry", "sad")) is None
    assert seed_ensemble(predictions[predictions["seed"] == 0], ("angry", "sad")) is None


def test_validation_is_summarised_pooled_and_per_corpus_where_the_predictions_have_both():
    runs = pd.DataFrame(
        {
            "seed": [0, 0, 0, 1, 0],
            "fold": ["1", "1", "2", "1", "ravdess"],  # two clips of run (0, 1); a corpus left out
            "validation_uar": [0.6, 0.6, 0.8, 0.5, 0.9],
            "validation_uar_of_corpora": [0.5, 0.5, 0.7, 0.3, 0.9],
        }
    )
    summary = validation_summary(runs)
    assert summary["uar"]["mean"] == pytest.approx(np.mean([0.7, 0.5]))
    assert summary["uar_of_corpora"]["mean"] == pytest.approx(np.mean([0.6, 0.3]))
    assert [(r["seed"], r["fold"], r["uar_of_corpora"]) for r in summary["per_run"]] == [
        (0, "1", 0.5),
        (0, "2", 0.7),
        (1, "1", 0.3),
    ]
    older = validation_summary(runs.drop(columns="validation_uar_of_corpora"))  # an earlier version's
    assert older["uar"] == summary["uar"] and "uar_of_corpora" not in older
    assert all("uar_of_corpora" not in r for r in older["per_run"])


def test_a_benchmark_run_keeps_its_name_when_a_field_is_added_at_its_default(monkeypatch):
    from aed_tf.bench import bench_run_id

    config = Config().replace(backbone="audiocnn", weights="none", protocol="cv", fold="2", seed=1)
    name = bench_run_id(config)
    assert name.startswith("bench-audiocnn-") and name == bench_run_id(config.replace(resume=True))
    assert bench_run_id(config.replace(seed=0)) != name and bench_run_id(config.replace(fold="3")) != name
    # The fusion is fitted after the network: the same network, the same run.
    assert bench_run_id(config.replace(normalization="speaker")) != name
    speaker = config.replace(normalization="speaker")
    assert bench_run_id(speaker.replace(fusion="egemaps")) == bench_run_id(speaker)
    # A flat view with one more field at its default names the same run.
    monkeypatch.setattr(Config, "to_flat", lambda self, f=Config.to_flat: {**f(self), "new_field": 0})
    assert bench_run_id(config) == name


def test_model_name_lists_the_settings_that_differ_from_the_defaults():
    assert model_name(Config()) == "efficientnetb0"
    name = model_name(Config().replace(backbone="audiocnn", weights="none", fold="3", seed=4, epochs=7))
    assert name == "audiocnn (weights=none, epochs=7)"
    assert set(SPEAKER_FOLDS) == {"1", "2", "3", "4", "5"}


def _fusion_frames():
    """Two classes, one corpus, two folds whose runs validate on each other's test speakers. On
    fold 1's validation speakers (fold 2's test speakers) the margins are always right, on fold
    2's always wrong; the model is right on half of every fold's clips; on the test clips the
    margins are always wrong."""
    classes = ("angry", "sad")
    predictions, margins = [], []
    for fold, other in (("1", "2"), ("2", "1")):
        for partition in ("val", "test"):
            for i in range(4):
                label, model_right = i % 2, i < 2
                p_label = 0.6 if model_right else 0.4
                clip = f"{partition}{fold}{i}"
                predictions.append(
                    {
                        "clip_id": clip,
                        "corpus": "ravdess",
                        "speaker": f"s{other if partition == 'val' else fold}{i}",
                        "label": label,
                        "predicted": label if model_right else 1 - label,
                        "p_angry": p_label if label == 0 else 1 - p_label,
                        "p_sad": p_label if label == 1 else 1 - p_label,
                        "seed": 0,
                        "fold": fold,
                        "statistics": "own clips",
                        "partition": partition,
                        "validation_uar": 0.5,
                        "validation_uar_of_corpora": 0.5,
                    }
                )
                favoured = label if (partition, fold) == ("val", "1") else 1 - label
                margins.append(
                    {
                        "clip_id": clip,
                        "fold": fold,
                        "partition": partition,
                        "s_angry": 1.0 if favoured == 0 else -1.0,
                        "s_sad": 1.0 if favoured == 1 else -1.0,
                    }
                )
    return classes, pd.DataFrame(predictions), pd.DataFrame(margins)


def test_each_folds_fusion_weight_is_chosen_on_validation_speakers_it_does_not_test():
    classes, predictions, margins = _fusion_frames()
    test, chosen = cv.fusion(predictions, margins, classes)
    per_fold = chosen["per_fold"]
    # Fold 1 tests the speakers of run 2's validation: its weight is chosen on run 1's alone,
    # where the margins are right, and the smallest weight that lets them outweigh the model wins.
    assert per_fold["1"]["runs"] == [[0, "1"]] and per_fold["2"]["runs"] == [[0, "2"]]
    curve = per_fold["1"]["validation_uar_of_corpora_per_weight"]
    assert curve["0.0"] == 0.5 and curve["0.25"] == curve["5.0"] == 1.0
    assert per_fold["1"]["weight"] == 0.25
    # Fold 2's weight is chosen on run 2's validation, where the margins are wrong: the model alone.
    assert per_fold["2"]["weight"] == 0.0
    assert per_fold["2"]["validation_uar_of_corpora_per_weight"]["5.0"] == 0.0
    assert len(test) == 8 and set(test["partition"]) == {"test"}
    fold_1, fold_2 = test[test["fold"] == "1"], test[test["fold"] == "2"]
    assert (fold_1["predicted"] != fold_1["label"]).all()  # the test margins are wrong: fusion hurts
    model_alone = predictions.set_index("clip_id").loc[fold_2["clip_id"], "predicted"]
    np.testing.assert_array_equal(fold_2["predicted"], model_alone)
    np.testing.assert_allclose(test[["p_angry", "p_sad"]].sum(axis=1), 1.0, atol=1e-3)
    # Nothing to choose on: no validation predictions (an earlier version's), or no probabilities.
    assert cv.fusion(predictions[predictions["partition"] == "test"], margins, classes) is None
    assert cv.fusion(predictions.drop(columns=["p_angry", "p_sad"]), margins, classes) is None
