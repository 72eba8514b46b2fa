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
  its KLL sketch; categorical / boolean: its top categories plus ``__other__``);
  :func:`store_reference` writes it (and re-bins the stored windows of that version).
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

import itertools
import logging
import multiprocessing
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
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
_BIN_COLUMNS = ("profile_id", "reference_profile_id", *_GRAIN_COLUMNS, "column_name", "column_role", "column_type",
                *_BIN_FIELDS)  # fmt: skip


@dataclass(frozen=True)
class _Reference:
    profile_id: int
    edges: dict[str, dict[str, Any]]


def _copy(
    conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    statement = sql.SQL("copy {} ({}) from stdin").format(
        sql.SQL(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _flatten(
    profile_id: int,
    grain: _Grain,
    view: DatasetProfileView,
    spec: ModelSpec,
    reference: _Reference | None,
) -> tuple[list[tuple], list[tuple]]:
    """column_summaries and column_bins rows of one profile."""
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
        for b in column_bins(column, reference.edges[name]):
            bins.append((profile_id, reference.profile_id, *grain_values, name, described.role, described.type,
                         *(b[f] for f in _BIN_FIELDS)))  # fmt: skip
    return summaries, bins


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
    profiles: Sequence[tuple[_Grain, DatasetProfileView, int]],
    references: Mapping[str, _Reference],
) -> list[int]:
    """Insert profiles (grain, view, n_rows) and their summaries and bins; returns the profile ids."""
    ids = _new_ids(conn, len(profiles))
    rows, summaries, bins = [], [], []
    for profile_id, (grain, view, n_rows) in zip(ids, profiles, strict=True):
        rows.append((profile_id, *(getattr(grain, c) for c in _GRAIN_COLUMNS), n_rows, view.serialize()))
        reference = references.get(grain.model_version)
        s, b = _flatten(profile_id, grain, view, spec, reference)
        summaries += s
        bins += b
    _copy(conn, "profiles.whylogs_profiles", _PROFILE_COLUMNS, rows)
    _copy(conn, "profiles.column_summaries", _SUMMARY_COLUMNS, summaries)
    _copy(conn, "profiles.column_bins", _BIN_COLUMNS, bins)
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
) -> ReferenceProfile:
    """Profile a model version's training data (features; scores and predicted class when the frame
    has them, e.g. the model's predictions on its training set) and derive its bin edges.

    `frame`: a :func:`driftloop.sim.world.generate_predictions`-like frame or one using the profile's
    column names (see :func:`profiling_frame`); ``request_ts``, when present, gives the data's time range.
    """
    data = profiling_frame(frame, spec)
    data_start = data_end = None
    if "request_ts" in frame.columns and len(frame):
        stamps = pd.to_datetime(frame["request_ts"], utc=True)
        data_start, data_end = stamps.min().to_pydatetime(), stamps.max().to_pydatetime()
    view = profile_frame(data, spec, processes=processes, dataset_timestamp=data_start)
    return ReferenceProfile(
        model_name=spec.name,
        model_version=str(model_version),
        view=view,
        bin_edges=bin_edges(view, spec),
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
            "insert into profiles.reference_profiles (model_name, model_version, profile_id, bin_edges, n_rows, source) "
            "values (%s, %s, %s, %s::jsonb, %s, %s::jsonb)",
            (spec.name, reference.model_version, profile_id, orjson.dumps(reference.bin_edges).decode(),
             reference.n_rows, orjson.dumps(reference.source, default=str).decode()),
        )  # fmt: skip
        _copy(conn, "profiles.column_summaries", _SUMMARY_COLUMNS, summaries)
        _copy(conn, "profiles.column_bins", _BIN_COLUMNS, bins)
        rebinned = _rebin(conn, spec, reference.model_version, ref)
    log.info("%s: reference of version %s stored (profile %d, %d rows); %d window profiles re-binned",
             spec.name, reference.model_version, profile_id, reference.n_rows, rebinned)  # fmt: skip
    return profile_id


def _rebin(conn: psycopg.Connection, spec: ModelSpec, model_version: str, reference: _Reference) -> int:
    conn.execute(
        "delete from profiles.column_bins where model_name = %s and model_version = %s "
        "and window_size in ('hour', 'day')",
        (spec.name, model_version),
    )
    count = 0
    with conn.cursor(name="driftloop_rebin") as cursor:
        cursor.execute(
            f"select profile_id, {', '.join(_GRAIN_COLUMNS)}, profile from profiles.whylogs_profiles "
            "where model_name = %s and model_version = %s and window_size in ('hour', 'day') order by profile_id",
            (spec.name, model_version),
        )
        while batch := cursor.fetchmany(500):
            bins = []
            for profile_id, *grain_values, payload in batch:
                view = DatasetProfileView.deserialize(bytes(payload))
                _, b = _flatten(profile_id, _Grain(*grain_values), view, spec, reference)
                bins += b
            _copy(conn, "profiles.column_bins", _BIN_COLUMNS, bins)
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
    profiles: int = 0  # profile rows written (hourly + daily, all segments)
    rows: int = 0  # raw rows profiled
    unbinned_versions: list[str] = field(default_factory=list)  # model versions without a reference
    seconds: float = 0.0


def _floor(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((ts.astimezone(UTC) - epoch) // step) * step


def _ceil(ts: datetime, step: timedelta) -> datetime:
    floor = _floor(ts, step)
    return floor if floor == ts else floor + step


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got {value!r})")
    return value.astimezone(UTC)


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
    data: pd.DataFrame, spec: ModelSpec, columns: list[str], processes: int | None
) -> list[tuple[_Grain, DatasetProfileView, int]]:
    """Hourly profiles per hour x version x variant x segment, plus the '(all)' segment (a merge)."""
    out = []
    if data.empty:
        return out
    grouped = data.groupby(["hour", "model_version", "variant"], sort=True, observed=True)
    for (hour, version, variant), part in grouped:
        start = datetime.fromtimestamp(int(hour) * 3600, UTC)
        base = dict(model_name=spec.name, model_version=str(version), variant=str(variant), window_size="hour",
                    window_start=start, window_end=start + HOUR)  # fmt: skip
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


def _day_profiles(
    conn: psycopg.Connection,
    spec: ModelSpec,
    day: datetime,
    fresh: Sequence[tuple[_Grain, DatasetProfileView, int]] = (),
) -> list[tuple[_Grain, DatasetProfileView, int]]:
    """Daily profiles: the merge of the day's hourly profiles, per version x variant x segment.

    `fresh`: hourly profiles of the day just written in this transaction, merged from memory; the
    day's other hours are read back from profiles.whylogs_profiles (raw rows are not read again)."""
    parts: dict[tuple[str, str, str], list[tuple[datetime, int, DatasetProfileView | bytes]]] = defaultdict(
        list
    )
    for grain, view, n_rows in fresh:
        parts[(grain.model_version, grain.variant, grain.segment)].append((grain.window_start, n_rows, view))
    fresh_hours = sorted({grain.window_start for grain, _, _ in fresh})
    rows = conn.execute(
        "select model_version, variant, segment, window_start, n_rows, profile from profiles.whylogs_profiles "
        "where model_name = %s and window_size = 'hour' and window_start >= %s and window_start < %s "
        "and not window_start = any(%s)",
        (spec.name, day, day + DAY, fresh_hours),
    ).fetchall()
    for version, variant, segment, window_start, n_rows, payload in rows:
        parts[(version, variant, segment)].append((window_start, n_rows, bytes(payload)))
    out = []
    for (version, variant, segment), hours in sorted(parts.items()):
        hours.sort(key=lambda part: part[0])
        views = (
            p if isinstance(p, DatasetProfileView) else DatasetProfileView.deserialize(p) for _, _, p in hours
        )
        view = merge_views(views)
        view.set_dataset_timestamp(day)
        grain = _Grain(spec.name, version, variant, segment, "day", day, day + DAY)
        out.append((grain, view, sum(n for _, n, _ in hours)))
    return out


def profile_windows(
    url: str | None,
    spec: ModelSpec,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
    processes: int | None = None,
) -> ProfilingResult:
    """Profile the closed hourly windows in [start, end) and the closed days they belong to.

    An hour is profiled when it lies inside [start, end) and has ended by `now` (default: the
    clock). Raw rows are read one hour at a time (failed requests left out). Per UTC day, in one
    transaction: the day's hours that have raw rows are rewritten (one profile per hour x
    model_version x variant x segment, plus segment '(all)', the merge of the segments); hours
    without raw rows are left as they are (raw rows may have been dropped by retention: their
    profiles stay). Then every day whose last hour is profiled by this call gets its daily profiles
    rewritten as the merge of its stored hourly profiles. Every profile is flattened into
    column_summaries, and into column_bins when its model_version has a reference (see
    :func:`store_reference`). Writers of one model are serialized by an advisory lock.
    """
    started = time.perf_counter()
    start, end = _aware(start, "start"), _aware(end, "end")
    now = _aware(now or datetime.now(UTC), "now")
    first, last = _ceil(start, HOUR), _floor(min(end, now), HOUR)  # closed hours: [first, last)
    result = ProfilingResult(spec.name)
    if last <= first:
        return result
    columns = [c.name for c in profile_columns(spec)]
    url = warehouse.resolve_url(url)
    with warehouse.connect(url) as conn:
        references = _references(conn, spec.name)
    unbinned: set[str] = set()
    day = _floor(first, DAY)
    while day < last:
        hourly: list[tuple[_Grain, DatasetProfileView, int]] = []
        hour = max(day, first)
        with warehouse.connect(url) as conn:
            while hour < min(day + DAY, last):  # one hour of raw rows in memory at a time
                data = _read_raw(conn, spec, hour, hour + HOUR)
                hourly += _hour_profiles(data, spec, columns, processes)
                result.rows += len(data)
                hour += HOUR
        hours = sorted({grain.window_start for grain, _, _ in hourly})
        day_closed = day + DAY <= last
        with warehouse.connect(url) as conn, conn.transaction():
            lock_model(conn, "profiles", spec.name)
            if hours:
                conn.execute(
                    "delete from profiles.whylogs_profiles where model_name = %s and window_size = 'hour' "
                    "and window_start = any(%s)",
                    (spec.name, hours),
                )
                _write_profiles(conn, spec, hourly, references)
            if day_closed:
                daily = _day_profiles(conn, spec, day, hourly)
                if daily:
                    conn.execute(
                        "delete from profiles.whylogs_profiles where model_name = %s and window_size = 'day' "
                        "and window_start = %s",
                        (spec.name, day),
                    )
                    _write_profiles(conn, spec, daily, references)
                    result.days.append(day)
                    result.profiles += len(daily)
        unbinned |= {grain.model_version for grain, _, _ in hourly if grain.model_version not in references}
        result.hours += hours
        result.profiles += len(hourly)
        day += DAY
    result.unbinned_versions = sorted(unbinned)
    if unbinned:
        log.warning("%s: no reference profile for model_version %s: summaries written, bins not",
                    spec.name, ", ".join(result.unbinned_versions))  # fmt: skip
    result.seconds = time.perf_counter() - started
    log.info("%s: %d hourly and %d daily windows profiled (%d profiles, %d rows) in %.1fs", spec.name,
             len(result.hours), len(result.days), result.profiles, result.rows, result.seconds)  # fmt: skip
    return result
