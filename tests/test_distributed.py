"""Training across machines for real: two worker processes on 127.0.0.1 (TF_CONFIG), one epoch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from aed_tf.model import load_model
from aed_tf.runs import CLASSIFIER_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE, SERVING_FILE
from tests.synth import make_ravdess_tree, tiny_config

REPO = Path(__file__).resolve().parents[1]
# What `aed-tf train` runs, and then a dump of the weights the worker ends with.
WORKER = """
import sys
import numpy as np
from aed_tf.config import Config
from aed_tf.train import train

result = train(Config.load(sys.argv[1]), progress=False)
np.savez(sys.argv[2], *result.model.get_weights())
"""
TIMEOUT_SECONDS = 240


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_one_epoch_to_identical_weights(tmp_path):
    data_root = make_ravdess_tree(tmp_path / "data")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        # Each worker prepares its own copy of the data, as on separate machines.
        home = tmp_path / f"worker{index}"
        home.mkdir()
        config = tiny_config(home, data_root, epochs=1)
        (home / "config.json").write_text(config.to_json())
        # On the CPU, where runs are bit-reproducible and two workers do not share one GPU.
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        command = [sys.executable, "-c", WORKER, str(home / "config.json"), str(home / "weights.npz")]
        workers.append(
            subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT_SECONDS)[0])
    finally:
        for worker in workers:
            worker.kill()
    for index, (worker, output) in enumerate(zip(workers, outputs)):
        assert worker.returncode == 0, f"worker {index} exited {worker.returncode}:\n{output[-5000:]}"

    with (
        np.load(tmp_path / "worker0" / "weights.npz") as chief,
        np.load(tmp_path / "worker1" / "weights.npz") as other,
    ):
        assert chief.files == other.files and len(chief.files) > 100
        for name in chief.files:
            assert np.array_equal(chief[name], other[name]), name

    # The chief writes the run folder; the other worker leaves none behind.
    run = tmp_path / "worker0" / "runs" / "run"
    for name in (CLASSIFIER_FILE, SERVING_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE):
        assert (run / name).is_file(), name
    assert not (tmp_path / "worker1" / "runs").exists()
    saved = json.loads((run / CONFIG_FILE).read_text())
    assert saved["status"] == "finished"
    hardware = saved["hardware"]
    assert (hardware["strategy"], hardware["workers"], hardware["replicas"]) == (
        "MultiWorkerMirroredStrategy",
        2,
        2,
    )
    history = pd.read_csv(run / HISTORY_FILE)
    assert list(history["epoch"]) == [1]
    assert {"loss", "accuracy", "val_uar", "learning_rate"} <= set(history.columns)
    assert np.isfinite(history["loss"]).all()
    # The saved classifier is the model the workers ended with.
    with np.load(tmp_path / "worker0" / "weights.npz") as chief:
        saved_weights = load_model(run / CLASSIFIER_FILE).get_weights()
        assert all(np.array_equal(chief[f"arr_{i}"], w) for i, w in enumerate(saved_weights))
