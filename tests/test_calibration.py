import numpy as np
import pytest

from aed_tf.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_table,
)


def overconfident(seed: int = 0, clips: int = 4000, classes: int = 4):
    """Labels and probabilities of a model that is right 60% of the time but says ~0.95."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, clips)
    predicted = np.where(
        rng.random(clips) < 0.6, labels, (labels + rng.integers(1, classes, clips)) % classes
    )
    probabilities = np.full((clips, classes), 0.05 / (classes - 1))
    probabilities[np.arange(clips), predicted] = 0.95
    return labels, probabilities


def test_temperature_scaling_softens_an_overconfident_model_without_changing_its_predictions():
    labels, probabilities = overconfident()
    temperature = fit_temperature(labels, probabilities)
    calibrated = apply_temperature(probabilities, temperature)
    assert temperature > 1.5
    np.testing.assert_array_equal(calibrated.argmax(1), probabilities.argmax(1))
    np.testing.assert_allclose(calibrated.sum(1), 1.0)
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.35, abs=0.03)
    assert expected_calibration_error(labels, calibrated) < 0.03
    # The fitted temperature makes the top probability the accuracy, 0.6.
    assert calibrated.max(1).mean() == pytest.approx(0.6, abs=0.02)


def test_temperature_one_is_the_identity_and_a_calibrated_model_keeps_about_one():
    labels, probabilities = overconfident()
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, rtol=1e-9)
    calibrated = apply_temperature(probabilities, fit_temperature(labels, probabilities))
    assert fit_temperature(labels, calibrated) == pytest.approx(1.0, abs=0.02)


def test_reliability_table_bins_confidence_and_counts_every_clip():
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.35, 0.65], [0.5, 0.5]])
    table = reliability_table(labels, probabilities, bins=10)
    assert table["clips"].sum() == 4
    assert list(table["lower"]) == pytest.approx([0.4, 0.6, 0.8])  # 0.5 is in (0.4, 0.5]
    assert list(table["accuracy"]) == [1.0, 1.0, 0.5]
    ece = expected_calibration_error(labels, probabilities, bins=10)
    assert ece == pytest.approx((abs(1 - 0.5) + abs(1 - 0.65) + 2 * abs(0.5 - 0.9)) / 4)


def test_fit_temperature_refuses_no_clips():
    with pytest.raises(ValueError, match="at least one"):
        fit_temperature(np.array([], int), np.zeros((0, 3)))
