import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from aed_tf.calibration import apply_temperature, fit_temperature
from aed_tf.config import Config
from aed_tf.errors import InputError
from aed_tf.labels import CLASSES
from aed_tf.model import serving_parts
from aed_tf.partitions import load_training_data
from aed_tf.pipeline import eval_dataset
from aed_tf.runs import CLASSIFIER_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE, SERVING_FILE, SPLIT_FILE
from aed_tf.splits import LeakageError
from aed_tf.train import clip_weights, corpus_class_weights, phases, train
from tests.synth import make_ravdess_tree, tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_ravdess_tree(tmp_path_factory.mktemp("data"))


def test_training_writes_a_complete_reproducible_run(tmp_path, data_root):
    config = tiny_config(tmp_path, data_root)
    result = train(config, progress=False)
    run = result.run_dir
    assert run == tmp_path / "runs" / "run"
    for name in (CLASSIFIER_FILE, SERVING_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE, SPLIT_FILE):
        assert (run / name).is_file(), name
    assert not list(run.glob(".tmp-*")) and not (run / "checkpoint.keras").exists()

    saved = json.loads((run / CONFIG_FILE).read_text())
    assert Config.load(run / CONFIG_FILE) == config
    assert saved["classes"] == list(CLASSES) and saved["status"] == "finished"
    assert saved["split"]["protocol"] == "speaker-independent" and saved["split"]["speaker_independent"]
    assert saved["weights"].startswith("from scratch")
    assert saved["frontend"]["n_mels"] == 32 and saved["seed"] == 0 and saved["image_size"] == 32
    assert {"tensorflow", "keras", "aed_tf"} <= set(saved["versions"])
    assert (saved["hardware"]["strategy"], saved["hardware"]["workers"]) == ("default", 1)

    history = pd.read_csv(run / HISTORY_FILE)
    assert list(history["phase"]) == ["scratch", "scratch"] and list(history["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "val_uar", "val_macro_f1", "learning_rate"} <= set(history.columns)
    metrics = json.loads((run / METRICS_FILE).read_text())
    assert metrics["val"] == pytest.approx(result.val_metrics)
    assert metrics["val"]["uar"] == pytest.approx(history["val_uar"].max())  # the best epoch is kept

    # The serving model (waveform in) gives the classifier's output on the evaluation pipeline,
    # softened by the temperature fitted on validation.
    data = load_training_data(config, progress=False)
    val = data.partitions["val"]
    classifier = keras.models.load_model(run / CLASSIFIER_FILE)
    serving = keras.models.load_model(run / SERVING_FILE)
    features = eval_dataset(val.waveforms, val.labels, len(CLASSES), config)
    expected = classifier.predict(features, verbose=0)
    temperature = metrics["temperature"]
    assert temperature == pytest.approx(fit_temperature(val.labels, expected), rel=1e-3)
    serving_classifier, scaling = serving_parts(serving)
    assert scaling.temperature == pytest.approx(temperature)
    assert serving_classifier.count_params() == classifier.count_params()
    assert metrics["val_ece_calibrated"] <= metrics["val_ece"] + 1e-9
    got = np.concatenate([serving.predict(w[None], verbose=0) for w in val.waveforms])
    np.testing.assert_allclose(got, apply_temperature(expected, temperature), atol=1e-5)

    # Evaluation reruns the saved classifier over a partition of the run's own split.
    from aed_tf.evaluate import evaluate

    on_val = evaluate(run, "val")
    assert on_val.overall == pytest.approx(metrics["val"], abs=1e-6)
    on_test = evaluate(run, "test")
    test_clips = data.partitions["test"].manifest
    assert len(on_test.predictions) == len(test_clips) > 0
    assert set(on_test.predictions["speaker"]).isdisjoint(set(val.manifest["speaker"]))
    assert on_test.per_speaker["clips"].sum() == len(test_clips)
    assert list(on_test.per_corpus["corpus"]) == ["ravdess"]
    assert on_test.per_corpus["uar"].iloc[0] == pytest.approx(on_test.overall["uar"])
    assert on_test.protocol == "speaker-independent" and on_test.speaker_independent
    # A split made afresh from changed data (here another seed's) whose test speakers the run
    # trained on is refused, not scored.
    other = load_training_data(config.replace(seed=1), progress=False)
    trained_on = set(data.partitions["train"].manifest["speaker"])
    assert set(other.partitions["test"].manifest["speaker"]) & trained_on
    with pytest.raises(LeakageError, match="the test partition holds speakers the run trained on"):
        evaluate(run, "test", data=other)

    # Same seed and data on the CPU: the same validation metrics, epoch by epoch.
    again = train(config.replace(run_id="again"), progress=False)
    columns = ["loss", "val_uar", "val_loss"]
    pd.testing.assert_frame_equal(again.history[columns], history[columns])


def test_an_existing_run_is_never_overwritten(tmp_path, data_root):
    (tmp_path / "runs" / "run").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path, data_root), progress=False)


def test_a_non_finite_loss_stops_training_at_once_with_its_likely_cause(tmp_path, data_root):
    """A learning rate of 1e30 makes the loss NaN within the first epoch: training stops at that
    batch with a UserError, and the run folder says it failed."""
    from aed_tf.train import NonFiniteLossError

    config = tiny_config(tmp_path, data_root, backbone="audiocnn", learning_rate=1e30, epochs=3)
    with pytest.raises(
        NonFiniteLossError, match=r"epoch 1, batch \d+ .*learning rate 1e\+30.*--learning-rate"
    ):
        train(config, progress=False)
    run = tmp_path / "runs" / "run"
    assert json.loads((run / CONFIG_FILE).read_text())["status"] == "failed: non-finite loss"
    assert not (run / HISTORY_FILE).exists()  # no poisoned epoch was recorded


def test_a_batch_larger_than_the_training_set_is_refused_before_the_pipeline(tmp_path, data_root):
    with pytest.raises(InputError, match=r"training clips give no full batch of 100000: lower --batch-size"):
        train(tiny_config(tmp_path, data_root, batch_size=100000), progress=False)


def test_a_full_disk_during_training_is_one_line_and_the_run_resumes_once_there_is_room(
    tmp_path, data_root, monkeypatch, capsys
):
    import errno

    import aed_tf.train as train_module
    from aed_tf.cli import main

    config = tiny_config(tmp_path, data_root, backbone="audiocnn", epochs=2)
    real_write_csv = train_module.write_csv
    writes = []

    def full_after_the_split(df, path):
        writes.append(path)
        if len(writes) > 1:  # the split is written; the first epoch's history finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_csv(df, path)

    monkeypatch.setattr(train_module, "write_csv", full_after_the_split)
    flags = [
        "--data-roots",
        str(data_root),
        "--prepared-dir",
        config.data.prepared_dir,
        "--cache-dir",
        config.data.cache_dir,
        "--output-dir",
        config.train.output_dir,
        "--run-id",
        "run",
        "--backbone",
        "audiocnn",
        "--weights",
        "none",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--clip-seconds",
        "0.5",
        "--n-mels",
        "32",
        "--time-mask-width",
        "5",
        "--freq-mask-width",
        "4",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
    ]
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("aed-tf train: error: ") and err[-1].endswith(": No space left on device")
    monkeypatch.setattr(train_module, "write_csv", real_write_csv)
    assert main(["train", *flags, "--resume"]) == 0
    assert json.loads((tmp_path / "runs" / "run" / CONFIG_FILE).read_text())["status"] == "finished"


def test_tensorboard_logs_each_epoch_with_the_validation_uar(tmp_path, data_root):
    import tensorflow as tf

    run_dir = train(tiny_config(tmp_path, data_root, tensorboard=True), progress=False).run_dir
    logged: dict[tuple[str, str], list[int]] = {}
    for event_file in (run_dir / "tensorboard" / "scratch").glob("*/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                logged.setdefault((event_file.parent.name, value.tag), []).append(event.step)
    # The tiny run's two epochs; Keras files the val_ metrics under validation/.
    assert logged[("train", "epoch_loss")] == [0, 1]
    assert logged[("validation", "epoch_uar")] == [0, 1]


def test_pretrained_weights_warm_up_the_head_then_fine_tune(tmp_path, data_root):
    from aed_tf.backbones import build_backbone

    weights = tmp_path / "pretrained.weights.h5"
    build_backbone("mobilenetv3small", 32, weights=None).save_weights(weights)
    config = tiny_config(
        tmp_path, data_root, weights=str(weights), warmup_epochs=1, epochs=1, lr_warmup_fraction=0.0
    )
    assert [p.name for p in phases(config)] == ["head", "finetune"]
    history = train(config, progress=False).history
    assert list(history["phase"]) == ["head", "finetune"]
    saved = json.loads((tmp_path / "runs" / "run" / CONFIG_FILE).read_text())
    assert saved["weights"] == str(weights)


def test_phases_per_config_branch():
    config = Config()
    assert [(p.name, p.backbone_share) for p in phases(config)] == [("head", 0.0), ("finetune", 1.0)]
    assert [p.name for p in phases(config.replace(warmup_epochs=0))] == ["finetune"]
    scratch = phases(config.replace(weights="none", epochs=3))
    assert [(p.name, p.epochs, p.learning_rate) for p in scratch] == [("scratch", 3, 1e-3)]


def test_a_run_killed_before_its_first_epoch_ended_resumes_from_the_start(tmp_path, data_root, monkeypatch):
    import aed_tf.train as training

    config = tiny_config(tmp_path, data_root)

    def killed(self, epoch, logs=None):
        raise KeyboardInterrupt  # as if killed before the first epoch's checkpoint was written

    with monkeypatch.context() as patched:
        patched.setattr(training.EpochCheckpoint, "on_epoch_end", killed)
        with pytest.raises(KeyboardInterrupt):
            train(config, progress=False)
    run_dir = tmp_path / "runs" / "run"
    assert json.loads((run_dir / CONFIG_FILE).read_text())["status"] == "training"
    assert not (run_dir / "state.json").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, progress=False)
    result = train(config.replace(resume=True), progress=False)
    assert json.loads((run_dir / CONFIG_FILE).read_text())["status"] == "finished"
    assert list(result.history["epoch"]) == [1, 2]
    with pytest.raises(ValueError, match="has finished; nothing to resume"):
        train(config.replace(resume=True), progress=False)


# A child `aed-tf train` that kill -9s itself at the end of the first training batch after `epoch`
# epochs were checkpointed: the kill lands inside the next epoch however loaded the machine is.
_KILLED_CHILD = """
import os, signal, sys
import aed_tf.train as training
from aed_tf.cli import main

def die(self, batch, logs=None):
    if self.state["epoch"] >= {epoch}:
        os.kill(os.getpid(), signal.SIGKILL)

training.EpochCheckpoint.on_train_batch_end = die
sys.exit(main(sys.argv[1:]))
"""


def _kill_after_epoch(config: Config, data_root: Path, epoch: int) -> int:
    """Trains `config` in a child process that is kill -9ed after one batch of epoch `epoch` + 1;
    the epoch its state.json had reached."""
    args = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in config.to_flat().items()
        if v != Config().to_flat()[k] and k != "data_roots"
    ]
    command = [
        sys.executable,
        "-c",
        _KILLED_CHILD.format(epoch=epoch),
        "train",
        "--data-roots",
        str(data_root),
        *args,
    ]
    process = subprocess.run(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600
    )
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()[-3000:]
    return json.loads((Path(config.train.output_dir) / config.run_id() / "state.json").read_text())["epoch"]


def test_resume_continues_a_killed_run(tmp_path, data_root):
    config = tiny_config(tmp_path, data_root, epochs=6)
    killed_at = _kill_after_epoch(config, data_root, 1)
    assert killed_at == 1

    result = train(config.replace(resume=True), progress=False)
    history = result.history
    assert list(history["epoch"]) == list(range(1, 7))
    assert json.loads((result.run_dir / CONFIG_FILE).read_text())["status"] == "finished"
    # The learning-rate schedule went on from where it was, rather than starting again.
    assert history["learning_rate"].iloc[killed_at] < history["learning_rate"].iloc[0]


class _Killed(Exception):
    """Stands for kill -9 in the middle of a run (the files on disk are what a kill leaves)."""


def _weights(run_dir: Path) -> list[np.ndarray]:
    return keras.models.load_model(run_dir / CLASSIFIER_FILE).get_weights()


@pytest.mark.tensorflow_own_kernels
def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path, data_root, monkeypatch):
    """Killed at two points (mid-epoch in a child process, and while saving the final models),
    then resumed: the same weights and the same history, to the bit, as the run never killed,
    with the per-speaker front end, dropout and early stopping's patience in play."""
    from tensorflow.python.util import _pywrap_util_port

    import aed_tf.train as training

    assert not _pywrap_util_port.IsMklEnabled(), "the marker runs this test with TensorFlow's own kernels"

    config = tiny_config(
        tmp_path, data_root, backbone="audiocnn", epochs=4, normalization="speaker", patience=3
    )
    whole = train(config.replace(run_id="whole"), progress=False)
    expected_weights, expected_history = _weights(whole.run_dir), whole.history
    columns = ["phase", "epoch", "loss", "accuracy", "val_uar", "val_loss", "learning_rate"]

    # 1. kill -9 in the middle of epoch 3 (after epoch 2's checkpoint), in a child process.
    killed = config.replace(run_id="killed")
    assert _kill_after_epoch(killed, data_root, 2) == 2  # into epoch 3
    resumed = train(killed.replace(resume=True), progress=False)
    pd.testing.assert_frame_equal(resumed.history[columns], expected_history[columns], check_exact=True)
    for got, expected in zip(_weights(resumed.run_dir), expected_weights, strict=True):
        np.testing.assert_array_equal(got, expected)

    # 2. Killed while the final models are saved, after the classifier was written.
    saving = config.replace(run_id="saving")
    real_save = training._save_model

    def save_then_die(model, path):
        real_save(model, path)
        if path.name == CLASSIFIER_FILE:
            raise _Killed

    with monkeypatch.context() as patched:
        patched.setattr(training, "_save_model", save_then_die)
        with pytest.raises(_Killed):
            train(saving, progress=False)
    assert json.loads((tmp_path / "runs" / "saving" / CONFIG_FILE).read_text())["status"] == "training"
    resumed = train(saving.replace(resume=True), progress=False)
    assert json.loads((resumed.run_dir / CONFIG_FILE).read_text())["status"] == "finished"
    pd.testing.assert_frame_equal(resumed.history[columns], expected_history[columns], check_exact=True)
    for got, expected in zip(_weights(resumed.run_dir), expected_weights, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert (
        json.loads((resumed.run_dir / METRICS_FILE).read_text())["val"]
        == json.loads((whole.run_dir / METRICS_FILE).read_text())["val"]
    )


def test_a_speaker_adversarial_run_trains_both_heads_resumes_and_serves_the_emotion_head_alone(
    tmp_path, data_root, monkeypatch
):
    import aed_tf.train as training

    config = tiny_config(
        tmp_path, data_root, backbone="audiocnn", normalization="speaker", speaker_adversary=1.0
    )
    real_epoch_end = training.EpochCheckpoint.on_epoch_end

    def killed_after_the_first_epoch(self, epoch, logs=None):
        real_epoch_end(self, epoch, logs)
        raise _Killed

    with monkeypatch.context() as patched:
        patched.setattr(training.EpochCheckpoint, "on_epoch_end", killed_after_the_first_epoch)
        with pytest.raises(_Killed):
            train(config, progress=False)
    result = train(config.replace(resume=True), progress=False)
    run = result.run_dir
    assert json.loads((run / CONFIG_FILE).read_text())["status"] == "finished"

    # The history has every run's columns, the emotion head's; the speaker head's beside them.
    history = result.history
    assert list(history["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "val_uar", "speaker_loss", "speaker_accuracy"} <= set(history.columns)
    np.testing.assert_allclose(history["total_loss"], history["loss"] + history["speaker_loss"], rtol=1e-4)

    # What is saved and served is the emotion classifier; it is not the run without the adversary.
    classifier = keras.models.load_model(run / CLASSIFIER_FILE)
    assert classifier.output_shape == (None, len(CLASSES))
    assert not any(layer.name.startswith("speaker") for layer in classifier.layers)
    from aed_tf.evaluate import evaluate

    metrics = json.loads((run / METRICS_FILE).read_text())
    assert evaluate(run, "val").overall == pytest.approx(metrics["val"], abs=1e-6)
    plain = train(config.replace(run_id="plain", speaker_adversary=0.0), progress=False)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(run), _weights(plain.run_dir), strict=True))


def test_corpus_class_weights_weigh_every_corpus_and_its_emotions_alike():
    corpora = ["big"] * 8 + ["small"] * 3
    labels = [0, 0, 0, 0, 0, 0, 1, 1] + [0, 1, 2]
    weights = corpus_class_weights(corpora, labels)
    assert weights.mean() == pytest.approx(1.0)
    frame = pd.DataFrame({"corpus": corpora, "label": labels, "weight": weights})
    np.testing.assert_allclose(frame.groupby("corpus")["weight"].sum(), [len(labels) / 2] * 2)
    for _, corpus in frame.groupby("corpus"):  # within a corpus, every emotion weighs the same
        totals = corpus.groupby("label")["weight"].sum()
        np.testing.assert_allclose(totals, totals.iloc[0])
    # A single corpus: they are the inverse-frequency class weights.
    np.testing.assert_allclose(corpus_class_weights(["one"] * 8, labels[:8]), [8 / 12] * 6 + [8 / 4] * 2)


def test_clip_weights_per_balance():
    corpora, labels = ["big"] * 8 + ["small"] * 3, [0, 0, 0, 0, 0, 0, 1, 1] + [0, 1, 2]
    # Inverse class frequency over all clips, 4 classes (one absent): 11 / (4 x clips of the class).
    np.testing.assert_allclose(
        clip_weights("class_weights", corpora, labels, 4),
        [11 / 28] * 6 + [11 / 12] * 2 + [11 / 28, 11 / 12, 11 / 4],
    )
    np.testing.assert_array_equal(
        clip_weights("corpus_class_weights", corpora, labels, 4), corpus_class_weights(corpora, labels)
    )
    np.testing.assert_array_equal(clip_weights("none", corpora, labels, 4), np.ones(11))
    with pytest.raises(ValueError, match="balance 'classes': must be class_weights"):
        clip_weights("classes", corpora, labels, 4)


def test_on_one_corpus_corpus_class_weights_train_the_class_weighted_model(tmp_path):
    """On one corpus with every emotion (calm merged into neutral, so twice as many neutral
    clips), the corpus-balanced weights are the class weights: they must train what the class
    weights train, and the weights must reach the loss: not what no weights train."""
    all_emotions = ("01", "02", "03", "04", "05", "06", "07", "08")
    data_root = make_ravdess_tree(tmp_path / "data", actors=range(1, 6), codes=all_emotions, takes=1)
    config = tiny_config(tmp_path, data_root, backbone="audiocnn", epochs=1)
    by_class = train(config.replace(run_id="class"), progress=False).run_dir
    by_corpus = train(config.replace(run_id="corpus", balance="corpus_class_weights"), progress=False).run_dir
    unweighted = train(config.replace(run_id="none", balance="none"), progress=False).run_dir

    def distance(a: Path, b: Path) -> float:
        return max(float(np.abs(x - y).max()) for x, y in zip(_weights(a), _weights(b), strict=True))

    assert distance(by_class, by_corpus) < 0.1 * distance(by_class, unweighted)


def test_resume_refuses_changed_parameters(tmp_path, data_root):
    config = tiny_config(tmp_path, data_root, epochs=1)
    train(config, progress=False)
    with pytest.raises(ValueError, match="finished|other parameters"):
        train(config.replace(resume=True), progress=False)
    with pytest.raises(ValueError, match="other parameters.*batch_size"):
        train(config.replace(resume=True, batch_size=4), progress=False)


def test_what_training_across_machines_lacks_gets_a_clear_error_before_connecting(tmp_path, monkeypatch):
    from aed_tf.distributed import MultiWorkerUnsupportedError

    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
        ),
    )
    config = tiny_config(tmp_path, tmp_path / "data", resume=True)
    # Refused before the strategy connects to the cluster.
    with pytest.raises(MultiWorkerUnsupportedError, match="--resume.*TF_CONFIG unset"):
        train(config, progress=False)
    # The multi-worker loop trains one output.
    with pytest.raises(
        MultiWorkerUnsupportedError, match="^--speaker-adversary is not supported.*TF_CONFIG unset"
    ):
        train(config.replace(resume=False, speaker_adversary=0.1), progress=False)


@pytest.mark.parametrize(("given", "expected"), [(None, "True"), ("0", "False")])
def test_importing_aed_tf_turns_on_onednn_kernels_unless_told_not_to(given, expected):
    """The oneDNN kernels train the audio CNN 2.4-3.2 times as fast on CPUs where TensorFlow
    leaves them off; TF_ENABLE_ONEDNN_OPTS=0 still keeps TensorFlow's own."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    probe = (
        "import aed_tf, tensorflow; from tensorflow.python.util import _pywrap_util_port; "
        "print(_pywrap_util_port.IsMklEnabled())"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_importing_tensorflow_before_aed_tf_says_the_onednn_kernels_stay_off():
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    probe = (
        "import tensorflow; from tensorflow.python.util import _pywrap_util_port; import aed_tf; "
        "print(_pywrap_util_port.IsMklEnabled())"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Where TensorFlow turns them on by itself (CPUs with VNNI or AMX) there is nothing to say.
    kernels_off = done.stdout.strip() == "False"
    assert ("import aed_tf first, or set TF_ENABLE_ONEDNN_OPTS=1" in done.stderr) == kernels_off
