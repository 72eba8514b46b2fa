"""The demo, end to end: simulated traffic with bad input -> the real ingest DAG -> the warehouse."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from driftloop.sim.demo import run_demo

pytestmark = [pytest.mark.dags, pytest.mark.slow]


def test_demo_loads_the_day_quarantines_every_bad_input_and_is_idempotent(
    airflow_db, warehouse_url, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("DRIFTLOOP_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("AIRFLOW_CONN_DRIFTLOOP_WAREHOUSE", "")
    monkeypatch.setenv("DBT_QUIET", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    day = date(2026, 11, 1)

    first = run_demo("churn", day=day, rows_per_hour=60)
    with psycopg.connect(warehouse_url) as conn:
        counts_after_first = conn.execute(
            "select (select count(*) from raw.predictions), (select count(*) from raw.feedback), "
            "(select count(*) from raw.rejected_records), (select count(*) from ops.alerts)"
        ).fetchone()
    second = run_demo("churn", day=day, rows_per_hour=60, with_metrics=False)

    assert first["runs"] == ["success", "success"] and second["runs"] == ["success", "success"]
    summary = first["summary"]
    statuses = {(f["kind"], f["status"]) for f in summary["files"]}
    assert {("predictions", "loaded"), ("predictions", "duplicate"), ("predictions", "failed"),
            ("predictions", "empty"), ("feedback", "loaded")} <= statuses  # fmt: skip
    rules = {(r["kind"], r["rule"]) for r in summary["rejections"]}
    assert {
        ("predictions", "json"), ("predictions", "required"), ("predictions", "type"),
        ("predictions", "probability"), ("predictions", "probability_sum"), ("predictions", "allowed_values"),
        ("predictions", "duplicate"), ("predictions", "timestamp_range"), ("predictions", "timestamp_format"),
        ("predictions", "range"), ("feedback", "model"),
    } <= rules  # fmt: skip
    assert summary["feedback_awaiting_prediction"] == 0  # the late prediction arrived and joined
    assert len(summary["alerts"]) == 1 and "truncated" in summary["alerts"][0]["summary"]
    with psycopg.connect(warehouse_url) as conn:
        counts_after_second = conn.execute(
            "select (select count(*) from raw.predictions), (select count(*) from raw.feedback), "
            "(select count(*) from raw.rejected_records), (select count(*) from ops.alerts)"
        ).fetchone()
    assert counts_after_second == counts_after_first
    printed = capsys.readouterr().out
    assert "Rejected rows" in printed and "marts.fct_model_quality" in printed
    with psycopg.connect(warehouse_url) as conn:
        daily = conn.execute(
            """select n_predictions, n_labelled, roc_auc from marts.fct_model_quality
               where model_name = 'churn' and window_size = 'day' and segment = '(all)' and window_start = %s""",
            (day,),
        ).fetchone()
        profiled = conn.execute("select count(*) from profiles.whylogs_profiles where window_size = 'hour'").fetchone()[0]
    assert daily[0] == counts_after_first[0] and 0 < daily[1] <= daily[0] and 0.6 < daily[2] < 1.0
    assert profiled >= 24
    # the champion was bootstrapped, and retrain__churn (manual) registered a challenger next to it
    assert "retrain__churn: success" in printed
    at = printed.index("== 7. driftloop status --model churn")
    status = printed[at : printed.index("\nDone in", at)].splitlines()
    assert "challenger version 2 (registered, not on live traffic)" in status
    assert "health    (marts.model_health)" in status and max(len(line) for line in status) <= 100
    assert any(line.startswith("  traffic   day 2026-11-01 00:00: ") for line in status), status
    with psycopg.connect(warehouse_url) as conn:
        runs = conn.execute("select trigger, status, model_version from ops.retrain_runs order by retrain_run_id").fetchall()
        aliases = dict(conn.execute("select alias, model_version from ops.model_aliases").fetchall())
        reference = conn.execute("select source ->> 'kind' from profiles.reference_profiles where model_version = '1'").fetchone()
    assert runs == [("bootstrap", "succeeded", "1"), ("manual", "succeeded", "2")]
    assert aliases == {"champion": "1", "challenger": "2"}
    assert reference == ("training data (simulated)",)
