"""Scenarios of the closed loop: what the world does to the example model over simulated days.

A :class:`LoopScenario` is a data-generating process with scheduled events, deterministic for its
seed; :mod:`driftloop.sim.loop` plays it through the real DAGs. It adds to the world of
:mod:`driftloop.sim.world` (features, the true relationship, covariate shift, concept drift, label
delay and labels that never arrive) what only a running system meets:

* **traffic-volume changes** (:class:`VolumeChange`): the requests per interval scale from a time on;
* **data-quality faults** (:class:`DataFault`): a feature going NULL, a category nobody trained on, a
  unit change (a value multiplied), on a share of the requests, for a time range;
* **how each arm behaves online** (:class:`ArmBehaviour`): serving latency (lognormal, seeded) and
  serving errors in *every* arm, never measured on the machine, so the story is the same everywhere
  and the guardrails face production-like noise; and a serving skew (a feature the arm's serving
  path scales, e.g. cents instead of dollars), which makes a challenger that was good offline worse
  on live traffic.

``SCENARIOS`` holds the named ones (``driftloop simulate --scenario NAME``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from driftloop.core.spec import ModelSpec
from driftloop.sim.world import FEATURE_PREFIX, ConceptDrift, CovariateShift, Scenario, generate_predictions

__all__ = ["SCENARIOS", "ArmBehaviour", "DataFault", "LoopScenario", "VolumeChange", "arm_hooks", "get_scenario",
           "serving_transform"]

DEFAULT_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday; the clock is an input, never the wall clock


@dataclass(frozen=True)
class VolumeChange:
    """From ``start`` on, the requests per interval are multiplied by ``factor`` (several multiply)."""

    start: datetime
    factor: float


@dataclass(frozen=True)
class DataFault:
    """From ``start`` to ``end`` (open when None), ``share`` of the requests carry a broken ``feature``:

    * ``kind="null"``: the value is missing;
    * ``kind="new_category"``: the value is ``value`` (a category the model never saw);
    * ``kind="unit_change"``: the value is multiplied by ``value`` (e.g. 100: cents instead of dollars).
    """

    start: datetime
    feature: str
    kind: str
    value: Any = None
    end: datetime | None = None
    share: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("null", "new_category", "unit_change"):
            raise ValueError(f"DataFault.kind must be null, new_category or unit_change (got {self.kind!r})")
        if not 0.0 < self.share <= 1.0:
            raise ValueError("DataFault.share must be in (0, 1]")


@dataclass(frozen=True)
class ArmBehaviour:
    """How one arm serves, whatever its offline numbers: a lognormal latency (median, sigma of its log),
    a serving error rate, and a serving skew (feature -> factor the arm's serving path applies to it)."""

    latency_median_ms: float = 40.0
    latency_sigma: float = 0.5
    error_rate: float = 0.01
    serving_skew: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LoopScenario:
    """A story for the closed loop. ``rows_per_day`` requests a day (before volume changes), in
    ``interval`` steps (each step: serve, land, run the DAGs) from ``start`` for ``days``."""

    name: str
    description: str
    days: int = 14
    start: datetime = DEFAULT_START
    interval: timedelta = timedelta(hours=12)
    rows_per_day: int = 8_000
    seed: int = 7
    label_rate: float = 0.9
    label_delay_mean: timedelta = timedelta(hours=4)
    concept_drift: ConceptDrift | None = None
    covariate_shift: tuple[CovariateShift, ...] = ()
    volume: tuple[VolumeChange, ...] = ()
    faults: tuple[DataFault, ...] = ()
    champion: ArmBehaviour = ArmBehaviour()
    challenger: ArmBehaviour = ArmBehaviour()
    expect: Mapping[str, Any] = field(default_factory=dict)  # what the story should show (tests, summary)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("LoopScenario.start must be timezone-aware")
        if self.interval <= timedelta(0) or timedelta(days=1) % self.interval:
            raise ValueError("LoopScenario.interval must divide a day (e.g. 1h, 6h, 12h, 24h)")
        if self.days < 1 or self.rows_per_day < 1:
            raise ValueError("LoopScenario needs days >= 1 and rows_per_day >= 1")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def intervals(self) -> list[tuple[datetime, datetime]]:
        """The ``[start, end)`` steps of the story, in time order."""
        count = int(timedelta(days=self.days) / self.interval)
        return [(self.start + i * self.interval, self.start + (i + 1) * self.interval) for i in range(count)]

    def world(self, model_version: str = "1") -> Scenario:
        """The world of :mod:`driftloop.sim.world` this story lives in (rows are set per interval)."""
        return Scenario(rows_per_hour=0, seed=self.seed, model_version=model_version, label_rate=self.label_rate,
                        label_delay_mean=self.label_delay_mean, covariate_shift=self.covariate_shift,
                        concept_drift=self.concept_drift)  # fmt: skip

    def rows(self, start: datetime, end: datetime) -> int:
        """Requests in ``[start, end)``: the daily rate, scaled by every volume change begun by ``start``."""
        factor = math.prod(change.factor for change in self.volume if change.start <= start)
        return max(0, round(self.rows_per_day * factor * ((end - start) / timedelta(days=1))))

    def requests(self, spec: ModelSpec, start: datetime, end: datetime):
        """The requests of ``[start, end)`` with their truth (a :func:`generate_predictions` frame), with
        this interval's data-quality faults applied to the features. Deterministic for the seed."""
        frame = generate_predictions(spec, self.rows(start, end), start, end, self.world())
        for fault in self.faults:
            if fault.start <= start and (fault.end is None or start < fault.end):
                _apply_fault(frame, fault, seed=self.seed, start=start)
        return frame

    def behaviour(self, role: str) -> ArmBehaviour:
        return self.challenger if role == "challenger" else self.champion


def _apply_fault(frame, fault: DataFault, *, seed: int, start: datetime) -> None:
    column = FEATURE_PREFIX + fault.feature
    if column not in frame.columns:
        raise KeyError(f"DataFault: the spec has no feature {fault.feature!r}")
    rng = np.random.default_rng([seed, int(start.timestamp()), len(frame), 0xFA])
    hit = rng.random(len(frame)) < fault.share
    if fault.kind == "null":
        frame[column] = frame[column].astype(object).where(~hit, None)
    elif fault.kind == "new_category":
        frame[column] = frame[column].astype(object).where(~hit, str(fault.value))
    else:
        frame[column] = frame[column].where(~hit, frame[column] * float(fault.value))


def arm_hooks(scenario: LoopScenario, role_of: Callable[[str], str], seed: int):
    """The Router's ``latency`` and ``failure`` hooks for this scenario: per served request, a seeded
    lognormal latency and a seeded serving error drawn from the behaviour of the version's role
    (``role_of(version)`` -> "champion" / "challenger"). One generator, so a rerun draws the same."""
    rng = np.random.default_rng([scenario.seed, seed, 0x5E])

    def latency(version: str) -> float:
        arm = scenario.behaviour(role_of(version))
        return float(arm.latency_median_ms * math.exp(arm.latency_sigma * rng.standard_normal()))

    def failure(version: str) -> str | None:
        arm = scenario.behaviour(role_of(version))
        return "TimeoutError: simulated serving timeout" if rng.random() < arm.error_rate else None

    return latency, failure


def serving_transform(scenario: LoopScenario, role_of: Callable[[str], str]):
    """The Router's ``transform`` hook: the features as each version's serving path hands them to its
    model (the role's serving skew applied to a copy; the logged features stay what the client sent)."""

    def transform(version: str, frame):
        skew = scenario.behaviour(role_of(version)).serving_skew
        if not skew:
            return frame
        frame = frame.copy()
        for feature, factor in skew.items():
            frame[feature] = frame[feature] * float(factor)
        return frame

    return transform


def _day(n: int) -> datetime:
    return DEFAULT_START + timedelta(days=n)


SCENARIOS: dict[str, LoopScenario] = {
    scenario.name: scenario
    for scenario in (
        LoopScenario(
            name="drift",
            description="the churn relationship moves from day 6 (concept drift): quality drops, a retrain "
            "fires, the challenger passes the gate, wins on live traffic and is promoted",
            concept_drift=ConceptDrift(start=_day(6), strength=0.7),
            expect={"promoted": True, "retrain_trigger": "degradation"},
        ),
        LoopScenario(
            name="control",
            description="nothing changes: no retrain beyond the schedule, nothing promoted, no critical alert",
            expect={"promoted": False},
        ),
        LoopScenario(
            name="worse_online",
            description="concept drift from day 4; the challenger wins offline but its serving path reads "
            "monthly_charges in cents (a serving skew): worse on live traffic, rejected",
            days=10,
            concept_drift=ConceptDrift(start=_day(4), strength=0.7),
            challenger=ArmBehaviour(serving_skew={"monthly_charges": 100.0}),
            expect={"promoted": False, "rejected": True},
        ),
        LoopScenario(
            name="data_faults",
            description="a traffic surge on day 3 (x3), then payment_method goes NULL for a third of the "
            "requests on day 5 and a new contract type appears on day 7: alerts, no promotion",
            days=9,
            volume=(VolumeChange(_day(3), 3.0), VolumeChange(_day(4), 1 / 3)),
            faults=(DataFault(_day(5), "payment_method", "null", share=0.35, end=_day(6)),
                    DataFault(_day(7), "contract_type", "new_category", value="weekly", share=0.2)),  # fmt: skip
            expect={"promoted": False},
        ),
    )
}


def get_scenario(name: str, **overrides: Any) -> LoopScenario:
    """A named scenario, optionally with fields replaced (``days=4``, ``rows_per_day=2000``, ...)."""
    if name not in SCENARIOS:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return replace(SCENARIOS[name], **overrides)
