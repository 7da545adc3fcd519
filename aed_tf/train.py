"""Training: from a Config to a saved, reproducible run in ``<output_dir>/<run_id>/``.

Phases: with pretrained weights, the head is warmed up on a frozen backbone, then the top
``unfreeze`` share of the backbone is fine-tuned at a lower learning rate; from scratch, one
phase trains everything. Each phase uses AdamW with a linear warm-up and cosine decay. The
model kept is the one with the best validation UAR (balanced accuracy), not the lowest loss.

A run folder holds ``classifier.keras`` (images -> probabilities), ``serving.keras`` (raw 16 kHz
waveform -> probabilities, the front end inside), ``config.json``, ``history.csv``, ``split.csv``,
``metrics.json`` and, with ``--fusion egemaps``, ``fusion.json`` (`fit_fusion`). Every file is written to a temporary name and renamed, and an epoch
checkpoint (model and optimizer state) lets ``resume`` continue a killed run.

With ``TF_CONFIG`` set, the machines it names train together (`aed_tf.distributed`): the chief
writes the run folder, the other workers a temporary one that is deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from aed_tf import distributed, functionals
from aed_tf.backbones import resolve_image_size
from aed_tf.baseline import fit_linear_svm_baseline
from aed_tf.calibration import apply_temperature, expected_calibration_error, fit_temperature
from aed_tf.config import Config
from aed_tf.errors import InputError, UserError
from aed_tf.files import atomic_write, remove_stale_temporaries, write_csv, write_json
from aed_tf.metrics import classification_metrics
from aed_tf.model import (
    EMOTION_OUTPUT,
    SPEAKER_OUTPUT,
    build_classifier,
    build_serving_model,
    emotion_classifier,
    load_model,
    set_backbone_trainable,
    with_speaker_adversary,
)
from aed_tf.partitions import TrainingData, load_training_data
from aed_tf.pipeline import speaker_statistics, train_dataset
from aed_tf.runs import (
    CLASSIFIER_FILE,
    CONFIG_FILE,
    FINISHED,
    FUSION_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    SERVING_FILE,
    SPLIT_FILE,
    TENSORBOARD_DIR,
    TRAINING_STATISTICS_FILE,
    Run,
    write_record,
)
from aed_tf.splits import PROTOCOLS

_CHECKPOINT = "checkpoint.keras"  # the last finished epoch, with optimizer state
_BEST_WEIGHTS = "best-weights.npz"  # model arrays only, not the optimizer's
_STATE = "state.json"


@dataclass
class TrainResult:
    run_dir: Path
    val_metrics: dict[str, float]
    history: pd.DataFrame
    seconds: float
    model: keras.Model  # the classifier with the kept epoch's weights


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    learning_rate: float
    backbone_share: float  # 0: frozen backbone


def run_directory(config: Config) -> Path:
    return Path(config.train.output_dir) / config.run_id()


def phases(config: Config) -> list[Phase]:
    train = config.train
    if train.from_scratch:
        return [Phase("scratch", train.epochs, train.learning_rate, 1.0)]
    warmup = [Phase("head", train.warmup_epochs, train.learning_rate, 0.0)] if train.warmup_epochs else []
    return warmup + [Phase("finetune", train.epochs, train.fine_tune_learning_rate, train.unfreeze)]


def train(config: Config, progress: bool = True) -> TrainResult:
    """Trains, selects the epoch with the best validation UAR and writes the run folder.

    Under ``TF_CONFIG`` each worker calls this with the same config; only the chief writes the
    run folder. The others return its path as they name it (with no ``run_id``, from their clock).
    """
    if os.environ.get("TF_CONFIG"):  # before the strategy connects to the cluster
        _refuse_what_training_across_machines_lacks(config)
    strategy = distribution_strategy()
    run_dir = run_directory(config)
    if strategy.extended.should_checkpoint:  # the chief, or the only worker
        return _train(config, strategy, run_dir, progress)
    with tempfile.TemporaryDirectory(prefix="aed-tf-worker-") as scratch:
        result = _train(config, strategy, Path(scratch) / run_dir.name, progress)
    return dataclasses.replace(result, run_dir=run_dir)


def _refuse_what_training_across_machines_lacks(config: Config) -> None:
    if config.train.resume:
        raise distributed.MultiWorkerUnsupportedError(
            "--resume is not supported across machines (TF_CONFIG is set): only the chief keeps "
            "the checkpoint. Resume on the chief alone with TF_CONFIG unset, or start a new run."
        )
    if config.train.speaker_adversary > 0:  # distributed.fit trains one output
        raise distributed.MultiWorkerUnsupportedError(
            "--speaker-adversary is not supported across machines (TF_CONFIG is set): "
            "train on one machine, with TF_CONFIG unset"
        )


def _train(config: Config, strategy: tf.distribute.Strategy, run_dir: Path, progress: bool) -> TrainResult:
    started = time.perf_counter()
    state = _start_or_resume(run_dir, config)
    if run_dir.is_dir():  # resuming: what a killed write left behind goes
        remove_stale_temporaries(run_dir)
    _configure_runtime(config)
    data = load_training_data(config, progress=progress)
    image_size = resolve_image_size(config.train.backbone, config.train.image_size)
    num_classes = len(data.classes)
    train_part, val_part = data.partitions["train"], data.partitions["val"]
    steps_per_epoch = len(train_part.labels) // config.train.batch_size
    if steps_per_epoch == 0:  # before the pipeline, which refuses it less helpfully
        raise InputError(
            f"{len(train_part.labels)} training clips give no full batch of "
            f"{config.train.batch_size}: lower --batch-size"
        )
    # The number of the epoch the pipeline draws: set at each epoch's start (SetEpoch), so that a
    # resumed run sees the data order and augmentation of the uninterrupted one.
    epoch_number = tf.Variable(0, dtype=tf.int64, trainable=False)
    adversary = config.train.speaker_adversary > 0
    train_ds = train_dataset(
        train_part.waveforms,
        train_part.labels,
        num_classes,
        config,
        seed=config.data.seed,
        speakers=train_part.speakers,
        epoch=epoch_number,
        speaker_targets=adversary,
        clip_weights=clip_weights(
            config.train.balance, train_part.manifest["corpus"], train_part.labels, num_classes
        ),
    )
    val_ds = val_part.eval_dataset(num_classes, config)
    # The fusion's functionals, computed while the network trains on the cores it leaves idle.
    fusion_features = (
        functionals.cache_in_background(
            [*train_part.waveforms, *val_part.waveforms], config.frontend.sample_rate, config.data.cache_dir
        )
        if config.train.fusion == "egemaps"
        else None
    )

    with strategy.scope():
        model = build_classifier(config.train, num_classes, config.frontend.n_mels)
        if adversary:
            speakers = len(set(train_part.speakers))
            model = with_speaker_adversary(model, speakers, config.train.speaker_adversary)
    _write_run_files(run_dir, config, data, image_size, strategy, status="training")

    try:
        model = _fit_phases(
            config,
            strategy,
            run_dir,
            state,
            model,
            train_ds,
            epoch_number,
            val_ds,
            val_part.labels,
            steps_per_epoch,
            progress,
        )
    except NonFiniteLossError:
        _write_run_files(run_dir, config, data, image_size, strategy, status="failed: non-finite loss")
        raise

    with np.load(run_dir / _BEST_WEIGHTS) as best:
        model.set_weights([best[f"arr_{i}"] for i in range(len(best.files))])
    model = emotion_classifier(model)
    val_probabilities = model.predict(val_ds, verbose=0)
    val_metrics = classification_metrics(val_part.labels, val_probabilities)
    temperature = fit_temperature(val_part.labels, val_probabilities)
    _save_model(model, run_dir / CLASSIFIER_FILE)
    _save_model(build_serving_model(model, config.frontend, temperature), run_dir / SERVING_FILE)
    if config.frontend.normalization == "speaker":
        pooled = speaker_statistics(
            train_part.waveforms, ["training"] * len(train_part.waveforms), config.frontend
        )[0]
        write_json(
            run_dir / TRAINING_STATISTICS_FILE,
            {
                "mean": pooled[0].tolist(),
                "deviation": pooled[1].tolist(),
                "clips": len(train_part.waveforms),
                "speakers": int(len(set(train_part.speakers))),
            },
        )
    if fusion_features is not None:
        fusion_features.result()  # in the cache now, for fit_fusion; raises what computing them raised
        fit_fusion(run_dir, data, config.train.fusion_weight, temperature, val_probabilities)
    seconds = time.perf_counter() - started
    history = pd.read_csv(run_dir / HISTORY_FILE)
    write_json(
        run_dir / METRICS_FILE,
        {
            "val": val_metrics,
            "best_epoch": state["best"],
            "temperature": temperature,  # fitted on validation; the serving model applies it
            "val_ece": expected_calibration_error(val_part.labels, val_probabilities),
            "val_ece_calibrated": expected_calibration_error(
                val_part.labels, apply_temperature(val_probabilities, temperature)
            ),
            "epoch_seconds": round(float(history["seconds"].sum()), 1),  # all epochs, resumed or not
            "train_images_per_second": round(
                len(train_part.labels) * len(history) / float(history["seconds"].sum()), 1
            ),
        },
    )
    _write_run_files(run_dir, config, data, image_size, strategy, status=FINISHED)
    for leftover in (_CHECKPOINT, _STATE, _BEST_WEIGHTS):
        (run_dir / leftover).unlink(missing_ok=True)
    return TrainResult(run_dir, val_metrics, history, seconds, model)


def fit_fusion(
    run_dir: Path,
    data: TrainingData,
    weight: float,
    temperature: float | None = None,
    val_probabilities: np.ndarray | None = None,
    by: str = "training",
) -> None:
    """fusion.json: the eGeMAPS head (`aed_tf.functionals`) fitted on the run's training clips,
    each speaker's functionals standardised over their own clips, its margins weighted by
    `weight` against the network's log-probabilities. Serving fuses the temperature-scaled
    probabilities, so the head's weight is `weight` / temperature: the same predictions as
    fusing the network's own, which `aed-tf bench cv` measures. The network's validation
    probabilities and the temperature come from the run's classifier and metrics unless given:
    a run that finished before its head was fitted (`by` says who fitted it)."""
    run = Run.load(run_dir)
    config = run.config
    train_part, val_part = data.partitions["train"], data.partitions["val"]
    if temperature is None:
        temperature = run.metrics()["temperature"]
    if val_probabilities is None:
        classifier = load_model(run_dir / CLASSIFIER_FILE)
        val_probabilities = classifier.predict(val_part.eval_dataset(len(data.classes), config), verbose=0)

    def fusable(part, min_clips: int | None) -> np.ndarray:
        rate, cache_dir = config.frontend.sample_rate, config.data.cache_dir
        features = functionals.cached_egemaps_matrix(part.waveforms, rate, cache_dir)
        return functionals.fusable_per_speaker(features, part.speakers, min_clips)[0]

    # Fitted on every training speaker's clips with functionals (two or more: a deviation).
    train_x = fusable(train_part, min_clips=2)
    usable = np.isfinite(train_x).all(axis=1)
    if len(set(train_part.labels[usable])) < 2:
        raise InputError(
            f"{run_dir}: too few training clips with eGeMAPS functionals to fit the fusion "
            f"({int(usable.sum())}): train with --fusion none"
        )
    svm = fit_linear_svm_baseline(train_x[usable], train_part.labels[usable], seed=config.data.seed)
    head = functionals.FusionHead.from_pipeline(svm, len(data.classes), weight=weight / temperature)
    # The validation clips as serving fuses them: those of speakers with enough clips.
    val_x = fusable(val_part, min_clips=None)
    served = apply_temperature(val_probabilities, temperature)
    write_json(
        run_dir / FUSION_FILE,
        {
            "head": head.to_dict(),
            "weight": weight,
            "temperature": temperature,
            "val": classification_metrics(val_part.labels, functionals.fuse_heads(served, [head], val_x)),
            "validation_clips_fused": int(np.isfinite(val_x).all(axis=1).sum()),
            "fitted_by": by,
        },
    )


def _fit_phases(
    config: Config,
    strategy: tf.distribute.Strategy,
    run_dir: Path,
    state: dict,
    model: keras.Model,
    train_ds: tf.data.Dataset,
    epoch_number: tf.Variable,
    val_ds: tf.data.Dataset,
    val_labels: np.ndarray,
    steps_per_epoch: int,
    progress: bool,
) -> keras.Model:
    """Trains every phase not yet completed (from its last epoch when resuming); returns the
    model of the last phase."""
    model_is_current = True  # does `model` hold the weights of the last finished epoch?
    first_epoch = 0  # of the phase, counted over every phase: the pipeline's epoch number
    for phase in phases(config):
        phase_start, first_epoch = first_epoch, first_epoch + phase.epochs
        if phase.name in state["completed_phases"]:
            model_is_current = False
            continue
        resuming = state["phase"] == phase.name and (run_dir / _CHECKPOINT).is_file()
        with strategy.scope():
            if resuming or not model_is_current:
                # The last finished epoch; resuming, also the optimizer's state and step count.
                model = keras.models.load_model(run_dir / _CHECKPOINT)
                _restore_seed_generators(model, state)
            set_backbone_trainable(model, phase.backbone_share)
            if not resuming:
                _compile(model, config, phase, steps_per_epoch)
        initial_epoch = state["epoch"] if resuming else 0
        state.update(phase=phase.name, epoch=initial_epoch)
        callbacks = (
            [
                SetEpoch(epoch_number, phase_start),
                StopAtNonFiniteLoss(phase),
                EpochCheckpoint(run_dir, state, phase.name, val_ds, val_labels),
            ]
            + (
                [ResumableEarlyStopping(state, phase.name, patience=config.train.patience)]
                if config.train.patience
                else []
            )
            + (
                # After EpochCheckpoint, so that the validation UAR it adds to the logs is logged too.
                [keras.callbacks.TensorBoard(str(run_dir / TENSORBOARD_DIR / phase.name))]
                if config.train.tensorboard
                else []
            )
        )
        if distributed.is_multi_worker(strategy):
            distributed.fit(
                model,
                train_ds,
                epochs=phase.epochs,
                loss=_loss(config, reduction=None),
                callbacks=callbacks,
                verbose=1 if progress else 0,
            )
        else:
            model.fit(
                train_ds,
                epochs=phase.epochs,
                initial_epoch=initial_epoch,
                shuffle=False,  # the dataset reshuffles itself, seeded, every epoch
                verbose=1 if progress else 0,
                callbacks=callbacks,
            )
        model_is_current = True
        state["completed_phases"].append(phase.name)
        write_json(run_dir / _STATE, state)
    return model


class SetEpoch(keras.callbacks.Callback):
    """Tells the training pipeline which epoch starts (counted over every phase)."""

    def __init__(self, epoch_number: tf.Variable, phase_start: int):
        super().__init__()
        self.epoch_number, self.phase_start = epoch_number, phase_start

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_number.assign(self.phase_start + epoch)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on the validation UAR that, resumed, goes on counting from the epochs the
    run already has (its best and how long ago), as the uninterrupted run would."""

    def __init__(self, state: dict, phase: str, patience: int):
        super().__init__("val_uar", patience=patience, mode="max")
        self.state, self.phase = state, phase

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        done = [row for row in self.state.get("history", []) if row["phase"] == self.phase]
        for row in done:  # replayed: the epochs before this process
            self.on_epoch_end(row["epoch"] - 1, {"val_uar": row["val_uar"]})


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class StopAtNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is not finite, before the epoch's end saves
    its weights: the run keeps its last finite epoch, and the user learns the likely cause at
    once rather than after a poisoned epoch."""

    def __init__(self, phase: Phase):
        super().__init__()
        self.phase = phase

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss} at epoch {self.epoch + 1}, batch {batch + 1} "
                f"(phase {self.phase.name}, learning rate {self.phase.learning_rate:g}): the "
                "learning rate is likely too high; lower --learning-rate (or "
                "--fine-tune-learning-rate), or set --clip-norm. The run folder is marked failed."
            )


class EpochCheckpoint(keras.callbacks.Callback):
    """At each epoch end: validation UAR into the logs, the best weights, history.csv, and a
    checkpoint with optimizer state to resume from, each written atomically."""

    def __init__(
        self, run_dir: Path, state: dict, phase: str, val_ds: tf.data.Dataset, val_labels: np.ndarray
    ):
        super().__init__()
        self.run_dir, self.state, self.phase = run_dir, state, phase
        self.val_ds, self.val_labels = val_ds, val_labels

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self._classifier = emotion_classifier(model)  # built once: predict compiles per model

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self._started
        val = classification_metrics(self.val_labels, self._classifier.predict(self.val_ds, verbose=0))
        for name, value in val.items():
            logs[f"val_{name}"] = value
        row = {
            "phase": self.phase,
            "epoch": epoch + 1,
            **_history_columns({k: float(v) for k, v in logs.items()}),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "seconds": round(seconds, 2),
        }
        history = self.state.setdefault("history", [])
        history.append(row)
        if val["uar"] > self.state["best"].get("val_uar", -1.0):
            self.state["best"] = {"phase": self.phase, "epoch": epoch + 1, "val_uar": val["uar"]}
            _save_arrays(self.run_dir / _BEST_WEIGHTS, self.model.get_weights())
        _save_model(self.model, self.run_dir / _CHECKPOINT)
        write_csv(pd.DataFrame(history), self.run_dir / HISTORY_FILE)
        self.state["epoch"] = epoch + 1
        self.state["seed_generators"] = [v.numpy().tolist() for v in _seed_generator_states(self.model)]
        write_json(self.run_dir / _STATE, self.state)


def _history_columns(logs: dict[str, float]) -> dict[str, float]:
    """A speaker-adversarial run's logs in the columns of any run: `loss` and `accuracy` are the
    emotion head's (what `val_loss` measures), the speaker head's are `speaker_*`, and the sum
    the optimizer minimised is `total_loss`."""
    if f"{EMOTION_OUTPUT}_loss" not in logs:
        return logs
    renamed = {"total_loss": logs["loss"]}
    for key, value in logs.items():
        if key != "loss":
            renamed[key.removeprefix(f"{EMOTION_OUTPUT}_")] = value
    return renamed


def _seed_generator_states(model: keras.Model) -> list[keras.Variable]:
    """The states of the model's random layers (dropout): Keras leaves them out of a saved
    model, so a reloaded one would draw other masks than the run it continues."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _restore_seed_generators(model: keras.Model, state: dict) -> None:
    saved = state.get("seed_generators")
    if saved is None:  # a state.json older than this
        return
    states = _seed_generator_states(model)
    if len(states) != len(saved):
        raise InputError(f"the checkpoint has {len(states)} random layers, state.json {len(saved)}")
    for variable, value in zip(states, saved, strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def distribution_strategy() -> tf.distribute.Strategy:
    """Across the machines that TF_CONFIG names, else mirrored across the GPUs of this machine,
    else the default strategy."""
    if os.environ.get("TF_CONFIG"):
        # Before any other TensorFlow op: the strategy sets up this process's collectives.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _configure_runtime(config: Config) -> None:
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    mode = config.train.mixed_precision
    mixed = mode == "on" or (mode == "auto" and has_gpu)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(config.data.seed)
    if not has_gpu:  # CPU runs are bit-reproducible; on GPUs this would cost too much speed
        tf.config.experimental.enable_op_determinism()


def _compile(model: keras.Model, config: Config, phase: Phase, steps_per_epoch: int) -> None:
    train = config.train
    total = max(1, phase.epochs * steps_per_epoch)
    warmup = int(total * train.lr_warmup_fraction)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else phase.learning_rate,
        decay_steps=max(1, total - warmup),
        warmup_target=phase.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=train.weight_decay,
        global_clipnorm=train.clip_norm or None,
    )
    accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    if isinstance(model.output, dict):  # with a speaker adversary
        # The speaker head learns to name the speaker; label smoothing is the emotion's alone.
        loss = {EMOTION_OUTPUT: _loss(config), SPEAKER_OUTPUT: keras.losses.CategoricalCrossentropy()}
        metrics = {
            EMOTION_OUTPUT: [accuracy],
            SPEAKER_OUTPUT: [keras.metrics.CategoricalAccuracy(name="accuracy")],
        }
    else:
        loss, metrics = _loss(config), [accuracy]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=train.xla)


def _loss(config: Config, reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    """Cross-entropy with label smoothing; ``reduction=None``: one value per example."""
    return keras.losses.CategoricalCrossentropy(
        label_smoothing=config.train.label_smoothing, reduction=reduction
    )


def clip_weights(balance: str, corpora: Sequence[str], labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Each training clip's weight in the loss, which the pipeline hands to `fit` as the sample
    weight of its examples (Keras's `class_weight` takes one output only, and the speaker
    adversary adds a second): its class's inverse frequency (`class_weights`), the corpus and
    emotion balance of `corpus_class_weights`, or 1 (`none`)."""
    labels = np.asarray(labels)
    if balance == "class_weights":
        counts = np.bincount(labels, minlength=num_classes)
        return len(labels) / (num_classes * counts[labels])
    if balance == "corpus_class_weights":
        return corpus_class_weights(corpora, labels)
    if balance == "none":
        return np.ones(len(labels))
    raise ValueError(f"balance {balance!r}: must be class_weights, corpus_class_weights or none")


def corpus_class_weights(corpora: Sequence[str], labels: Sequence[int]) -> np.ndarray:
    """Each clip's weight such that every corpus weighs the same in total and, within a corpus,
    every emotion it has: N / (corpora x its corpus's emotions x clips of its corpus and emotion).
    The weights average 1, as inverse-frequency class weights do."""
    cells = pd.DataFrame({"corpus": np.asarray(corpora, dtype=str), "label": np.asarray(labels)})
    clips_of_cell = cells.groupby(["corpus", "label"])["label"].transform("size").to_numpy()
    emotions_of_corpus = cells.groupby("corpus")["label"].transform("nunique").to_numpy()
    return len(cells) / (cells["corpus"].nunique() * emotions_of_corpus * clips_of_cell)


def _start_or_resume(run_dir: Path, config: Config) -> dict:
    """A new run refuses an existing folder; a resumed one needs the same parameters."""
    fresh = {"phase": None, "epoch": 0, "completed_phases": [], "best": {}, "history": []}
    if not config.train.resume:
        if run_dir.exists():
            raise FileExistsError(
                f"{run_dir} already exists: pass --resume to continue that run, or choose another --run-id"
            )
        return fresh
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: no run to resume (config.json missing)")
    saved = Run.load(run_dir).config.replace(resume=True)
    if saved != config:
        changed = {
            k: (v, config.to_flat()[k]) for k, v in saved.to_flat().items() if config.to_flat()[k] != v
        }
        raise InputError(f"{run_dir} was trained with other parameters; changed: {changed}")
    if not (run_dir / _STATE).is_file():
        if Run.load(run_dir).status == FINISHED:
            raise InputError(f"{run_dir} has finished; nothing to resume")
        return fresh  # killed before its first epoch ended: nothing to keep, so start again
    return {**fresh, **json.loads((run_dir / _STATE).read_text())}


def _write_run_files(
    run_dir: Path,
    config: Config,
    data: TrainingData,
    image_size: int,
    strategy: tf.distribute.Strategy,
    status: str,
) -> None:
    protocol = PROTOCOLS[config.data.protocol]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_csv(data.split, run_dir / SPLIT_FILE)
    counts = {name: int(len(p.labels)) for name, p in data.partitions.items()}
    write_record(
        run_dir,
        config,
        status,
        data.classes,
        image_size,
        split={
            "protocol": protocol.name,
            "speaker_independent": protocol.speaker_independent,
            "description": protocol.description,
            "clips": counts,
        },
        hardware={
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            **distributed.describe(strategy),
        },
    )


def _save_model(model: keras.Model, path: Path) -> None:
    atomic_write(path, lambda tmp: model.save(str(tmp)))


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object, so that numpy does not append ".npz"
            np.savez(f, *arrays)

    atomic_write(path, save)
