"""The offline gate's checks on numbers built to pass or fail each one (pure; no services)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from driftloop.core.spec import OfflineGate, get_spec
from driftloop.promote.gate import evaluate_gate, importance_rank_correlation

SPEC = get_spec("churn")
RNG = np.random.default_rng(3)
N = 4000
TRUE_LOGIT = 2.0 * RNG.standard_normal(N)
Y = (RNG.random(N) < 1 / (1 + np.exp(-TRUE_LOGIT))).astype(int)  # drawn from the true probabilities
SEGMENTS = np.where(np.arange(N) % 2 == 0, "eu", "na").tolist()
IMPORTANCE = {"tenure_months": 0.4, "monthly_charges": 0.3, "contract_type": 0.2, "plan": 0.06, "age": 0.04}


def probabilities(noise: float, rng=RNG) -> np.ndarray:
    """A model that sees the true logit through noise (0: the true, calibrated probabilities)."""
    churn = 1 / (1 + np.exp(-(TRUE_LOGIT + noise * rng.standard_normal(N))))
    return np.column_stack([1 - churn, churn])


CHAMPION = probabilities(1.5)
BETTER = probabilities(0.0)


def gate(challenger=BETTER, champion=CHAMPION, champion_ms=0.01, challenger_ms=0.01, champion_importance=IMPORTANCE,
         challenger_importance=IMPORTANCE, **policy):  # fmt: skip
    return evaluate_gate(
        SPEC, OfflineGate(**policy), y_true=Y, segments=SEGMENTS, champion_probabilities=champion,
        challenger_probabilities=challenger, champion_ms_per_row=champion_ms, challenger_ms_per_row=challenger_ms,
        champion_importance=champion_importance, challenger_importance=challenger_importance,
    )  # fmt: skip


def verdicts(result) -> dict[str, bool]:
    return {check.name: check.passed for check in result.checks}


def test_a_better_challenger_passes_every_check():
    result = gate()
    assert result.passed and all(verdicts(result).values())
    assert result.reason.startswith("offline gate passed")


def test_too_small_an_auc_gain_fails():
    result = gate(challenger=probabilities(1.5, rng=np.random.default_rng(9)))  # as good as the champion
    assert verdicts(result)["auc_gain"] is False and not result.passed
    assert "relative gain" in result.reason


def test_a_slower_challenger_fails_on_latency():
    assert verdicts(gate(challenger_ms=0.015))["latency_ratio"] is False  # x1.5
    assert verdicts(gate(challenger_ms=0.0105))["latency_ratio"] is True  # x1.05


def test_a_worse_calibrated_challenger_fails():
    overconfident = BETTER.copy()
    overconfident[:, 1] = np.where(BETTER[:, 1] > 0.5, 0.999, 0.001)
    overconfident[:, 0] = 1 - overconfident[:, 1]
    result = gate(challenger=overconfident)
    ece = next(c for c in result.checks if c.name == "ece_increase")
    assert ece.passed is False and ece.value > 0.02


def test_a_segment_that_regresses_fails_even_when_the_total_improves():
    regressed = BETTER.copy()
    eu = np.array(SEGMENTS) == "eu"
    regressed[eu] = probabilities(4.0)[eu]  # much worse in eu, better in na
    result = gate(challenger=regressed, min_relative_auc_gain=0.0)
    segment = next(c for c in result.checks if c.name == "segment_auc_drop")
    assert segment.passed is False and "'eu'" in segment.detail


def test_a_shifted_importance_fails_and_an_unknown_one_is_not_compared():
    reversed_ranks = dict(zip(IMPORTANCE, sorted(IMPORTANCE.values()), strict=True))
    assert verdicts(gate(challenger_importance=reversed_ranks))["importance_rank_correlation"] is False
    unknown = gate(champion_importance=None)
    check = next(c for c in unknown.checks if c.name == "importance_rank_correlation")
    assert check.passed and check.value is None and "not compared" in check.detail


def test_importance_rank_correlation_is_spearman_over_the_top_features():
    a = {"x": 0.5, "y": 0.3, "z": 0.1, "w": 0.05, "v": 0.05}
    b = {"x": 0.2, "y": 0.5, "z": 0.25, "q": 0.05}
    union = sorted({"x", "y", "z"} | {"y", "z", "x"})
    expected = spearmanr([a.get(f, 0) for f in union], [b.get(f, 0) for f in union]).statistic
    assert importance_rank_correlation(a, b, top=3) == pytest.approx(expected)
