"""Profiling: whylogs profiles per closed window, flattened for the drift marts.

Three parts:

* **A fast profiler**, :func:`profile_frame`: the same sketches as ``whylogs.log(frame).view()``
  (stock metric classes, so the view serializes, deserializes and merges with stock views), built
  without whylogs' per-element Python paths: floats go to the sketches as numpy arrays (no
  per-element ``isinf``), strings are counted per distinct value (``pandas.factorize`` /
  categorical codes) and fed to the HyperLogLog and frequent-items sketches once per distinct value
  with its count (the same sketch state: HLL ignores repeats, frequent items take weights), booleans
  are counted. Metrics the marts do not use are left out (``ints``; the always-empty ``distribution``
  of string columns; ``frequent_items`` of numeric columns). Large frames are cut into row chunks
  profiled in parallel processes (fork) and merged.
* **References**: :func:`reference_profile` profiles a model version's training data and derives
  the bin edges every window of that version is binned on (numeric: the reference's deciles from
  its KLL sketch, and 1,001 quantiles for KS; categorical / boolean: its top categories plus
  ``__other__``), the reference's own fractions on them, and the null model of every drift
  statistic per window size (:func:`driftloop.monitor.drift.null_model`: what thresholds are learned
  from), all in ``bin_edges``; :func:`store_reference` writes it (and re-bins the stored windows of
  that version). Each window column with a reference also gets a ``profiles.column_statistics`` row
  (KS or chi-square with p-values, the null model at its n).
* **Windows**: :func:`profile_windows` reads ``raw.predictions`` for the closed hours of
  ``[start, end)``, writes one hourly profile per hour x model_version x variant x segment (plus
  ``(all)``), merges the stored hourly profiles of each closed day into a daily profile, and flattens
  every profile into ``profiles.column_summaries`` and ``profiles.column_bins``. Rerunning a window
  replaces its rows in one transaction.

Profiled columns: the spec's features (by name), ``prediction.class`` (the predicted class,
categorical) and ``prediction.score.<class>`` (binary: the positive class; multiclass: every class).
Feature names are identifiers, so the dotted names never collide with them. Failed requests
(``error`` set) are not profiled: a profile describes what the model saw and answered.
"""

from __future__ import annotations

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before whylogs is imported: no network here

import functools
import itertools
import logging
import multiprocessing
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import whylogs_sketching as ds
from psycopg import sql
from whylogs.core.metrics.column_metrics import ColumnCountsMetric, TypeCountersMetric
from whylogs.core.metrics.metrics import (
    CardinalityMetric,
    DistributionMetric,
    FrequentItemsMetric,
    MetricConfig,
)
from whylogs.core.preprocessing import PreprocessedColumn
from whylogs.core.view import ColumnProfileView, DatasetProfileView

from driftloop.core import warehouse
from driftloop.core.locks import lock_model
from driftloop.core.spec import ModelSpec, Task
from driftloop.monitor import drift

log = logging.getLogger(__name__)
# whylogs logs every profile it deserializes at INFO; thousands of lines per run in a task log
logging.getLogger("whylogs.core.utils.protobuf_utils").setLevel(logging.WARNING)

__all__ = [
    "ALL",
    "NULL_SEGMENT",
    "OTHER",
    "PREDICTION_CLASS",
    "SCORE_PREFIX",
    "ProfiledColumn",
    "ProfilingResult",
    "ReferenceProfile",
    "bin_edges",
    "column_bins",
    "column_summary",
    "load_profile",
    "merge_views",
    "profile_columns",
    "profile_frame",
    "profile_windows",
    "profiling_frame",
    "rebin",
    "reference_profile",
    "store_reference",
]

ALL = "(all)"  # segment / variant of a profile over the whole traffic
NULL_SEGMENT = "(null)"  # segment of rows without one
OTHER = "__other__"  # the categorical bin of every category outside the reference's top ones
PREDICTION_CLASS = "prediction.class"
SCORE_PREFIX = "prediction.score."
NUMERIC_BINS = 10
MAX_CATEGORIES = 20
MAX_FREQUENT_ITEMS = 100  # frequent items kept per column in column_summaries
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BOOLEAN_CATEGORIES = ("True", "False")  # how whylogs' frequent-items sketch names booleans

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(weeks=1)
WINDOW_SIZES = {"hour": HOUR, "day": DAY, "week": WEEK}  # smallest first
_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # weeks start on Monday 00:00 UTC, as Postgres' date_trunc('week')
_PARALLEL_MIN_ROWS = 200_000  # below this a second process costs more than it saves
# what a default whylogs DatasetSchema uses (KLL k=1024, HLL lg_k=12, FI lg_max_k=10)
_CONFIG = MetricConfig()
_FI_ERROR = ds.frequent_items_error_type.NO_FALSE_POSITIVES  # whylogs' summary default


# --------------------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class ProfiledColumn:
    name: str
    role: str  # feature | score | prediction
    type: str  # numeric | categorical | boolean


def profile_columns(spec: ModelSpec) -> list[ProfiledColumn]:
    """The columns a window profile of `spec`'s model holds, in order."""
    columns = [ProfiledColumn(f.name, "feature", f.type.value) for f in spec.features]
    classes = [str(spec.positive_class)] if spec.task is Task.binary else [str(c) for c in spec.classes]
    columns += [ProfiledColumn(SCORE_PREFIX + c, "score", "numeric") for c in classes]
    columns.append(ProfiledColumn(PREDICTION_CLASS, "prediction", "categorical"))
    return columns


def _column_index(spec: ModelSpec | None) -> dict[str, ProfiledColumn]:
    return {c.name: c for c in profile_columns(spec)} if spec is not None else {}


def profiling_frame(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The profiled columns of a prediction frame, named and typed as the profiles hold them.

    Accepts a :func:`driftloop.sim.world.generate_predictions` frame (``features.<name>``,
    ``scores.<class>``, ``prediction``) or a frame that already uses the profile's names. Types:
    numeric float64 (NaN for null), categorical ``category``, boolean nullable ``boolean``.
    Columns the frame lacks (e.g. no scores in a training set) are left out.
    """
    out: dict[str, Any] = {}
    for column in profile_columns(spec):
        candidates = [column.name]
        if column.role == "feature":
            candidates.append("features." + column.name)
        elif column.role == "score":
            candidates.append("scores." + column.name.removeprefix(SCORE_PREFIX))
        else:
            candidates.append("prediction")
        source = next((c for c in candidates if c in frame.columns), None)
        if source is None:
            continue
        values = frame[source]
        if column.type == "numeric":
            out[column.name] = pd.to_numeric(values, errors="raise").astype("float64")
        elif column.type == "boolean":
            out[column.name] = values if values.dtype == "boolean" else values.astype("boolean")
        elif isinstance(values.dtype, pd.CategoricalDtype):
            out[column.name] = values
        else:
            out[column.name] = values.astype("category")
    return pd.DataFrame(out, index=frame.index)


# --------------------------------------------------------------------------------------------------
# The fast profiler


@dataclass
class _Column:
    """One column of the frame being profiled, as arrays the workers slice."""

    name: str
    kind: str  # numeric | integer | boolean | codes (categorical with str labels) | objects | stock
    values: np.ndarray | None = None  # numeric: float64 (NaN = null); integer: int64; boolean: bool; objects
    nulls: np.ndarray | None = None  # integer / boolean: null mask (None: no nulls)
    labels: np.ndarray | None = None  # codes: the category labels (object array of str)
    series: pd.Series | None = None  # stock: the column, profiled by whylogs itself


def _prepare(frame: pd.DataFrame, spec: ModelSpec | None) -> list[_Column]:
    declared = _column_index(spec)
    columns = []
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        hint = declared.get(str(name))
        if isinstance(dtype, pd.CategoricalDtype):
            labels = np.asarray(dtype.categories, dtype=object)
            if all(isinstance(v, str) for v in labels):
                columns.append(_Column(str(name), "codes", values=series.cat.codes.to_numpy(), labels=labels))
            else:
                columns.append(_Column(str(name), "stock", series=series))
        elif pd.api.types.is_bool_dtype(dtype):
            if isinstance(dtype, np.dtype):
                columns.append(_Column(str(name), "boolean", values=series.to_numpy()))
            else:
                nulls = series.isna().to_numpy()
                values = series.to_numpy(dtype=bool, na_value=False)
                columns.append(
                    _Column(str(name), "boolean", values=values, nulls=nulls if nulls.any() else None)
                )
        elif pd.api.types.is_float_dtype(dtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            columns.append(_Column(str(name), "numeric", values=values))
        elif pd.api.types.is_integer_dtype(dtype):
            if isinstance(dtype, np.dtype):
                columns.append(_Column(str(name), "integer", values=series.to_numpy(np.int64)))
            else:
                nulls = series.isna().to_numpy()
                values = series.to_numpy(dtype=np.int64, na_value=0)
                columns.append(
                    _Column(str(name), "integer", values=values, nulls=nulls if nulls.any() else None)
                )
        elif pd.api.types.is_object_dtype(dtype) and (hint is None or hint.type != "numeric"):
            # strings (or bools) as Python objects: typed per chunk from their distinct values
            columns.append(_Column(str(name), "objects", values=series.to_numpy()))
        else:
            columns.append(_Column(str(name), "stock", series=series))
    return columns


def _metrics(*names: str) -> dict[str, Any]:
    zero = {
        "counts": ColumnCountsMetric.zero,
        "types": TypeCountersMetric.zero,
        "distribution": DistributionMetric.zero,
        "cardinality": CardinalityMetric.zero,
        "frequent_items": FrequentItemsMetric.zero,
    }
    return {name: zero[name](_CONFIG) for name in names}


def _update(metrics: Mapping[str, Any], column: PreprocessedColumn) -> int:
    return sum(metric.columnar_update(column).successes for metric in metrics.values())


def _numeric_view(values: np.ndarray) -> ColumnProfileView:
    nulls = np.isnan(values)
    null_count = int(np.count_nonzero(nulls))
    present = values[~nulls] if null_count else values
    column = PreprocessedColumn()
    column.len = len(values)
    column.null_count = null_count
    column.nan_count = null_count  # whylogs counts NaN and pd.NA of numeric columns as "nan" too
    column.inf_count = int(np.count_nonzero(np.isinf(present)))
    column.numpy.floats = np.ascontiguousarray(present)
    metrics = _metrics("counts", "types", "distribution", "cardinality")
    return ColumnProfileView(metrics=metrics, success_count=_update(metrics, column), failure_count=0)


def _integer_view(values: np.ndarray, nulls: np.ndarray | None) -> ColumnProfileView:
    column = PreprocessedColumn()
    column.len = len(values)
    column.null_count = column.nan_count = int(np.count_nonzero(nulls)) if nulls is not None else 0
    column.numpy.ints = np.ascontiguousarray(values[~nulls] if nulls is not None else values)
    metrics = _metrics("counts", "types", "distribution", "cardinality")
    return ColumnProfileView(metrics=metrics, success_count=_update(metrics, column), failure_count=0)


def _boolean_view(n: int, true: int, false: int, nan_count: int = 0) -> ColumnProfileView:
    """What whylogs makes of a boolean column: counts (with ``true``), types.boolean, the 0/1
    distribution (mean = share of true), cardinality and the frequent items "True" / "False"."""
    present = true + false
    column = PreprocessedColumn()
    column.len = n
    column.null_count = n - present
    column.nan_count = nan_count
    column.bool_count = present
    column.bool_count_where_true = true
    metrics = _metrics("counts", "types", "distribution", "cardinality", "frequent_items")
    successes = 0
    for name in ("counts", "types", "cardinality"):
        successes += metrics[name].columnar_update(column).successes
    distribution = metrics["distribution"]
    if present:
        distribution.kll.value.update(np.concatenate([np.ones(true), np.zeros(false)]))
        distribution.mean.set(true / present)
        distribution.m2.set(true * false / present)
    frequent = metrics["frequent_items"].frequent_strings.value
    if true:
        frequent.update("True", true)
    if false:
        frequent.update("False", false)
    return ColumnProfileView(metrics=metrics, success_count=successes + 2 * present, failure_count=0)


def _strings_view(n: int, labels: Sequence[str], counts: np.ndarray, nan_count: int = 0) -> ColumnProfileView:
    """What whylogs makes of a string column, from its distinct values and their counts: counts,
    types.string, cardinality (HLL of the distinct values) and frequent items (weighted updates)."""
    present = int(counts.sum())
    metrics = _metrics("counts", "types", "cardinality", "frequent_items")
    column = PreprocessedColumn()
    column.len = n
    column.null_count = n - present
    column.nan_count = nan_count
    successes = metrics["counts"].columnar_update(column).successes
    metrics["types"].string.set(present)
    seen = np.flatnonzero(counts)
    if len(seen):
        strings = [labels[i] for i in seen.tolist()]
        metrics["cardinality"].hll.value.update_str_list(strings)
        frequent = metrics["frequent_items"]
        size = frequent.max_frequent_item_size
        for value, count in zip(strings, counts[seen].tolist(), strict=True):
            frequent.frequent_strings.value.update(value[:size], int(count))
    return ColumnProfileView(metrics=metrics, success_count=successes + 3 * present, failure_count=0)


def _stock_view(series: pd.Series) -> ColumnProfileView:
    import whylogs

    name = "column"
    return whylogs.log(pandas=pd.DataFrame({name: series.reset_index(drop=True)})).view().get_column(name)


def _objects_view(values: np.ndarray) -> ColumnProfileView:
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    nulls = codes < 0
    null_values = values[nulls]
    nan_count = sum(1 for v in null_values if isinstance(v, float))  # NaN (a number) vs None
    counts = np.bincount(codes[~nulls], minlength=len(uniques))
    if all(type(v) is str for v in uniques):
        return _strings_view(len(values), uniques, counts, nan_count)
    if all(isinstance(v, bool | np.bool_) for v in uniques):
        true = int(sum(c for v, c in zip(uniques, counts, strict=True) if v))
        return _boolean_view(len(values), true, int(counts.sum()) - true, nan_count)
    return _stock_view(pd.Series(values, dtype=object))  # mixed types: whylogs sorts them out


def _column_view(column: _Column, start: int, stop: int) -> ColumnProfileView:
    if column.kind == "numeric":
        return _numeric_view(column.values[start:stop])
    if column.kind == "integer":
        return _integer_view(
            column.values[start:stop], None if column.nulls is None else column.nulls[start:stop]
        )
    if column.kind == "boolean":
        values = column.values[start:stop]
        if column.nulls is not None:
            nulls = column.nulls[start:stop]
            true = int(np.count_nonzero(values & ~nulls))
            present = stop - start - int(np.count_nonzero(nulls))
        else:
            true, present = int(np.count_nonzero(values)), stop - start
        return _boolean_view(stop - start, true, present - true)
    if column.kind == "codes":
        codes = column.values[start:stop]
        counts = np.bincount(codes[codes >= 0], minlength=len(column.labels))
        return _strings_view(stop - start, column.labels, counts)
    if column.kind == "objects":
        return _objects_view(column.values[start:stop])
    return _stock_view(column.series.iloc[start:stop])


def _profile_rows(
    columns: Sequence[_Column], start: int, stop: int, timestamp: datetime
) -> DatasetProfileView:
    views = {column.name: _column_view(column, start, stop) for column in columns}
    return DatasetProfileView(
        columns=views, dataset_timestamp=timestamp, creation_timestamp=datetime.now(UTC)
    )


# What forked workers profile, by call: inherited by the fork, never pickled.
_SHARED: dict[int, tuple[list[_Column], datetime]] = {}
_CALLS = itertools.count()


def _profile_shared_rows(call: int, start: int, stop: int) -> bytes:
    columns, timestamp = _SHARED[call]
    return _profile_rows(columns, start, stop, timestamp).serialize()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _process_count(rows: int, processes: int | None) -> int:
    if processes is None:
        configured = os.environ.get("DRIFTLOOP_PROFILE_PROCESSES")
        processes = int(configured) if configured else _cpus()
    processes = max(1, min(processes, rows // (_PARALLEL_MIN_ROWS // 2) or 1))
    if processes > 1 and rows < _PARALLEL_MIN_ROWS:
        processes = 1
    if processes > 1 and (
        sys.platform != "linux"  # fork is the only start method that shares the frame for free
        or multiprocessing.current_process().daemon  # e.g. a Celery prefork child: no children allowed
    ):
        processes = 1
    return processes


def merge_views(views: Iterable[DatasetProfileView]) -> DatasetProfileView:
    """Merge profiles: counts add up exactly, sketches merge within their error bounds."""
    return reduce(lambda a, b: a.merge(b), views)


def profile_frame(
    frame: pd.DataFrame,
    spec: ModelSpec | None = None,
    *,
    processes: int | None = None,
    dataset_timestamp: datetime | None = None,
) -> DatasetProfileView:
    """Profile every column of `frame`: whylogs' sketches, without whylogs' per-element paths.

    The view holds stock whylogs metrics (counts, types, distribution, cardinality, frequent items
    for string and boolean columns), so its summaries are those of ``whylogs.log(frame).view()`` for
    those metrics (counts exact, sketches within their error), and it serializes, deserializes and
    merges with stock views. Left out: ``ints``, the empty ``distribution`` of string columns, and
    ``frequent_items`` of integer columns.

    Columns are typed by dtype like whylogs does (float, int, bool / boolean, category, object
    strings); `spec` marks declared numeric features, whose object-dtype values go to whylogs' own
    path. Columns of other types (or object columns mixing types) are profiled by whylogs itself.

    Frames of at least 200,000 rows are cut into row chunks profiled by `processes` forked processes
    (default: ``DRIFTLOOP_PROFILE_PROCESSES`` or the usable CPUs) and merged.
    """
    timestamp = (dataset_timestamp or datetime.now(UTC)).astimezone(UTC)
    columns = _prepare(frame, spec)
    rows = len(frame)
    workers = _process_count(rows, processes)
    if workers == 1 or rows == 0:
        return _profile_rows(columns, 0, rows, timestamp)
    bounds = np.linspace(0, rows, workers + 1).astype(int).tolist()
    chunks = list(zip(bounds[:-1], bounds[1:], strict=True))
    call = next(_CALLS)
    _SHARED[call] = (columns, timestamp)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers - 1, mp_context=context) as pool:
            futures = [pool.submit(_profile_shared_rows, call, a, b) for a, b in chunks[1:]]
            mine = _profile_rows(columns, *chunks[0], timestamp)  # this process takes the first chunk
            views = [mine, *(DatasetProfileView.deserialize(f.result()) for f in futures)]
    except (OSError, BrokenProcessPool) as exc:  # no fork here (limits, sandbox): one process does it all
        log.warning("profiling in one process: worker processes failed (%s)", exc)
        return _profile_rows(columns, 0, rows, timestamp)
    finally:
        del _SHARED[call]
    return merge_views(views)


# --------------------------------------------------------------------------------------------------
# Flattening: summaries and bins


def _metric(view: ColumnProfileView, name: str) -> Any:
    return view.get_metric(name)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def column_summary(column: ColumnProfileView) -> dict[str, Any]:
    """The flattened statistics of one column of a profile (the column_summaries fields)."""
    counts = _metric(column, "counts")
    n = int(counts.n.value) if counts else 0
    nulls = int(counts.null.value) if counts else 0
    out: dict[str, Any] = {"count": n, "null_count": nulls, "null_fraction": nulls / n if n else None}
    stats = dict.fromkeys(["mean", "stddev", "min", "max", *(_quantile_name(q) for q in QUANTILES)])
    distribution = _metric(column, "distribution")
    if distribution is not None and not distribution.kll.value.is_empty():
        kll = distribution.kll.value
        stats.update(mean=_finite(distribution.avg), stddev=_finite(distribution.stddev),
                     min=_finite(kll.get_min_value()), max=_finite(kll.get_max_value()))  # fmt: skip
        for q, value in zip(QUANTILES, kll.get_quantiles(list(QUANTILES)), strict=True):
            stats[_quantile_name(q)] = _finite(value)
    out.update(stats)
    cardinality = _metric(column, "cardinality")
    if cardinality is not None and not cardinality.hll.value.is_empty():
        hll = cardinality.hll.value
        out.update(cardinality_est=hll.get_estimate(), cardinality_lower=hll.get_lower_bound(1),
                   cardinality_upper=hll.get_upper_bound(1))  # fmt: skip
    else:
        out.update(cardinality_est=None, cardinality_lower=None, cardinality_upper=None)
    frequent = _metric(column, "frequent_items")
    if frequent is not None:
        items = frequent.frequent_strings.value.get_frequent_items(_FI_ERROR)[:MAX_FREQUENT_ITEMS]
        out["frequent_items"] = [{"value": v, "est": e, "lower": lo, "upper": hi} for v, e, lo, hi in items]
    else:
        out["frequent_items"] = None
    return out


def _quantile_name(q: float) -> str:
    return f"p{round(q * 100):02d}"


def bin_edges(view: DatasetProfileView, spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """The bin edges of a reference profile, per profiled column it holds.

    Numeric: the interior edges, the reference's deciles (KLL quantiles 0.1 ... 0.9), deduplicated
    (a column with repeated values has fewer bins); bins are ``(-inf, e1], (e1, e2], ..., (ek, inf)``.
    Categorical: the reference's most frequent categories (up to 20); boolean: "True", "False";
    every value outside them falls in ``__other__``.
    """
    edges: dict[str, dict[str, Any]] = {}
    for column in profile_columns(spec):
        profile = view.get_column(column.name)
        if profile is None:
            continue
        entry: dict[str, Any] = {"role": column.role, "type": column.type}
        if column.type == "numeric":
            distribution = _metric(profile, "distribution")
            if distribution is None or distribution.kll.value.is_empty():
                entry["edges"] = []
            else:
                deciles = distribution.kll.value.get_quantiles(
                    [i / NUMERIC_BINS for i in range(1, NUMERIC_BINS)]
                )
                entry["edges"] = [
                    float(e) for e in np.unique(np.asarray(deciles, dtype=float)) if np.isfinite(e)
                ]
                # the reference's CDF for the KS statistic (driftloop.monitor.drift.reference_cdf)
                quantiles = distribution.kll.value.get_quantiles(np.linspace(0, 1, drift.QUANTILE_POINTS).tolist())
                entry["quantiles"] = np.maximum.accumulate(np.asarray(quantiles, dtype=float)).tolist()
        elif column.type == "boolean":
            entry["categories"] = list(BOOLEAN_CATEGORIES)
        else:
            frequent = _metric(profile, "frequent_items")
            items = (
                frequent.frequent_strings.value.get_frequent_items(_FI_ERROR) if frequent is not None else []
            )
            ranked = sorted(items, key=lambda item: (-item[1], item[0]))
            entry["categories"] = [item[0] for item in ranked[:MAX_CATEGORIES]]
        edges[column.name] = entry
    return edges


def column_bins(column: ColumnProfileView, edges: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A column's distribution on a reference's bins: ``bin_index``, ``lower_edge``/``upper_edge``
    (numeric) or ``category``, ``count`` and ``fraction`` (of the non-null values; sums to 1).
    Empty when the column has no non-null value."""
    if edges["type"] == "numeric":
        distribution = _metric(column, "distribution")
        if distribution is None or distribution.kll.value.is_empty():
            return []
        kll = distribution.kll.value
        interior = list(edges["edges"])
        masses = kll.get_pmf(interior, True) if interior else [1.0]
        bounds = [-np.inf, *interior, np.inf]
        n = kll.get_n()
        fractions = _normalised(masses)
        return [
            {"bin_index": i, "lower_edge": bounds[i], "upper_edge": bounds[i + 1], "category": None,
             "count": f * n, "fraction": f}
            for i, f in enumerate(fractions)
        ]  # fmt: skip
    frequent = _metric(column, "frequent_items")
    if frequent is None:
        return []
    sketch = frequent.frequent_strings.value
    total = sketch.get_total_weight()
    if total <= 0:
        return []
    categories = list(edges["categories"])
    estimates = [float(sketch.get_estimate(c)) for c in categories]
    estimates.append(max(float(total) - sum(estimates), 0.0))
    fractions = _normalised(estimates)
    return [
        {
            "bin_index": i,
            "lower_edge": None,
            "upper_edge": None,
            "category": c,
            "count": f * total,
            "fraction": f,
        }
        for i, (c, f) in enumerate(zip([*categories, OTHER], fractions, strict=True))
    ]


def _normalised(masses: Sequence[float]) -> list[float]:
    values = np.clip(np.asarray(masses, dtype=float), 0.0, None)
    total = values.sum()
    if total <= 0:
        return [0.0] * len(values)
    return np.clip(values / total, 0.0, 1.0).tolist()


# --------------------------------------------------------------------------------------------------
# Writing profiles


@dataclass(frozen=True)
class _Grain:
    model_name: str
    model_version: str
    variant: str
    segment: str
    window_size: str
    window_start: datetime | None
    window_end: datetime | None


_PROFILE_COLUMNS = ("profile_id", "model_name", "model_version", "variant", "segment", "window_size",
                    "window_start", "window_end", "n_rows", "profile")  # fmt: skip
_GRAIN_COLUMNS = (
    "model_name",
    "model_version",
    "variant",
    "segment",
    "window_size",
    "window_start",
    "window_end",
)
_SUMMARY_FIELDS = ("count", "null_count", "null_fraction", "mean", "stddev", "min", "max",
                   *(_quantile_name(q) for q in QUANTILES), "cardinality_est", "cardinality_lower",
                   "cardinality_upper", "frequent_items")  # fmt: skip
_SUMMARY_COLUMNS = (
    "profile_id",
    *_GRAIN_COLUMNS,
    "column_name",
    "column_role",
    "column_type",
    *_SUMMARY_FIELDS,
)
_BIN_FIELDS = ("bin_index", "lower_edge", "upper_edge", "category", "count", "fraction")
_STATISTIC_FIELDS = ("n_values", "ks_statistic", "ks_p_value", "chi2_statistic", "chi2_dof", "chi2_p_value",
                     *(f"{s}_null_{m}" for s in drift.STATISTICS for m in ("mean", "sd")))  # fmt: skip
_STATISTIC_COLUMNS = ("profile_id", "reference_profile_id", "model_name", "model_version", "window_size",
                      "window_start", "column_name", *_STATISTIC_FIELDS)  # fmt: skip
_BIN_COLUMNS = ("profile_id", "reference_profile_id", *_GRAIN_COLUMNS, "column_name", "column_role", "column_type",
                *_BIN_FIELDS)  # fmt: skip


@dataclass(frozen=True)
class _Reference:
    profile_id: int
    edges: dict[str, dict[str, Any]]


# Tables written in COPY's binary format (about 3x cheaper to send and parse than text for the many
# float columns of bins and statistics); column_summaries keeps text for its jsonb column.
_BINARY_COPY = frozenset({"profiles.column_bins", "profiles.column_statistics"})
_COLUMN_TYPES: dict[tuple[str, tuple[str, ...]], list[str]] = {}


def _column_types(conn: psycopg.Connection, table: str, columns: Sequence[str]) -> list[str]:
    key = (table, tuple(columns))
    if key not in _COLUMN_TYPES:
        schema, name = table.split(".")
        found = dict(conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
            "join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped",
            (schema, name),
        ).fetchall())  # fmt: skip
        _COLUMN_TYPES[key] = [found[c] for c in columns]
    return _COLUMN_TYPES[key]


def _copy(
    conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    binary = table in _BINARY_COPY
    statement = sql.SQL("copy {} ({}) from stdin" + (" (format binary)" if binary else "")).format(
        sql.SQL(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    types = _column_types(conn, table, columns) if binary else None
    with conn.cursor().copy(statement) as copy:
        if types is not None:
            copy.set_types(types)
        for row in rows:
            copy.write_row(row)


_MAX_RANKS = 8192  # a window's sketch is read at up to this many ranks for its KS statistic


class _PreparedEdges:
    """What column_statistics takes from a reference column's edges, as arrays, made once per reference."""

    def __init__(self, edges: Mapping[str, Any]):
        self.edges = edges  # held: the cache is keyed by its id
        quantiles = edges.get("quantiles")
        self.cdf = drift.ReferenceCDF(quantiles) if quantiles else None
        if self.cdf is not None:
            every = self.cdf.quantiles[:: drift.KS_GRID_STEP]
            self.grid = np.unique(every)
            self.grid_list, self.grid_index = self.grid.tolist(), np.searchsorted(self.grid, every)
        fractions = edges.get("fractions")
        self.reference_counts = (
            np.asarray(fractions, dtype=float) * float(edges.get("n") or 0) if fractions else None
        )
        null = edges.get("null") or {}
        self.null = {s: drift.NullTable(null[s]) for s in drift.STATISTICS if null.get(s)}


_PREPARED: dict[int, _PreparedEdges] = {}


def _prepared(edges: Mapping[str, Any]) -> _PreparedEdges:
    prepared = _PREPARED.get(id(edges))
    if prepared is None or prepared.edges is not edges:
        if len(_PREPARED) >= 4096:  # references come and go in a long-lived process
            _PREPARED.clear()
        prepared = _PREPARED[id(edges)] = _PreparedEdges(edges)
    return prepared


def column_statistics(column: ColumnProfileView, edges: Mapping[str, Any],
                      bins: Sequence[Mapping[str, Any]], *, p_values: bool = True) -> dict[str, Any]:
    """What a window column gets next to its bins: n_values, KS (numeric, from the sketches) or
    chi-square (categorical / boolean, on the bins' counts) against the reference, with p-values,
    and the reference's null model (mean, sd) of every statistic at n_values. With ``p_values=False``
    the p-values are left None, for the caller to compute many at once (:func:`drift.ks_p_values`,
    :func:`drift.chi2_p_values`: one scipy call each instead of ~0.2 ms a value)."""
    counts = _metric(column, "counts")
    n_values = int(counts.n.value - counts.null.value) if counts else 0
    out: dict[str, Any] = dict.fromkeys(_STATISTIC_FIELDS)
    out["n_values"] = n_values
    reference_n = float(edges.get("n") or 0)
    if n_values and bins and reference_n:
        prepared = _prepared(edges)
        if edges["type"] == "numeric" and prepared.cdf is not None:
            kll = _metric(column, "distribution").kll.value
            ranks = np.linspace(0, 1, min(2 * n_values, _MAX_RANKS) + 1).tolist()
            points = np.unique(np.asarray(kll.get_quantiles(ranks), dtype=float))
            points = points[np.isfinite(points)]
            if len(points):
                sample_cdf = np.asarray(kll.get_cdf(points.tolist(), True)[:-1])
                grid_cdf = np.asarray(kll.get_cdf(prepared.grid_list, True)[:-1])[prepared.grid_index]
                statistic = drift.ks_statistic(prepared.cdf, points, sample_cdf, grid_cdf)
                out["ks_statistic"] = statistic
                if p_values:
                    out["ks_p_value"] = drift.ks_p_value(statistic, n_values, reference_n)
        elif edges["type"] != "numeric" and prepared.reference_counts is not None:
            statistic, dof = drift.chi2_statistic(prepared.reference_counts, [b["count"] for b in bins])
            out.update(chi2_statistic=statistic, chi2_dof=dof)
            if p_values:
                out["chi2_p_value"] = float(drift.chi2_p_values([statistic], [dof])[0])
        for statistic, table in prepared.null.items():
            null = table.at(n_values)
            if null is not None:
                out[f"{statistic}_null_mean"], out[f"{statistic}_null_sd"] = null
    return out


@dataclass(frozen=True)
class _PendingKS:
    """A KS p-value to compute with the others of the same write (one call into scipy for all)."""

    statistic: float
    n: float
    m: float


@dataclass(frozen=True)
class _PendingChi2:
    """A chi-square p-value to compute with the others of the same write."""

    statistic: float
    dof: int


_KS_P_VALUE = _STATISTIC_COLUMNS.index("ks_p_value")  # positions in a column_statistics row
_CHI2_P_VALUE = _STATISTIC_COLUMNS.index("chi2_p_value")


def _fill_p_values(statistics: list[tuple]) -> None:
    """Replace the pending p-values of column_statistics rows by their values, each kind in one call."""
    for position, kind, compute in (
        (_KS_P_VALUE, _PendingKS, lambda p: drift.ks_p_values([k.statistic for k in p], [k.n for k in p],
                                                               [float(k.m) for k in p])),
        (_CHI2_P_VALUE, _PendingChi2, lambda p: drift.chi2_p_values([k.statistic for k in p], [k.dof for k in p])),
    ):  # fmt: skip
        pending = [i for i, row in enumerate(statistics) if isinstance(row[position], kind)]
        if not pending:
            continue
        values = compute([statistics[i][position] for i in pending])
        for i, value in zip(pending, values.tolist(), strict=True):
            row = statistics[i]
            statistics[i] = (*row[:position], value, *row[position + 1:])


def _flatten(
    profile_id: int,
    grain: _Grain,
    view: DatasetProfileView,
    spec: ModelSpec,
    reference: _Reference | None,
    statistics: list[tuple] | None = None,
) -> tuple[list[tuple], list[tuple]]:
    """column_summaries and column_bins rows of one profile (and, into `statistics`, its
    column_statistics rows)."""
    known = _column_index(spec)
    grain_values = tuple(getattr(grain, c) for c in _GRAIN_COLUMNS)
    summaries, bins = [], []
    for name, column in sorted(view.get_columns().items()):
        described = known.get(name) or ProfiledColumn(name, "other", _guess_type(column))
        summary = column_summary(column)
        if summary["frequent_items"] is not None:
            summary["frequent_items"] = orjson.dumps(summary["frequent_items"]).decode()
        summaries.append((profile_id, *grain_values, name, described.role, described.type,
                          *(summary[f] for f in _SUMMARY_FIELDS)))  # fmt: skip
        if reference is None or name not in reference.edges:
            continue
        column_bin_rows = column_bins(column, reference.edges[name])
        for b in column_bin_rows:
            bins.append((profile_id, reference.profile_id, *grain_values, name, described.role, described.type,
                         *(b[f] for f in _BIN_FIELDS)))  # fmt: skip
        if statistics is not None:
            stats = column_statistics(column, reference.edges[name], column_bin_rows, p_values=False)
            if stats["ks_statistic"] is not None:
                stats["ks_p_value"] = _PendingKS(stats["ks_statistic"], stats["n_values"], reference.edges[name]["n"])
            if stats["chi2_statistic"] is not None:
                stats["chi2_p_value"] = _PendingChi2(stats["chi2_statistic"], stats["chi2_dof"])
            statistics.append((profile_id, reference.profile_id, grain.model_name, grain.model_version,
                               grain.window_size, grain.window_start, name, *(stats[f] for f in _STATISTIC_FIELDS)))  # fmt: skip
    return summaries, bins


@dataclass
class _Flat:
    """A profile serialized and flattened ahead of its write (by a worker process): its
    column_summaries, column_bins and column_statistics rows with profile_id 0 (given at the write)
    and its p-values computed; the view itself is deserialized only if something merges it."""

    payload: bytes
    summaries: list[tuple]
    bins: list[tuple]
    statistics: list[tuple]
    kept: DatasetProfileView | None = None  # the view, when this process made it

    @property
    def view(self) -> DatasetProfileView:
        if self.kept is None:
            self.kept = DatasetProfileView.deserialize(self.payload)
        return self.kept


def _flat_profiles(
    profiles: Sequence[tuple[_Grain, DatasetProfileView, int]], spec: ModelSpec,
    references: Mapping[str, _Reference], keep: bool,
) -> list[tuple[_Grain, _Flat, int]]:
    """`profiles` serialized and flattened, their p-values computed all at once."""
    out, statistics, counts = [], [], []
    for grain, view, n_rows in profiles:
        before = len(statistics)
        summaries, bins = _flatten(0, grain, view, spec, references.get(grain.model_version), statistics)
        counts.append(len(statistics) - before)
        out.append((grain, _Flat(view.serialize(), summaries, bins, [], view if keep else None), n_rows))
    _fill_p_values(statistics)
    position = 0
    for (_, flat, _), count in zip(out, counts, strict=True):
        flat.statistics = statistics[position:position + count]
        position += count
    return out


def _view_of(profile: DatasetProfileView | _Flat | bytes) -> DatasetProfileView:
    if isinstance(profile, _Flat):
        return profile.view
    return profile if isinstance(profile, DatasetProfileView) else DatasetProfileView.deserialize(profile)


def _guess_type(column: ColumnProfileView) -> str:
    types = _metric(column, "types")
    if types is not None and types.string.value > 0:
        return "categorical"
    if types is not None and types.boolean.value > 0:
        return "boolean"
    return "numeric"


def _new_ids(conn: psycopg.Connection, n: int) -> list[int]:
    if n == 0:
        return []
    rows = conn.execute(
        "select nextval('profiles.whylogs_profiles_profile_id_seq') from generate_series(1, %s)", (n,)
    ).fetchall()
    return [r[0] for r in rows]


def _write_profiles(
    conn: psycopg.Connection,
    spec: ModelSpec,
    profiles: Sequence[tuple[_Grain, DatasetProfileView | _Flat, int]],
    references: Mapping[str, _Reference],
) -> list[int]:
    """Insert profiles (grain, view, n_rows) and their summaries and bins; returns the profile ids.
    Views not flattened yet (by a worker: :class:`_Flat`) are flattened here."""
    unflat = [p for p in profiles if not isinstance(p[1], _Flat)]
    flattened = iter(_flat_profiles(unflat, spec, references, keep=False))
    profiles = [p if isinstance(p[1], _Flat) else next(flattened) for p in profiles]
    ids = _new_ids(conn, len(profiles))
    rows, summaries, bins, statistics = [], [], [], []
    for profile_id, (grain, flat, n_rows) in zip(ids, profiles, strict=True):  # the rows get their profile_id
        rows.append((profile_id, *(getattr(grain, c) for c in _GRAIN_COLUMNS), n_rows, flat.payload))
        summaries += [(profile_id, *row[1:]) for row in flat.summaries]
        bins += [(profile_id, *row[1:]) for row in flat.bins]
        statistics += [(profile_id, *row[1:]) for row in flat.statistics]
    _copy(conn, "profiles.whylogs_profiles", _PROFILE_COLUMNS, rows)
    _copy(conn, "profiles.column_summaries", _SUMMARY_COLUMNS, summaries)
    _copy(conn, "profiles.column_bins", _BIN_COLUMNS, bins)
    _copy(conn, "profiles.column_statistics", _STATISTIC_COLUMNS, statistics)
    return ids


def _references(conn: psycopg.Connection, model_name: str) -> dict[str, _Reference]:
    rows = conn.execute(
        "select model_version, profile_id, bin_edges from profiles.reference_profiles where model_name = %s",
        (model_name,),
    ).fetchall()
    return {version: _Reference(profile_id, edges) for version, profile_id, edges in rows}


def load_profile(url: str | None, profile_id: int) -> DatasetProfileView:
    """A stored profile, deserialized."""
    with warehouse.connect(url) as conn:
        row = conn.execute(
            "select profile from profiles.whylogs_profiles where profile_id = %s", (profile_id,)
        )
        found = row.fetchone()
    if found is None:
        raise KeyError(f"no profile {profile_id}")
    return DatasetProfileView.deserialize(bytes(found[0]))


# --------------------------------------------------------------------------------------------------
# References


@dataclass
class ReferenceProfile:
    """The profile of a model version's training data and the bin edges derived from it."""

    model_name: str
    model_version: str
    view: DatasetProfileView
    bin_edges: dict[str, dict[str, Any]]
    n_rows: int
    data_start: datetime | None = None
    data_end: datetime | None = None
    source: dict[str, Any] = field(default_factory=dict)


def reference_profile(
    spec: ModelSpec,
    model_version: str,
    frame: pd.DataFrame,
    *,
    source: Mapping[str, Any] | None = None,
    processes: int | None = None,
    null_seed: int = 0,
) -> ReferenceProfile:
    """Profile a model version's training data (features; scores and predicted class when the frame
    has them, e.g. the model's predictions on its training set) and derive its bin edges.

    `frame`: a :func:`driftloop.sim.world.generate_predictions`-like frame or one using the profile's
    column names (see :func:`profiling_frame`); ``request_ts``, when present, gives the data's time range.
    Each column's edges also hold the reference's ``fractions`` on them, its non-null count ``n`` and
    ``null``: the mean and sd of each drift statistic over windows drawn from `frame` itself, per
    window size (seeded by `null_seed`, so the same data gives the same thresholds).
    """
    data = profiling_frame(frame, spec)
    data_start = data_end = None
    if "request_ts" in frame.columns and len(frame):
        stamps = pd.to_datetime(frame["request_ts"], utc=True)
        data_start, data_end = stamps.min().to_pydatetime(), stamps.max().to_pydatetime()
    view = profile_frame(data, spec, processes=processes, dataset_timestamp=data_start)
    edges = bin_edges(view, spec)
    for name, entry in edges.items():
        column = view.get_column(name)
        entry["fractions"] = [b["fraction"] for b in column_bins(column, entry)]
        counts = _metric(column, "counts")
        entry["n"] = int(counts.n.value - counts.null.value) if counts else 0
    # what each statistic looks like on windows of the reference itself: the learned thresholds
    for name, null in drift.null_model(data, edges, seed=null_seed).items():
        edges[name]["null"] = null
    return ReferenceProfile(
        model_name=spec.name,
        model_version=str(model_version),
        view=view,
        bin_edges=edges,
        n_rows=len(data),
        data_start=data_start,
        data_end=data_end,
        source=dict(source or {}),
    )


def store_reference(url: str | None, spec: ModelSpec, reference: ReferenceProfile) -> int:
    """Write a reference (replacing the version's previous one) and re-bin the stored hourly and daily
    profiles of that model version on its edges, in one transaction. Returns the reference's profile_id."""
    if reference.model_name != spec.name:
        raise ValueError(f"reference of {reference.model_name!r} given with the spec of {spec.name!r}")
    grain = _Grain(spec.name, reference.model_version, ALL, ALL, "reference", reference.data_start,
                   reference.data_end)  # fmt: skip
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "profiles", spec.name)
        # the old reference's row, its bins and every window bin computed on it go (on delete cascade)
        conn.execute(
            "delete from profiles.whylogs_profiles where model_name = %s and model_version = %s "
            "and window_size = 'reference'",
            (spec.name, reference.model_version),
        )
        (profile_id,) = _new_ids(conn, 1)
        ref = _Reference(profile_id, reference.bin_edges)
        summaries, bins = _flatten(profile_id, grain, reference.view, spec, ref)
        _copy(conn, "profiles.whylogs_profiles", _PROFILE_COLUMNS,
              [(profile_id, *(getattr(grain, c) for c in _GRAIN_COLUMNS), reference.n_rows,
                reference.view.serialize())])  # fmt: skip
        conn.execute(
            "insert into profiles.reference_profiles (model_name, model_version, profile_id, bin_edges, n_rows, source, "
            "is_simulated) values (%s, %s, %s, %s::jsonb, %s, %s::jsonb, %s)",
            (spec.name, reference.model_version, profile_id, orjson.dumps(reference.bin_edges).decode(),
             reference.n_rows, orjson.dumps(reference.source, default=str).decode(),
             bool(reference.source.get("simulated", False))),
        )  # fmt: skip
        _copy(conn, "profiles.column_summaries", _SUMMARY_COLUMNS, summaries)
        _copy(conn, "profiles.column_bins", _BIN_COLUMNS, bins)
        rebinned = _rebin(conn, spec, reference.model_version, ref)
    log.info("%s: reference of version %s stored (profile %d, %d rows); %d window profiles re-binned",
             spec.name, reference.model_version, profile_id, reference.n_rows, rebinned)  # fmt: skip
    return profile_id


def _rebin(conn: psycopg.Connection, spec: ModelSpec, model_version: str, reference: _Reference) -> int:
    for table in ("profiles.column_bins", "profiles.column_statistics"):
        conn.execute(
            sql.SQL("delete from {} where model_name = %s and model_version = %s and window_size <> 'reference'").format(
                sql.SQL(table)
            ),
            (spec.name, model_version),
        )
    count = 0
    with conn.cursor(name="driftloop_rebin") as cursor:
        cursor.execute(
            f"select profile_id, {', '.join(_GRAIN_COLUMNS)}, profile from profiles.whylogs_profiles "
            "where model_name = %s and model_version = %s and window_size <> 'reference' order by profile_id",
            (spec.name, model_version),
        )
        while batch := cursor.fetchmany(500):
            bins, statistics = [], []
            for profile_id, *grain_values, payload in batch:
                view = DatasetProfileView.deserialize(bytes(payload))
                _, b = _flatten(profile_id, _Grain(*grain_values), view, spec, reference, statistics)
                bins += b
            _fill_p_values(statistics)
            _copy(conn, "profiles.column_bins", _BIN_COLUMNS, bins)
            _copy(conn, "profiles.column_statistics", _STATISTIC_COLUMNS, statistics)
            count += len(batch)
    return count


def rebin(url: str | None, spec: ModelSpec, model_version: str) -> int:
    """Recompute the bins of the stored windows of a model version on its stored reference."""
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "profiles", spec.name)
        reference = _references(conn, spec.name).get(str(model_version))
        if reference is None:
            raise LookupError(f"{spec.name}: no reference profile for model_version {model_version!r}")
        return _rebin(conn, spec, str(model_version), reference)


# --------------------------------------------------------------------------------------------------
# Windows


@dataclass
class ProfilingResult:
    """What :func:`profile_windows` did."""

    model_name: str
    hours: list[datetime] = field(default_factory=list)  # hourly windows (re)written: they had raw rows
    days: list[datetime] = field(default_factory=list)  # daily windows (re)written
    windows: dict[str, list[datetime]] = field(default_factory=dict)  # day / week windows (re)written
    profiles: int = 0  # profile rows written (hourly + daily, all segments)
    rows: int = 0  # raw rows profiled
    unbinned_versions: list[str] = field(default_factory=list)  # model versions without a reference
    seconds: float = 0.0


def _utc(ts: datetime) -> datetime:
    """A plain UTC datetime (Airflow hands out pendulum ones, whose durations do not divide by a timedelta)."""
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.microsecond, tzinfo=UTC)


def _floor(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((_utc(ts) - epoch) // step) * step


def _floor_size(ts: datetime, size: str) -> datetime:
    """The start of the `size` window holding `ts`."""
    if size == "week":
        return _MONDAY + ((_utc(ts) - _MONDAY) // WEEK) * WEEK
    return _floor(ts, WINDOW_SIZES[size])


def _ceil(ts: datetime, step: timedelta) -> datetime:
    floor = _floor(ts, step)
    return floor if floor == ts else floor + step


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got {value!r})")
    return _utc(value)


def _select_columns(spec: ModelSpec) -> list[tuple[ProfiledColumn, sql.Composable, pa.DataType]]:
    out = []
    for column in profile_columns(spec):
        if column.role == "feature":
            raw = sql.SQL("event -> 'features' ->> {}").format(sql.Literal(column.name))
            expression = {
                "numeric": sql.SQL("({})::float8").format(raw),
                "boolean": sql.SQL("({})::boolean").format(raw),
                "categorical": raw,
            }[column.type]
        elif column.role == "score":
            cls = column.name.removeprefix(SCORE_PREFIX)
            if spec.task is Task.binary:
                expression = sql.SQL("score")
            else:
                expression = sql.SQL("(scores ->> {})::float8").format(sql.Literal(cls))
        else:
            expression = sql.SQL("prediction")
        arrow_type = {"numeric": pa.float64(), "boolean": pa.bool_(),
                      "categorical": pa.dictionary(pa.int32(), pa.string())}[column.type]  # fmt: skip
        out.append((column, expression, arrow_type))
    return out


_KEYS = ("hour", "model_version", "variant", "segment")


def _read_raw(conn: psycopg.Connection, spec: ModelSpec, start: datetime, end: datetime) -> pd.DataFrame:
    """Successful predictions of `spec`'s model in [start, end), typed: one row per prediction."""
    selected = _select_columns(spec)
    query = sql.SQL(
        "copy (select floor(extract(epoch from request_ts) / 3600)::bigint, model_version, variant, segment, {} "
        "from raw.predictions where model_name = {} and request_ts >= {} and request_ts < {} and error is null) "
        "to stdout (format csv)"
    ).format(
        sql.SQL(", ").join(expression for _, expression, _ in selected),
        sql.Literal(spec.name), sql.Literal(start), sql.Literal(end),
    )  # fmt: skip
    buffer = bytearray()
    with conn.cursor().copy(query) as copy:
        for chunk in copy:
            buffer += chunk
    names = [*_KEYS, *(column.name for column, _, _ in selected)]
    text = pa.dictionary(pa.int32(), pa.string())
    types = {"hour": pa.int64(), "model_version": text, "variant": text, "segment": text}
    types.update({column.name: arrow_type for column, _, arrow_type in selected})
    if not buffer:
        table = pa.table({name: pa.array([], type=types[name]) for name in names})
    else:
        table = pa_csv.read_csv(
            pa.py_buffer(buffer),
            read_options=pa_csv.ReadOptions(column_names=names),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
                true_values=["t"], false_values=["f"],
            ),
        )  # fmt: skip
    return table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)


def _hour_profiles(
    data: pd.DataFrame, spec: ModelSpec, columns: list[str], processes: int | None,
    window: tuple[str, datetime] | None = None,
) -> list[tuple[_Grain, DatasetProfileView, int]]:
    """Hourly profiles per hour x version x variant x segment, plus the '(all)' segment (a merge); with
    `window` (size, start), every row is of that one window: profiles of it, not of its hours."""
    out = []
    if data.empty:
        return out
    keys = ["model_version", "variant"] if window is not None else ["hour", "model_version", "variant"]
    for key, part in data.groupby(keys, sort=True, observed=True):
        if window is not None:
            (version, variant), (size, start) = key, window
            end = start + WINDOW_SIZES[size]
        else:
            hour, version, variant = key
            size, start = "hour", datetime.fromtimestamp(int(hour) * 3600, UTC)
            end = start + HOUR
        base = dict(model_name=spec.name, model_version=str(version), variant=str(variant), window_size=size,
                    window_start=start, window_end=end)  # fmt: skip
        if spec.segment is None:
            view = profile_frame(part[columns], spec, processes=processes, dataset_timestamp=start)
            out.append((_Grain(segment=ALL, **base), view, len(part)))
            continue
        views = []
        segments = part["segment"].astype(object).where(part["segment"].notna(), NULL_SEGMENT)
        for segment, rows in part.groupby(segments, sort=True):
            view = profile_frame(rows[columns], spec, processes=processes, dataset_timestamp=start)
            out.append((_Grain(segment=str(segment), **base), view, len(rows)))
            views.append(view)
        out.append((_Grain(segment=ALL, **base), merge_views(views), len(part)))
    return out


def _merged_profiles(
    conn: psycopg.Connection,
    spec: ModelSpec,
    size: str,
    window_start: datetime,
    part_size: str | None,
    fresh: Sequence[tuple[_Grain, DatasetProfileView, int]] = (),
) -> list[tuple[_Grain, DatasetProfileView, int]]:
    """Profiles of one `size` window: the merge of its parts, per version x variant x segment.

    `fresh`: parts profiled in this call (in memory); `part_size`: the stored window size whose
    profiles make up the rest of the window (read back from profiles.whylogs_profiles, raw rows are
    not read again), or None when the window is made of `fresh` alone."""
    window_end = window_start + WINDOW_SIZES[size]
    parts: dict[tuple[str, str, str], list[tuple[datetime, int, DatasetProfileView | _Flat | bytes]]] = defaultdict(
        list
    )
    for grain, view, n_rows in fresh:
        parts[(grain.model_version, grain.variant, grain.segment)].append((grain.window_start, n_rows, view))
    if part_size is not None:
        fresh_starts = sorted({grain.window_start for grain, _, _ in fresh if grain.window_size == part_size})
        rows = conn.execute(
            "select model_version, variant, segment, window_start, n_rows, profile from profiles.whylogs_profiles "
            "where model_name = %s and window_size = %s and window_start >= %s and window_start < %s "
            "and not window_start = any(%s)",
            (spec.name, part_size, window_start, window_end, fresh_starts),
        ).fetchall()
        for version, variant, segment, part_start, n_rows, payload in rows:
            parts[(version, variant, segment)].append((part_start, n_rows, bytes(payload)))
    out = []
    for (version, variant, segment), pieces in sorted(parts.items()):
        pieces.sort(key=lambda part: part[0])
        views = (_view_of(p) for _, _, p in pieces)
        view = merge_views(views)
        view.set_dataset_timestamp(window_start)
        grain = _Grain(spec.name, version, variant, segment, size, window_start, window_end)
        out.append((grain, view, sum(n for _, n, _ in pieces)))
    return out


class _Writes:
    """Profiles to replace, held until :meth:`flush` writes them all: one delete per window size and
    one COPY per table for many windows (per window they were most of the cost of a small one).
    Flushed before anything reads stored profiles back, and before the transaction commits."""

    def __init__(self, spec: ModelSpec, references: Mapping[str, _Reference]):
        self.spec, self.references = spec, references
        self.starts: dict[str, list[datetime]] = defaultdict(list)
        self.profiles: list[tuple[_Grain, DatasetProfileView, int]] = []

    def replace(self, size: str, starts: Sequence[datetime],
                profiles: Sequence[tuple[_Grain, DatasetProfileView, int]]) -> None:
        self.starts[size] += starts
        self.profiles += profiles

    def flush(self, conn: psycopg.Connection) -> None:
        for size, starts in self.starts.items():
            conn.execute(
                "delete from profiles.whylogs_profiles where model_name = %s and window_size = %s "
                "and window_start = any(%s)",
                (self.spec.name, size, starts),
            )
        if self.profiles:
            _write_profiles(conn, self.spec, self.profiles, self.references)
        self.starts.clear()
        self.profiles = []


def _windows_of(data: pd.DataFrame, size: str, start: datetime, end: datetime) -> list[tuple[datetime, pd.DataFrame]]:
    """The rows of [start, end) cut into its `size` windows, every window listed (empty ones too)."""
    out, starts = [], []
    window = start
    while window < end:
        starts.append(window)
        window += WINDOW_SIZES[size]
    if data.empty:
        return [(w, data) for w in starts]
    hours = data["hour"].to_numpy()
    distinct = np.unique(hours)
    index = {w: i for i, w in enumerate(starts)}
    of_hour = np.array([index[_floor_size(datetime.fromtimestamp(int(h) * 3600, UTC), size)] for h in distinct])
    window_of_row = of_hour[np.searchsorted(distinct, hours)]
    order = np.argsort(window_of_row, kind="stable")
    bounds = np.searchsorted(window_of_row[order], np.arange(len(starts) + 1))
    for i, w in enumerate(starts):
        out.append((w, data.iloc[order[bounds[i]:bounds[i + 1]]]))
    return out


# What forked workers profile and flatten, by call: windows of one batch, inherited by the fork.
_SHARED_WINDOWS: dict[int, tuple[list[tuple[datetime, pd.DataFrame]], ModelSpec, list[str], str,
                                 Mapping[str, _Reference]]] = {}  # fmt: skip
_PARALLEL_MIN_WINDOWS = 4  # below this a second process costs more than it saves


def _profile_window_range(call: int, first: int, stop: int, keep: bool = False) -> list[list[tuple[_Grain, _Flat, int]]]:
    """Profiles of windows [first, stop) of a shared batch, each window as one, flattened."""
    windows, spec, columns, size, references = _SHARED_WINDOWS[call]
    profiled = [_hour_profiles(part, spec, columns, 1, window=(size, start)) for start, part in windows[first:stop]]
    flat = iter(_flat_profiles([p for window in profiled for p in window], spec, references, keep))
    return [[next(flat) for _ in window] for window in profiled]


def _profile_windows_flat(
    windows: list[tuple[datetime, pd.DataFrame]], spec: ModelSpec, columns: list[str], size: str,
    references: Mapping[str, _Reference], processes: int | None, meanwhile: Callable[[], None] | None = None,
) -> list[list[tuple[_Grain, _Flat, int]]]:
    """The profiles of each of `windows` (each profiled as one `size` window), serialized and flattened;
    windows are shared out by rows between `processes` forked processes (this one included), which
    is most of profiling many small windows (a window's flattening costs more than its profile).

    `meanwhile` (the previous batch's write) runs once in this process while the others profile,
    before this process's own, smaller, share; an error of it is raised once the others are done."""
    workers = 1
    if len(windows) >= _PARALLEL_MIN_WINDOWS:
        workers = min(len(windows) // (_PARALLEL_MIN_WINDOWS // 2), _process_count(_PARALLEL_MIN_ROWS, processes))
    ranges = [(0, len(windows))]
    if workers > 1:
        # this process's share is smaller when it also writes the previous batch meanwhile
        weights = np.array([_OWN_SHARE_WRITING if meanwhile else 1.0] + [1.0] * (workers - 1))
        bounds = np.cumsum(weights) / weights.sum()
        rows = np.cumsum([len(part) + 50 for _, part in windows])  # +50: a window costs something empty too
        cuts = [0, *(int(np.searchsorted(rows, rows[-1] * b)) + 1 for b in bounds[:-1]), len(windows)]
        cuts = sorted(set(min(max(c, 0), len(windows)) for c in cuts))
        ranges = list(zip(cuts[:-1], cuts[1:], strict=True))
    call = next(_CALLS)
    _SHARED_WINDOWS[call] = (windows, spec, columns, size, references)
    pool, futures = None, []
    try:
        if len(ranges) > 1:
            try:
                pool = ProcessPoolExecutor(max_workers=len(ranges) - 1, mp_context=multiprocessing.get_context("fork"))
                futures = [pool.submit(_profile_window_range, call, a, b) for a, b in ranges[1:]]
            except (OSError, BrokenProcessPool) as exc:  # no fork here (limits, sandbox): this process does it all
                log.warning("profiling in one process: worker processes failed (%s)", exc)
        if meanwhile is not None:
            meanwhile()
        out = _profile_window_range(call, *ranges[0], keep=True)  # this process's share
        for i, (a, b) in enumerate(ranges[1:]):
            try:
                out += futures[i].result() if i < len(futures) else _profile_window_range(call, a, b, keep=True)
            except BrokenProcessPool as exc:  # a worker died: its share is profiled here
                log.warning("profiling in one process: a worker process failed (%s)", exc)
                out += _profile_window_range(call, a, b, keep=True)
        return out
    finally:
        if pool is not None:
            pool.shutdown()
        del _SHARED_WINDOWS[call]


_OWN_SHARE_WRITING = 0.6  # this process's share of a batch (vs 1 for each other) while it writes the last one


# A transaction of windows (without stored hours) holds about this many raw rows: many small windows
# share one, a large window has its own.
_BATCH_ROWS = 100_000
_BATCH_WINDOWS = 64


def profile_windows(
    url: str | None,
    spec: ModelSpec,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
    processes: int | None = None,
) -> ProfilingResult:
    """Profile the closed windows of the spec's ``windows.sizes`` (hour, day, week) in [start, end).

    Only the sizes the spec lists are written. Raw rows are read one closed hour at a time (failed
    requests left out) and profiled per hour x model_version x variant x segment (plus segment
    '(all)', the merge of the segments). The smallest listed size is built from those hours: hourly
    profiles are written as they are; without hours, the range is widened to whole days (or weeks)
    and only the ones that have closed by `now` (and `end`) are profiled. Each larger size is the
    merge of the stored profiles of the next smaller listed size, rewritten for every window of it
    that has closed and that this call touched: a day (Monday-to-Monday week) closes by the clock,
    whether or not a file arrives after its last one. Windows without raw rows are left as they are
    (raw rows may have been dropped by retention: their profiles stay). Per smallest-size window
    (a day when hours are listed), in one transaction; every profile is flattened into
    column_summaries, and into column_bins and column_statistics when its model_version has a
    reference (see :func:`store_reference`). Writers of one model are serialized by an advisory lock.
    """
    started = time.perf_counter()
    start, end = _aware(start, "start"), _aware(end, "end")
    now = _aware(now or datetime.now(UTC), "now")
    sizes = [size for size in WINDOW_SIZES if size in spec.windows.sizes]
    base = sizes[0]
    first, last = _ceil(start, HOUR), _floor(min(end, now), HOUR)  # closed hours: [first, last)
    if base != "hour":  # nothing stores a part of a day (week): profile whole closed ones
        first, last = _floor_size(first, base), _floor_size(last, base)
    result = ProfilingResult(spec.name)
    if last <= first:
        return result
    columns = [c.name for c in profile_columns(spec)]
    url = warehouse.resolve_url(url)
    with warehouse.connect(url) as conn:
        references = _references(conn, spec.name)
    unbinned: set[str] = set()
    # one transaction per day (hours stored), or per batch of base windows (many small windows share one)
    step = "day" if base == "hour" else base
    window = _floor_size(first, step)
    batch = 1  # base windows per transaction: grows with what the first ones held
    rows_seen = windows_seen = 0

    def write(pieces: list[tuple[datetime, list[tuple[_Grain, DatasetProfileView | _Flat, int]]]]) -> None:
        """One transaction: the pieces' profiles and the larger windows they close."""
        nonlocal unbinned
        with warehouse.connect(url) as conn, conn.transaction():
            lock_model(conn, "profiles", spec.name)
            writes = _Writes(spec, references)
            for piece_start, hourly in pieces:
                piece_end = piece_start + WINDOW_SIZES[step]
                hours = sorted({grain.window_start for grain, _, _ in hourly})
                fresh: Sequence[tuple[_Grain, DatasetProfileView, int]] = hourly
                part_size: str | None = None  # the stored size the next size is merged from (None: `fresh` only)
                if base == "hour":
                    if hours:
                        writes.replace("hour", hours, hourly)
                        result.hours += hours
                        result.profiles += len(hourly)
                    part_size = "hour"
                for size in sizes:
                    if size == "hour":
                        continue
                    # the `size` window this one ends, once it has closed (a week: on its last day)
                    touched = _floor_size(piece_start, size)
                    closes = touched + WINDOW_SIZES[size]
                    if closes != piece_end or closes > last:
                        break
                    if part_size is None and all(grain.window_size == size for grain, _, _ in fresh):
                        merged = list(fresh)  # profiled as this window already (no hour stored): nothing to merge
                    elif fresh or part_size:
                        writes.flush(conn)  # the merge reads the stored parts back
                        merged = _merged_profiles(conn, spec, size, touched, part_size, fresh)
                    else:
                        merged = []
                    if merged:
                        writes.replace(size, [touched], merged)
                        result.windows.setdefault(size, []).append(touched)
                        result.profiles += len(merged)
                    fresh, part_size = merged, size
                unbinned |= {grain.model_version for grain, _, _ in hourly if grain.model_version not in references}
            writes.flush(conn)

    pending: list[tuple[datetime, list[tuple[_Grain, DatasetProfileView | _Flat, int]]]] | None = None
    while window < last:
        batch_end = window
        for _ in range(batch if base != "hour" else 1):
            if batch_end >= last:
                break
            batch_end += WINDOW_SIZES[step]
        pieces: list[tuple[datetime, list[tuple[_Grain, DatasetProfileView | _Flat, int]]]] = []
        with warehouse.connect(url) as conn:
            if base != "hour":  # no hour is stored: the batch's rows in one read, each window profiled as one
                data = _read_raw(conn, spec, window, batch_end)
                result.rows += len(data)
                windows_ = _windows_of(data, base, window, batch_end)
                if len(windows_) == 1:  # one large window: its frame is profiled in parallel chunks instead
                    start_, part = windows_[0]
                    pieces.append((start_, _hour_profiles(part, spec, columns, processes, window=(base, start_))))
                else:
                    previous, pending = pending, None
                    flat = _profile_windows_flat(windows_, spec, columns, base, references, processes,
                                                 meanwhile=None if previous is None else functools.partial(write, previous))
                    pieces += [(start_, profiles) for (start_, _), profiles in zip(windows_, flat, strict=True)]
                rows_seen, windows_seen = rows_seen + len(data), windows_seen + len(pieces)
                batch = max(1, min(_BATCH_WINDOWS, _BATCH_ROWS * windows_seen // max(rows_seen, 1)))
            else:
                hourly: list[tuple[_Grain, DatasetProfileView, int]] = []
                hour = max(window, first)
                while hour < min(batch_end, last):  # one hour of raw rows in memory at a time
                    data = _read_raw(conn, spec, hour, hour + HOUR)
                    hourly += _hour_profiles(data, spec, columns, processes)
                    result.rows += len(data)
                    hour += HOUR
                pieces.append((window, hourly))
        if base == "hour":
            write(pieces)
        else:  # written while the next batch is profiled (or after the last)
            if pending is not None:
                write(pending)
            pending = pieces
        window = batch_end
    if pending is not None:
        write(pending)
    result.days = result.windows.get("day", [])
    result.unbinned_versions = sorted(unbinned)
    if unbinned:
        log.warning("%s: no reference profile for model_version %s: summaries written, bins not",
                    spec.name, ", ".join(result.unbinned_versions))  # fmt: skip
    result.seconds = time.perf_counter() - started
    counts = [f"{len(result.hours)} hour", *(f"{len(v)} {k}" for k, v in result.windows.items())]
    log.info("%s: %s windows profiled (%d profiles, %d rows) in %.1fs", spec.name, ", ".join(counts),
             result.profiles, result.rows, result.seconds)  # fmt: skip
    return result


def profile_pending(url: str | None, spec: ModelSpec, now: datetime) -> ProfilingResult:
    """What ``profile__<model>`` does: profile the windows touched by prediction files loaded since the
    last run (to the end of their day, or week when the spec has weeks), and the windows that have
    closed by `now` since the last run, loaded files or not (a day that got no file after its last one
    still gets its daily profile). The marks live in ops.watermarks (``profile:<model>``: the newest
    loaded_at profiled; ``profile_closed:<model>``: the clock of the last run)."""
    now = _aware(now, "now")
    url = warehouse.resolve_url(url)
    mark, closed_mark = f"profile:{spec.name}", f"profile_closed:{spec.name}"
    with warehouse.connect(url) as conn:
        first, last, loaded_up_to = conn.execute(
            """select min(min_event_ts), max(max_event_ts), max(loaded_at) from raw.ingest_files
               where model_name = %s and kind = 'predictions' and status in ('loaded', 'changed') and rows_loaded > 0
                 and loaded_at > coalesce((select value from ops.watermarks where name = %s), '-infinity')""",
            (spec.name, mark),
        ).fetchone()
        closed = conn.execute("select value from ops.watermarks where name = %s", (closed_mark,)).fetchone()
    largest = [size for size in WINDOW_SIZES if size in spec.windows.sizes][-1]
    result = ProfilingResult(spec.name)
    if first is not None:
        start = _floor(first, HOUR)
        # to the end of the last touched day (week), so it is (re)merged once it has closed
        end = _floor_size(last, largest) + WINDOW_SIZES[largest]
        result = profile_windows(url, spec, start, end, now=now)
    if closed is not None and _floor(closed[0], DAY) < _floor(now, DAY):
        # days (weeks) that closed since the last run: merged from what is stored
        closing = profile_windows(url, spec, _floor(closed[0], DAY), _floor(now, DAY), now=now)
        result.hours += [h for h in closing.hours if h not in result.hours]
        for size, starts in closing.windows.items():
            result.windows.setdefault(size, []).extend(s for s in starts if s not in result.windows.get(size, []))
        result.days = result.windows.get("day", [])
        result.profiles += closing.profiles
        result.rows += closing.rows
        result.unbinned_versions = sorted(set(result.unbinned_versions) | set(closing.unbinned_versions))
    with warehouse.connect(url) as conn:
        upsert = """insert into ops.watermarks (name, value) values (%s, %s)
                    on conflict (name) do update set value = greatest(ops.watermarks.value, excluded.value),
                    updated_at = now()"""
        if loaded_up_to is not None:
            conn.execute(upsert, (mark, loaded_up_to))
        conn.execute(upsert, (closed_mark, now))
    return result
