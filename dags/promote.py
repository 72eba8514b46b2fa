"""promote__<model>: a new challenger faces the offline gate, then live traffic, then a decision.

Runs on the model's challenger Asset (emitted by retrain__<model>). offline_gate scores champion and
challenger on the challenger's holdout (spec promotion.offline_gate); a failure removes the
challenger alias and ends the run (the rest is skipped). start_experiment opens the experiment and
gives the challenger the first canary share in ops.traffic_allocation (what the serving router
reads). decide_when_ready looks every promotion.online.poke_interval in reschedule mode (no worker
slot held between looks): each look gathers the evidence, decides with the always-valid test
(driftloop.decision), records it and applies ramps; it finishes on promote (alias champion moves,
100 % to it), reject, halt (sample-ratio mismatch) or inconclusive (max duration). Every step is in
ops.decisions and the alert outbox.
Wiring only: the work is driftloop.promotion and driftloop.experiments (include/driftloop/airflow_tasks.py).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from driftloop.airflow_tasks import dag_defaults
from driftloop.assets import challenger_asset
from driftloop.spec import ModelSpec, load_specs


def build_promote_dag(spec: ModelSpec):
    online = spec.promotion.online

    @dag(
        dag_id=f"promote__{spec.name}",
        description=f"Offline gate, live experiment and promote / reject of {spec.name}'s challenger",
        schedule=[challenger_asset(spec.name)],
        **dag_defaults(spec.owner),
        tags=["driftloop", "promote", spec.name],
        doc_md=__doc__,
    )
    def promote_dag():
        @task
        def offline_gate(run_id: str | None = None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from driftloop.airflow_tasks import run_offline_gate

            gate = run_offline_gate(spec.name, run_id or "manual")
            if not gate["passed"]:
                raise AirflowSkipException(gate["reason"])
            return gate

        @task
        def start_experiment(gate: dict, run_id: str | None = None) -> str:
            from driftloop.airflow_tasks import start_experiment as start

            return start(spec.name, gate, run_id or "manual")

        @task.sensor(
            mode="reschedule",
            poke_interval=online.poke_interval.total_seconds(),
            timeout=(online.max_duration + online.poke_interval * 2).total_seconds(),
        )
        def decide_when_ready(experiment_id: str, run_id: str | None = None):
            from airflow.sdk import PokeReturnValue

            from driftloop.airflow_tasks import experiment_look

            ended = experiment_look(spec.name, run_id or "manual")
            return PokeReturnValue(is_done=ended is not None, xcom_value={"experiment_id": experiment_id, **(ended or {})})

        decide_when_ready(start_experiment(offline_gate()))

    return promote_dag()


for _spec in load_specs().values():
    globals()[f"promote__{_spec.name}"] = build_promote_dag(_spec)
