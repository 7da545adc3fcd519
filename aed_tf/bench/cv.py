"""The cross-validation benchmark (``aed-tf bench cv``): what users get on voices never heard.

Every speaker is tested exactly once, in the fixed folds of the ``cv`` protocol
(`aed_tf.splits.cv_folds`), and each leave-one-corpus-out row tests a whole corpus after training
on the others. Everything a run chooses (the epoch, the temperature) is chosen on validation
speakers that are training speakers of its fold. Figures are per corpus, from the pooled
out-of-fold predictions, with the spread over folds and over seeds; the headline is the mean over
corpora of the per-corpus UAR, so that no corpus's size decides it. The baselines run on exactly
the same folds, with and without per-speaker standardisation of their features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aed_tf import baseline, functionals
from aed_tf.bench import (
    FITTED_AFTER_THE_NETWORK,
    bench_run_id,
    benchmark_environment,
    format_environment,
    read_result,
    table_head,
    write_result,
)
from aed_tf.config import Config
from aed_tf.functionals import FusionHead, fuse
from aed_tf.labels import apply_calm_policy, class_names
from aed_tf.metrics import label_metrics
from aed_tf.prepare import Prepared, prepare, speaker_keys
from aed_tf.splits import CV, CV_FOLDS, PROTOCOLS, cv_folds, cv_validation_speakers, make_split

SPEAKER_FOLDS = tuple(str(fold) for fold in range(1, CV_FOLDS + 1))
_PREDICTION_COLUMNS = ["clip_id", "corpus", "speaker", "label", "predicted"]


def _kept_columns(predictions: pd.DataFrame) -> pd.DataFrame:
    """What the benchmark keeps of `evaluate`'s predictions: the clip, its label and prediction,
    and the class probabilities (``p_<class>``, 4 decimals), so that the runs of several seeds
    can later be averaged into an ensemble without their run folders."""
    probabilities = [column for column in predictions if column.startswith("p_")]
    return predictions[_PREDICTION_COLUMNS].join(predictions[probabilities].round(4))


# name -> (features of the clips, classifier, speaker-standardised?)
BASELINES: dict[str, tuple[str, str, bool]] = {
    "MFCC/chroma/mel + MLP (reference projects)": ("reference", "mlp", False),
    "MFCC/chroma/mel + MLP, per-speaker standardised": ("reference", "mlp", True),
    "eGeMAPS + linear SVM": ("egemaps", "linear svm", False),
    "eGeMAPS + linear SVM, per-speaker standardised": ("egemaps", "linear svm", True),
    "eGeMAPS + RBF SVM": ("egemaps", "rbf svm", False),
    "eGeMAPS + RBF SVM, per-speaker standardised": ("egemaps", "rbf svm", True),
}
# The baseline fused with the model (`fusion`): eGeMAPS functionals (pitch, loudness, voice quality
# over the whole clip) make errors unlike the CNN's, and its margins need no calibration: their
# weight against the model's log-probabilities is chosen on validation speakers.
FUSED_BASELINE = "eGeMAPS + linear SVM, per-speaker standardised"
# Each fold's weight of the margins is the best of these on validation speakers it does not test.
FUSION_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
# features -> the features of clips (waveforms, sample rate, cache folder)
_FEATURES: dict[str, Callable[..., np.ndarray]] = {
    "reference": baseline.cached_reference_matrix,
    "egemaps": functionals.cached_egemaps_matrix,
}
# classifier -> its fit (features, labels, seed)
_CLASSIFIERS: dict[str, Callable[..., Any]] = {
    "mlp": baseline.fit_reference_baseline,
    "linear svm": baseline.fit_linear_svm_baseline,
    "rbf svm": baseline.fit_rbf_svm_baseline,
}


# The model's rows besides its own: how a lone clip of an unknown speaker is normalised, and the
# run's own fusion (`--fusion egemaps`: each run's head at the setting's --fusion-weight), as the
# row names them.
FUSED_AS_SERVED = "own clips, fused by the run"
_ROW_SUFFIXES = {
    "own clips": "",
    "training": ", each clip alone (training statistics)",
    "the clip itself": ", each clip alone (its own statistics)",
    FUSED_AS_SERVED: ", fused as served (each run's eGeMAPS head and weight)",
}


def default_folds(manifest: pd.DataFrame) -> list[str]:
    """The speaker folds, then one leave-one-corpus-out fold per corpus whose absence leaves
    validation speakers (a corpus of at least CV_FOLDS speakers among the others: RAVDESS cannot
    be left out of RAVDESS and TESS alone)."""
    with_validation = set(manifest.loc[cv_validation_speakers(manifest, 1), "corpus"])
    corpora = sorted(manifest["corpus"].unique())
    return list(SPEAKER_FOLDS) + [c for c in corpora if with_validation - {c}]


def model_predictions(
    config: Config,
    folds: Sequence[str],
    seeds: Sequence[int],
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Out-of-fold test predictions of the configured model, one row per (seed, fold, clip), and
    (``partition`` "val") its predictions on each speaker fold's validation speakers, on which
    the fusion weight is chosen (`fusion`).

    Each (fold, seed) is a run folder named by its settings (`bench_run_id`): a finished one is
    reused, a killed one resumes."""
    from aed_tf.evaluate import evaluate
    from aed_tf.partitions import load_training_data
    from aed_tf.runs import CONFIG_FILE, FINISHED, FUSION_FILE, Run
    from aed_tf.train import fit_fusion, run_directory, train

    frames = []
    for seed in seeds:
        for fold in folds:
            run_config = config.replace(protocol=CV, fold=fold, seed=seed, resume=False)
            run_config = run_config.replace(run_id=bench_run_id(run_config))
            run_dir = run_directory(run_config)
            status = Run.load(run_dir).status if (run_dir / CONFIG_FILE).is_file() else None
            started = time.perf_counter()
            if status != FINISHED:
                train(run_config.replace(resume=status is not None), progress=progress)
            # The figure this setting is chosen by: the kept epoch's UAR on the fold's
            # validation speakers (training speakers of the fold, never its test speakers).
            validation_uar = Run.load(run_dir).metrics()["val"]["uar"]
            data = load_training_data(run_config, progress=False)
            # And per corpus (those with validation speakers), so that no corpus's many validation
            # speakers decide alone. Settings are compared on the speaker folds only.
            validation = evaluate(run_dir, "val", data=data, fusion=False) if fold in SPEAKER_FOLDS else None
            of_corpora = float(validation.per_corpus["uar"].mean()) if validation else float("nan")
            run_columns = dict(
                seed=seed,
                fold=fold,
                statistics="own clips",
                validation_uar=validation_uar,
                validation_uar_of_corpora=of_corpora,
            )
            test = _kept_columns(evaluate(run_dir, "test", data=data, fusion=False).predictions)
            frames.append(test.assign(partition="test", **run_columns))
            if validation is not None:
                frames.append(_kept_columns(validation.predictions).assign(partition="val", **run_columns))
            if config.train.fusion != "none":  # as the run serves it: its own head and weight
                weight = config.train.fusion_weight
                fitted = read_result(run_dir / FUSION_FILE) or {}
                if (
                    fitted.get("weight") != weight
                ):  # a run that finished before heads were fitted, or another weight
                    fit_fusion(run_dir, data, weight, by="aed-tf bench cv, after the run had finished")
                served = evaluate(run_dir, "test", data=data).predictions
                frames.append(
                    _kept_columns(served).assign(
                        seed=seed, fold=fold, statistics=FUSED_AS_SERVED, partition="test"
                    )
                )
            if config.frontend.normalization == "speaker":  # and a lone clip of an unknown speaker
                for lone in ("training", "the clip itself"):
                    alone = evaluate(run_dir, "test", data=data, speaker_statistics=lone).predictions
                    frames.append(
                        _kept_columns(alone).assign(seed=seed, fold=fold, statistics=lone, partition="test")
                    )
            log(
                f"fold {fold} seed {seed}: {_progress_line(test)} "
                f"validation UAR {validation_uar:.3f}"
                + (f" (mean of corpora {of_corpora:.3f}) " if fold in SPEAKER_FOLDS else " ")
                + f"({'reused' if status == FINISHED else f'{time.perf_counter() - started:.0f} s'}, {run_dir})"
            )
    return pd.concat(frames, ignore_index=True)


def baseline_predictions(
    config: Config,
    prepared: Prepared,
    folds: Sequence[str],
    margin_folds: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold test predictions of every baseline of `BASELINES` on `folds` (seed
    `config.data.seed`), each trained on its fold's training partition of the `prepared` data;
    and `FUSED_BASELINE`'s margins (``s_<class>``) on the validation and test clips of each of
    `margin_folds`, one row per (fold, partition, clip), for `fusion`. Features are computed
    once for every clip; per-speaker standardisation uses each speaker's own clips."""
    manifest = apply_calm_policy(prepared.manifest, config.data.calm).reset_index(drop=True)
    classes = class_names(config.data.calm)
    labels = np.array([classes.index(e) for e in manifest["emotion"]])
    waveforms = [prepared.waveforms[clip] for clip in manifest["clip_id"]]
    speakers = speaker_keys(manifest)
    rate = config.frontend.sample_rate
    features = {}
    for name, featurize in _FEATURES.items():
        started = time.perf_counter()
        features[name] = featurize(waveforms, rate, config.data.cache_dir)
        log(
            f"baseline features {name}: {features[name].shape[1]} per clip, "
            f"{time.perf_counter() - started:.0f} s"
        )
    standardized = {name: functionals.standardize_per_speaker(f, speakers) for name, f in features.items()}

    frames, margins = [], []
    for fold in dict.fromkeys([*folds, *margin_folds]):
        split = make_split(
            prepared.manifest, CV, fold=fold, drop_unknown_speakers=config.data.drop_unknown_speakers
        ).set_index("clip_id")["partition"]
        partition = manifest["clip_id"].map(split).to_numpy()
        train_rows, test_rows = partition == "train", partition == "test"
        measured = fold in folds
        for model_name, (feature_name, classifier, per_speaker) in BASELINES.items():
            if not measured and model_name != FUSED_BASELINE:
                continue
            matrix = (standardized if per_speaker else features)[feature_name]
            fit = _CLASSIFIERS[classifier]
            model = fit(matrix[train_rows], labels[train_rows], seed=config.data.seed)
            if measured:
                test = manifest.loc[test_rows, ["clip_id", "corpus", "speaker"]].assign(
                    label=labels[test_rows], predicted=model.predict(matrix[test_rows])
                )
                frames.append(test.assign(model=model_name, seed=config.data.seed, fold=fold))
            if model_name == FUSED_BASELINE and fold in margin_folds:
                rows = np.isin(partition, ("val", "test"))
                scores = FusionHead.from_pipeline(model, len(classes)).margins(matrix[rows])
                margins.append(
                    manifest.loc[rows, ["clip_id"]].assign(
                        fold=fold,
                        partition=partition[rows],
                        **{f"s_{name}": scores[:, i] for i, name in enumerate(classes)},
                    )
                )
        if measured:
            log(
                f"baselines fold {fold}: "
                + "; ".join(
                    f"{name}: {_progress_line(frame)}"
                    for name, frame in zip(BASELINES, frames[-len(BASELINES) :])
                )
            )
    margin_columns = ["clip_id", "fold", "partition", *(f"s_{name}" for name in classes)]
    return pd.concat(frames, ignore_index=True), (
        pd.concat(margins, ignore_index=True) if margins else pd.DataFrame(columns=margin_columns)
    )


def fused_predictions(
    predictions: pd.DataFrame, margins: pd.DataFrame, weight: float, classes: Sequence[str]
) -> pd.DataFrame:
    """The model's `predictions` of the clips that `margins` has (same fold and partition),
    with the fused probabilities (4 decimals) and their argmax as the prediction."""
    return _fused(_with_margins(predictions, margins), weight, classes)


def _with_margins(predictions: pd.DataFrame, margins: pd.DataFrame) -> pd.DataFrame:
    """`predictions` of the clips that `margins` has (same fold and partition), with their margins."""
    return predictions.merge(
        margins, on=["fold", "partition", "clip_id"], how="inner", validate="many_to_one"
    )


def _fused(predictions: pd.DataFrame, weight: float, classes: Sequence[str]) -> pd.DataFrame:
    """`predictions` with margins (`_with_margins`) fused at `weight`, without the margins."""
    probabilities = [f"p_{name}" for name in classes]
    scores = [f"s_{name}" for name in classes]
    fused = fuse(predictions[probabilities].to_numpy(), predictions[scores].to_numpy(), weight)
    return predictions.drop(columns=scores).assign(
        predicted=fused.argmax(axis=1), **{p: fused[:, i].round(4) for i, p in enumerate(probabilities)}
    )


def fusion(
    predictions: pd.DataFrame, margins: pd.DataFrame, classes: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The model fused with `FUSED_BASELINE`: its test predictions (own clips) of every fold that
    `margins` covers, each fold fused at its own weight of `FUSION_WEIGHTS`, and what was chosen.

    A fold's weight is the one whose fused validation UAR (the mean over corpora, averaged over
    the runs that kept validation predictions) is highest, the smaller on a tie, on validation
    clips of speakers the fold does not test: a fold's validation speakers are another fold's
    test speakers, so without this their labels would help choose the weight applied to them.
    None without such runs, or without probabilities."""
    if not {f"p_{name}" for name in classes} <= set(predictions):
        return None
    own = predictions[predictions["statistics"] == "own clips"].dropna(subset=[f"p_{classes[0]}"])
    # Merged with their margins once: each fold fuses them at every weight.
    validation = _with_margins(own[(own["partition"] == "val") & own["fold"].isin(SPEAKER_FOLDS)], margins)
    test = own[(own["partition"] == "test") & own["fold"].isin(margins["fold"])]
    frames, per_fold = [], {}
    for fold, fold_test in test.groupby("fold", sort=False):
        tested = pd.MultiIndex.from_frame(fold_test[["corpus", "speaker"]].drop_duplicates())
        candidates = validation[~pd.MultiIndex.from_frame(validation[["corpus", "speaker"]]).isin(tested)]
        if candidates.empty:  # no run kept validation predictions of other speakers
            continue
        curve = {
            weight: _fused(candidates, weight, classes)
            .groupby(["seed", "fold"])
            .apply(_uar_of_corpora)
            .mean()
            for weight in FUSION_WEIGHTS
        }
        weight = max(FUSION_WEIGHTS, key=lambda w: (curve[w], -w))
        runs = candidates[["seed", "fold"]].drop_duplicates()
        per_fold[fold] = {
            "weight": weight,
            "runs": sorted([int(seed), run_fold] for seed, run_fold in runs.itertuples(index=False)),
            "validation_uar_of_corpora_per_weight": {str(w): float(v) for w, v in curve.items()},
        }
        frames.append(fused_predictions(fold_test, margins, weight, classes))
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True), {"baseline": FUSED_BASELINE, "per_fold": per_fold}


def _uar_of_corpora(predictions: pd.DataFrame) -> float:
    """The mean over corpora of each corpus's UAR: no corpus's size decides it."""
    return float(np.mean([_metrics(rows)["uar"] for _, rows in predictions.groupby("corpus")]))


def seed_ensemble(predictions: pd.DataFrame, classes: Sequence[str]) -> tuple[pd.DataFrame, list[int]] | None:
    """The ensemble of a model's seeds, and its members: on every fold that two or more seeds ran,
    each clip's class probabilities averaged over them and its prediction their argmax, one row
    per (fold, clip) with ``seeds`` its members' number. The members are all the seeds that ran
    the fold with probabilities kept (an earlier version kept none), so nothing about them is
    chosen on a test figure. None where no fold has two such seeds."""
    columns = [f"p_{name}" for name in classes]
    if not set(columns) <= set(predictions):
        return None
    known = predictions.dropna(subset=columns)
    seeds_of_fold = known.groupby("fold")["seed"].nunique()
    known = known[known["fold"].isin(seeds_of_fold.index[seeds_of_fold >= 2])]
    if known.empty:
        return None
    ensemble = (
        known.groupby(["fold", "clip_id"], sort=False)
        .agg(
            corpus=("corpus", "first"),
            speaker=("speaker", "first"),
            label=("label", "first"),
            seeds=("seed", "nunique"),
            **{column: (column, "mean") for column in columns},
        )
        .reset_index()
    )
    members = sorted(int(seed) for seed in known["seed"].unique())
    return ensemble.assign(predicted=ensemble[columns].to_numpy().argmax(axis=1)), members


def _progress_line(predictions: pd.DataFrame) -> str:
    return ", ".join(
        f"{corpus} UAR {_metrics(rows)['uar']:.3f}" for corpus, rows in predictions.groupby("corpus")
    )


def _metrics(rows: pd.DataFrame) -> dict[str, float]:
    return label_metrics(
        rows["label"], rows["predicted"], int(max(rows["label"].max(), rows["predicted"].max())) + 1
    )


def summarize(predictions: pd.DataFrame, classes: Sequence[str]) -> dict[str, Any]:
    """Per corpus, from the pooled out-of-fold predictions of the speaker folds: UAR, accuracy
    and macro-F1 (mean and spread over seeds), UAR per fold (mean over seeds) and its spread,
    recall per class; the headline (mean over corpora of the per-corpus UAR) per seed; and each
    leave-one-corpus-out fold's figures."""
    speaker_folds = predictions[predictions["fold"].isin(SPEAKER_FOLDS)]
    per_corpus: dict[str, Any] = {}
    headline_per_seed = {}
    for seed, rows in speaker_folds.groupby("seed"):
        headline_per_seed[int(seed)] = _uar_of_corpora(rows)
    for corpus, rows in speaker_folds.groupby("corpus"):
        seeds = {int(seed): _metrics(seed_rows) for seed, seed_rows in rows.groupby("seed")}
        folds = {
            fold: float(np.mean([_metrics(r)["uar"] for _, r in fold_rows.groupby("seed")]))
            for fold, fold_rows in rows.groupby("fold")
        }
        hits = rows["label"] == rows["predicted"]
        per_corpus[corpus] = {
            "clips": int(rows["clip_id"].nunique()),
            "speakers": int(rows["speaker"].nunique()),
            **{
                metric: _spread([m[metric] for m in seeds.values()])
                for metric in ("uar", "accuracy", "macro_f1")
            },
            "uar_per_seed": {seed: m["uar"] for seed, m in seeds.items()},
            "uar_per_fold": folds,
            "uar_fold_std": float(np.std(list(folds.values()))),
            "recall_per_class": {
                classes[label]: float(hits[rows["label"] == label].mean())
                for label in sorted(rows["label"].unique())
            },
        }
    leave_corpus_out = {}
    for fold, rows in predictions[~predictions["fold"].isin(SPEAKER_FOLDS)].groupby("fold"):
        seeds = [_metrics(seed_rows) for _, seed_rows in rows.groupby("seed")]
        leave_corpus_out[fold] = {
            "clips": int(rows["clip_id"].nunique()),
            **{m: _spread([s[m] for s in seeds]) for m in ("uar", "accuracy", "macro_f1")},
        }
    return {
        "headline_uar": _spread(list(headline_per_seed.values())) if headline_per_seed else None,
        "headline_uar_per_seed": headline_per_seed,
        "per_corpus": per_corpus,
        "leave_corpus_out": leave_corpus_out,
    }


def validation_summary(predictions: pd.DataFrame) -> dict[str, Any]:
    """The validation UAR of every speaker-fold run (seed, fold) of a model, pooled over the
    validation clips and as the mean over corpora of each corpus's, and their means over folds
    with their spread over seeds: what settings are compared by, never the test figures.
    Predictions kept by an earlier version have no mean over corpora: then it is left out."""
    columns = ["validation_uar", "validation_uar_of_corpora"]
    speaker_folds = predictions[predictions["fold"].isin(SPEAKER_FOLDS)].reindex(
        columns=["seed", "fold", *columns]
    )
    runs = speaker_folds.groupby(["seed", "fold"], sort=True)[columns].first()
    if runs.empty:  # leave-one-corpus-out folds alone
        return {}
    per_seed = runs.groupby(level="seed").mean()
    of_corpora = bool(runs["validation_uar_of_corpora"].notna().all())
    return {
        "uar": _spread(per_seed["validation_uar"].tolist()),
        **({"uar_of_corpora": _spread(per_seed["validation_uar_of_corpora"].tolist())} if of_corpora else {}),
        "per_run": [
            {
                "seed": int(seed),
                "fold": fold,
                "uar": float(run["validation_uar"]),
                **({"uar_of_corpora": float(run["validation_uar_of_corpora"])} if of_corpora else {}),
            }
            for (seed, fold), run in runs.iterrows()
        ],
    }


def _spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, standard deviation and range over seeds."""
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def format_cv_table(result: dict[str, Any]) -> str:
    """cv.md: readable on its own."""
    corpora = sorted({c for row in result["rows"] for c in row["summary"]["per_corpus"]})
    loco = sorted({c for row in result["rows"] for c in row["summary"]["leave_corpus_out"]})
    lines = [
        "# Cross-validation over speakers (`aed-tf bench cv`)",
        "",
        PROTOCOLS[CV].description,
        "",
        "Folds (fixed, the same for every model and seed): " + result["folds_description"],
        "",
        "Validation speakers (epoch and temperature chosen there, never on the test fold): "
        + result["validation_description"],
        "",
        "## Speaker folds: pooled out-of-fold UAR per corpus",
        "",
        "Mean over seeds ± standard deviation over seeds; in brackets the standard deviation of "
        f"UAR over the {CV_FOLDS} folds. The headline is the mean over corpora of the per-corpus UAR. "
        "Validation UAR: the kept epoch's, on each fold's validation speakers, mean over the speaker "
        "folds ± over seeds, pooled over the validation clips and (in brackets) the mean of each "
        "corpus's over the corpora with validation speakers; settings are chosen by it, never by the test figures.",
        "",
        *table_head("model", "folds", "seeds", "validation UAR", "headline (mean of corpora)", *corpora),
    ]
    # A row of corpora left out alone has no speaker folds: it is in the leave-one-corpus-out table.
    speaker_rows = [row for row in result["rows"] if row["summary"]["per_corpus"]]
    for row in speaker_rows:
        summary = row["summary"]
        cells = []
        for corpus in corpora:
            c = summary["per_corpus"].get(corpus)
            cells.append(
                f"{c['uar']['mean']:.3f} ± {c['uar']['std']:.3f} ({c['uar_fold_std']:.3f})" if c else ""
            )
        head = summary["headline_uar"]
        folds = _speaker_folds_cell(row)
        # An ensemble's figures are one set of predictions: no spread over seeds.
        seeds = f"ensemble of {len(row['seeds'])}" if row.get("ensemble") else head["n"]
        validation = row.get("validation", {})  # rows of baselines and older records have none
        validation_cell = " ".join(
            template.format(**validation[key])
            for key, template in (
                ("uar", "{mean:.3f} ± {std:.3f}"),
                ("uar_of_corpora", "({mean:.3f} ± {std:.3f})"),
            )
            if key in validation
        )
        lines.append(
            f"| {row['model']} | {folds} | {seeds} | {validation_cell} | **{head['mean']:.3f}** ± {head['std']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    for row in result["rows"]:
        if "fusion" in row:
            per_fold = row["fusion"]["per_fold"]
            lines += [
                "",
                f"{row['model']}: each clip's class probabilities p and the margins m of the "
                f"{row['fusion']['baseline']} (trained on the same fold) give softmax(log p + w m). "
                "Each fold's weight w is chosen on the validation speakers of the runs that kept "
                "their validation predictions, leaving out the speakers that fold tests (a corpus "
                "left out: all of it), so no test speaker's labels choose the weight applied to "
                "them. Per fold: w, and the mean over corpora of the validation UAR averaged over "
                "those runs without fusion and at w: "
                + "; ".join(
                    f"{fold}: {chosen['weight']:g} ("
                    f"{chosen['validation_uar_of_corpora_per_weight']['0.0']:.3f} → "
                    f"{chosen['validation_uar_of_corpora_per_weight'][str(float(chosen['weight']))]:.3f}, "
                    f"{len(chosen['runs'])} runs)"
                    for fold, chosen in per_fold.items()
                )
                + ".",
            ]
    lines += [
        "",
        "Accuracy and macro-F1 of the same predictions (mean over seeds):",
        "",
        *table_head("model", *(f"{c} {measure}" for c in corpora for measure in ("acc", "macro-F1"))),
    ]
    for row in speaker_rows:
        per_corpus = row["summary"]["per_corpus"]
        lines.append(
            f"| {row['model']} | "
            + " | ".join(
                f"{per_corpus[c]['accuracy']['mean']:.3f} | {per_corpus[c]['macro_f1']['mean']:.3f}"
                if c in per_corpus
                else " | "
                for c in corpora
            )
            + " |"
        )
    if loco:
        lines += [
            "",
            "## Leave one corpus out: train on the others, test on all of it (UAR)",
            "",
            *table_head("model", *loco),
        ]
        for row in result["rows"]:
            held = row["summary"]["leave_corpus_out"]
            if not held:  # an ensemble of seeds, or a row of speaker folds alone
                continue
            lines.append(
                f"| {row['model']} | "
                + " | ".join(
                    f"{held[c]['uar']['mean']:.3f} ± {held[c]['uar']['std']:.3f}" if c in held else ""
                    for c in loco
                )
                + " |"
            )
    lines += ["", "## Recall per class (speaker folds, pooled, all seeds)", ""]
    for corpus in corpora:
        rows = [
            (row["model"], row["summary"]["per_corpus"][corpus]["recall_per_class"])
            for row in result["rows"]
            if corpus in row["summary"]["per_corpus"]
        ]
        classes = list(rows[0][1])
        lines += [
            f"{corpus}:",
            "",
            *table_head("model", *classes),
        ]
        lines += [
            f"| {name} | " + " | ".join(f"{recall.get(c, float('nan')):.2f}" for c in classes) + " |"
            for name, recall in rows
        ]
        lines.append("")
    lines += [
        "## UAR per fold (mean over seeds)",
        "",
        *table_head("model", "corpus", *(f"fold {f}" for f in SPEAKER_FOLDS)),
    ]
    for row in result["rows"]:
        for corpus, c in row["summary"]["per_corpus"].items():
            lines.append(
                f"| {row['model']} | {corpus} | "
                + " | ".join(
                    f"{c['uar_per_fold'][f]:.3f}" if f in c["uar_per_fold"] else "" for f in SPEAKER_FOLDS
                )
                + " |"
            )
    lines += ["", "Commands (each row was made by one):", ""]
    for command in dict.fromkeys(row["command"] for row in result["rows"]):
        made = "; ".join(row["model"] for row in result["rows"] if row["command"] == command)
        seconds = sum({row["seconds"] for row in result["rows"] if row["command"] == command})
        lines.append(f"- `{command}` ({seconds / 60:.0f} min): {made}")
    lines += [
        "",
        format_environment(result),
    ]
    return "\n".join(lines) + "\n"


def describe_folds(manifest: pd.DataFrame) -> str:
    """Each corpus's speakers per fold, as the README and cv.md state them."""
    folds = cv_folds(manifest)
    parts = []
    for corpus, rows in manifest.groupby("corpus"):
        groups = [
            sorted(rows.loc[folds[rows.index] == f, "speaker"].unique()) for f in range(1, CV_FOLDS + 1)
        ]
        parts.append(f"{corpus}: " + ", ".join(f"{i + 1}: {_span(g)}" for i, g in enumerate(groups) if g))
    return "; ".join(parts) + "."


def describe_validation(manifest: pd.DataFrame) -> str:
    lines = []
    for fold in range(1, CV_FOLDS + 1):
        val = manifest[cv_validation_speakers(manifest, fold % CV_FOLDS + 1)]
        lines.append(
            f"fold {fold}: "
            + ", ".join(f"{c} {_span(sorted(r['speaker'].unique()))}" for c, r in val.groupby("corpus"))
        )
    val = manifest[cv_validation_speakers(manifest, 1)]
    lines.append(
        "a corpus left out: "
        + ", ".join(f"{c} {_span(sorted(r['speaker'].unique()))}" for c, r in val.groupby("corpus"))
        + " (of the other corpora)"
    )
    return "; ".join(lines) + "."


def _span(speakers: Sequence[str]) -> str:
    return speakers[0] if len(speakers) == 1 else f"{speakers[0]}-{speakers[-1]}"


# Settings that say where things are, or that the benchmark sets per run, or of what is fitted after
# the network (its own rows name it: the network is the same): not part of a model's name.
_NOT_SETTINGS = {
    *FITTED_AFTER_THE_NETWORK,
    "data_roots",
    "prepared_dir",
    "cache_dir",
    "output_dir",
    "run_id",
    "resume",
    "fold",
    "seed",
    "protocol",
    "workers",
    "backbone",
}


def model_name(config: Config) -> str:
    """The backbone and every setting that differs from the defaults, e.g.
    ``audiocnn (epochs=12, weights=none)``."""
    defaults = Config().to_flat()
    changed = [f"{k}={v}" for k, v in config.to_flat().items() if k not in _NOT_SETTINGS and v != defaults[k]]
    return f"{config.train.backbone} ({', '.join(changed)})" if changed else config.train.backbone


def run_cv_benchmark(
    config: Config,
    folds: Sequence[str] | None,
    seeds: Sequence[int],
    command: str,
    output: Path,
    baselines: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`bench_cv`, keeping the rows of the result already at `output` for other models and the
    out-of-fold predictions kept beside it (`predictions_file`) for other seeds and folds of this
    one; writes the result there, its `format_cv_table` beside it (.md) and the predictions."""
    stored = predictions_file(output)
    result, predictions = bench_cv(
        config,
        folds,
        seeds,
        command,
        baselines=baselines,
        previous=read_result(output),
        previous_predictions=read_predictions(stored),
        progress=progress,
        log=log,
    )
    write_predictions(stored, predictions)  # first: hours of training, whatever the table does
    write_result(output, result, format_cv_table(result))
    return result


def predictions_file(output: Path) -> Path:
    """Where the out-of-fold predictions of the result at `output` are kept: `<name>.predictions.csv.gz`."""
    return output.with_suffix(".predictions.csv.gz")


def read_predictions(path: Path) -> pd.DataFrame | None:
    """Predictions an earlier command kept (`write_predictions`); None if none."""
    if not path.is_file():
        return None
    predictions = pd.read_csv(
        path,
        dtype={
            "model": str,
            "fold": str,
            "clip_id": str,
            "speaker": str,
            "statistics": str,
            "partition": str,
        },
    )
    # An earlier version kept test predictions alone, without this column.
    partition = (
        predictions["partition"] if "partition" in predictions else pd.Series("test", predictions.index)
    )
    return predictions.assign(partition=partition.fillna("test"))


def write_predictions(path: Path, predictions: pd.DataFrame) -> None:
    """Every model row's out-of-fold predictions, one row per (statistics, seed, fold, clip), so
    that a later command can add seeds or folds without the runs (which stay in saved_models)."""
    partial = path.with_name(path.name + ".partial")
    predictions.to_csv(partial, index=False, compression="gzip")
    partial.replace(path)


def bench_cv(
    config: Config,
    folds: Sequence[str] | None,
    seeds: Sequence[int],
    command: str,
    baselines: bool = True,
    previous: dict[str, Any] | None = None,
    previous_predictions: pd.DataFrame | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Trains and tests the configured model on every fold and seed, and the baselines on the
    same folds: the result and the out-of-fold predictions of its model rows. Rows of `previous`
    for other models are kept, each with its command; `previous_predictions` of this model for
    (seed, fold) runs this command does not make are added to its own, so that seeds and folds
    can be measured by separate commands (the row names them all)."""
    started = time.perf_counter()
    prepared = prepare(config.replace(protocol=CV, fold=SPEAKER_FOLDS[0]), progress=progress)
    manifest = prepared.manifest
    all_folds = default_folds(manifest)  # and the order rows list folds in
    left_out = sorted(set(manifest["corpus"]) - set(all_folds))
    if left_out and not folds:
        log(
            f"no leave-one-corpus-out fold for {', '.join(left_out)}: the other corpora have no validation speakers"
        )
    folds = list(folds) if folds else all_folds
    for fold in folds:  # a fold that cannot be made fails now, not after the folds before it trained
        make_split(manifest, CV, fold=fold, drop_unknown_speakers=config.data.drop_unknown_speakers)
    classes = class_names(config.data.calm)
    rows = {row["model"]: row for row in (previous or {}).get("rows", [])}
    name = model_name(config)
    predictions = model_predictions(config, folds, seeds, progress=progress, log=log).assign(model=name)
    seconds = time.perf_counter() - started  # one figure for the rows this command made
    kept = _other_runs(previous_predictions, name, predictions)
    if kept is not None:
        predictions = pd.concat([kept, predictions], ignore_index=True)
    tests = predictions[predictions["partition"] == "test"]
    for statistics, frame in tests.groupby("statistics", sort=False):
        # A per-speaker model is measured with each test speaker normalised by their own
        # (unlabelled) clips, and every clip alone (the training clips' statistics, or its own);
        # a fused one also as each run serves it.
        row_name = name + _ROW_SUFFIXES[statistics]
        earlier = rows.get(row_name) if kept is not None else None
        _add_model_rows(
            rows,
            row_name,
            frame,
            _commands(earlier, command),
            seconds + (earlier["seconds"] if earlier else 0.0),
            all_folds,
            classes,
            validation=validation_summary(frame) if statistics == "own clips" else None,
            # Served, an ensemble fuses the mean of its members' probabilities with the mean of
            # their weighted margins: not the mean of each run fused, which is all this row has.
            seed_ensemble_row=statistics != FUSED_AS_SERVED,
        )
    fused_name = f"{name}, fused with the per-speaker eGeMAPS SVM"
    fused = None
    if baselines:
        baselines_started = time.perf_counter()
        # Margins for every fold of the model's row, those of earlier commands included.
        baseline_rows, margins = baseline_predictions(
            config, prepared, folds, [f for f in all_folds if f in set(predictions["fold"])], log=log
        )
        fused = fusion(predictions, margins, classes)
    if fused is not None:
        frame, chosen = fused
        log(
            f"fused with {FUSED_BASELINE}, weight per fold chosen on validation speakers: "
            + ", ".join(f"{fold} {c['weight']:g}" for fold, c in chosen["per_fold"].items())
        )
        # Derived from the model row's runs: its command, and no time of its own.
        _add_model_rows(
            rows, fused_name, frame, rows[name]["command"], 0.0, all_folds, classes, fusion=chosen
        )
    elif rows.pop(fused_name, None) is not None:  # an earlier command's, of other runs than the row's
        rows.pop(f"{fused_name}, ensemble of its seeds", None)
        log(
            f"{fused_name}: not measured by this command (it needs the baselines and validation "
            "predictions to choose its weights on); the earlier row is removed"
        )
    if baselines:
        for baseline_name, frame in baseline_rows.groupby("model", sort=False):
            rows[baseline_name] = {
                "model": baseline_name,
                "command": command,
                "folds": folds,
                "seeds": [config.data.seed],
                "summary": summarize(frame, classes),
                "seconds": time.perf_counter() - baselines_started,
            }
    model_rows = predictions
    if previous_predictions is not None:  # other models' predictions stay
        model_rows = pd.concat(
            [previous_predictions[previous_predictions["model"] != name], predictions], ignore_index=True
        )
    return {
        "protocol": CV,
        "protocol_description": PROTOCOLS[CV].description,
        "folds_description": describe_folds(manifest),
        "validation_description": describe_validation(manifest),
        "command": command,
        "rows": list(rows.values()),
        **benchmark_environment(),
    }, model_rows


def _commands(earlier: dict[str, Any] | None, command: str) -> str:
    """The commands of a row: each once, however often it is rerun (the row's figures are one
    set of runs)."""
    return " && ".join(dict.fromkeys([*(earlier["command"].split(" && ") if earlier else []), command]))


def _add_model_rows(
    rows: dict[str, dict[str, Any]],
    row_name: str,
    frame: pd.DataFrame,
    command: str,
    seconds: float,
    all_folds: Sequence[str],
    classes: Sequence[str],
    validation: dict[str, Any] | None = None,
    seed_ensemble_row: bool = True,
    **extra: Any,
) -> None:
    """The row of a model's test predictions `frame` and, where two or more seeds ran a fold
    (and `seed_ensemble_row`), the row of the ensemble of its seeds."""
    runs = frame.groupby("seed")["fold"].unique()
    rows[row_name] = {
        "model": row_name,
        "command": command,
        "folds": [f for f in all_folds if f in set(frame["fold"])],
        "seeds": sorted(int(seed) for seed in runs.index),
        "runs": {str(seed): [f for f in all_folds if f in set(done)] for seed, done in runs.items()},
        "seconds": seconds,
        "summary": summarize(frame, classes),
        **({"validation": validation} if validation is not None else {}),
        **extra,
    }
    ensemble_of_seeds = seed_ensemble(frame, classes) if seed_ensemble_row else None
    ensemble_name = f"{row_name}, ensemble of its seeds"
    if ensemble_of_seeds is None:
        rows.pop(ensemble_name, None)  # an earlier command's, of seeds no longer in the row
    else:
        ensemble, members = ensemble_of_seeds
        rows[ensemble_name] = {
            "model": ensemble_name,
            "ensemble": True,
            "command": command,
            "folds": [f for f in all_folds if f in set(ensemble["fold"])],
            "seeds": members,
            "seconds": 0.0,  # the runs' time is their own row's
            "summary": summarize(ensemble.assign(seed=0), classes),  # one set of predictions
        }


def _speaker_folds_cell(row: dict[str, Any]) -> str:
    """The row's speaker folds, per seed where its seeds did not all run the same ones."""

    def speaker_folds(folds: Sequence[str]) -> str:
        return ", ".join(f for f in folds if f in SPEAKER_FOLDS)

    per_seed = {seed: speaker_folds(folds) for seed, folds in row.get("runs", {}).items()}
    if len(set(per_seed.values())) > 1:
        return "; ".join(f"{folds} (seed {seed})" for seed, folds in per_seed.items())
    return speaker_folds(row["folds"])


def _other_runs(previous: pd.DataFrame | None, name: str, predictions: pd.DataFrame) -> pd.DataFrame | None:
    """The earlier predictions of model `name` for (seed, fold) runs not in `predictions`; None
    if there are none."""
    if previous is None:
        return None
    earlier = previous[previous["model"] == name]
    made = pd.MultiIndex.from_frame(predictions[["seed", "fold"]].drop_duplicates())
    earlier = earlier[~pd.MultiIndex.from_frame(earlier[["seed", "fold"]]).isin(made)]
    return earlier if len(earlier) else None
