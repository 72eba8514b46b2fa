"""The simulator's data-generating process: contract files in the landing zone, from any model spec.

Everything is driven by a :class:`~driftloop.core.spec.ModelSpec`, so the same code serves the shipped
`churn` example, a 20-feature benchmark spec or a multiclass model:

* **World** (fixed by ``(spec, seed)``): per feature a plausible distribution (numeric: normal or
  shifted lognormal, clipped to the spec's ``[min, max]``; categorical: per-category weights;
  boolean: a probability), chosen deterministically from the feature name and the seed, and a true
  relationship ``P(class | features)``: a logistic function of the standardized features (binary)
  or a softmax over per-class linear scores (multiclass).
* **Traffic** (per window): features, segment, unit, latency, the *serving model*'s scores
  (true logits + noise, so it is good but not perfect: AUC ~0.8), the true label drawn from the
  true probabilities, and whether / when that label comes back (feedback with an exponential delay).
* **Scenario hooks**: scheduled covariate shift (a feature's distribution moves; the true
  relationship given the features does not) and concept drift (the true relationship moves away
  from what the serving model learnt, so its quality degrades).

Public API:

* :func:`generate_predictions` -- an in-memory ``pandas.DataFrame`` (contract columns, features as
  ``features.<name>``, scores as ``scores.<class>``, plus the truth: ``label``, ``labelled``,
  ``feedback_ts``, ``outcome``, ``p_true.<class>``).
* :func:`prediction_lines` / :func:`feedback_lines` -- serialize such a frame to contract JSON lines.
* :func:`simulate` -- play ``[start, end)`` hour by hour into ``<root>/<model>/{predictions,feedback}/
  dt=YYYY-MM-DD/*.jsonl.gz``, writing only what has happened by ``now``.
* The catalogue of bad inputs the demo (and the ingest tests) show is in :mod:`driftloop.sim.faults`.

Determinism: the same spec, scenario and window give byte-identical files. The world depends only
on ``(spec, seed)``; a window's random draws only on ``(seed, model, version, variant, window start,
window end, rows)``, so simulating two days at once or one day after the other writes the same
prediction files, and a scenario hook changes only what it is about (a covariate shift of one
feature leaves every other column identical).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from driftloop.core.contracts import FEEDBACK, FEEDBACK_FIELDS, PREDICTION_FIELDS, PREDICTIONS, landing_path
from driftloop.core.spec import Feature, FeatureType, ModelSpec, Task, parse_duration

__all__ = [
    "FEATURE_PREFIX",
    "P_TRUE_PREFIX",
    "SCORE_PREFIX",
    "ConceptDrift",
    "CovariateShift",
    "Scenario",
    "SimulationResult",
    "feedback_lines",
    "generate_predictions",
    "prediction_lines",
    "simulate",
]

FEATURE_PREFIX = "features."
SCORE_PREFIX = "scores."
P_TRUE_PREFIX = "p_true."
FEEDBACK_SOURCE = "explicit"

_HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PREDICTION_KEYS = tuple(f.name for f in PREDICTION_FIELDS)
_FEEDBACK_KEYS = tuple(f.name for f in FEEDBACK_FIELDS)
_TARGET_LOGIT_SD = 2.0  # spread of the true logits: a perfect model would reach AUC ~0.86
_CALIBRATION_ROWS = 20_000
_SCORE_DECIMALS = 6


# --------------------------------------------------------------------------------------------------
# Scenario


@dataclass(frozen=True)
class CovariateShift:
    """From ``start`` on, ``feature``'s distribution moves; ``P(label | features)`` does not.

    ``amount``:

    * numeric feature: a float, the shift of the feature's latent standard-normal draw in standard
      deviations (a normal feature's mean moves by ``amount * std``; a skewed feature's median scales);
    * boolean feature: a float added to the log-odds of ``true``;
    * categorical feature: a mapping ``category -> weight multiplier`` (``{"monthly": 3.0}`` makes
      monthly contracts three times as likely, relative to the others).

    Several shifts of one feature add up once each has started.
    """

    start: datetime
    feature: str
    amount: float | Mapping[str, float]


@dataclass(frozen=True)
class ConceptDrift:
    """From ``start`` on, the true relationship moves away from the one the serving model learnt.

    The true logits become ``(1 - a) * old + a * new`` (renormalized to the same spread), with
    ``new`` a random relationship uncorrelated with ``old`` and ``a = strength`` (reached linearly
    over ``ramp`` when given). ``strength`` 1 leaves the serving model at chance level; 0.5 costs it
    about a third of its AUC above 0.5. ``segment`` limits the drift to one segment value.
    """

    start: datetime
    strength: float = 1.0
    ramp: timedelta = timedelta(0)
    segment: str | None = None


@dataclass(frozen=True)
class Scenario:
    """How traffic, labels and the world behave in a simulation. Defaults: steady state, no faults.

    Attributes:
        rows_per_hour: predictions per simulated hour (exactly this many per hour).
        seed: fixes the world (distributions, true relationship) and the traffic; same seed, same bytes.
        model_version: written into every prediction event.
        variant: experiment arm written into every prediction event.
        experiment_id: written into every prediction event (null outside an online experiment).
        label_rate: share of predictions that ever get feedback.
        label_delay_mean: mean of the exponential delay between a request and its feedback
            (a timedelta, or a duration like ``"6h"``).
        missing_rate: share of nulls in each optional (``required: false``) feature.
        n_units: size of the pool that ``unit_id`` (``u-<int>``) is drawn from, so units repeat.
        latency_median_ms: median of the log-normal serving latency.
        model_noise: standard deviation of the noise the serving model adds to the true logits
            (0 gives a perfect model; the default gives AUC ~0.8 on the binary example).
        covariate_shift: scheduled covariate shifts; ``CovariateShift`` or ``(start, feature, amount)`` tuples.
        concept_drift: a scheduled concept drift; ``ConceptDrift`` or a ``(start, strength)`` tuple.
    """

    rows_per_hour: int = 500
    seed: int = 42
    model_version: str = "1"
    variant: str = "control"
    experiment_id: str | None = None
    label_rate: float = 0.8
    label_delay_mean: timedelta = timedelta(hours=6)
    missing_rate: float = 0.02
    n_units: int = 10_000
    latency_median_ms: float = 12.0
    model_noise: float = 1.2
    covariate_shift: Sequence[CovariateShift] = field(default_factory=tuple)
    concept_drift: ConceptDrift | None = None

    def __post_init__(self) -> None:
        delay = parse_duration(self.label_delay_mean)
        object.__setattr__(self, "label_delay_mean", delay)
        shifts = tuple(
            s if isinstance(s, CovariateShift) else CovariateShift(*s) for s in self.covariate_shift
        )
        object.__setattr__(self, "covariate_shift", shifts)
        drift = self.concept_drift
        if drift is not None and not isinstance(drift, ConceptDrift):
            object.__setattr__(self, "concept_drift", ConceptDrift(*drift))
        if self.rows_per_hour < 0:
            raise ValueError("rows_per_hour must be >= 0")
        if not 0.0 <= self.label_rate <= 1.0:
            raise ValueError("label_rate must be in [0, 1]")
        if not 0.0 <= self.missing_rate <= 1.0:
            raise ValueError("missing_rate must be in [0, 1]")
        if delay < timedelta(0):
            raise ValueError("label_delay_mean must be >= 0")
        if self.n_units < 1:
            raise ValueError("n_units must be >= 1")
        if self.latency_median_ms <= 0:
            raise ValueError("latency_median_ms must be > 0")
        if self.model_noise < 0:
            raise ValueError("model_noise must be >= 0")
        for shift in shifts:
            _aware(shift.start, "covariate_shift start")
        if self.concept_drift is not None:
            _aware(self.concept_drift.start, "concept_drift start")
            if not 0.0 <= self.concept_drift.strength <= 1.0:
                raise ValueError("concept_drift strength must be in [0, 1]")
            if self.concept_drift.ramp < timedelta(0):
                raise ValueError("concept_drift ramp must be >= 0")


@dataclass
class SimulationResult:
    """What :func:`simulate` wrote.

    ``predictions`` / ``feedback`` count the events in the files this call produced (written, or
    found already landed under the same name, hence with the same content: ``skipped_files``);
    ``pending_feedback`` counts labels that exist but arrive after ``now`` (not written: they have
    not happened yet). ``labelled_share`` is feedback / predictions of this call.
    """

    prediction_files: list[str] = field(default_factory=list)
    feedback_files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    predictions: int = 0
    feedback: int = 0
    pending_feedback: int = 0

    @property
    def labelled_share(self) -> float:
        """Feedback events written / prediction events written (0 when nothing was predicted)."""
        return self.feedback / self.predictions if self.predictions else 0.0

    @property
    def files(self) -> list[str]:
        return [*self.prediction_files, *self.feedback_files]


# --------------------------------------------------------------------------------------------------
# Small helpers


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime (got {value!r})")
    return value


def _to_ms(value: datetime, what: str) -> int:
    return (_aware(value, what) - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(ms))


def _stable_int(*parts: object) -> int:
    """A 64-bit integer from the parts, stable across processes (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(_stable_int(*parts))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _epoch_ms(column: pd.Series) -> np.ndarray:
    """A UTC datetime column as int64 epoch milliseconds (NaT -> int64 min), without Timestamp objects."""
    naive = column.dt.tz_convert("UTC").dt.tz_localize(None) if column.dt.tz is not None else column
    return naive.to_numpy().astype("datetime64[ms]").astype(np.int64)


def _iso_ms(ms: np.ndarray) -> list[str]:
    """Epoch milliseconds -> RFC 3339 strings with an explicit ``+00:00`` offset."""
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    return [t + "+00:00" for t in text.tolist()]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _with_nulls(values: list[Any], missing: np.ndarray) -> list[Any]:
    for i in np.flatnonzero(missing).tolist():
        values[i] = None
    return values


def _round_scores(probabilities: np.ndarray) -> np.ndarray:
    """Round class probabilities to 6 decimals so that each row still sums to 1 within 1e-6."""
    rounded = np.round(probabilities, _SCORE_DECIMALS)
    if rounded.shape[1] == 2:
        rounded[:, 0] = np.round(1.0 - rounded[:, 1], _SCORE_DECIMALS)
        return rounded
    rows = np.arange(rounded.shape[0])
    top = rounded.argmax(axis=1)
    rest = rounded.sum(axis=1) - rounded[rows, top]
    rounded[rows, top] = np.round(1.0 - rest, _SCORE_DECIMALS)
    return rounded


def _uuid_strings(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random (version 4 layout) UUID strings from ``rng``: deterministic for a seeded rng."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    h = raw.tobytes().hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


# --------------------------------------------------------------------------------------------------
# The world: feature distributions and the true relationship, fixed by (spec, seed)


@dataclass
class _FeatureModel:
    feature: Feature
    # numeric: x = loc + sign * scale * exp(sign * sigma * z) (lognormal) or loc + scale * z (normal)
    family: str = "normal"
    loc: float = 0.0
    scale: float = 1.0
    sigma: float = 1.0
    sign: float = 1.0
    decimals: int = 2
    z_lo: float = -math.inf
    z_hi: float = math.inf
    # categorical
    weights: np.ndarray | None = None
    # boolean
    p: float = 0.5
    # effects on the true logits: (k,) for numeric / boolean, (k, n_categories) for categorical
    coef: np.ndarray | None = None
    coef_alt: np.ndarray | None = None  # the relationship after concept drift

    @property
    def name(self) -> str:
        return self.feature.name

    def numeric_values(self, z: np.ndarray) -> np.ndarray:
        if self.family == "normal":
            x = self.loc + self.scale * z
        else:
            x = self.loc + self.sign * self.scale * np.exp(self.sign * self.sigma * z)
        lo = -np.inf if self.feature.min is None else self.feature.min
        hi = np.inf if self.feature.max is None else self.feature.max
        return np.round(np.clip(x, lo, hi), self.decimals)

    def z_of(self, x: float) -> float:
        """The latent value giving ``x`` (inverse of :meth:`numeric_values` before clipping)."""
        if self.family == "normal":
            return (x - self.loc) / self.scale
        ratio = self.sign * (x - self.loc) / self.scale
        if ratio <= 0:
            return -math.inf * self.sign
        return self.sign * math.log(ratio) / self.sigma


def _build_feature(feature: Feature, seed: int, k: int) -> _FeatureModel:
    rng = _rng("feature", seed, feature.name, feature.type.value)
    model = _FeatureModel(feature=feature)
    importance = rng.uniform(0.3, 1.0)
    if feature.type is FeatureType.numeric:
        lo, hi = feature.min, feature.max
        if lo is not None and hi is not None:
            width = max(hi - lo, 1e-9)
            if 0 <= lo <= 0.05 * width:  # counts, money, durations: skewed, most mass near the bottom
                model.family, model.loc = "lognormal", lo
                model.scale, model.sigma = width * rng.uniform(0.03, 0.15), rng.uniform(0.4, 0.7)
            else:
                model.loc, model.scale = lo + width * rng.uniform(0.25, 0.55), width * rng.uniform(0.07, 0.14)
        elif lo is not None or hi is not None:
            width = 10 ** rng.uniform(0.0, 2.0)
            model.family, model.scale, model.sigma = "lognormal", width, rng.uniform(0.3, 0.8)
            model.loc, model.sign = (lo, 1.0) if lo is not None else (hi, -1.0)
        else:
            width = 10 ** rng.uniform(-0.3, 1.3)
            model.loc, model.scale = rng.uniform(-10, 10), width
        model.decimals = int(min(4, max(0, 3 - math.floor(math.log10(max(width, 1e-9))))))
        if lo is not None:
            model.z_lo = model.z_of(lo)
        if hi is not None:
            model.z_hi = model.z_of(hi)
        model.coef = rng.normal(0, 1, k) * importance
        model.coef_alt = rng.normal(0, 1, k) * importance
    elif feature.type is FeatureType.boolean:
        model.p = float(rng.uniform(0.2, 0.6))
        model.coef = rng.normal(0, 1, k) * importance
        model.coef_alt = rng.normal(0, 1, k) * importance
    else:
        categories = feature.categories or []
        weights = np.maximum(rng.dirichlet(np.full(len(categories), 2.0)), 0.03)
        model.weights = weights / weights.sum()

        def effects() -> np.ndarray:
            e = rng.normal(0, 1, (k, len(categories)))
            e -= (e * model.weights).sum(axis=1, keepdims=True)
            sd = np.sqrt((e**2 * model.weights).sum(axis=1, keepdims=True))
            return e / np.where(sd > 0, sd, 1.0) * importance

        model.coef, model.coef_alt = effects(), effects()
    return model


class _World:
    """The data-generating process of one model spec and seed (see the module docstring)."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self.classes = [str(c) for c in spec.classes]
        self.binary = spec.task is Task.binary
        self.k = 1 if self.binary else len(self.classes)
        self.features = [_build_feature(f, seed, self.k) for f in spec.features]
        self.by_name = {m.name: m for m in self.features}
        rng = _rng("world", seed, spec.name)
        if spec.segment is None:
            self.segments: list[str] = []
        else:
            self.segments = list(spec.segment.values or [f"{spec.segment.name}_{i}" for i in (1, 2, 3)])
        self.segment_weights = rng.dirichlet(np.full(max(len(self.segments), 1), 3.0))
        self.segment_effect = rng.normal(0, 0.3, (max(len(self.segments), 1), self.k))
        # Calibrate on a steady-state sample: spread of the true logits, then the intercepts.
        self.scale = self.scale_alt = 1.0
        self.beta = np.zeros(self.k)
        self.intercept = np.zeros(self.k)
        cal = self._sample(_rng("calibration", seed, spec.name), _CALIBRATION_ROWS, None, 0, 0)
        main, alt = self._linear(cal, alt=False), self._linear(cal, alt=True)
        # The drifted relationship is made uncorrelated with the learnt one, so drift strength 1
        # leaves the serving model at chance level whatever the seed.
        centred = main - main.mean(axis=0)
        self.beta = ((alt - alt.mean(axis=0)) * centred).sum(axis=0) / np.maximum(
            (centred**2).sum(axis=0), 1e-12
        )
        alt = alt - self.beta * main
        self.scale = _TARGET_LOGIT_SD / max(float(np.std(main - main.mean(axis=0))), 1e-9)
        self.scale_alt = _TARGET_LOGIT_SD / max(float(np.std(alt - alt.mean(axis=0))), 1e-9)
        base = self.scale * main + self.segment_effect[cal["segment_code"].clip(0)]
        if self.binary:
            target = rng.uniform(0.2, 0.35)
            lo, hi = -20.0, 20.0
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if _sigmoid(base[:, 0] + mid).mean() < target else (lo, mid)
            self.intercept = np.array([(lo + hi) / 2])
        else:
            prior = rng.dirichlet(np.full(self.k, 4.0))
            self.intercept = np.log(prior) - base.mean(axis=0)

    # -- features --------------------------------------------------------------------------------

    def _sample(
        self,
        rng: np.random.Generator,
        n: int,
        scenario: Scenario | None,
        start_ms: int,
        end_ms: int,
    ) -> dict[str, Any]:
        """Draw request times, features (with covariate shift) and segments. Fixed draw order, so a
        shift of one feature leaves every other column of the same window identical."""
        out: dict[str, Any] = {}
        span = max(end_ms - start_ms, 1)
        ts = start_ms + np.sort(rng.integers(0, span, n))
        out["ts"] = ts
        missing_rate = scenario.missing_rate if scenario is not None else 0.0
        shifts = list(scenario.covariate_shift) if scenario is not None else []
        for model in self.features:
            f = model.feature
            latent = rng.standard_normal(n) if f.type is FeatureType.numeric else rng.random(n)
            missing = rng.random(n) < missing_rate if not f.required else np.zeros(n, dtype=bool)
            mine = [s for s in shifts if s.feature == f.name]
            if f.type is FeatureType.numeric:
                z = latent.copy()
                for s in mine:
                    z += float(s.amount) * (ts >= _to_ms(s.start, "shift start"))
                out[f.name] = (model.numeric_values(z), missing)
                out["_s_" + f.name] = np.clip(np.clip(z, model.z_lo, model.z_hi), -5, 5)
            elif f.type is FeatureType.boolean:
                logit = np.full(n, math.log(model.p / (1 - model.p)))
                for s in mine:
                    logit += float(s.amount) * (ts >= _to_ms(s.start, "shift start"))
                out[f.name] = (latent < _sigmoid(logit), missing)
            else:
                categories = list(f.categories or [])
                cum = np.cumsum(model.weights)
                cum[-1] = 1.0
                codes = np.searchsorted(cum, latent, side="right").clip(0, len(cum) - 1)
                for boundary in sorted({_to_ms(s.start, "shift start") for s in mine}):
                    rows = ts >= boundary
                    if not rows.any():
                        continue
                    w = model.weights.copy()
                    for s in mine:
                        if _to_ms(s.start, "shift start") <= boundary:
                            for category, factor in s.amount.items():  # type: ignore[union-attr]
                                w[categories.index(category)] *= factor
                    cum = np.cumsum(w / w.sum())
                    cum[-1] = 1.0
                    codes[rows] = np.searchsorted(cum, latent[rows], side="right").clip(0, len(cum) - 1)
                out[f.name] = (codes, missing)
        seg_u = rng.random(n)
        if self.segments:
            cum = np.cumsum(self.segment_weights)
            cum[-1] = 1.0
            out["segment_code"] = np.searchsorted(cum, seg_u, side="right").clip(0, len(self.segments) - 1)
        else:
            out["segment_code"] = np.full(n, -1)
        return out

    # -- the true relationship -----------------------------------------------------------------

    def _linear(self, sample: dict[str, Any], alt: bool) -> np.ndarray:
        n = len(sample["ts"])
        logits = np.zeros((n, self.k))
        for model in self.features:
            values, missing = sample[model.name]
            coef = model.coef_alt if alt else model.coef
            if model.feature.type is FeatureType.numeric:
                s = np.where(missing, 0.0, sample["_s_" + model.name])
                logits += s[:, None] * coef[None, :]
            elif model.feature.type is FeatureType.boolean:
                s = (values - model.p) / math.sqrt(model.p * (1 - model.p))
                logits += np.where(missing, 0.0, s)[:, None] * coef[None, :]
            else:
                logits += np.where(missing[:, None], 0.0, coef[:, values].T)
        return logits

    def true_logits(
        self, sample: dict[str, Any], drift: ConceptDrift | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(logits before any concept drift, logits of the current truth)."""
        base = self.intercept[None, :] + self.segment_effect[sample["segment_code"].clip(0)]
        linear = self._linear(sample, alt=False)
        learnt = base + self.scale * linear
        if drift is None or drift.strength == 0:
            return learnt, learnt
        ts = sample["ts"]
        start = _to_ms(drift.start, "concept_drift start")
        ramp = drift.ramp // timedelta(milliseconds=1)
        if ramp > 0:
            a = drift.strength * np.clip((ts - start) / ramp, 0.0, 1.0)
        else:
            a = np.where(ts >= start, drift.strength, 0.0)
        if drift.segment is not None:
            a = np.where(sample["segment_code"] == self.segments.index(drift.segment), a, 0.0)
        a = a[:, None]
        old = self.scale * linear
        new = self.scale_alt * (self._linear(sample, alt=True) - self.beta * linear)
        return learnt, base + ((1 - a) * old + a * new) / np.sqrt((1 - a) ** 2 + a**2)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities in spec.classes order, shape (n, n_classes)."""
        if self.binary:
            p = _sigmoid(logits[:, 0])
            positive = self.classes.index(str(self.spec.positive_class))
            out = np.empty((len(p), 2))
            out[:, positive], out[:, 1 - positive] = p, 1.0 - p
            return out
        return _softmax(logits)


def _check_scenario(world: _World, scenario: Scenario) -> None:
    drift = scenario.concept_drift
    if drift is not None and drift.segment is not None and drift.segment not in world.segments:
        raise ValueError(f"concept_drift segment {drift.segment!r} is not one of {world.segments}")
    for shift in scenario.covariate_shift:
        if shift.feature not in world.by_name:
            raise ValueError(f"covariate_shift: {shift.feature!r} is not a feature of {world.spec.name!r}")
        feature = world.by_name[shift.feature].feature
        if feature.type is FeatureType.categorical:
            if not isinstance(shift.amount, Mapping):
                raise ValueError(
                    f"covariate_shift of categorical {feature.name!r} needs a category -> factor mapping"
                )
            unknown = set(shift.amount) - set(feature.categories or [])
            if unknown:
                raise ValueError(f"covariate_shift of {feature.name!r}: unknown categories {sorted(unknown)}")
            if any(v < 0 for v in shift.amount.values()):
                raise ValueError(f"covariate_shift of {feature.name!r}: factors must be >= 0")
        elif isinstance(shift.amount, Mapping) or isinstance(shift.amount, bool):
            raise ValueError(f"covariate_shift of {feature.type.value} {feature.name!r} needs a number")


# --------------------------------------------------------------------------------------------------
# Generation


def _generate(world: _World, scenario: Scenario, n: int, start_ms: int, end_ms: int) -> pd.DataFrame:
    spec = world.spec
    key = (scenario.seed, spec.name, scenario.model_version, scenario.variant, start_ms, end_ms, n)
    rng = _rng("traffic", *key)
    sample = world._sample(rng, n, scenario, start_ms, end_ms)
    learnt, truth = world.true_logits(sample, scenario.concept_drift)
    served = learnt + scenario.model_noise * rng.standard_normal((n, world.k))
    scores = _round_scores(world.probabilities(served))
    p_true = world.probabilities(truth)
    k = len(world.classes)
    if world.binary:
        positive = world.classes.index(str(spec.positive_class))
        predicted = np.where(scores[:, positive] >= 0.5, positive, 1 - positive)
        label = np.where(rng.random(n) < p_true[:, positive], positive, 1 - positive)
    else:
        predicted = scores.argmax(axis=1)
        cum = np.cumsum(p_true, axis=1)
        label = (rng.random(n)[:, None] >= cum[:, :-1]).sum(axis=1)
    labelled = rng.random(n) < scenario.label_rate
    mean_ms = scenario.label_delay_mean / timedelta(milliseconds=1)
    delay = np.ceil(rng.exponential(mean_ms, n)) if mean_ms > 0 else np.zeros(n)
    latency = np.round(scenario.latency_median_ms * np.exp(0.35 * rng.standard_normal(n)), 3)
    units = rng.integers(0, scenario.n_units, n)
    ids = _uuid_strings(_rng("prediction_id", *key), n)

    ts = sample["ts"]
    feedback_ms = np.where(labelled, ts + delay.astype(np.int64), 0)
    columns: dict[str, Any] = {
        "prediction_id": ids,
        "model_name": spec.name,
        "model_version": scenario.model_version,
        "variant": scenario.variant,
        "experiment_id": scenario.experiment_id,
        "unit_id": [f"u-{u}" for u in units.tolist()],
        "request_ts": pd.to_datetime(ts, unit="ms", utc=True),
        "latency_ms": latency,
    }
    for model in world.features:
        values, missing = sample[model.name]
        name = FEATURE_PREFIX + model.name
        if model.feature.type is FeatureType.numeric:
            columns[name] = np.where(missing, np.nan, values)
        elif model.feature.type is FeatureType.boolean:
            columns[name] = pd.arrays.BooleanArray(values.astype(bool), missing.astype(bool))
        else:
            codes = np.where(missing, -1, values).astype(np.int32)
            columns[name] = pd.Categorical.from_codes(codes, categories=list(model.feature.categories or []))
    columns["prediction"] = pd.Categorical.from_codes(predicted, categories=world.classes)
    for j, cls in enumerate(world.classes):
        columns[SCORE_PREFIX + cls] = scores[:, j]
    columns["segment"] = (
        pd.Categorical.from_codes(sample["segment_code"], categories=world.segments)
        if world.segments
        else None
    )
    columns["error"] = None
    columns["label"] = pd.Categorical.from_codes(label, categories=world.classes)
    columns["labelled"] = labelled
    feedback_ts = feedback_ms.astype("datetime64[ms]")
    feedback_ts[~labelled] = np.datetime64("NaT")
    columns["feedback_ts"] = pd.to_datetime(feedback_ts, utc=True)
    columns["outcome"] = np.where(labelled, (label == predicted).astype(float), np.nan)
    for j in range(k):
        columns[P_TRUE_PREFIX + world.classes[j]] = p_true[:, j]
    frame = pd.DataFrame(columns, index=pd.RangeIndex(n))
    for name in ("model_name", "model_version", "variant", "experiment_id", "segment", "error"):
        if frame[name].dtype != "category":
            frame[name] = frame[name].astype(object)
    return frame


def generate_predictions(
    spec: ModelSpec,
    n: int,
    start: datetime,
    end: datetime,
    scenario: Scenario | None = None,
) -> pd.DataFrame:
    """``n`` predictions with request times uniform in ``[start, end)``, and their truth, in memory.

    One row per prediction, sorted by ``request_ts``. Columns, in this order:

    * the prediction contract's scalar fields (``prediction_id`` ... ``latency_ms``, ``prediction``,
      ``segment``, ``error``); ``request_ts`` is a UTC ``datetime64`` with millisecond precision;
    * ``features.<name>`` per spec feature (float with NaN for numeric, nullable ``boolean``,
      ``category`` with NaN for categorical) and ``scores.<class>`` per class (rounded to 6 decimals,
      summing to 1 within 1e-6), exactly what the event files hold;
    * the truth, never written into a prediction event: ``label`` (the true class), ``labelled``
      (whether feedback ever arrives), ``feedback_ts`` (NaT when never), ``outcome`` (1.0 when the
      prediction was right, NaN when unlabelled) and ``p_true.<class>`` (the true probabilities).

    The same arguments always give the same frame. Serialize it with :func:`prediction_lines` and
    :func:`feedback_lines`.
    """
    scenario = scenario or Scenario()
    if n < 0:
        raise ValueError("n must be >= 0")
    start_ms, end_ms = _to_ms(start, "start"), _to_ms(end, "end")
    if end_ms <= start_ms:
        raise ValueError("end must be after start")
    world = _World(spec, scenario.seed)
    _check_scenario(world, scenario)
    return _generate(world, scenario, n, start_ms, end_ms)


# --------------------------------------------------------------------------------------------------
# Serialization (exactly the contract's field names, in the contract's order)


def _feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(FEATURE_PREFIX)]


def _as_objects(column: pd.Series) -> list[Any]:
    """A column as plain Python values with None for nulls (what orjson writes as null)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        lut = np.array([*map(str, column.cat.categories), None], dtype=object)
        return lut[column.cat.codes.to_numpy()].tolist()
    if column.dtype == "boolean":
        values = column.to_numpy(dtype=bool, na_value=False).tolist()
        return _with_nulls(values, column.isna().to_numpy())
    if column.dtype.kind == "f":
        array = column.to_numpy()
        return _with_nulls(array.tolist(), np.isnan(array))
    if column.dtype.kind in "iub":
        return column.to_numpy().tolist()
    return _with_nulls(column.tolist(), column.isna().to_numpy())


_CHUNK_ROWS = 50_000  # serialize in slices: bounded memory for million-row frames


def _json_lines(rows: list[dict[str, Any]]) -> bytes:
    """One JSON object per line. All rows go through a single ``orjson.dumps`` call; the array's
    ``},{"prediction_id":`` separators become newlines. That byte sequence cannot occur inside a row:
    string quotes are escaped, and the only nested objects (features, scores) follow a ``:``."""
    if not rows:
        return b""
    return orjson.dumps(rows)[1:-1].replace(b'},{"prediction_id":', b'}\n{"prediction_id":') + b"\n"


def _dicts(keys: Sequence[str], columns: Sequence[list[Any]]) -> list[dict[str, Any]]:
    """Row dicts from equally long column lists (``map`` instead of a comprehension: ~30 % faster)."""
    if not columns:
        return []
    return list(map(dict, map(zip, repeat(keys), zip(*columns, strict=True))))


def _prediction_chunk(frame: pd.DataFrame) -> bytes:
    feature_cols = _feature_columns(frame)
    names = [c[len(FEATURE_PREFIX) :] for c in feature_cols]
    feature_values = [_as_objects(frame[c]) for c in feature_cols]
    features = _dicts(names, feature_values) or [{} for _ in range(len(frame))]
    score_cols = [c for c in frame.columns if c.startswith(SCORE_PREFIX)]
    classes = [c[len(SCORE_PREFIX) :] for c in score_cols]
    scores = list(map(dict, map(zip, repeat(classes), frame[score_cols].to_numpy().tolist())))
    columns = {key: _as_objects(frame[key]) for key in _PREDICTION_KEYS if key not in _NESTED}
    columns["request_ts"] = _iso_ms(_epoch_ms(frame["request_ts"]))
    columns["features"], columns["scores"] = features, scores
    return _json_lines(_dicts(_PREDICTION_KEYS, [columns[key] for key in _PREDICTION_KEYS]))


_NESTED = ("request_ts", "features", "scores")


def prediction_lines(frame: pd.DataFrame) -> bytes:
    """Prediction events of a :func:`generate_predictions` frame as JSON lines (``\\n``-terminated).

    Each line has exactly the contract's fields in the contract's order; ``features`` and ``scores``
    are objects, timestamps RFC 3339 with ``+00:00``. Nulls (NaN, NA) are written as ``null``.
    """
    return b"".join(
        _prediction_chunk(frame.iloc[i : i + _CHUNK_ROWS]) for i in range(0, len(frame), _CHUNK_ROWS)
    )


def feedback_lines(frame: pd.DataFrame, model_name: str | None = None) -> bytes:
    """Feedback events for the labelled rows of a frame, as JSON lines in the frame's row order.

    ``frame`` is a :func:`generate_predictions` frame (or rows of one); rows with ``labelled``
    false are skipped. ``model_name`` defaults to the frame's ``model_name`` column.
    """
    rows = frame[frame["labelled"].to_numpy(dtype=bool)]
    parts = []
    for i in range(0, len(rows), _CHUNK_ROWS):
        chunk = rows.iloc[i : i + _CHUNK_ROWS]
        n = len(chunk)
        values = [
            _as_objects(chunk["prediction_id"]),
            _as_objects(chunk["label"]),
            _as_objects(chunk["outcome"]),
            _iso_ms(_epoch_ms(chunk["feedback_ts"])),
            [FEEDBACK_SOURCE] * n,
            [model_name] * n if model_name is not None else _as_objects(chunk["model_name"]),
        ]
        parts.append(_json_lines(_dicts(_FEEDBACK_KEYS, values)))
    return b"".join(parts)


# --------------------------------------------------------------------------------------------------
# Writing the landing zone


def _local_root(landing_root: str | os.PathLike[str]) -> str:
    root = os.fspath(landing_root)
    if "://" in root and not root.startswith("file://"):
        raise ValueError(f"the simulator writes to a local folder; got {root!r}")
    return root.removeprefix("file://")


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader never sees a partial file.

    The bytes go to ``.<name>.<pid>.tmp`` in the same folder (a name the ingest never lists: it
    starts with a dot and does not end in .jsonl/.gz/.parquet), are fsynced, then renamed over.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)  # mtime 0: the same bytes on every run


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _hour_label(ms: int) -> str:
    return _from_ms(ms).strftime("%Y%m%dT%H")


def _day(ms: int) -> str:
    return _from_ms(ms).strftime("%Y-%m-%d")


def _land(
    root: str, spec: ModelSpec, kind: str, hour_ms: int, lines: bytes, result: SimulationResult
) -> None:
    prefix = "predictions" if kind == PREDICTIONS else "feedback"
    name = f"{prefix}-{_hour_label(hour_ms)}-{_digest(lines)}.jsonl.gz"
    path = landing_path(root, spec.name, kind, _day(hour_ms), name)
    if os.path.exists(path):  # same name = same content: files are immutable once landed
        result.skipped_files.append(path)
        return
    _atomic_write(path, _gzip(lines))
    (result.prediction_files if kind == PREDICTIONS else result.feedback_files).append(path)


def simulate(
    spec: ModelSpec,
    landing_root: str | os.PathLike[str],
    start: datetime,
    end: datetime,
    scenario: Scenario | None = None,
    now: datetime | None = None,
    *,
    history_start: datetime | None = None,
    feedback_since: datetime | None = None,
) -> SimulationResult:
    """Play ``[start, end)`` hour by hour into the landing zone; return what was written.

    Per simulated hour: ``scenario.rows_per_hour`` predictions (request times uniform inside the
    hour) in ``<root>/<model>/predictions/dt=<day>/predictions-<YYYYMMDDTHH>-<digest>.jsonl.gz``.
    Their feedback lands per hour of ``feedback_ts`` in ``<root>/<model>/feedback/dt=<day of
    feedback_ts>/feedback-<YYYYMMDDTHH>-<digest>.jsonl.gz``; feedback after ``now`` (default ``end``)
    has not happened yet and is not written. ``<digest>`` is a hash of the content; a file that is
    already there under the same name is left alone (reported in ``skipped_files``). Files appear
    atomically (written under a hidden temporary name, then renamed).

    Continuing a run in simulated time (the demo's clock ticking from ``t1`` to ``t2``)::

        simulate(spec, root, t0, t1, scenario)                       # first tick: now = t1
        simulate(spec, root, t1, t2, scenario, history_start=t0, feedback_since=t1)

    ``history_start`` (a whole hour, not after ``start``): the predictions of ``[history_start,
    start)`` are generated again (deterministically: the same events an earlier call wrote) but not
    written, so that their late feedback lands now. ``feedback_since``: only feedback with
    ``feedback_since < feedback_ts <= now`` is written (an earlier call with ``now = feedback_since``
    wrote the rest). Without them, feedback of predictions made before ``start`` never lands.

    ``start`` and ``end`` must be whole UTC hours (timezone-aware); ``now`` must not be before ``end``.
    """
    scenario = scenario or Scenario()
    root = _local_root(landing_root)
    start_ms, end_ms = _to_ms(start, "start"), _to_ms(end, "end")
    history_ms = start_ms if history_start is None else _to_ms(history_start, "history_start")
    if start_ms % _HOUR_MS or end_ms % _HOUR_MS or history_ms % _HOUR_MS:
        raise ValueError("start, end and history_start must be whole hours (UTC)")
    if end_ms < start_ms:
        raise ValueError("end must not be before start")
    if history_ms > start_ms:
        raise ValueError("history_start must not be after start")
    now_ms = end_ms if now is None else _to_ms(now, "now")
    if now_ms < end_ms:
        raise ValueError("now must not be before end: predictions after now have not happened yet")
    since_ms = None if feedback_since is None else _to_ms(feedback_since, "feedback_since")

    world = _World(spec, scenario.seed)
    _check_scenario(world, scenario)
    result = SimulationResult()
    labelled: list[pd.DataFrame] = []
    for hour_ms in range(history_ms, end_ms, _HOUR_MS):
        frame = _generate(world, scenario, scenario.rows_per_hour, hour_ms, hour_ms + _HOUR_MS)
        if hour_ms >= start_ms and len(frame):
            _land(root, spec, PREDICTIONS, hour_ms, prediction_lines(frame), result)
            result.predictions += len(frame)
        rows = frame[frame["labelled"].to_numpy()]
        if len(rows):
            labelled.append(
                rows[["prediction_id", "model_name", "label", "labelled", "outcome", "feedback_ts"]]
            )

    if labelled:
        feedback = pd.concat(labelled, ignore_index=True)
        fb_ms = _epoch_ms(feedback["feedback_ts"])
        happened = fb_ms <= now_ms
        result.pending_feedback = int((~happened).sum())
        if since_ms is not None:
            happened &= fb_ms > since_ms
        feedback, fb_ms = feedback[happened], fb_ms[happened]
        order = np.lexsort((feedback["prediction_id"].to_numpy(dtype=object).astype(str), fb_ms))
        feedback, fb_ms = feedback.iloc[order], fb_ms[order]
        hours = fb_ms - fb_ms % _HOUR_MS
        for hour_ms in np.unique(hours).tolist():
            rows = feedback[hours == hour_ms]
            _land(root, spec, FEEDBACK, hour_ms, feedback_lines(rows, spec.name), result)
            result.feedback += len(rows)
    return result
