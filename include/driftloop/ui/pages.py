"""Server-rendered HTML of the Model health page: the overview of every model and one page per model.

Pure functions of what :mod:`driftloop.ui.data` read; every value from the warehouse is escaped. Links into
Airflow's own UI (DAGs, runs, the Trigger button) open in the top window: the page itself may be the iframe
of Airflow's "Model health" nav entry.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

STATUS_COLOURS = {"healthy": "#2f9e44", "experiment": "#1c7ed6", "warning": "#f08c00", "critical": "#e03131",
                  "no data": "#868e96"}  # fmt: skip
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; margin: 0;
       background: #f8f9fa; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
section { background: #fff; border: 1px solid #dee2e6; border-radius: 6px; padding: 12px 16px; margin: 12px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e9ecef; vertical-align: top; }
th { color: #495057; font-weight: 600; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; }
.empty { color: #495057; background: #f1f3f5; border-left: 3px solid #adb5bd; padding: 8px 12px; margin: 6px 0; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 8px 24px; }
.fact b { display: block; font-size: 12px; color: #495057; font-weight: 600; }
.actions a { display: inline-block; margin: 4px 8px 4px 0; padding: 5px 12px; border-radius: 4px;
             background: #1c7ed6; color: #fff; text-decoration: none; font-size: 13px; }
.actions a.stop { background: #e03131; } .muted { color: #868e96; font-size: 12px; }
.bar { height: 10px; background: #e9ecef; border-radius: 5px; overflow: hidden; width: 240px; display: inline-block; }
.bar span { display: block; height: 100%; background: #1c7ed6; }
figure.chart { margin: 8px 0; } figure.chart svg { max-width: 100%; height: auto; }
details pre { background: #f8f9fa; padding: 8px; overflow-x: auto; font-size: 12px; max-height: 320px; }
a { color: #1864ab; }
"""


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def e(value: Any) -> str:
    return escape(_text(value))


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def badge(status: str) -> str:
    return f'<span class="badge" style="background:{STATUS_COLOURS.get(status, "#868e96")}">{escape(status)}</span>'


def empty(text: str) -> str:
    return f'<p class="empty">{text}</p>'


class Links:
    """Where things are: this app's own pages under ``base``, Airflow's UI under ``airflow``."""

    def __init__(self, base: str, airflow: str):
        self.base = base.rstrip("/")
        self.airflow = airflow.rstrip("/")

    def model(self, name: str) -> str:
        return f"{self.base}/models/{quote(name, safe='')}"

    def overview(self) -> str:
        return f"{self.base}/"

    def dag(self, dag_id: str) -> str:
        return f"{self.airflow}/dags/{quote(dag_id, safe='')}"

    def run(self, dag_id: str, run_id: str) -> str:
        return f"{self.dag(dag_id)}/runs/{quote(run_id, safe='')}"

    def top(self, href: str, text: str, cls: str = "") -> str:
        klass = f' class="{cls}"' if cls else ""
        return f'<a{klass} href="{escape(href)}" target="_top">{text}</a>'


def _page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head><body><main>{body}</main></body></html>")  # fmt: skip


def overview(models: list[dict[str, Any]], links: Links) -> str:
    head = "<h1>Model health</h1><p class='muted'>Every monitored model (ops.model_specs), from the marts and the ops tables.</p>"
    if not models:
        return _page("Model health", head + empty(
            "No monitored model yet. Add a spec under <code>include/specs/</code>, then run "
            "<code>driftloop warehouse migrate</code> (or any ingest run) to sync it, and land its predictions."))
    rows = []
    for model in models:
        decision = model["last_decision"]
        last = (f"{e(decision['decided_at'])} {e(decision['step'])}: <b>{e(decision['decision'])}</b>"
                if decision else "<span class='muted'>none yet</span>")  # fmt: skip
        experiment = model["experiment"]
        allocation = model["allocation"] or {}
        challenger = (f"version {e(allocation.get('challenger_version'))} on {_share(allocation.get('challenger_share'))}"
                      if experiment and allocation.get("challenger_version") else "–")  # fmt: skip
        health = model["health"] or {}
        rows.append([f"<a href='{escape(links.model(model['model_name']))}'>{e(model['model_name'])}</a>",
                     badge(model["status"]), e(model["serving_version"]), challenger, str(model["n_open_alerts"]),
                     e(health.get("accuracy")), _share(health.get("label_coverage")), last])  # fmt: skip
    table = "<section>" + _table(["model", "status", "serving version", "challenger", "open alerts#", "accuracy#",
                                  "label coverage#", "last decision"], rows) + "</section>"  # fmt: skip
    return _page("Model health", head + table)


def _facts(items: list[tuple[str, str]]) -> str:
    return "<div class='facts'>" + "".join(f"<div class='fact'><b>{escape(k)}</b>{v}</div>" for k, v in items) + "</div>"


def _serving(page: dict[str, Any]) -> str:
    allocation = page["allocation"]
    aliases = {a["alias"]: a["model_version"] for a in page["aliases"]}
    champion = (allocation or {}).get("champion_version") or aliases.get("champion")
    if champion is None:
        return empty("No champion yet: run <code>driftloop bootstrap</code> (or register a model with "
                     "<code>driftloop register</code>) so the router has a version to serve.")  # fmt: skip
    challenger = (allocation or {}).get("challenger_version") or aliases.get("challenger")
    share = (allocation or {}).get("challenger_share") or 0.0
    items = [("serving (champion)", f"version {e(champion)}"),
             ("challenger", f"version {e(challenger)}" if challenger else "none"),
             ("traffic allocation", f"<span class='bar'><span style='width:{share:.0%}'></span></span> "
                                    f"{share:.0%} to the challenger")]  # fmt: skip
    out = _facts(items)
    if not challenger:
        out += empty("No challenger: the retrain DAG registers one when a trigger fires (volume, degradation, "
                     "drift, schedule), or trigger it by hand with a reason (button above).")  # fmt: skip
    return out


def _experiment(page: dict[str, Any], links: Links, chart: str) -> str:
    experiment = page["experiment"]
    model = page["model_name"]
    if experiment is None:
        return empty(f"No experiment yet: a challenger that passes the offline gate starts one "
                     f"({links.top(links.dag('promote__' + model), 'promote__' + escape(model))}).")  # fmt: skip
    estimate = page["estimate"] or {}
    interval = estimate.get("interval") or [None, None]
    level = f"{estimate['level']:.0%} " if estimate.get("level") else ""
    difference = estimate.get("difference")
    items = [("experiment", f"{e(experiment['experiment_id'])} ({e(experiment['strategy'])})"),
             ("state", f"{e(experiment['status'])}"
                       + (f", watch {e(experiment['watch_status'])}" if experiment.get("watch_status") else "")),
             ("started / ended", f"{e(experiment['started_at'])} / {e(experiment['ended_at'])}"),
             (f"running estimate ({estimate.get('metric', 'accuracy')})",
              "no look yet" if difference is None else
              f"challenger − champion {difference:+.4f}, {level}always-valid interval "
              f"[{_signed(interval[0])}, {_signed(interval[1])}]"),
             ("last look", f"{e(estimate.get('decided_at'))}: {e(estimate.get('decision'))}" if estimate else "–")]  # fmt: skip
    return _facts(items) + (chart or empty("No look at the experiment yet: the promote DAG's sensor looks on its "
                                           "schedule once labelled traffic arrives for both arms."))  # fmt: skip


def _signed(value: Any) -> str:
    return f"{value:+.4f}" if isinstance(value, int | float) else "?"


def _chart(charts: dict[str, tuple[str, int]], name: str) -> str:
    if name not in charts:
        return ""
    svg, points = charts[name]
    return f'<figure class="chart" data-chart="{name}" data-points="{points}">{svg}</figure>'


def _latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        return []
    newest = max(row["window_start"] for row in rows)
    return [row for row in rows if row["window_start"] == newest]


def _coverage_latency(page: dict[str, Any], chart: str) -> str:
    series = page["series"]
    coverage, latency = _latest(series["coverage"]), {r["variant"]: r for r in _latest(series["latency"])}
    if not coverage and not latency:
        return empty("No label coverage or latency windows yet: run the metrics DAG once predictions have landed.")
    rows = [[e(row["window_start"]), e(row["variant"]), _share(row["label_coverage"]),
             e(row["label_delay_p50_seconds"])] + [e(latency.get(row["variant"], {}).get(key)) for key in
                                                   ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate")]
            for row in coverage]  # fmt: skip
    table = _table(["latest day", "variant", "label coverage#", "label delay p50 (s)#", "p50 ms#", "p95 ms#", "p99 ms#",
                    "error rate#"], rows)  # fmt: skip
    return table + chart


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A table of HTML cells (already escaped); a header ending in "#" is a right-aligned number column."""
    numeric = [h.endswith("#") for h in headers]
    head = "".join(f"<th class='num'>{h[:-1]}</th>" if n else f"<th>{h}</th>" for h, n in zip(headers, numeric, strict=True))
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if n else f"<td>{c}</td>" for c, n in zip(row, numeric, strict=True))
                   + "</tr>" for row in rows)  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return empty("No open alert. The monitor DAG raises one per condition of the spec's alert rules.")
    return _table(["severity", "summary", "rule", "first seen", "last seen", "status"],
                  [[badge(a["severity"]), e(a["summary"]), e(a.get("rule_name")), e(a.get("first_seen_at")),
                    e(a.get("last_seen_at")), e(a["status"])] for a in alerts])  # fmt: skip


def _decisions(page: dict[str, Any], links: Links) -> str:
    if not page["decisions"]:
        return empty("No decision yet: the promote DAG records every step (offline gate, looks, promote, reject, "
                     "rollback) here with its evidence.")  # fmt: skip
    dag_id = f"promote__{page['model_name']}"
    rows = []
    for d in page["decisions"]:
        run = links.top(links.run(dag_id, d["airflow_run_id"]), e(d["airflow_run_id"])) if d["airflow_run_id"] else "–"
        evidence = escape(json.dumps(d["evidence"], indent=2, sort_keys=True, default=str))
        rows.append([e(d["decided_at"]), e(d["step"]), f"<b>{e(d['decision'])}</b>",
                     f"{e(d['reason'])}<details><summary>evidence</summary><pre>{evidence}</pre></details>", run])  # fmt: skip
    return _table(["when", "step", "decision", "reason and evidence", "DAG run"], rows)


def _retrains(page: dict[str, Any], links: Links) -> str:
    if not page["retrains"]:
        return empty("No retraining run yet: <code>driftloop bootstrap</code> trains the first champion; the "
                     "retrain DAG trains challengers.")  # fmt: skip
    rows = []
    for r in page["retrains"]:
        dag_id, _, run_id = (r["run_key"] or "").partition("/")
        run = links.top(links.run(dag_id, run_id), e(run_id)) if dag_id.startswith("retrain__") and run_id else e(r["run_key"])
        error = "<br>" + e(r["error"]) if r["error"] else ""
        rows.append([e(r["started_at"]), e(r["trigger"]), e(r["status"]), e(r["model_version"]), e(r["reason"]) + error,
                     run])  # fmt: skip
    return _table(["started", "trigger", "status", "version", "reason", "DAG run"], rows)


def _actions(page: dict[str, Any], links: Links) -> str:
    model = page["model_name"]
    out = [links.top(links.dag(f"retrain__{model}"), "Retrain… (Trigger with a reason)"),
           links.top(links.dag(f"promote__{model}"), "Promotion DAG")]  # fmt: skip
    experiment = page["experiment"]
    if experiment and experiment["status"] == "running":
        out.append(links.top(links.dag(f"stop_experiment__{model}"), "Stop the experiment… (Trigger with a reason)", "stop"))
    return ("<div class='actions'>" + "".join(out) + "</div><p class='muted'>Buttons open Airflow's own pages: "
            "on the DAG page, <i>Trigger</i> with the config <code>{\"reason\": \"...\"}</code> retrains now, or "
            "stops the experiment (the champion gets all traffic back).</p>")


def model(page: dict[str, Any], charts: dict[str, tuple[str, int]], links: Links) -> str:
    name = page["model_name"]
    n_features = len(page["spec"]["features"] or [])
    open_alerts = page["open_alerts"]
    worst = ("critical" if any(a["severity"] == "critical" for a in open_alerts) else
             "warning" if any(a["severity"] == "warning" for a in open_alerts) else
             "no data" if not page["health"] else
             "experiment" if page["experiment"] and page["experiment"]["status"] == "running" else "healthy")  # fmt: skip
    head = (f"<p><a href='{escape(links.overview())}'>← all models</a></p><h1>{escape(name)} {badge(worst)}</h1>"
            f"<p class='muted'>{e(page['spec']['task'])}, {n_features} features"
            f"{', segments by ' + e(page['spec']['segment_name']) if page['spec']['segment_name'] else ''}.</p>")  # fmt: skip
    no_marts = "No quality windows yet: run the metrics DAG once predictions and labels have landed."
    quality = _chart(charts, "quality") or empty(no_marts)
    segments = _chart(charts, "segments")
    drift = _chart(charts, "drift") or empty(
        "No drift windows yet: the profile DAG stores whylogs profiles and the metrics DAG compares them with the "
        "version's reference profile (<code>driftloop bootstrap</code> or <code>driftloop register</code> stores it).")
    sections = [
        head, _actions(page, links),
        f"<section><h2>Serving</h2>{_serving(page)}</section>",
        f"<section><h2>Experiment</h2>{_experiment(page, links, _chart(charts, 'experiment'))}</section>",
        f"<section><h2>Quality over time</h2><p class='muted'>Daily windows, all segments, per version and variant; "
        f"dashed lines mark retrains, experiments, promotions, rollbacks and critical alerts.</p>{quality}{segments}</section>",
        f"<section><h2>Drift over time</h2>{drift}</section>",
        f"<section><h2>Label coverage and latency</h2>{_coverage_latency(page, _chart(charts, 'coverage_latency'))}</section>",
        f"<section><h2>Open alerts ({len(open_alerts)})</h2>{_alerts(open_alerts)}</section>",
        f"<section><h2>Latest decisions</h2>{_decisions(page, links)}</section>",
        f"<section><h2>Retraining runs</h2>{_retrains(page, links)}</section>",
    ]  # fmt: skip
    return _page(f"{name} · Model health", "".join(sections))


def not_found(name: str, links: Links) -> str:
    return _page("Model health", f"<h1>No model {escape(name)}</h1>" + empty(
        f"The warehouse has no spec for this model. <a href='{escape(links.overview())}'>All models</a>."))
