"""Profiling throughput: driftloop's fast profiler vs plain whylogs on the same frame, in one run.

    .venv/bin/python benchmarks/profiling.py [--rows 1000000] [--processes N] [--strings category|object]
    .venv/bin/python benchmarks/profiling.py --windows 300 --rows 50000   # daily windows stored vs in memory

Builds N simulated predictions of a 20-feature binary model (13 numeric features, 5 categorical,
2 boolean; optional features with nulls) and profiles the frame the profiling DAG profiles (20
features, the positive-class score, the predicted class: 22 columns) twice: with
`driftloop.monitor.profiling.profile_frame` and with plain `whylogs.log(df).view()`. Prints rows/s for
both and the ratio (goal: >= 3), then checks that the two views agree (counts, nulls, types and
frequent items exact; both HLL estimates within 3 standard errors of the exact distinct count;
mean and stddev within 1e-6 relative; every quantile of both views within the KLL rank error of
the exact quantile of the data) and that the
fast view survives serialize / deserialize and merges with the stock view. Exits non-zero when a
check fails.

`--strings category` (default) gives both profilers string columns as pandas `category`, which is
what the warehouse reader produces; `--strings object` gives them Python strings (slower for
whylogs). Categorical features are required here: whylogs 1.6.4 cannot profile a `category`
column that holds nulls (it raises), which driftloop's profiler handles.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import whylogs  # noqa: E402
from whylogs.core.view import DatasetProfileView  # noqa: E402

from driftloop.core.spec import ModelSpec  # noqa: E402
from driftloop.monitor.profiling import QUANTILES, profile_frame, profiling_frame  # noqa: E402
from driftloop.sim.world import Scenario, generate_predictions  # noqa: E402


def benchmark_spec() -> ModelSpec:
    """20 features: numeric of several shapes (bounded / skewed / unbounded), categorical, boolean."""
    numeric = []
    for i in range(13):
        bounds = [{"min": 0, "max": 100}, {"min": 0, "max": 100_000}, {"min": -1e6, "max": 1e6}, {}][i % 4]
        numeric.append({"name": f"num_{i:02d}", "type": "numeric", "required": i % 3 != 0, **bounds})
    categorical = [
        {"name": f"cat_{i}", "type": "categorical", "required": True,
         "categories": [f"c{j}" for j in range((4, 8, 12, 25, 40)[i])]}
        for i in range(5)
    ]  # fmt: skip
    booleans = [{"name": "flag_a", "type": "boolean", "required": True},
                {"name": "flag_b", "type": "boolean", "required": False}]  # fmt: skip
    return ModelSpec.model_validate(
        {
            "name": "bench",
            "task": "binary_classification",
            "classes": ["no", "yes"],
            "positive_class": "yes",
            "features": [*numeric, *categorical, *booleans],
            "segment": {"name": "region", "values": ["na", "eu", "apac"]},
        }
    )


def _timed(label: str, rows: int, run):
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    print(f"{label:<24}: {seconds:7.2f} s  {rows / seconds:>12,.0f} rows/s")
    return result, seconds


def _rank_error(view: DatasetProfileView, column: str) -> float:
    return view.get_column(column).get_metric("distribution").kll.value.normalized_rank_error(False)


def _check(frame: pd.DataFrame, fast: DatasetProfileView, stock: DatasetProfileView) -> list[str]:
    """Differences between the two views beyond the sketches' error (an empty list: they agree)."""
    problems = []
    for name in frame.columns:
        f, s = fast.get_column(name), stock.get_column(name)
        if f is None or s is None:
            problems.append(f"{name}: missing from a view")
            continue
        fc, sc = f.get_metric("counts").to_summary_dict(), s.get_metric("counts").to_summary_dict()
        if fc != sc:
            problems.append(f"{name}: counts {fc} != {sc}")
        ft, st = f.get_metric("types").to_summary_dict(), s.get_metric("types").to_summary_dict()
        if ft != st:
            problems.append(f"{name}: types {ft} != {st}")
        distinct = frame[name].nunique(dropna=True)
        for view_name, view in (("fast", f), ("whylogs", s)):
            hll = view.get_metric("cardinality").hll.value
            if not hll.get_lower_bound(3) <= distinct <= hll.get_upper_bound(3):
                problems.append(
                    f"{name}: {view_name} cardinality {hll.get_estimate():.0f}, {distinct} distinct"
                )
        if f.get_metric("frequent_items") is not None:
            fi = {i.value: i.est for i in f.get_metric("frequent_items").strings}
            si = {i.value: i.est for i in s.get_metric("frequent_items").strings}
            if fi != si:
                problems.append(f"{name}: frequent items differ")
        fd, sd = f.get_metric("distribution"), s.get_metric("distribution")
        if fd is None or fd.n == 0:
            continue
        if (
            fd.n != sd.n
            or not np.isclose(fd.avg, sd.avg, rtol=1e-6)
            or not np.isclose(fd.stddev, sd.stddev, rtol=1e-6)
        ):
            problems.append(f"{name}: n/mean/stddev {fd.n, fd.avg, fd.stddev} vs {sd.n, sd.avg, sd.stddev}")
        data = np.sort(frame[name].to_numpy(dtype=float, na_value=np.nan))
        data = data[~np.isnan(data)]
        for view_name, view in (("fast", fast), ("whylogs", stock)):
            eps = _rank_error(view, name)
            kll = view.get_column(name).get_metric("distribution").kll.value
            for q, value in zip(QUANTILES, kll.get_quantiles(list(QUANTILES)), strict=True):
                below = np.searchsorted(data, value, side="left") / len(data)
                at_or_below = np.searchsorted(data, value, side="right") / len(data)
                if not below - eps <= q <= at_or_below + eps:
                    problems.append(
                        f"{name}: {view_name} q{q} = {value} has rank [{below:.4f}, {at_or_below:.4f}]"
                    )
    return problems


def _summaries(view: DatasetProfileView) -> pd.DataFrame:
    """The view's summaries, frequent items as a set: items of equal counts come back in either order
    from a serialize / deserialize round trip (stock whylogs views too), which is not a change."""
    frame = view.to_pandas().sort_index()
    if "frequent_items/frequent_strings" in frame:
        frame["frequent_items/frequent_strings"] = [
            items if not isinstance(items, list) else sorted((i.value, i.est, i.upper, i.lower) for i in items)
            for items in frame["frequent_items/frequent_strings"]
        ]
    return frame


def measure_1m(rows: int = 1_000_000, processes: int | None = None, strings: str = "category",
               verbose: bool = True) -> dict:
    """profile_frame vs whylogs.log on `rows` rows x 22 columns; `problems`: where the two views disagree."""
    spec = benchmark_spec()
    t0 = time.perf_counter()
    predictions = generate_predictions(
        spec, rows, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC), Scenario(seed=1)
    )
    frame = profiling_frame(predictions, spec)
    del predictions
    if strings == "object":
        for name in frame.columns:
            if isinstance(frame[name].dtype, pd.CategoricalDtype):
                frame[name] = frame[name].astype(object)
    kinds = frame.dtypes.astype(str).value_counts().to_dict()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if verbose:
        print(f"data: {len(frame):,} rows x {frame.shape[1]} columns {kinds}, {cpus} CPUs "
              f"(prepared in {time.perf_counter() - t0:.1f}s)")  # fmt: skip
    fast, fast_seconds = _timed("driftloop profile_frame", len(frame), lambda: profile_frame(frame, spec, processes=processes))
    stock, stock_seconds = _timed("plain whylogs.log", len(frame), lambda: whylogs.log(frame).view())
    problems = _check(frame, fast, stock)
    restored = DatasetProfileView.deserialize(fast.serialize())
    if not _summaries(restored).equals(_summaries(fast)):
        problems.append("serialize / deserialize changed the fast view's summaries")
    for label, merged in (("fast + whylogs", restored.merge(stock)), ("whylogs + fast", stock.merge(restored))):
        for name in frame.columns:
            n = merged.get_column(name).get_metric("counts").n.value
            if n != 2 * len(frame):
                problems.append(f"merge {label}: {name} has n = {n}, expected {2 * len(frame)}")
    if verbose:
        print(f"fast view: {len(fast.serialize()):,} bytes serialized; whylogs view: {len(stock.serialize()):,} bytes")
    return {"rows": len(frame), "driftloop_s": fast_seconds, "baseline_s": stock_seconds, "problems": problems}


def measure_windows(rows: int = 50_000, days: int = 300, verbose: bool = True) -> dict:
    """The profiling task's path (read, profile, flatten, bins and statistics against a reference, store)
    on `rows` churn predictions over `days` daily windows, vs the profiler alone on the same rows in
    memory (the same groups: day x version x variant x segment, plus the segments' merge)."""
    import uuid

    from driftloop.core import warehouse
    from driftloop.core.settings import specs_dir
    from driftloop.core.spec import load_spec
    from driftloop.monitor import profiling
    from driftloop.sim.bulk import HistoryPlan, load_history

    churn = load_spec(specs_dir() / "churn.yaml")
    spec = churn.model_copy(update={"windows": churn.windows.model_copy(update={"sizes": ["day"]})})
    admin = warehouse.resolve_url()
    url = warehouse.create_database(admin, f"bench_{uuid.uuid4().hex[:8]}")
    try:
        warehouse.migrate(url)
        warehouse.sync_specs(url, {spec.name: spec})
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=days)
        load_history(url, spec, HistoryPlan(rows=rows, days=days, seed=3), end, f"bench-{uuid.uuid4().hex[:6]}")
        with warehouse.connect(url) as conn:
            versions = [r[0] for r in conn.execute("select distinct model_version from raw.predictions").fetchall()]
            data = profiling._read_raw(conn, spec, start, end)
        for version in versions:  # a reference per version: bins and statistics are written as in production
            training = generate_predictions(spec, 20_000, start - timedelta(days=30), start, Scenario(seed=5))
            profiling.store_reference(url, spec, profiling.reference_profile(spec, version, training))
        columns = [c.name for c in profiling.profile_columns(spec)]

        def in_memory() -> int:
            data["day"] = data["hour"] // 24
            count = 0
            for _, part in data.groupby(["day", "model_version", "variant"], sort=True, observed=True):
                views = [profile_frame(rows_[columns], spec) for _, rows_ in
                         part.groupby(part["segment"].astype(object).fillna("(null)"), sort=True)]
                profiling.merge_views(views)
                count += len(views) + 1
            return count

        t0 = time.perf_counter()
        profiles_in_memory = in_memory()
        baseline = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = profiling.profile_windows(url, spec, start, end, now=end + timedelta(hours=1))
        stored = time.perf_counter() - t0
        if verbose:
            print(f"{len(data):,} rows over {days} days: profile_windows {stored:.2f} s ({result.profiles} profiles "
                  f"stored); the profiler in memory {baseline:.2f} s ({profiles_in_memory} profiles)")  # fmt: skip
    finally:
        warehouse.drop_database(admin, url)
    return {"rows": len(data), "days": days, "driftloop_s": stored, "baseline_s": baseline, "profiles": result.profiles}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=None, help="default: the usable CPUs")
    parser.add_argument("--strings", choices=["category", "object"], default="category")
    parser.add_argument("--windows", type=int, default=0,
                        help="instead: profile_windows over this many daily windows (stored) vs in memory")
    args = parser.parse_args()
    if args.windows:
        measure_windows(args.rows, args.windows)
        return 0
    numbers = measure_1m(args.rows, args.processes, args.strings)
    ratio = numbers["baseline_s"] / numbers["driftloop_s"]
    print(f"ratio profile_frame / whylogs.log: {ratio:.1f}x  (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    if numbers["problems"]:
        print("DISAGREEMENT:\n  " + "\n  ".join(numbers["problems"]))
        return 1
    print("agreement: counts, nulls, types and frequent items exact; cardinality within HLL error; mean, stddev close; "
          "quantiles within the KLL rank error; round trip and merges OK")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
