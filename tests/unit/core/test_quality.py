"""The quality-metric definitions (driftloop.core.quality) against scikit-learn on known values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from driftloop.core import quality
from driftloop.core.spec import get_spec


@pytest.fixture(scope="module")
def spec():
    return get_spec("churn")


def test_quality_metrics_equal_scikit_learn_on_known_values(spec):
    y_true = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    churn = np.array([0.9, 0.2, 0.4, 0.8, 0.6, 0.1, 0.7, 0.3])
    probabilities = np.column_stack([1 - churn, churn])
    result = quality.quality_metrics(spec, y_true, probabilities)
    predicted = (churn >= 0.5).astype(int)
    assert result["roc_auc"] == pytest.approx(sk.roc_auc_score(y_true, churn), abs=1e-12)
    assert result["log_loss"] == pytest.approx(sk.log_loss(y_true, churn), abs=1e-12)
    assert result["brier"] == pytest.approx(sk.brier_score_loss(y_true, churn), abs=1e-12)
    assert result["precision"] == pytest.approx(sk.precision_score(y_true, predicted))
    assert result["recall"] == pytest.approx(sk.recall_score(y_true, predicted))
    assert result["f1"] == pytest.approx(sk.f1_score(y_true, predicted))
    assert result["accuracy"] == pytest.approx(0.75)
    # top-label ECE by hand: confidences 0.9 .8 .6 .6 .7 .9 .7 .7 in bins 9, 8, 6, 7
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(float)
    bins = np.minimum((confidence * 10).astype(int), 9)
    expected = sum((bins == b).mean() * abs(correct[bins == b].mean() - confidence[bins == b].mean()) for b in set(bins))
    assert result["ece"] == pytest.approx(expected, abs=1e-12)


def test_undefined_metrics_are_none(spec):
    only_stay = quality.quality_metrics(spec, np.array([0, 0]), np.array([[0.8, 0.2], [0.7, 0.3]]))
    assert only_stay["roc_auc"] is None and only_stay["precision"] is None and only_stay["recall"] is None
    assert quality.quality_metrics(spec, np.array([], dtype=int), np.zeros((0, 2))) == {"n": 0.0}


def test_lower_is_better_for_losses():
    assert quality.is_better("log_loss", 0.3, 0.4) and not quality.is_better("roc_auc", 0.3, 0.4)
    assert quality.is_better("roc_auc", 0.5, None) and not quality.is_better("roc_auc", None, 0.5)
