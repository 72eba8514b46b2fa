"""stop_experiment__<model>: a person stops the model's running live experiment.

Triggered by hand (the Model health page's "Stop the experiment" button leads here) with a
required ``reason``: the champion gets all traffic back, the experiment ends ``halted`` with the
reason and who triggered it in ops.decisions, the challenger alias goes, people are told; the
running promote__<model> run sees the phase ended at its next look and finishes. Nothing running:
the run says so and succeeds. Wiring only: driftloop.promote.experiments.stop_experiment.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from driftloop.airflow.tasks import dag_defaults
from driftloop.core.spec import ModelSpec, load_specs


def build_stop_dag(spec: ModelSpec):
    @dag(
        dag_id=f"stop_experiment__{spec.name}",
        description=f"Stop {spec.name}'s running live experiment (the champion keeps all traffic)",
        schedule=None,
        **dag_defaults(spec.owner),
        params={"reason": Param(type="string", minLength=3, description="Why the experiment stops (recorded).")},
        tags=["driftloop", "promote", spec.name],
        doc_md=__doc__,
    )
    def stop_dag():
        @task
        def stop(params: dict | None = None, dag_run=None, **context) -> dict:
            from driftloop.airflow.tasks import run_clock, stop_running_experiment

            who = getattr(dag_run, "triggering_user_name", None) or "a person"
            return stop_running_experiment(spec.name, (params or {}).get("reason") or "", by=who,
                                           now=run_clock({**context, "dag_run": dag_run}),
                                           run_id=getattr(dag_run, "run_id", None))  # fmt: skip

        stop()

    return stop_dag()


for _spec in load_specs().values():
    globals()[f"stop_experiment__{_spec.name}"] = build_stop_dag(_spec)
