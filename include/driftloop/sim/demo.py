"""`make demo`: one command, a real warehouse, real files, the real ingest DAG.

1. the warehouse (embedded pgserver unless DRIFTLOOP_WAREHOUSE_URL) is started and migrated;
2. a simulated day of predictions and feedback for the example model lands in the landing zone,
   plus the catalogue of bad inputs;
3. ingest__<model> runs with dag.test(); then the prediction that one early label was waiting
   for arrives, and the DAG runs again;
4. what was loaded, rejected (and why) and alerted is printed from the warehouse;
5. the first champion is trained on simulated example data and registered in MLflow (its training
   data is the reference profile), profile__<model> profiles the day's windows and the metrics DAG
   builds the dbt marts (one `dbt build`); a sample of each mart is printed;
6. marts.retrain_signals is shown, and retrain__<model> runs with a manual reason: a challenger is
   trained on the day's labelled traffic and registered next to the champion.

Later work grows this into the whole closed loop; it stays one command. Rerunning it is safe: the
files are deterministic and the manifest loads each one once.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, date, datetime, timedelta

from driftloop.airflow import local as local_airflow
from driftloop.core import warehouse
from driftloop.core.settings import landing_root
from driftloop.core.spec import get_spec
from driftloop.monitor.reference import has_reference
from driftloop.report import (
    format_marts,
    format_model_status,
    format_retrain,
    format_signals,
    format_summary,
    ingest_summary,
    marts_sample,
    model_status,
)


def _say(message: str) -> None:
    print(message, flush=True)


def run_demo(
    model_name: str = "churn", day: date | None = None, rows_per_hour: int = 200, seed: int = 7, with_metrics: bool = True,
    now: datetime | None = None,
) -> dict:
    """``now`` is the demo's clock: labels have arrived up to it, and every DAG runs with it as its logical
    date, so the story is the same whatever the wall clock says. Default: the wall clock, and ``day``
    yesterday; with only ``day`` given, noon of the day after it."""
    from driftloop.sim.faults import land_awaiting_prediction, write_fault_files
    from driftloop.sim.world import Scenario, simulate

    started = time.perf_counter()
    spec = get_spec(model_name)
    if now is None:
        now = datetime.now(UTC) if day is None else datetime(day.year, day.month, day.day, 12, tzinfo=UTC) + timedelta(days=1)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    day = day or (now - timedelta(days=1)).date()
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)

    _say("== 1. warehouse")
    url = warehouse.resolve_url()
    applied = warehouse.migrate(url)
    warehouse.sync_specs(url)
    _say(f"   {warehouse.redact(url)}  (migrations applied now: {len(applied)})")

    _say(f"== 2. a simulated day ({day}) of {model_name} traffic lands, with bad input mixed in")
    root = landing_root()
    scenario = Scenario(rows_per_hour=rows_per_hour, seed=seed)
    simulated = simulate(spec, root, day_start, day_start + timedelta(days=1), scenario, now=now)
    faults = write_fault_files(spec, root, day.isoformat(), now)
    # They "landed" during the simulated day: old enough that ingestion treats them as complete
    # (a fresh file with a cut last line or a cut gzip would be taken for one still being written).
    landed_at = (day_start + timedelta(days=1)).timestamp()
    for paths in faults.values():
        for path in paths:
            if os.path.exists(path):
                os.utime(path, (landed_at, landed_at))
    _say(
        f"   {simulated.predictions} predictions in {len(simulated.prediction_files)} files, "
        f"{simulated.feedback} labels so far in {len(simulated.feedback_files)} files, "
        f"{len(faults) - 1} kinds of bad input  ->  {root}"
    )

    # The DAG's tasks read the warehouse and landing zone from the environment, like a deployment.
    os.environ["DRIFTLOOP_WAREHOUSE_URL"] = url
    os.environ["DRIFTLOOP_LANDING"] = str(root)
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the demo prints its own story
    os.environ.setdefault("DBT_QUIET", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its INFO / pickling notes would drown the story
    local_airflow.configure_environment()

    _say(f"== 3. ingest__{model_name} runs (dag.test)")
    clock = {"now": now.isoformat()}  # the run conf that states the demo's clock to ingest__<model>
    first = local_airflow.run_dag(f"ingest__{model_name}", run_conf=clock, logical_date=now)
    _say(f"   run {first.run_id}: {first.state}  {local_airflow.task_states(first)}")
    waiting = ingest_summary(url, model_name)["feedback_awaiting_prediction"]
    _say(f"   feedback waiting for a prediction that has not landed yet: {waiting}")
    land_awaiting_prediction(spec, root, day.isoformat(), now)
    second = local_airflow.run_dag(f"ingest__{model_name}", run_conf=clock, logical_date=now)
    _say(f"   a late prediction lands; run {second.run_id}: {second.state}  {local_airflow.task_states(second)}")

    _say("== 4. what the warehouse holds now\n")
    summary = ingest_summary(url, model_name)
    _say(format_summary(summary))

    if with_metrics:
        _say("\n== 5. profiles (whylogs) and the metrics marts (dbt build)")
        from driftloop.learn import registry
        from driftloop.sim import examples

        booted = examples.bootstrap(url, spec, training_end=day_start - timedelta(days=1), seed=seed, now=now)
        _say(f"   champion: {model_name} version {booted['model_version']} in MLflow ({registry.tracking_uri()}), "
             f"{'trained now on simulated example data' if booted['status'] == 'succeeded' else 'already there'}; "
             "its training data is the reference profile")  # fmt: skip
        version = scenario.model_version
        if booted["model_version"] != version and not has_reference(url, model_name, version):
            # the simulated traffic says version 1 served it; a registry from earlier runs may hold more
            examples.store_simulated_reference(url, spec, version, training_end=day_start - timedelta(days=1), seed=seed)
        profiled = local_airflow.run_dag(f"profile__{model_name}", run_conf=clock, logical_date=now)
        _say(f"   profile__{model_name}: {profiled.state}")
        os.environ["AIRFLOW_CONN_DRIFTLOOP_WAREHOUSE"] = warehouse.airflow_connection_json(url)
        built = local_airflow.run_dag("metrics", run_conf=clock, logical_date=now)
        states = local_airflow.task_states(built)
        _say(f"   metrics: {built.state} ({sum(s == 'success' for s in states.values())}/{len(states)} tasks)\n")
        _say(format_marts(marts_sample(url, model_name, day_start)))

        _say(f"\n== 6. retraining: what marts.retrain_signals says, then a manual run of retrain__{model_name}")
        _say(f"   signals: {format_signals(url, model_name)}")
        trained = local_airflow.run_dag(f"retrain__{model_name}", run_conf={"reason": "make demo: show a retrain", **clock},
                                        logical_date=now)  # fmt: skip
        _say(f"   retrain__{model_name}: {trained.state}  {local_airflow.task_states(trained)}")
        _say(format_retrain(url, model_name))
        _say(f"\n== 7. driftloop status --model {model_name}\n")
        _say(format_model_status(model_status(url, model_name)))
    _say(f"\nDone in {time.perf_counter() - started:.0f}s. Query it yourself: psql \"{warehouse.redact(url)}\"")
    return {"runs": [str(first.state), str(second.state)], "summary": summary}
