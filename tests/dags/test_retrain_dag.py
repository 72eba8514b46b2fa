"""retrain__churn run for real with dag.test(): a manual run with a reason passes the sensor at once,
trains on the warehouse's labelled traffic and registers a challenger next to the champion."""

from __future__ import annotations

import psycopg
import pytest

from driftloop.learn import registry
from driftloop.sim import examples
from training_data import (
    NOW,
    TRAFFIC_START,
    fast_spec,
    load_traffic,
    sync,
    traffic,
)

pytestmark = pytest.mark.dags


def test_manual_retrain_registers_a_challenger(dagbag, warehouse_url, tmp_path, monkeypatch, mlflow_store):
    spec = fast_spec()
    sync(warehouse_url, spec)
    load_traffic(warehouse_url, spec, tmp_path / "landing", traffic(spec, TRAFFIC_START, NOW, per_hour=40), "traffic")
    examples.bootstrap(warehouse_url, spec, rows=3000, training_end=TRAFFIC_START, now=TRAFFIC_START)
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    dag = dagbag.get_dag("retrain__churn")

    # the run's clock is the traffic's (its training window ends there), whatever the date today
    run = dag.test(logical_date=NOW, run_conf={"reason": "a person asked for it", "now": NOW.isoformat()})

    assert run.state == "success"
    with psycopg.connect(warehouse_url) as conn:
        row = conn.execute(
            "select run_key, trigger, reason, status, model_version from ops.retrain_runs where trigger <> 'bootstrap'"
        ).fetchone()
    assert row == (f"retrain__churn/{run.run_id}", "manual", "a person asked for it", "succeeded", "2")
    assert registry.version_by_alias("churn", "challenger").version == "2"
    assert registry.version_by_alias("churn", "champion").version == "1"
    with psycopg.connect(warehouse_url) as conn:
        started, data_end = conn.execute(
            "select started_at, data_end from ops.retrain_runs where trigger = 'manual'").fetchone()  # fmt: skip
    assert started == NOW and data_end <= NOW
