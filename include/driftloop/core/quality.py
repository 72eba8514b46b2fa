"""Quality-metric definitions shared by training (candidate selection, the holdout report) and the
offline gate: the same definitions as the dbt marts (top-label ECE on ten equal-width bins, log loss
clipped at 1e-15, binary metrics on the positive class, multiclass macro averages). Pure functions of
arrays; scikit-learn is imported only when a metric is computed."""

from __future__ import annotations

import numpy as np

from driftloop.core.spec import LOWER_IS_BETTER, ModelSpec, Task


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE over equal-width bins [0, 0.1), ..., [0.9, 1.0] (as the marts compute it)."""
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() / len(confidence) * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def quality_metrics(spec: ModelSpec, y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    """Accuracy, precision, recall, F1 (binary: positive class; multiclass: macro), ROC AUC
    (multiclass: one-vs-rest macro), log loss, Brier, ECE, positive rate. None where undefined."""
    from sklearn import metrics

    n_classes = len(spec.classes)
    predicted = probabilities.argmax(axis=1)
    result: dict[str, float | None] = {"n": float(len(y_true))}
    if len(y_true) == 0:
        return result
    labels = list(range(n_classes))
    result["accuracy"] = float(metrics.accuracy_score(y_true, predicted))
    result["log_loss"] = float(metrics.log_loss(y_true, np.clip(probabilities, 1e-15, 1), labels=labels))
    confidence = probabilities.max(axis=1)
    result["ece"] = expected_calibration_error((predicted == y_true).astype(float), confidence)
    present = np.unique(y_true)
    if spec.task is Task.binary:
        positive = [str(c) for c in spec.classes].index(str(spec.positive_class))
        truth = (y_true == positive).astype(int)
        guess = (predicted == positive).astype(int)
        result["precision"] = float(metrics.precision_score(truth, guess, zero_division=np.nan))
        result["recall"] = float(metrics.recall_score(truth, guess, zero_division=np.nan))
        result["f1"] = float(metrics.f1_score(truth, guess, zero_division=np.nan))
        result["brier"] = float(metrics.brier_score_loss(truth, probabilities[:, positive]))
        result["roc_auc"] = float(metrics.roc_auc_score(truth, probabilities[:, positive])) if len(present) == 2 else None
        result["positive_rate"] = float(guess.mean())
    else:
        kwargs = {"labels": labels, "average": "macro", "zero_division": np.nan}
        result["precision"] = float(metrics.precision_score(y_true, predicted, **kwargs))
        result["recall"] = float(metrics.recall_score(y_true, predicted, **kwargs))
        result["f1"] = float(metrics.f1_score(y_true, predicted, **kwargs))
        one_hot = np.eye(n_classes)[y_true]
        result["brier"] = float(((one_hot - probabilities) ** 2).sum(axis=1).mean())
        result["roc_auc"] = (
            float(metrics.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro", labels=labels))
            if len(present) == n_classes
            else None
        )
    return {k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in result.items()}


def is_better(metric: str, candidate: float | None, incumbent: float | None) -> bool:
    if candidate is None:
        return False
    if incumbent is None:
        return True
    return candidate < incumbent if metric in LOWER_IS_BETTER else candidate > incumbent
