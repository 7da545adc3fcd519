"""The notebooks' figures (matplotlib and seaborn). Each function returns its Figure, so the
notebooks stay a list of calls and the tests can check what was drawn."""

from __future__ import annotations

from typing import Sequence

import librosa.display
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from aed_tf.config import FrontEndConfig
from aed_tf.features import log_mel


def _figure(width: float, height: float, **kwargs) -> tuple[Figure, np.ndarray | plt.Axes]:
    return plt.subplots(figsize=(width, height), layout="constrained", **kwargs)


def corpus_emotion_heatmap(manifest: pd.DataFrame) -> Figure:
    """Clips per corpus and emotion, as annotated counts."""
    counts = pd.crosstab(manifest["corpus"], manifest["emotion"])
    fig, ax = _figure(1.1 * counts.shape[1] + 2, 0.6 * counts.shape[0] + 1.5)
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax)
    ax.set_title("Clips per corpus and emotion")
    return fig


def duration_histograms(manifest: pd.DataFrame) -> Figure:
    """Clip durations, one histogram per corpus."""
    corpora = sorted(manifest["corpus"].unique())
    fig, axes = _figure(4 * len(corpora), 3, ncols=len(corpora), squeeze=False, sharey=False)
    for ax, corpus in zip(axes[0], corpora):
        sns.histplot(manifest.loc[manifest["corpus"] == corpus, "duration"], bins=30, ax=ax)
        ax.set_title(corpus)
        ax.set_xlabel("duration (s)")
    return fig


def log_mel_image(waveform: np.ndarray, frontend: FrontEndConfig, ax: plt.Axes) -> None:
    """Draws a clip's log-mel (the package's front end, not librosa's) with librosa's specshow."""
    features = log_mel(np.asarray(waveform, np.float32)[np.newaxis], frontend)[0].numpy()
    librosa.display.specshow(
        features.T,
        sr=frontend.sample_rate,
        hop_length=frontend.hop_length,
        x_axis="time",
        y_axis="mel",
        fmin=frontend.fmin,
        fmax=frontend.fmax,
        cmap="magma",
        ax=ax,
    )


def waveform_and_log_mel(waveform: np.ndarray, frontend: FrontEndConfig, title: str = "") -> Figure:
    """A clip's waveform above its log-mel."""
    fig, (wave_ax, mel_ax) = _figure(8, 4.5, nrows=2, sharex=True, height_ratios=[1, 2])
    librosa.display.waveshow(np.asarray(waveform, np.float32), sr=frontend.sample_rate, ax=wave_ax)
    wave_ax.set_title(title)
    wave_ax.set_xlabel("")
    log_mel_image(waveform, frontend, mel_ax)
    return fig


def feature_grid(features: Sequence[np.ndarray], titles: Sequence[str], frontend: FrontEndConfig) -> Figure:
    """Model-input features ([frames, n_mels], normalised) side by side, e.g. a clip and its
    augmented versions."""
    fig, axes = _figure(3.2 * len(features), 3, ncols=len(features), squeeze=False)
    for ax, image, title in zip(axes[0], features, titles):
        ax.imshow(np.asarray(image).T, origin="lower", aspect="auto", cmap="magma", vmin=-3, vmax=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"frame ({frontend.hop_ms:g} ms)")
        ax.set_ylabel("mel band")
    return fig


def learning_curves(history: pd.DataFrame) -> Figure:
    """Loss, training accuracy and validation UAR per epoch, with phase boundaries."""
    history = history.reset_index(drop=True)
    step = np.arange(1, len(history) + 1)
    fig, (loss_ax, score_ax) = _figure(11, 3.5, ncols=2)
    loss_ax.plot(step, history["loss"], label="train")
    loss_ax.plot(step, history["val_loss"], label="validation")
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    score_ax.plot(step, history["accuracy"], label="train accuracy")
    score_ax.plot(step, history["val_accuracy"], label="validation accuracy")
    score_ax.plot(step, history["val_uar"], label="validation UAR", linewidth=2)
    score_ax.set(title="Accuracy and UAR", xlabel="epoch", ylim=(0, 1))
    for boundary in np.flatnonzero(history["phase"].to_numpy()[1:] != history["phase"].to_numpy()[:-1]):
        for ax in (loss_ax, score_ax):
            ax.axvline(boundary + 1.5, color="grey", linestyle=":")
    for ax in (loss_ax, score_ax):
        ax.legend(fontsize=8)
    return fig


def confusion_heatmaps(counts: pd.DataFrame, normalized: pd.DataFrame, title: str = "") -> Figure:
    """The confusion matrix as counts and row-normalised, side by side."""
    fig, (count_ax, norm_ax) = _figure(13, 5, ncols=2)
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", cbar=False, ax=count_ax)
    count_ax.set_title(f"{title} counts".strip())
    sns.heatmap(normalized, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=norm_ax)
    norm_ax.set_title(f"{title} row-normalised (recall on the diagonal)".strip())
    return fig


def reliability_diagram(tables: dict[str, pd.DataFrame]) -> Figure:
    """Accuracy against mean confidence per confidence bin, one line per table (e.g. before and
    after temperature scaling); the diagonal is perfect calibration."""
    fig, ax = _figure(5, 5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, table in tables.items():
        ax.plot(table["confidence"], table["accuracy"], marker="o", label=name)
    ax.set(
        xlabel="confidence (top probability)",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Reliability diagram",
    )
    ax.legend(fontsize=8)
    return fig


def probability_bars(probabilities: Sequence[float], classes: Sequence[str], true: str) -> Figure:
    """One clip's class probabilities, the true class in a darker colour."""
    fig, ax = _figure(4, 2.2)
    colors = ["tab:green" if name == true else "tab:grey" for name in classes]
    ax.barh(list(classes), probabilities, color=colors)
    ax.set(xlim=(0, 1), xlabel="probability")
    ax.invert_yaxis()
    return fig


def metric_bars(table: pd.DataFrame, metric: str, title: str) -> Figure:
    """One metric per group (e.g. UAR per speaker), from a table with a `clips` column."""
    fig, ax = _figure(max(5, 0.45 * len(table) + 2), 3)
    labels = [" ".join(str(v) for v in key) if isinstance(key, tuple) else str(key) for key in table.index]
    ax.bar(labels, table[metric])
    ax.set(ylim=(0, 1), ylabel=metric, title=title)
    ax.tick_params(axis="x", rotation=60)
    return fig


def use_report_style() -> None:
    """Inline PNGs at a readable size (the HTML report embeds them) and tables that show whole
    values, not ones cut at 50 characters."""
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "font.size": 9})
    pd.set_option("display.max_colwidth", None)
    sns.set_theme(style="whitegrid", rc={"figure.dpi": 90})
