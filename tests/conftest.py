import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Before any test module imports keras: the suite runs the kernels aed_tf chooses, whichever
# module is collected first.
import aed_tf  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("AED_TF_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
RAVDESS_DIR = SHARED_DATASETS / "RAVDESS" / "audio_speech_actors_01-24"
TESS_DIR = SHARED_DATASETS / "TESS" / "TESS_Toronto_emotional_speech_set_data"
ORIGINALS_DIR = SHARED_DATASETS / "originals"
EXTRA_DATASETS = Path(os.environ.get("AED_TF_EXTRA_DATASETS", REPO.parent / "shared" / "extra-datasets"))
ASED_DIR = EXTRA_DATASETS / "ASED"


# The suite runs the package's default kernels (oneDNN on a CPU: 2.4 times as fast on a Xeon without VNNI). A test
# marked `tensorflow_own_kernels` is rerun alone in a child pytest with TF_ENABLE_ONEDNN_OPTS=0,
# because the kernels are fixed when TensorFlow is first imported and oneDNN's rounding differs
# from one process to the next: the bit-exact resume test compares trainings across processes.
OWN_KERNELS = {"TF_ENABLE_ONEDNN_OPTS": "0"}


def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.get_closest_marker("tensorflow_own_kernels") is None:
        return None
    if all(os.environ.get(k) == v for k, v in OWN_KERNELS.items()):
        return None  # this is the child (or the whole suite was asked for TensorFlow's kernels)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", pyfuncitem.nodeid]
    child = subprocess.run(
        command, cwd=REPO, env={**os.environ, **OWN_KERNELS}, capture_output=True, text=True, timeout=1800
    )
    if child.returncode != 0:
        pytest.fail(
            f"with TensorFlow's own kernels, in a child pytest:\n{child.stdout[-6000:]}", pytrace=False
        )
    return True


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real recordings. CI always has them beside the clone, so their absence is a failure."""
    if not (RAVDESS_DIR.is_dir() and TESS_DIR.is_dir()):
        pytest.fail(
            f"real data not found at {SHARED_DATASETS}; put the shared datasets beside the "
            "repository or set AED_TF_SHARED_DATASETS"
        )
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def extra_datasets() -> Path:
    """The corpora beyond the reference set (ASED), beside the shared datasets."""
    if not ASED_DIR.is_dir():
        pytest.fail(
            f"ASED not found at {ASED_DIR}; put the shared extra datasets beside the "
            "repository or set AED_TF_EXTRA_DATASETS"
        )
    return EXTRA_DATASETS


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A private decoded-audio cache, so tests never share state with a user's cache."""
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One decoded-audio cache for every test that reads the shared datasets: decoded once."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished from-scratch run on a synthetic RAVDESS tree (4 emotions, 6 actors, 0.5 s
    clips), trained once per session for every test that needs a run directory."""
    from aed_tf.train import train
    from tests.synth import make_ravdess_tree, tiny_config

    root = tmp_path_factory.mktemp("tiny-run")
    data_root = make_ravdess_tree(root / "data")
    return train(tiny_config(root, data_root, epochs=2), progress=False).run_dir


@pytest.fixture(scope="session")
def speaker_run(tmp_path_factory) -> Path:
    """A finished run that normalises per speaker and is fused with its eGeMAPS head: the
    audio-native backbone, one epoch on the synthetic RAVDESS tree."""
    from aed_tf.train import train
    from tests.synth import make_ravdess_tree, tiny_config

    root = tmp_path_factory.mktemp("speaker-run")
    config = tiny_config(
        root,
        make_ravdess_tree(root / "data"),
        backbone="audiocnn",
        epochs=1,
        normalization="speaker",
        fusion="egemaps",
    )
    return train(config, progress=False).run_dir


@pytest.fixture(scope="session")
def fused_run(speaker_run, tmp_path_factory) -> Path:
    """`speaker_run` with its eGeMAPS head weighing 2, whatever its tiny validation chose: the
    margins always count."""
    import json
    import shutil

    from aed_tf.runs import FUSION_FILE

    run_dir = tmp_path_factory.mktemp("fused-run") / "run"
    shutil.copytree(speaker_run, run_dir)
    fusion = json.loads((run_dir / FUSION_FILE).read_text())
    fusion["head"]["weight"] = 2.0
    (run_dir / FUSION_FILE).write_text(json.dumps(fusion))
    return run_dir
