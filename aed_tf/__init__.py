"""aed-tf: speech emotion recognition with Keras on log-mel spectrograms."""

import os
import sys
import warnings

# TensorFlow leaves its oneDNN kernels off on x86 CPUs without AVX512-VNNI, AMX or AVX-VNNI;
# there the audio CNN's training step takes 2.4-3.2 times as long (1.1-1.45 s against 0.45 s a
# batch on a 2-core AVX-512 Xeon). TensorFlow reads the variable once, when it is imported, so
# an earlier `import keras` or `import tensorflow` keeps them off: said, rather than slow in
# silence. TF_ENABLE_ONEDNN_OPTS=0 still turns them off.
if "TF_ENABLE_ONEDNN_OPTS" not in os.environ and "tensorflow" in sys.modules:
    from tensorflow.python.util import _pywrap_util_port

    if not _pywrap_util_port.IsMklEnabled():
        warnings.warn(
            "TensorFlow was imported before aed_tf, so its oneDNN kernels stay off and CPU training "
            "is 2-3 times slower: import aed_tf first, or set TF_ENABLE_ONEDNN_OPTS=1",
            RuntimeWarning,
            stacklevel=2,
        )
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
