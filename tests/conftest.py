import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's own CPU kernels, not the oneDNN ones aed_tf turns on: those round differently from
# one process to the next, and the resume test compares a run killed in a child process with
# one never interrupted, bit for bit. (test_train checks the package's own default.)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("AED_TF_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
RAVDESS_DIR = SHARED_DATASETS / "RAVDESS" / "audio_speech_actors_01-24"
TESS_DIR = SHARED_DATASETS / "TESS" / "TESS_Toronto_emotional_speech_set_data"
ORIGINALS_DIR = SHARED_DATASETS / "originals"
EXTRA_DATASETS = Path(os.environ.get("AED_TF_EXTRA_DATASETS", REPO.parent / "shared" / "extra-datasets"))
ASED_DIR = EXTRA_DATASETS / "ASED"


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
    """A finished run that normalises per speaker: the audio-native backbone, one epoch on the
    synthetic RAVDESS tree."""
    from aed_tf.train import train
    from tests.synth import make_ravdess_tree, tiny_config

    root = tmp_path_factory.mktemp("speaker-run")
    config = tiny_config(
        root, make_ravdess_tree(root / "data"), backbone="audiocnn", epochs=1, normalization="speaker"
    )
    return train(config, progress=False).run_dir
