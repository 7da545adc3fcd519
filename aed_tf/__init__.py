"""aed-tf: speech emotion recognition with Keras on log-mel spectrograms."""

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
