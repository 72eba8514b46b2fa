"""The decision under realistic noise, simulated (driftloop.sim.decisions): the rows of "Done means" of the
decisions issue. Hourly looks for 14 days with the spec's defaults (``Policy()``); each unit makes one
prediction, labelled in the hour it is served (label delay is not simulated), fails with the arm's error
rate, and has a lognormal latency (median 20 ms, sd of ln(latency) 0.5).

By default each row runs ``DEFAULT_RUNS`` experiments (the whole file in about a minute on 2 cores) and
asserts what that size can show: the 95 % Wilson interval of a false-decision rate reaches down to the
limit, that of a power reaches up to it. ``DRIFTLOOP_SIMULATION_RUNS=2000`` runs the long version, which
asserts the limits on the interval's far side (e.g. the upper bound of A/A false promotions <= 6 %);
``pytest -s`` prints every row with its interval (the README has the long run's numbers).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import stats

from driftloop.promote.decision import Policy
from driftloop.sim.decisions import SimulationResult, simulate_experiments

DEFAULT_RUNS = 200
RUNS = int(os.environ.get("DRIFTLOOP_SIMULATION_RUNS", DEFAULT_RUNS))
LONG = RUNS >= 1000
HOURS = 14 * 24
NOISE = {"control_error_rate": 0.01, "latency_sigma": 0.5}  # realistic noise, in both arms


def wilson(count: int, total: int) -> tuple[float, float]:
    interval = stats.binomtest(count, total).proportion_ci(confidence_level=0.95, method="wilson")
    return interval.low, interval.high


def report(label: str, hits: np.ndarray) -> tuple[float, float, float]:
    count, total = int(np.sum(hits)), len(hits)
    low, high = wilson(count, total)
    print(f"\n{label}: {count / total:.2%} (95% Wilson CI {low:.2%}-{high:.2%}, {total:,} experiments)")
    return count / total, low, high


def assert_at_most(label: str, hits: np.ndarray, limit: float, long_limit: float) -> None:
    """A false-decision rate: <= limit. Long run: the interval's upper bound <= long_limit; default: the
    interval reaches down to the limit (a rate over it is not ruled out by so few runs, but a gross one is)."""
    _, low, high = report(label, hits)
    assert (high <= long_limit) if LONG else (low <= limit), label


def assert_at_least(label: str, hits: np.ndarray, limit: float) -> None:
    """A power: >= limit. Long run: the point estimate; default: the interval reaches up to the limit."""
    rate, _, high = report(label, hits)
    assert (rate >= limit) if LONG else (high >= limit), label


def run(control_rate: float, treatment_rate: float, labelled_per_hour: int, policy: Policy, seed: int,
        hours: int = HOURS, **noise) -> SimulationResult:  # fmt: skip
    return simulate_experiments(RUNS, control_rate, treatment_rate, 0.10, labelled_per_hour, hours, policy,
                                np.random.default_rng(seed), **noise)  # fmt: skip


STRATEGIES = ("canary", "thompson", "epsilon_greedy")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("labelled_per_hour", [30, 300, 3000])
@pytest.mark.parametrize("base_rate", [0.55, 0.80, 0.97, 0.995])
def test_aa_false_promotions_are_at_most_alpha_at_every_base_rate(base_rate, labelled_per_hour, strategy):
    # GIVEN A/A experiments at a base rate, a traffic and an allocation strategy, with realistic noise
    policy = Policy(strategy=strategy)
    seed = int(base_rate * 1000) + labelled_per_hour + STRATEGIES.index(strategy)

    # WHEN looking every hour for 14 days
    result = run(base_rate, base_rate, labelled_per_hour, policy, seed, **NOISE)

    # THEN at most alpha of them promote (the plug-in variance promoted 8.5 % at 0.97)
    assert_at_most(f"A/A {strategy} at {base_rate} and {labelled_per_hour}/h: false promotions",
                   result.action == "promote", policy.alpha, 0.06)  # fmt: skip


def test_aa_with_realistic_noise_is_rarely_rejected_by_a_guardrail():
    # GIVEN A/A experiments with lognormal latency (sigma 0.5) and 1 % errors in both arms, 300 labels/h
    result = run(0.80, 0.80, 300, Policy(), 11, **NOISE)

    # WHEN looking every hour THEN guardrails reject at most 5 % (thresholds on point estimates: 78 %)
    assert_at_most("A/A with noise: guardrail rejections", result.rule == "guardrail_breach", 0.05, 0.06)


def test_a_three_point_gain_with_realistic_noise_is_promoted():
    # GIVEN a challenger 3 points better (0.80 -> 0.83), with the same noise, 300 labels/h
    result = run(0.80, 0.83, 300, Policy(), 12, **NOISE)

    # WHEN looking every hour THEN at least 90 % are promoted (point-estimate guardrails: 36 %)
    assert_at_least("+3 points with noise: promoted", result.action == "promote", 0.90)


@pytest.mark.parametrize(
    ("label", "regression"),
    [("latency x1.5", {"latency_ratio": 1.5}), ("errors 1 % -> 4 %", {"treatment_error_rate": 0.04})],
)
def test_a_real_guardrail_regression_is_rejected_within_a_day(label, regression):
    # GIVEN a challenger as accurate as the champion but slower or failing more, 300 labels/h
    result = run(0.80, 0.80, 300, Policy(), 13, hours=24, **(NOISE | regression))

    # WHEN looking every hour for 24 h THEN at least 95 % are rejected by a guardrail
    assert_at_least(f"{label}: rejected by a guardrail within 24 h", result.rule == "guardrail_breach", 0.95)


@pytest.mark.parametrize("labelled_per_hour", [30, 300])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_srm_false_halts_are_at_most_one_percent(strategy, labelled_per_hour):
    # GIVEN A/A experiments whose assignment follows the plan
    result = run(0.80, 0.80, labelled_per_hour, Policy(strategy=strategy), 14 + labelled_per_hour, **NOISE)

    # WHEN looking every hour for 14 days THEN at most 1 % halt on SRM (the repeated chi-square: up to 2.9 %)
    assert_at_most(f"A/A {strategy} at {labelled_per_hour}/h: SRM halts", result.rule == "sample_ratio_mismatch",
                   0.01, 0.015)  # fmt: skip


def test_a_70_30_split_under_a_90_10_plan_halts_within_six_hours():
    # GIVEN assignment that sends 30 % to the challenger though 10 % was planned, 300 labels/h
    result = simulate_experiments(RUNS, 0.80, 0.80, 0.10, 300, 24, Policy(), np.random.default_rng(15),
                                  assigned_treatment_share=0.30, **NOISE)  # fmt: skip

    # WHEN looking every hour THEN every experiment halts on SRM within 6 h
    halted = (result.rule == "sample_ratio_mismatch") & (result.decision_hour <= 6)
    report("70/30 under a 90/10 plan: halted within 6 h", halted)
    assert halted.all()
