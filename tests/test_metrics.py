import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from aed_tf.metrics import classification_metrics, label_metrics


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # the reference, on purpose
@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_with_absent_and_never_predicted_classes(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice([0, 1, 3, 4], 200)  # class 2 absent, class 5 never in labels
    probabilities = rng.dirichlet(np.ones(6), 200)
    probabilities[np.arange(100), labels[:100]] += 1.0  # right half the time
    probabilities[:, 4] *= 0.01  # class 4 is (almost) never predicted
    probabilities /= probabilities.sum(1, keepdims=True)
    predicted = probabilities.argmax(1)
    present = np.unique(labels)
    metrics = classification_metrics(labels, probabilities)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["uar"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, labels=present, average="macro", zero_division=0)
    )
    assert metrics["loss"] == pytest.approx(log_loss(labels, probabilities, labels=np.arange(6)), rel=1e-6)
    assert label_metrics(labels, predicted, 6) == {k: metrics[k] for k in ("accuracy", "uar", "macro_f1")}
