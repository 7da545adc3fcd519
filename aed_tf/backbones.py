"""The backbone registry: one row per backbone, and how ImageNet weights are found.

Adding a backbone is adding one row to ``BACKBONES``. A Keras application sees the spectrogram
as an image: it reaches the backbone in [0, 255] with three channels, and each backbone's own
``preprocess_input`` runs inside the model (``BackbonePreprocess``), so a saved model needs
nothing from the caller but the features. An audio-native backbone (``image=False``,
``aed_tf.audionet``) takes the log-mel features themselves and has no ImageNet weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras

from aed_tf.audionet import AudioCNN, AudioTCN
from aed_tf.config import is_from_scratch
from aed_tf.errors import InputError, UserError

IMAGENET = "imagenet"


@dataclass(frozen=True)
class Backbone:
    """One Keras application: how to build it, prepare its input and find its weights."""

    name: str
    constructor: Callable[..., keras.Model]
    preprocess_input: Callable[[Any], Any]
    default_size: int
    min_size: int
    imagenet_file: str  # the no-top ImageNet weights file that Keras downloads into its cache
    imagenet_url: str
    image: bool = True  # False: takes log-mel features [B, frames, n_mels], not an image


_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications"

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "resnet50",
            keras.applications.ResNet50,
            keras.applications.resnet.preprocess_input,
            224,
            32,
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            f"{_KERAS_APPS}/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "inceptionv3",
            keras.applications.InceptionV3,
            keras.applications.inception_v3.preprocess_input,
            299,
            75,
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            f"{_KERAS_APPS}/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        # Small enough to train from scratch on a laptop CPU; its rescaling is built in.
        Backbone(
            "efficientnetb0",
            keras.applications.EfficientNetB0,
            keras.applications.efficientnet.preprocess_input,
            224,
            32,
            "efficientnetb0_notop.h5",
            "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
        ),
        Backbone(
            "mobilenetv3small",
            keras.applications.MobileNetV3Small,
            keras.applications.mobilenet_v3.preprocess_input,
            224,
            32,
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            f"{_KERAS_APPS}/mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        ),
        # Audio-native: a compact CNN over time x frequency with attentive statistics pooling.
        Backbone("audiocnn", AudioCNN, lambda features: features, 0, 0, "", "", image=False),
        # The same with residual dilated 1-D convolutions over its frame embeddings (about 2.5 s).
        Backbone("audiotcn", AudioTCN, lambda features: features, 0, 0, "", "", image=False),
    )
}


class WeightsUnavailableError(UserError, RuntimeError):
    """The ImageNet weights could not be downloaded or found."""


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}") from None


def resolve_image_size(name: str, image_size: int = 0) -> int:
    """The input size to use: the backbone's default for 0, else ``image_size`` if large enough;
    0 for an audio-native backbone, which sees no image."""
    backbone = get_backbone(name)
    if not backbone.image:
        return 0
    if image_size == 0:
        return backbone.default_size
    if image_size < backbone.min_size:
        raise InputError(f"image_size = {image_size}: {name} needs at least {backbone.min_size}")
    return image_size


def keras_cache_file(backbone: Backbone) -> Path:
    """Where Keras keeps (and looks for) the downloaded weights: $KERAS_HOME/models/<file>."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / backbone.imagenet_file


def build_backbone(
    name: str, image_size: int, weights: str | None = IMAGENET, n_mels: int = 128
) -> keras.Model:
    """The backbone without its classifier, with global average pooling: images -> features (an
    audio-native one: log-mel features of ``n_mels`` bands -> an embedding).

    ``weights``: "imagenet" (downloaded by Keras, or taken from the Keras cache with no network
    when the file is already there), None or "none" (random initialisation), or the path to a
    Keras ``.h5``/``.weights.h5`` weights file of this backbone without its top.
    """
    backbone = get_backbone(name)
    if not backbone.image:
        if weights == IMAGENET:
            raise InputError(
                f"{name} is an audio-native backbone with no ImageNet weights: train "
                "it from scratch (--weights none) or give a weights file of it"
            )
        model = backbone.constructor(n_mels)
        if not is_from_scratch(weights):
            model.load_weights(_weights_argument(backbone, weights))
        return model
    weights_arg = _weights_argument(backbone, weights)
    kwargs: dict[str, Any] = dict(
        include_top=False, weights=weights_arg, pooling="avg", input_shape=(image_size, image_size, 3)
    )
    if name == "mobilenetv3small":
        kwargs["include_preprocessing"] = True
    try:
        return backbone.constructor(**kwargs)
    except Exception as error:  # Keras raises a bare Exception for a failed download
        if weights_arg != IMAGENET:
            raise
        raise WeightsUnavailableError(_weights_help(backbone, error)) from error


def _weights_argument(backbone: Backbone, weights: str | None) -> str | None:
    if is_from_scratch(weights):
        return None
    if weights == IMAGENET:
        cached = keras_cache_file(backbone)
        # A file the user put in the cache may not be Keras's exact download (its hash differs);
        # loading it by path uses it as it is instead of trying the network again.
        return str(cached) if cached.is_file() else IMAGENET
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist (weights may be 'imagenet', 'none' or a path to "
            f"{backbone.imagenet_file})"
        )
    return str(path)


def _weights_help(backbone: Backbone, error: BaseException) -> str:
    return (
        f"could not get the ImageNet weights of {backbone.name} ({type(error).__name__}: {error}).\n"
        f"This machine may be offline. Either:\n"
        f"  - download {backbone.imagenet_url}\n"
        f"    and put it at {keras_cache_file(backbone)} (the Keras cache; $KERAS_HOME moves it),\n"
        f"  - or pass its path: --weights /path/to/{backbone.imagenet_file},\n"
        f"  - or train from scratch: --weights none"
    )


@keras.saving.register_keras_serializable(package="aed_tf")
class BackbonePreprocess(keras.layers.Layer):
    """The backbone's own ``preprocess_input``, as a layer so that saved models carry it."""

    def __init__(self, backbone: str, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.backbone = get_backbone(backbone).name

    def call(self, images):
        return BACKBONES[self.backbone].preprocess_input(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}
