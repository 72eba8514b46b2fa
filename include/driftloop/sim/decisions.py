"""Simulations of the decision: many experiments (and watch windows) looked at every hour with the
rules of :func:`driftloop.promote.decision.decide` (and ``decide_watch``), vectorised over experiments.
The unit tests use them to measure false promotions, power, rollbacks and SRM halts; they share the
decision's own evaluation code (``_evaluate_looks``, ``_evaluate_watch``), so what they measure is what
the promote DAG does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from driftloop.promote.decision import (
    _NO_CONCLUSION,
    RULE_NAMES,
    RULES,
    WATCH_RULE_NAMES,
    WATCH_RULES,
    Action,
    Policy,
    WatchPolicy,
    _evaluate_looks,
    _evaluate_watch,
    _GuardrailCounts,
    _StepCounts,
)


def simulate_watches(
    n_watches: int,
    during_rate: float,
    after_rate: float | np.ndarray,
    during_labelled: int,
    labelled_per_hour: int,
    policy: WatchPolicy,
    rng: np.random.Generator,
) -> SimulationResult:
    """Many watch windows, looked at every hour with the rules of ``decide_watch`` (guardrails pass).
    The experiment gave ``during_labelled`` labels at ``during_rate``; afterwards ``labelled_per_hour``
    arrive at ``after_rate`` (a number or one value per hour)."""
    hours = max(1, math.ceil(policy.window_hours))
    after_rates = np.broadcast_to(np.asarray(after_rate, dtype=float), (hours,))
    successes_during = rng.binomial(during_labelled, during_rate, size=n_watches).astype(float)
    labelled_during = np.full(n_watches, float(during_labelled))
    labelled_after, successes_after = np.zeros(n_watches), np.zeros(n_watches)
    p_value = np.ones(n_watches)
    rule = np.full(n_watches, len(WATCH_RULES) - 1)
    decision_hour = np.full(n_watches, hours)
    decided = np.zeros(n_watches, dtype=bool)
    for hour in range(1, hours + 1):
        live = np.flatnonzero(~decided)
        if live.size == 0:
            break
        labelled_after[live] += labelled_per_hour
        successes_after[live] += rng.binomial(labelled_per_hour, after_rates[hour - 1], size=live.size)
        looked, p_value[live], _, _ = _evaluate_watch(
            labelled_during[live], successes_during[live], labelled_after[live], successes_after[live],
            guardrail_breach=np.zeros(live.size, dtype=bool), hours_elapsed=hour, previous_p_value=p_value[live],
            policy=policy,
        )  # fmt: skip
        final = looked != len(WATCH_RULES) - 1
        rule[live[final]] = looked[final]
        decision_hour[live[final]] = hour
        decided[live[final]] = True
    actions = np.array([action for _, action in WATCH_RULES])
    after = labelled_after.astype(int)
    return SimulationResult(
        rule=np.array(WATCH_RULE_NAMES)[rule],
        action=actions[rule],
        decision_hour=decision_hour,
        labelled_at_decision=after,
        treatment_labelled_at_decision=after,
        allocation_changes=np.zeros(n_watches, dtype=int),
    )


@dataclass(frozen=True)
class SimulationResult:
    """One entry per simulated experiment; ``rule`` is "no_conclusion_yet" when the horizon ended first."""

    rule: np.ndarray
    action: np.ndarray
    decision_hour: np.ndarray
    labelled_at_decision: np.ndarray
    treatment_labelled_at_decision: np.ndarray
    allocation_changes: np.ndarray  # ramps or reallocations before the decision

    def share(self, action: Action) -> float:
        return float(np.mean(self.action == action))


@dataclass
class _ArmMoments:
    """Per experiment (rows) and allocation step (columns): one arm's predictions, errors and the running
    mean and sum of squared deviations of ln(latency)."""

    predictions: np.ndarray
    errors: np.ndarray
    log_mean: np.ndarray
    log_m2: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> _ArmMoments:
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape))

    def add(self, rows: np.ndarray, steps: np.ndarray, n_new: np.ndarray, error_rate: float, log_median: float,
            sigma: float, rng: np.random.Generator) -> None:  # fmt: skip
        """``n_new`` predictions per row: errors, and ln(latency) ~ N(log_median, sigma^2) drawn through
        its sufficient statistics (the hour's mean and sum of squares), merged in (Chan et al.)."""
        n_new = np.asarray(n_new, dtype=float)
        self.errors[rows, steps] += rng.binomial(n_new.astype(int), error_rate)
        safe = np.maximum(n_new, 1.0)
        hour_mean = log_median + sigma * rng.standard_normal(n_new.shape) / np.sqrt(safe)
        hour_m2 = sigma**2 * rng.chisquare(np.maximum(n_new - 1, 1.0)) * (n_new > 1)
        n_old = self.predictions[rows, steps]
        total = n_old + n_new
        delta = hour_mean - self.log_mean[rows, steps]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_mean[rows, steps] = np.where(total > 0, self.log_mean[rows, steps] + delta * n_new / total, 0.0)
            self.log_m2[rows, steps] += np.where(total > 0, hour_m2 + delta**2 * n_old * n_new / total, 0.0)
        self.predictions[rows, steps] = total

    def variance(self, rows: np.ndarray) -> np.ndarray:
        n = self.predictions[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 1, self.log_m2[rows] / (n - 1), np.nan)

    def mean(self, rows: np.ndarray) -> np.ndarray:
        return np.where(self.predictions[rows] > 0, self.log_mean[rows], np.nan)

    def p95_ms(self, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """The lognormal p95 from the step's moments (the warehouse takes the empirical one)."""
        n = self.predictions[rows, steps]
        with np.errstate(divide="ignore", invalid="ignore"):
            sd = np.sqrt(np.where(n > 1, self.log_m2[rows, steps] / (n - 1), 0.0))
        return np.exp(self.log_mean[rows, steps] + stats.norm.ppf(0.95) * sd)


def simulate_experiments(
    n_experiments: int,
    control_rate: float | np.ndarray,
    treatment_rate: float | np.ndarray,
    allocation: float,
    labelled_per_hour: int,
    hours: int,
    policy: Policy,
    rng: np.random.Generator,
    *,
    assigned_treatment_share: float | None = None,
    latency_ratio: float = 1.0,
    control_latency_median_ms: float = 20.0,
    latency_sigma: float = 0.5,
    control_error_rate: float = 0.0,
    treatment_error_rate: float | None = None,
) -> SimulationResult:
    """Run many experiments hour by hour, deciding after every hour with the rules of ``decide``.

    Each hour ``labelled_per_hour`` units arrive, all labelled (label delay is not modelled), and go to the
    treatment with probability ``assigned_treatment_share`` (default: the planned allocation; set it to
    simulate broken assignment). Each unit makes one prediction: it fails with the arm's error rate, and
    its latency is lognormal (median ``control_latency_median_ms``, times ``latency_ratio`` in the
    treatment; ``latency_sigma`` the sd of ln(latency), 0.5 a realistic spread: p95 = 2.3 x the median).
    Rates are a number or one value per hour (drift). A canary ramps along ``policy.ramp_steps`` from
    ``allocation`` (an allocation off the ramp stays fixed); a bandit starts at ``allocation`` and
    reallocates as ``decide`` would.
    """
    control_rates = np.broadcast_to(np.asarray(control_rate, dtype=float), (hours,))
    treatment_rates = np.broadcast_to(np.asarray(treatment_rate, dtype=float), (hours,))
    treatment_error_rate = control_error_rate if treatment_error_rate is None else treatment_error_rate
    if policy.is_bandit:
        # every allocation is held until each arm has min_assigned_for_guardrails units: a bound on the steps
        # (and a look closes at most one)
        n_steps = min(hours * labelled_per_hour // (2 * policy.min_assigned_for_guardrails), hours) + 2
        step_share = np.zeros((n_experiments, n_steps))
        step_share[:, 0] = allocation
    else:
        shares = [allocation]
        while (next_share := policy.next_ramp_share(shares[-1])) is not None:
            shares.append(next_share)
        n_steps = len(shares)
        step_share = np.tile(np.array(shares), (n_experiments, 1))

    def zeros() -> np.ndarray:
        return np.zeros((n_experiments, n_steps))

    assigned_control, assigned_treatment, successes_control, successes_treatment = (
        zeros(),
        zeros(),
        zeros(),
        zeros(),
    )
    control_arm, treatment_arm = _ArmMoments.zeros((n_experiments, n_steps)), _ArmMoments.zeros((n_experiments, n_steps))
    control_log_median = math.log(control_latency_median_ms)
    treatment_log_median = control_log_median + math.log(latency_ratio)
    step = np.zeros(n_experiments, dtype=int)
    p_values = {name: np.ones(n_experiments) for name in ("better", "worse", "futility", "error_rate", "latency", "srm")}
    rule = np.full(n_experiments, _NO_CONCLUSION)
    decision_hour = np.full(n_experiments, hours)
    decided = np.zeros(n_experiments, dtype=bool)
    ramp_rule, reallocate_rule = RULE_NAMES.index("ramp"), RULE_NAMES.index("reallocate")

    for hour in range(1, hours + 1):
        live = np.flatnonzero(~decided)
        if live.size == 0:
            break
        live_step = step[live]
        planned_share = step_share[live, live_step]
        true_share = planned_share if assigned_treatment_share is None else assigned_treatment_share
        new_treatment = rng.binomial(labelled_per_hour, true_share)
        new_control = labelled_per_hour - new_treatment
        assigned_treatment[live, live_step] += new_treatment
        assigned_control[live, live_step] += new_control
        successes_treatment[live, live_step] += rng.binomial(new_treatment, treatment_rates[hour - 1])
        successes_control[live, live_step] += rng.binomial(new_control, control_rates[hour - 1])
        control_arm.add(live, live_step, new_control, control_error_rate, control_log_median, latency_sigma, rng)
        treatment_arm.add(live, live_step, new_treatment, treatment_error_rate, treatment_log_median, latency_sigma, rng)

        counts = _StepCounts(
            treatment_share=step_share[live],
            assigned_control=assigned_control[live],
            assigned_treatment=assigned_treatment[live],
            labelled_control=assigned_control[live],
            labelled_treatment=assigned_treatment[live],
            successes_control=successes_control[live],
            successes_treatment=successes_treatment[live],
            guardrails=_GuardrailCounts(
                predictions_control=control_arm.predictions[live],
                predictions_treatment=treatment_arm.predictions[live],
                errors_control=control_arm.errors[live],
                errors_treatment=treatment_arm.errors[live],
                log_latency_mean_control=control_arm.mean(live),
                log_latency_variance_control=control_arm.variance(live),
                log_latency_mean_treatment=treatment_arm.mean(live),
                log_latency_variance_treatment=treatment_arm.variance(live),
            ),
        )
        p95_increase = treatment_arm.p95_ms(live, live_step) - control_arm.p95_ms(live, live_step)
        looks = _evaluate_looks(
            counts,
            guardrails_measured=np.minimum(
                assigned_control[live, live_step], assigned_treatment[live, live_step]
            )
            >= policy.min_assigned_for_guardrails,
            latency_over_tolerance=p95_increase > policy.latency_p95_tolerance_ms,
            treatment_assigned_at_step=assigned_treatment[live, live_step],
            current_share=planned_share,
            can_change_allocation=live_step < n_steps - 1,
            hours_elapsed=hour,
            previous_p_value_better=p_values["better"][live],
            previous_p_value_worse=p_values["worse"][live],
            previous_p_value_futility=p_values["futility"][live],
            previous_p_value_error_rate=p_values["error_rate"][live],
            previous_p_value_latency=p_values["latency"][live],
            previous_p_value_srm=p_values["srm"][live],
            policy=policy,
        )
        p_values["better"][live], p_values["worse"][live], p_values["futility"][live] = (
            looks.p_value_better,
            looks.p_value_worse,
            looks.p_value_futility,
        )
        p_values["error_rate"][live] = looks.guardrails.p_value_error_rate
        p_values["latency"][live] = looks.guardrails.p_value_latency
        p_values["srm"][live] = looks.p_value_srm
        reallocated = looks.rule == reallocate_rule
        step_share[live[reallocated], live_step[reallocated] + 1] = looks.target_share[reallocated]
        moved = reallocated | (looks.rule == ramp_rule)
        step[live[moved]] += 1
        final = ~moved & (looks.rule != _NO_CONCLUSION)
        rule[live[final]] = looks.rule[final]
        decision_hour[live[final]] = hour
        decided[live[final]] = True

    labelled_treatment = assigned_treatment.sum(axis=1).astype(int)
    actions = np.array([action for _, action in RULES])
    return SimulationResult(
        rule=np.array(RULE_NAMES)[rule],
        action=actions[rule],
        decision_hour=decision_hour,
        labelled_at_decision=labelled_treatment + assigned_control.sum(axis=1).astype(int),
        treatment_labelled_at_decision=labelled_treatment,
        allocation_changes=step,
    )
