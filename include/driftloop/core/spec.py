"""Model specs: one YAML per monitored model, parsed and validated once.

A bad spec raises :class:`SpecError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from driftloop.core.settings import specs_dir

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class SpecError(ValueError):
    """A model spec that cannot be used; the message names the file, the field and what was expected."""


def parse_duration(value: Any) -> timedelta:
    """'90s', '5m', '2h', '3d', '1w', an ISO 8601 duration ('PT12H'), a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
        if value.strip().upper().startswith("P"):  # ISO 8601, as model_dump(mode="json") writes it
            try:
                return TypeAdapter(timedelta).validate_python(value.strip())
            except ValidationError:
                pass
    raise ValueError(f"a duration like '90s', '5m', '2h', '3d' or '1w' (got {value!r})")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _as_text(value: Any) -> Any:
    # Classes may be written as ints in YAML (0/1); events carry them as strings or ints: compare as text.
    if isinstance(value, bool):
        raise ValueError("a class name (string or int), not a boolean")
    return str(value) if isinstance(value, int | str) else value


ClassName = Annotated[str, BeforeValidator(_as_text)]
# Categories written as numbers in YAML ([0, 10, 20]) are the strings events carry ("0", "10", "20").
CategoryName = Annotated[str, BeforeValidator(_as_text)]


def _identifier(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("a lowercase identifier (letters, digits, _; starts with a letter)")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(StrEnum):
    binary = "binary_classification"
    multiclass = "multiclass_classification"


class FeatureType(StrEnum):
    numeric = "numeric"
    categorical = "categorical"
    boolean = "boolean"


class Feature(_Strict):
    name: Identifier
    type: FeatureType
    required: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[CategoryName] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _rules_fit_type(self) -> Feature:
        if self.type is FeatureType.numeric:
            if self.categories is not None:
                raise ValueError("'categories' is only for categorical features")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        elif self.type is FeatureType.categorical:
            if self.min is not None or self.max is not None:
                raise ValueError("'min'/'max' are only for numeric features")
            if not self.categories:
                raise ValueError("categorical features need a non-empty 'categories' list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError("'categories' has duplicates")
        elif self.min is not None or self.max is not None or self.categories is not None:
            raise ValueError("boolean features take no 'min', 'max' or 'categories'")
        return self


class Label(_Strict):
    name: str = "label"
    description: str | None = None


class Segment(_Strict):
    name: str
    values: list[str] | None = None


WindowSize = Literal["hour", "day", "week"]


class Windows(_Strict):
    sizes: list[WindowSize] = Field(default_factory=lambda: ["hour", "day"])
    expected_label_delay: Duration = timedelta(days=3)
    min_label_coverage: float = Field(default=0.5, ge=0, le=1)


class Ingest(_Strict):
    schedule: str = "*/15 * * * *"
    score_sum_tolerance: float = Field(default=0.01, gt=0, lt=0.5)
    max_future_skew: Duration = timedelta(minutes=5)
    # A file whose last line is incomplete and that changed less than this long ago is still being written.
    settle_seconds: float = Field(default=60, ge=0)


class DriftThresholds(_Strict):
    psi: float = Field(default=0.2, gt=0)  # population stability index; 0.1 moderate, 0.2 significant
    js: float = Field(default=0.1, gt=0, le=1)  # Jensen-Shannon distance, base 2, in [0, 1]


class DriftStatistic(_Strict):
    """The statistic a verdict is taken on: Jensen-Shannon distance (js), PSI, Kolmogorov-Smirnov (ks,
    numeric) or chi-square (chi2, categorical and boolean)."""

    numeric: Literal["js", "psi", "ks"] = "js"
    categorical: Literal["js", "psi", "chi2"] = "js"  # boolean features too


class Drift(_Strict):
    """When a feature (or a prediction column) has drifted in a window.

    The verdict's `statistic` against a threshold learned from the reference (`thresholds_from:
    reference`): the statistic's mean + `k` standard deviations over windows of as many rows drawn
    from the reference itself. `thresholds` (and `prediction`) apply with `thresholds_from: spec`,
    and when the reference has no learned threshold; a feature's entry in `features` always wins.
    With spec thresholds, ks and chi2 judge by p-value (< `p_value`)."""

    statistic: DriftStatistic = DriftStatistic()
    thresholds_from: Literal["reference", "spec"] = "reference"
    k: float = Field(default=3.0, gt=0)
    p_value: float = Field(default=0.01, gt=0, lt=1)
    thresholds: DriftThresholds = DriftThresholds()
    features: dict[str, DriftThresholds] = Field(default_factory=dict)  # per-feature overrides
    prediction: DriftThresholds = DriftThresholds()
    # a window with fewer non-null values reports its distances and n but no verdict (is_drifted NULL):
    # below ~100 values the sampling noise of a 10-bin distance is as large as real drift
    min_samples: int = Field(default=100, ge=1)


Severity = Literal["critical", "warning", "info"]
Channel = Literal["slack", "pagerduty", "digest"]
Comparator = Literal[">", ">=", "<", "<=", "==", "!="]


class RelativeThreshold(_Strict):
    """A threshold relative to a baseline: ``baseline * (1 + change)``. ``holdout``: the serving version's
    value on its training holdout (quality metrics); ``trailing``: the median of the previous
    ``windows`` complete windows of the same series (latency, volume, ...)."""

    baseline: Literal["holdout", "trailing"]
    change: float = Field(gt=-1)  # -0.10: 10 % below the baseline; 0.5: 50 % above it
    windows: int = Field(default=24, ge=3)


class AlertRule(_Strict):
    """One condition on a mart column (driftloop.core.marts names what can be used): ``column comparator
    threshold`` on the latest complete window of ``window_size`` with at least ``min_samples`` (the mart's
    sample column), label-based marts on mature windows only. One alert per (model, rule, segment) while it
    holds; resolved after ``resolve_after`` clear windows (default: the block's)."""

    name: Identifier
    mart: str
    column: str
    comparator: Comparator
    threshold: float | bool | None = None
    relative: RelativeThreshold | None = None
    ingest_intervals: float | None = Field(default=None, gt=0)  # freshness: N x the ingest schedule's interval
    window_size: WindowSize | None = None
    min_samples: int = Field(default=0, ge=0)
    segments: Literal["all", "each"] = "all"  # the '(all)' rollup, or every segment on its own
    variant: str = "control"  # the arm the champion serves
    severity: Severity = "warning"
    routes: list[Channel] | None = None  # default: the block's routes for the severity
    resolve_after: int | None = Field(default=None, ge=1)
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AlertRule:
        from driftloop.core.marts import MARTS, describe_column

        problem = describe_column(self.mart, self.column)
        if problem:
            raise ValueError(f"rule {self.name!r}: {problem}")
        given = [k for k in ("threshold", "relative", "ingest_intervals") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"rule {self.name!r}: give exactly one of threshold, relative, ingest_intervals (got {given or 'none'})")
        mart = MARTS[self.mart]
        if mart.windowed and self.window_size is None:
            raise ValueError(f"rule {self.name!r}: {self.mart} is windowed: window_size is required")
        if not mart.windowed and (self.window_size is not None or self.segments != "all"):
            raise ValueError(f"rule {self.name!r}: {self.mart} has one row per model: no window_size or segments")
        if self.ingest_intervals is not None and not self.column.startswith("seconds_since_"):
            raise ValueError(f"rule {self.name!r}: ingest_intervals is for model_health's seconds_since_* columns")
        if self.relative is not None and self.relative.baseline == "holdout" and self.mart not in ("fct_model_quality", "model_health"):
            raise ValueError(f"rule {self.name!r}: a holdout baseline exists for quality metrics only")
        if isinstance(self.threshold, bool) != (self.column == "is_drifted"):
            raise ValueError(f"rule {self.name!r}: {self.column} takes a {'boolean' if self.column == 'is_drifted' else 'number'} threshold")
        return self


def default_alert_rules() -> list[AlertRule]:
    """What a spec without ``alerts.rules`` is watched with (include/specs/churn.yaml spells them out)."""
    return [
        AlertRule(name="serving_error_rate", mart="fct_latency", column="error_rate", comparator=">", threshold=0.05,
                  window_size="hour", min_samples=50, severity="critical",
                  description="more than 5 % of the requests of an hour failed"),
        AlertRule(name="quality_floor", mart="fct_model_quality", column="accuracy", comparator="<",
                  relative=RelativeThreshold(baseline="holdout", change=-0.10), window_size="day", min_samples=200,
                  severity="critical", description="a mature day 10 % below the serving version's holdout accuracy"),
        AlertRule(name="feature_drift", mart="fct_feature_drift", column="is_drifted", comparator="==", threshold=True,
                  window_size="day", min_samples=200, severity="warning", description="features drifted in a day"),
        AlertRule(name="prediction_drift", mart="fct_prediction_drift", column="is_drifted", comparator="==",
                  threshold=True, window_size="day", min_samples=200, severity="warning",
                  description="the prediction distribution drifted in a day"),
        AlertRule(name="latency_p95_degradation", mart="fct_latency", column="latency_p95_ms", comparator=">",
                  relative=RelativeThreshold(baseline="trailing", change=0.5, windows=24), window_size="hour",
                  min_samples=50, severity="warning", description="an hour's p95 latency 50 % above the previous day's median"),
        AlertRule(name="no_data", mart="model_health", column="seconds_since_latest_load", comparator=">",
                  ingest_intervals=4, severity="warning", description="nothing loaded for 4 ingest intervals"),
    ]  # fmt: skip


class Digest(_Strict):
    """The daily digest: the info alerts of the day and the trends, in one Slack message."""

    enabled: bool = True
    hour_utc: int = Field(default=8, ge=0, le=23)


class Alerts(_Strict):
    """Alert rules on the marts (monitor__<model>) and where alerts go (driftloop.core.notify)."""

    routes: dict[Severity, list[Channel]] = Field(
        default_factory=lambda: {"critical": ["pagerduty", "slack"], "warning": ["slack"], "info": ["digest"]}
    )
    resolve_after: int = Field(default=2, ge=1)  # consecutive clear windows before an alert resolves
    monitor_schedule: str = "*/30 * * * *"  # monitor__<model> also runs on this clock: freshness, retries
    digest: Digest = Digest()
    rules: list[AlertRule] = Field(default_factory=default_alert_rules)

    @model_validator(mode="after")
    def _consistent(self) -> Alerts:
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"alert rule names must be unique (repeated: {', '.join(repeated)})")
        return self

    def routes_for(self, severity: str, rule: AlertRule | None = None) -> list[str]:
        if rule is not None and rule.routes is not None:
            return list(rule.routes)
        return list(self.routes.get(severity, []))


QualityMetric = Literal["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"]
# Metrics where a lower value is better; every other metric is better higher.
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


class VolumeTrigger(_Strict):
    """Retrain when this many labels have arrived since the data of the last training was extracted."""

    enabled: bool = True
    min_new_labels: int = Field(default=500, ge=1)


class DegradationTrigger(_Strict):
    """Retrain when `metric` of the champion over the last `window` of labelled traffic is worse than its
    holdout baseline by `relative_drop` or more (relative), on at least `min_samples` labelled rows."""

    enabled: bool = True
    metric: QualityMetric = "accuracy"  # precision, recall, f1 and roc_auc: binary models only
    relative_drop: float = Field(default=0.10, gt=0, lt=1)
    window: Duration = timedelta(hours=24)
    min_samples: int = Field(default=200, ge=1)


class DriftTrigger(_Strict):
    """Retrain when the drift verdict (spec `drift`) holds in the latest complete `window_size` window of
    the champion that has one, on a feature whose importance (share of the champion's gain) is at least
    `min_importance`, or on the prediction; windows with fewer than `min_samples` rows are ignored."""

    enabled: bool = True
    window_size: WindowSize = "day"
    min_importance: float = Field(default=0.05, ge=0, le=1)
    min_samples: int = Field(default=200, ge=1)
    include_prediction: bool = True


class ScheduleTrigger(_Strict):
    """Retrain when the last successful training is at least `every` old."""

    enabled: bool = True
    every: Duration = timedelta(days=7)


Candidate = Literal["lightgbm", "logistic_regression", "lightgbm_warm_start"]


class Training(_Strict):
    """How a retrain builds its data and which candidates it tries."""

    window: Duration = timedelta(days=30)  # labelled predictions requested in the last `window`
    max_rows: int = Field(default=2_000_000, ge=100)  # the newest rows win when there are more
    min_rows: int = Field(default=500, ge=50)  # fewer labelled rows: the run fails, nothing registered
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    holdout_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    # share of the champion's own training rows mixed into the training split (0 = warehouse rows only)
    original_data_fraction: float = Field(default=0.0, ge=0, le=1)
    candidates: list[Candidate] = Field(default_factory=lambda: ["lightgbm", "logistic_regression", "lightgbm_warm_start"])
    selection_metric: QualityMetric = "roc_auc"
    seed: int = 42
    lightgbm_learning_rate: float = Field(default=0.05, gt=0)
    lightgbm_num_leaves: int = Field(default=31, ge=2)
    lightgbm_max_rounds: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    permutation_rows: int = Field(default=20_000, ge=100)  # validation rows used for permutation importance
    timeout: Duration = timedelta(hours=2)  # a "running" run older than this is taken as crashed


class Triggers(_Strict):
    volume: VolumeTrigger = VolumeTrigger()
    degradation: DegradationTrigger = DegradationTrigger()
    drift: DriftTrigger = DriftTrigger()
    schedule: ScheduleTrigger = ScheduleTrigger()


class Retraining(_Strict):
    """When a challenger is trained (`triggers`, `cooldown`) and how (`training`)."""

    check_schedule: str = "0 * * * *"  # how often retrain__<model> starts its sensor
    poke_interval: Duration = timedelta(minutes=5)
    sensor_timeout: Duration = timedelta(minutes=50)  # then the run ends "skipped" until the next check
    cooldown: Duration = timedelta(hours=12)  # no trigger fires this long after any training started
    triggers: Triggers = Triggers()
    training: Training = Training()


class OfflineGate(_Strict):
    """What a challenger must show on its holdout (newer than any of its training rows) before it
    gets live traffic; every check is recorded with its value, threshold and verdict."""

    min_relative_auc_gain: float = Field(default=0.02, ge=0)  # (challenger - champion) / champion ROC AUC
    max_latency_ratio: float = Field(default=1.10, gt=0)  # challenger / champion prediction time per row
    max_ece_increase: float = Field(default=0.02, ge=0)  # absolute, top-label expected calibration error
    max_segment_auc_drop: float = Field(default=0.02, ge=0)  # absolute, in any segment with enough rows
    min_segment_rows: int = Field(default=200, ge=1)
    top_features: int = Field(default=5, ge=2)  # importance shift: over the union of both models' top features
    min_importance_rank_correlation: float = Field(default=0.3, ge=-1, le=1)  # Spearman, gain importance


class Online(_Strict):
    """The live experiment (driftloop.promote.decision.Policy; see its module docstring for the method)."""

    # the primary metric: accuracy (the prediction was right), outcome_rate (share of the feedback's
    # outcome > 0: a conversion) or outcome_mean (the mean outcome, e.g. revenue)
    metric: Literal["accuracy", "outcome_rate", "outcome_mean"] = "accuracy"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    # mSPRT tau: about the gain worth detecting, on the metric's scale (a rate, or the outcome's units)
    mixing_sd: float = Field(default=0.02, gt=0)
    min_labelled_per_arm: int = Field(default=200, ge=1)
    srm_p_value_threshold: float = Field(default=0.001, gt=0, lt=1)  # sequential (always-valid) SRM test
    srm_prior_concentration: float = Field(default=100.0, gt=0)  # its Dirichlet prior: k x planned shares
    max_latency_p95_ratio: float = Field(default=1.10, ge=1)
    # a latency breach needs the ratio above AND the p95 this many ms slower (sub-ms p95s are noise)
    latency_p95_tolerance_ms: float = Field(default=5.0, ge=0)
    max_error_rate_increase: float = Field(default=0.005, ge=0, lt=1)
    min_assigned_for_guardrails: int = Field(default=200, ge=1)
    # the guardrails are always-valid tests with the two margins above; their mixing sds (tau)
    error_rate_mixing_sd: float = Field(default=0.01, gt=0)
    latency_mixing_sd: float = Field(default=0.10, gt=0)  # on mean ln(latency): 0.1 is about +10 %
    max_duration: Duration = timedelta(days=14)  # then inconclusive: the champion keeps all traffic
    minimum_detectable_effect: float | None = Field(default=None, gt=0)
    # canary: ramp_steps, each held until its guardrails pass; thompson / epsilon_greedy: start at
    # ramp_steps[0], then a bandit sets the share after every allocation period
    strategy: Literal["canary", "thompson", "epsilon_greedy"] = "canary"
    ramp_steps: list[float] = Field(default_factory=lambda: [0.10, 0.25, 0.50])
    min_treatment_assigned_per_step: int = Field(default=1000, ge=1)
    epsilon: float = Field(default=0.10, gt=0, lt=1)
    bandit_min_share: float = Field(default=0.05, gt=0, lt=1)
    bandit_max_share: float = Field(default=0.90, gt=0, lt=1)
    min_share_change: float = Field(default=0.05, gt=0, lt=1)
    # predictions this soon after an allocation change are not counted: routers cache the allocation
    # (driftloop.serve.router.Router ttl_seconds, 30 s), so a few still follow the previous one
    allocation_settle: Duration = timedelta(minutes=1)
    poke_interval: Duration = timedelta(hours=1)  # how often promote__<model> looks

    @model_validator(mode="after")
    def _consistent(self) -> Online:
        # the same rules as driftloop.promote.decision.Policy, checked here without importing it (it needs
        # scipy, and every DAG file parses the specs)
        if any(not 0 < share < 1 for share in self.ramp_steps) or self.ramp_steps != sorted(set(self.ramp_steps)):
            raise ValueError(f"ramp_steps must increase strictly within (0, 1), got {self.ramp_steps}")
        if self.min_treatment_assigned_per_step < self.min_assigned_for_guardrails:
            raise ValueError("min_treatment_assigned_per_step must be >= min_assigned_for_guardrails")
        if not self.bandit_min_share < self.bandit_max_share:
            raise ValueError(
                f"expected bandit_min_share < bandit_max_share, got {self.bandit_min_share}, {self.bandit_max_share}"
            )
        if self.metric == "outcome_mean" and "mixing_sd" not in self.model_fields_set:
            # the default (0.02) is a difference in rates; on revenue it would take millions of outcomes
            raise ValueError(
                "metric outcome_mean needs mixing_sd in the outcome's units: about the gain in mean outcome "
                "worth detecting quickly (e.g. 5 % of the mean outcome)"
            )
        return self


class Watch(_Strict):
    """After a promotion: how long the new champion is watched and when it is rolled back
    (driftloop.promote.decision.WatchPolicy). A window of 0 turns the watch off."""

    window: Duration = timedelta(days=3)  # give labels time to arrive (windows.expected_label_delay)
    max_success_rate_drop: float = Field(default=0.03, ge=0)  # vs its own rate as the experiment's treatment
    min_labelled: int = Field(default=200, ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    mixing_sd: float = Field(default=0.02, gt=0)
    max_latency_p95_ratio: float = Field(default=1.25, ge=1)
    latency_p95_tolerance_ms: float = Field(default=5.0, ge=0)  # and this many ms slower (see online)
    max_error_rate_increase: float = Field(default=0.005, ge=0, lt=1)
    min_assigned_for_guardrails: int = Field(default=200, ge=1)
    error_rate_mixing_sd: float = Field(default=0.01, gt=0)
    latency_mixing_sd: float = Field(default=0.10, gt=0)
    poke_interval: Duration = timedelta(hours=1)


class Promotion(_Strict):
    offline_gate: OfflineGate = OfflineGate()
    online: Online = Online()
    watch: Watch = Watch()


class ModelSpec(_Strict):
    name: str
    description: str | None = None
    owner: str = "driftloop"
    task: Task
    classes: list[ClassName]
    positive_class: ClassName | None = None
    features: list[Feature]
    label: Label = Label()
    segment: Segment | None = None
    windows: Windows = Windows()
    ingest: Ingest = Ingest()
    drift: Drift = Drift()
    retraining: Retraining = Retraining()
    promotion: Promotion = Promotion()
    alerts: Alerts = Alerts()

    @field_validator("name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a lowercase identifier (letters, digits, _; starts with a letter), used in DAG ids")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("'classes' has duplicates")
        if self.task is Task.binary:
            if len(self.classes) != 2:
                raise ValueError(f"binary_classification needs exactly 2 classes (got {len(self.classes)})")
            if self.positive_class is None:
                raise ValueError("binary_classification needs 'positive_class'")
        elif len(self.classes) < 3:
            raise ValueError("multiclass_classification needs at least 3 classes")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of classes {self.classes}")
        names = [feature.name for feature in self.features]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"feature names must be unique (repeated: {', '.join(duplicated)})")
        if not self.features:
            raise ValueError("a model needs at least one feature")
        metric = self.retraining.triggers.degradation.metric
        if self.task is not Task.binary and metric in ("precision", "recall", "f1", "roc_auc"):
            raise ValueError(
                f"retraining.triggers.degradation.metric {metric!r} is computed for binary models only; "
                "a multiclass model uses accuracy, log_loss or brier"
            )
        unknown = sorted(set(self.drift.features) - set(names))
        if unknown:
            raise ValueError(f"drift.features names features the model does not have: {', '.join(unknown)}")
        for rule in self.alerts.rules:
            if rule.window_size is not None and rule.window_size not in self.windows.sizes:
                raise ValueError(
                    f"alerts.rules {rule.name!r}: window_size {rule.window_size!r} is not one of windows.sizes {self.windows.sizes}"
                )
        return self

    @property
    def negative_class(self) -> str | None:
        if self.task is not Task.binary:
            return None
        return next(c for c in self.classes if c != self.positive_class)

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


def _named_location(location: tuple[Any, ...], raw: Any) -> str:
    """A pydantic error location with list positions of named items (features, alert rules) replaced
    by their names: ``features.payment_method.categories.0`` rather than ``features.5.categories.0``."""
    parts, node = [], raw
    for part in location:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            item = node[part]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(str(name) if isinstance(name, str) and name else str(part))
            node = item
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts)


def _describe(error: dict[str, Any], raw: Any = None) -> str:
    location = _named_location(tuple(error["loc"]), raw) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; see include/specs/churn.yaml for the fields)"
    elif error["type"] == "missing":
        message = "required field is missing"
    return f"{location}: {message}"


# libyaml's safe loader when PyYAML has it: every DAG file parses the specs, the pure-Python one costs ~0.15 s
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: (top level): expected a mapping of spec fields, got {type(raw).__name__}")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(_describe(error, raw) for error in exc.errors())
        raise SpecError(f"{path}: {details}") from None
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: expected the file name '{path.stem}' (got {spec.name!r})")
    return spec


def load_specs(directory: str | Path | None = None) -> dict[str, ModelSpec]:
    """Every spec in the folder, by model name. Raises on the first bad spec."""
    directory = Path(directory) if directory is not None else specs_dir()
    return {spec.name: spec for spec in (load_spec(p) for p in sorted(directory.glob("*.yaml")))}


@lru_cache(maxsize=32)
def _cached_specs(directory: str) -> dict[str, ModelSpec]:
    return load_specs(directory)


def get_spec(model_name: str, directory: str | Path | None = None) -> ModelSpec:
    directory = Path(directory) if directory is not None else specs_dir()
    specs = _cached_specs(str(directory.resolve()))
    if model_name not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise SpecError(f"unknown model {model_name!r}: no spec {model_name}.yaml in {directory} (known: {known})")
    return specs[model_name]
