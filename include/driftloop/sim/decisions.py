"""Simulations of the decision: many experiments (and watch windows) looked at every hour with the
rules of :func:`driftloop.promote.decision.decide` (and ``decide_watch``), vectorised over experiments.
The unit tests use them to measure false promotions, power, rollbacks and SRM halts; they share the
decision's own evaluation code (``_evaluate_looks``, ``_evaluate_watch``), so what they measure is what
the promote DAG does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
    _StepCounts,
    latency_breach,
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
    latency_p95_ratio: float = 1.0,
    control_latency_p95_ms: float = 20.0,
) -> SimulationResult:
    """Run many experiments hour by hour, deciding after every hour with the rules of ``decide``.

    Each hour ``labelled_per_hour`` units arrive, all labelled (label delay is not modelled), and go to the
    treatment with probability ``assigned_treatment_share`` (default: the planned allocation; set it to
    simulate broken assignment). Rates are a number or one value per hour (drift). A canary ramps along
    ``policy.ramp_steps`` from ``allocation`` (an allocation off the ramp stays fixed); a bandit starts at
    ``allocation`` and reallocates as ``decide`` would.
    """
    control_rates = np.broadcast_to(np.asarray(control_rate, dtype=float), (hours,))
    treatment_rates = np.broadcast_to(np.asarray(treatment_rate, dtype=float), (hours,))
    if policy.is_bandit:
        # every allocation is held until each arm has min_assigned_for_guardrails units: a bound on the steps
        n_steps = hours * labelled_per_hour // (2 * policy.min_assigned_for_guardrails) + 2
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
    step = np.zeros(n_experiments, dtype=int)
    p_value_better, p_value_worse, p_value_futility = (np.ones(n_experiments) for _ in range(3))
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

        counts = _StepCounts(
            treatment_share=step_share[live],
            assigned_control=assigned_control[live],
            assigned_treatment=assigned_treatment[live],
            labelled_control=assigned_control[live],
            labelled_treatment=assigned_treatment[live],
            successes_control=successes_control[live],
            successes_treatment=successes_treatment[live],
        )
        looks = _evaluate_looks(
            counts,
            guardrails_measured=np.minimum(
                assigned_control[live, live_step], assigned_treatment[live, live_step]
            )
            >= policy.min_assigned_for_guardrails,
            latency_breached=np.full(live.size, bool(latency_breach(
                latency_p95_ratio * control_latency_p95_ms, control_latency_p95_ms,
                policy.max_latency_p95_ratio, policy.latency_p95_tolerance_ms))),  # fmt: skip
            error_rate_increase=np.zeros(live.size),
            treatment_assigned_at_step=assigned_treatment[live, live_step],
            current_share=planned_share,
            can_change_allocation=live_step < n_steps - 1,
            hours_elapsed=hour,
            previous_p_value_better=p_value_better[live],
            previous_p_value_worse=p_value_worse[live],
            previous_p_value_futility=p_value_futility[live],
            policy=policy,
        )
        p_value_better[live], p_value_worse[live], p_value_futility[live] = (
            looks.p_value_better,
            looks.p_value_worse,
            looks.p_value_futility,
        )
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
