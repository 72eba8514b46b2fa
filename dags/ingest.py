"""ingest__<model>: load new landed predictions and feedback into the warehouse, one DAG per spec.

"Not in the future" and "still being written" are judged on the wall clock when the task runs (a
scheduled run that starts late must not reject what landed after its interval); a replay or a
simulation states its clock in the run conf: {"now": "2026-11-02T12:00:00+00:00"}.
Wiring only: the work is driftloop.ingest.loader (see include/driftloop/airflow/tasks.py).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from driftloop.airflow.assets import raw_asset
from driftloop.airflow.tasks import dag_defaults
from driftloop.core.spec import ModelSpec, load_specs


def build_ingest_dag(spec: ModelSpec):
    @dag(
        dag_id=f"ingest__{spec.name}",
        description=f"Load landed predictions and feedback of {spec.name} into raw (exactly once)",
        schedule=spec.ingest.schedule,
        **dag_defaults(spec.owner),
        tags=["driftloop", "ingest", spec.name],
        doc_md=__doc__,
    )
    def ingest_dag():
        @task
        def ingest_predictions(run_id: str | None = None, **context) -> dict:
            from driftloop.airflow.tasks import run_ingest, stated_clock

            return run_ingest(spec.name, "predictions", run_id or "manual", now=stated_clock(context))

        @task
        def ingest_feedback(run_id: str | None = None, **context) -> dict:
            from driftloop.airflow.tasks import run_ingest, stated_clock

            return run_ingest(spec.name, "feedback", run_id or "manual", now=stated_clock(context))

        @task(outlets=[raw_asset(spec.name)])
        def publish_raw(predictions: dict, feedback: dict, outlet_events=None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            loaded = predictions["rows_loaded"] + feedback["rows_loaded"]
            if loaded == 0:
                raise AirflowSkipException("no new rows: downstream DAGs have nothing to do")
            outlet_events[raw_asset(spec.name)].extra = {
                "predictions_loaded": predictions["rows_loaded"],
                "feedback_loaded": feedback["rows_loaded"],
                "rows_rejected": predictions["rows_rejected"] + feedback["rows_rejected"],
            }
            return {"rows_loaded": loaded}

        predictions = ingest_predictions()
        feedback = ingest_feedback()
        predictions >> feedback  # feedback after predictions: most labels then join at once
        publish_raw(predictions, feedback)

    return ingest_dag()


for _spec in load_specs().values():
    globals()[f"ingest__{_spec.name}"] = build_ingest_dag(_spec)
