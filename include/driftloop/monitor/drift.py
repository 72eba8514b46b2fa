"""Drift statistics on a reference's bins, and the null model that makes their thresholds.

The drift marts (dbt) compute PSI and the Jensen-Shannon distance from ``profiles.column_bins``;
this module has the same two formulas in numpy (the simulation tests and the null model use them),
and what SQL cannot do from bins:

* **Kolmogorov-Smirnov** for numeric columns, from the sketches: the window's KLL CDF against the
  reference's CDF (1,001 quantiles stored with the reference, interpolated), taken at the window's
  sample points and the reference's quantiles; with its two-sided asymptotic p-value at the window's
  n and the reference's (``scipy.stats.kstwo`` at ``n m / (n + m)``, what ``ks_2samp(method="asymp")``
  uses).
* **Chi-square** for categorical and boolean columns: the 2 x k contingency table of the reference's
  and the window's counts on the reference's categories (``__other__`` included), no continuity
  correction (``scipy.stats.chi2_contingency(..., correction=False)``).
* **The null model** (:func:`null_model`): for each statistic and each window size on a grid of row
  counts, the mean and standard deviation of the statistic over windows of that many rows drawn from
  the reference itself (NannyML's way of learning thresholds from the reference's own
  chunk-to-chunk variability). A window of n rows is then judged against ``mean + k * sd`` at n
  (interpolated on the grid in log n): the threshold follows the sampling noise of the window's size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "NULL_SIZES",
    "ReferenceCDF",
    "QUANTILE_POINTS",
    "STATISTICS",
    "chi2_p_values",
    "chi2_statistic",
    "chi2_test",
    "js_distance",
    "ks_p_value",
    "ks_p_values",
    "ks_statistic",
    "NullTable",
    "null_at",
    "null_model",
    "psi",
    "reference_cdf",
]

STATISTICS = ("psi", "js", "ks", "chi2")
PSI_EPSILON = 1e-4  # dbt_project/macros/drift.sql: psi_epsilon()
QUANTILE_POINTS = 1001  # reference quantiles kept for the KS statistic (ranks 0, 0.001, ..., 1)
# window sizes (rows) the null model is learned at; a window between two is interpolated in log n
NULL_SIZES = (25, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
_NULL_VALUES_PER_SIZE = 1_000_000  # rows drawn per window size and column (bounds the time)
# values of a column the null model draws its windows from: a larger reference is subsampled (seeded,
# uniform) to this many, so the cost stops growing with the reference. Windows of at most 100,000 rows
# drawn from a million values vary as they would from all of them (and are still compared with the
# whole reference's bins and quantiles)
NULL_MAX_VALUES = 1_000_000
# windows per size: enough for a stable sd of a skewed statistic (chi-square with 1 dof) where they are
# cheap; KS (a sort per window) on the first _MAX_KS_WINDOWS of them
_MIN_NULL_WINDOWS, _MAX_NULL_WINDOWS, _MAX_KS_WINDOWS = 40, 500, 150
KS_GRID_STEP = 5  # KS is also taken at every 5th reference quantile (201 points) besides the window's values


# --------------------------------------------------------------------------------------------------
# The statistics


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """PSI on the same bins (last axis), each fraction floored at 1e-4, like the marts' macro."""
    e = np.maximum(np.asarray(expected, dtype=float), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, dtype=float), PSI_EPSILON)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def js_distance(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """Jensen-Shannon distance, base 2, on the same bins (last axis): scipy's ``jensenshannon(p, q, base=2)``."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    m = (e + a) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * np.log(a / m), 0.0) + np.where(e > 0, e * np.log(e / m), 0.0)
    divergence = np.clip(np.sum(terms, axis=-1) / (2 * math.log(2)), 0.0, 1.0)
    return np.sqrt(divergence)


def reference_cdf(quantiles: Sequence[float], points: np.ndarray) -> np.ndarray:
    """The reference's CDF P(X <= x) at `points`, from its quantiles at evenly spaced ranks 0..1,
    linear between quantiles (a run of equal quantiles, i.e. a repeated value, jumps at that value)."""
    return ReferenceCDF(quantiles)(points)


class ReferenceCDF:
    """:func:`reference_cdf` of one reference column, prepared once for the KS statistic of many windows."""

    def __init__(self, quantiles: Sequence[float]):
        self.quantiles = np.asarray(quantiles, dtype=float)
        self.ranks = np.linspace(0.0, 1.0, len(self.quantiles))
        self._at_grid: np.ndarray | None = None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        q, ranks = self.quantiles, self.ranks
        points = np.asarray(points, dtype=float)
        right = np.searchsorted(q, points, side="right")  # quantiles <= x
        out = np.empty(len(points))
        below, above = right == 0, right >= len(q)
        out[below], out[above] = 0.0, 1.0
        inside = ~(below | above)
        idx = right[inside]
        lower, upper = q[idx - 1], q[idx]
        width = upper - lower
        share = np.where(width > 0, (points[inside] - lower) / np.where(width > 0, width, 1.0), 0.0)
        out[inside] = ranks[idx - 1] + share * (ranks[idx] - ranks[idx - 1])
        return out

    @property
    def at_grid(self) -> np.ndarray:
        """The CDF at every KS_GRID_STEP-th quantile (where ks_statistic also compares the two)."""
        if self._at_grid is None:
            self._at_grid = self(self.quantiles[::KS_GRID_STEP])
        return self._at_grid


def ks_statistic(quantiles: Sequence[float] | ReferenceCDF, sample_points: np.ndarray, sample_cdf: np.ndarray,
                 grid_cdf: np.ndarray) -> float:
    """sup |F_reference - F_window| over the window's points and the reference's quantiles.

    `sample_points`: the window's distinct values (or its sketch's quantiles), ascending, with
    `sample_cdf` the window's P(X <= x) there; `grid_cdf`: the window's P(X <= q) at every 5th of the
    reference's quantiles `quantiles` (or their prepared :class:`ReferenceCDF`). Just below a window
    point the window's CDF is the previous point's."""
    cdf = quantiles if isinstance(quantiles, ReferenceCDF) else ReferenceCDF(quantiles)
    at_points = cdf(sample_points)
    before = np.concatenate([[0.0], sample_cdf[:-1]])
    # the reference just below each window point (the window's CDF jumps there): the same value,
    # less the reference's own jump at it, which reference_cdf puts after the point
    d_points = np.max(np.abs(at_points - sample_cdf), initial=0.0)
    d_before = np.max(np.abs(cdf(np.nextafter(sample_points, -np.inf)) - before), initial=0.0)
    d_grid = np.max(np.abs(cdf.at_grid - grid_cdf), initial=0.0)
    return float(max(d_points, d_before, d_grid))


def ks_p_value(statistic: float, n: float, m: float) -> float:
    """Two-sided asymptotic p-value of a two-sample KS statistic (scipy's ks_2samp, method="asymp")."""
    return float(ks_p_values([statistic], [n], [m])[0])


def ks_p_values(statistics: Sequence[float], n: Sequence[float], m: Sequence[float]) -> np.ndarray:
    """:func:`ks_p_value` of many (statistic, n, m) at once: one call into scipy (its per-call overhead,
    ~0.4 ms, is most of the cost for small windows), the same numbers element by element."""
    from scipy.stats import kstwo

    d = np.asarray(statistics, dtype=float)
    n_, m_ = np.asarray(n, dtype=float), np.asarray(m, dtype=float)
    out = np.full(d.shape, np.nan)
    valid = (n_ > 0) & (m_ > 0)
    if valid.any():
        effective = np.maximum(np.round(n_[valid] * m_[valid] / (n_[valid] + m_[valid])), 1)
        out[valid] = np.clip(kstwo.sf(d[valid], effective), 0.0, 1.0)
    return out


def chi2_test(reference_counts: Sequence[float], window_counts: Sequence[float]) -> tuple[float, int, float]:
    """Chi-square test of homogeneity of the 2 x k table (reference, window) on the same categories:
    (statistic, degrees of freedom, p-value); categories empty on both sides are left out."""
    from scipy.stats import chi2

    statistic, dof = chi2_statistic(reference_counts, window_counts)
    return statistic, dof, float(chi2.sf(statistic, dof)) if dof else 1.0


def chi2_statistic(reference_counts: Sequence[float], window_counts: Sequence[float]) -> tuple[float, int]:
    """:func:`chi2_test` without its p-value: (statistic, degrees of freedom); (0.0, 0) when the table
    has fewer than two categories or an empty side (p-value 1)."""
    ref = np.asarray(reference_counts, dtype=float)
    win = np.asarray(window_counts, dtype=float)
    keep = (ref + win) > 0
    ref, win = ref[keep], win[keep]
    if len(ref) < 2 or ref.sum() <= 0 or win.sum() <= 0:
        return 0.0, 0
    return float(_chi2_statistics(ref, win[None, :])[0]), len(ref) - 1


def chi2_p_values(statistics: Sequence[float], dofs: Sequence[int]) -> np.ndarray:
    """:func:`chi2_test`'s p-values of many (statistic, dof) at once (one scipy call: ~0.2 ms each
    otherwise), the same numbers element by element; 1 where dof is 0."""
    from scipy.stats import chi2

    x, k = np.asarray(statistics, dtype=float), np.asarray(dofs, dtype=float)
    out = np.ones(x.shape)
    valid = k > 0
    if valid.any():
        out[valid] = chi2.sf(x[valid], k[valid])
    return out


def _chi2_statistics(reference_counts: np.ndarray, window_counts: np.ndarray) -> np.ndarray:
    """Chi-square statistic of (reference, window_i) for each row of window_counts."""
    ref = reference_counts[None, :]
    totals = ref.sum() + window_counts.sum(axis=1, keepdims=True)
    column = ref + window_counts
    expected_ref = column * ref.sum() / totals
    expected_win = column * window_counts.sum(axis=1, keepdims=True) / totals
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected_ref > 0, (ref - expected_ref) ** 2 / expected_ref, 0.0) + np.where(
            expected_win > 0, (window_counts - expected_win) ** 2 / expected_win, 0.0
        )
    return terms.sum(axis=1)


# --------------------------------------------------------------------------------------------------
# The null model


def _categories_of(values: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Bin index of every non-null value: its category's position, else len(categories) (__other__)."""
    values = values.dropna()
    if pd.api.types.is_bool_dtype(values.dtype):  # booleans are named "True" / "False" (whylogs' frequent items)
        index = {c: i for i, c in enumerate(categories)}
        flags = values.to_numpy(dtype=bool)
        return np.where(flags, index.get("True", len(categories)), index.get("False", len(categories))).astype(np.int64)
    codes = pd.Categorical(values.astype(str), categories=list(dict.fromkeys(categories))).codes.astype(np.int64)
    codes[codes < 0] = len(categories)
    return codes


def null_model(
    data: pd.DataFrame, edges: Mapping[str, Mapping[str, Any]], *, seed: int = 0,
    sizes: Sequence[int] = NULL_SIZES,
) -> dict[str, dict[str, list[list[float]]]]:
    """Mean and sd of each statistic over windows of n rows drawn from the reference `data` itself.

    `data`: the reference's profiling frame (:func:`driftloop.monitor.profiling.profiling_frame`);
    `edges`: its bin edges with the reference's ``fractions``, ``n`` and (numeric) ``quantiles``.
    For each size n in `sizes` with at least two windows' worth of values, windows are drawn from
    the reference's m values, binned on its bins and compared with it as a window is. Returns
    ``{column: {statistic: [[n, mean, sd], ...]}}`` (numeric: psi, js, ks; others: psi, js, chi2).

    A live window and the reference are two *independent* samples: a bin's share differs between
    them with variance p(1-p)(1/n + 1/m). A window cut out of the reference itself differs from it
    with only p(1-p)(1/n)(1 - n/m) (the reference's own noise cancels): at n = m/5 that is 1.5 times
    too little variance, and a threshold that flags windows of an unchanged world far more often than
    k says. So each null window is drawn *with* replacement at the effective size n m / (n + m): its
    shares then differ from the reference's with the two-sample variance, and its KS statistic against
    the reference's CDF has the two-sample statistic's distribution (``ks_2samp`` takes the Kolmogorov
    distribution at n m / (n + m) too). The chi-square statistic is scaled back to the window's n (it
    is n m / (n + m) times the squared differences over the pooled shares). For n much smaller than m
    the effective size is the window's n.

    Cost: a column of more than :data:`NULL_MAX_VALUES` values is subsampled to that many first, so the
    time per column is bounded whatever the reference's size (~1-2 s per numeric column, most of it KS,
    under 1 s per categorical one, on one core)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[list[float]]]] = {}
    for name, entry in edges.items():
        if name not in data.columns or not entry.get("fractions"):
            continue
        expected = np.asarray(entry["fractions"], dtype=float)
        numeric = entry["type"] == "numeric"
        column = data[name].dropna()
        if len(column) > NULL_MAX_VALUES:
            column = column.iloc[np.sort(rng.choice(len(column), NULL_MAX_VALUES, replace=False))]
        if numeric:
            values = column.to_numpy(dtype=float)
            bins = np.searchsorted(np.asarray(entry["edges"], dtype=float), values, side="left")
            quantiles = np.asarray(entry["quantiles"], dtype=float)
            # the reference's CDF at every value (and just below it) and at its own quantiles, once
            at_values = reference_cdf(quantiles, values)
            before_values = reference_cdf(quantiles, np.nextafter(values, -np.inf))
            at_grid = reference_cdf(quantiles, quantiles[::KS_GRID_STEP])
            sorted_column = _SortedColumn(values, quantiles, at_values, before_values)
        else:
            values = column
            bins = _categories_of(values, entry["categories"])
        n_values = len(bins)
        reference_counts = expected * float(entry["n"])
        stats: dict[str, list[list[float]]] = {s: [] for s in (("psi", "js", "ks") if numeric else ("psi", "js", "chi2"))}
        for size in sizes:
            if n_values < 2 * size:
                break
            windows = int(np.clip(_NULL_VALUES_PER_SIZE // size, _MIN_NULL_WINDOWS, _MAX_NULL_WINDOWS))
            effective = max(2, round(size * n_values / (size + n_values)))
            rows = rng.integers(0, n_values, size=(windows, effective))
            flat = np.repeat(np.arange(len(rows)) * len(expected), effective) + bins[rows].ravel()
            counts = np.bincount(flat, minlength=len(rows) * len(expected)).reshape(len(rows), -1).astype(float)
            actual = counts / effective
            samples = {"psi": psi(expected, actual), "js": js_distance(expected, actual)}
            if numeric:
                samples["ks"] = _null_ks(sorted_column, rows[:_MAX_KS_WINDOWS], at_grid)
            else:
                m = reference_counts.sum()
                scale = (size * m / (size + m)) / (effective * m / (effective + m))
                samples["chi2"] = _chi2_statistics(reference_counts, counts) * scale
            for statistic, sample in samples.items():
                stats[statistic].append([float(size), float(np.mean(sample)), float(np.std(sample, ddof=1))])
        out[name] = stats
    return out


class _SortedColumn:
    """A numeric column sorted once, for the KS statistic of many windows: a window's rows become ranks
    in this order, and sorting integer ranks gives the window's sorted values (and the reference's CDF
    there) without an indirect sort of floats per window. Equal values share a value id (their tie
    group), so a window's CDF at a value counts every row holding it."""

    def __init__(self, values: np.ndarray, quantiles: np.ndarray, at_values: np.ndarray, before_values: np.ndarray):
        order = np.argsort(values, kind="stable")
        self.rank_of = np.empty(len(values), dtype=np.int64)
        self.rank_of[order] = np.arange(len(values))
        sorted_values = values[order]
        self.at_sorted, self.before_sorted = at_values[order], before_values[order]
        self.value_id = np.concatenate([[0], np.cumsum(sorted_values[1:] != sorted_values[:-1])]).astype(np.int64)
        # the window's P(X <= q) at every 5th reference quantile q: how many of its ranks are <= this rank
        self.grid_ranks = np.searchsorted(sorted_values, quantiles[::KS_GRID_STEP], side="right") - 1


def _null_ks(column: _SortedColumn, rows: np.ndarray, at_grid: np.ndarray) -> np.ndarray:
    """ks_statistic of each window (a row of indices into the column's values; a row may repeat), with
    the reference's CDF precomputed at every value (and just below it) and at its quantiles (`at_grid`)."""
    size = rows.shape[1]
    ranks = np.sort(column.rank_of[rows], axis=1)
    ids = column.value_id[ranks]
    position = np.broadcast_to(np.arange(size), ranks.shape)
    starts = np.ones(ranks.shape, dtype=bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    ends = np.ones(ranks.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)  # first position of each value
    last = np.minimum.accumulate(np.where(ends, position, size - 1)[:, ::-1], axis=1)[:, ::-1]
    d_points = np.max(np.abs(column.at_sorted[ranks] - (last + 1) / size), axis=1)  # P(X <= x), ties included
    d_before = np.max(np.abs(column.before_sorted[ranks] - first / size), axis=1)  # P(X < x)
    d_grid = np.array([np.max(np.abs(at_grid - np.searchsorted(w, column.grid_ranks, side="right") / size)) for w in ranks])
    return np.maximum(np.maximum(d_points, d_before), d_grid)


def null_at(null: Mapping[str, Sequence[Sequence[float]]] | None, statistic: str, n: float) -> tuple[float, float] | None:
    """(mean, sd) of `statistic` for a window of `n` values: interpolated in log n between the sizes
    it was learned at; the nearest learned size outside them. None when nothing was learned."""
    points = (null or {}).get(statistic) or []
    if not points or n <= 0:
        return None
    return NullTable(points).at(n)


class NullTable:
    """One statistic's learned null model ([n, mean, sd] rows), prepared for :func:`null_at` of many windows."""

    def __init__(self, points: Sequence[Sequence[float]]):
        table = np.asarray(points, dtype=float).reshape(-1, 3)
        self.log_sizes, self.means, self.sds = np.log(table[:, 0]), table[:, 1], table[:, 2]

    def at(self, n: float) -> tuple[float, float] | None:
        if not len(self.log_sizes) or n <= 0:
            return None
        x = math.log(n)
        return float(np.interp(x, self.log_sizes, self.means)), float(np.interp(x, self.log_sizes, self.sds))
