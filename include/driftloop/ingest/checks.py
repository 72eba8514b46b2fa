"""The expectations a landed batch must meet, derived from the contract and the model spec.

`check_batch` builds one frame of typed columns and the GX checks over it (presence, JSON types,
ranges, allowed categories and classes, probabilities in [0, 1] summing to 1, timestamps with an
offset and not in the future, latency >= 0), runs them with Great Expectations and returns the
reasons per rejected line plus the typed columns loading needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from driftloop.core.contracts import CONTRACTS, FEEDBACK, PREDICTIONS
from driftloop.core.spec import FeatureType, ModelSpec
from driftloop.ingest.parsing import ParsedFile, stack_key, stacked
from driftloop.ingest.validation import (
    LINE,
    Check,
    Reason,
    ValidationReport,
    detail_report,
    failed_checks_of_stacks,
    validate_frame,
)

# RFC 3339 date-time with a mandatory offset ("Z" or +hh:mm).
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
_NO_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?$")
# Timestamps that cannot be parsed get this value so the range check names them.
_UNPARSEABLE_TS = pd.Timestamp("1900-01-01", tz="UTC")
# Well-formed timestamps beyond what pandas holds (years after 2262, before 1677) get these: they are
# in the future, or too early, not "invalid".
_BEYOND_FUTURE_TS = pd.Timestamp.max.tz_localize("UTC").floor("s")
_BEYOND_PAST_TS = pd.Timestamp("1678-01-01", tz="UTC")
_EARLIEST_TS = "2000-01-01T00:00:00+00:00"
# A failed request (error set) may lack its prediction, scores and features.
_SERVED = "served__ == True"

_ALLOWED_TYPES = {
    "string": (["str"], "a string"),
    "class": (["str", "int"], "a string or integer class"),
    "number": (["int", "float"], "a number"),
    "timestamp": (["str"], "an RFC 3339 timestamp string"),
    "features": (["dict"], "an object"),
    "scores": (["dict", "int", "float"], "an object of class probabilities or a number"),
}
_FEATURE_TYPES = {
    FeatureType.numeric: (["int", "float"], "a number"),
    FeatureType.categorical: (["str", "int"], "a string category"),
    FeatureType.boolean: (["bool"], "true or false"),
}


def _out_of_pandas_range(text: str) -> pd.Timestamp:
    """A timestamp pandas cannot hold: a date-time of year 1..9999 is beyond it, anything else is invalid."""
    if not re.match(RFC3339, text):
        return _UNPARSEABLE_TS
    try:  # fromisoformat takes at most 6 fractional digits
        moment = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("z", "Z"))
    except ValueError:
        return _UNPARSEABLE_TS
    return _BEYOND_FUTURE_TS if moment.year >= 2262 else _BEYOND_PAST_TS


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else _short(value)


@dataclass
class CheckedBatch:
    parsed: ParsedFile
    reasons: dict[int, list[Reason]]  # line -> why it is rejected (unparsed lines included)
    scores: dict[str, pd.Series]  # class -> probability (normalised)
    timestamps: pd.Series  # the event time (request_ts / feedback_ts), parsed

    def valid(self) -> np.ndarray:
        """Mask over parsed rows: True where nothing is wrong."""
        return ~np.isin(self.parsed.lines, np.fromiter(self.reasons, dtype=np.int64, count=len(self.reasons)))


class _Builder:
    def __init__(self, parsed: ParsedFile):
        self.source = parsed.source
        self.columns: dict[str, Any] = {LINE: parsed.lines}
        self.checks: list[Check] = []

    def check(self, expectation: str, column: str, values: Any, field: str, rule: str, explain,
              digits_alike: bool = False, **kwargs) -> None:  # fmt: skip
        if column not in self.columns:
            self.columns[column] = values
        self.checks.append(Check(expectation, column, field, rule, explain, kwargs, digits_alike))

    def required(self, path: str, field: str, *, only_if_served: bool = False) -> None:
        kwargs = {"row_condition": _SERVED, "condition_parser": "pandas"} if only_if_served else {}
        self.check(
            "ExpectColumnValuesToNotBeNull", f"present__{path}", self.source.present(path), field, "required",
            lambda _v, f=field: f"required field {f} is missing or null", **kwargs,
        )  # fmt: skip

    def typed(self, path: str, field: str, allowed: list[str], words: str) -> None:
        if self.source.exact_types:  # the reader enforced the types already
            return
        self.check(
            "ExpectColumnValuesToBeInSet", f"type__{path}", self.source.type_names(path), field, "type",
            lambda t, f=field, w=words: f"{f} must be {w} (got a {t})", value_set=allowed,
        )  # fmt: skip

    def between(self, column: str, values: pd.Series, field: str, low=None, high=None) -> None:
        bounds = f"in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        self.check(
            "ExpectColumnValuesToBeBetween", column, values, field, "range",
            lambda v, f=field, b=bounds: f"{f} must be {b} (got {_number(v)})", min_value=low, max_value=high,
        )  # fmt: skip

    def allowed(self, column: str, values: pd.Series, field: str, allowed: list[str], rule: str, explain) -> None:
        self.check("ExpectColumnValuesToBeInSet", column, values, field, rule, explain, value_set=list(allowed))

    def timestamp(self, path: str, latest: datetime) -> pd.Series:
        strings = self.source.strings(path)
        self.check(
            "ExpectColumnValuesToMatchRegex", f"text__{path}", strings, path, "timestamp_format",
            lambda v, f=path: (
                f"{f} {_short(v)} has no UTC offset (write e.g. 2026-01-31T12:00:00+00:00)"
                if _NO_OFFSET.match(str(v)) else f"{f} {_short(v)} is not an RFC 3339 timestamp with offset"
            ),
            regex=RFC3339, digits_alike=True,
        )  # fmt: skip
        parsed = pd.to_datetime(strings, utc=True, format="ISO8601", errors="coerce")
        for index in np.flatnonzero((strings.notna() & parsed.isna()).to_numpy()):
            parsed.iloc[index] = _out_of_pandas_range(strings.iloc[index])
        parsed = parsed.where(strings.isna() | parsed.notna(), _UNPARSEABLE_TS)
        self.check(
            "ExpectColumnValuesToBeBetween", f"ts__{path}", parsed, path, "timestamp_range",
            lambda v, f=path, latest=latest: (
                f"{f} is not a valid date-time" if v == _UNPARSEABLE_TS
                else f"{f} is in the future (after the year 2262; later than {latest.isoformat()})" if v == _BEYOND_FUTURE_TS
                else f"{f} is before {_EARLIEST_TS[:10]} (before the year 1677)" if v == _BEYOND_PAST_TS
                else f"{f} {v.isoformat()} is in the future (later than {latest.isoformat()})" if v > latest
                else f"{f} {v.isoformat()} is before {_EARLIEST_TS[:10]}"
            ),
            min_value=_EARLIEST_TS, max_value=latest.isoformat(),
        )  # fmt: skip
        return parsed


def _contract_checks(builder: _Builder, kind: str, served_only: set[str]) -> None:
    for contract_field in CONTRACTS[kind]:
        name = contract_field.name
        if contract_field.required:
            builder.required(name, name, only_if_served=name in served_only)
        builder.typed(name, name, *_ALLOWED_TYPES[contract_field.kind])
        if contract_field.max_length is not None:
            builder.check(
                "ExpectColumnValuesToBeBetween", f"length__{name}", builder.source.lengths(name), name, "length",
                lambda v, f=name, m=contract_field.max_length: f"{f} is {v:,.0f} characters long; the contract allows at most {m}",
                max_value=contract_field.max_length,
            )  # fmt: skip


def _model_name_check(builder: _Builder, spec: ModelSpec, message) -> None:
    builder.allowed("model_name__", builder.source.text("model_name"), "model_name", [spec.name], "model", message)


def _feature_checks(builder: _Builder, spec: ModelSpec) -> None:
    for feature in spec.features:
        path, field = f"features.{feature.name}", f"feature {feature.name}"
        if feature.required:
            builder.required(path, field, only_if_served=True)
        builder.typed(path, field, *_FEATURE_TYPES[feature.type])
        if feature.type is FeatureType.numeric and (feature.min is not None or feature.max is not None):
            builder.between(f"number__{path}", builder.source.number(path), field, feature.min, feature.max)
        elif feature.type is FeatureType.categorical:
            categories = feature.categories or []
            builder.allowed(
                f"category__{path}", builder.source.text(path, ints=True), field, categories, "allowed_values",
                lambda v, f=field, c=categories: f"{f} has unknown category {_short(v)} (allowed: {', '.join(c)})",
            )  # fmt: skip


def _score_checks(builder: _Builder, spec: ModelSpec) -> dict[str, pd.Series]:
    classes = [str(c) for c in spec.classes]
    probabilities, key_sets = builder.source.scores(spec)
    if key_sets is not None:
        builder.allowed(
            "scores_classes__", key_sets, "scores", [",".join(sorted(classes))], "scores_classes",
            lambda v, c=classes: f"scores must give a probability for exactly the classes {c} (got {v})",
        )  # fmt: skip
    for cls in classes:
        builder.check(
            "ExpectColumnValuesToNotBeNull", f"score__{cls}", probabilities[cls], f"scores.{cls}", "required",
            lambda _v, c=cls: f"scores.{c} is missing", row_condition=_SERVED, condition_parser="pandas",
        )  # fmt: skip
        builder.check(
            "ExpectColumnValuesToBeBetween", f"score__{cls}", probabilities[cls], f"scores.{cls}", "probability",
            lambda v, c=cls: f"scores.{c} must be a probability in [0, 1] (got {_number(v)})",
            min_value=0.0, max_value=1.0,
        )  # fmt: skip
    total = pd.concat([probabilities[cls] for cls in classes], axis=1).sum(axis=1, min_count=len(classes))
    tolerance = spec.ingest.score_sum_tolerance
    builder.check(
        "ExpectColumnValuesToBeBetween", "score_sum__", total, "scores", "probability_sum",
        lambda v, t=tolerance: f"class probabilities must sum to 1 (+/- {t}); they sum to {v:.4f}",
        min_value=1.0 - tolerance, max_value=1.0 + tolerance,
    )  # fmt: skip
    return probabilities


@dataclass
class _Derived:
    parsed: ParsedFile
    frame: pd.DataFrame
    checks: list[Check]
    scores: dict[str, pd.Series]
    timestamps: pd.Series

    def checked(self, report: ValidationReport) -> CheckedBatch:
        reasons = dict(report.reasons)
        for item in self.parsed.unparsed:
            reasons[item.line] = list(item.reasons)
        return CheckedBatch(self.parsed, reasons, self.scores, self.timestamps)


def _derive(spec: ModelSpec, kind: str, parsed: ParsedFile, now: datetime) -> _Derived:
    builder = _Builder(parsed)
    source = parsed.source
    latest = now + spec.ingest.max_future_skew
    scores: dict[str, pd.Series] = {}
    if kind == PREDICTIONS:
        builder.columns["served__"] = source.present("error").isna().to_numpy()
        _contract_checks(builder, kind, served_only={"prediction", "scores", "features"})
        _model_name_check(
            builder, spec,
            lambda v, m=spec.name: f"model_name {_short(v)} is not this model ({m!r}); is the file in the right folder?",
        )  # fmt: skip
        builder.allowed(
            "prediction__", source.text("prediction", ints=True), "prediction", spec.classes, "allowed_values",
            lambda v, c=spec.classes: f"prediction {_short(v)} is not one of the classes {c}",
        )  # fmt: skip
        if spec.segment is not None and spec.segment.values:
            builder.allowed(
                "segment__", source.text("segment"), "segment", spec.segment.values, "allowed_values",
                lambda v, s=spec.segment: f"segment {_short(v)} is not one of the {s.name} values {s.values}",
            )  # fmt: skip
        builder.between("latency__", source.number("latency_ms"), "latency_ms", low=0)
        timestamps = builder.timestamp("request_ts", latest)
        _feature_checks(builder, spec)
        scores = _score_checks(builder, spec)
    elif kind == FEEDBACK:
        _contract_checks(builder, kind, served_only=set())
        _model_name_check(
            builder, spec,
            lambda v, m=spec.name: f"feedback for unknown model {_short(v)}: this landing folder is for {m!r}",
        )  # fmt: skip
        builder.allowed(
            "label__", source.text("label", ints=True), "label", spec.classes, "allowed_values",
            lambda v, c=spec.classes: f"label {_short(v)} is not one of the classes {c}",
        )  # fmt: skip
        timestamps = builder.timestamp("feedback_ts", latest)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return _Derived(parsed, pd.DataFrame(builder.columns), builder.checks, scores, timestamps)


def check_batch(spec: ModelSpec, kind: str, parsed: ParsedFile, now: datetime) -> CheckedBatch:
    """Validate a parsed file with GX; unparsed lines are rejected with their parse reason."""
    derived = _derive(spec, kind, parsed, now)
    return derived.checked(validate_frame(derived.frame, derived.checks, suite_name=f"{spec.name}-{kind}"))


# Small files read by the Arrow reader with the same schema are stacked: their check columns derived and
# their summary values taken once for all (pandas' cost per column and call, not the rows, was most of a
# small file's time). A file of more rows gains nothing and is derived alone.
_STACK_MAX_ROWS = 10_000


def check_batches(spec: ModelSpec, kind: str, parsed: list[ParsedFile], now: datetime) -> list[CheckedBatch]:
    """`check_batch` for many files of one model and kind: the same verdicts, rejected lines and reasons
    per file. Files that can be stacked (`stack_key`) are derived as one, the rest one by one; then one GX
    validation of all their summary values (`failed_checks_of_stacks`: a check a stack passes, each of its
    files passes); a file that fails a check is derived again alone and its failed checks run on it whole
    (its failing rows and reasons by GX), as `check_batch` would."""
    suite_name = f"{spec.name}-{kind}"
    stacks: dict[Any, list[int]] = {}
    for index, one in enumerate(parsed):
        key = stack_key(one) if one.rows <= _STACK_MAX_ROWS else None
        stacks.setdefault(("alone", index) if key is None else key, []).append(index)
    members = list(stacks.values())
    derived = [
        _derive(spec, kind, parsed[group[0]] if len(group) == 1 else stacked([parsed[i] for i in group]), now)
        for group in members
    ]
    failed = failed_checks_of_stacks(
        [(d.frame, d.checks, [parsed[i].rows for i in group]) for d, group in zip(derived, members, strict=True)],
        suite_name=suite_name,
    )
    batches: list[CheckedBatch | None] = [None] * len(parsed)
    for group, stack, stack_failed in zip(members, derived, failed, strict=True):
        start = 0
        for index, failed_checks in zip(group, stack_failed, strict=True):
            one, rows = parsed[index], parsed[index].rows
            alone = stack if len(group) == 1 else None
            if failed_checks and alone is None:
                alone = _derive(spec, kind, one, now)
                if [(c.expectation, c.column, c.rule) for c in alone.checks] != [(c.expectation, c.column, c.rule) for c in stack.checks]:
                    raise RuntimeError(f"the checks of {one.source!r} differ from those of the files stacked with it")
            if alone is not None:
                report = detail_report(alone.frame, alone.checks, failed_checks, suite_name=suite_name)
                batches[index] = alone.checked(report)
            else:
                part = _Derived(one, stack.frame, stack.checks, {cls: _rows(values, start, rows) for cls, values in stack.scores.items()},
                                _rows(stack.timestamps, start, rows))  # fmt: skip
                batches[index] = part.checked(ValidationReport({}, len(stack.checks), []))
            start += rows
    return batches


def _rows(values: pd.Series, start: int, rows: int) -> pd.Series:
    return values.iloc[start : start + rows].reset_index(drop=True)
