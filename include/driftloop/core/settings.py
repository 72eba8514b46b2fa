"""Where things live. Every path has an environment override; nothing here imports Airflow."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # include/driftloop
INCLUDE_DIR = PACKAGE_DIR.parent
PROJECT_DIR = INCLUDE_DIR.parent


def home() -> Path:
    """Local state: embedded warehouse, Airflow home of the demo, MLflow store, landing zone."""
    return Path(os.environ.get("DRIFTLOOP_HOME") or PROJECT_DIR / ".driftloop").resolve()


def specs_dir() -> Path:
    return Path(os.environ.get("DRIFTLOOP_SPECS_DIR") or INCLUDE_DIR / "specs")


def migrations_dir() -> Path:
    return INCLUDE_DIR / "sql" / "migrations"


def dags_dir() -> Path:
    return PROJECT_DIR / "dags"


def landing_root(explicit: str | os.PathLike[str] | None = None) -> str:
    """The landing zone root: an explicit value, `DRIFTLOOP_LANDING`, or `<home>/landing`.

    Inside Airflow tasks the DAG passes the `driftloop_landing_root` Variable as `explicit`.
    Any fsspec URL (s3://, gs://) works; a plain path means the local file system.
    """
    value = explicit or os.environ.get("DRIFTLOOP_LANDING") or home() / "landing"
    return str(value)


def airflow_base_url() -> str:
    """Where people open the Airflow UI (links in alerts): ``DRIFTLOOP_AIRFLOW_URL``, else Airflow's own
    ``[api] base_url`` setting (``AIRFLOW__API__BASE_URL``), else the local default."""
    value = os.environ.get("DRIFTLOOP_AIRFLOW_URL") or os.environ.get("AIRFLOW__API__BASE_URL") or "http://localhost:8080"
    return value.rstrip("/")


#: The "Model health" page of a model in the Airflow UI (the plugin in plugins/ serves it).
MODEL_PAGE_PATH = "/driftloop/models/{model_name}"


def model_page_url(model_name: str) -> str:
    return airflow_base_url() + MODEL_PAGE_PATH.format(model_name=model_name)


def dag_run_url(dag_id: str, run_id: str) -> str:
    from urllib.parse import quote

    return f"{airflow_base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
