"""metrics (one dbt build) run for real with dag.test() on a warehouse with ingested data."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from driftloop.core import warehouse
from driftloop.core.spec import get_spec
from driftloop.ingest.loader import ingest
from landing import NOW, feedback, land, prediction

pytestmark = [pytest.mark.dags, pytest.mark.slow]


def _return_value(run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id, XComModel.task_id == task_id,
            XComModel.key == "return_value"))  # fmt: skip
    return XComModel.deserialize_value(type("Row", (), {"value": value})()) if not isinstance(value, dict) else value


def test_metrics_dag_builds_the_marts_and_emits_the_asset(dagbag, warehouse_url, tmp_path, monkeypatch):
    # GIVEN two hours of predictions, half of them labelled, in a fresh warehouse
    spec = get_spec("churn")
    events = [prediction(spec, request_ts=(NOW - timedelta(hours=2, minutes=i)).isoformat()) for i in range(40)]
    land(tmp_path, "churn", "predictions", "p.jsonl", events)
    land(tmp_path, "churn", "feedback", "f.jsonl", [feedback(e["prediction_id"], label="churn") for e in events[::2]])
    warehouse.sync_specs(warehouse_url)
    ingest(spec, landing_root=str(tmp_path), url=warehouse_url, now=NOW)
    monkeypatch.setenv("AIRFLOW_CONN_DRIFTLOOP_WAREHOUSE", warehouse.airflow_connection_json(warehouse_url))
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)

    # WHEN the metrics DAG runs
    run = dagbag.get_dag("metrics").test()

    # THEN every dbt model built (tests included) and the marts hold the windows
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert all(state == "success" for state in states.values()), states
    # one dbt build, its results per node in the task's return value: every model built, every test passed
    nodes = {row["node"]: row["status"] for row in _return_value(run, "dbt_build")["nodes"]}
    assert nodes["model.driftloop.fct_model_quality"] == "success"
    assert {status for node, status in nodes.items() if node.startswith("test.")} == {"pass"}
    # a production build runs the data tests; the unit tests (fixed rows, not data) run in CI only
    assert not [node for node in nodes if node.startswith("unit_test.")]
    with psycopg.connect(warehouse_url) as conn:
        hourly = conn.execute(
            """select sum(n_predictions), sum(n_labelled) from marts.fct_model_quality
               where model_name = 'churn' and window_size = 'hour' and segment = '(all)'"""
        ).fetchone()
    assert hourly == (40, 20)
