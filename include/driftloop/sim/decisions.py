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


@dataclass(frozen=True)
class LabelDelay:
    """When labels (and outcomes) arrive: a unit served at a uniform time within its hour gets its label
    after a lognormal delay (median ``median_hours``, ``sigma`` the sd of ln(delay)), or never (a share
    ``never``); a label later than ``max_hours`` is taken as never (a lognormal with median 4 h and sigma
    1 passes 72 h 0.2 % of the time)."""

    median_hours: float = 4.0
    sigma: float = 1.0
    never: float = 0.10
    max_hours: int = 72

    def arrival_hazards(self) -> np.ndarray:
        """P(the label arrives before the look ``k`` hours after its unit's hour | it has not arrived
        before, and it will arrive), for k = 0 .. max_hours - 1 (k = 0: the look closing its own hour)."""
        offsets = (np.arange(200) + 0.5) / 200  # the time from serving to the end of its hour, uniform
        ages = np.arange(self.max_hours)[:, None] + offsets[None, :]
        cdf = stats.lognorm.cdf(ages, s=self.sigma, scale=self.median_hours).mean(axis=1)
        cdf /= cdf[-1]  # labels that will arrive do so within max_hours
        in_bin = np.diff(np.r_[0.0, cdf])
        survivor = 1.0 - np.r_[0.0, cdf[:-1]]
        return np.where(survivor > 0, in_bin / np.where(survivor > 0, survivor, 1.0), 1.0)


class _Labels:
    """Labels on their way, per experiment and serving hour (a ring of ``max_hours``): how many of a
    unit-hour's labels of one arm are still to arrive, and the allocation step the units were served in
    (a label counts for the step of its prediction, as ``gather_evidence`` counts it)."""

    def __init__(self, n_experiments: int, delay: LabelDelay):
        self.delay, self.hazards = delay, delay.arrival_hazards()
        self.waiting = np.zeros((n_experiments, delay.max_hours), dtype=np.int64)
        self.step = np.zeros((n_experiments, delay.max_hours), dtype=np.int64)

    def serve(self, rows: np.ndarray, hour: int, steps: np.ndarray, n_new: np.ndarray, rng: np.random.Generator) -> None:
        slot = hour % self.delay.max_hours
        self.waiting[rows, slot] = rng.binomial(n_new, 1.0 - self.delay.never)
        self.step[rows, slot] = steps

    def arrive(self, rows: np.ndarray, hour: int, rng: np.random.Generator):
        """(serving hour, its steps, labels arriving now) for every serving hour with labels on the way."""
        for age in range(min(hour, self.delay.max_hours)):
            slot = (hour - age) % self.delay.max_hours
            waiting = self.waiting[rows, slot]
            if not waiting.any():
                continue
            arriving = rng.binomial(waiting, self.hazards[age])
            self.waiting[rows, slot] = waiting - arriving
            yield hour - age, self.step[rows, slot], arriving


def _outcome_sums(n: np.ndarray, mean: float, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sum and sum of squares of ``n`` (per row) lognormal outcomes with that mean and sd of ln(outcome)."""
    n = np.asarray(n, dtype=np.int64)
    values = rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, size=int(n.sum()))
    rows = np.repeat(np.arange(n.size), n)
    return np.bincount(rows, weights=values, minlength=n.size), np.bincount(rows, weights=values**2, minlength=n.size)


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
    outcome_sigma: float | None = None,
    label_delay: LabelDelay | None = None,
) -> SimulationResult:
    """Run many experiments hour by hour, deciding after every hour with the rules of ``decide``.

    Each hour ``labelled_per_hour`` units arrive and go to the treatment with probability
    ``assigned_treatment_share`` (default: the planned allocation; set it to simulate broken assignment).
    Their labels come in the same hour, or after ``label_delay`` (some never). The primary metric is the
    policy's: for the rates (``accuracy``, ``outcome_rate``) a unit succeeds with its arm's rate; for
    ``outcome_mean`` (``outcome_sigma`` set) the rates are the arms' mean outcomes, each unit's outcome
    lognormal with that mean and ``outcome_sigma`` the sd of ln(outcome) (revenue-like: sigma 1 has a
    skewness of 6). Each unit makes one prediction: it fails with the arm's error rate, and
    its latency is lognormal (median ``control_latency_median_ms``, times ``latency_ratio`` in the
    treatment; ``latency_sigma`` the sd of ln(latency), 0.5 a realistic spread: p95 = 2.3 x the median).
    Rates are a number or one value per hour (drift). A canary ramps along ``policy.ramp_steps`` from
    ``allocation`` (an allocation off the ramp stays fixed); a bandit starts at ``allocation`` and
    reallocates as ``decide`` would.
    """
    if (outcome_sigma is not None) != (policy.metric == "outcome_mean"):
        raise ValueError("outcome_sigma goes with Policy(metric='outcome_mean'), and only with it")
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

    assigned_control, assigned_treatment, successes_control, successes_treatment = zeros(), zeros(), zeros(), zeros()
    labelled_control, labelled_treatment, squares_control, squares_treatment = zeros(), zeros(), zeros(), zeros()
    waiting = None if label_delay is None else {"control": _Labels(n_experiments, label_delay),
                                                "treatment": _Labels(n_experiments, label_delay)}  # fmt: skip
    arms = {"control": (labelled_control, successes_control, squares_control, control_rates),
            "treatment": (labelled_treatment, successes_treatment, squares_treatment, treatment_rates)}  # fmt: skip

    def label(arm: str, rows: np.ndarray, steps: np.ndarray, n: np.ndarray, served_hour: int) -> None:
        """``n`` labels (per row) of units the arm served in ``served_hour`` at ``steps`` arrive."""
        labelled, successes, squares, rates = arms[arm]
        rate = rates[served_hour - 1]
        # one (row, step) per row: plain fancy-index updates add correctly
        labelled[rows, steps] += n
        if outcome_sigma is None:
            successes[rows, steps] += rng.binomial(n, rate)
        else:
            total, total_squares = _outcome_sums(n, rate, outcome_sigma, rng)
            successes[rows, steps] += total
            squares[rows, steps] += total_squares
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
        for arm, new in (("control", new_control), ("treatment", new_treatment)):
            if waiting is None:
                label(arm, live, live_step, new, hour)
            else:
                waiting[arm].serve(live, hour, live_step, new, rng)
                for served_hour, steps, arriving in waiting[arm].arrive(live, hour, rng):
                    label(arm, live, steps, arriving, served_hour)
        control_arm.add(live, live_step, new_control, control_error_rate, control_log_median, latency_sigma, rng)
        treatment_arm.add(live, live_step, new_treatment, treatment_error_rate, treatment_log_median, latency_sigma, rng)

        counts = _StepCounts(
            treatment_share=step_share[live],
            assigned_control=assigned_control[live],
            assigned_treatment=assigned_treatment[live],
            labelled_control=labelled_control[live],
            labelled_treatment=labelled_treatment[live],
            successes_control=successes_control[live],
            successes_treatment=successes_treatment[live],
            sum_squares_control=None if outcome_sigma is None else squares_control[live],
            sum_squares_treatment=None if outcome_sigma is None else squares_treatment[live],
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

    treatment_labelled = labelled_treatment.sum(axis=1).astype(int)
    actions = np.array([action for _, action in RULES])
    return SimulationResult(
        rule=np.array(RULE_NAMES)[rule],
        action=actions[rule],
        decision_hour=decision_hour,
        labelled_at_decision=treatment_labelled + labelled_control.sum(axis=1).astype(int),
        treatment_labelled_at_decision=treatment_labelled,
        allocation_changes=step,
    )
