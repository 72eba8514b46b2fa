"""A warehouse as the Model health page finds it after months of the loop: a model's spec, its marts
(the dbt-built tables, created here with the columns the page reads: driftloop.ui.data.MART_COLUMNS) and
its ops rows (aliases, allocation, a running experiment with its looks, retrains, decisions, alerts).

Deterministic (no randomness, fixed dates): the tests assert the numbers it writes. Bulk rows come from
generate_series, so a year of daily windows for 50 features (the benchmark) takes a second.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from driftloop.ui.data import MART_COLUMNS

END = datetime(2026, 11, 30, tzinfo=UTC)  # the newest daily window
TEXT = {"model_name", "model_version", "variant", "segment", "window_size", "feature", "statistic", "column_name",
        "drifted_features"}  # fmt: skip


def _type(column: str) -> str:
    if column in TEXT:
        return "text"
    if column.endswith("_start") or column == "as_of":
        return "timestamptz"
    if column.startswith("is_"):
        return "boolean"
    if column.startswith("n_"):
        return "bigint"
    return "double precision"


def create_marts(conn: psycopg.Connection) -> None:
    conn.execute("create schema if not exists marts")
    for mart, columns in MART_COLUMNS.items():
        conn.execute(sql.SQL("create table if not exists marts.{} ({})").format(
            sql.Identifier(mart), sql.SQL(", ").join(sql.SQL("{} " + _type(c)).format(sql.Identifier(c)) for c in columns)))


def add_spec(conn: psycopg.Connection, model_name: str, n_features: int, segments: tuple[str, ...]) -> list[str]:
    features = [f"feature_{i:02d}" for i in range(n_features)]
    conn.execute(
        "insert into ops.model_specs (model_name, task, classes, positive_class, segment_name, features, window_sizes, "
        "expected_label_delay, min_label_coverage, spec) values (%s, 'binary_classification', '[\"stay\", \"churn\"]', "
        "'churn', %s, %s, '[\"day\"]', interval '1 day', 0.5, '{}')",
        (model_name, "region" if segments else None,
         json.dumps([{"name": f, "type": "numeric", "required": True} for f in features])),
    )  # fmt: skip
    return features


def seed_model(conn: psycopg.Connection, model_name: str = "churn", *, n_features: int = 8, days: int = 60,
               segments: tuple[str, ...] = ("eu", "us"), experiment: bool = True) -> dict:  # fmt: skip
    """Seed one model; returns what it wrote that tests look for."""
    create_marts(conn)
    features = add_spec(conn, model_name, n_features, segments)
    start = END - timedelta(days=days - 1)
    experiment_start = END - timedelta(days=6)
    params = {"model": model_name, "start": start, "end": END, "features": features, "segments": list(segments),
              "exp_start": experiment_start}  # fmt: skip
    # quality: version 1 (control) every day, version 2 (challenger) since the experiment started; segments too
    conn.execute("""
        insert into marts.fct_model_quality (model_name, model_version, variant, segment, window_size, window_start,
                                             n_labelled, accuracy, roc_auc, is_mature)
        select %(model)s, v.version, v.variant, s.segment, 'day', d,
               400, 0.78 + 0.02 * sin(extract(epoch from d) / 86400 / 9) - v.penalty
                   - case when d > %(end)s - interval '20 days' and v.version = '1' then 0.04 else 0 end,
               0.84 + 0.01 * cos(extract(epoch from d) / 86400 / 7) - v.penalty, true
        from generate_series(%(start)s::timestamptz, %(end)s, interval '1 day') d
        cross join (values ('1', 'control', 0.0), ('2', 'challenger', -0.01)) v (version, variant, penalty)
        cross join (select '(all)' union all select unnest(%(segments)s::text[])) s (segment)
        where v.version = '1' or d >= %(exp_start)s""", params)
    conn.execute("""
        insert into marts.fct_feature_drift (model_name, segment, window_size, window_start, feature, statistic,
                                             statistic_value, threshold, is_drifted)
        select %(model)s, '(all)', 'day', d, f, 'psi', psi, 0.2, psi > 0.2
        from generate_series(%(start)s::timestamptz, %(end)s, interval '1 day') d
        cross join unnest(%(features)s::text[]) with ordinality as f (f, i)
        cross join lateral (select 0.02 + 0.01 * i / 10.0 + case when i = 2 and d > %(end)s - interval '20 days'
                                                                  then 0.35 else 0 end as psi) p""", params)
    conn.execute("""
        insert into marts.fct_prediction_drift (model_name, segment, window_size, window_start, column_name, statistic,
                                                statistic_value, threshold, is_drifted)
        select %(model)s, '(all)', 'day', d, 'score_churn', 'psi', 0.05, 0.2, false
        from generate_series(%(start)s::timestamptz, %(end)s, interval '1 day') d""", params)
    conn.execute("""
        insert into marts.fct_label_coverage (model_name, model_version, variant, segment, window_size, window_start,
                                              n_scored, n_labelled, label_coverage, label_delay_p50_seconds)
        select %(model)s, '1', 'control', '(all)', 'day', d, 1000, 770, 0.77, 14342.0
        from generate_series(%(start)s::timestamptz, %(end)s, interval '1 day') d""", params)
    conn.execute("""
        insert into marts.fct_latency (model_name, model_version, variant, segment, window_size, window_start,
                                       n_predictions, error_rate, latency_p50_ms, latency_p95_ms, latency_p99_ms)
        select %(model)s, '1', 'control', '(all)', 'day', d, 1000, 0.0, 12.0, 21.25, 27.75
        from generate_series(%(start)s::timestamptz, %(end)s, interval '1 day') d""", params)
    conn.execute("""
        insert into marts.model_health (model_name, quality_window_start, quality_n_labelled, accuracy, roc_auc, f1,
            traffic_window_start, n_predictions, label_coverage, drift_window_start, n_features_measured,
            n_drifted_features, drifted_features, is_prediction_drifted, seconds_since_latest_load, as_of)
        values (%(model)s, %(end)s, 400, 0.7412, 0.8321, 0.61, %(end)s, 1000, 0.77, %(end)s,
                cardinality(%(features)s::text[]), 1, %(features)s[2], false, 1800, %(end)s)""", params)
    # ops: the bootstrap champion, a drift-triggered retrain, and (optionally) a running canary with its looks
    conn.execute("""
        insert into ops.retrain_runs (model_name, run_key, trigger, reason, status, started_at, finished_at,
                                      model_version, alias)
        values (%(model)s, 'cli/bootstrap-' || %(model)s, 'bootstrap', 'first champion', 'succeeded', %(start)s, %(start)s, '1', 'champion'),
               (%(model)s, 'retrain__' || %(model)s || '/scheduled__2026-11-23', 'drift',
                'feature_01 drifted (psi 0.37 > 0.2)', 'succeeded', %(exp_start)s - interval '1 day',
                %(exp_start)s - interval '1 day', '2', 'challenger')""", params)
    conn.execute("insert into ops.model_aliases (model_name, alias, model_version) values (%(model)s, 'champion', '1'), "
                 "(%(model)s, 'challenger', '2')", params)  # fmt: skip
    experiment_id = f"{model_name}-v1-vs-v2"
    if experiment:
        conn.execute("""
            insert into ops.experiments (experiment_id, model_name, champion_version, challenger_version, strategy,
                                         status, started_at)
            values (%(id)s, %(model)s, '1', '2', 'canary', 'running', %(exp_start)s)""", {**params, "id": experiment_id})
        conn.execute("""
            insert into ops.traffic_allocation (model_name, experiment_id, champion_version, challenger_version,
                                                challenger_share)
            values (%(model)s, %(id)s, '1', '2', 0.25)""", {**params, "id": experiment_id})
        conn.execute("""
            insert into ops.decisions (model_name, experiment_id, step, decision, reason, evidence, airflow_run_id,
                                       decided_at)
            values (%(model)s, %(id)s, 'offline_gate', 'pass', 'challenger beats the champion on the holdout',
                    '{"holdout_auc": {"champion": 0.83, "challenger": 0.85}}',
                    'asset_triggered__2026-11-24T00:00:00', %(exp_start)s)""", {**params, "id": experiment_id})
        conn.execute("""
            insert into ops.decisions (model_name, experiment_id, step, decision, reason, evidence, airflow_run_id,
                                       decided_at)
            select %(model)s, %(id)s, 'sequential_test', case when k = 12 then 'ramp' else 'continue' end,
                   'look ' || k || ': no boundary crossed yet',
                   jsonb_build_object('statistics', jsonb_build_object('metric', 'accuracy',
                       'treatment_share', case when k < 6 then 0.05 else 0.25 end,
                       'test', jsonb_build_object('difference', 0.0312 + 0.02 / k,
                                                  'always_valid_interval', jsonb_build_array(0.0312 + 0.02 / k - 0.3 / sqrt(k),
                                                                                             0.0312 + 0.02 / k + 0.3 / sqrt(k)),
                                                  'always_valid_interval_level', 0.9))),
                   'asset_triggered__2026-11-24T00:00:00', %(exp_start)s + k * interval '12 hours'
            from generate_series(1, 12) k""", {**params, "id": experiment_id})
    conn.execute("""
        insert into ops.alerts (dedup_key, model_name, source, severity, summary, status, rule_name, first_seen_at,
                                last_seen_at)
        values (%(model)s || ':quality_floor', %(model)s, 'monitor', 'critical',
                %(model)s || ' quality_floor: accuracy 0.7412 < 0.75', 'notified', 'quality_floor',
                %(end)s - interval '3 days', %(end)s)""", params)
    return {"experiment_id": experiment_id, "features": features, "start": start, "end": END}
