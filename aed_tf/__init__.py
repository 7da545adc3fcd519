"""aed-tf: speech emotion recognition with Keras on log-mel spectrograms."""

import os

# TensorFlow leaves its oneDNN kernels off on x86 CPUs without AVX512-VNNI, AMX or AVX-VNNI;
# there the audio CNN's training step takes 2.4-3.2 times as long (1.1-1.45 s against 0.45 s a
# batch on a 2-core AVX-512 Xeon). Set before TensorFlow is imported; TF_ENABLE_ONEDNN_OPTS=0
# still turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from aed_tf.config import AugmentConfig, Config, DataConfig, FrontEndConfig, TrainConfig
from aed_tf.labels import CLASSES

__version__ = "0.1.0"


def __getattr__(name: str):
    # EmotionRecognizer imports TensorFlow: loaded on first use, so `import aed_tf` and the CLI
    # stay fast.
    if name == "EmotionRecognizer":
        from aed_tf.serving.recognizer import EmotionRecognizer

        return EmotionRecognizer
    raise AttributeError(f"module 'aed_tf' has no attribute {name!r}")


__all__ = [
    "CLASSES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EmotionRecognizer",
    "FrontEndConfig",
    "TrainConfig",
    "__version__",
]
