"""Test session set-up: a private DRIFTLOOP_HOME and Airflow home, and a real PostgreSQL.

The warehouse is the embedded `pgserver` default (what a fresh machine has), or the server named by
`DRIFTLOOP_TEST_WAREHOUSE_URL` (an admin URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres).
Each test that asks for `warehouse_url` gets its own database, cloned from a migrated template.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

# Environment first: Airflow reads its configuration when it is first imported.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="dl-tests-"))
PROJECT_DIR = Path(__file__).resolve().parent.parent
os.environ["DRIFTLOOP_HOME"] = str(_SESSION_DIR / "home")
os.environ.pop("DRIFTLOOP_WAREHOUSE_URL", None)
os.environ.pop("DRIFTLOOP_LANDING", None)
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT_DIR / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")

import psycopg  # noqa: E402
import pytest  # noqa: E402
from psycopg import sql  # noqa: E402

from driftloop.core import warehouse  # noqa: E402

logging.getLogger("pgserver").setLevel(logging.WARNING)  # its atexit logging races pytest closing streams

TEMPLATE = "driftloop_test_template"


_with_database = warehouse.with_database


@pytest.fixture(scope="session")
def admin_url() -> str:
    """An admin URL on a real PostgreSQL server with a migrated template database."""
    url = os.environ.get("DRIFTLOOP_TEST_WAREHOUSE_URL") or warehouse.start_embedded(_SESSION_DIR / "pg", "postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE)))
    warehouse.migrate(_with_database(url, TEMPLATE))
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(TEMPLATE)))
    if not os.environ.get("DRIFTLOOP_TEST_WAREHOUSE_URL"):
        warehouse.stop_embedded(_SESSION_DIR / "pg")


def new_database(admin: str, *, migrated: bool = True) -> str:
    return warehouse.create_database(admin, f"dl_test_{uuid.uuid4().hex[:12]}", TEMPLATE if migrated else None)


def drop_database(admin: str, url: str) -> None:
    warehouse.drop_database(admin, url)


@pytest.fixture
def warehouse_url(admin_url: str) -> str:
    """A fresh, migrated warehouse database for one test."""
    url = new_database(admin_url)
    yield url
    drop_database(admin_url, url)


@pytest.fixture
def empty_database_url(admin_url: str) -> str:
    """A fresh database with no migrations applied."""
    url = new_database(admin_url, migrated=False)
    yield url
    drop_database(admin_url, url)


AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata DB (SQLite in the session's AIRFLOW_HOME)."""
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    done = subprocess.run([AIRFLOW, "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


@pytest.fixture
def mlflow_store(tmp_path):
    """A fresh MLflow store (SQLite + artifacts) in the test's tmp folder, as MLFLOW_TRACKING_URI."""
    from training_data import restore_mlflow_store, use_mlflow_store

    previous = use_mlflow_store(tmp_path / "mlflow")
    yield tmp_path / "mlflow"
    restore_mlflow_store(previous)


@pytest.fixture
def spec():
    """The example model's spec (a test module that needs another one defines its own ``spec``)."""
    from driftloop.core.spec import get_spec

    return get_spec("churn")


@pytest.fixture
def root(tmp_path):
    """An empty landing zone in the test's tmp folder."""
    return tmp_path / "landing"


@pytest.fixture
def external_specs(tmp_path, monkeypatch):
    """A specs folder with the example model and a model driftloop did not train."""
    import shutil

    from external_data import EXTERNAL_SPEC

    from driftloop.core.settings import specs_dir

    folder = tmp_path / "specs"
    folder.mkdir()
    shutil.copy(specs_dir() / "churn.yaml", folder / "churn.yaml")
    (folder / "external.yaml").write_text(EXTERNAL_SPEC)
    monkeypatch.setenv("DRIFTLOOP_SPECS_DIR", str(folder))
    return folder
