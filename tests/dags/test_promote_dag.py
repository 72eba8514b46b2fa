"""promote__churn run for real with dag.test(): a challenger no better than the champion is stopped by
the offline gate; nothing reaches live traffic."""

from __future__ import annotations

import psycopg
import pytest

from driftloop import registry, retrain
from training_data import NOW, fast_spec, sync

pytestmark = pytest.mark.dags


def test_a_challenger_that_fails_the_offline_gate_never_gets_traffic(dagbag, warehouse_url, monkeypatch, mlflow_store):
    spec = fast_spec()
    sync(warehouse_url, spec)
    retrain.bootstrap(warehouse_url, spec, rows=3000, training_end=NOW)
    champion = registry.version_by_alias("churn", "champion")
    # the same model registered again: zero AUC gain on its holdout
    twin = registry.register("churn", champion.source, champion.run_id, run_key="test/twin")
    registry.set_alias(warehouse_url, "churn", "challenger", twin.version)
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)

    run = dagbag.get_dag("promote__churn").test()

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "success"
    assert states == {"offline_gate": "skipped", "start_experiment": "skipped", "decide_when_ready": "skipped",
                      "watch_new_champion": "skipped"}  # fmt: skip
    with psycopg.connect(warehouse_url) as conn:
        decisions = conn.execute("select step, decision, airflow_run_id from ops.decisions").fetchall()
        experiments = conn.execute("select count(*) from ops.experiments").fetchone()[0]
        allocation = conn.execute("select count(*) from ops.traffic_allocation").fetchone()[0]
    assert decisions == [("offline_gate", "fail", run.run_id)]
    assert experiments == 0 and allocation == 0
    assert registry.version_by_alias("churn", "challenger") is None
    assert registry.version_by_alias("churn", "champion").version == champion.version
