"""The decision of an online experiment (champion = control, challenger = treatment): a pure function.

Every hour the promote DAG gathers per-arm counts from the warehouse and calls
``decide(evidence, policy) -> Decision``. The rules, in the order they are applied:

1. **Sample-ratio mismatch** (SRM): the sequential multinomial test of the assigned counts against the
   planned split (one Bayes factor per allocation step, multiplied); its always-valid p-value at or below
   ``policy.srm_p_value_threshold`` halts the experiment, because every other
   number is untrustworthy when assignment is broken (Fabijan et al., "Diagnosing Sample Ratio Mismatch
   in Online Controlled Experiments", KDD 2019).
2. **Guardrails**, always-valid one-sided tests with margins (the same mSPRT as the main test), so
   normal noise in both arms neither rejects nor passes by luck: the error rate breaches when the test
   rejects "increase <= ``max_error_rate_increase``" (a difference of proportions, variance at the rates
   restricted to the margin), the latency when it rejects "mean ln(latency) grew by <=
   ln(``max_latency_p95_ratio``)" (for a latency distribution whose shape stays, the ratio of any quantile,
   p95 included) AND the treatment's p95 at the current step is more than ``latency_p95_tolerance_ms``
   slower (sub-millisecond p95s differ by scheduling noise). Both count once each arm has
   ``min_assigned_for_guardrails`` predictions, pool the evidence over allocation steps like the main test
   (within-step differences, pooled-variance weights) and carry their running p-values in
   :class:`SequentialState`. They used to be thresholds on point estimates, restarted at each ramp step:
   with lognormal latency (sigma 0.5) and 1 % errors in both arms of an A/A test, 78 % were rejected.
3. **The always-valid test** of the primary metric (``Policy.metric``: accuracy, a conversion rate or a
   mean outcome; see the caveats), once each arm has ``min_labelled_per_arm`` labels (outcomes): promote
   when the treatment is better, reject when it is worse, and (with ``minimum_detectable_effect`` set)
   reject for futility when an improvement of that size has been ruled out.
4. **Max duration** reached without a conclusion: inconclusive, the champion keeps all traffic.
5. **Ramp** to the next canary step once the guardrails were measured and passed with enough treatment
   units at the current step; or, with a bandit strategy (``thompson``, ``epsilon_greedy``),
   **reallocate**: a new allocation period at the share :func:`bandit_share` gives, once the guardrails
   were measured at the current one and the test counts labels; otherwise continue.

After a promotion, :func:`decide_watch` watches the new champion for a window and rolls it back when its
success rate falls by more than a margin against its own rate in the experiment (the same mSPRT, null
"drop <= margin"), or its latency / error rate grow beyond guardrails; at the end of the window it keeps it.

Method: mSPRT, the mixture sequential probability ratio test (Robbins, "Statistical methods related to
the law of the iterated logarithm", Ann. Math. Statist. 1970), in the form of Johari, Koomen, Pekelis and
Walsh, "Peeking at A/B Tests: Why it matters, and what to do about it" (KDD 2017) and Johari, Pekelis and
Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests" (Operations Research 70(3), 2022).
With theta_hat the difference of success rates (treatment - control) and V its variance, the normal
mixture (theta ~ N(0, tau^2)) likelihood ratio against theta = 0 is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 theta_hat^2 / (2 V (V + tau^2)))

Decisions are one-sided, so the mixture is the half-normal on theta > 0 (the N(0, tau^2) mixture
restricted to the alternative and renormalised), which multiplies Lambda by 2 Phi(tau theta_hat /
sqrt(V (V + tau^2))). Any mixture of likelihood ratios over theta > 0 is a non-negative supermartingale
under every theta <= 0, so by Ville's inequality P(ever Lambda >= 1/alpha) <= alpha: the always-valid
p-value min(1, min over looks of 1/Lambda) may be looked at every hour, at any number of looks, and the
test stopped whenever it crosses alpha. "Better" uses Lambda(theta_hat), "worse" Lambda(-theta_hat) and
futility Lambda(mde - theta_hat) (null: theta >= mde); each controls its own error at alpha, so an A/A
test promotes falsely at most alpha of the time. Inverting the one-sided tests gives always-valid bounds
theta_hat -/+ d; together they form a 1 - 2 alpha interval, and "lower bound > 0" is exactly "p(better) <=
alpha". Running minima (p-values) and running maxima / minima (bounds) are carried between looks in
:class:`SequentialState`, which the caller stores with each decision.

Why mSPRT rather than a group-sequential design with O'Brien-Fleming alpha spending (Lan and DeMets,
Biometrika 1983): spending needs the maximum information planned in advance and the information fraction
at each look, but here looks are hourly, traffic and label delay vary, ramps change the rate of
information, and a DAG run may be skipped or repeated. The mSPRT is valid at any stopping time whatever
the schedule, needs only the running minimum, and gives confidence intervals that hold at every look. Its
price is a larger sample than a fixed-horizon test in the worst case; the unit tests measure it.

Choosing tau (``Policy.mixing_sd``, on the scale of the difference in rates): the test is valid for any
tau > 0; only power depends on it. For a given estimate, Lambda is largest when tau^2 = theta_hat^2 - V,
so tau should be about the size of effect you want to detect quickly (the MDE, e.g. 0.02-0.03 of
accuracy), or, as Johari et al. recommend, the spread of effects seen in past experiments. Too small a
tau is slow for large effects; too large a tau loses power on small ones.

Caveats and how they are handled:

* Normal approximation: the guarantee is asymptotic, hence the minimum labels per arm before the test
  counts (``min_labelled_per_arm``); looks before that do not enter the running minimum. The variance is
  the one under the null, not each arm's own: at rates near 0 or 1 a small arm that happens to have
  almost no failures has almost no plug-in variance (199 of 200 correct: 2.5e-5), and with it an A/A
  test at accuracy 0.97 promoted 8.5 % of the time. Under "no difference" it is the pooled rate's
  (the score test's variance); under a margin (futility, the watch, the error-rate guardrail) the rates
  are the maximum-likelihood ones restricted to the null, Farrington and Manning's closed form
  ("Test statistics and sample size formulae for comparative binomial trials with null hypothesis of
  non-zero risk difference or non-unity relative risk", Statistics in Medicine 9, 1990), the standard
  choice for non-inferiority tests of a difference of proportions because it keeps its level near 0
  and 1. A continuity floor of half an event keeps a step with no failures in either arm in the
  combination. With it the A/A false promotions at 0.97 and 0.995 are within alpha (README).
* Time-varying allocation (ramps, Thompson sampling, epsilon-greedy): when the allocation and the base
  rate both change over time, the pooled difference is biased (Simpson's paradox: the treatment's labels
  come from later hours). The difference is therefore estimated within each allocation step and combined
  with inverse-variance weights; the weighted score is a sum of mean-zero increments under the null, so the
  mixture argument still holds. Two conditions keep the increments mean-zero, and the simulations break
  without them: the weights come from each step's pooled variance (under the null it carries no sign of
  the difference; unpooled weights favour steps where the small arm did well, and an epsilon-greedy A/A
  test then promoted a third of the time), and a step ends on counts, never on outcomes (a bandit closes
  its period when the guardrail units and the labels are there, even if the share stays). Pass each
  earlier allocation as an :class:`AllocationStep`; the allocation must depend on past data only. SRM sums
  the chi-square over steps (one degree of freedom per step with traffic).
* Units: counts must be per randomisation unit (or per prediction when predictions are randomised);
  repeated predictions of one user randomised together make the variance too small.
* SRM is the sequential multinomial test of Lindon and Malek ("Anytime-Valid Inference for Multinomial
  Count Data", NeurIPS 2022; :func:`srm_log_bayes_factor`), always-valid like the rest: the chi-square
  repeated every hour halted 0.9-2.9 % of A/A experiments, mostly on the tiny counts of the first hours.
  Its Bayes factors are checked against scipy's Dirichlet-multinomial and the ``savvi`` package (not a
  dependency: it pulls cvxpy and matplotlib).
* The guardrails' latency test assumes the predictions' ln(latency) are independent; a unit's repeated
  requests served together (one slow host) make its variance too small, as for the main test.
* The primary metric (``Policy.metric``, the spec's ``promotion.online.metric``) is ``accuracy`` (the
  prediction was right), ``outcome_rate`` (the share of the feedback's ``outcome`` values that are > 0: a
  conversion) or ``outcome_mean`` (the mean ``outcome``, e.g. revenue). The two rates go through the same
  pooled / Farrington-Manning path; the outcomes count every request whose feedback has an outcome,
  failed ones included (the user had an outcome whether or not the model answered; ``fct_experiment``
  counts them the same way). ``outcome_mean`` tests the difference of means (:func:`difference_in_means`)
  from each arm's n, sum and sum of squares, with the variance estimated from the data: the larger of the
  pooled one under the null (both arms' values about their common mean, the score test's, as the pooled
  rate is for 0/1) and the unpooled (Welch) one. The pooled variance is the floor, for the reason it is
  for rates: a revenue-like outcome is skewed, most of its variance comes from rare large values, and a
  small arm that drew none of them has a sample variance far below the true one (for a lognormal with
  sigma 1, 200 draws underestimate the variance two times in three); the unpooled one covers the
  opposite case, a small arm that drew one of them, whose mean jumps together with its own variance
  while the pooled variance, dominated by the large arm, barely moves. Both estimate the same variance
  under the null, so the max keeps the asymptotic guarantee and errs on the safe side: in simulated A/A
  experiments (lognormal sigma 1, 10 % canary, label delay, 400 a row) the pooled variance alone
  promoted 3.3 % (300/h) and 3.5 % (3,000/h), the larger of the two 1.3 % and 1.5 % (README). A step whose values are all equal has no variance and carries no
  weight. ``mixing_sd`` (and ``minimum_detectable_effect``) are on the metric's scale: a difference in
  rates, or in the outcome's units for ``outcome_mean`` (the spec refuses ``outcome_mean`` without one).
  The bandits compare the arms' posteriors of the metric (Beta for rates, the normal approximation of
  the mean for ``outcome_mean``). The watch after a promotion still tests the success rate (accuracy).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
from scipy import optimize, special, stats

from driftloop.core.spec import Online, Watch

Action = Literal["continue", "ramp", "reallocate", "promote", "reject", "halt", "inconclusive", "rollback", "keep"]
Strategy = Literal["canary", "thompson", "epsilon_greedy"]
Metric = Literal["accuracy", "outcome_rate", "outcome_mean"]
METRICS: tuple[str, ...] = ("accuracy", "outcome_rate", "outcome_mean")

# Rules in order of precedence: the first that holds decides (np.select in _evaluate_looks).
RULES: tuple[tuple[str, Action], ...] = (
    ("sample_ratio_mismatch", "halt"),
    ("guardrail_breach", "reject"),
    ("treatment_better", "promote"),
    ("treatment_worse", "reject"),
    ("futility", "reject"),
    ("max_duration", "inconclusive"),
    ("ramp", "ramp"),
    ("reallocate", "reallocate"),
    ("no_conclusion_yet", "continue"),
)
RULE_NAMES = tuple(name for name, _ in RULES)
# the latency guardrail tests ln(max(latency_ms, LATENCY_FLOOR_MS)): a 0 ms (cached) answer stays finite
LATENCY_FLOOR_MS = 0.01
_NO_CONCLUSION = len(RULES) - 1


def _check_count(owner: str, field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{owner}: {field} must be a whole number >= 0, got {value!r}")


def _check_number(owner: str, field: str, value: Any, *, low: float | None = None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) or not math.isfinite(value):
        raise ValueError(f"{owner}: {field} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{owner}: {field} must be >= {low:g}, got {value!r}")


@dataclass(frozen=True)
class ArmEvidence:
    """Counts of one arm. ``successes`` counts the labelled, served predictions that were right (accuracy).

    Latency: ``latency_p95_ms`` (the guardrail's absolute tolerance is on it) and the mean and variance of
    ln(latency in ms) over the arm's ``n_predictions`` (default: ``n_assigned``), which the sequential
    latency guardrail tests. They are None when nothing was measured (an arm without predictions); an arm
    with predictions but no latency is "latency not measured": it neither passes nor breaches, and the
    decision waits (never promotes) until it is measured. Errors are counted per prediction.

    The feedback's business outcome (the metrics ``outcome_rate`` and ``outcome_mean``): ``n_outcomes``
    requests whose latest feedback has an outcome (failed ones included), ``outcome_positive`` of them
    with an outcome > 0 (conversions), and the sum and sum of squares of the outcomes."""

    name: str
    n_assigned: int
    n_labelled: int
    successes: int
    n_errors: int
    latency_p95_ms: float | None = None
    n_predictions: int | None = None
    log_latency_mean: float | None = None
    log_latency_variance: float | None = None
    n_outcomes: int = 0
    outcome_positive: int = 0
    outcome_sum: float = 0.0
    outcome_sum_squares: float = 0.0

    def __post_init__(self) -> None:
        owner = f"arm {self.name!r}"
        for field in ("n_assigned", "n_labelled", "successes", "n_errors"):
            _check_count(owner, field, getattr(self, field))
        if self.n_predictions is None:
            object.__setattr__(self, "n_predictions", self.n_assigned)
        _check_count(owner, "n_predictions", self.n_predictions)
        if not 0 <= self.successes <= self.n_labelled <= self.n_assigned:
            raise ValueError(
                f"{owner}: expected 0 <= successes <= n_labelled <= n_assigned, got "
                f"{self.successes}, {self.n_labelled}, {self.n_assigned}"
            )
        if not 0 <= self.n_errors <= self.n_predictions:
            raise ValueError(f"{owner}: n_errors must be in [0, n_predictions], got {self.n_errors} of {self.n_predictions}")
        _check_number(owner, "latency_p95_ms", self.latency_p95_ms, low=0.0, optional=True)
        _check_number(owner, "log_latency_mean", self.log_latency_mean, optional=True)
        _check_number(owner, "log_latency_variance", self.log_latency_variance, low=0.0, optional=True)
        if (self.log_latency_mean is None) != (self.log_latency_variance is None):
            raise ValueError(f"{owner}: log_latency_mean and log_latency_variance go together, got one of them")
        self._check_outcomes(owner)

    def _check_outcomes(self, owner: str) -> None:
        _check_count(owner, "n_outcomes", self.n_outcomes)
        _check_count(owner, "outcome_positive", self.outcome_positive)
        if not 0 <= self.outcome_positive <= self.n_outcomes <= self.n_predictions:
            raise ValueError(
                f"{owner}: expected 0 <= outcome_positive <= n_outcomes <= n_predictions, got "
                f"{self.outcome_positive}, {self.n_outcomes}, {self.n_predictions}"
            )
        _check_number(owner, "outcome_sum", self.outcome_sum)
        _check_number(owner, "outcome_sum_squares", self.outcome_sum_squares, low=0.0)
        # Cauchy-Schwarz: sum^2 <= n * sum of squares (a rounding's worth of slack), and nothing without outcomes
        slack = 1e-9 * max(1.0, self.n_outcomes * self.outcome_sum_squares)
        if self.outcome_sum**2 > self.n_outcomes * self.outcome_sum_squares + slack:
            raise ValueError(
                f"{owner}: outcome_sum^2 must be <= n_outcomes x outcome_sum_squares, got {self.outcome_sum!r}, "
                f"{self.n_outcomes}, {self.outcome_sum_squares!r}"
            )

    def metric_counts(self, metric: str) -> tuple[float, float, float]:
        """(n, sum, sum of squares) of the primary metric's values: 0/1 for the rates (their sum of squares
        is their sum), the outcome for ``outcome_mean``."""
        if metric == "accuracy":
            return self.n_labelled, self.successes, self.successes
        if metric == "outcome_rate":
            return self.n_outcomes, self.outcome_positive, self.outcome_positive
        if metric == "outcome_mean":
            return self.n_outcomes, self.outcome_sum, self.outcome_sum_squares
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")

    def metric_value(self, metric: str) -> float | None:
        n, total, _ = self.metric_counts(metric)
        return total / n if n else None

    @property
    def error_rate(self) -> float:
        return self.n_errors / self.n_predictions if self.n_predictions else 0.0

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.n_labelled if self.n_labelled else None

    @property
    def latency_measured(self) -> bool:
        return self.latency_p95_ms is not None and self.log_latency_mean is not None


@dataclass(frozen=True)
class AllocationStep:
    """Counts of both arms during one period of constant allocation (a canary step)."""

    treatment_share: float
    control: ArmEvidence
    treatment: ArmEvidence

    def __post_init__(self) -> None:
        _check_share(self.treatment_share)


def _check_share(share: Any) -> None:
    _check_number("evidence", "treatment_share", share)
    if not 0 < share < 1:
        raise ValueError(f"treatment_share must be in (0, 1), got {share}")


def _check_state(state: SequentialState) -> None:
    """A stored state must be what a look could have written: p-values in [0, 1], bounds not NaN."""
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if field.name.startswith("p_value"):
            _check_number("previous state", field.name, value, low=0.0)
            if value > 1:
                raise ValueError(f"previous state: {field.name} must be in [0, 1], got {value!r}")
        elif isinstance(value, float) and math.isnan(value):
            raise ValueError(f"previous state: {field.name} is NaN")


@dataclass(frozen=True)
class SequentialState:
    """What the always-valid test carries from one look to the next; store it with each decision."""

    p_value_better: float = 1.0
    p_value_worse: float = 1.0
    p_value_futility: float = 1.0
    p_value_error_rate: float = 1.0  # the error-rate guardrail: H0 increase <= max_error_rate_increase
    p_value_latency: float = 1.0  # the latency guardrail: H0 latency ratio <= max_latency_p95_ratio
    p_value_srm: float = 1.0  # the sequential sample-ratio test: H0 assignment follows the plan
    difference_lower: float = -1.0
    difference_upper: float = 1.0


@dataclass(frozen=True)
class Evidence:
    """One look at a running experiment.

    ``control`` and ``treatment`` count the units since the allocation last changed (the current step, at
    ``treatment_share``); counts of earlier allocations are in ``earlier_steps``, oldest first. Without a
    ramp, the current step is the whole experiment. ``previous`` is the state stored with the last
    decision (None at the first look).
    """

    control: ArmEvidence
    treatment: ArmEvidence
    treatment_share: float
    hours_elapsed: float
    look: int
    earlier_steps: tuple[AllocationStep, ...] = ()
    previous: SequentialState | None = None

    def __post_init__(self) -> None:
        _check_share(self.treatment_share)
        _check_number("evidence", "hours_elapsed", self.hours_elapsed, low=0.0)
        _check_count("evidence", "look", self.look)
        if self.look < 1:
            raise ValueError(f"evidence: look must be >= 1, got {self.look}")
        for arm in (self.control, self.treatment):
            if not isinstance(arm, ArmEvidence):
                raise ValueError(f"evidence: control and treatment must be ArmEvidence, got {type(arm).__name__}")
        if any(not isinstance(step, AllocationStep) for step in self.earlier_steps):
            raise ValueError("evidence: earlier_steps must be AllocationStep values, oldest first")
        if self.previous is not None:
            _check_state(self.previous)

    @property
    def steps(self) -> tuple[AllocationStep, ...]:
        return (*self.earlier_steps, AllocationStep(self.treatment_share, self.control, self.treatment))


def _check_policy_numbers(policy: Any) -> None:
    """Every number of a policy is a finite number (NaN compares false with every limit, so a NaN
    ``max_duration_hours`` would never end an experiment), every count a whole number >= 0."""
    owner = type(policy).__name__
    for field in dataclasses.fields(policy):
        value = getattr(policy, field.name)
        if field.type in ("int",):
            _check_count(owner, field.name, value)
        elif field.type in ("float", "float | None"):
            _check_number(owner, field.name, value, optional=field.type == "float | None")
        elif field.name == "ramp_steps":
            for share in value:
                _check_number(owner, "ramp_steps", share)


def _check_guardrail_policy(policy: Any) -> None:
    if not policy.error_rate_mixing_sd > 0 or not policy.latency_mixing_sd > 0:
        raise ValueError(
            f"error_rate_mixing_sd and latency_mixing_sd must be > 0, got {policy.error_rate_mixing_sd}, "
            f"{policy.latency_mixing_sd}"
        )
    if not policy.max_latency_p95_ratio >= 1 or not 0 <= policy.max_error_rate_increase < 1:
        raise ValueError(
            "expected max_latency_p95_ratio >= 1 and max_error_rate_increase in [0, 1), got "
            f"{policy.max_latency_p95_ratio}, {policy.max_error_rate_increase}"
        )


@dataclass(frozen=True)
class Policy:
    """Thresholds of the decision. Defaults suit an accuracy-like outcome around 0.8; ``mixing_sd`` and
    ``minimum_detectable_effect`` are on the scale of ``metric`` (module docstring)."""

    alpha: float = 0.05
    mixing_sd: float = 0.02  # tau: about the effect worth detecting quickly (module docstring)
    metric: Metric = "accuracy"  # the primary metric: accuracy, outcome_rate or outcome_mean
    min_labelled_per_arm: int = 200
    srm_p_value_threshold: float = 0.001  # on the always-valid p-value of the sequential SRM test
    srm_prior_concentration: float = 100.0  # k of its Dirichlet prior k x planned shares (savvi's default)
    max_latency_p95_ratio: float = 1.10
    # the latency guardrail breaches only when the p95 is both over the ratio AND this many ms slower:
    # p95s of a millisecond or two differ by scheduling noise, and a ratio of them means nothing
    latency_p95_tolerance_ms: float = 5.0
    max_error_rate_increase: float = 0.005
    min_assigned_for_guardrails: int = 200  # per arm at the current allocation
    # the guardrails' mixing sds (tau): about the breach worth catching fast, beyond the margin
    error_rate_mixing_sd: float = 0.01  # on the error-rate difference
    latency_mixing_sd: float = 0.10  # on the difference of mean ln(latency): 0.1 is about +10 %
    max_duration_hours: float = 14 * 24
    minimum_detectable_effect: float | None = None  # enables the futility rule
    ramp_steps: tuple[float, ...] = (0.10, 0.25, 0.50)
    min_treatment_assigned_per_step: int = 1000  # hold each ramp step at least this long
    # canary: the ramp above; thompson / epsilon_greedy: start at ramp_steps[0], then reallocate (bandit_share)
    strategy: Strategy = "canary"
    epsilon: float = 0.10  # epsilon-greedy: the share explored evenly
    bandit_min_share: float = 0.05  # a bandit never starves an arm of the evidence the test needs
    bandit_max_share: float = 0.90
    min_share_change: float = 0.05  # smaller changes than this keep the current allocation (fewer steps)

    def __post_init__(self) -> None:
        _check_policy_numbers(self)
        if not 0 < self.alpha < 1 or not self.mixing_sd > 0:
            raise ValueError(f"alpha must be in (0, 1) and mixing_sd > 0, got {self.alpha}, {self.mixing_sd}")
        if any(not 0 < share < 1 for share in self.ramp_steps) or list(self.ramp_steps) != sorted(
            set(self.ramp_steps)
        ):
            raise ValueError(f"ramp_steps must increase strictly within (0, 1), got {self.ramp_steps}")
        if self.min_treatment_assigned_per_step < self.min_assigned_for_guardrails:
            raise ValueError("min_treatment_assigned_per_step must be >= min_assigned_for_guardrails")
        if self.minimum_detectable_effect is not None and not self.minimum_detectable_effect > 0:
            raise ValueError(f"minimum_detectable_effect must be > 0, got {self.minimum_detectable_effect}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.strategy not in ("canary", "thompson", "epsilon_greedy"):
            raise ValueError(f"strategy must be canary, thompson or epsilon_greedy, got {self.strategy!r}")
        if not 0 < self.bandit_min_share < self.bandit_max_share < 1 or not 0 < self.epsilon < 1:
            raise ValueError(
                "expected 0 < bandit_min_share < bandit_max_share < 1 and 0 < epsilon < 1, got "
                f"{self.bandit_min_share}, {self.bandit_max_share}, {self.epsilon}"
            )
        if not 0 < self.min_share_change < 1:
            raise ValueError(f"min_share_change must be in (0, 1), got {self.min_share_change}")
        if not self.latency_p95_tolerance_ms >= 0:
            raise ValueError(f"latency_p95_tolerance_ms must be >= 0, got {self.latency_p95_tolerance_ms}")
        _check_guardrail_policy(self)
        if not 0 < self.srm_p_value_threshold < 1 or not self.srm_prior_concentration > 0:
            raise ValueError(
                "expected srm_p_value_threshold in (0, 1) and srm_prior_concentration > 0, got "
                f"{self.srm_p_value_threshold}, {self.srm_prior_concentration}"
            )

    @classmethod
    def from_spec(cls, online: Online) -> Policy:
        """The policy of a spec's ``promotion.online`` block."""
        values = online.model_dump(exclude={"max_duration", "ramp_steps", "poke_interval", "allocation_settle"})
        return cls(**values, max_duration_hours=online.max_duration / timedelta(hours=1), ramp_steps=tuple(online.ramp_steps))

    @property
    def is_bandit(self) -> bool:
        return self.strategy != "canary"

    def next_ramp_share(self, treatment_share: float) -> float | None:
        """The ramp step after ``treatment_share``, or None at the last step, off the ramp, or for a bandit."""
        if self.is_bandit:
            return None
        for step, next_step in zip(self.ramp_steps, self.ramp_steps[1:], strict=False):
            if math.isclose(step, treatment_share):
                return next_step
        return None


@dataclass(frozen=True)
class Decision:
    """``statistics`` holds only plain JSON values: it is stored as the audit trail."""

    action: Action
    next_allocation: float
    reason: str
    statistics: dict[str, Any]
    state: SequentialState


# --- statistics, vectorised over experiments (leading axes) and allocation steps (last axis) ---


def _latency_comparison(treatment: ArmEvidence, control: ArmEvidence, tolerance_ms: float) -> dict[str, Any]:
    """The p95s of one pair of arms: their ratio, the increase and whether it is over the absolute tolerance
    (p95s of a millisecond differ by scheduling noise: 0.5 ms vs 0.9 ms is a ratio of 1.8, and the
    sequential test on ln(latency) alone would reject such a model). An arm without a latency is "not
    measured": no ratio, no breach (a missing p95 once stood in as 1e-9 ms, a certain breach for a missing
    control)."""
    if treatment.latency_p95_ms is None or control.latency_p95_ms is None:
        return {"measured": False, "ratio": None, "increase_ms": None, "over_tolerance": False}
    ratio = treatment.latency_p95_ms / control.latency_p95_ms if control.latency_p95_ms > 0 else math.inf
    increase = treatment.latency_p95_ms - control.latency_p95_ms
    measured = treatment.latency_measured and control.latency_measured
    return {"measured": measured, "ratio": ratio, "increase_ms": increase, "over_tolerance": increase > tolerance_ms}


def sample_ratio_mismatch(
    assigned_control: np.ndarray, assigned_treatment: np.ndarray, treatment_share: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square statistic of the assigned counts against the planned shares, summed over steps, and its
    degrees of freedom (one per step with traffic). The p-value is ``srm_p_value(chi_square, dof)``."""
    control = np.asarray(assigned_control, dtype=float)
    treatment = np.asarray(assigned_treatment, dtype=float)
    total = control + treatment
    expected_treatment = np.asarray(treatment_share, dtype=float) * total
    expected_control = total - expected_treatment
    with np.errstate(divide="ignore", invalid="ignore"):
        per_step = (treatment - expected_treatment) ** 2 / expected_treatment + (
            control - expected_control
        ) ** 2 / expected_control
    chi_square = np.where(total > 0, per_step, 0.0).sum(axis=-1)
    degrees_of_freedom = (total > 0).sum(axis=-1)
    return chi_square, degrees_of_freedom


def srm_p_value(chi_square: float, degrees_of_freedom: int) -> float:
    """The fixed-horizon chi-square p-value (reported for comparison; not what halts)."""
    return float(stats.chi2.sf(chi_square, degrees_of_freedom)) if degrees_of_freedom > 0 else 1.0


def srm_log_bayes_factor(
    assigned_control: np.ndarray, assigned_treatment: np.ndarray, treatment_share: np.ndarray, concentration: float
) -> np.ndarray:
    """log of the sequential multinomial test's Bayes factor against "assignment follows the planned shares"
    (Lindon and Malek, "Anytime-Valid Inference for Multinomial Count Data", NeurIPS 2022), multiplied over
    allocation steps (last axis).

    Within a step the counts are multinomial with the planned shares under the null; with a Dirichlet
    prior ``concentration`` x shares on the alternative, the Bayes factor is the Dirichlet-multinomial
    probability of the counts over the multinomial one (the multinomial coefficients cancel):

        BF = B(alpha + x) / B(alpha) / prod(share_i ^ x_i),   B the multivariate Beta function.

    It is a non-negative martingale under the null with mean 1, and each step's starts at 1 when the step
    starts, so the product over steps is one too: P(ever BF >= 1 / threshold) <= threshold (Ville), at
    every look, which the repeated chi-square (false halts 0.9-2.9 % of A/A experiments, mostly on the tiny
    counts of the first hours) was not. The p-value is min(1, 1 / BF), carried as a running minimum."""
    control = np.asarray(assigned_control, dtype=float)
    treatment = np.asarray(assigned_treatment, dtype=float)
    share = np.asarray(treatment_share, dtype=float)
    used = (control + treatment > 0) & (share > 0) & (share < 1)  # steps without traffic contribute a factor 1
    share = np.where(used, share, 0.5)
    prior_treatment, prior_control = concentration * share, concentration * (1 - share)
    per_step = (
        special.gammaln(concentration) - special.gammaln(concentration + control + treatment)
        + special.gammaln(prior_treatment + treatment) - special.gammaln(prior_treatment)
        + special.gammaln(prior_control + control) - special.gammaln(prior_control)
        - treatment * np.log(share) - control * np.log1p(-share)
    )  # fmt: skip
    return np.where(used, per_step, 0.0).sum(axis=-1)


def restricted_rates(
    labelled_control: np.ndarray,
    successes_control: np.ndarray,
    labelled_treatment: np.ndarray,
    successes_treatment: np.ndarray,
    null_difference: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The maximum-likelihood rates (control, treatment) restricted to treatment - control =
    ``null_difference``: Farrington and Manning's closed form (Statistics in Medicine 9, 1990, the cubic of
    their appendix; also Miettinen and Nurminen, 1985). With a null difference of 0 both are the pooled rate.
    NaN where an arm has no labels."""
    n_control = np.asarray(labelled_control, dtype=float)
    n_treatment = np.asarray(labelled_treatment, dtype=float)
    delta = float(null_difference)
    with np.errstate(divide="ignore", invalid="ignore"):
        if delta == 0.0:
            pooled = (np.asarray(successes_control, dtype=float) + np.asarray(successes_treatment, dtype=float)) / (
                n_control + n_treatment
            )
            usable = (n_control > 0) & (n_treatment > 0)
            pooled = np.where(usable, pooled, np.nan)
            return pooled, pooled
        # Farrington-Manning with p1 = treatment, p2 = control, theta = n2 / n1 and p1 - p2 = delta
        rate_treatment = np.asarray(successes_treatment, dtype=float) / n_treatment
        rate_control = np.asarray(successes_control, dtype=float) / n_control
        theta = n_control / n_treatment
        a = 1 + theta
        b = -(1 + theta + rate_treatment + theta * rate_control + delta * (theta + 2))
        c = delta**2 + delta * (2 * rate_treatment + theta + 1) + rate_treatment + theta * rate_control
        d = -rate_treatment * delta * (1 + delta)
        v = b**3 / (27 * a**3) - b * c / (6 * a**2) + d / (2 * a)
        u = np.sign(v) * np.sqrt(np.maximum(b**2 / (9 * a**2) - c / (3 * a), 0.0))
        cosine = np.where(u != 0, np.clip(v / u**3, -1.0, 1.0), 0.0)
        w = (math.pi + np.arccos(cosine)) / 3
        treatment = np.clip(2 * u * np.cos(w) - b / (3 * a), max(0.0, delta), min(1.0, 1.0 + delta))
    return treatment - delta, treatment


def difference_in_rates(
    labelled_control: np.ndarray,
    successes_control: np.ndarray,
    labelled_treatment: np.ndarray,
    successes_treatment: np.ndarray,
    null_difference: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Treatment minus control success rate, within steps, combined across steps, and its variance under
    the null "difference = ``null_difference``".

    The variance of each step is computed at the rates restricted to the null (:func:`restricted_rates`;
    at a null of 0, the pooled rate: p (1 - p) (1 / n_c + 1 / n_t)), not at each arm's own rate: a small
    arm that happens to have almost no failures would otherwise get almost no variance, and at rates near
    0 or 1 the test promoted an A/A experiment 8.5 % of the time (module docstring). The steps are
    weighted by the inverse of their pooled variance: under the null it does not depend on which arm did
    better, whereas weights from the unpooled variance favour steps where the small arm did well and bias
    the combination (with an epsilon-greedy allocation, A/A false promotions rose to a third). Steps where
    an arm has no labels or the variance is 0 (every label a success in both arms) carry no weight; with
    no usable step both results are NaN.
    """
    n_control = np.asarray(labelled_control, dtype=float)
    n_treatment = np.asarray(labelled_treatment, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_control = np.asarray(successes_control, dtype=float) / n_control
        rate_treatment = np.asarray(successes_treatment, dtype=float) / n_treatment
        pooled, _ = restricted_rates(n_control, successes_control, n_treatment, successes_treatment)
        # a continuity floor: half an event in both arms together, so a step with no failures (or no
        # successes) in either arm still carries its weight and a variance instead of dropping out
        half_event = 0.5 / (n_control + n_treatment)
        pooled = np.clip(pooled, half_event, 1 - half_event)
        pooled_variance = pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment)
        if null_difference == 0.0:
            null_variance = pooled_variance
        else:
            null_control, null_treatment = restricted_rates(
                n_control, successes_control, n_treatment, successes_treatment, null_difference
            )
            null_variance = null_control * (1 - null_control) / n_control + null_treatment * (1 - null_treatment) / n_treatment
        usable = (n_control > 0) & (n_treatment > 0) & (pooled_variance > 0) & (null_variance > 0)
        return _combine_steps(rate_treatment - rate_control, pooled_variance, null_variance, usable)


def _combine_steps(step_difference: np.ndarray, weight_variance: np.ndarray, step_variance: np.ndarray,
                   usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Within-step differences combined over steps (last axis) with weights 1 / ``weight_variance`` (the
    pooled one: no sign of the difference under the null), and the combination's variance from each step's
    ``step_variance``; NaN where no step is usable."""
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(usable, 1.0 / np.where(usable, weight_variance, 1.0), 0.0)
        total_weight = weight.sum(axis=-1)
        weighted_difference = (weight * np.where(usable, step_difference, 0.0)).sum(axis=-1)
        difference = np.where(total_weight > 0, weighted_difference / total_weight, np.nan)
        weighted_variance = (weight**2 * np.where(usable, step_variance, 0.0)).sum(axis=-1)
        variance = np.where(total_weight > 0, weighted_variance / total_weight**2, np.nan)
    return difference, variance


def difference_in_means(
    n_control: np.ndarray,
    sum_control: np.ndarray,
    sum_squares_control: np.ndarray,
    n_treatment: np.ndarray,
    sum_treatment: np.ndarray,
    sum_squares_treatment: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Treatment minus control mean outcome, within steps, combined across steps, and its variance, from
    each arm's n, sum and sum of squares (``outcome_mean``).

    A step's variance is the larger of the pooled one under the null, s0^2 (1 / n_c + 1 / n_t) with s0^2
    the sample variance of both arms' values about their common mean, and the unpooled (Welch) one,
    s_c^2 / n_c + s_t^2 / n_t; the module docstring says why (the pooled one is the floor). Steps are
    weighted by the inverse of the pooled variance, which under the null carries no sign of the
    difference (as in :func:`difference_in_rates`). A step where an arm has no outcome, or where every
    value is the same (no variance), carries no weight; with no usable step both results are NaN."""
    n_c = np.asarray(n_control, dtype=float)
    n_t = np.asarray(n_treatment, dtype=float)
    sum_c, sum_t = np.asarray(sum_control, dtype=float), np.asarray(sum_treatment, dtype=float)
    squares_c, squares_t = np.asarray(sum_squares_control, dtype=float), np.asarray(sum_squares_treatment, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_c, mean_t = sum_c / n_c, sum_t / n_t
        total = n_c + n_t
        pooled_mean = (sum_c + sum_t) / total
        pooled = np.maximum(squares_c + squares_t - total * pooled_mean**2, 0.0) / (total - 1)
        own_c = np.where(n_c > 1, np.maximum(squares_c - n_c * mean_c**2, 0.0) / (n_c - 1), 0.0)
        own_t = np.where(n_t > 1, np.maximum(squares_t - n_t * mean_t**2, 0.0) / (n_t - 1), 0.0)
        pooled_variance = pooled * (1 / n_c + 1 / n_t)
        step_variance = np.maximum(pooled_variance, own_c / n_c + own_t / n_t)
        usable = (n_c > 0) & (n_t > 0) & (total > 1) & np.isfinite(pooled_variance) & (pooled_variance > 0)
        return _combine_steps(mean_t - mean_c, pooled_variance, step_variance, usable)


def metric_difference(counts: _StepCounts, metric: str, null_difference: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The primary metric's treatment - control difference and its variance (under ``null_difference`` for
    the rates), combined over steps: :func:`difference_in_rates` or :func:`difference_in_means`."""
    if metric == "outcome_mean":
        return difference_in_means(counts.labelled_control, counts.successes_control, counts.sum_squares_control,
                                   counts.labelled_treatment, counts.successes_treatment, counts.sum_squares_treatment)  # fmt: skip
    return difference_in_rates(counts.labelled_control, counts.successes_control, counts.labelled_treatment,
                               counts.successes_treatment, null_difference)  # fmt: skip


def log_mixture_likelihood_ratio(
    difference: np.ndarray, variance: np.ndarray, mixing_sd: float
) -> np.ndarray:
    """log Lambda of the two-sided normal-mixture SPRT (Johari et al. 2017); -inf where V is unusable."""
    difference = np.asarray(difference, dtype=float)
    variance = np.asarray(variance, dtype=float)
    usable = np.isfinite(difference) & np.isfinite(variance) & (variance > 0)
    safe_variance = np.where(usable, variance, 1.0)
    safe_difference = np.where(usable, difference, 0.0)
    tau2 = mixing_sd**2
    value = 0.5 * np.log(safe_variance / (safe_variance + tau2)) + tau2 * safe_difference**2 / (
        2 * safe_variance * (safe_variance + tau2)
    )
    return np.where(usable, value, -np.inf)


def log_one_sided_mixture_likelihood_ratio(
    difference: np.ndarray, variance: np.ndarray, mixing_sd: float
) -> np.ndarray:
    """log Lambda of the half-normal mixture over effects > 0: evidence that the true difference is > 0."""
    two_sided = log_mixture_likelihood_ratio(difference, variance, mixing_sd)
    usable = np.isfinite(two_sided)
    safe_variance = np.where(usable, variance, 1.0)
    safe_difference = np.where(usable, difference, 0.0)
    posterior_z = mixing_sd * safe_difference / np.sqrt(safe_variance * (safe_variance + mixing_sd**2))
    return math.log(2) + special.log_ndtr(posterior_z) + two_sided


def p_value_from_log_likelihood_ratio(log_likelihood_ratio: np.ndarray) -> np.ndarray:
    """min(1, 1 / Lambda), computed without overflow."""
    return np.exp(np.minimum(0.0, -np.asarray(log_likelihood_ratio, dtype=float)))


def always_valid_half_width(variance: float, mixing_sd: float, alpha: float) -> float:
    """d with one-sided Lambda(d) = 1/alpha: estimate - d and estimate + d are always-valid bounds at alpha."""
    target = math.log(1 / alpha)
    tau2 = mixing_sd**2
    # The two-sided half-width (closed form) is an upper bracket: the one-sided Lambda is larger for d > 0.
    two_sided_half_width = math.sqrt(
        2 * variance * (variance + tau2) / tau2 * (target + 0.5 * math.log((variance + tau2) / variance))
    )
    return optimize.brentq(
        lambda half_width: (
            float(log_one_sided_mixture_likelihood_ratio(half_width, variance, mixing_sd)) - target
        ),
        0.0,
        two_sided_half_width,
    )


def bandit_share(
    labelled_control: np.ndarray,
    successes_control: np.ndarray,
    labelled_treatment: np.ndarray,
    successes_treatment: np.ndarray,
    policy: Policy,
    sum_squares_control: np.ndarray | None = None,
    sum_squares_treatment: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The treatment's next share under the policy's bandit strategy, and the posterior probability that
    the treatment is better, from each arm's labelled counts (summed over steps). With sums of squares
    (``outcome_mean``: ``successes`` are then sums of outcomes) each arm's mean is compared through its
    normal approximation, mean and s^2 / n (s^2 at least the pooled variance of both arms, as the test's).

    Posteriors are Beta(1 + successes, 1 + failures), compared through their normal approximation, so the
    result is deterministic. Thompson sampling gives the treatment the probability that it is the better
    arm (randomized probability matching, Scott, "A modern Bayesian look at the multi-armed bandit",
    Applied Stochastic Models in Business and Industry 26, 2010: hashing units against that share is
    Thompson sampling batched per look). Epsilon-greedy gives the leader 1 - epsilon / 2. Both are
    clipped to [bandit_min_share, bandit_max_share]. The allocation depends on past data only, which
    keeps the sequential test valid (module docstring).
    """
    def posterior(labelled: np.ndarray, successes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of Beta(1 + successes, 1 + failures)."""
        a = 1 + np.asarray(successes, dtype=float)
        b = 1 + np.asarray(labelled, dtype=float) - np.asarray(successes, dtype=float)
        return a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))

    if sum_squares_control is None or sum_squares_treatment is None:
        mean_control, variance_control = posterior(labelled_control, successes_control)
        mean_treatment, variance_treatment = posterior(labelled_treatment, successes_treatment)
    else:
        n_c, n_t = np.maximum(np.asarray(labelled_control, dtype=float), 1.0), np.maximum(np.asarray(labelled_treatment, dtype=float), 1.0)
        mean_control, mean_treatment = np.asarray(successes_control) / n_c, np.asarray(successes_treatment) / n_t
        _, variance = difference_in_means(n_c, successes_control, sum_squares_control, n_t, successes_treatment,
                                          sum_squares_treatment)  # fmt: skip
        # the variance of the difference, split between the arms as 1 / n: an arm's posterior variance
        variance = np.where(np.isfinite(variance), variance, np.inf)
        variance_control, variance_treatment = variance * (1 / n_c) / (1 / n_c + 1 / n_t), variance * (1 / n_t) / (1 / n_c + 1 / n_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mean_treatment - mean_control) / np.sqrt(variance_control + variance_treatment)
    p_treatment_better = stats.norm.cdf(np.where(np.isfinite(z), z, 0.0))
    if policy.strategy == "thompson":
        share = p_treatment_better
    elif policy.strategy == "epsilon_greedy":
        share = np.where(mean_treatment > mean_control, 1 - policy.epsilon / 2, policy.epsilon / 2)
    else:
        raise ValueError(f"{policy.strategy!r} is not a bandit strategy")
    return np.clip(share, policy.bandit_min_share, policy.bandit_max_share), p_treatment_better


def difference_in_log_latency(
    predictions_control: np.ndarray,
    mean_control: np.ndarray,
    variance_control: np.ndarray,
    predictions_treatment: np.ndarray,
    mean_treatment: np.ndarray,
    variance_treatment: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Treatment minus control mean ln(latency), within steps, combined across steps with the weights of
    each step's pooled variance s^2 (1 / n_c + 1 / n_t) (s^2 both arms' pooled sample variance: under the
    null of equal latency distributions it carries no sign of the difference), and its variance 1 / sum of
    weights. A step where an arm has fewer than 2 predictions or no latency (NaN) carries no weight."""
    n_control = np.asarray(predictions_control, dtype=float)
    n_treatment = np.asarray(predictions_treatment, dtype=float)
    mean_control, mean_treatment = np.asarray(mean_control, dtype=float), np.asarray(mean_treatment, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = ((n_control - 1) * np.asarray(variance_control, dtype=float)
                  + (n_treatment - 1) * np.asarray(variance_treatment, dtype=float)) / (n_control + n_treatment - 2)  # fmt: skip
        step_variance = pooled * (1 / n_control + 1 / n_treatment)
        usable = (n_control >= 2) & (n_treatment >= 2) & np.isfinite(step_variance) & (step_variance > 0)
        usable &= np.isfinite(mean_control) & np.isfinite(mean_treatment)
        weight = np.where(usable, 1.0 / np.where(usable, step_variance, 1.0), 0.0)
        total_weight = weight.sum(axis=-1)
        weighted = (weight * np.where(usable, mean_treatment - mean_control, 0.0)).sum(axis=-1)
        difference = np.where(total_weight > 0, weighted / total_weight, np.nan)
        variance = np.where(total_weight > 0, 1.0 / total_weight, np.nan)
    return difference, variance


@dataclass(frozen=True)
class _GuardrailCounts:
    """Per experiment (rows) and allocation step (columns): predictions, errors and ln(latency) moments of
    each arm (NaN moments: latency not measured)."""

    predictions_control: np.ndarray
    predictions_treatment: np.ndarray
    errors_control: np.ndarray
    errors_treatment: np.ndarray
    log_latency_mean_control: np.ndarray
    log_latency_variance_control: np.ndarray
    log_latency_mean_treatment: np.ndarray
    log_latency_variance_treatment: np.ndarray


@dataclass(frozen=True)
class _GuardrailTests:
    """The two sequential guardrails of one look, one entry per experiment; p-values are running ones."""

    enough: np.ndarray  # both arms have min_assigned_for_guardrails predictions (over all steps)
    error_rate_difference: np.ndarray
    error_rate_variance: np.ndarray
    p_value_error_rate: np.ndarray
    log_latency_difference: np.ndarray
    log_latency_variance: np.ndarray
    p_value_latency: np.ndarray
    error_rate_breached: np.ndarray
    latency_breached: np.ndarray


def _guardrail_tests(
    counts: _GuardrailCounts,
    *,
    latency_over_tolerance: np.ndarray,
    previous_p_value_error_rate: np.ndarray,
    previous_p_value_latency: np.ndarray,
    policy: Policy | WatchPolicy,
) -> _GuardrailTests:
    """Guardrails as one-sided always-valid tests with margins (module docstring): the error rate breaches
    when the mSPRT rejects "increase <= max_error_rate_increase", the latency when it rejects "mean
    ln(latency) grew by <= ln(max_latency_p95_ratio)" AND the treatment's p95 at this step is more than
    ``latency_p95_tolerance_ms`` slower (``latency_over_tolerance``). Evidence is pooled over steps."""
    enough = (counts.predictions_control.sum(axis=-1) >= policy.min_assigned_for_guardrails) & (
        counts.predictions_treatment.sum(axis=-1) >= policy.min_assigned_for_guardrails
    )
    margin = policy.max_error_rate_increase
    error_difference, error_variance = difference_in_rates(
        counts.predictions_control, counts.errors_control, counts.predictions_treatment, counts.errors_treatment, margin
    )
    log_lr_errors = log_one_sided_mixture_likelihood_ratio(error_difference - margin, error_variance,
                                                           policy.error_rate_mixing_sd)  # fmt: skip
    latency_difference, latency_variance = difference_in_log_latency(
        counts.predictions_control, counts.log_latency_mean_control, counts.log_latency_variance_control,
        counts.predictions_treatment, counts.log_latency_mean_treatment, counts.log_latency_variance_treatment,
    )  # fmt: skip
    log_lr_latency = log_one_sided_mixture_likelihood_ratio(
        latency_difference - math.log(policy.max_latency_p95_ratio), latency_variance, policy.latency_mixing_sd
    )
    p_errors = np.where(enough, np.minimum(previous_p_value_error_rate, p_value_from_log_likelihood_ratio(log_lr_errors)),
                        previous_p_value_error_rate)  # fmt: skip
    p_latency = np.where(enough, np.minimum(previous_p_value_latency, p_value_from_log_likelihood_ratio(log_lr_latency)),
                         previous_p_value_latency)  # fmt: skip
    return _GuardrailTests(
        enough=enough,
        error_rate_difference=error_difference,
        error_rate_variance=error_variance,
        p_value_error_rate=p_errors,
        log_latency_difference=latency_difference,
        log_latency_variance=latency_variance,
        p_value_latency=p_latency,
        error_rate_breached=p_errors <= policy.alpha,
        latency_breached=(p_latency <= policy.alpha) & np.asarray(latency_over_tolerance, dtype=bool),
    )


@dataclass(frozen=True)
class _StepCounts:
    """Counts per experiment (rows) and allocation step (columns)."""

    treatment_share: np.ndarray
    assigned_control: np.ndarray
    assigned_treatment: np.ndarray
    labelled_control: np.ndarray
    labelled_treatment: np.ndarray
    successes_control: np.ndarray
    successes_treatment: np.ndarray
    guardrails: _GuardrailCounts
    # outcome_mean: "labelled" are the n of outcomes, "successes" their sums, and these their sums of squares
    sum_squares_control: np.ndarray | None = None
    sum_squares_treatment: np.ndarray | None = None


@dataclass(frozen=True)
class _Looks:
    """What one look computes, one entry per experiment. p-values are the running (always-valid) ones."""

    rule: np.ndarray
    srm_chi_square: np.ndarray
    srm_degrees_of_freedom: np.ndarray
    srm_log_bayes_factor: np.ndarray
    p_value_srm: np.ndarray
    enough_labels: np.ndarray
    difference: np.ndarray
    variance: np.ndarray
    log_likelihood_ratio_better: np.ndarray
    p_value_better: np.ndarray
    p_value_worse: np.ndarray
    p_value_futility: np.ndarray
    target_share: np.ndarray  # a bandit's next share (the current share for a canary)
    p_treatment_better: np.ndarray  # a bandit's posterior P(treatment better); NaN for a canary
    guardrails: _GuardrailTests


def _evaluate_looks(
    counts: _StepCounts,
    *,
    guardrails_measured: np.ndarray,
    latency_over_tolerance: np.ndarray,
    treatment_assigned_at_step: np.ndarray,
    current_share: np.ndarray,
    can_change_allocation: np.ndarray,
    hours_elapsed: np.ndarray | float,
    previous_p_value_better: np.ndarray,
    previous_p_value_worse: np.ndarray,
    previous_p_value_futility: np.ndarray,
    previous_p_value_error_rate: np.ndarray,
    previous_p_value_latency: np.ndarray,
    previous_p_value_srm: np.ndarray,
    policy: Policy,
) -> _Looks:
    """The decision rules of one look for many experiments at once; ``decide`` and the simulation share it."""
    srm_chi_square, srm_degrees_of_freedom = sample_ratio_mismatch(
        counts.assigned_control, counts.assigned_treatment, counts.treatment_share
    )
    log_bayes_factor = srm_log_bayes_factor(counts.assigned_control, counts.assigned_treatment, counts.treatment_share,
                                            policy.srm_prior_concentration)  # fmt: skip
    p_value_srm = np.minimum(previous_p_value_srm, p_value_from_log_likelihood_ratio(log_bayes_factor))
    enough_labels = (counts.labelled_control.sum(axis=-1) >= policy.min_labelled_per_arm) & (
        counts.labelled_treatment.sum(axis=-1) >= policy.min_labelled_per_arm
    )
    difference, variance = metric_difference(counts, policy.metric)
    log_lr_better = log_one_sided_mixture_likelihood_ratio(difference, variance, policy.mixing_sd)
    log_lr_worse = log_one_sided_mixture_likelihood_ratio(-difference, variance, policy.mixing_sd)
    if policy.minimum_detectable_effect is None:
        log_lr_futility = np.full_like(log_lr_better, -np.inf)
    else:
        # H0: difference >= mde, its variance at the rates restricted to that null (a mean's: the same)
        _, futility_variance = metric_difference(counts, policy.metric, policy.minimum_detectable_effect)
        log_lr_futility = log_one_sided_mixture_likelihood_ratio(
            policy.minimum_detectable_effect - difference, futility_variance, policy.mixing_sd
        )

    def running(previous: np.ndarray, log_likelihood_ratio: np.ndarray) -> np.ndarray:
        # Looks before enough labels stay out: the normal approximation is not trusted there.
        current = p_value_from_log_likelihood_ratio(log_likelihood_ratio)
        return np.where(enough_labels, np.minimum(previous, current), previous)

    p_value_better = running(previous_p_value_better, log_lr_better)
    p_value_worse = running(previous_p_value_worse, log_lr_worse)
    p_value_futility = running(previous_p_value_futility, log_lr_futility)

    guardrails = _guardrail_tests(counts.guardrails, latency_over_tolerance=latency_over_tolerance,
                                  previous_p_value_error_rate=previous_p_value_error_rate,
                                  previous_p_value_latency=previous_p_value_latency, policy=policy)  # fmt: skip
    guardrail_breach = guardrails.error_rate_breached | guardrails.latency_breached
    if policy.is_bandit:
        # A bandit closes an allocation period once its guardrails were measured there and the test counts
        # labels: both conditions are counts, never outcomes, so a period's estimate is unbiased. (Ending a
        # period when the leader changes would bias the difference within it.) A small change of share is
        # not applied, but the period still closes.
        target_share, p_treatment_better = bandit_share(
            counts.labelled_control.sum(axis=-1),
            counts.successes_control.sum(axis=-1),
            counts.labelled_treatment.sum(axis=-1),
            counts.successes_treatment.sum(axis=-1),
            policy,
            None if counts.sum_squares_control is None else counts.sum_squares_control.sum(axis=-1),
            None if counts.sum_squares_treatment is None else counts.sum_squares_treatment.sum(axis=-1),
        )
        current_share = np.asarray(current_share, dtype=float)
        target_share = np.where(
            np.abs(target_share - current_share) >= policy.min_share_change - 1e-12, target_share, current_share
        )
        can_ramp = np.zeros_like(guardrails_measured)
        can_reallocate = can_change_allocation & guardrails_measured & enough_labels
    else:
        target_share = np.asarray(current_share, dtype=float)
        p_treatment_better = np.full(target_share.shape, np.nan)
        can_ramp = (
            can_change_allocation
            & guardrails_measured
            & (treatment_assigned_at_step >= policy.min_treatment_assigned_per_step)
        )
        can_reallocate = np.zeros_like(guardrails_measured)
    conditions = [  # same order as RULES
        p_value_srm <= policy.srm_p_value_threshold,
        guardrail_breach,
        guardrails_measured & (p_value_better <= policy.alpha),  # never promote without guardrail evidence
        p_value_worse <= policy.alpha,
        p_value_futility <= policy.alpha,
        np.broadcast_to(np.asarray(hours_elapsed) >= policy.max_duration_hours, srm_chi_square.shape),
        can_ramp,
        can_reallocate,
    ]
    rule = np.select(conditions, np.arange(len(conditions)), default=_NO_CONCLUSION)
    return _Looks(
        rule=rule,
        srm_chi_square=srm_chi_square,
        srm_degrees_of_freedom=srm_degrees_of_freedom,
        srm_log_bayes_factor=log_bayes_factor,
        p_value_srm=p_value_srm,
        enough_labels=enough_labels,
        difference=difference,
        variance=variance,
        log_likelihood_ratio_better=log_lr_better,
        p_value_better=p_value_better,
        p_value_worse=p_value_worse,
        p_value_futility=p_value_futility,
        target_share=target_share,
        p_treatment_better=p_treatment_better,
        guardrails=guardrails,
    )


# --- the decision of one look ---


def decide(evidence: Evidence, policy: Policy) -> Decision:
    """The action for one look at an experiment, with a readable reason and the numbers behind it."""
    steps = evidence.steps
    counts = _step_counts(steps, policy.metric)
    control, treatment = evidence.control, evidence.treatment
    latency = _latency_comparison(treatment, control, policy.latency_p95_tolerance_ms)
    latency_p95_ratio = latency["ratio"]
    error_rate_increase = treatment.error_rate - control.error_rate
    # a promotion and a ramp need the guardrails measured: enough units and a latency in both arms
    guardrails_measured = (
        min(control.n_assigned, treatment.n_assigned) >= policy.min_assigned_for_guardrails and latency["measured"]
    )
    next_ramp_share = policy.next_ramp_share(evidence.treatment_share)
    previous = evidence.previous or SequentialState()
    looks = _evaluate_looks(
        counts,
        guardrails_measured=np.array([guardrails_measured]),
        latency_over_tolerance=np.array([latency["over_tolerance"]]),
        treatment_assigned_at_step=np.array([treatment.n_assigned]),
        current_share=np.array([evidence.treatment_share]),
        can_change_allocation=np.array([policy.is_bandit or next_ramp_share is not None]),
        hours_elapsed=evidence.hours_elapsed,
        previous_p_value_better=np.array([previous.p_value_better]),
        previous_p_value_worse=np.array([previous.p_value_worse]),
        previous_p_value_futility=np.array([previous.p_value_futility]),
        previous_p_value_error_rate=np.array([previous.p_value_error_rate]),
        previous_p_value_latency=np.array([previous.p_value_latency]),
        previous_p_value_srm=np.array([previous.p_value_srm]),
        policy=policy,
    )
    rule, action = RULES[int(looks.rule[0])]
    tests = looks.guardrails
    latency_breached, error_rate_breached = bool(tests.latency_breached[0]), bool(tests.error_rate_breached[0])
    difference, variance = float(looks.difference[0]), float(looks.variance[0])
    enough_labels = bool(looks.enough_labels[0])

    lower, upper = previous.difference_lower, previous.difference_upper
    if enough_labels and math.isfinite(variance):
        half_width = always_valid_half_width(variance, policy.mixing_sd, policy.alpha)
        lower, upper = max(lower, difference - half_width), min(upper, difference + half_width)
    state = SequentialState(
        p_value_better=float(looks.p_value_better[0]),
        p_value_worse=float(looks.p_value_worse[0]),
        p_value_futility=float(looks.p_value_futility[0]),
        p_value_error_rate=float(tests.p_value_error_rate[0]),
        p_value_latency=float(tests.p_value_latency[0]),
        p_value_srm=float(looks.p_value_srm[0]),
        difference_lower=lower,
        difference_upper=upper,
    )

    assigned_control = sum(step.control.n_assigned for step in steps)
    assigned_treatment = sum(step.treatment.n_assigned for step in steps)
    assigned = assigned_control + assigned_treatment
    labelled_control = sum(step.control.n_labelled for step in steps)
    labelled_treatment = sum(step.treatment.n_labelled for step in steps)
    rate_control = (
        sum(step.control.successes for step in steps) / labelled_control if labelled_control else None
    )
    rate_treatment = (
        sum(step.treatment.successes for step in steps) / labelled_treatment if labelled_treatment else None
    )
    expected_share = (
        sum(step.treatment_share * (step.control.n_assigned + step.treatment.n_assigned) for step in steps)
        / assigned
        if assigned
        else evidence.treatment_share
    )
    statistics = {
        "rule": rule,
        "look": evidence.look,
        "hours_elapsed": evidence.hours_elapsed,
        "treatment_share": evidence.treatment_share,
        "allocation_steps": len(steps),
        "metric": _metric_statistics(policy.metric, steps),
        "arms": {
            "control": _arm_statistics(control, assigned_control, labelled_control, rate_control),
            "treatment": _arm_statistics(treatment, assigned_treatment, labelled_treatment, rate_treatment),
        },
        "sample_ratio": {
            "method": "sequential multinomial test (Lindon and Malek 2022), Dirichlet prior k x planned shares, "
            "Bayes factors multiplied over allocation steps",
            "prior_concentration": policy.srm_prior_concentration,
            "log_bayes_factor": looks.srm_log_bayes_factor[0],
            "always_valid_p_value": state.p_value_srm,
            # the fixed-horizon chi-square is not valid under hourly looks; for comparison only
            "chi_square": looks.srm_chi_square[0],
            "degrees_of_freedom": looks.srm_degrees_of_freedom[0],
            "fixed_horizon_p_value": srm_p_value(float(looks.srm_chi_square[0]), int(looks.srm_degrees_of_freedom[0])),
            "threshold": policy.srm_p_value_threshold,
            "expected_treatment_share": expected_share,
            "observed_treatment_share": assigned_treatment / assigned if assigned else None,
        },
        "guardrails": {
            "measured": guardrails_measured,
            "min_assigned_per_arm": policy.min_assigned_for_guardrails,
            "latency_p95_ratio": latency_p95_ratio,
            "max_latency_p95_ratio": policy.max_latency_p95_ratio,
            "latency_p95_increase_ms": latency["increase_ms"],
            "latency_measured": latency["measured"],
            "latency_p95_tolerance_ms": policy.latency_p95_tolerance_ms,
            "latency_breached": latency_breached,
            "error_rate_increase": error_rate_increase,
            "max_error_rate_increase": policy.max_error_rate_increase,
            "error_rate_breached": error_rate_breached,
            "method": "one-sided mSPRTs with margins, pooled over allocation steps: H0 error-rate increase <= "
            "max_error_rate_increase; H0 mean ln(latency) increase <= ln(max_latency_p95_ratio), a breach also "
            "needs the p95 latency_p95_tolerance_ms slower",
            "counted": bool(tests.enough[0]),
            "error_rate_difference": float(tests.error_rate_difference[0]),
            "error_rate_variance": float(tests.error_rate_variance[0]),
            "always_valid_p_value_error_rate": state.p_value_error_rate,
            "log_latency_difference": float(tests.log_latency_difference[0]),
            "log_latency_variance": float(tests.log_latency_variance[0]),
            "always_valid_p_value_latency": state.p_value_latency,
            "error_rate_mixing_sd": policy.error_rate_mixing_sd,
            "latency_mixing_sd": policy.latency_mixing_sd,
        },
        "test": {
            "method": "mSPRT, one-sided normal mixtures, within-step inverse-variance weighted difference",
            "alpha": policy.alpha,
            "mixing_sd": policy.mixing_sd,
            "likelihood_ratio_threshold": 1 / policy.alpha,
            "minimum_detectable_effect": policy.minimum_detectable_effect,
            "min_labelled_per_arm": policy.min_labelled_per_arm,
            "enough_labels": enough_labels,
            "difference": difference,
            "difference_variance": variance,
            # The fixed-horizon z-test is not valid under hourly looks; stored for comparison only.
            "fixed_horizon_p_value_better": float(stats.norm.sf(difference / math.sqrt(variance)))
            if variance > 0
            else None,
            "likelihood_ratio_better": math.exp(min(700.0, float(looks.log_likelihood_ratio_better[0]))),
            "always_valid_p_value_better": state.p_value_better,
            "always_valid_p_value_worse": state.p_value_worse,
            "always_valid_p_value_futility": state.p_value_futility,
            "always_valid_interval": [lower, upper],
            "always_valid_interval_level": 1 - 2 * policy.alpha,
        },
        "max_duration_hours": policy.max_duration_hours,
        "next_ramp_share": next_ramp_share,
        "allocation": {
            "strategy": policy.strategy,
            "current_share": evidence.treatment_share,
            "target_share": float(looks.target_share[0]),
            "posterior_p_treatment_better": float(looks.p_treatment_better[0]),
            "epsilon": policy.epsilon if policy.strategy == "epsilon_greedy" else None,
            "share_bounds": [policy.bandit_min_share, policy.bandit_max_share] if policy.is_bandit else None,
            "min_share_change": policy.min_share_change if policy.is_bandit else None,
        },
    }
    next_allocation = {
        "continue": evidence.treatment_share,
        "ramp": next_ramp_share,
        "reallocate": float(looks.target_share[0]),
        "promote": 1.0,
    }.get(action, 0.0)
    reason = _reason(rule, evidence, policy, statistics, next_allocation)
    return Decision(action, float(next_allocation), reason, _plain(statistics), state)


def _step_counts(steps: tuple[AllocationStep, ...], metric: str = "accuracy") -> _StepCounts:
    """One experiment's counts, one column per step; the primary metric's n, sum (and, for
    ``outcome_mean``, sum of squares) as "labelled" and "successes"."""

    def row(values: Any) -> np.ndarray:
        return np.array([list(values)], dtype=float)

    control = [step.control.metric_counts(metric) for step in steps]
    treatment = [step.treatment.metric_counts(metric) for step in steps]
    mean = metric == "outcome_mean"
    return _StepCounts(
        treatment_share=row(step.treatment_share for step in steps),
        assigned_control=row(step.control.n_assigned for step in steps),
        assigned_treatment=row(step.treatment.n_assigned for step in steps),
        labelled_control=row(n for n, _, _ in control),
        labelled_treatment=row(n for n, _, _ in treatment),
        successes_control=row(total for _, total, _ in control),
        successes_treatment=row(total for _, total, _ in treatment),
        guardrails=_guardrail_counts([step.control for step in steps], [step.treatment for step in steps]),
        sum_squares_control=row(squares for _, _, squares in control) if mean else None,
        sum_squares_treatment=row(squares for _, _, squares in treatment) if mean else None,
    )


def _guardrail_counts(controls: list[ArmEvidence], treatments: list[ArmEvidence]) -> _GuardrailCounts:
    """One experiment's guardrail counts, one column per step; a latency not measured is NaN."""

    def row(arms: list[ArmEvidence], field: str) -> np.ndarray:
        return np.array([[np.nan if getattr(arm, field) is None else getattr(arm, field) for arm in arms]], dtype=float)

    return _GuardrailCounts(
        predictions_control=row(controls, "n_predictions"),
        predictions_treatment=row(treatments, "n_predictions"),
        errors_control=row(controls, "n_errors"),
        errors_treatment=row(treatments, "n_errors"),
        log_latency_mean_control=row(controls, "log_latency_mean"),
        log_latency_variance_control=row(controls, "log_latency_variance"),
        log_latency_mean_treatment=row(treatments, "log_latency_mean"),
        log_latency_variance_treatment=row(treatments, "log_latency_variance"),
    )


def _metric_statistics(metric: str, steps: tuple[AllocationStep, ...]) -> dict[str, Any]:
    """The primary metric of each arm over all steps: its n, value (rate or mean) and sample sd."""

    def arm(arms: list[ArmEvidence]) -> dict[str, Any]:
        n, total, squares = (sum(values) for values in zip(*(a.metric_counts(metric) for a in arms), strict=True))
        value = total / n if n else None
        sd = math.sqrt(max(squares - n * value**2, 0.0) / (n - 1)) if n > 1 else None
        return {"n": int(n), "value": value, "sd": sd}

    return {"name": metric, "control": arm([step.control for step in steps]),
            "treatment": arm([step.treatment for step in steps])}  # fmt: skip


METRIC_LABELS = {"accuracy": "accuracy", "outcome_rate": "conversion", "outcome_mean": "mean outcome"}


def _metric_text(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "outcome_rate":
        return f"{value:.2%}"
    if metric == "outcome_mean":
        return f"{value:.4g}"
    return f"{value:.4f}"


def _arm_statistics(
    arm: ArmEvidence, assigned: int, labelled: int, success_rate: float | None
) -> dict[str, Any]:
    return {
        "name": arm.name,
        "n_assigned": assigned,
        "n_labelled": labelled,
        "success_rate": success_rate,
        "n_assigned_at_step": arm.n_assigned,
        "error_rate_at_step": arm.error_rate,
        "latency_p95_ms_at_step": arm.latency_p95_ms,
    }


def _reason(
    rule: str, evidence: Evidence, policy: Policy, statistics: dict[str, Any], next_allocation: float
) -> str:
    control, treatment = evidence.control, evidence.treatment
    arms, srm, guardrails, test = (
        statistics["arms"],
        statistics["sample_ratio"],
        statistics["guardrails"],
        statistics["test"],
    )
    lower, upper = test["always_valid_interval"]
    metric = statistics["metric"]
    counted = "labelled" if policy.metric == "accuracy" else "with an outcome"
    estimate = (
        f"{METRIC_LABELS[policy.metric]} {_metric_text(policy.metric, metric['treatment']['value'])} vs "
        f"{_metric_text(policy.metric, metric['control']['value'])} (treatment vs control, "
        f"{metric['treatment']['n']:,} and {metric['control']['n']:,} {counted}), "
        f"difference {_signed(test['difference'])}, always-valid {test['always_valid_interval_level']:.0%} interval "
        f"[{lower:+.4f}, {upper:+.4f}]"
    )
    if rule == "sample_ratio_mismatch":
        total = arms["control"]["n_assigned"] + arms["treatment"]["n_assigned"]
        return (
            f"Halt: sample-ratio mismatch, the treatment has {srm['observed_treatment_share']:.1%} of {total:,} assigned units "
            f"where {srm['expected_treatment_share']:.1%} was planned (sequential multinomial test: always-valid "
            f"{_p_value_text(srm['always_valid_p_value'])} <= {policy.srm_p_value_threshold:g}); assignment is broken, all traffic returns to the control."
        )
    if rule == "guardrail_breach":
        breaches = []
        if guardrails["latency_breached"]:
            breaches.append(
                f"latency is higher by more than the {policy.max_latency_p95_ratio:.2f}x margin (mean ln(latency) "
                f"{guardrails['log_latency_difference']:+.3f}, x{math.exp(guardrails['log_latency_difference']):.2f}; "
                f"always-valid p = {guardrails['always_valid_p_value_latency']:.3g} <= {policy.alpha:g}) and its p95 "
                f"{_ms(treatment.latency_p95_ms)} vs {_ms(control.latency_p95_ms)} is more than "
                f"+{policy.latency_p95_tolerance_ms:g} ms slower"
            )
        if guardrails["error_rate_breached"]:
            breaches.append(
                f"the error rate increased by more than the {policy.max_error_rate_increase:+.2%} margin "
                f"({treatment.error_rate:.2%} vs {control.error_rate:.2%} at this step, increase over all steps "
                f"{guardrails['error_rate_difference']:+.2%}; always-valid p = "
                f"{guardrails['always_valid_p_value_error_rate']:.3g} <= {policy.alpha:g})"
            )
        return f"Reject: guardrail breached at {evidence.treatment_share:.0%} traffic: {'; '.join(breaches)}."
    if rule == "treatment_better":
        return (
            f"Promote: the treatment is better, {estimate}; always-valid p = {test['always_valid_p_value_better']:.3g} "
            f"<= alpha {policy.alpha:g} at look {evidence.look} ({evidence.hours_elapsed:g} h)."
        )
    if rule == "treatment_worse":
        return (
            f"Reject: the treatment is worse, {estimate}; always-valid p = {test['always_valid_p_value_worse']:.3g} "
            f"<= alpha {policy.alpha:g} at look {evidence.look} ({evidence.hours_elapsed:g} h)."
        )
    if rule == "futility":
        return (
            f"Reject for futility: an improvement of {policy.minimum_detectable_effect:+.4f} is ruled out, {estimate}; "
            f"always-valid p = {test['always_valid_p_value_futility']:.3g} <= alpha {policy.alpha:g}."
        )
    if rule == "max_duration":
        return (
            f"Inconclusive after {evidence.hours_elapsed:g} h (max {policy.max_duration_hours:g} h): {estimate}; "
            f"always-valid p(better) = {test['always_valid_p_value_better']:.3g}, p(worse) = "
            f"{test['always_valid_p_value_worse']:.3g}; the champion keeps all traffic."
        )
    if rule == "ramp":
        return (
            f"Ramp from {evidence.treatment_share:.0%} to {next_allocation:.0%}: no guardrail breached with "
            f"{treatment.n_assigned:,} treatment units at this step (latency p95 ratio {_ratio(guardrails['latency_p95_ratio'])}, "
            f"{guardrails['latency_p95_increase_ms']:+.1f} ms, always-valid p(over {policy.max_latency_p95_ratio:.2f}x) = "
            f"{guardrails['always_valid_p_value_latency']:.3g}; error rate {treatment.error_rate:.2%} vs {control.error_rate:.2%}, "
            f"always-valid p(increase over {policy.max_error_rate_increase:+.2%}) = {guardrails['always_valid_p_value_error_rate']:.3g}); "
            f"{estimate}; always-valid p(better) = {test['always_valid_p_value_better']:.3g}."
        )
    if rule == "reallocate":
        allocation = statistics["allocation"]
        how = (
            f"Thompson sampling: P(treatment better) = {allocation['posterior_p_treatment_better']:.3f}"
            if policy.strategy == "thompson"
            else f"epsilon-greedy (epsilon {policy.epsilon:g}): the "
            f"{'treatment' if allocation['posterior_p_treatment_better'] > 0.5 else 'control'} leads"
        )
        change = (
            f"Reallocate from {evidence.treatment_share:.0%} to {next_allocation:.0%} of the units"
            if not math.isclose(next_allocation, evidence.treatment_share)
            else f"New allocation period, still at {next_allocation:.0%} (a change below {policy.min_share_change:.0%} is not applied)"
        )
        return (
            f"{change}: {how}, clipped to [{policy.bandit_min_share:.0%}, {policy.bandit_max_share:.0%}]; "
            f"guardrails pass at this allocation; {estimate}; always-valid p(better) = "
            f"{test['always_valid_p_value_better']:.3g}."
        )
    if not test["enough_labels"]:
        what = "labels" if policy.metric == "accuracy" else "outcomes"
        return (
            f"Continue at {evidence.treatment_share:.0%}: waiting for {what}, {metric['control']['n']:,} in control "
            f"and {metric['treatment']['n']:,} in treatment; each arm needs {policy.min_labelled_per_arm:,} "
            f"before the test of {METRIC_LABELS[policy.metric]} counts."
        )
    if not guardrails["latency_measured"] and min(control.n_assigned, treatment.n_assigned) > 0:
        missing = " and ".join(arm.name for arm in (control, treatment) if arm.latency_p95_ms is None)
        return (
            f"Continue at {evidence.treatment_share:.0%}: latency not measured in {missing}, so the latency guardrail "
            f"cannot pass and nothing is promoted or ramped until it is; {estimate}."
        )
    return (
        f"Continue at {evidence.treatment_share:.0%}: no conclusion yet, {estimate}; always-valid p(better) = "
        f"{test['always_valid_p_value_better']:.3g}, p(worse) = {test['always_valid_p_value_worse']:.3g} "
        f"(alpha {policy.alpha:g})."
    )


def _ms(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f} ms"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.4f}"


def _p_value_text(p_value: float) -> str:
    return f"p = {p_value:.3g}" if p_value >= 1e-300 else "p < 1e-300"


def _signed(value: float) -> str:
    return f"{value:+.4f}" if math.isfinite(value) else "n/a"


def _plain(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN and infinities to None, tuples to lists."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


# --- after a promotion: the watch window ---

WATCH_RULES: tuple[tuple[str, Action], ...] = (
    ("degraded", "rollback"),
    ("guardrail_breach", "rollback"),
    ("window_passed", "keep"),
    ("no_conclusion_yet", "continue"),
)
WATCH_RULE_NAMES = tuple(name for name, _ in WATCH_RULES)


@dataclass(frozen=True)
class WatchPolicy:
    """When a freshly promoted champion is rolled back: during ``window_hours`` after the promotion it is
    compared with itself as the experiment's treatment. It is rolled back when the always-valid test says
    its success rate fell by more than ``max_success_rate_drop`` (null: drop <= margin), or when its
    latency p95 or error rate grew beyond the guardrails; at the end of the window it is kept."""

    window_hours: float = 72.0  # the spec default (promotion.watch.window, 3d)
    max_success_rate_drop: float = 0.03  # absolute, on the primary 0/1 outcome
    min_labelled: int = 200  # labelled predictions since the promotion before the test counts
    alpha: float = 0.05
    mixing_sd: float = 0.02
    max_latency_p95_ratio: float = 1.25  # p95 after / p95 during the experiment
    latency_p95_tolerance_ms: float = 5.0  # ... and more than this many ms slower (see latency_breach)
    max_error_rate_increase: float = 0.005
    min_assigned_for_guardrails: int = 200
    error_rate_mixing_sd: float = 0.01  # the guardrails' mixing sds, as in Policy
    latency_mixing_sd: float = 0.10

    def __post_init__(self) -> None:
        _check_policy_numbers(self)
        _check_guardrail_policy(self)
        if not self.window_hours >= 0 or not self.max_success_rate_drop >= 0:
            raise ValueError("window_hours and max_success_rate_drop must be >= 0")
        if not self.latency_p95_tolerance_ms >= 0:
            raise ValueError(f"latency_p95_tolerance_ms must be >= 0, got {self.latency_p95_tolerance_ms}")
        if not 0 < self.alpha < 1 or not self.mixing_sd > 0:
            raise ValueError(f"alpha must be in (0, 1) and mixing_sd > 0, got {self.alpha}, {self.mixing_sd}")

    @classmethod
    def from_spec(cls, watch: Watch, window: timedelta | None = None) -> WatchPolicy:
        """The policy of a spec's ``promotion.watch`` block; ``window`` overrides its length (a watch keeps
        the window its promotion set, whatever the spec says now)."""
        values = watch.model_dump(exclude={"window", "poke_interval"})
        return cls(**values, window_hours=(watch.window if window is None else window) / timedelta(hours=1))


@dataclass(frozen=True)
class WatchEvidence:
    """The promoted version as the experiment's treatment (``during``) and since its promotion (``after``).
    ``previous`` is the state stored with the last watch decision; its ``p_value_worse`` is the running
    always-valid p-value of "degraded beyond the margin"."""

    during: ArmEvidence
    after: ArmEvidence
    hours_elapsed: float
    look: int
    previous: SequentialState | None = None

    def __post_init__(self) -> None:
        _check_number("watch evidence", "hours_elapsed", self.hours_elapsed, low=0.0)
        _check_count("watch evidence", "look", self.look)
        if self.previous is not None:
            _check_state(self.previous)


def _evaluate_watch(
    labelled_during: np.ndarray,
    successes_during: np.ndarray,
    labelled_after: np.ndarray,
    successes_after: np.ndarray,
    *,
    guardrail_breach: np.ndarray,
    hours_elapsed: np.ndarray | float,
    previous_p_value: np.ndarray,
    policy: WatchPolicy,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rule index, running p-value of degradation, difference after - during, its variance), vectorised."""

    def one_step(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=float)[..., None]

    difference, variance = difference_in_rates(
        one_step(labelled_during), one_step(successes_during), one_step(labelled_after), one_step(successes_after),
        -policy.max_success_rate_drop,
    )
    # H0: difference >= -margin; evidence against it is -margin - difference > 0 (the futility form)
    log_lr = log_one_sided_mixture_likelihood_ratio(-policy.max_success_rate_drop - difference, variance, policy.mixing_sd)
    enough_labels = np.asarray(labelled_after) >= policy.min_labelled
    p_value = np.where(
        enough_labels, np.minimum(previous_p_value, p_value_from_log_likelihood_ratio(log_lr)), previous_p_value
    )
    conditions = [
        p_value <= policy.alpha,
        np.asarray(guardrail_breach, dtype=bool),
        np.broadcast_to(np.asarray(hours_elapsed) >= policy.window_hours, p_value.shape),
    ]
    rule = np.select(conditions, np.arange(len(conditions)), default=len(WATCH_RULES) - 1)
    return rule, p_value, difference, variance


def decide_watch(evidence: WatchEvidence, policy: WatchPolicy) -> Decision:
    """Keep or roll back a new champion at one look of its watch window. ``next_allocation`` is its share:
    1.0 (kept, or still watched) or 0.0 (rolled back to the previous champion)."""
    during, after = evidence.during, evidence.after
    previous = evidence.previous or SequentialState()
    latency = _latency_comparison(after, during, policy.latency_p95_tolerance_ms)
    latency_p95_ratio = latency["ratio"]
    error_rate_increase = after.error_rate - during.error_rate
    tests = _guardrail_tests(_guardrail_counts([during], [after]), latency_over_tolerance=np.array([latency["over_tolerance"]]),
                             previous_p_value_error_rate=np.array([previous.p_value_error_rate]),
                             previous_p_value_latency=np.array([previous.p_value_latency]), policy=policy)  # fmt: skip
    measured = bool(tests.enough[0])
    latency_breached, error_rate_breached = bool(tests.latency_breached[0]), bool(tests.error_rate_breached[0])
    breach = latency_breached or error_rate_breached
    rule_index, p_value, difference, variance = _evaluate_watch(
        np.array(during.n_labelled), np.array(during.successes), np.array(after.n_labelled), np.array(after.successes),
        guardrail_breach=np.array(breach), hours_elapsed=evidence.hours_elapsed,
        previous_p_value=np.array(previous.p_value_worse), policy=policy,
    )  # fmt: skip
    rule, action = WATCH_RULES[int(rule_index)]
    difference, variance = float(difference), float(variance)
    enough_labels = after.n_labelled >= policy.min_labelled
    lower, upper = previous.difference_lower, previous.difference_upper
    if enough_labels and math.isfinite(variance) and variance > 0:
        half_width = always_valid_half_width(variance, policy.mixing_sd, policy.alpha)
        lower, upper = max(lower, difference - half_width), min(upper, difference + half_width)
    state = SequentialState(p_value_worse=float(p_value), p_value_error_rate=float(tests.p_value_error_rate[0]),
                            p_value_latency=float(tests.p_value_latency[0]), difference_lower=lower,
                            difference_upper=upper)  # fmt: skip
    statistics = {
        "rule": rule,
        "look": evidence.look,
        "hours_elapsed": evidence.hours_elapsed,
        "window_hours": policy.window_hours,
        "during_experiment": _arm_statistics(during, during.n_assigned, during.n_labelled, during.success_rate),
        "after_promotion": _arm_statistics(after, after.n_assigned, after.n_labelled, after.success_rate),
        "test": {
            "method": "mSPRT, one-sided normal mixture: H0 success rate after >= during - max_success_rate_drop",
            "alpha": policy.alpha,
            "mixing_sd": policy.mixing_sd,
            "max_success_rate_drop": policy.max_success_rate_drop,
            "min_labelled": policy.min_labelled,
            "enough_labels": enough_labels,
            "difference": difference,
            "difference_variance": variance,
            "always_valid_p_value_degraded": state.p_value_worse,
            "always_valid_interval": [lower, upper],
            "always_valid_interval_level": 1 - 2 * policy.alpha,
        },
        "guardrails": {
            "measured": measured,
            "min_assigned": policy.min_assigned_for_guardrails,
            "latency_p95_ratio": latency_p95_ratio,
            "max_latency_p95_ratio": policy.max_latency_p95_ratio,
            "latency_p95_increase_ms": latency["increase_ms"],
            "latency_measured": latency["measured"],
            "latency_p95_tolerance_ms": policy.latency_p95_tolerance_ms,
            "latency_breached": latency_breached,
            "error_rate_increase": error_rate_increase,
            "max_error_rate_increase": policy.max_error_rate_increase,
            "error_rate_breached": error_rate_breached,
            "always_valid_p_value_error_rate": state.p_value_error_rate,
            "always_valid_p_value_latency": state.p_value_latency,
            "log_latency_difference": float(tests.log_latency_difference[0]),
        },
    }
    rates = (
        f"success rate {_rate(after.success_rate)} since the promotion ({after.n_labelled:,} labelled) vs "
        f"{_rate(during.success_rate)} in the experiment ({during.n_labelled:,} labelled), difference {_signed(difference)}"
    )
    if rule == "degraded":
        reason = (
            f"Roll back: the new champion degraded, {rates}; always-valid p = {state.p_value_worse:.3g} <= alpha "
            f"{policy.alpha:g} that it dropped by more than {policy.max_success_rate_drop:g}."
        )
    elif rule == "guardrail_breach":
        reason = (
            f"Roll back: guardrail breached since the promotion: latency p95 {_ms(after.latency_p95_ms)} vs "
            f"{_ms(during.latency_p95_ms)} (ratio {_ratio(latency_p95_ratio)}, limit {policy.max_latency_p95_ratio:.2f}x "
            f"and +{policy.latency_p95_tolerance_ms:g} ms; always-valid p = {state.p_value_latency:.3g}), error rate "
            f"{after.error_rate:.2%} vs {during.error_rate:.2%} (limit +{policy.max_error_rate_increase:.2%}; always-valid "
            f"p = {state.p_value_error_rate:.3g}); {'latency' if latency_breached else 'error rate'} breached at alpha {policy.alpha:g}."
        )
    elif rule == "window_passed":
        reason = (
            f"Keep: the {policy.window_hours:g} h watch window passed without degradation ({rates}; "
            f"always-valid p(degraded) = {state.p_value_worse:.3g})"
            + ("." if enough_labels else f"; only {after.n_labelled:,} labels arrived, {policy.min_labelled:,} were needed to judge.")
        )
    else:
        reason = (
            f"Watching ({evidence.hours_elapsed:g} of {policy.window_hours:g} h): {rates}; always-valid "
            f"p(degraded) = {state.p_value_worse:.3g}"
            + ("." if enough_labels else f"; the test counts from {policy.min_labelled:,} labels.")
        )
    return Decision(action, 0.0 if action == "rollback" else 1.0, reason, _plain(statistics), state)
