"""Serving (`aed_tf.serving`: the recognizer, the exports, the web demo) depends on the run folder,
the front end, the model's layers and audio decoding, never on training or data preparation; and
a recognizer over an ONNX export runs without TensorFlow. Checked in fresh interpreters, where
nothing else has imported them first."""

import json
import subprocess
import sys

import pytest

SERVING = [
    "aed_tf.serving.recognizer",
    "aed_tf.serving.timeline",
    "aed_tf.serving.exported",
    "aed_tf.serving.export",
    "aed_tf.serving.keras_route",
    "aed_tf.serving.batch",
    "aed_tf.serving.web",
    "aed_tf.runs",
]
TRAINING_AND_DATA = [
    "aed_tf.train",
    "aed_tf.pipeline",
    "aed_tf.prepare",
    "aed_tf.partitions",
    "aed_tf.splits",
    "aed_tf.corpora",
    "aed_tf.distributed",
    "aed_tf.evaluate",
    "aed_tf.report",
    "aed_tf.runner",
    "aed_tf.bench",
    "aed_tf.baseline",
    "aed_tf.calibration",
]


def loaded_after(script: str) -> tuple[list[str], list[str]]:
    """The aed_tf modules, and which of TensorFlow, Keras and scikit-learn, loaded by `script`
    in a fresh interpreter."""
    script += (
        "\nimport json, sys\nprint(json.dumps([sorted(m for m in sys.modules if m.startswith('aed_tf')), "
        "sorted(m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    own, third_party = json.loads(done.stdout.strip().splitlines()[-1])
    return own, third_party


def test_the_serving_package_imports_no_training_or_data_preparation_code():
    own, _ = loaded_after("\n".join(f"import {name}" for name in SERVING))  # (Keras imports sklearn)
    assert set(SERVING) <= set(own)
    assert sorted(set(own) & set(TRAINING_AND_DATA)) == []


def test_the_recognizer_and_the_cli_import_no_tensorflow_until_a_keras_model_is_used():
    own, third_party = loaded_after(
        "import aed_tf.cli, aed_tf.serving.batch, aed_tf.serving.recognizer\n"
        "from aed_tf import EmotionRecognizer"
    )
    assert "aed_tf.serving.recognizer" in own and "aed_tf.serving.keras_route" not in own
    assert third_party == []


@pytest.fixture(scope="module")
def onnx_export(tiny_run, tmp_path_factory):
    from aed_tf.serving.export import export

    return export(tiny_run, "onnx", tmp_path_factory.mktemp("onnx") / "model.onnx").path


def test_a_prediction_over_an_onnx_export_loads_no_tensorflow(onnx_export, shared_datasets):
    from tests.conftest import RAVDESS_DIR

    clip = RAVDESS_DIR / "Actor_01" / "03-01-05-01-01-01-01.flac"
    own, third_party = loaded_after(
        "from aed_tf.cli import main\n"
        f"assert main(['predict', {str(clip)!r}, '--model', {str(onnx_export)!r}, '--timeline']) == 0"
    )
    assert "aed_tf.serving.recognizer" in own and "aed_tf.serving.keras_route" not in own
    assert third_party == []
