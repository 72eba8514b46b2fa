"""Unit tests of the fast profiler and the binning (driftloop.monitor.profiling). No services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import whylogs
from whylogs.core.view import DatasetProfileView

from driftloop.core.spec import ModelSpec, get_spec
from driftloop.monitor import profiling
from driftloop.monitor.profiling import (
    OTHER,
    PREDICTION_CLASS,
    QUANTILES,
    SCORE_PREFIX,
    bin_edges,
    column_bins,
    column_summary,
    merge_views,
    profile_columns,
    profile_frame,
    profiling_frame,
)
from driftloop.sim.world import CovariateShift, Scenario, generate_predictions

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SPEC = get_spec("churn")
NUMERIC = [c.name for c in profile_columns(SPEC) if c.type == "numeric"]
CATEGORICAL = [c.name for c in profile_columns(SPEC) if c.type != "numeric"]


def churn_frame(n: int, seed: int, **scenario) -> pd.DataFrame:
    predictions = generate_predictions(SPEC, n, T0, T0 + timedelta(days=1), Scenario(seed=seed, **scenario))
    return profiling_frame(predictions, SPEC)


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    """The churn model's profiled columns (float with NaN, category, nullable boolean) plus columns of
    other kinds: Python strings with None, int64, and an object column mixing types."""
    frame = churn_frame(20_000, seed=1, missing_rate=0.1)
    rng = np.random.default_rng(0)
    notes = rng.choice(["alpha", "beta", "gamma", "delta"], len(frame)).astype(object)
    notes[rng.random(len(frame)) < 0.05] = None
    frame["note"] = notes
    frame["clicks"] = rng.poisson(3, len(frame))
    frame["mixed"] = np.array([1, "a", 2.5, None, True] * (len(frame) // 5), dtype=object)
    return frame


def rank_error(view: DatasetProfileView, column: str, pmf: bool = False) -> float:
    return view.get_column(column).get_metric("distribution").kll.value.normalized_rank_error(pmf)


def assert_quantiles_within_error(view: DatasetProfileView, column: str, values: np.ndarray) -> None:
    """Each quantile the sketch gives has a true rank within the sketch's rank error of the asked one."""
    data = np.sort(values[~np.isnan(values)])
    eps = rank_error(view, column)
    kll = view.get_column(column).get_metric("distribution").kll.value
    for q, value in zip(QUANTILES, kll.get_quantiles(list(QUANTILES)), strict=True):
        below = np.searchsorted(data, value, side="left") / len(data)
        at_or_below = np.searchsorted(data, value, side="right") / len(data)
        assert below - eps <= q <= at_or_below + eps, (column, q, value, below, at_or_below)


def as_floats(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=float, na_value=np.nan)


@pytest.mark.parametrize("processes", [1, 2])
def test_fast_profile_has_the_summaries_of_stock_whylogs(mixed, processes, monkeypatch):
    # GIVEN a mixed frame; with processes=2 the frame is cut into two chunks profiled by a forked process
    monkeypatch.setattr(profiling, "_PARALLEL_MIN_ROWS", 1_000)
    # WHEN it is profiled by driftloop and by plain whylogs
    fast = profile_frame(mixed, SPEC, processes=processes)
    stock = whylogs.log(mixed).view()
    # THEN every column has the same counts, nulls and types, the same frequent items, close means and
    # standard deviations, and quantiles and cardinalities within the sketches' errors
    assert sorted(fast.get_columns()) == sorted(stock.get_columns()) == sorted(mixed.columns)
    for name in mixed.columns:
        f, s = fast.get_column(name), stock.get_column(name)
        assert f.get_metric("counts").to_summary_dict() == s.get_metric("counts").to_summary_dict(), name
        assert f.get_metric("types").to_summary_dict() == s.get_metric("types").to_summary_dict(), name
        distinct = mixed[name].nunique(dropna=True)
        hll = f.get_metric("cardinality").hll.value
        assert hll.get_lower_bound(3) <= distinct <= hll.get_upper_bound(3), name
        if name == "mixed":  # mixed types: profiled by whylogs itself
            continue
        if f.get_metric("frequent_items") is not None:
            expected = {i.value: i.est for i in s.get_metric("frequent_items").strings}
            assert {i.value: i.est for i in f.get_metric("frequent_items").strings} == expected, name
        fd, sd = f.get_metric("distribution"), s.get_metric("distribution")
        if fd is None:  # string columns: whylogs' distribution of them is always empty, so it is left out
            assert sd.n == 0 and name in {*CATEGORICAL, "note"}
            continue
        assert fd.n == sd.n, name
        assert fd.avg == pytest.approx(sd.avg, rel=1e-9, abs=1e-12), name
        assert fd.stddev == pytest.approx(sd.stddev, rel=1e-9, abs=1e-12), name
        assert_quantiles_within_error(fast, name, as_floats(mixed[name]))
    # the trimmed metrics are the only ones missing
    trimmed = {(name, metric) for name in mixed.columns for metric in stock.get_column(name).get_metric_names()
               if fast.get_column(name).get_metric(metric) is None}  # fmt: skip
    assert {metric for _, metric in trimmed} <= {"ints", "distribution", "frequent_items"}
    assert ("clicks", "frequent_items") in trimmed and ("has_partner", "ints") in trimmed


def test_category_columns_with_nulls_are_profiled(mixed):
    # whylogs 1.6.4 raises on a category column holding nulls; the fast profiler counts them
    frame = pd.DataFrame({"plan": pd.Categorical(["basic", None, "premium", "basic", None])})
    view = profile_frame(frame)
    summary = column_summary(view.get_column("plan"))
    assert (summary["count"], summary["null_count"]) == (5, 2)
    assert {i["value"]: i["est"] for i in summary["frequent_items"]} == {"basic": 2, "premium": 1}


def test_fast_view_round_trips_and_merges(mixed):
    # GIVEN the frame profiled whole, and in two halves
    whole = profile_frame(mixed, SPEC, processes=1)
    half = len(mixed) // 2
    first, second = profile_frame(mixed.iloc[:half], SPEC), profile_frame(mixed.iloc[half:], SPEC)
    # WHEN the halves go through serialize / deserialize and are merged
    restored = [DatasetProfileView.deserialize(v.serialize()) for v in (first, second)]
    merged = merge_views(restored)
    # THEN a round trip changes nothing, and the merge is the whole frame's profile
    for name in mixed.columns:
        assert column_summary(restored[0].get_column(name)) == column_summary(first.get_column(name))
        m, w = column_summary(merged.get_column(name)), column_summary(whole.get_column(name))
        assert (
            (m["count"], m["null_count"])
            == (w["count"], w["null_count"])
            == (len(mixed), mixed[name].isna().sum())
        )
        if w["mean"] is not None and name != "mixed":
            assert m["mean"] == pytest.approx(w["mean"], rel=1e-9) and m["stddev"] == pytest.approx(
                w["stddev"], rel=1e-9
            )
            assert_quantiles_within_error(merged, name, as_floats(mixed[name]))
    # AND it merges with a stock whylogs view both ways
    stock = whylogs.log(mixed).view()
    for combined in (merged.merge(stock), stock.merge(merged)):
        assert all(
            combined.get_column(n).get_metric("counts").n.value == 2 * len(mixed) for n in mixed.columns
        )


def right_closed_histogram(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """numpy's histogram on the bins (-inf, e1], (e1, e2], ..., (ek, inf), as fractions.

    np.histogram's bins are closed on the left; on the negated values they are closed on the right."""
    values = values[~np.isnan(values)]
    outer = [values.min() - 1.0, *edges, values.max() + 1.0]
    counts, _ = np.histogram(-values, bins=-np.asarray(outer)[::-1])
    return counts[::-1] / len(values)


def test_bin_fractions_on_reference_edges_sum_to_one_and_match_numpy():
    # GIVEN a reference (the "training data") and a window sample of the same world
    reference = profile_frame(churn_frame(20_000, seed=1, missing_rate=0.1), SPEC)
    edges = bin_edges(reference, SPEC)
    window = churn_frame(5_000, seed=2, missing_rate=0.1)
    view = profile_frame(window, SPEC)
    # THEN numeric columns have up to 10 bins on the reference's deciles, categorical ones the reference's
    # categories plus __other__, and each column's fractions sum to 1 and equal numpy's on the same edges
    assert set(edges) == {c.name for c in profile_columns(SPEC)}
    for name in NUMERIC:
        interior = edges[name]["edges"]
        assert 1 <= len(interior) <= 9 and interior == sorted(set(interior)), name
        bins = column_bins(view.get_column(name), edges[name])
        fractions = np.array([b["fraction"] for b in bins])
        assert fractions.sum() == pytest.approx(1.0, abs=1e-9)
        assert [b["lower_edge"] for b in bins] == [-np.inf, *interior]
        assert [b["upper_edge"] for b in bins] == [*interior, np.inf]
        expected = right_closed_histogram(as_floats(window[name]), interior)
        tolerance = 2 * rank_error(view, name, pmf=True)
        assert np.abs(fractions - expected).max() <= tolerance, (name, fractions, expected)
        non_null = window[name].notna().sum()
        assert sum(b["count"] for b in bins) == pytest.approx(non_null)
    for name in CATEGORICAL:
        categories = edges[name]["categories"]
        bins = column_bins(view.get_column(name), edges[name])
        assert [b["category"] for b in bins] == [*categories, OTHER]
        observed = window[name].astype(object).dropna().astype(str).value_counts(normalize=True)
        expected = [observed.get(c, 0.0) for c in categories]
        assert [b["fraction"] for b in bins] == pytest.approx([*expected, 1.0 - sum(expected)], abs=1e-12)
    assert edges["has_partner"]["categories"] == ["True", "False"]
    assert set(edges["plan"]["categories"]) == set(SPEC.feature("plan").categories)


def test_top_categories_are_capped_and_the_rest_is_other():
    spec = ModelSpec.model_validate({
        "name": "many", "task": "binary_classification", "classes": ["a", "b"], "positive_class": "b",
        "features": [{"name": "city", "type": "categorical", "categories": [f"c{i:02d}" for i in range(30)]}],
    })  # fmt: skip
    weights = np.arange(30, 0, -1, dtype=float)
    rng = np.random.default_rng(3)
    cities = rng.choice([f"c{i:02d}" for i in range(30)], 30_000, p=weights / weights.sum())
    view = profile_frame(pd.DataFrame({"city": pd.Categorical(cities)}), spec)
    edges = bin_edges(view, spec)
    counts = pd.Series(cities).value_counts()
    top = sorted(counts.index, key=lambda c: (-counts[c], c))[:20]
    assert edges["city"]["categories"] == top  # the 20 most frequent, most frequent first
    bins = column_bins(view.get_column("city"), edges["city"])
    assert bins[-1]["category"] == OTHER
    assert bins[-1]["fraction"] == pytest.approx(1 - np.isin(cities, top).mean())


def psi(expected: list[float], actual: list[float]) -> float:
    e, a = np.clip(expected, 1e-6, None), np.clip(actual, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def test_a_shift_in_one_feature_moves_its_bins_and_no_other_features():
    # GIVEN a reference and two windows of the same traffic, one with monthly_charges shifted by 1.5 sd
    edges = bin_edges(profile_frame(churn_frame(20_000, seed=1), SPEC), SPEC)
    steady = profile_frame(churn_frame(5_000, seed=2), SPEC)
    shifted = profile_frame(
        churn_frame(5_000, seed=2, covariate_shift=[CovariateShift(T0, "monthly_charges", 1.5)]), SPEC
    )
    # THEN the shifted feature's bins move a lot (PSI > 0.25) and every other feature's stay put
    for feature in SPEC.features:
        before = [b["fraction"] for b in column_bins(steady.get_column(feature.name), edges[feature.name])]
        after = [b["fraction"] for b in column_bins(shifted.get_column(feature.name), edges[feature.name])]
        if feature.name == "monthly_charges":
            assert psi(before, after) > 0.25 and np.abs(np.subtract(before, after)).max() > 0.1
        else:
            tolerance = (
                2 * rank_error(steady, feature.name, pmf=True) if feature.type.value == "numeric" else 1e-12
            )
            assert np.abs(np.subtract(before, after)).max() <= tolerance, feature.name


def test_profile_columns_name_scores_and_predicted_class():
    binary = [c.name for c in profile_columns(SPEC)]
    assert binary[-2:] == [SCORE_PREFIX + "churn", PREDICTION_CLASS]
    multiclass = ModelSpec.model_validate({
        "name": "intent", "task": "multiclass_classification", "classes": ["browse", "buy", "leave"],
        "features": [{"name": "visits", "type": "numeric"}],
    })  # fmt: skip
    columns = profile_columns(multiclass)
    assert [(c.name, c.role, c.type) for c in columns] == [
        ("visits", "feature", "numeric"),
        ("prediction.score.browse", "score", "numeric"),
        ("prediction.score.buy", "score", "numeric"),
        ("prediction.score.leave", "score", "numeric"),
        ("prediction.class", "prediction", "categorical"),
    ]
    frame = profiling_frame(generate_predictions(multiclass, 50, T0, T0 + timedelta(hours=1)), multiclass)
    assert list(frame.columns) == [c.name for c in columns]
    assert str(frame[PREDICTION_CLASS].dtype) == "category" and frame["visits"].dtype == np.float64
