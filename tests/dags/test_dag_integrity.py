"""Every DAG imports, is wired the way the project promises, and is cheap to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.core.spec import get_spec, load_specs

pytestmark = pytest.mark.dags
DAGS_FOLDER = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
# what a DAG file must not import at parse time (each task process parses its file before it runs;
# benchmarks/dag_parse.py prints the times): the data stack, dbt, cosmos
HEAVY = ["pandas", "scipy", "numpy", "great_expectations", "mlflow", "whylogs", "sklearn", "lightgbm", "dbt",
         "pyarrow", "psycopg", "cosmos"]  # fmt: skip


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_ingest_dag_per_spec(dagbag):
    expected = {f"ingest__{name}" for name in load_specs()}
    assert expected <= set(dagbag.dag_ids)


def test_every_dag_has_owner_retries_tags_and_no_catchup(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "driftloop" in dag.tags, dag_id
        assert dag.catchup is False, dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag_id, task.task_id)
            assert task.retries >= 1, (dag_id, task.task_id)


def test_ingest_dag_shape(dagbag):
    dag = dagbag.get_dag("ingest__churn")
    assert dag.max_active_runs == 1
    assert dag.task_dict["ingest_predictions"].downstream_task_ids == {"ingest_feedback", "publish_raw"}
    outlets = dag.task_dict["publish_raw"].outlets
    assert [asset.name for asset in outlets] == ["driftloop.churn.raw"]


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS_FOLDER.glob("*.py")))
def test_dag_files_import_no_heavy_libraries(dag_file):
    # Parse in a fresh interpreter and list what got imported: parsing must stay cheap.
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAGS_FOLDER / dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_retrain_dag_shape(dagbag):
    dag = dagbag.get_dag("retrain__churn")
    sensor = dag.get_task("wait_for_trigger")
    # reschedule: no worker slot is held while the gate stays closed; soft_fail: a timeout skips
    assert sensor.mode == "reschedule" and sensor.soft_fail is True
    assert sensor.timeout == get_spec("churn").retraining.sensor_timeout.total_seconds()
    train = dag.get_task("train_challenger")
    assert [asset.name for asset in train.outlets] == ["driftloop.churn.challenger"]
    assert train.upstream_task_ids == {"wait_for_trigger"}
    assert "reason" in dag.params and dag.params["reason"] is None
    assert dag.max_active_runs == 1


def test_promote_dag_shape(dagbag):
    dag = dagbag.get_dag("promote__churn")
    assert [t.task_id for t in dag.topological_sort()] == [
        "offline_gate", "start_experiment", "decide_when_ready", "watch_new_champion",
    ]  # fmt: skip
    promotion = get_spec("churn").promotion
    for task_id, phase, block in (("decide_when_ready", "experiment", promotion.online),
                                  ("watch_new_champion", "watch", promotion.watch)):  # fmt: skip
        sensor = dag.get_task(task_id)
        assert sensor.task_type == "ExperimentLookSensor" and sensor.phase == phase  # deferrable: no worker slot between looks
        assert sensor.poke_interval == block.poke_interval
    assert dag.max_active_runs == 1


def test_monitor_dag_runs_after_the_marts_and_on_its_own_clock(dagbag):
    dag = dagbag.get_dag("monitor__churn")
    assert dag.max_active_runs == 1
    assert dag.task_dict["evaluate_rules"].downstream_task_ids == {"deliver_alerts"}
    assert dag.task_dict["deliver_alerts"].trigger_rule == "all_done"
    timetable = dag.timetable
    assert "driftloop.marts" in str(timetable) and "*/30 * * * *" in str(timetable)


def test_metrics_dag_is_one_dbt_build_then_the_marts_asset(dagbag):
    # one dbt process for the whole project (not a task, a process and a DAG parse per dbt model)
    dag = dagbag.get_dag("metrics")
    assert set(dag.task_dict) == {"dbt_build", "publish_marts", "source_freshness"}
    assert dag.task_dict["dbt_build"].downstream_task_ids == {"publish_marts"}
    assert [asset.name for asset in dag.task_dict["publish_marts"].outlets] == ["driftloop.marts"]
