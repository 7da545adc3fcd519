"""Serving (the recognizer, the exports, the web demo) depends on the run folder, the front end,
the model's layers and audio decoding, never on training or data preparation: checked in a fresh
interpreter, where nothing else has imported them first."""

import json
import subprocess
import sys

SERVING = ["aed_tf.recognizer", "aed_tf.export", "aed_tf.serve", "aed_tf.runs"]
TRAINING_AND_DATA = [
    "aed_tf.train",
    "aed_tf.pipeline",
    "aed_tf.prepare",
    "aed_tf.splits",
    "aed_tf.corpora",
    "aed_tf.distributed",
    "aed_tf.evaluate",
    "aed_tf.report",
    "aed_tf.runner",
    "aed_tf.crossval",
    "aed_tf.bench",
    "aed_tf.baseline",
    "aed_tf.calibration",
]


def test_the_serving_modules_import_no_training_or_data_preparation_code():
    script = (
        f"import json, sys\nfor name in {SERVING!r}:\n    __import__(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aed_tf'))))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert set(SERVING) <= set(loaded)
    assert sorted(set(loaded) & set(TRAINING_AND_DATA)) == []
