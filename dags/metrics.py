"""metrics: the dbt metrics layer (staging -> intermediate -> marts), one Airflow task per dbt model
through astronomer-cosmos, dbt tests included (`dbt build` per model). Runs when any model's raw
data or profiles changed; emits the marts Asset.

Wiring only. Parsing is cheap: cosmos renders the task graph from dbt_project/target/manifest.json
(`make dbt-manifest` writes it); the dbt profile comes from the `driftloop_warehouse` connection.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.sdk import dag, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior
from cosmos.profiles import PostgresUserPasswordProfileMapping

from driftloop.airflow.assets import marts_asset, metrics_inputs
from driftloop.airflow.tasks import dag_defaults
from driftloop.core.settings import PROJECT_DIR
from driftloop.core.spec import load_specs

DBT_PROJECT = PROJECT_DIR / "dbt_project"
MANIFEST = DBT_PROJECT / "target" / "manifest.json"


@dag(
    dag_id="metrics",
    description="dbt build of the metrics marts (windowed quality, latency, label coverage)",
    schedule=metrics_inputs(load_specs()),
    **dag_defaults(),
    tags=["driftloop", "metrics", "dbt"],
    doc_md=__doc__,
)
def metrics():
    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(dbt_project_path=DBT_PROJECT, manifest_path=MANIFEST),
        profile_config=ProfileConfig(
            profile_name="driftloop",
            target_name="warehouse",
            profile_mapping=PostgresUserPasswordProfileMapping(conn_id="driftloop_warehouse", profile_args={"schema": "public"}),
        ),
        execution_config=ExecutionConfig(
            dbt_executable_path=str(Path(sys.executable).parent / "dbt"), invocation_mode=InvocationMode.DBT_RUNNER
        ),
        render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.BUILD, emit_datasets=False),
        # the build's clock for label maturity: the clock the run states (a replay, the demo), else the end
        # of its data interval; never the wall clock
        operator_args={"vars": {"as_of": "{{ (dag_run.conf or {}).get('now') or data_interval_end }}"},
                       "install_deps": False},  # fmt: skip
        default_args={"owner": "driftloop", "retries": 2},
    )

    @task(outlets=[marts_asset()])
    def publish_marts() -> None:
        """Downstream DAGs (monitoring, retraining) schedule on this."""

    @task
    def source_freshness() -> dict:
        """Fails, and so alerts, when raw data stopped arriving (the sources' error_after)."""
        from driftloop.airflow.tasks import run_source_freshness

        return run_source_freshness()

    dbt >> publish_marts()
    source_freshness()


metrics()
