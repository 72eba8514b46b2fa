"""The page's charts: inline SVG drawn by matplotlib (the approach of the loop's report), no JavaScript.

matplotlib is imported on the first chart, never at plugin import. Figures are built with the object API
(``matplotlib.figure.Figure``, no pyplot state), so two requests can draw at once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

MARKED = {"retrain": "#f08c00", "experiment": "#1c7ed6", "promotion": "#2f9e44", "rollback": "#e03131",
          "alert": "#c2255c"}  # fmt: skip
WIDTH = 9.0


def _svg(figure, name: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    # a salt per chart: the ids of the clip paths differ between the SVGs inlined in one page
    with matplotlib.rc_context({"svg.hashsalt": f"driftloop-{name}", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg")  # fixed margins (_figure): bbox_inches="tight" draws twice
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(height: float, rows: int = 1, left: float = 0.8, right: float = 0.25):
    """A figure of WIDTH x height inches with margins in inches (left for the tick labels)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, height))
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    figure.subplots_adjust(left=left / WIDTH, right=1 - right / WIDTH, top=1 - 0.15 / height, bottom=0.45 / height,
                           hspace=0.35 / height * rows)  # fmt: skip
    for axis in axes:
        axis.grid(True, axis="y", color="#e9ecef", linewidth=0.6)  # y only: every grid line is drawn per tick
        axis.tick_params(labelsize=8)
    return figure, axes


def _dates(axis) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=7)
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _mark(axis, events: Sequence[dict[str, Any]], start: datetime, end: datetime) -> None:
    seen: set[str] = set()
    for event in events:
        if event["at"] is None or not start <= event["at"] <= end:
            continue
        kind = event["kind"]
        axis.axvline(event["at"], color=MARKED.get(kind, "#868e96"), linewidth=0.9, linestyle="--", alpha=0.8,
                     label=None if kind in seen else kind)  # fmt: skip
        seen.add(kind)


def _lines(axis, rows: list[dict[str, Any]], key: Sequence[str], value: str, label) -> int:
    series: dict[tuple, list[tuple[datetime, float]]] = {}
    for row in rows:
        if row[value] is not None:
            series.setdefault(tuple(row[k] for k in key), []).append((row["window_start"], float(row[value])))
    for name, points in sorted(series.items()):
        marker = "o" if len(points) <= 90 else None  # a marker per day of a year is noise (and SVG weight)
        axis.plot([p[0] for p in points], [p[1] for p in points], marker=marker, markersize=2, linewidth=1.2,
                  label=label(*name))  # fmt: skip
    return sum(len(points) for points in series.values())


def _span(rows: list[dict[str, Any]]) -> tuple[datetime, datetime]:
    starts = [row["window_start"] for row in rows]
    return min(starts), max(starts)


def quality(rows: list[dict[str, Any]], events: Sequence[dict[str, Any]]) -> tuple[str, int] | None:
    if not rows:
        return None
    figure, (accuracy, auc) = _figure(4.4, rows=2)
    n = _lines(accuracy, rows, ("model_version", "variant"), "accuracy", lambda v, var: f"version {v} ({var})")
    _lines(auc, rows, ("model_version", "variant"), "roc_auc", lambda v, var: f"version {v} ({var})")
    start, end = _span(rows)
    for axis in (accuracy, auc):
        _mark(axis, events, start, end)
    accuracy.set_ylabel("accuracy (day)", fontsize=8)
    auc.set_ylabel("ROC AUC (day)", fontsize=8)
    accuracy.legend(loc="lower left", fontsize=7, ncol=3)
    _dates(auc)
    return _svg(figure, "quality"), n


def segments(rows: list[dict[str, Any]], events: Sequence[dict[str, Any]]) -> tuple[str, int] | None:
    if not any(row["accuracy"] is not None for row in rows):
        return None
    figure, (axis,) = _figure(2.6)
    n = _lines(axis, rows, ("segment",), "accuracy", lambda segment: str(segment))
    _mark(axis, events, *_span(rows))
    axis.set_ylabel("accuracy by segment", fontsize=8)
    axis.legend(loc="lower left", fontsize=7, ncol=4)
    _dates(axis)
    return _svg(figure, "segments"), n


def drift(rows: list[dict[str, Any]]) -> tuple[str, int] | None:
    """A heatmap: one row per feature (prediction columns first), one column per day, the drift statistic over
    its threshold (1 = the threshold; drifted cells above it)."""
    if not rows:
        return None
    import numpy as np

    windows = sorted({row["window_start"] for row in rows})
    names = list(dict.fromkeys(row["name"] for row in rows))  # prediction columns first (the query's order)
    column = {w: i for i, w in enumerate(windows)}
    line = {n: i for i, n in enumerate(names)}
    grid = np.full((len(names), len(windows)), np.nan)
    for row in rows:
        if row["ratio"] is not None:
            grid[line[row["name"]], column[row["window_start"]]] = float(row["ratio"])
    longest = max(len(name) for name in names)
    figure, (axis,) = _figure(0.16 * len(names) + 1.0, left=0.3 + 0.055 * longest, right=1.1)
    import matplotlib.dates as mdates

    extent = (mdates.date2num(windows[0]), mdates.date2num(windows[-1]) + 1, len(names), 0)
    image = axis.imshow(grid, aspect="auto", cmap="magma_r", vmin=0, vmax=2.0, extent=extent, interpolation="nearest")
    axis.set_yticks([i + 0.5 for i in range(len(names))], names, fontsize=6 if len(names) > 20 else 8)
    axis.grid(False)
    axis.xaxis_date()
    _dates(axis)
    colorbar = figure.colorbar(image, ax=axis, pad=0.01, fraction=0.03)
    colorbar.set_label("statistic / threshold (> 1: drifted)", fontsize=8)
    return _svg(figure, "drift"), int(np.isfinite(grid).sum())


def coverage_latency(coverage: list[dict[str, Any]], latency: list[dict[str, Any]],
                     events: Sequence[dict[str, Any]]) -> tuple[str, int] | None:  # fmt: skip
    if not coverage and not latency:
        return None
    figure, (share, p95) = _figure(4.0, rows=2)
    n = _lines(share, coverage, ("variant",), "label_coverage", lambda variant: f"{variant}")
    n += _lines(p95, latency, ("variant",), "latency_p95_ms", lambda variant: f"{variant} p95")
    n += _lines(p95, latency, ("variant",), "latency_p99_ms", lambda variant: f"{variant} p99")
    start, end = _span(coverage + latency)
    for axis in (share, p95):
        _mark(axis, events, start, end)
    share.set_ylabel("label coverage", fontsize=8)
    share.set_ylim(0, 1.05)
    p95.set_ylabel("latency (ms)", fontsize=8)
    share.legend(loc="lower left", fontsize=7, ncol=4)
    p95.legend(loc="upper left", fontsize=7, ncol=4)
    _dates(p95)
    return _svg(figure, "coverage_latency"), n


def experiment(looks: list[dict[str, Any]]) -> tuple[str, int] | None:
    """The running estimate (challenger - champion) with its always-valid interval, and the challenger's share."""
    looks = [look for look in looks if look["difference"] is not None]
    if not looks:
        return None
    figure, (estimate, share) = _figure(3.6, rows=2)
    at = [look["decided_at"] for look in looks]
    estimate.plot(at, [look["difference"] for look in looks], color="#1c7ed6", linewidth=1.4,
                  label="challenger - champion")  # fmt: skip
    low = [float("nan") if look["low"] is None else look["low"] for look in looks]
    high = [float("nan") if look["high"] is None else look["high"] for look in looks]
    estimate.fill_between(at, low, high, color="#1c7ed6", alpha=0.2, label="always-valid interval")
    estimate.axhline(0.0, color="#212529", linewidth=0.8)
    estimate.legend(loc="upper left", fontsize=7)
    estimate.set_ylabel("difference", fontsize=8)
    share.step(at, [float("nan") if look["share"] is None else look["share"] for look in looks], where="post",
               color="#2f9e44")  # fmt: skip
    share.set_ylim(0, 1)
    share.set_ylabel("challenger share", fontsize=8)
    _dates(share)
    return _svg(figure, "experiment"), len(looks)


def all_charts(series: dict[str, list[dict[str, Any]]], events: Sequence[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """name -> (svg, number of data points) for every chart that has data."""
    drawn = {
        "quality": quality(series["quality"], events),
        "segments": segments(series["segments"], events),
        "drift": drift(series["drift"]),
        "coverage_latency": coverage_latency(series["coverage"], series["latency"], events),
        "experiment": experiment(series["looks"]),
    }
    return {name: chart for name, chart in drawn.items() if chart is not None}
