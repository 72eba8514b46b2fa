"""retrain__<model>: train a challenger when marts.retrain_signals says so, or when asked.

A sensor in reschedule mode (no worker slot held while it waits) pokes the gate every
retraining.poke_interval: it passes when a trigger fires (volume, degradation, drift, schedule)
outside the cool-down on signals newer than the last training, or at once for a manual run with a
`reason` (Trigger DAG w/ config in the UI). If nothing fires within retraining.sensor_timeout the
run ends skipped. The fired trigger and its evidence go to train_challenger, which registers the
challenger in MLflow (alias `challenger`; the champion is never touched) and emits the challenger Asset.
Wiring only: the work is driftloop.learn.retrain (see include/driftloop/airflow/tasks.py).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from driftloop.airflow.assets import challenger_asset
from driftloop.airflow.tasks import dag_defaults
from driftloop.core.spec import ModelSpec, load_specs


def build_retrain_dag(spec: ModelSpec):
    config = spec.retraining

    @dag(
        dag_id=f"retrain__{spec.name}",
        description=f"Train and register a challenger of {spec.name} when a retraining trigger fires",
        schedule=config.check_schedule,
        **dag_defaults(spec.owner),
        params={
            "reason": Param(
                None,
                type=["null", "string"],
                description="Set it to retrain now, whatever the triggers say (the reason is recorded).",
            )
        },
        tags=["driftloop", "retrain", spec.name],
        doc_md=__doc__,
    )
    def retrain_dag():
        @task.sensor(
            mode="reschedule",
            poke_interval=config.poke_interval.total_seconds(),
            timeout=config.sensor_timeout.total_seconds(),
            soft_fail=True,
        )
        def wait_for_trigger(params: dict | None = None):
            from airflow.sdk import PokeReturnValue

            from driftloop.airflow.tasks import retrain_gate

            fired = retrain_gate(spec.name, (params or {}).get("reason"))
            return PokeReturnValue(is_done=fired is not None, xcom_value=fired)

        @task(outlets=[challenger_asset(spec.name)])
        def train_challenger(fired: dict, dag_run=None, outlet_events=None, **context) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from driftloop.airflow.tasks import run_clock, run_retrain

            result = run_retrain(spec.name, fired, run_key=f"{dag_run.dag_id}/{dag_run.run_id}", as_of=run_clock({**context, "dag_run": dag_run}))
            if result["status"] not in ("succeeded", "done"):
                raise AirflowSkipException(result.get("message") or result["status"])
            outlet_events[challenger_asset(spec.name)].extra = {
                "model_version": result["model_version"],
                "retrain_run_id": result.get("retrain_run_id"),
                "mlflow_run_id": result.get("mlflow_run_id"),
                "trigger": fired.get("trigger"),
            }
            return result

        train_challenger(wait_for_trigger())

    return retrain_dag()


for _spec in load_specs().values():
    globals()[f"retrain__{_spec.name}"] = build_retrain_dag(_spec)
