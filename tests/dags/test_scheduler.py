"""The DAGs under the real scheduler (not dag.test()): api-server, scheduler, dag-processor and
triggerer with the LocalExecutor and the small-machine settings of `make airflow`, on a temporary
Airflow home (metadata in PostgreSQL), the test warehouse and a landing zone the simulator fills.

1. A few simulated hours land; ingest__churn runs (unpaused and triggered) and the
   Asset chain follows on its own: profile__churn and metrics on the raw Asset, monitor__churn on the
   marts. Every run of the chain must succeed with every task success (or skipped where the DAG says
   so), and no DAG file may fail to import under the scheduler's start-up parses.
2. promote__churn's look sensor (an experiment running, the gate and the start already done) looks,
   defers into the triggerer, and resumes for a second look when new predictions are loaded.

The chain's wall time, the metrics DAG's against a plain `dbt build` of the same warehouse, are
printed (pytest -s), not asserted.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from driftloop.core import warehouse
from driftloop.core.spec import get_spec, load_spec
from driftloop.ingest.loader import ingest
from driftloop.monitor import dbt_runner
from driftloop.promote import experiments
from driftloop.sim.world import Scenario, simulate
from landing import land, prediction
from scheduler_stack import AirflowStack

pytestmark = [pytest.mark.dags, pytest.mark.slow]

CHAIN = ("ingest__churn", "profile__churn", "metrics", "monitor__churn")
HANG_GUARD = 1500.0  # seconds; a 2-core machine under load, not a speed limit


def _sqlalchemy_url(url: str) -> str:
    info = conninfo_to_dict(url)
    user, password = info.get("user") or "postgres", info.get("password") or ""
    auth = f"{user}:{password}@" if password else f"{user}@"
    host = info.get("host") or "localhost"
    if host.startswith("/"):  # the embedded server: a unix socket folder
        return f"postgresql+psycopg2://{auth}/{info['dbname']}?host={host}"
    return f"postgresql+psycopg2://{auth}{host}:{info.get('port') or 5432}/{info['dbname']}"


@pytest.fixture
def metadata_url(admin_url):
    """Airflow's metadata database: an empty database on the test server."""
    url = warehouse.create_database(admin_url, f"airflow_meta_{uuid.uuid4().hex[:8]}")
    yield url
    warehouse.drop_database(admin_url, url)


def _test_spec(folder):
    """The example spec, with the experiment's looks due every 30 s (the sensor's poke_interval): not every
    second, because a trigger that fires within seconds of its deferral races the scheduler's handling of
    the deferring try's exit (apache/airflow#72716, #71580: the resumed try is failed and retried). A
    deployment looks every hour; 30 s keeps the test short and out of that window."""
    payload = get_spec("churn").model_dump(mode="json")
    payload["promotion"]["online"].update({"poke_interval": "30s", "allocation_settle": "1s"})
    folder.mkdir(parents=True)
    (folder / "churn.yaml").write_text(yaml.safe_dump(payload, sort_keys=False))
    return load_spec(folder / "churn.yaml")


def _finished(stack: AirflowStack, dag_id: str) -> list[dict] | None:
    """The DAG's runs once there is at least one and none is still queued or running; a failed run fails the test."""
    runs = stack.runs(dag_id)
    failed = [run for run in runs if run["state"] == "failed"]
    if failed:
        states = {run["dag_run_id"]: stack.task_instances(dag_id, run["dag_run_id"]) for run in failed}
        summary = {rid: {t: ti["state"] for t, ti in tis.items()} for rid, tis in states.items()}
        raise AssertionError(f"{dag_id} failed under the scheduler: {summary}\n{stack.logs()}")
    if runs and all(run["state"] == "success" for run in runs):
        return runs
    return None


def _seconds(run: dict) -> float:
    return (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()


def test_the_asset_chain_runs_under_the_scheduler_and_the_look_sensor_defers(
    admin_url, warehouse_url, metadata_url, tmp_path, monkeypatch
):
    # GIVEN a few hours of simulated traffic in the landing zone, ending an hour ago (ingestion under the
    # scheduler judges "not in the future" on the wall clock), and a real Airflow on a fresh home
    spec = _test_spec(tmp_path / "specs")
    monkeypatch.setenv("DRIFTLOOP_SPECS_DIR", str(tmp_path / "specs"))
    landing = tmp_path / "landing"
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    simulate(spec, landing, now - timedelta(hours=4), now - timedelta(hours=1), Scenario(rows_per_hour=40, seed=3), now=now)
    warehouse.sync_specs(warehouse_url, {spec.name: spec})
    stack = AirflowStack(tmp_path / "airflow", _sqlalchemy_url(metadata_url), {
        "DRIFTLOOP_WAREHOUSE_URL": warehouse_url, "DRIFTLOOP_LANDING": str(landing),
        "DRIFTLOOP_SPECS_DIR": str(tmp_path / "specs"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "DBT_QUIET": "true",
    })  # fmt: skip
    stack.migrate()
    try:
        stack.start()
        stack.wait_until_up(HANG_GUARD)
        stack.wait_for("the DAG files parsed", lambda: all(stack.dag_exists(d) for d in (*CHAIN, "promote__churn")), HANG_GUARD)
        import_errors = stack.api("GET", "/importErrors")
        assert import_errors["total_entries"] == 0, import_errors

        # WHEN the chain's DAGs are unpaused and ingest__churn runs
        started = time.monotonic()
        for dag_id in CHAIN:
            stack.unpause(dag_id)
        stack.trigger("ingest__churn")

        # THEN ingest, profile, metrics and monitor all run, each run and task a success, until the chain is at
        # rest: nothing queued or running, and a monitor run started after the last marts build
        def at_rest():
            runs = {dag_id: _finished(stack, dag_id) for dag_id in CHAIN}
            if not all(runs.values()):
                return None
            # (a marts Asset event starts monitor before its metrics run is marked done: compare the starts)
            last_marts, last_monitor = runs["metrics"][-1]["start_date"], runs["monitor__churn"][-1]["start_date"]
            return runs if datetime.fromisoformat(last_monitor) > datetime.fromisoformat(last_marts) else None

        runs = stack.wait_for("the chain ingest -> profile -> metrics -> monitor", at_rest, HANG_GUARD, interval=3)
        chain_seconds = time.monotonic() - started
        for dag_id, dag_runs in runs.items():
            for run in dag_runs:
                states = {task: ti["state"] for task, ti in stack.task_instances(dag_id, run["dag_run_id"]).items()}
                assert set(states.values()) <= {"success", "skipped"}, (dag_id, run["dag_run_id"], states)
        # unpausing starts the latest 15-minute tick's run too: either run may be the one that loads the files
        assert "manual" in {run["run_type"] for run in runs["ingest__churn"]} <= {"manual", "scheduled"}
        assert {run["run_type"] for run in runs["profile__churn"]} == {"asset_triggered"}
        assert {run["run_type"] for run in runs["metrics"]} == {"asset_triggered"}
        assert "asset_triggered" in {run["run_type"] for run in runs["monitor__churn"]}
        with psycopg.connect(warehouse_url) as conn:
            loaded = conn.execute("select count(*) from raw.predictions").fetchone()[0]
            marts = conn.execute("select sum(n_predictions) from marts.fct_model_quality where window_size = 'hour' "
                                 "and segment = '(all)' and model_name = 'churn'").fetchone()[0]  # fmt: skip
            profiled = conn.execute("select count(*) from profiles.whylogs_profiles").fetchone()[0]
        assert loaded == 120 and marts == 120 and profiled > 0

        # the numbers for the note: the chain, and the last metrics run against a plain dbt build now
        metrics_seconds = [_seconds(run) for run in runs["metrics"]]
        built = time.monotonic()
        dbt_runner.build(warehouse_url, target_path=tmp_path / "dbt" / "target", log_path=tmp_path / "dbt" / "logs")
        plain_seconds = time.monotonic() - built
        print(f"\nchain ingest -> profile -> metrics -> monitor under the scheduler: {chain_seconds:.0f} s; "
              f"metrics runs {', '.join(f'{s:.0f} s' for s in metrics_seconds)}; plain dbt build {plain_seconds:.0f} s; "
              f"ratio (last metrics run / dbt build) {metrics_seconds[-1] / plain_seconds:.2f}")  # fmt: skip

        # AND promote__churn's look sensor defers into the triggerer, and resumes when new data is loaded
        experiment_id = experiments.start_experiment(warehouse_url, spec, "1", "2")
        run_id = stack.trigger("promote__churn")  # paused: nothing runs before the gate is marked done
        stack.wait_for("promote's task instances", lambda: len(stack.task_instances("promote__churn", run_id)) == 4, 120)
        for task_id in ("offline_gate", "start_experiment"):  # what a challenger that passed the gate leaves
            stack.set_task_state("promote__churn", run_id, task_id, "success")
        stack.unpause("promote__churn")

        def looks() -> int:
            with psycopg.connect(warehouse_url) as conn:
                return conn.execute("select count(*) from ops.decisions where experiment_id = %s and airflow_run_id = %s",
                                    (experiment_id, run_id)).fetchone()[0]  # fmt: skip

        def sensor_state() -> dict:
            return stack.task_instances("promote__churn", run_id)["decide_when_ready"]

        stack.wait_for("the look sensor to defer", lambda: sensor_state()["state"] == "deferred", HANG_GUARD, interval=1)
        first = looks()
        try_number = sensor_state()["try_number"]
        assert first >= 1
        # new predictions arrive and are loaded: the trigger fires, the sensor resumes and looks again
        fresh = datetime.now(UTC)
        land(landing, "churn", "predictions", "fresh.jsonl", [prediction(spec, request_ts=(fresh - timedelta(minutes=5)).isoformat())
                                                              for _ in range(5)], day=fresh.date().isoformat(), now=fresh)  # fmt: skip
        assert ingest(spec, landing_root=str(landing), url=warehouse_url, now=fresh).rows_loaded == 5
        stack.wait_for("a second look after the new data", lambda: looks() > first, HANG_GUARD, interval=1)
        stack.wait_for("the sensor to wait again", lambda: sensor_state()["state"] == "deferred", HANG_GUARD, interval=1)
        assert sensor_state()["try_number"] == try_number  # resumed from the triggerer, not a retry
        with psycopg.connect(warehouse_url) as conn:
            status = conn.execute("select status from ops.experiments where experiment_id = %s", (experiment_id,)).fetchone()
        assert status == ("running",)
    finally:
        stack.stop()
    assert all(process.poll() is not None for process in stack.processes.values())
