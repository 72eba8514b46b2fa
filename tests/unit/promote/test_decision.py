"""Unit tests of the online-experiment decision (driftloop.promote.decision): rules, known values, simulations.

The simulations run many seeded experiments at once with hourly looks, through the same rules as
``decide``. Traffic: 150 labelled predictions per hour in total (all labelled, no label delay), a 10 %
canary, at most 14 days (336 looks). Run with ``pytest -s`` to see the simulated rates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import asdict

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from driftloop.promote.decision import (
    AllocationStep,
    ArmEvidence,
    Evidence,
    Policy,
    SequentialState,
    WatchEvidence,
    WatchPolicy,
    always_valid_half_width,
    bandit_share,
    decide,
    decide_watch,
    difference_in_means,
    difference_in_rates,
    log_mixture_likelihood_ratio,
    log_one_sided_mixture_likelihood_ratio,
    restricted_rates,
    srm_log_bayes_factor,
)
from driftloop.sim.decisions import simulate_experiments, simulate_watches

POLICY = Policy()
CANARY_ONLY = Policy(ramp_steps=(0.10,))  # a fixed 10 % canary: no ramp
LABELLED_PER_HOUR = 150
HOURS = 14 * 24


LATENCY_SIGMA = 0.5  # sd of ln(latency) in the examples: p95 = median x 2.28


def arm(name: str, n: int, rate: float, *, n_errors: int = 0, latency_p95_ms: float = 100.0) -> ArmEvidence:
    """An arm with ``n`` assigned units (one prediction each), all labelled, ``rate`` of them successes, and
    lognormal latencies with that p95 and sd LATENCY_SIGMA of ln(latency)."""
    log_mean = math.log(latency_p95_ms) - stats.norm.ppf(0.95) * LATENCY_SIGMA
    return ArmEvidence(name, n, n, round(n * rate), n_errors, latency_p95_ms, n, log_mean, LATENCY_SIGMA**2)


def look(control: ArmEvidence, treatment: ArmEvidence, **fields) -> Evidence:
    return Evidence(
        control, treatment, **({"treatment_share": 0.10, "hours_elapsed": 48.0, "look": 48} | fields)
    )


def wilson_interval(count: int, total: int) -> tuple[float, float]:
    interval = stats.binomtest(count, total).proportion_ci(confidence_level=0.95, method="wilson")
    return interval.low, interval.high


# --- decide(): the rules ---


def test_sample_ratio_mismatch_halts_before_anything_else():
    # GIVEN a 90/10 plan that got a 70/30 split, a treatment that also breaches latency and clearly wins
    evidence = look(arm("champion", 7000, 0.80), arm("challenger", 3000, 0.90, latency_p95_ms=150.0))

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN the experiment halts on the broken assignment, all traffic back to the champion
    assert decision.action == "halt"
    assert decision.next_allocation == 0.0
    assert decision.statistics["rule"] == "sample_ratio_mismatch"
    assert decision.statistics["sample_ratio"]["always_valid_p_value"] <= POLICY.srm_p_value_threshold
    assert "30.0%" in decision.reason and "10.0%" in decision.reason and "10,000" in decision.reason


def test_latency_guardrail_breach_rejects_with_the_numbers():
    # GIVEN a treatment whose latency p95 is 1.5x the control's, with a winning primary metric
    evidence = look(
        arm("champion", 9000, 0.80, latency_p95_ms=200.0), arm("challenger", 1000, 0.86, latency_p95_ms=300.0)
    )

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN the canary stops, and the reason says by how much
    assert (decision.action, decision.next_allocation) == ("reject", 0.0)
    assert decision.statistics["rule"] == "guardrail_breach"
    assert decision.statistics["guardrails"]["latency_p95_ratio"] == pytest.approx(1.5)
    assert decision.statistics["guardrails"]["log_latency_difference"] == pytest.approx(math.log(1.5))
    assert "x1.50" in decision.reason and "300.0 ms" in decision.reason and "200.0 ms" in decision.reason
    assert "1.10x" in decision.reason and "always-valid p = " in decision.reason


@pytest.mark.parametrize(("control_p95", "treatment_p95"), [(0.5, 0.9), (1.0, 1.8), (0.2, 4.9), (2.0, 6.9)])
def test_latency_noise_at_millisecond_p95s_is_no_breach(control_p95, treatment_p95):
    # GIVEN p95s of a few milliseconds whose ratio is far over the limit but whose difference is under 5 ms
    evidence = look(
        arm("champion", 9000, 0.80, latency_p95_ms=control_p95), arm("challenger", 1000, 0.80, latency_p95_ms=treatment_p95)
    )

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN the guardrail holds (the experiment goes on), and the statistics say why
    assert decision.action != "reject", decision.reason
    assert decision.statistics["guardrails"]["latency_breached"] is False
    assert decision.statistics["guardrails"]["latency_p95_ratio"] > POLICY.max_latency_p95_ratio


@pytest.mark.parametrize(("control_p95", "treatment_p95"), [(0.8, 6.0), (20.0, 30.0), (1000.0, 1200.0)])
def test_a_real_latency_regression_is_a_breach(control_p95, treatment_p95):
    # GIVEN a treatment over the ratio and more than the tolerance slower
    evidence = look(
        arm("champion", 9000, 0.80, latency_p95_ms=control_p95), arm("challenger", 1000, 0.80, latency_p95_ms=treatment_p95)
    )

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN it is rejected by the guardrail
    assert (decision.action, decision.statistics["rule"]) == ("reject", "guardrail_breach"), decision.reason
    assert "+5 ms" in decision.reason


def test_a_large_model_within_the_ratio_is_no_breach_though_many_ms_slower():
    evidence = look(arm("champion", 9000, 0.80, latency_p95_ms=1000.0), arm("challenger", 1000, 0.80, latency_p95_ms=1080.0))
    assert decide(evidence, POLICY).statistics["guardrails"]["latency_breached"] is False


def test_the_latency_tolerance_is_the_policys():
    evidence = look(arm("champion", 9000, 0.80, latency_p95_ms=1.0), arm("challenger", 1000, 0.80, latency_p95_ms=1.8))
    strict = Policy(latency_p95_tolerance_ms=0.0)
    assert decide(evidence, strict).statistics["rule"] == "guardrail_breach"
    with pytest.raises(ValueError, match="latency_p95_tolerance_ms"):
        Policy(latency_p95_tolerance_ms=-1.0)


def test_error_rate_guardrail_breach_rejects():
    # GIVEN a treatment with 2 % errors against 0.5 % in the control (margin: +0.5 points) on 3,000 units
    evidence = look(arm("champion", 27_000, 0.80, n_errors=135), arm("challenger", 3000, 0.80, n_errors=60))

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN it is rejected, with both error rates and the always-valid p-value in the reason
    assert decision.action == "reject"
    assert decision.statistics["guardrails"]["error_rate_increase"] == pytest.approx(0.015)
    assert decision.statistics["guardrails"]["always_valid_p_value_error_rate"] <= POLICY.alpha
    assert "2.00%" in decision.reason and "0.50%" in decision.reason and "+0.50% margin" in decision.reason


def test_an_error_rate_within_noise_is_no_breach():
    # GIVEN the minimal case: 18 errors in 1,800 control units, 4 in 200 challenger units (1 % vs
    # 2 %: 4 or more in 200 at 1 % happen 14 % of the time)
    evidence = look(arm("champion", 1800, 0.80, n_errors=18), arm("challenger", 200, 0.80, n_errors=4),
                    hours_elapsed=7.0, look=7)  # fmt: skip
    assert stats.binom.sf(3, 200, 0.01) == pytest.approx(0.14, abs=0.005)

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN no guardrail breach: the threshold on the point estimate rejected it ("2.00 % vs 1.00 %")
    assert decision.action == "continue", decision.reason
    assert decision.statistics["guardrails"]["error_rate_breached"] is False
    assert decision.statistics["guardrails"]["always_valid_p_value_error_rate"] > 0.3


def test_the_error_rate_guardrail_is_a_sequential_test_with_its_margin():
    # GIVEN one step: 0.5 % errors in 27,000 control predictions, 2 % in 3,000 treatment predictions
    control, treatment = arm("champion", 27_000, 0.8, n_errors=135), arm("challenger", 3000, 0.8, n_errors=60)
    margin, tau = POLICY.max_error_rate_increase, POLICY.error_rate_mixing_sd

    # WHEN deciding
    guardrails = decide(look(control, treatment), POLICY).statistics["guardrails"]

    # THEN the p-value is 1 / the one-sided mixture likelihood ratio of (difference - margin), with the
    # variance at the rates restricted to "increase = margin"
    rate_control, rate_treatment = restricted_rates(27_000, 135, 3000, 60, margin)
    variance = rate_control * (1 - rate_control) / 27_000 + rate_treatment * (1 - rate_treatment) / 3000
    expected = math.exp(-log_one_sided_mixture_likelihood_ratio(0.015 - margin, variance, tau))
    assert guardrails["error_rate_variance"] == pytest.approx(float(variance))
    assert guardrails["always_valid_p_value_error_rate"] == pytest.approx(min(1.0, expected))


def test_guardrails_wait_for_enough_units():
    # GIVEN a slow treatment seen on only 50 units
    evidence = look(
        arm("champion", 450, 0.80, latency_p95_ms=100.0), arm("challenger", 50, 0.80, latency_p95_ms=150.0)
    )

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN 50 requests are not enough to judge a p95: continue
    assert decision.action == "continue"
    assert decision.statistics["guardrails"]["measured"] is False


def test_too_few_labels_continues():
    # GIVEN 150 labelled treatment units where the policy needs 200 per arm, and a large observed gain
    evidence = look(
        ArmEvidence("champion", 2250, 1350, 1080, 0, 100.0),
        ArmEvidence("challenger", 250, 150, 140, 0, 100.0),
    )

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN the test does not count yet, and the reason says what is missing
    assert (decision.action, decision.next_allocation) == ("continue", 0.10)
    assert decision.statistics["test"]["enough_labels"] is False
    assert decision.state == SequentialState()
    assert "150" in decision.reason and "1,350" in decision.reason and "200" in decision.reason


def test_max_duration_without_conclusion_is_inconclusive():
    # GIVEN two equal arms after the maximum duration
    evidence = look(
        arm("champion", 45_000, 0.80), arm("challenger", 5000, 0.80), hours_elapsed=336.0, look=336
    )

    # WHEN deciding
    decision = decide(evidence, CANARY_ONLY)

    # THEN the champion keeps all traffic
    assert (decision.action, decision.next_allocation) == ("inconclusive", 0.0)
    assert "336 h" in decision.reason and "+0.0000" in decision.reason


def test_clear_win_promotes_and_the_interval_excludes_zero():
    # GIVEN 0.86 against 0.80 on 1,000 treatment and 9,000 control labels
    evidence = look(arm("champion", 9000, 0.80), arm("challenger", 1000, 0.86))

    # WHEN deciding
    decision = decide(evidence, CANARY_ONLY)

    # THEN the challenger is promoted; the always-valid lower bound is above 0, consistent with p <= alpha
    test = decision.statistics["test"]
    assert (decision.action, decision.next_allocation) == ("promote", 1.0)
    assert test["always_valid_p_value_better"] <= POLICY.alpha
    assert test["always_valid_interval"][0] > 0
    assert decision.state.difference_lower == test["always_valid_interval"][0]
    assert "0.8600" in decision.reason and "0.8000" in decision.reason and "+0.0600" in decision.reason
    assert f"{test['always_valid_p_value_better']:.3g}" in decision.reason


def test_clear_loss_rejects():
    # GIVEN a treatment at 0.74 against 0.80
    evidence = look(arm("champion", 9000, 0.80), arm("challenger", 1000, 0.74))

    # WHEN deciding
    decision = decide(evidence, CANARY_ONLY)

    # THEN it is rejected as worse, the interval lies below 0
    assert (decision.action, decision.statistics["rule"]) == ("reject", "treatment_worse")
    assert decision.statistics["test"]["always_valid_interval"][1] < 0


def test_futility_rejects_when_the_minimum_effect_is_ruled_out():
    # GIVEN a policy that only cares about +2 points and two equal arms with many labels
    policy = Policy(minimum_detectable_effect=0.02, ramp_steps=(0.10,))
    evidence = look(arm("champion", 45_000, 0.80), arm("challenger", 5000, 0.80))

    # WHEN deciding
    decision = decide(evidence, policy)

    # THEN the experiment stops for futility: the upper bound is below the minimum effect
    assert (decision.action, decision.statistics["rule"]) == ("reject", "futility")
    assert decision.statistics["test"]["always_valid_interval"][1] < 0.02
    assert "+0.0200" in decision.reason


def test_running_minimum_keeps_evidence_from_earlier_looks():
    # GIVEN an earlier look whose always-valid p(better) was 0.01, and a current look that alone is weaker
    evidence = look(
        arm("champion", 9000, 0.80),
        arm("challenger", 1000, 0.815),
        previous=SequentialState(p_value_better=0.01),
    )

    # WHEN deciding
    decision = decide(evidence, CANARY_ONLY)

    # THEN the running minimum decides: once crossed, the always-valid p-value stays crossed
    assert decision.statistics["test"]["likelihood_ratio_better"] < 1 / POLICY.alpha
    assert (decision.action, decision.state.p_value_better) == ("promote", 0.01)


@pytest.mark.parametrize(
    ("treatment_assigned", "treatment_share", "action", "next_allocation"),
    [
        (1000, 0.10, "ramp", 0.25),  # guardrails pass and the step was held long enough
        (999, 0.10, "continue", 0.10),  # not held long enough
        (1000, 0.25, "ramp", 0.50),
        (1000, 0.50, "continue", 0.50),  # the last canary step holds until the test decides
        (1000, 0.17, "continue", 0.17),  # not a ramp step (a bandit's allocation): no ramp
    ],
)
def test_ramp_after_each_step_is_held_with_guardrails_passing(
    treatment_assigned, treatment_share, action, next_allocation
):
    # GIVEN equal arms at a canary step with the guardrails measured and passing
    control_assigned = round(treatment_assigned * (1 - treatment_share) / treatment_share)
    evidence = look(
        arm("champion", control_assigned, 0.80),
        arm("challenger", treatment_assigned, 0.80, latency_p95_ms=105.0),
        treatment_share=treatment_share,
    )

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN it ramps to the next step only when this step has enough treatment units
    assert (decision.action, decision.next_allocation) == (action, next_allocation)
    if action == "ramp":
        assert (
            f"{treatment_share:.0%} to {next_allocation:.0%}" in decision.reason and "1.05" in decision.reason
        )


def test_promotion_after_a_ramp_waits_for_guardrails_at_the_new_step():
    # GIVEN strong evidence from the 10 % step and only 40 units so far at 25 %
    earlier = AllocationStep(0.10, arm("champion", 9000, 0.80), arm("challenger", 1000, 0.86))
    evidence = look(
        arm("champion", 120, 0.80),
        arm("challenger", 40, 0.86),
        treatment_share=0.25,
        earlier_steps=(earlier,),
    )

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN it does not promote on a step whose latency and errors are not yet measured
    assert decision.statistics["test"]["always_valid_p_value_better"] <= POLICY.alpha
    assert (decision.action, decision.next_allocation) == ("continue", 0.25)


def test_difference_is_estimated_within_allocation_steps():
    # GIVEN no treatment effect, a base rate that rose from 0.70 to 0.90 while the canary ramped 10 % -> 50 %
    earlier = AllocationStep(0.10, arm("champion", 9000, 0.70), arm("challenger", 1000, 0.70))
    evidence = look(
        arm("champion", 5000, 0.90),
        arm("challenger", 5000, 0.90),
        treatment_share=0.50,
        earlier_steps=(earlier,),
    )
    pooled = (700 + 4500) / 6000 - (6300 + 4500) / 14_000  # Simpson's paradox: +0.095 from timing alone

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN the within-step estimate sees no effect and nothing is promoted
    assert pooled == pytest.approx(0.0952, abs=1e-4)
    assert decision.statistics["test"]["difference"] == pytest.approx(0.0)
    assert decision.statistics["sample_ratio"]["degrees_of_freedom"] == 2
    assert decision.action == "continue"


@pytest.mark.parametrize(
    "evidence",
    [
        look(arm("champion", 7000, 0.80), arm("challenger", 3000, 0.80)),
        look(arm("champion", 9000, 0.80), arm("challenger", 1000, 0.86)),
        look(arm("champion", 0, 0.80), arm("challenger", 0, 0.80), hours_elapsed=336.0),
        look(ArmEvidence("champion", 900, 0, 0, 0, 100.0), ArmEvidence("challenger", 100, 0, 0, 3, 90.0)),
    ],
    ids=["halt", "promote", "inconclusive-without-traffic", "continue-without-labels"],
)
def test_decision_is_plain_json(evidence):
    # GIVEN any decision, including ones without labels (undefined rates)
    decision = decide(evidence, POLICY)

    # WHEN it is written to the audit trail
    stored = json.loads(json.dumps(asdict(decision), allow_nan=False))

    # THEN it round-trips as strict JSON, and the state can be read back for the next look
    assert stored["action"] == decision.action and stored["reason"] == decision.reason
    assert SequentialState(**stored["state"]) == decision.state


# --- known values ---


def test_mixture_likelihood_ratios_match_the_closed_form_and_the_integral():
    # GIVEN 0.83 vs 0.80 on 1,000 treatment and 9,000 control labels, and tau = 0.02
    difference, tau = 0.83 - 0.80, 0.02
    variance = 0.83 * 0.17 / 1000 + 0.80 * 0.20 / 9000

    # WHEN computing the two-sided and the one-sided (half-normal) mixture likelihood ratios
    two_sided = math.exp(log_mixture_likelihood_ratio(difference, variance, tau))
    one_sided = math.exp(log_one_sided_mixture_likelihood_ratio(difference, variance, tau))

    # THEN they equal Johari et al.'s closed form and the likelihood ratio integrated over the prior
    closed_form = math.sqrt(variance / (variance + tau**2)) * math.exp(
        tau**2 * difference**2 / (2 * variance * (variance + tau**2))
    )
    integral, _ = integrate.quad(
        lambda theta: (
            math.exp((theta * difference - theta**2 / 2) / variance) * 2 * stats.norm.pdf(theta, scale=tau)
        ),
        0,
        np.inf,
    )
    assert two_sided == pytest.approx(closed_form, rel=1e-12)
    assert one_sided == pytest.approx(integral, rel=1e-6)
    assert one_sided == pytest.approx(
        2 * stats.norm.cdf(tau * difference / math.sqrt(variance * (variance + tau**2))) * closed_form,
        rel=1e-12,
    )


def test_decide_reports_the_hand_computed_statistic():
    # GIVEN the example above as evidence
    evidence = look(arm("champion", 9000, 0.80), arm("challenger", 1000, 0.83))
    pooled = (7200 + 830) / 10_000
    variance = pooled * (1 - pooled) * (1 / 9000 + 1 / 1000)  # pooled under the null of no difference
    tau = POLICY.mixing_sd
    expected = (
        2
        * stats.norm.cdf(tau * 0.03 / math.sqrt(variance * (variance + tau**2)))
        * math.sqrt(variance / (variance + tau**2))
        * math.exp(tau**2 * 0.03**2 / (2 * variance * (variance + tau**2)))
    )

    # WHEN deciding
    test = decide(evidence, CANARY_ONLY).statistics["test"]

    # THEN the statistic, the always-valid p-value and the fixed-horizon p-value are the hand-computed ones
    assert test["difference"] == pytest.approx(0.03)
    assert test["difference_variance"] == pytest.approx(variance)
    assert test["likelihood_ratio_better"] == pytest.approx(expected, rel=1e-9)
    assert test["always_valid_p_value_better"] == pytest.approx(min(1.0, 1 / expected), rel=1e-9)
    assert test["fixed_horizon_p_value_better"] == pytest.approx(stats.norm.sf(0.03 / math.sqrt(variance)))


def test_always_valid_bounds_invert_the_one_sided_test():
    # GIVEN a variance and the policy's tau and alpha
    variance = 0.83 * 0.17 / 1000 + 0.80 * 0.20 / 9000

    # WHEN computing the half-width of the always-valid bounds
    half_width = always_valid_half_width(variance, POLICY.mixing_sd, POLICY.alpha)

    # THEN an estimate exactly one half-width above 0 has likelihood ratio 1 / alpha
    log_ratio = log_one_sided_mixture_likelihood_ratio(half_width, variance, POLICY.mixing_sd)
    assert math.exp(log_ratio) == pytest.approx(1 / POLICY.alpha)


@pytest.mark.parametrize(("control", "treatment"), [(9040, 960), (9000, 1000), (8900, 1100)])
def test_srm_p_value_equals_scipy_chisquare(control, treatment):
    # GIVEN assigned counts under a 90/10 plan
    evidence = look(arm("champion", control, 0.8), arm("challenger", treatment, 0.8))

    # WHEN deciding
    srm = decide(evidence, POLICY).statistics["sample_ratio"]

    # THEN the p-value is scipy's chi-square goodness of fit on the same counts
    expected = stats.chisquare([control, treatment], f_exp=[0.9 * 10_000, 0.1 * 10_000])
    assert srm["chi_square"] == pytest.approx(expected.statistic)
    assert srm["fixed_horizon_p_value"] == pytest.approx(expected.pvalue)


def test_srm_over_ramp_steps_is_one_chi_square_per_step():
    # GIVEN counts from a 10 % step and a 25 % step
    earlier = AllocationStep(0.10, arm("champion", 9050, 0.8), arm("challenger", 950, 0.8))
    evidence = look(
        arm("champion", 2950, 0.8),
        arm("challenger", 1050, 0.8),
        treatment_share=0.25,
        earlier_steps=(earlier,),
    )

    # WHEN deciding
    srm = decide(evidence, POLICY).statistics["sample_ratio"]

    # THEN it is the goodness of fit over the 4 cells with one degree of freedom per step
    expected = stats.chisquare([9050, 950, 2950, 1050], f_exp=[9000, 1000, 3000, 1000], ddof=1)
    assert srm["fixed_horizon_p_value"] == pytest.approx(expected.pvalue)
    assert srm["expected_treatment_share"] == pytest.approx((1000 + 1000) / 14_000)


@pytest.mark.parametrize(("control", "treatment", "share"), [(21, 9, 0.10), (9040, 960, 0.10), (8900, 1100, 0.10),
                                                             (55, 45, 0.50), (700, 300, 0.25)])  # fmt: skip
def test_srm_bayes_factor_is_the_dirichlet_multinomial_over_the_multinomial(control, treatment, share):
    # GIVEN assigned counts under a plan, and the Dirichlet prior k x planned shares
    k = POLICY.srm_prior_concentration

    # WHEN computing the sequential multinomial test's Bayes factor
    log_bayes_factor = float(srm_log_bayes_factor(np.array([control]), np.array([treatment]), np.array([share]), k))

    # THEN it is scipy's Dirichlet-multinomial probability of the counts over the multinomial one
    n = control + treatment
    expected = stats.dirichlet_multinomial.logpmf([control, treatment], [k * (1 - share), k * share], n) - stats.multinomial.logpmf(
        [control, treatment], n, [1 - share, share])  # fmt: skip
    assert log_bayes_factor == pytest.approx(float(expected), rel=1e-9, abs=1e-9)


def test_srm_does_not_halt_on_the_tiny_counts_of_the_first_hour():
    # GIVEN the case: 9 of 30 units to the treatment in hour 1 under a 10 % plan (chi-square p =
    # 0.00026 halted; an exact binomial test gives 0.002 on that one look)
    evidence = look(arm("champion", 21, 0.8), arm("challenger", 9, 0.8), hours_elapsed=1.0, look=1)

    # WHEN deciding
    decision = decide(evidence, POLICY)

    # THEN the sequential test is far from halting (Bayes factor about 3)
    srm = decision.statistics["sample_ratio"]
    assert stats.chisquare([21, 9], f_exp=[27, 3]).pvalue == pytest.approx(0.00026, abs=0.00002)
    assert decision.action == "continue"
    assert srm["always_valid_p_value"] > 0.3


def test_srm_evidence_multiplies_over_steps_and_is_carried_between_looks():
    # GIVEN a 10 % step and a 25 % step, and a state whose SRM p-value was already smaller
    earlier = AllocationStep(0.10, arm("champion", 905, 0.8), arm("challenger", 95, 0.8))
    current = (arm("champion", 295, 0.8), arm("challenger", 105, 0.8))
    k = POLICY.srm_prior_concentration

    # WHEN deciding without and with the earlier state
    fresh = decide(look(*current, treatment_share=0.25, earlier_steps=(earlier,)), POLICY).statistics["sample_ratio"]
    carried = decide(look(*current, treatment_share=0.25, earlier_steps=(earlier,),
                          previous=SequentialState(p_value_srm=0.01)), POLICY)  # fmt: skip

    # THEN the log Bayes factor is the sum of the steps', and the p-value the running minimum
    per_step = srm_log_bayes_factor(np.array([905, 295]), np.array([95, 105]), np.array([0.10, 0.25]), k)
    assert fresh["log_bayes_factor"] == pytest.approx(float(per_step))
    assert fresh["always_valid_p_value"] == pytest.approx(min(1.0, math.exp(-float(per_step))))
    assert carried.state.p_value_srm == pytest.approx(0.01)


def test_difference_in_rates_is_the_plain_difference_for_one_step():
    # GIVEN one step WHEN estimating THEN it is p_t - p_c with the variance pooled under the null
    difference, variance = difference_in_rates(
        np.array([9000]), np.array([7200]), np.array([1000]), np.array([830])
    )
    assert difference == pytest.approx(0.03)
    assert variance == pytest.approx(0.8030 * 0.1970 * (1 / 9000 + 1 / 1000))


@pytest.mark.parametrize(
    ("n_control", "s_control", "n_treatment", "s_treatment", "null_difference"),
    [(1800, 1746, 200, 199, 0.01), (9000, 7200, 1000, 830, -0.03), (500, 5, 60, 0, 0.005), (300, 120, 700, 350, 0.2)],
)
def test_restricted_rates_maximise_the_likelihood_under_the_null(n_control, s_control, n_treatment, s_treatment,
                                                                 null_difference):  # fmt: skip
    # GIVEN counts and a null difference (treatment - control)
    # WHEN computing Farrington and Manning's closed-form restricted MLE
    control, treatment = restricted_rates(n_control, s_control, n_treatment, s_treatment, null_difference)

    # THEN it lies on the null and is the numerical maximiser of the binomial likelihood there
    def negative_log_likelihood(rate_control: float) -> float:
        rate_treatment = rate_control + null_difference
        return -(stats.binom.logpmf(s_control, n_control, rate_control)
                 + stats.binom.logpmf(s_treatment, n_treatment, rate_treatment))  # fmt: skip

    low, high = max(0.0, -null_difference) + 1e-12, min(1.0, 1 - null_difference) - 1e-12
    best = optimize.minimize_scalar(negative_log_likelihood, bounds=(low, high), method="bounded",
                                    options={"xatol": 1e-12})  # fmt: skip
    assert float(treatment) - float(control) == pytest.approx(null_difference)
    assert float(control) == pytest.approx(best.x, abs=1e-6)


def test_a_small_arm_with_almost_no_failures_does_not_promote():
    # GIVEN the minimal case: 0.97 in a control of 1,800, 199 of 200 in a challenger
    evidence = Evidence(ArmEvidence("control", 1800, 1800, 1746, 0, 100.0),
                        ArmEvidence("challenger", 200, 200, 199, 0, 100.0), 0.10, 7.0, 7)  # fmt: skip

    # WHEN deciding with the default policy
    decision = decide(evidence, Policy())

    # THEN no promotion: with each arm's own rate the variance was 4.1e-5 and p = 0.0016; under the null
    # (pooled) it is 1.5e-4, and the evidence is as weak as a one-sided Fisher exact test says (p = 0.020
    # on one look is no always-valid evidence at 0.05)
    fisher = stats.fisher_exact([[199, 1], [1746, 54]], alternative="greater").pvalue
    assert fisher == pytest.approx(0.020, abs=0.001)
    assert decision.action == "continue"
    assert decision.statistics["test"]["difference_variance"] == pytest.approx(0.9725 * 0.0275 * (1 / 1800 + 1 / 200))
    assert decision.statistics["test"]["always_valid_p_value_better"] > 0.1


# --- simulations ---


def test_aa_false_promotion_rate_is_at_most_alpha_with_hourly_looks():
    # GIVEN 2,000 A/A experiments (accuracy 0.80 in both arms), a 10 % canary, a look every hour for 14 days
    n_experiments = 2000

    # WHEN each one is decided every hour until it stops
    result = simulate_experiments(
        n_experiments,
        0.80,
        0.80,
        0.10,
        LABELLED_PER_HOUR,
        HOURS,
        CANARY_ONLY,
        np.random.default_rng(20240501),
    )

    # THEN the false promotion rate is at most alpha, with 95 % confidence (Wilson interval)
    promoted = int((result.action == "promote").sum())
    low, high = wilson_interval(promoted, n_experiments)
    summary = (
        f"A/A false promotion rate {promoted / n_experiments:.2%} (95% Wilson CI {low:.2%}-{high:.2%}) "
        f"over {n_experiments} experiments x {HOURS} hourly looks; false rejects {result.share('reject'):.2%}, "
        f"SRM halts {result.share('halt'):.2%}, inconclusive {result.share('inconclusive'):.2%}"
    )
    print(summary)
    assert high <= CANARY_ONLY.alpha, summary


def test_three_point_improvement_is_promoted_in_at_least_90_percent_of_runs():
    # GIVEN accuracy 0.80 -> 0.83 at a fixed 10 % canary (no ramp), 150 labelled per hour, 14 days at most
    n_experiments, control_rate, treatment_rate, share = 1000, 0.80, 0.83, 0.10

    # WHEN deciding every hour
    result = simulate_experiments(
        n_experiments,
        control_rate,
        treatment_rate,
        share,
        LABELLED_PER_HOUR,
        HOURS,
        CANARY_ONLY,
        np.random.default_rng(7),
    )

    # THEN at least 90 % are promoted, with a sample comparable to a fixed-horizon test at 90 % power
    promoted = result.action == "promote"
    low, high = wilson_interval(int(promoted.sum()), n_experiments)
    median_labelled = float(np.median(result.labelled_at_decision[promoted]))
    z = stats.norm.ppf(1 - CANARY_ONLY.alpha) + stats.norm.ppf(0.90)  # one-sided alpha, 90 % power
    fixed_horizon_labelled = math.ceil(
        z**2
        * (control_rate * (1 - control_rate) / (1 - share) + treatment_rate * (1 - treatment_rate) / share)
        / (treatment_rate - control_rate) ** 2
    )
    summary = (
        f"power {promoted.mean():.1%} (95% Wilson CI {low:.1%}-{high:.1%}); median labelled at promotion "
        f"{median_labelled:,.0f} (median {np.median(result.decision_hour[promoted]):.0f} h) vs fixed-horizon "
        f"{fixed_horizon_labelled:,} ({fixed_horizon_labelled / LABELLED_PER_HOUR:.0f} h); "
        f"90th percentile {np.percentile(result.labelled_at_decision[promoted], 90):,.0f}; "
        f"wrongly rejected {result.share('reject'):.1%}, SRM halts {result.share('halt'):.1%}"
    )
    print(summary)
    assert promoted.mean() >= 0.90, summary
    assert median_labelled <= 1.5 * fixed_horizon_labelled, summary


def test_aa_with_ramp_and_drifting_base_rate_stays_valid():
    # GIVEN A/A experiments ramping 10 % -> 25 % -> 50 % while accuracy drifts from 0.70 to 0.90 in both arms
    n_experiments = 2000
    drifting_rate = np.linspace(0.70, 0.90, HOURS)

    # WHEN deciding every hour (a pooled difference would see the later, better hours as a treatment effect)
    result = simulate_experiments(
        n_experiments,
        drifting_rate,
        drifting_rate,
        0.10,
        LABELLED_PER_HOUR,
        HOURS,
        POLICY,
        np.random.default_rng(11),
    )

    # THEN the within-step estimate keeps false promotions at most alpha
    promoted = int((result.action == "promote").sum())
    low, high = wilson_interval(promoted, n_experiments)
    summary = f"A/A with ramp and drift: false promotion rate {promoted / n_experiments:.2%} (95% Wilson CI {low:.2%}-{high:.2%})"
    print(summary)
    assert high <= POLICY.alpha, summary


def test_latency_breach_is_rejected_in_simulation():
    # GIVEN a challenger whose latency p95 is 1.5x the champion's
    result = simulate_experiments(
        500,
        0.80,
        0.80,
        0.10,
        LABELLED_PER_HOUR,
        HOURS,
        CANARY_ONLY,
        np.random.default_rng(3),
        latency_ratio=1.5,
    )

    # WHEN deciding every hour THEN nothing is promoted and the guardrail stops it once 200 units are measured
    guardrail = result.rule == "guardrail_breach"
    print(
        f"latency x1.5: rejected by the guardrail {guardrail.mean():.1%}, median hour {np.median(result.decision_hour[guardrail]):.0f}"
    )
    assert guardrail.mean() >= 0.98
    assert set(result.action) <= {"reject", "halt"}
    assert result.decision_hour[guardrail].max() <= 20  # 200 treatment units at 15 per hour: ~14 h


def test_observed_70_30_split_under_a_90_10_plan_halts():
    # GIVEN assignment that sends 30 % to the challenger although 10 % was planned
    result = simulate_experiments(
        500,
        0.80,
        0.80,
        0.10,
        LABELLED_PER_HOUR,
        HOURS,
        CANARY_ONLY,
        np.random.default_rng(5),
        assigned_treatment_share=0.30,
    )

    # WHEN deciding every hour THEN every experiment halts on SRM within the first looks
    assert set(result.rule) == {"sample_ratio_mismatch"}
    assert result.decision_hour.max() <= 3


# --- bandit allocation (Thompson sampling, epsilon-greedy) ---

THOMPSON = Policy(strategy="thompson")
EPSILON_GREEDY = Policy(strategy="epsilon_greedy")


def test_thompson_share_is_the_posterior_probability_that_the_treatment_is_better():
    # GIVEN Beta(1 + s, 1 + f) posteriors of two arms
    labelled_control, successes_control, labelled_treatment, successes_treatment = 400, 320, 100, 84

    # WHEN the bandit sets the share
    share, p_better = bandit_share(
        np.array(labelled_control), np.array(successes_control), np.array(labelled_treatment),
        np.array(successes_treatment), Policy(strategy="thompson", bandit_max_share=0.99),
    )  # fmt: skip

    # THEN it is P(p_t > p_c) under the posteriors, checked by numerical integration
    control = stats.beta(1 + successes_control, 1 + labelled_control - successes_control)
    treatment = stats.beta(1 + successes_treatment, 1 + labelled_treatment - successes_treatment)
    exact, _ = integrate.quad(lambda x: treatment.pdf(x) * control.cdf(x), 0, 1, points=[0.8, 0.84], limit=200)
    assert float(p_better) == pytest.approx(exact, abs=0.01)
    assert float(share) == pytest.approx(float(p_better))


def test_bandit_shares_are_clipped_and_epsilon_greedy_exploits_the_leader():
    labelled, winner, loser = np.array([1000, 1000]), np.array([900, 800]), np.array([800, 900])
    thompson, _ = bandit_share(labelled, loser, labelled, winner, THOMPSON)
    greedy, _ = bandit_share(labelled, loser, labelled, winner, EPSILON_GREEDY)
    # the treatment wins the first and loses the second: the shares hit the bounds
    assert thompson.tolist() == [THOMPSON.bandit_max_share, THOMPSON.bandit_min_share]
    assert greedy.tolist() == [0.90, 0.05]  # 1 - epsilon / 2 = 0.95 clipped to 0.90; epsilon / 2 = 0.05
    equal, p_better = bandit_share(labelled[:1], winner[:1], labelled[:1], winner[:1], THOMPSON)
    assert float(p_better) == pytest.approx(0.5) and float(equal) == pytest.approx(0.5)


def test_a_bandit_reallocates_only_after_guardrails_and_labels_at_the_current_allocation():
    # GIVEN a Thompson experiment at 10 % whose treatment clearly leads
    policy = Policy(strategy="thompson", alpha=1e-9)  # no test conclusion here
    leading = look(arm("champion", 1800, 0.80), arm("challenger", 200, 0.88))
    too_early = look(arm("champion", 900, 0.80), arm("challenger", 100, 0.88))

    # WHEN deciding
    decision = decide(leading, policy)
    waiting = decide(too_early, policy)

    # THEN the allocation follows the posterior; with 100 treatment units it waits
    assert decision.action == "reallocate", decision.reason
    p_better = decision.statistics["allocation"]["posterior_p_treatment_better"]
    assert p_better > 0.99 and decision.next_allocation == policy.bandit_max_share
    assert "Thompson sampling" in decision.reason and "90%" in decision.reason
    assert waiting.action == "continue" and waiting.next_allocation == 0.10


def test_a_small_share_change_keeps_the_allocation_but_closes_the_period():
    # GIVEN a Thompson experiment at 50 % whose posterior says 52 %
    policy = Policy(strategy="thompson", alpha=1e-9)
    evidence = look(arm("champion", 1000, 0.80), arm("challenger", 1000, 0.801), treatment_share=0.50)

    # WHEN deciding THEN a new period starts at the same share (periods end on counts, never on outcomes)
    decision = decide(evidence, policy)
    assert decision.action == "reallocate" and decision.next_allocation == 0.50
    assert decision.statistics["allocation"]["target_share"] == 0.50
    assert decision.reason.startswith("New allocation period, still at 50%")


def test_steps_are_weighted_by_their_pooled_variance():
    # GIVEN two steps whose small arms did differently well
    labelled_control, successes_control = np.array([[900, 100]]), np.array([[720, 80]])
    labelled_treatment, successes_treatment = np.array([[100, 900]]), np.array([[90, 720]])

    # WHEN combining them
    difference, variance = difference_in_rates(labelled_control, successes_control, labelled_treatment, successes_treatment)

    # THEN each step's weight is 1 / (p (1 - p) (1 / n_c + 1 / n_t)) with p its pooled rate
    pooled = np.array([810 / 1000, 800 / 1000])
    weight = 1 / (pooled * (1 - pooled) * np.array([1 / 900 + 1 / 100, 1 / 100 + 1 / 900]))
    steps = np.array([0.90 - 0.80, 0.80 - 0.80])
    assert float(difference) == pytest.approx((weight * steps).sum() / weight.sum())
    # and the variance under the null is that of the weighted mean of independent steps: 1 / sum of weights
    assert float(variance) == pytest.approx(1 / weight.sum())


@pytest.mark.parametrize("policy", [THOMPSON, EPSILON_GREEDY], ids=["thompson", "epsilon_greedy"])
def test_aa_false_promotion_rate_is_at_most_alpha_with_a_bandit(policy):
    # GIVEN 1,000 A/A experiments starting at 10 %, the bandit reallocating after every period, hourly looks
    n_experiments = 1000

    # WHEN each one is decided every hour until it stops
    result = simulate_experiments(
        n_experiments, 0.80, 0.80, 0.10, LABELLED_PER_HOUR, HOURS, policy, np.random.default_rng(29)
    )

    # THEN the allocation really moved, and false promotions stay at most alpha (95 % Wilson interval)
    promoted = int((result.action == "promote").sum())
    low, high = wilson_interval(promoted, n_experiments)
    summary = (
        f"A/A {policy.strategy}: false promotion rate {promoted / n_experiments:.2%} (95% Wilson CI {low:.2%}-{high:.2%}), "
        f"median allocation periods {np.median(result.allocation_changes):.0f}, SRM halts {result.share('halt'):.2%}"
    )
    print(summary)
    assert np.median(result.allocation_changes) >= 5
    assert high <= policy.alpha, summary


def test_three_point_improvement_is_promoted_with_thompson_sampling():
    # GIVEN accuracy 0.80 -> 0.83, Thompson sampling from 10 %
    result = simulate_experiments(1000, 0.80, 0.83, 0.10, LABELLED_PER_HOUR, HOURS, THOMPSON, np.random.default_rng(31))

    # THEN at least 90 % are promoted, and the treatment received most of the traffic on the way
    promoted = result.action == "promote"
    treatment_share = result.treatment_labelled_at_decision[promoted] / result.labelled_at_decision[promoted]
    print(
        f"thompson 0.80 -> 0.83: power {promoted.mean():.1%}, median labelled at promotion "
        f"{np.median(result.labelled_at_decision[promoted]):,.0f}, median treatment share {np.median(treatment_share):.0%}"
    )
    assert promoted.mean() >= 0.90
    assert np.median(treatment_share) > 0.5


# --- the watch after a promotion ---

WATCH = WatchPolicy()


def watch_look(during: ArmEvidence, after: ArmEvidence, **fields) -> WatchEvidence:
    return WatchEvidence(during, after, **({"hours_elapsed": 12.0, "look": 12} | fields))


def test_a_new_champion_that_degrades_beyond_the_margin_is_rolled_back():
    # GIVEN 0.90 in its experiment (3,000 labelled) and 0.80 on 2,000 labelled since the promotion
    decision = decide_watch(watch_look(arm("during", 3000, 0.90), arm("after", 2000, 0.80)), WATCH)

    # THEN it is rolled back, the reason and the numbers say why
    assert (decision.action, decision.next_allocation) == ("rollback", 0.0)
    assert decision.statistics["rule"] == "degraded"
    assert decision.statistics["test"]["difference"] == pytest.approx(-0.10)
    assert decision.state.p_value_worse <= WATCH.alpha
    assert "0.8000" in decision.reason and "0.9000" in decision.reason and "0.03" in decision.reason


def test_a_drop_within_the_margin_is_kept_watching_then_kept():
    during, after = arm("during", 3000, 0.90), arm("after", 2000, 0.89)
    watching = decide_watch(watch_look(during, after), WATCH)
    ended = decide_watch(watch_look(during, after, hours_elapsed=WATCH.window_hours), WATCH)
    assert (watching.action, watching.next_allocation) == ("continue", 1.0)
    assert ended.action == "keep" and "watch window passed" in ended.reason


def test_a_latency_regression_after_promotion_rolls_back():
    decision = decide_watch(
        watch_look(arm("during", 3000, 0.90, latency_p95_ms=20.0), arm("after", 500, 0.90, latency_p95_ms=40.0)), WATCH
    )
    assert decision.action == "rollback" and decision.statistics["rule"] == "guardrail_breach"
    assert "40.0 ms" in decision.reason and "2.00" in decision.reason


def test_a_healthy_champion_with_sub_millisecond_latency_noise_is_kept_watching():
    # GIVEN the loaded-machine case: p95 0.5 ms in the experiment, 0.9 ms since the promotion (ratio 1.8)
    decision = decide_watch(
        watch_look(arm("during", 3000, 0.90, latency_p95_ms=0.5), arm("after", 600, 0.90, latency_p95_ms=0.9)), WATCH
    )

    # THEN no rollback: 0.4 ms is scheduling noise, not a regression
    assert decision.action == "continue", decision.reason
    assert decision.statistics["guardrails"]["latency_breached"] is False


def test_too_few_labels_after_promotion_do_not_count():
    decision = decide_watch(watch_look(arm("during", 3000, 0.90), arm("after", 100, 0.50)), WATCH)
    assert decision.action == "continue" and decision.statistics["test"]["enough_labels"] is False


def test_watch_false_rollbacks_at_the_margin_are_at_most_alpha_and_real_drops_roll_back():
    # GIVEN 2,000 watches of 72 h, 150 labels an hour, 3,000 labels at 0.80 in the experiment
    rng = np.random.default_rng(41)

    # WHEN the champion keeps its rate, drops by exactly the margin, or drops by 8 points
    same = simulate_watches(2000, 0.80, 0.80, 3000, LABELLED_PER_HOUR, WATCH, rng)
    at_margin = simulate_watches(2000, 0.80, 0.80 - WATCH.max_success_rate_drop, 3000, LABELLED_PER_HOUR, WATCH, rng)
    dropped = simulate_watches(2000, 0.80, 0.72, 3000, LABELLED_PER_HOUR, WATCH, rng)

    # THEN rollbacks of a champion that did not degrade beyond the margin are at most alpha, real ones happen
    low, high = wilson_interval(int((at_margin.action == "rollback").sum()), 2000)
    summary = (
        f"watch: rollbacks with no drop {same.share('rollback'):.2%}, at the margin {at_margin.share('rollback'):.2%} "
        f"(95% Wilson CI {low:.2%}-{high:.2%}), after an 8-point drop {dropped.share('rollback'):.1%} "
        f"(median hour {np.median(dropped.decision_hour[dropped.action == 'rollback']):.0f})"
    )
    print(summary)
    assert same.share("rollback") <= 0.01 and high <= WATCH.alpha, summary
    assert dropped.share("rollback") >= 0.90, summary


# --- bad input ---


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ArmEvidence("control", 100, 50, 40, 0, float("nan")), "latency_p95_ms must be a finite number"),
        (lambda: ArmEvidence("control", 100, 50, 40, 0, -1.0), "latency_p95_ms must be >= 0"),
        (lambda: ArmEvidence("control", 100, 50, 60, 0, 10.0), "successes <= n_labelled"),
        (lambda: ArmEvidence("control", 100.5, 50, 40, 0, 10.0), "n_assigned must be a whole number"),
        (lambda: ArmEvidence("control", 100, 50, 40, 101, 10.0), "n_errors must be in"),
        (lambda: look(arm("c", 900, 0.8), arm("t", 100, 0.8), hours_elapsed=float("nan")), "hours_elapsed must be a finite"),
        (lambda: look(arm("c", 900, 0.8), arm("t", 100, 0.8), treatment_share=float("nan")), "treatment_share must be a finite"),
        (lambda: look(arm("c", 900, 0.8), arm("t", 100, 0.8), previous=SequentialState(p_value_better=float("nan"))),
         "p_value_better must be a finite"),
        (lambda: Policy(max_duration_hours=float("nan")), "max_duration_hours must be a finite"),
        (lambda: Policy(max_error_rate_increase=float("nan")), "max_error_rate_increase must be a finite"),
        (lambda: Policy(min_labelled_per_arm=-5), "min_labelled_per_arm must be a whole number >= 0"),
        (lambda: WatchPolicy(window_hours=float("nan")), "window_hours must be a finite"),
    ],
)
def test_bad_evidence_and_policies_are_refused_with_the_field(build, message):
    # GIVEN a NaN, a negative or an impossible count WHEN building the evidence or policy THEN a clear error
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("missing", ["control", "challenger"])
def test_a_missing_latency_neither_rejects_nor_passes_and_blocks_promotion(missing):
    # GIVEN a clear win, but one arm's latency was not measured
    def with_latency(name: str, n: int, rate: float) -> ArmEvidence:
        return ArmEvidence(name, n, n, round(n * rate), 0, None if name == missing else 20.0)

    evidence = look(with_latency("control", 9000, 0.80), with_latency("challenger", 1000, 0.85))

    # WHEN deciding
    decision = decide(evidence, CANARY_ONLY)

    # THEN no guardrail reject (a missing control latency used to be a p95 of 1e-9 ms: a certain breach) and
    # no silent pass: the decision waits and says which latency is missing
    assert decision.action == "continue"
    assert decision.statistics["guardrails"]["latency_measured"] is False
    assert f"latency not measured in {missing}" in decision.reason


def test_an_arm_without_traffic_has_no_latency():
    # GIVEN an arm nobody was assigned to WHEN building it as gather_evidence does THEN nothing stands in
    empty = ArmEvidence("challenger", 0, 0, 0, 0)
    assert empty.latency_p95_ms is None and empty.error_rate == 0.0 and empty.n_predictions == 0


@pytest.mark.parametrize(
    ("plan", "cumulative", "savvi_log_odds"),
    [
        (0.10, [(21, 9)], [1.0683154487667963]),
        (0.10, [(270, 30), (530, 70), (780, 120)], [-0.6994638974825874, -0.2767869577699853, 3.339710841527676]),
        (0.50, [(60, 40), (115, 85)], [0.6588918180465697, 0.9565736741950133]),
    ],
)
def test_srm_bayes_factor_matches_savvi(plan, cumulative, savvi_log_odds):
    # GIVEN cumulative (control, treatment) counts, and the log odds savvi 0.3.1 gives on the same inputs:
    # savvi.multinomial.Multinomial(0.05, np.array([1 - plan, plan]), k=100), updated with each look's new
    # counts (run outside the project: savvi needs cvxpy and matplotlib)
    # WHEN computing our Bayes factor at each look THEN it is savvi's
    for (control, treatment), expected in zip(cumulative, savvi_log_odds, strict=True):
        ours = srm_log_bayes_factor(np.array([control]), np.array([treatment]), np.array([plan]), 100.0)
        assert float(ours) == pytest.approx(expected, rel=1e-9)


# --- the business outcome as the primary metric (promotion.online.metric) ---


def outcome_arm(name: str, values: np.ndarray, *, latency_p95_ms: float = 100.0) -> ArmEvidence:
    """An arm whose every unit was served once, labelled, and has the given outcome."""
    n = len(values)
    log_mean = math.log(latency_p95_ms) - stats.norm.ppf(0.95) * LATENCY_SIGMA
    return ArmEvidence(name, n, n, 0, 0, latency_p95_ms, n, log_mean, LATENCY_SIGMA**2, n_outcomes=n,
                       outcome_positive=int(np.sum(values > 0)), outcome_sum=float(np.sum(values)),
                       outcome_sum_squares=float(np.sum(values**2)))  # fmt: skip


@pytest.mark.parametrize(("control_sigma", "treatment_sigma"), [(1.0, 1.0), (0.5, 1.5), (1.5, 0.3)])
def test_difference_in_means_is_scipys_with_the_larger_of_the_pooled_and_the_welch_variance(control_sigma, treatment_sigma):
    # GIVEN two samples of a revenue-like (lognormal) outcome, 900 control and 100 treatment
    rng = np.random.default_rng(7)
    control, treatment = rng.lognormal(2.5, control_sigma, 900), rng.lognormal(2.6, treatment_sigma, 100)

    # WHEN the decision's difference of means is computed from the sufficient statistics
    difference, variance = difference_in_means(
        np.array([900]), np.array([control.sum()]), np.array([np.sum(control**2)]),
        np.array([100]), np.array([treatment.sum()]), np.array([np.sum(treatment**2)]),
    )  # fmt: skip

    # THEN the difference is the means', and the variance the larger of Welch's (scipy's unequal-variance
    # t statistic: difference / sqrt(variance)) and the pooled one under the null (both samples about their
    # common mean)
    welch = stats.ttest_ind(treatment, control, equal_var=False)
    welch_variance = ((treatment.mean() - control.mean()) / welch.statistic) ** 2
    pooled_variance = np.var(np.concatenate([control, treatment]), ddof=1) * (1 / 900 + 1 / 100)
    assert float(difference) == pytest.approx(treatment.mean() - control.mean(), rel=1e-12)
    assert float(variance) == pytest.approx(max(welch_variance, pooled_variance), rel=1e-9)


def test_difference_in_means_ignores_a_step_without_variance_and_weights_the_others_by_the_pooled_one():
    # GIVEN two steps: the first every value 5.0 in both arms (no variance), the second a real sample
    rng = np.random.default_rng(8)
    control, treatment = rng.normal(10, 2, 300), rng.normal(11, 2, 200)
    n_c, sums_c, squares_c = np.array([[50, 300]]), np.array([[250.0, control.sum()]]), np.array([[1250.0, np.sum(control**2)]])
    n_t, sums_t, squares_t = np.array([[50, 200]]), np.array([[250.0, treatment.sum()]]), np.array([[1250.0, np.sum(treatment**2)]])

    # WHEN combining THEN only the second step counts
    difference, variance = difference_in_means(n_c, sums_c, squares_c, n_t, sums_t, squares_t)
    alone, alone_variance = difference_in_means(n_c[:, 1:], sums_c[:, 1:], squares_c[:, 1:], n_t[:, 1:], sums_t[:, 1:],
                                                squares_t[:, 1:])  # fmt: skip
    assert float(difference) == pytest.approx(float(alone)) and float(variance) == pytest.approx(float(alone_variance))


def test_outcome_rate_is_decided_as_accuracy_is_on_the_same_counts():
    # GIVEN the same 0/1 counts once as correct predictions, once as conversions (outcome > 0)
    def as_conversions(arm_: ArmEvidence) -> ArmEvidence:
        values = np.r_[np.ones(arm_.successes), np.zeros(arm_.n_labelled - arm_.successes)]
        return outcome_arm(arm_.name, values)

    control, treatment = arm("control", 9000, 0.050), arm("challenger", 1000, 0.068)
    accuracy = decide(look(control, treatment), POLICY)
    conversion = decide(look(as_conversions(control), as_conversions(treatment)), Policy(metric="outcome_rate"))

    # THEN the test's numbers are the same, and the reason names the conversion rates
    for key in ("difference", "difference_variance", "always_valid_p_value_better"):
        assert conversion.statistics["test"][key] == pytest.approx(accuracy.statistics["test"][key]), key
    assert conversion.action == accuracy.action
    assert "conversion 6.80% vs 5.00%" in conversion.reason and "1,000 and 9,000 with an outcome" in conversion.reason


def test_outcome_mean_promotes_a_higher_mean_and_names_the_means():
    # GIVEN revenue-like outcomes, the treatment's mean 30 % higher, 9,000 vs 1,000 units
    rng = np.random.default_rng(9)
    control = outcome_arm("control", rng.lognormal(math.log(20) - 0.5, 1.0, 9000))
    treatment = outcome_arm("challenger", rng.lognormal(math.log(26) - 0.5, 1.0, 1000))

    # WHEN deciding on the mean outcome (tau in the outcome's units)
    decision = decide(look(control, treatment), Policy(metric="outcome_mean", mixing_sd=2.0))

    # THEN it is promoted; the reason and the statistics carry both means
    metric = decision.statistics["metric"]
    assert decision.action == "promote", decision.reason
    assert metric["name"] == "outcome_mean" and metric["treatment"]["n"] == 1000
    assert metric["treatment"]["value"] == pytest.approx(treatment.outcome_sum / 1000)
    assert f"mean outcome {metric['treatment']['value']:.4g} vs {metric['control']['value']:.4g}" in decision.reason
    # and on accuracy the same evidence (no successes anywhere) concludes nothing
    assert decide(look(control, treatment), CANARY_ONLY).action == "continue"


def test_outcome_metrics_wait_for_outcomes_not_labels():
    # GIVEN every unit labelled but only 150 outcomes in the treatment
    values = np.ones(150)
    treatment = dataclasses.replace(arm("challenger", 1000, 0.8), n_outcomes=150, outcome_positive=150,
                                    outcome_sum=150.0, outcome_sum_squares=150.0)  # fmt: skip
    control = outcome_arm("control", np.r_[values, np.zeros(8850)])

    # WHEN deciding on the conversion rate THEN it waits for outcomes, with the counts
    decision = decide(look(control, treatment), Policy(metric="outcome_rate", ramp_steps=(0.10,)))
    assert decision.action == "continue" and "waiting for outcomes" in decision.reason and "150 in treatment" in decision.reason


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ArmEvidence("c", 10, 10, 5, 0, n_outcomes=11), "outcome_positive <= n_outcomes <= n_predictions"),
        (lambda: ArmEvidence("c", 10, 10, 5, 0, n_outcomes=4, outcome_positive=5), "outcome_positive <= n_outcomes"),
        (lambda: ArmEvidence("c", 10, 10, 5, 0, n_outcomes=2, outcome_sum=10.0, outcome_sum_squares=1.0),
         "outcome_sum^2 must be <= n_outcomes x outcome_sum_squares"),
        (lambda: ArmEvidence("c", 10, 10, 5, 0, n_outcomes=2, outcome_sum=float("nan")), "outcome_sum must be a finite number"),
        (lambda: Policy(metric="revenue"), "metric must be one of accuracy, outcome_rate, outcome_mean"),
    ],
)
def test_bad_outcome_evidence_is_refused_with_the_field(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
