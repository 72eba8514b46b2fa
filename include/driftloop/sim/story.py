"""The closed loop's report: one self-contained HTML page (inline SVG from matplotlib, no CDN, opens
from disk) with what the warehouse recorded while a scenario played.

* quality per model version and arm over time (daily windows of ``marts.fct_model_quality``), the
  story's events marked;
* the feature-drift heatmap (feature x daily window, Jensen-Shannon distance of the serving version);
* the experiment's running estimate with its always-valid interval and the decision boundary, per
  look (``ops.decisions``, step ``sequential_test``);
* the traffic allocation over time (the challenger's share of the requests actually served);
* the timeline of events.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["gather", "render", "write_report"]

_MARKED = {"retrain": "#7a5195", "promotion": "#2f9e44", "rollback": "#e03131", "experiment": "#1c7ed6",
           "decision": "#1c7ed6", "alert": "#f08c00"}  # fmt: skip


def gather(url: str, model_name: str) -> dict[str, Any]:
    """What the report plots, read from the marts and the ops tables."""
    with psycopg.connect(url) as conn:
        quality = conn.execute(
            "select window_start, model_version, variant, accuracy, n_labelled from marts.fct_model_quality "
            "where model_name = %s and window_size = 'day' and segment = '(all)' and n_labelled > 0 "
            "order by window_start, model_version, variant",
            (model_name,),
        ).fetchall()
        drift = conn.execute(
            "select window_start, feature, js_distance from marts.fct_feature_drift "
            "where model_name = %s and window_size = 'day' and js_distance is not null and segment = '(all)' "
            "and variant = 'control' order by window_start, feature",
            (model_name,),
        ).fetchall()
        looks = conn.execute(
            "select coalesce(cast(evidence ->> 'as_of' as timestamptz), decided_at), experiment_id, decision, "
            "cast(evidence #>> '{statistics,test,difference}' as double precision), "
            "cast(evidence #>> '{statistics,test,always_valid_interval,0}' as double precision), "
            "cast(evidence #>> '{statistics,test,always_valid_interval,1}' as double precision) "
            "from ops.decisions where model_name = %s and step = 'sequential_test' order by decision_id",
            (model_name,),
        ).fetchall()
        allocation = conn.execute(
            "select date_trunc('hour', request_ts) as hour, "
            "avg(case when variant = 'challenger' then 1.0 else 0.0 end), count(*) "
            "from raw.predictions where model_name = %s group by 1 order by 1",
            (model_name,),
        ).fetchall()
    return {"quality": quality, "drift": drift, "looks": looks, "allocation": allocation}


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _mark(axis, events: Sequence[Any]) -> None:
    for event in events:
        axis.axvline(event.at, color=_MARKED.get(event.kind, "#868e96"), linewidth=0.8, linestyle="--", alpha=0.7)


def _figures(data: dict[str, Any], events: Sequence[Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    out: dict[str, str] = {}
    marked = [e for e in events if e.kind in ("retrain", "promotion", "rollback", "alert") or
              (e.kind == "allocation" and e.data.get("decision") == "start")]  # fmt: skip

    if data["quality"]:
        figure, axis = plt.subplots(figsize=(9, 3.2))
        series: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
        for start, version, variant, accuracy, _ in data["quality"]:
            series.setdefault((version, variant), []).append((start, float(accuracy)))
        for (version, variant), points in sorted(series.items()):
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                      label=f"version {version} ({variant})")  # fmt: skip
        _mark(axis, marked)
        axis.set_ylabel("accuracy (daily)")
        axis.legend(loc="lower left", fontsize=8)
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
        out["quality"] = _svg(figure)
        plt.close(figure)

    windows = sorted({row[0] for row in data["drift"]})
    features = sorted({row[1] for row in data["drift"]})
    if windows and features:
        grid = np.full((len(features), len(windows)), np.nan)
        for start, feature, js in data["drift"]:
            grid[features.index(feature), windows.index(start)] = float(js)
        figure, axis = plt.subplots(figsize=(9, 0.3 * len(features) + 1.2))
        image = axis.imshow(grid, aspect="auto", cmap="magma_r", vmin=0, vmax=max(0.2, float(np.nanmax(grid))))
        axis.set_yticks(range(len(features)), features)
        axis.set_xticks(range(len(windows)), [w.strftime("%d %b") for w in windows], rotation=45, ha="right")
        figure.colorbar(image, ax=axis, label="Jensen-Shannon distance")
        out["drift"] = _svg(figure)
        plt.close(figure)

    looks = [row for row in data["looks"] if row[3] is not None]
    if looks:
        figure, axis = plt.subplots(figsize=(9, 3.2))
        at = [row[0] for row in looks]
        estimate = [row[3] for row in looks]
        axis.plot(at, estimate, color="#1c7ed6", marker="o", label="challenger - champion (primary metric)")
        axis.fill_between(at, [row[4] for row in looks], [row[5] for row in looks], color="#1c7ed6", alpha=0.2,
                          label="always-valid interval")  # fmt: skip
        # each look's interval as a bar too: an experiment decided at its first look has no band to fill
        axis.errorbar(at, estimate, yerr=[[e - row[4] for e, row in zip(estimate, looks, strict=True)],
                                          [row[5] - e for e, row in zip(estimate, looks, strict=True)]],
                      fmt="none", ecolor="#1c7ed6", capsize=4)  # fmt: skip
        if len(at) == 1:
            axis.set_xlim(at[0] - timedelta(hours=12), at[0] + timedelta(hours=12))
        axis.axhline(0.0, color="#212529", linewidth=1, label="decision boundary (no difference)")
        axis.set_ylim(-0.3, 0.3)
        axis.legend(loc="upper left", fontsize=8)
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %H:%M"))
        out["experiment"] = _svg(figure)
        plt.close(figure)

    if data["allocation"]:
        figure, axis = plt.subplots(figsize=(9, 2.4))
        axis.step([row[0] for row in data["allocation"]], [float(row[1]) for row in data["allocation"]], where="post",
                  color="#2f9e44")  # fmt: skip
        axis.set_ylabel("challenger share")
        axis.set_ylim(0, 1)
        _mark(axis, marked)
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
        out["allocation"] = _svg(figure)
        plt.close(figure)
    return out


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>driftloop: {title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #212529; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; border-bottom: 1px solid #dee2e6; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
td, th {{ text-align: left; padding: 2px 8px; border-bottom: 1px solid #f1f3f5; vertical-align: top; }}
.kind {{ font-weight: 600; white-space: nowrap; }} svg {{ max-width: 100%; height: auto; }}
.empty {{ color: #868e96; }}
</style></head><body>
<h1>driftloop closed loop: {title}</h1>
<p>{description}</p>
{summary}
<h2>Quality per version and arm (daily windows, events marked)</h2>{quality}
<h2>Feature drift (serving version, daily windows)</h2>{drift}
<h2>The experiment: running estimate, always-valid interval, decision boundary</h2>{experiment}
<h2>Traffic allocation (the challenger's share of served requests)</h2>{allocation}
<h2>Timeline</h2>
<table><tr><th>simulated time</th><th>event</th><th>what happened</th></tr>{timeline}</table>
</body></html>
"""


def render(scenario, summary: dict[str, Any], data: dict[str, Any], events: Sequence[Any]) -> str:
    figures = _figures(data, events)
    rows = "".join(
        f"<tr><td>{e.at:%a %d %b %H:%M}</td><td class='kind'>{html.escape(e.kind)}</td><td>{html.escape(e.text)}</td></tr>"
        for e in events
    )

    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))

    facts = [("requests served per arm", ", ".join(f"{k}: {v:,}" for k, v in summary.get("requests", {}).items())),
             ("accuracy before the drift", number(summary.get("accuracy_before_drift"))),
             ("accuracy during the drift (until promotion)", number(summary.get("accuracy_during_drift"))),
             ("accuracy after the promotion", number(summary.get("accuracy_after_promotion"))),
             ("time to detect", number(summary.get("time_to_detect"))),
             ("time to promote", number(summary.get("time_to_promote")))]  # fmt: skip
    table = "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"
    empty = "<p class='empty'>nothing to show yet</p>"
    return _PAGE.format(title=html.escape(scenario.name), description=html.escape(scenario.description), summary=table,
                        quality=figures.get("quality", empty), drift=figures.get("drift", empty),
                        experiment=figures.get("experiment", empty), allocation=figures.get("allocation", empty),
                        timeline=rows or "<tr><td colspan=3 class='empty'>no events</td></tr>")  # fmt: skip


def write_report(path: str | Path, url: str, model_name: str, scenario, summary: dict[str, Any], events) -> Path:
    """Write the report to ``path`` (its folder is created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(scenario, summary, gather(url, model_name), events), encoding="utf-8")
    return target
