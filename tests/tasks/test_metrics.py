import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

from transferkit.tasks.metrics import classification_metrics
from transferkit.tasks.scores import imbalance, monitored


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 4
    y_true = rng.integers(0, k, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, k, 200))
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: precision 0 by convention
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    m = classification_metrics(confusion.tolist(), ["a", "b", "c", "d"])
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=range(k), zero_division=0)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    for i, name in enumerate("abcd"):
        c = m["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i])
        )
    top = m["most_confused"][0]
    assert top["count"] == max(confusion[i, j] for i in range(k) for j in range(k) if i != j)


def test_accuracy_hides_a_classifier_that_ignores_the_small_class():
    m = classification_metrics([[95, 0], [5, 0]], ["ok", "defect"])
    assert m["accuracy"] == 0.95 and m["balanced_accuracy"] == 0.5
    assert m["per_class"]["defect"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 5}
    assert m["most_confused"] == [{"true": "defect", "predicted": "ok", "count": 5}]


def test_absent_classes_are_left_out_of_macro_averages():
    m = classification_metrics([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    assert m["per_class"]["2"]["recall"] is None
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 1.0) / 2)


def test_imbalance_and_monitor_direction():
    assert imbalance([450, 45, 100]) == 10 and imbalance([3, 0]) == float("inf")
    assert monitored({"val_loss": 0.2}, "loss") > monitored({"val_loss": 0.3}, "loss")
    assert monitored({"val_macro_f1": 0.9}, "macro_f1") == 0.9
