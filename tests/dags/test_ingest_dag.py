"""ingest__churn run for real with dag.test() against a real warehouse."""

from __future__ import annotations

import psycopg
import pytest

from driftloop.core.spec import get_spec
from landing import land, prediction

pytestmark = pytest.mark.dags


def _asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == name)
        ).all()
    return [row[0] for row in rows]


def test_ingest_dag_loads_quarantines_emits_asset_and_reruns_cleanly(dagbag, warehouse_url, tmp_path, monkeypatch):
    # GIVEN landed predictions with one bad row, and the DAG pointed at a fresh warehouse
    spec = get_spec("churn")
    root = tmp_path / "landing"
    land(root, "churn", "predictions", "p.jsonl", [prediction(spec), prediction(spec), prediction(spec, latency_ms=-1)])
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("DRIFTLOOP_LANDING", str(root))
    dag = dagbag.get_dag("ingest__churn")
    events_before = len(_asset_events("driftloop.churn.raw"))

    # WHEN the DAG runs, and runs again with nothing new
    first = dag.test()
    second = dag.test()

    # THEN the rows are loaded once, the bad row is quarantined, and only the first run emits the Asset
    assert first.state == "success"
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states == {"ingest_predictions": "success", "ingest_feedback": "success", "publish_raw": "skipped"}
    with psycopg.connect(warehouse_url) as conn:
        loaded = conn.execute("select count(*), min(model_name) from raw.predictions").fetchone()
        rejected = conn.execute("select reason from raw.rejected_records").fetchall()
        run_ids = conn.execute("select distinct run_id from raw.ingest_files").fetchall()
    assert loaded == (2, "churn")
    assert len(rejected) == 1 and "latency_ms" in rejected[0][0]
    assert run_ids == [(first.run_id,)]
    events = _asset_events("driftloop.churn.raw")
    assert len(events) == events_before + 1
    assert events[-1] == {"predictions_loaded": 2, "feedback_loaded": 0, "rows_rejected": 1}


def test_the_bad_input_catalogue_through_the_dag_quarantines_every_case_and_joins_a_late_prediction(
    dagbag, warehouse_url, tmp_path, monkeypatch
):
    """Every case of the simulator's bad-input catalogue (driftloop.sim.faults), landed next to good
    traffic and run through ingest__churn: each is kept with its reason, one alert for the truncated
    file, and feedback that arrived before its prediction joins once the prediction lands."""
    import os
    from datetime import UTC, datetime, timedelta

    from driftloop.report import ingest_summary
    from driftloop.sim.faults import land_awaiting_prediction, write_fault_files
    from driftloop.sim.world import Scenario, simulate

    spec = get_spec("churn")
    root = tmp_path / "landing"
    day = datetime(2026, 11, 1, tzinfo=UTC)
    now = day + timedelta(days=1, hours=12)
    simulate(spec, root, day, day + timedelta(days=1), Scenario(rows_per_hour=20, seed=7), now=now)
    faults = write_fault_files(spec, root, day.date().isoformat(), now)
    landed_at = (day + timedelta(days=1)).timestamp()  # old enough to be taken as complete files
    for paths in faults.values():
        for path in paths:
            if os.path.exists(path):
                os.utime(path, (landed_at, landed_at))
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("DRIFTLOOP_LANDING", str(root))
    dag = dagbag.get_dag("ingest__churn")
    clock = {"now": now.isoformat()}

    assert dag.test(run_conf=clock, logical_date=now).state == "success"
    assert ingest_summary(warehouse_url, "churn")["feedback_awaiting_prediction"] > 0
    land_awaiting_prediction(spec, root, day.date().isoformat(), now)
    assert dag.test(run_conf=clock, logical_date=now + timedelta(minutes=1)).state == "success"

    summary = ingest_summary(warehouse_url, "churn")
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
    assert summary["feedback_awaiting_prediction"] == 0
    assert len(summary["alerts"]) == 1 and "truncated" in summary["alerts"][0]["summary"]
