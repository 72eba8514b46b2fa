"""What the Model health page shows, read from the warehouse in one read-only transaction.

Every query takes parameters; the marts are read only when dbt has built them (a fresh warehouse has the
``ops`` tables only: the page then says to run the metrics DAG). The series cover the last
:data:`HISTORY_DAYS` days of daily windows up to the newest window of each mart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

HISTORY_DAYS = 365
OPEN_ALERT_STATUSES = ("firing", "notified")
# The mart columns the page reads (tests/unit/ui checks each against the mart's dbt YAML).
MART_COLUMNS: dict[str, tuple[str, ...]] = {
    "fct_model_quality": ("model_name", "model_version", "variant", "segment", "window_size", "window_start",
                          "n_labelled", "accuracy", "roc_auc", "is_mature"),
    "fct_feature_drift": ("model_name", "segment", "window_size", "window_start", "feature", "statistic",
                          "statistic_value", "threshold", "is_drifted"),
    "fct_prediction_drift": ("model_name", "segment", "window_size", "window_start", "column_name", "statistic",
                             "statistic_value", "threshold", "is_drifted"),
    "fct_label_coverage": ("model_name", "model_version", "variant", "segment", "window_size", "window_start",
                           "n_scored", "n_labelled", "label_coverage", "label_delay_p50_seconds"),
    "fct_latency": ("model_name", "model_version", "variant", "segment", "window_size", "window_start",
                    "n_predictions", "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"),
    # the overview's columns and those of the status facts (driftloop.report reads the row whole)
    "model_health": ("model_name", "quality_window_start", "quality_n_labelled", "accuracy", "roc_auc", "f1",
                     "traffic_window_start", "n_predictions", "label_coverage", "drift_window_start",
                     "n_features_measured", "n_drifted_features", "drifted_features", "is_prediction_drifted",
                     "seconds_since_latest_load", "as_of"),
}  # fmt: skip


def warehouse_url() -> str:
    """The warehouse as the project's tasks find it: DRIFTLOOP_WAREHOUSE_URL, else the Airflow connection
    ``driftloop_warehouse`` (read server-side: the API server has no task supervisor to ask), else the
    embedded default."""
    from driftloop.core import warehouse

    if os.environ.get("DRIFTLOOP_WAREHOUSE_URL"):
        return os.environ["DRIFTLOOP_WAREHOUSE_URL"]
    try:
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models.connection import Connection
    except ImportError:
        return warehouse.resolve_url()
    try:
        return warehouse.url_from_connection(Connection.get_connection_from_secrets(warehouse.AIRFLOW_CONN_ID))
    except AirflowNotFoundException:  # no such connection: the default warehouse, as the tasks do
        return warehouse.resolve_url()


@contextmanager
def read_only(url: str) -> Iterator[psycopg.Connection]:
    """A connection whose every transaction is READ ONLY (psycopg opens them with BEGIN READ ONLY)."""
    with psycopg.connect(url, application_name="driftloop-model-health", connect_timeout=10) as conn:
        conn.read_only = True
        yield conn


def _rows(conn: psycopg.Connection, query: str, params: dict[str, Any] | tuple = ()) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, params).fetchall()


def built_marts(conn: psycopg.Connection) -> set[str]:
    found = conn.execute("select table_name from information_schema.tables where table_schema = 'marts'").fetchall()
    return {row[0] for row in found}


def overview(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """One row per model of ops.model_specs: serving version, open alerts (and the worst severity), the last
    decision, the latest marts.model_health facts, and a one-word status."""
    models = _rows(conn, "select model_name, task from ops.model_specs order by model_name")
    if not models:
        return []
    names = [m["model_name"] for m in models]
    allocation = {r["model_name"]: r for r in _rows(conn, """
        select model_name, champion_version, challenger_version, challenger_share, experiment_id
        from ops.traffic_allocation where model_name = any(%(names)s)""", {"names": names})}
    champions = {r["model_name"]: r["model_version"] for r in _rows(conn, """
        select model_name, model_version from ops.model_aliases
        where alias = 'champion' and model_name = any(%(names)s)""", {"names": names})}
    alerts = {r["model_name"]: r for r in _rows(conn, """
        select model_name, count(*) as n_open,
               max(case severity when 'critical' then 3 when 'warning' then 2 else 1 end) as worst
        from ops.alerts where status = any(%(open)s) and model_name = any(%(names)s) group by model_name""",
                                               {"names": names, "open": list(OPEN_ALERT_STATUSES)})}
    decisions = {r["model_name"]: r for r in _rows(conn, """
        select distinct on (model_name) model_name, decided_at, step, decision, reason
        from ops.decisions where model_name = any(%(names)s)
        order by model_name, decided_at desc, decision_id desc""", {"names": names})}
    running = {r["model_name"]: r for r in _rows(conn, """
        select model_name, experiment_id, status from ops.experiments
        where status = 'running' and model_name = any(%(names)s)""", {"names": names})}
    health: dict[str, dict[str, Any]] = {}
    if "model_health" in built_marts(conn):
        health = {r["model_name"]: r for r in _rows(conn, """
            select model_name, accuracy, roc_auc, label_coverage, n_predictions, n_drifted_features,
                   n_features_measured, traffic_window_start
            from marts.model_health where model_name = any(%(names)s)""", {"names": names})}
    out = []
    for model in models:
        name = model["model_name"]
        alert = alerts.get(name) or {"n_open": 0, "worst": 0}
        status = ("no data" if name not in health else "critical" if alert["worst"] == 3 else
                  "warning" if alert["worst"] == 2 else "experiment" if name in running else "healthy")  # fmt: skip
        serving = allocation.get(name, {}).get("champion_version") or champions.get(name)
        out.append({"model_name": name, "task": model["task"], "status": status, "serving_version": serving,
                    "allocation": allocation.get(name), "experiment": running.get(name),
                    "n_open_alerts": alert["n_open"], "last_decision": decisions.get(name),
                    "health": health.get(name)})  # fmt: skip
    return out


def _since(mart: str) -> str:
    """Daily windows of the last HISTORY_DAYS up to the mart's newest daily window for the model."""
    return (f"window_size = 'day' and model_name = %(model)s and window_start > (select max(window_start) "
            f"from marts.{mart} where model_name = %(model)s and window_size = 'day') - make_interval(days => %(days)s)")


def series(conn: psycopg.Connection, model_name: str, days: int = HISTORY_DAYS) -> dict[str, list[dict[str, Any]]]:
    """The charts' data: quality per version and variant and per segment, drift per feature (statistic over
    its threshold, the worst variant of the day), label coverage and latency per variant, the experiment's
    looks. Empty lists for marts not built yet."""
    built = built_marts(conn)
    params = {"model": model_name, "days": days}
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in
                                            ("quality", "segments", "drift", "coverage", "latency", "looks")}  # fmt: skip
    if "fct_model_quality" in built:
        out["quality"] = _rows(conn, f"""
            select window_start, model_version, variant, accuracy, roc_auc, n_labelled, is_mature
            from marts.fct_model_quality where {_since('fct_model_quality')} and segment = '(all)'
            order by window_start, model_version, variant""", params)
        out["segments"] = _rows(conn, f"""
            select window_start, segment,
                   sum(accuracy * n_labelled) / nullif(sum(n_labelled) filter (where accuracy is not null), 0)
                       as accuracy,
                   sum(n_labelled) as n_labelled
            from marts.fct_model_quality where {_since('fct_model_quality')} and segment <> '(all)'
            group by window_start, segment order by window_start, segment""", params)
    drift_parts = []
    if "fct_feature_drift" in built:
        drift_parts.append(f"""
            select window_start, feature as name, 'feature' as kind, statistic_value / nullif(threshold, 0) as ratio,
                   is_drifted
            from marts.fct_feature_drift where {_since('fct_feature_drift')} and segment = '(all)'""")
    if "fct_prediction_drift" in built:
        drift_parts.append(f"""
            select window_start, 'prediction: ' || column_name as name, 'prediction' as kind,
                   statistic_value / nullif(threshold, 0) as ratio, is_drifted
            from marts.fct_prediction_drift where {_since('fct_prediction_drift')} and segment = '(all)'""")
    if drift_parts:
        out["drift"] = _rows(conn, f"""
            select window_start, name, kind, max(ratio) as ratio, bool_or(is_drifted) as is_drifted
            from ({' union all '.join(drift_parts)}) as drift
            group by window_start, name, kind order by kind desc, name, window_start""", params)
    if "fct_label_coverage" in built:
        out["coverage"] = _rows(conn, f"""
            select window_start, variant, sum(n_labelled)::float / nullif(sum(n_scored), 0) as label_coverage,
                   max(label_delay_p50_seconds) as label_delay_p50_seconds
            from marts.fct_label_coverage where {_since('fct_label_coverage')} and segment = '(all)'
            group by window_start, variant order by window_start, variant""", params)
    if "fct_latency" in built:
        out["latency"] = _rows(conn, f"""
            select window_start, variant, max(latency_p50_ms) as latency_p50_ms, max(latency_p95_ms) as latency_p95_ms,
                   max(latency_p99_ms) as latency_p99_ms, max(error_rate) as error_rate
            from marts.fct_latency where {_since('fct_latency')} and segment = '(all)'
            group by window_start, variant order by window_start, variant""", params)
    out["looks"] = _rows(conn, """
        select decided_at, decision,
               (evidence #>> '{statistics,test,difference}')::float as difference,
               (evidence #>> '{statistics,test,always_valid_interval,0}')::float as low,
               (evidence #>> '{statistics,test,always_valid_interval,1}')::float as high,
               (evidence #>> '{statistics,treatment_share}')::float as share
        from ops.decisions
        where step = 'sequential_test' and experiment_id = (
            select experiment_id from ops.experiments where model_name = %(model)s order by started_at desc limit 1)
        order by decided_at, decision_id""", params)
    return out


def events(conn: psycopg.Connection, model_name: str) -> list[dict[str, Any]]:
    """What the charts mark: retrains, experiment starts and ends, rollbacks, critical alerts."""
    return _rows(conn, """
        select started_at as at, 'retrain' as kind, trigger || ': ' || status as label
        from ops.retrain_runs where model_name = %(model)s
        union all
        select started_at, 'experiment', 'started ' || experiment_id from ops.experiments where model_name = %(model)s
        union all
        select ended_at, case status when 'promoted' then 'promotion' when 'rolled_back' then 'rollback'
                                     else 'experiment' end, status || ' ' || experiment_id
        from ops.experiments where model_name = %(model)s and ended_at is not null
        union all
        select first_seen_at, 'alert', summary from ops.alerts
        where model_name = %(model)s and severity = 'critical'
        order by 1""", {"model": model_name})


def model_page(conn: psycopg.Connection, model_name: str, days: int = HISTORY_DAYS) -> dict[str, Any] | None:
    """Everything the model's page shows; None when the model has no spec in the warehouse."""
    from driftloop.report import model_status_in

    spec = _rows(conn, "select model_name, task, features, segment_name from ops.model_specs where model_name = %s",
                 (model_name,))  # fmt: skip
    if not spec:
        return None
    status = model_status_in(conn, model_name, decisions=12)
    decisions = _rows(conn, """
        select decision_id, decided_at, experiment_id, step, decision, reason, evidence, airflow_run_id
        from ops.decisions where model_name = %s order by decided_at desc, decision_id desc limit 12""", (model_name,))
    retrains = _rows(conn, """
        select started_at, trigger, status, reason, run_key, model_version, error
        from ops.retrain_runs where model_name = %s order by started_at desc limit 8""", (model_name,))
    return {**status, "spec": spec[0], "decisions": decisions, "retrains": retrains,
            "series": series(conn, model_name, days), "events": events(conn, model_name),
            "marts_built": bool(built_marts(conn))}  # fmt: skip
