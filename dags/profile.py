"""profile__<model>: whylogs profiles of the windows that new raw data touched, one DAG per spec.

Runs on the model's raw Asset; writes profiles.whylogs_profiles (hourly, merged daily),
column_summaries and column_bins (on the reference's bin edges); emits the profiles Asset.
Wiring only: the work is driftloop.monitor.profiling (see include/driftloop/airflow/tasks.py).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from driftloop.airflow.assets import profiles_asset, raw_asset
from driftloop.airflow.tasks import dag_defaults
from driftloop.core.spec import ModelSpec, load_specs


def build_profile_dag(spec: ModelSpec):
    @dag(
        dag_id=f"profile__{spec.name}",
        description=f"whylogs profiles of {spec.name}'s closed windows touched by new raw data",
        schedule=[raw_asset(spec.name)],
        **dag_defaults(spec.owner),
        tags=["driftloop", "profile", spec.name],
        doc_md=__doc__,
    )
    def profile_dag():
        @task(outlets=[profiles_asset(spec.name)])
        def profile_new_windows(**context) -> dict:
            from driftloop.airflow.tasks import run_clock, run_profiling

            # windows close by the run's clock, not the wall clock
            return run_profiling(spec.name, now=run_clock(context))

        profile_new_windows()

    return profile_dag()


for _spec in load_specs().values():
    globals()[f"profile__{_spec.name}"] = build_profile_dag(_spec)
