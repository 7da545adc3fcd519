"""aed-tf: speech emotion recognition with Keras on log-mel spectrograms."""

from aed_tf.config import AugmentConfig, Config, DataConfig, FrontEndConfig, TrainConfig
from aed_tf.labels import CLASSES

__version__ = "0.1.0"

__all__ = [
    "CLASSES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "FrontEndConfig",
    "TrainConfig",
    "__version__",
]
