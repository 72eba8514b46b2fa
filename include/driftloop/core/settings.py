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
