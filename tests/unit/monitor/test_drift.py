"""Drift statistics (driftloop.monitor.drift) against scipy, and the learned thresholds in simulation.

The simulation runs the production path of a window's verdict: a reference profiled by
``reference_profile`` (its bins and its null model), each window profiled by ``profile_frame``,
binned on the reference's edges (``column_bins``), its statistics and learned threshold from
``column_statistics`` (what profiling writes to profiles.column_statistics), and the verdict the
drift marts take: the statistic >= the reference's null mean + k sd at the window's n.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from driftloop.core.spec import ModelSpec
from driftloop.monitor import drift
from driftloop.monitor.profiling import column_bins, column_statistics, profile_frame, reference_profile

SPEC = ModelSpec.model_validate({
    "name": "external",
    "task": "binary_classification",
    "classes": ["no", "yes"],
    "positive_class": "yes",
    "features": [
        {"name": "income", "type": "numeric"},
        {"name": "age", "type": "numeric"},
        {"name": "balance", "type": "numeric"},
        {"name": "tenure", "type": "numeric"},
        {"name": "spend", "type": "numeric"},  # skewed (lognormal)
        {"name": "channel", "type": "categorical", "categories": ["web", "app", "store", "phone"]},
        {"name": "is_member", "type": "boolean"},
    ],
})  # fmt: skip
K = 3.0
MIN_SAMPLES = 100
REFERENCE_ROWS = 50_000  # NannyML's synthetic sets have 50,000 reference rows
WINDOWS = 400


def world(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """n rows of the model's inputs; `shift`: income's mean moves by that many standard deviations."""
    return pd.DataFrame({
        "income": rng.normal(50_000 + shift * 12_000, 12_000, n),
        "age": rng.normal(41, 11, n).round(),
        "balance": rng.normal(0, 1, n),
        "tenure": rng.integers(0, 120, n).astype(float),
        "spend": rng.lognormal(3, 1, n),
        "channel": pd.Categorical(rng.choice(["web", "app", "store", "phone"], n, p=[0.5, 0.3, 0.15, 0.05])),
        "is_member": pd.array(rng.random(n) < 0.35, dtype="boolean"),
    })  # fmt: skip


@pytest.fixture(scope="module")
def reference():
    return reference_profile(SPEC, "1", world(np.random.default_rng(1), REFERENCE_ROWS))


def verdicts(reference, window: pd.DataFrame) -> dict[str, dict[str, bool]]:
    """{feature: {statistic: drifted}} for one window, as the marts judge it (learned thresholds)."""
    view = profile_frame(window, SPEC, dataset_timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    out = {}
    for feature in SPEC.features:
        edges = reference.bin_edges[feature.name]
        column = view.get_column(feature.name)
        bins = column_bins(column, edges)
        stats = column_statistics(column, edges, bins)
        actual = [b["fraction"] for b in bins]
        values = {"js": drift.js_distance(edges["fractions"], actual), "psi": drift.psi(edges["fractions"], actual)}
        if feature.type == "numeric":
            values["ks"] = stats["ks_statistic"]
        else:
            values["chi2"] = stats["chi2_statistic"]
        assert stats["n_values"] >= MIN_SAMPLES
        out[feature.name] = {
            name: value >= stats[f"{name}_null_mean"] + K * stats[f"{name}_null_sd"] for name, value in values.items()
        }
    return out


def flag_rates(reference, rows: int, shift: float, seed: int) -> dict[tuple[str, str], float]:
    rng = np.random.default_rng(seed)
    counts: dict[tuple[str, str], int] = {}
    for _ in range(WINDOWS):
        for feature, by_statistic in verdicts(reference, world(rng, rows, shift)).items():
            for statistic, drifted in by_statistic.items():
                counts[(feature, statistic)] = counts.get((feature, statistic), 0) + drifted
    return {key: count / WINDOWS for key, count in counts.items()}


def wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def report(title: str, rates: dict[tuple[str, str], float]) -> None:
    print(f"\n{title} ({WINDOWS} windows; 95 % Wilson CI)")
    for (feature, statistic), rate in sorted(rates.items()):
        low, high = wilson(rate, WINDOWS)
        print(f"  {feature:10s} {statistic:5s} {rate:6.1%}  ({low:.1%}-{high:.1%})")


# ------------------------------------------------------------------------------------------------
# Against scipy


def test_psi_and_js_distance_equal_scipy_and_the_marts_formula():
    expected = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    actual = np.array([0.25, 0.25, 0.25, 0.2, 0.05])
    assert drift.js_distance(expected, actual) == pytest.approx(jensenshannon(actual, expected, base=2), abs=1e-12)
    e, a = np.maximum(expected, 1e-4), np.maximum(actual, 1e-4)
    assert drift.psi(expected, actual) == pytest.approx(float(np.sum((a - e) * np.log(a / e))), abs=1e-12)
    assert drift.js_distance(expected, expected) == 0.0


@pytest.mark.parametrize(("n_window", "shift"), [(150, 0.0), (300, 0.2), (1_000, 0.1), (5_000, 0.05)])
def test_ks_from_the_sketches_equals_scipy_on_the_same_samples(n_window, shift):
    rng = np.random.default_rng(n_window)
    reference_frame = pd.DataFrame({"income": rng.normal(0, 1, 20_000)})
    window = pd.DataFrame({"income": rng.normal(shift, 1, n_window)})
    spec = SPEC.model_copy(update={"features": [SPEC.features[0]]})
    ref = reference_profile(spec, "1", reference_frame)
    edges = ref.bin_edges["income"]
    column = profile_frame(window, spec).get_column("income")
    stats = column_statistics(column, edges, column_bins(column, edges))
    expected = ks_2samp(window["income"], reference_frame["income"], method="asymp")
    # the reference's CDF comes from its KLL sketch (rank error ~0.3 % at k=1024), the window's too above 1,000 rows
    assert stats["ks_statistic"] == pytest.approx(expected.statistic, abs=0.006)
    assert stats["ks_p_value"] == pytest.approx(
        ks_2samp(window["income"], reference_frame["income"], method="asymp").pvalue, abs=0.05, rel=0.5
    )
    # the p-value is scipy's for the statistic at the two sample sizes
    from scipy.stats import kstwo

    assert drift.ks_p_value(expected.statistic, n_window, 20_000) == pytest.approx(expected.pvalue, rel=1e-9)
    assert drift.ks_p_value(0.1, 100, 1_000_000) == pytest.approx(kstwo.sf(0.1, 100), rel=1e-12)


def test_chi2_equals_scipy_contingency_on_the_same_counts():
    reference_counts = [500, 300, 150, 50, 0]
    window_counts = [60, 50, 20, 15, 5]
    statistic, dof, p_value = drift.chi2_test(reference_counts, window_counts)
    expected = chi2_contingency(np.array([reference_counts, window_counts]), correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert dof == expected.dof and p_value == pytest.approx(expected.pvalue, rel=1e-9)
    # a category empty on both sides is left out (scipy refuses zero expected counts)
    statistic, dof, _ = drift.chi2_test([500, 300, 0], [60, 50, 0])
    assert dof == 1 and statistic == pytest.approx(
        chi2_contingency(np.array([[500, 300], [60, 50]]), correction=False).statistic
    )


def test_chi2_p_values_of_many_tables_at_once_equal_scipy_table_by_table():
    rng = np.random.default_rng(3)
    tables = [(rng.integers(0, 400, k), rng.integers(0, 60, k)) for k in (2, 3, 5, 8, 21) for _ in range(4)]
    tables += [([500, 0], [60, 0]), ([0, 0, 10], [0, 0, 3])]  # one category left: dof 0, p-value 1
    statistics = [drift.chi2_statistic(r, w) for r, w in tables]
    p_values = drift.chi2_p_values([s for s, _ in statistics], [d for _, d in statistics])
    for (r, w), (statistic, dof), p_value in zip(tables, statistics, p_values, strict=True):
        keep = (np.asarray(r) + np.asarray(w)) > 0
        if dof == 0:
            assert keep.sum() < 2 and p_value == 1.0
            continue
        expected = chi2_contingency(np.array([np.asarray(r)[keep], np.asarray(w)[keep]]), correction=False)
        assert dof == expected.dof and statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        assert (statistic, dof, p_value) == drift.chi2_test(r, w)


def test_a_window_chi2_from_its_bins_equals_scipy_on_its_categories(reference):
    rng = np.random.default_rng(7)
    window = world(rng, 400)
    column = profile_frame(window, SPEC).get_column("channel")
    edges = reference.bin_edges["channel"]
    stats = column_statistics(column, edges, column_bins(column, edges))
    reference_counts = np.array(edges["fractions"]) * edges["n"]
    window_counts = window["channel"].value_counts().reindex([*edges["categories"], "__other__"], fill_value=0)
    keep = (reference_counts + window_counts.to_numpy()) > 0
    expected = chi2_contingency(np.array([reference_counts[keep], window_counts.to_numpy()[keep]]), correction=False)
    assert stats["chi2_statistic"] == pytest.approx(expected.statistic, rel=1e-9)
    assert stats["chi2_p_value"] == pytest.approx(expected.pvalue, rel=1e-6)


def test_the_null_model_is_learned_per_feature_and_window_size(reference):
    null = reference.bin_edges["income"]["null"]["js"]
    sizes = [point[0] for point in null]
    assert sizes == [s for s in drift.NULL_SIZES if s <= REFERENCE_ROWS // 2]
    means = [point[1] for point in null]
    assert means == sorted(means, reverse=True)  # sampling noise shrinks as windows grow
    # about sqrt(9 / (8 n ln 2)) for 10 bins, the chi-square approximation of the JS distance
    at_150 = drift.null_at(reference.bin_edges["income"]["null"], "js", 150)
    assert at_150[0] == pytest.approx(math.sqrt(9 / (8 * 150 * math.log(2))), rel=0.15)
    assert drift.null_at({}, "js", 150) is None


# ------------------------------------------------------------------------------------------------
# Simulation: false alarms and power of the learned thresholds


def test_no_drift_at_150_rows_a_window_flags_at_most_5_percent_per_feature(reference):
    rates = flag_rates(reference, rows=150, shift=0.0, seed=11)
    report("no drift, 150 rows a window", rates)
    assert all(rate <= 0.05 for rate in rates.values()), rates


def test_a_0_3_sd_mean_shift_at_1000_rows_flags_that_feature_and_no_other(reference):
    rates = flag_rates(reference, rows=1_000, shift=0.3, seed=12)
    report("income's mean + 0.3 sd, 1,000 rows a window", rates)
    for (feature, statistic), rate in rates.items():
        if feature == "income":
            assert rate >= 0.90, (feature, statistic, rate)
        elif feature != "income":
            assert rate <= 0.05, (feature, statistic, rate)


def test_a_window_a_fifth_of_the_reference_is_judged_as_an_independent_sample():
    """A live window and the reference are independent samples: with windows of 1,000 rows on a
    5,000-row reference, thresholds learned from windows cut out of the reference itself (too little
    variance) flag far more than k = 3 allows; the two-sample null keeps every feature at <= 5 %."""
    small = reference_profile(SPEC, "1", world(np.random.default_rng(2), 5_000))
    rates = flag_rates(small, rows=1_000, shift=0.0, seed=13)
    report("no drift, 1,000-row windows on a 5,000-row reference", rates)
    assert all(rate <= 0.05 for rate in rates.values()), rates
