"""The one configuration object of aed-tf.

Every parameter is declared once, here, as a field of a section dataclass. The same field is
a CLI flag (``--n-mels 64``), a papermill/notebook parameter (``n_mels = 64``) and a key of the
``config.json`` written next to every run. Field names are unique across sections, so the flat
view (``Config.to_flat`` / ``Config.from_flat``) is unambiguous.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aed_tf.errors import InputError

CalmPolicy = Literal["neutral", "separate", "drop"]
SplitProtocol = Literal["speaker-independent", "cv", "all-speakers", "shared-si", "random"]
Normalization = Literal["clip", "speaker"]
NORMALIZATIONS: tuple[str, ...] = typing.get_args(Normalization)


# The recommended setting for a CPU, as measured by `aed-tf bench cv`: the defaults of that
# benchmark and of `make demo` (which may train fewer epochs, to finish in about ten minutes).
# 20 epochs, not 12: chosen on validation speakers (UAR 0.704 against 0.648, seed 0, 5 folds).
# Corpus-balanced class weights: chosen on validation speakers too (the mean over corpora of the
# validation UAR, 0.676 ± 0.008 against 0.644 ± 0.004, 5 folds, 2 seeds).
# A peak learning rate of 3e-3, not 1e-3: chosen on validation speakers (the same mean, 0.691 ±
# 0.001 against 0.676 ± 0.008, 5 folds, 2 seeds: each seed above both of the setting before).
# 30 epochs, not 20 (at 3e-3): chosen on validation speakers (the same mean, 0.720 ± 0.007
# against 0.691 ± 0.001, 5 folds, 2 seeds: each seed above both of the setting before).
# (`aed-tf train`'s own defaults stay those of a user with a GPU and internet: an ImageNet
# backbone.)
CPU_SETTING: dict[str, Any] = {
    "backbone": "audiocnn",
    "weights": "none",
    "epochs": 30,
    "learning_rate": 3e-3,
    "normalization": "speaker",
    "balance": "corpus_class_weights",
    "fusion": "egemaps",
}


def param(default: Any, help: str) -> Any:
    """A config field with its help text (shown by ``aed-tf <cmd> --help``)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed in configs; use a tuple")
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DataConfig:
    """Where the recordings are, how labels are mapped and how clips are split."""

    data_roots: tuple[str, ...] = param(
        (),
        "corpus folders or CSV manifests (path,emotion[,speaker]); empty: data/ if it exists, "
        "else those of ../shared/datasets and ../shared/extra-datasets that exist",
    )
    prepared_dir: str = param("prepared", "where `prepare` writes the manifest, summary and splits")
    cache_dir: str = param("", "decoded-audio cache; empty: $AED_TF_CACHE or ~/.cache/aed_tf")
    calm: CalmPolicy = param(
        "neutral", "RAVDESS calm: merge into neutral, keep as its own class, or drop the clips"
    )
    protocol: SplitProtocol = param(
        "speaker-independent",
        "split protocol: speaker-independent (grouped by speaker, seeded), cv (the fixed "
        "cross-validation fold --fold), all-speakers (every speaker trains but the validation "
        "ones; no test: the model to ship), shared-si (fixed held-out speakers of "
        "../shared/datasets) or random (speaker-dependent, for comparison with published "
        "numbers only)",
    )
    fold: str = param(
        "1",
        "cv protocol: the test fold, 1-5 (each corpus's speakers in sorted order, cut into 5 "
        "groups), or a corpus name (leave that corpus out: train on the others, test on it all)",
    )
    seed: int = param(0, "seed for the split, shuffling, augmentation and initialisation")
    val_fraction: float = param(0.15, "share of speakers (clips for `random`) for validation")
    test_fraction: float = param(0.15, "share of speakers (clips for `random`) for test")
    folds: int = param(5, "number of speaker-independent folds written by `prepare`")
    drop_unknown_speakers: bool = param(
        False, "drop clips whose speaker is unknown instead of refusing to split them"
    )
    max_clip_seconds: float = param(
        60.0, "longer files are rejected by `prepare` (use `predict --timeline` on long audio)"
    )
    workers: int = param(0, "parallel decoding workers; 0: one per CPU core")

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "in (0, 1)")
        _check(0 < self.test_fraction < 1, "test_fraction", self.test_fraction, "in (0, 1)")
        _check(
            self.val_fraction + self.test_fraction < 1,
            "val_fraction + test_fraction",
            self.val_fraction + self.test_fraction,
            "below 1",
        )
        _check(self.folds >= 2, "folds", self.folds, ">= 2")
        _check(self.max_clip_seconds > 0, "max_clip_seconds", self.max_clip_seconds, "> 0")
        _check(self.workers >= 0, "workers", self.workers, ">= 0")


@dataclass(frozen=True)
class FrontEndConfig:
    """The log-mel front end. Saved with every model: serving must compute the same features."""

    sample_rate: int = param(16000, "sample rate every clip is decoded to (Hz)")
    clip_seconds: float = param(3.0, "clip length fed to the model; longer is cropped, shorter padded")
    window_ms: float = param(25.0, "STFT window length (ms)")
    hop_ms: float = param(10.0, "STFT hop (ms)")
    n_fft: int = param(512, "FFT size (samples); at least the window length")
    n_mels: int = param(128, "mel bands")
    fmin: float = param(20.0, "lowest mel band edge (Hz)")
    fmax: float = param(8000.0, "highest mel band edge (Hz); at most sample_rate / 2")
    normalization: Normalization = param(
        "clip",
        "how log-mel features are standardised: clip (each clip's band means and variance) or "
        "speaker (each speaker's band means and deviations over all their clips; labels unused)",
    )

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.sample_rate >= 8000, "sample_rate", self.sample_rate, ">= 8000")
        _check(self.clip_seconds > 0, "clip_seconds", self.clip_seconds, "> 0")
        _check(self.hop_ms > 0, "hop_ms", self.hop_ms, "> 0")
        _check(
            self.n_fft >= self.window_length,
            "n_fft",
            self.n_fft,
            f">= the window length ({self.window_length} samples)",
        )
        _check(self.n_mels >= 8, "n_mels", self.n_mels, ">= 8")
        _check(
            self.normalization in NORMALIZATIONS,
            "normalization",
            self.normalization,
            f"one of {', '.join(NORMALIZATIONS)}",
        )
        _check(0 <= self.fmin < self.fmax, "fmin", self.fmin, f"in [0, fmax={self.fmax})")
        _check(
            self.fmax <= self.sample_rate / 2,
            "fmax",
            self.fmax,
            f"<= sample_rate / 2 = {self.sample_rate / 2}",
        )
        _check(
            self.clip_samples >= self.window_length,
            "clip_seconds",
            self.clip_seconds,
            "at least one STFT window long",
        )

    @property
    def window_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def num_frames(self) -> int:
        return 1 + (self.clip_samples - self.window_length) // self.hop_length


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; evaluation and serving never augment."""

    augment: bool = param(True, "augment training clips")
    gain_db: float = param(6.0, "random gain drawn uniformly from [-gain_db, +gain_db] dB")
    noise_probability: float = param(0.5, "probability of adding white noise to a clip")
    snr_db_min: float = param(10.0, "lowest signal-to-noise ratio of the added noise (dB)")
    snr_db_max: float = param(40.0, "highest signal-to-noise ratio of the added noise (dB)")
    time_shift_ms: float = param(200.0, "random time shift of up to ± this many ms, zero-filled")
    freq_masks: int = param(2, "SpecAugment frequency masks per clip")
    freq_mask_width: int = param(16, "maximum width of a frequency mask (mel bands)")
    time_masks: int = param(2, "SpecAugment time masks per clip")
    time_mask_width: int = param(30, "maximum width of a time mask (frames)")
    mixup_alpha: float = param(0.0, "mixup Beta(alpha, alpha) parameter; 0 turns mixup off")
    speed_perturbation: float = param(
        0.0,
        "speed perturbation: each training clip is also resampled to speeds 1 - p and 1 + p "
        "(tempo and pitch together; 0.1 gives 0.9x and 1.1x), one of the three drawn per clip "
        "and epoch; 0 turns it off",
    )
    frequency_warp: float = param(
        0.0,
        "vocal tract length perturbation (Jaitly & Hinton's piecewise-linear warp): each "
        "training clip's frequencies are scaled by a factor drawn from [1 - w, 1 + w] up to 60% "
        "of the band, then bent so that the top stays (formants and pitch move, tempo stays), "
        "per clip and epoch; 0 turns it off",
    )

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.gain_db >= 0, "gain_db", self.gain_db, ">= 0")
        _check(0 <= self.noise_probability <= 1, "noise_probability", self.noise_probability, "in [0, 1]")
        _check(self.snr_db_min <= self.snr_db_max, "snr_db_min", self.snr_db_min, "<= snr_db_max")
        _check(self.time_shift_ms >= 0, "time_shift_ms", self.time_shift_ms, ">= 0")
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        _check(self.mixup_alpha >= 0, "mixup_alpha", self.mixup_alpha, ">= 0")
        _check(
            0 <= self.speed_perturbation < 0.5, "speed_perturbation", self.speed_perturbation, "in [0, 0.5)"
        )
        _check(0 <= self.frequency_warp < 0.5, "frequency_warp", self.frequency_warp, "in [0, 0.5)")


@dataclass(frozen=True)
class TrainConfig:
    """The model and how it is trained. Defaults follow the reference card: batch 32, 5 epochs,
    learning rate 1e-3, AdamW with cosine decay, weight decay 0, no gradient clipping."""

    backbone: str = param("efficientnetb0", "backbone name from the registry (aed_tf.backbones)")
    weights: str = param(
        "imagenet",
        "backbone weights: imagenet (downloaded, or from the Keras cache), none (from scratch) or "
        "the path of a Keras .h5 weights file",
    )
    image_size: int = param(0, "square input size of the backbone; 0: the backbone's default")
    batch_size: int = param(32, "clips per batch (across all replicas)")
    epochs: int = param(5, "fine-tuning epochs (from scratch: all epochs)")
    warmup_epochs: int = param(
        1, "epochs training the head alone on a frozen pretrained backbone; skipped from scratch"
    )
    learning_rate: float = param(1e-3, "peak learning rate (head warm-up and from-scratch runs)")
    fine_tune_learning_rate: float = param(1e-4, "peak learning rate once the backbone is unfrozen")
    unfreeze: float = param(
        1.0, "share of the backbone's layers, from the top, unfrozen for fine-tuning (1.0: all)"
    )
    lr_warmup_fraction: float = param(0.05, "share of each phase's steps with a linear LR warm-up")
    weight_decay: float = param(0.0, "AdamW decoupled weight decay")
    clip_norm: float = param(0.0, "global gradient-norm clipping; 0 turns it off")
    label_smoothing: float = param(0.1, "label smoothing of the cross-entropy")
    dropout: float = param(0.3, "dropout before the classifier")
    balance: Literal["class_weights", "corpus_class_weights", "none"] = param(
        "class_weights",
        "counter imbalance: class_weights (inverse class frequency), corpus_class_weights (every "
        "corpus and, within it, every emotion weighs the same in total, so that a small corpus "
        "counts as much as a large one) or none",
    )
    speaker_adversary: float = param(
        0.0,
        "weight of the gradient reversal between the clip embedding and a speaker classifier "
        "trained beside the emotion head, which pushes the embedding to forget the speaker "
        "(training only; serving has no speaker head); 0 turns it off",
    )
    fusion: Literal["none", "egemaps"] = param(
        "none",
        "egemaps: fuse the model with a linear SVM over eGeMAPS functionals standardised per "
        "speaker (aed_tf.functionals), fitted on the training speakers, its margins weighted by "
        "--fusion-weight; applied wherever the speaker's other recordings are known (needs "
        "normalization speaker); none: the model alone",
    )
    # Chosen on validation speakers by `aed-tf bench cv`: for each fold, the best on the validation
    # speakers of the other folds' runs (never its own test speakers) was 1.5 in 4 of the 5 folds
    # with seed 0's runs; with seed 1's too, 0.75 in 4, within 0.007 of 1.5 on each: a plateau.
    fusion_weight: float = param(
        1.5,
        "weight of the eGeMAPS head's margins against the network's log-probabilities (--fusion egemaps)",
    )
    patience: int = param(0, "early stopping after this many epochs without a better val UAR; 0: off")
    mixed_precision: Literal["auto", "on", "off"] = param(
        "auto", "float16 compute with a float32 head: auto turns it on when a GPU is present"
    )
    xla: bool = param(False, "compile the training step with XLA")
    tensorboard: bool = param(
        False, "write TensorBoard logs to <run folder>/tensorboard (tensorboard --logdir there)"
    )
    output_dir: str = param("saved_models", "runs are written to <output_dir>/<run_id>/")
    run_id: str = param("", "name of the run folder; empty: <date>-<backbone>-<protocol>-seed<seed>")
    resume: bool = param(False, "continue the run in <output_dir>/<run_id> from its last epoch")

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.image_size >= 0, "image_size", self.image_size, ">= 0")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, ">= 0")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        _check(0 < self.unfreeze <= 1, "unfreeze", self.unfreeze, "in (0, 1]")
        _check(0 <= self.lr_warmup_fraction < 1, "lr_warmup_fraction", self.lr_warmup_fraction, "in [0, 1)")
        for name in ("weight_decay", "clip_norm", "patience", "speaker_adversary", "fusion_weight"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        _check(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        # A folder name, not a path: "../elsewhere" would write outside output_dir.
        _check(
            self.run_id == Path(self.run_id).name and self.run_id not in (".", ".."),
            "run_id",
            self.run_id,
            "a folder name (no / or ..)",
        )

    @property
    def from_scratch(self) -> bool:
        return is_from_scratch(self.weights)


@dataclass(frozen=True)
class Config:
    """All parameters of an experiment, grouped in sections with globally unique field names."""

    data: DataConfig = field(default_factory=DataConfig)
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # The fusion standardises the functionals with the speaker's statistics, which serving
        # takes from the same references as the log-mel's.
        _check(
            self.train.fusion == "none" or self.frontend.normalization == "speaker",
            "fusion",
            self.train.fusion,
            "none (--fusion none) unless normalization is speaker (the fusion needs the speaker's recordings)",
        )

    # -- the flat view: notebook parameters and CLI flags -------------------------------------

    @classmethod
    def sections(cls) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for section in cls.sections().values() for f in dataclasses.fields(section)]

    def to_flat(self) -> dict[str, Any]:
        return {
            f.name: getattr(getattr(self, s), f.name)
            for s, section in self.sections().items()
            for f in dataclasses.fields(section)
        }

    @classmethod
    def from_flat(cls, **values: Any) -> Config:
        return cls().replace(**values)

    def run_id(self) -> str:
        """`train.run_id`, or for a run nobody named `<time>-<backbone>-<protocol>-seed<seed>`."""
        return self.train.run_id or (
            f"{dt.datetime.now():%Y%m%d-%H%M%S}-{self.train.backbone}-{self.data.protocol}"
            + (f"-fold{self.data.fold}" if self.data.protocol == "cv" else "")
            + f"-seed{self.data.seed}"
        )

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> Config:
        """A config from the fields defined in ``namespace``; other names are ignored. A notebook
        passes ``globals()`` after its parameters cell, so its parameters are its config."""
        return cls.from_flat(**{name: namespace[name] for name in cls.field_names() if name in namespace})

    def replace(self, **values: Any) -> Config:
        """A copy with some flat fields changed; unknown names are an error with a suggestion."""
        owner = {name: s for s, sec in self.sections().items() for name in _names(sec)}
        unknown = [name for name in values if name not in owner]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, owner, n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise InputError(f"unknown config parameter(s): {', '.join(hints)}")
        changed = {}
        for s, section in self.sections().items():
            mine = {k: _coerce(section, k, v) for k, v in values.items() if owner[k] == s}
            if mine:
                changed[s] = dataclasses.replace(getattr(self, s), **mine)
        return dataclasses.replace(self, **changed)

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            s: {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(getattr(self, s)).items()
            }
            for s in self.sections()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Reads ``to_dict`` output (nested) or a flat mapping."""
        flat: dict[str, Any] = {}
        for key, value in d.items():
            if key in cls.sections() and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        return cls.from_flat(**flat)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        data = json.loads(Path(path).read_text())
        return cls.from_dict(data.get("config", data))

    # -- CLI -----------------------------------------------------------------------------------

    @classmethod
    def add_arguments(
        cls,
        parser: argparse.ArgumentParser,
        sections: tuple[str, ...] | None = None,
        positional: str | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        """Adds one flag per field of the given sections (all by default).

        ``positional`` names a tuple field taken as positional arguments instead of a flag;
        ``aliases`` maps field names to an extra flag (``{"prepared_dir": "--out"}``).
        """
        aliases = aliases or {}
        for s, section in cls.sections().items():
            if sections is not None and s not in sections:
                continue
            group = parser.add_argument_group(f"{s} parameters")
            hints = typing.get_type_hints(section)
            for f in dataclasses.fields(section):
                _add_flag(group, f, hints[f.name], f.name == positional, aliases.get(f.name))

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: Config | None = None) -> Config:
        """Flags the user gave override ``base`` (defaults when None)."""
        names = set(cls.field_names())
        given = {k: v for k, v in vars(args).items() if k in names and v not in (None, [])}
        return (base or cls()).replace(**given)


def _names(section: type) -> list[str]:
    return [f.name for f in dataclasses.fields(section)]


def is_from_scratch(weights: str | None) -> bool:
    """Whether `weights` asks for random initialisation: None, "", "none" or "scratch"."""
    return weights is None or str(weights).lower() in ("", "none", "scratch")


def _check_finite(section: Any) -> None:
    """Every float parameter is a number: inf and NaN pass comparisons such as `> 0` and then
    overflow or poison training far from the flag that caused it."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float):
            _check(math.isfinite(value), f.name, value, "a finite number")


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise InputError(f"config parameter {name} = {value!r}: must be {expected}")


def _coerce(section: type, name: str, value: Any) -> Any:
    """Values from JSON, papermill or the CLI arrive as lists, ints for floats, and so on."""
    hint = typing.get_type_hints(section)[name]
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, (str, Path)):
            value = (value,)
        return tuple(str(v) for v in value)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise InputError(f"config parameter {name} = {value!r}: must be one of {choices}")
        return value
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        if not isinstance(value, bool):
            raise InputError(f"config parameter {name} = {value!r}: must be true or false")
        return value
    if hint in (int, float, str):
        try:
            cast = hint(value)
        except (TypeError, ValueError):
            raise InputError(f"config parameter {name} = {value!r}: must be {hint.__name__}") from None
        if hint is int and isinstance(value, float) and value != cast:
            raise InputError(f"config parameter {name} = {value!r}: must be an integer")
        return cast
    return value


def _add_flag(
    group: argparse._ArgumentGroup,
    f: dataclasses.Field,
    hint: Any,
    positional: bool = False,
    alias: str | None = None,
) -> None:
    # argparse %-formats help strings: a literal % in a help text or a default must be doubled.
    help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})".replace("%", "%%")
    origin = typing.get_origin(hint)
    if positional:
        group.add_argument(f.name, nargs="*", default=None, metavar=f.name.upper(), help=help_text)
        return
    flags = ["--" + f.name.replace("_", "-")] + ([alias] if alias else [])
    # default=None everywhere: from_args tells flags the user gave from ones left alone.
    if hint is bool:
        group.add_argument(
            *flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
    elif origin is tuple:
        group.add_argument(*flags, dest=f.name, nargs="+", default=None, help=help_text)
    elif origin is Literal:
        group.add_argument(*flags, dest=f.name, choices=typing.get_args(hint), default=None, help=help_text)
    else:
        group.add_argument(*flags, dest=f.name, type=hint, default=None, help=help_text)
