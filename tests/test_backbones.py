import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from aed_tf.backbones import (
    BACKBONES,
    WeightsUnavailableError,
    build_backbone,
    keras_cache_file,
    resolve_image_size,
)
from aed_tf.config import Config, FrontEndConfig
from aed_tf.model import (
    GradientReversal,
    build_classifier,
    build_serving_model,
    emotion_classifier,
    set_backbone_trainable,
    with_speaker_adversary,
)

SMALL = "mobilenetv3small"


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_trains_saves_and_reloads(name, tmp_path):
    size = BACKBONES[name].min_size
    train = Config().replace(backbone=name, weights="none", image_size=size).train
    model = build_classifier(train, num_classes=7, n_mels=16)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    images = np.random.default_rng(0).standard_normal((4, 20, 16)).astype("float32")  # features
    labels = np.eye(7, dtype="float32")[[0, 1, 2, 3]]
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5
    )
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (4, 7) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_image_size_defaults_and_minimum():
    assert resolve_image_size("resnet50") == 224
    assert resolve_image_size("inceptionv3") == 299
    assert resolve_image_size("inceptionv3", 96) == 96
    with pytest.raises(ValueError, match="inceptionv3 needs at least 75"):
        resolve_image_size("inceptionv3", 64)
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*resnet50"):
        resolve_image_size("vgg")


def _reference_backbone(seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_backbone(SMALL, 32, weights=None)


def test_weights_from_a_local_file(tmp_path):
    reference = _reference_backbone()
    path = tmp_path / "mine.weights.h5"
    reference.save_weights(path)
    loaded = build_backbone(SMALL, 32, weights=str(path))
    for a, b in zip(reference.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_imagenet_weights_from_the_keras_cache_need_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "get_file", _no_network)
    reference = _reference_backbone()
    cached = keras_cache_file(BACKBONES[SMALL])
    cached.parent.mkdir(parents=True)
    with h5py.File(cached, "w") as f:  # the legacy .h5 format of Keras's own downloads
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    loaded = build_backbone(SMALL, 32, weights="imagenet")
    for a, b in zip(reference.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_failed_download_says_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "get_file", _no_network)
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone("resnet50", 64, weights="imagenet")
    message = str(error.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "keras" / "models") in message
    assert "--weights none" in message and "Temporary failure in name resolution" in message


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.h5 does not exist"):
        build_backbone(SMALL, 32, weights=str(tmp_path / "nothing.h5"))


def test_unfreezing_the_top_share_of_the_backbone():
    model = build_classifier(Config().replace(backbone=SMALL, weights="none", image_size=32).train, 7, 32)
    backbone = model.get_layer("backbone")
    set_backbone_trainable(model, 0.0)
    assert not backbone.trainable and len(model.trainable_weights) == 2  # the head alone
    set_backbone_trainable(model, 0.25)
    flags = [layer.trainable for layer in backbone.layers]
    first = flags.index(True)
    assert all(flags[first:]) and not any(flags[:first])
    assert abs((len(flags) - first) / len(flags) - 0.25) < 0.02
    set_backbone_trainable(model, 1.0)
    assert all(layer.trainable for layer in backbone.layers)


def test_serving_model_equals_the_classifier_on_the_front_end_image(tmp_path):
    from aed_tf.features import waveform_to_features

    frontend = FrontEndConfig(clip_seconds=1.0, n_mels=32)
    model = build_classifier(Config().replace(backbone=SMALL, weights="none", image_size=32).train, 7, 32)
    serving = build_serving_model(model, frontend)
    rng = np.random.default_rng(0)
    long_clip = (0.1 * rng.standard_normal((1, 20000))).astype("float32")
    centre = long_clip[:, 2000:18000]  # the centred 1 s window
    expected = model.predict(waveform_to_features(centre, frontend), verbose=0)
    np.testing.assert_allclose(serving.predict(long_clip, verbose=0), expected, atol=1e-5)

    serving.save(tmp_path / "serving.keras")
    reloaded = keras.models.load_model(tmp_path / "serving.keras")
    np.testing.assert_allclose(reloaded.predict(long_clip, verbose=0), expected, atol=1e-5)


def test_a_per_speaker_serving_model_equals_the_classifier_on_the_pipelines_features(tmp_path):
    """With normalization=speaker the serving model takes the speaker's statistics as a second
    input and gives the classifier's output on the evaluation pipeline's features."""
    from aed_tf.pipeline import eval_dataset, speaker_statistics

    config = Config().replace(
        backbone="audiocnn",
        weights="none",
        clip_seconds=1.0,
        n_mels=32,
        normalization="speaker",
        batch_size=4,
    )
    model = build_classifier(config.train, 7, 32)
    serving = build_serving_model(model, config.frontend)
    assert [i.name for i in serving.inputs] == ["speaker_statistics", "waveform"] or sorted(
        i.name for i in serving.inputs
    ) == ["speaker_statistics", "waveform"]
    rng = np.random.default_rng(0)
    clips = [
        (scale * rng.standard_normal(n)).astype("float32")
        for scale, n in ((0.1, 20000), (0.3, 16000), (0.02, 9000))
    ]
    statistics = speaker_statistics(clips, ["a", "b", "b"], config.frontend)
    expected = model.predict(
        eval_dataset(clips, [0, 1, 2], 7, config, statistics).map(lambda x, y: x), verbose=0
    )
    for clip, stats, row in zip(clips, statistics, expected):
        given = {"waveform": clip[None], "speaker_statistics": stats[None]}
        np.testing.assert_allclose(serving(given).numpy()[0], row, atol=1e-5)
    serving.save(tmp_path / "serving.keras")
    reloaded = keras.models.load_model(tmp_path / "serving.keras")
    given = {"waveform": clips[0][None], "speaker_statistics": statistics[:1]}
    np.testing.assert_allclose(reloaded(given).numpy()[0], expected[0], atol=1e-5)


def test_temperature_softens_without_changing_the_ranking():
    from aed_tf.model import TemperatureScaling

    probabilities = np.array([[0.7, 0.2, 0.1]], dtype="float32")
    softened = TemperatureScaling(2.0)(probabilities).numpy()
    expected = np.sqrt(probabilities) / np.sqrt(probabilities).sum()
    np.testing.assert_allclose(softened, expected, rtol=1e-5)
    assert TemperatureScaling(1.0)(probabilities).numpy() == pytest.approx(probabilities, rel=1e-5)


def _no_network(*args, **kwargs):
    raise Exception(
        "URL fetch failure on https://storage.googleapis.com/...: None -- "
        "[Errno -3] Temporary failure in name resolution"
    )


@pytest.mark.parametrize("name", ["mobilenetv3small", "efficientnetb0"])
def test_from_scratch_batchnorm_statistics_catch_up_with_the_data(name):
    """With the weights held still (learning rate 0), 50 steps must bring BatchNorm's moving
    mean to the data's. MobileNetV3's own momentum (0.999) would leave it 95% short, and
    inference collapsed to one class in a real run."""
    from aed_tf.backbones import BackbonePreprocess

    train = Config().replace(backbone=name, weights="none", image_size=32).train
    model = build_classifier(train, num_classes=7, n_mels=16)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="categorical_crossentropy")
    features = (3.0 + np.random.default_rng(0).standard_normal((8, 20, 16))).astype("float32")
    labels = np.eye(7, dtype="float32")[np.arange(8) % 7]
    model.fit(features, labels, batch_size=8, epochs=50, verbose=0, shuffle=False)

    backbone = model.get_layer("backbone")
    first_bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    preprocess = next(layer for layer in model.layers if isinstance(layer, BackbonePreprocess))
    images = preprocess(model.get_layer("image")(features))
    bn_input = keras.Model(backbone.input, first_bn.input)(images).numpy()
    batch_mean = bn_input.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(
        np.asarray(first_bn.moving_mean), batch_mean, atol=0.02 * np.abs(batch_mean).max()
    )


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_gradient_reversal_is_the_identity_forward_and_scales_the_gradient_by_minus_its_weight(weight):
    import tensorflow as tf

    reversal = GradientReversal(weight)
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = reversal(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -weight * np.array([[1.0, 2.0, 3.0]]))
    assert GradientReversal.from_config(reversal.get_config()).weight == weight


def test_a_speaker_adversary_shares_the_classifier_and_leaves_it_whole(tmp_path):
    train = Config().replace(backbone="audiocnn", weights="none").train
    classifier = build_classifier(train, num_classes=7, n_mels=32)
    adversarial = with_speaker_adversary(classifier, num_speakers=5, weight=0.3)
    features = np.random.default_rng(0).normal(size=(2, 40, 32)).astype("float32")
    outputs = adversarial(features)
    assert outputs["emotion"].shape == (2, 7) and outputs["speaker"].shape == (2, 5)
    np.testing.assert_allclose(outputs["emotion"], classifier(features), atol=1e-6)

    # Saved and reloaded (a checkpoint), the emotion classifier comes back out without the head.
    adversarial.save(tmp_path / "checkpoint.keras")
    reloaded = emotion_classifier(keras.models.load_model(tmp_path / "checkpoint.keras"))
    assert reloaded.name == classifier.name and reloaded.output_shape == (None, 7)
    assert not any(layer.name.startswith("speaker") for layer in reloaded.layers)
    assert len(reloaded.weights) == len(classifier.weights)
    np.testing.assert_allclose(reloaded(features), classifier(features), atol=1e-6)
    assert emotion_classifier(classifier) is classifier


def _pooled_frames_reached(name: str) -> int:
    """How many of the frame embeddings that the pooling sees change when the input's first 16
    frames (the first pooled frame) change: how far each embedding sees in time."""
    keras.utils.set_random_seed(0)
    backbone = build_backbone(name, 0, weights=None, n_mels=16)
    frame_embeddings = keras.Model(backbone.input, backbone.get_layer("pooling").input)
    features = np.random.default_rng(0).standard_normal((1, 480, 16)).astype("float32")
    changed = features.copy()
    changed[:, :16] += 1.0
    difference = np.abs(frame_embeddings(changed).numpy() - frame_embeddings(features).numpy())
    assert difference.shape == (1, 30, 128)  # 480 frames pooled 16-fold
    return int((difference.max(axis=(0, 2)) > 1e-6).sum())


def test_audiotcn_frame_embeddings_see_seconds_where_audiocnn_sees_half_a_second():
    # audiocnn: the 3x3 blocks' view (about 46 frames) reaches 2-4 pooled frames of 160 ms.
    # audiotcn's dilated context blocks reach 1 + 2 + 4 = 7 pooled frames further on each side.
    plain, context = _pooled_frames_reached("audiocnn"), _pooled_frames_reached("audiotcn")
    assert 2 <= plain <= 4
    assert context == plain + 7
