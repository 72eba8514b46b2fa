"""`make airflow`'s preparation (driftloop.airflow.standalone), without starting Airflow."""

from __future__ import annotations

import json
import os

from driftloop.airflow import standalone
from driftloop.airflow.settings_import import load_settings
from driftloop.core.settings import PROJECT_DIR


def test_local_settings_point_the_warehouse_and_paths_here_and_keep_the_rest():
    shipped = load_settings(PROJECT_DIR / "airflow_settings.yaml")

    local = standalone.local_settings(shipped, "postgresql://driftloop:s3cret@/driftloop?host=/tmp/dl/pgdata",
                                      "/tmp/dl/landing", "sqlite:////tmp/dl/mlflow/mlflow.db")  # fmt: skip

    conn = local.connections_json()["driftloop_warehouse"]
    assert (conn["conn_type"], conn["host"], conn["login"], conn["password"], conn["schema"]) == (
        "postgres", "/tmp/dl/pgdata", "driftloop", "s3cret", "driftloop")  # fmt: skip
    assert local.variable("driftloop_landing_root") == "/tmp/dl/landing"
    assert local.variable("driftloop_mlflow_tracking_uri") == "sqlite:////tmp/dl/mlflow/mlflow.db"
    others = {c.conn_id for c in shipped.connections} - {"driftloop_warehouse"}
    assert {cid: local.connections_json()[cid] for cid in others} == {cid: shipped.connections_json()[cid] for cid in others}
    assert local.pools_json() == shipped.pools_json()


def test_admin_password_is_generated_once_and_kept(tmp_path):
    first = standalone.admin_password(tmp_path)
    assert len(first) >= 16 and standalone.admin_password(tmp_path) == first
    stored = json.loads((tmp_path / standalone.PASSWORDS_FILE).read_text())
    assert stored == {"admin": first}  # the file Airflow's simple auth manager reads
    assert (tmp_path / standalone.PASSWORDS_FILE).stat().st_mode & 0o077 == 0


def test_small_machine_settings_are_defaults_the_environment_can_override(monkeypatch, tmp_path):
    environ = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW__")}
    environ.update({"DRIFTLOOP_HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow"),
                    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "3", "AIRFLOW__API__PORT": "18123"})  # fmt: skip
    monkeypatch.setattr(os, "environ", environ)  # configure() writes the process environment: a copy here

    standalone.configure()

    assert environ["AIRFLOW__CORE__PARALLELISM"] == standalone.SMALL_MACHINE["AIRFLOW__CORE__PARALLELISM"]
    assert environ["AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT"] == "180"
    assert environ["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == "3"  # the environment wins
    assert environ["AIRFLOW__API__BASE_URL"] == "http://localhost:18123"  # task processes find the execution API
    assert environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"  # landed files run the chain
