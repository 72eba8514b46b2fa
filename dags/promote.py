"""promote__<model>: a new challenger faces the offline gate, then live traffic, then a decision, then
a watch of the new champion.

Runs on the model's challenger Asset (emitted by retrain__<model>). offline_gate scores champion and
challenger on the challenger's holdout (spec promotion.offline_gate); a failure removes the
challenger alias and ends the run (the rest is skipped). start_experiment opens the experiment and
gives the challenger its first share in ops.traffic_allocation (what the serving router reads):
a canary ramp, or Thompson sampling / epsilon-greedy (promotion.online.strategy). decide_when_ready is
a deferrable sensor: it looks, then waits in the triggerer until promotion.online.poke_interval has
passed and new predictions or labels were loaded; each look decides with the always-valid test
(driftloop.promote.decision), records it and applies ramps / reallocations; it finishes on promote (alias
champion moves, 100 % to it), reject, halt (sample-ratio mismatch) or inconclusive (max duration).
watch_new_champion then looks at a promoted champion the same way for promotion.watch.window and
rolls it back when it degrades (skipped when nothing was promoted). Every step is in ops.decisions
and the alert outbox.
Wiring only: the work is driftloop.promote.gate and driftloop.promote.experiments (include/driftloop/airflow/tasks.py,
include/driftloop/airflow/sensors.py).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from driftloop.airflow.assets import challenger_asset
from driftloop.airflow.sensors import ExperimentLookSensor
from driftloop.airflow.tasks import dag_defaults
from driftloop.core.spec import ModelSpec, load_specs


def build_promote_dag(spec: ModelSpec):
    online, watch = spec.promotion.online, spec.promotion.watch

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

            from driftloop.airflow.tasks import run_offline_gate

            gate = run_offline_gate(spec.name, run_id or "manual")
            if not gate["passed"]:
                raise AirflowSkipException(gate["reason"])
            return gate

        @task
        def start_experiment(gate: dict, run_id: str | None = None, **context) -> str:
            from driftloop.airflow.tasks import run_clock
            from driftloop.airflow.tasks import start_experiment as start

            return start(spec.name, gate, run_id or "manual", now=run_clock(context))

        decide_when_ready = ExperimentLookSensor(
            task_id="decide_when_ready", model_name=spec.name, phase="experiment",
            poke_interval=online.poke_interval, deadline_grace=online.poke_interval * 2,
        )  # fmt: skip
        watch_new_champion = ExperimentLookSensor(
            task_id="watch_new_champion", model_name=spec.name, phase="watch",
            poke_interval=watch.poke_interval, deadline_grace=watch.poke_interval * 2,
        )  # fmt: skip

        start_experiment(offline_gate()) >> decide_when_ready >> watch_new_champion

    return promote_dag()


for _spec in load_specs().values():
    globals()[f"promote__{_spec.name}"] = build_promote_dag(_spec)
