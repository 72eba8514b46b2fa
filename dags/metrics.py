"""metrics: the dbt metrics layer (staging -> intermediate -> marts) in one `dbt build` (models, unit
tests and data tests, on dbt's threads), then the marts Asset. Runs when any model's raw data or
profiles changed.

One task, one dbt process: a task per dbt model (cosmos' default) starts a Python process per model
that parses this file and starts dbt again, which a small machine cannot afford. Model-level results
stay visible: dbt_build logs a line per node (status, seconds) and returns them (XCom "return_value");
a failure names every failing node. The build's clock for label maturity (dbt's `as_of`) is the
clock the run states (a replay, the demo), else the end of its data interval; never the wall clock.
The warehouse comes from the `driftloop_warehouse` connection (or DRIFTLOOP_WAREHOUSE_URL).
Wiring only: the work is driftloop.monitor.dbt_runner (see include/driftloop/airflow/tasks.py).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from driftloop.airflow.assets import marts_asset, metrics_inputs
from driftloop.airflow.tasks import dag_defaults
from driftloop.core.spec import load_specs


@dag(
    dag_id="metrics",
    description="dbt build of the metrics marts (windowed quality, latency, label coverage, drift)",
    schedule=metrics_inputs(load_specs()),
    **dag_defaults(),
    tags=["driftloop", "metrics", "dbt"],
    doc_md=__doc__,
)
def metrics():
    @task
    def dbt_build(**context) -> dict:
        from driftloop.airflow.tasks import run_clock, run_metrics_build

        return run_metrics_build(as_of=run_clock(context))

    @task(outlets=[marts_asset()])
    def publish_marts(build: dict) -> dict:
        """Downstream DAGs (monitoring, retraining) schedule on this."""
        return {"nodes": len(build["nodes"]), "seconds": build["seconds"]}

    @task
    def source_freshness() -> dict:
        """Fails, and so alerts, when raw data stopped arriving (the sources' error_after)."""
        from driftloop.airflow.tasks import run_source_freshness

        return run_source_freshness()

    publish_marts(dbt_build())
    source_freshness()


metrics()
