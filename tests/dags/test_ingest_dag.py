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
