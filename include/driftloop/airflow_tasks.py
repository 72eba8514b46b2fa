"""The glue between Airflow and the package: each function takes explicit arguments and calls one
piece of driftloop. DAG files import this module only inside task callables (it pulls in pandas)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

LANDING_VARIABLE = "driftloop_landing_root"


def landing_root_from_airflow() -> str:
    """The `driftloop_landing_root` Variable, else DRIFTLOOP_LANDING / the default."""
    from airflow.sdk import Variable

    from driftloop.settings import landing_root

    try:
        value = Variable.get(LANDING_VARIABLE, default=None)
    except Exception:  # noqa: BLE001 - no metadata DB / variable backend: use the environment default
        value = None
    return landing_root(value)


def run_ingest(model_name: str, kind: str, run_id: str) -> dict[str, Any]:
    from driftloop import warehouse
    from driftloop.ingest import ingest
    from driftloop.spec import get_spec

    url = warehouse.resolve_url(use_airflow=True)
    warehouse.migrate(url)  # a no-op when applied; lets a new warehouse work without a separate step
    warehouse.sync_specs(url)
    result = ingest(get_spec(model_name), landing_root=landing_root_from_airflow(), url=url, run_id=run_id, kinds=[kind])
    failed = [f.path for f in result.files if f.status == "failed"]
    summary = {
        "kind": kind,
        "files": len(result.files),
        "rows_loaded": result.rows_loaded,
        "rows_rejected": result.rows_rejected,
        "files_failed": failed,
        "files_in_progress": [f.path for f in result.files if f.status == "in_progress"],
    }
    log.info("ingest %s %s: %s", model_name, kind, summary)
    return summary


def on_task_failure(context: dict[str, Any]) -> None:
    """Task failure callback: raise an alert in the outbox (deduplicated per task try)."""
    from driftloop import warehouse
    from driftloop.alerts import enqueue_alert

    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = context.get("run_id") or getattr(ti, "run_id", "?")
    error = context.get("exception")
    try:
        import psycopg

        with psycopg.connect(warehouse.resolve_url(use_airflow=True)) as conn:
            enqueue_alert(
                conn,
                dedup_key=f"task-failed:{dag_id}:{task_id}:{run_id}",
                source="airflow",
                severity="warning",
                summary=f"{dag_id}.{task_id} failed in {run_id}: {type(error).__name__ if error else 'error'}",
                details={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "error": str(error)[:2000]},
            )
    except Exception:  # a broken warehouse must not hide the original failure
        log.exception("could not record the failure of %s.%s in the alert outbox", dag_id, task_id)
