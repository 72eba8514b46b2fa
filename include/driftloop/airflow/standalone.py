"""`make airflow`: the project's DAGs under a real Airflow 3 (api-server, scheduler, dag-processor,
triggerer: `airflow standalone`, LocalExecutor) on the demo's Airflow home and embedded warehouse.

What :func:`prepare` does before Airflow starts, each step safe to repeat:

1. the demo's environment (:func:`driftloop.airflow.local.configure_environment`: AIRFLOW_HOME =
   ``$DRIFTLOOP_HOME/airflow``, the dags folder, no examples, no telemetry) plus the small-machine
   settings of :data:`SMALL_MACHINE` (each only where the environment does not set it already);
2. the warehouse (DRIFTLOOP_WAREHOUSE_URL, else the embedded PostgreSQL in ``$DRIFTLOOP_HOME/pgdata``)
   is started, migrated and given the specs;
3. ``airflow db migrate``, then ``airflow_settings.yaml`` imported in its local flavour
   (:func:`local_settings`): the warehouse connection points at that warehouse, the landing-zone
   variable at the local landing zone, the MLflow variable at the local store; the notification
   connections and the pools as the file has them;
4. the admin password of the simple auth manager (written once, kept in
   ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``), printed with the URL;
5. the project's DAGs unpaused (new ones start unpaused: AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False),
   so files that land run the chain.

Then :func:`main` puts this interpreter's ``bin/`` first on PATH (standalone starts every component
as ``airflow ...`` from PATH) and replaces itself with ``airflow standalone``. The scheduler test
(tests/dags/test_scheduler.py) starts the same components one by one with the same settings.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

# Sized for a laptop or a CI runner with 2 cores (README "Airflow"). Every task is a Python process that
# parses its DAG file (~1-3 s) before it runs; the defaults (32 at once, 2 parsers, 30 s import timeout)
# start more processes than 2 cores can parse within the timeout, and tasks then fail at start-up.
SMALL_MACHINE: dict[str, str] = {
    # task processes at once, for the whole instance; the LocalExecutor starts this many workers
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
    # a task's start-up parse of its DAG file under load: a hang guard, not a speed limit
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
    # one parsing process, each file at most every 60 s, new files looked for every 60 s
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
    "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
    # one API server worker (it also serves the task processes' execution API)
    "AIRFLOW__API__WORKERS": "1",
}

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def configure() -> Path:
    """The demo's local Airflow environment plus :data:`SMALL_MACHINE`; returns AIRFLOW_HOME."""
    from driftloop.airflow.local import configure_environment

    for key, value in SMALL_MACHINE.items():
        os.environ.setdefault(key, value)
    # task processes reach the execution API on the API server: its URL follows the port
    port = os.environ.setdefault("AIRFLOW__API__PORT", "8080")
    os.environ.setdefault("AIRFLOW__API__HOST", "127.0.0.1")  # this machine only (the simple auth manager)
    os.environ.setdefault("AIRFLOW__API__BASE_URL", f"http://localhost:{port}")
    # the chain runs when files land: new DAGs start unpaused (unpause() does it for those the demo created)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
    return configure_environment()


def unpause_project_dags() -> list[str]:
    """Unpause the DAGs of the dags folder already in the metadata DB (``make demo``'s dag.test() runs
    create them paused); returns their ids."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    from driftloop.core.settings import dags_dir

    folder = str(dags_dir())
    with create_session() as session:
        ids = list(session.scalars(select(DagModel.dag_id).where(DagModel.fileloc.startswith(folder))))
        if ids:
            session.execute(update(DagModel).where(DagModel.dag_id.in_(ids)).values(is_paused=False))
    return sorted(ids)


def local_settings(settings, warehouse_url: str, landing: str, mlflow_uri: str):
    """airflow_settings.yaml's settings for this machine: the same connections, variables and pools, with
    the warehouse connection on ``warehouse_url`` and the landing / MLflow variables on local paths."""
    from driftloop.airflow.settings_import import parse_settings
    from driftloop.core import warehouse

    raw = settings.model_dump(mode="json")
    section = raw["airflow"]
    conn = json.loads(warehouse.airflow_connection_json(warehouse_url))
    local_conn = {"conn_id": "driftloop_warehouse", "conn_type": "postgres", "conn_host": conn["host"],
                  "conn_port": conn["port"], "conn_schema": conn["schema"], "conn_login": conn["login"],
                  "conn_password": conn["password"], "conn_extra": {"application_name": "driftloop-airflow"}}  # fmt: skip
    section["connections"] = [local_conn] + [c for c in section["connections"] if c["conn_id"] != "driftloop_warehouse"]
    local_values = {"driftloop_landing_root": landing, "driftloop_mlflow_tracking_uri": mlflow_uri}
    section["variables"] = [v for v in section["variables"] if v["variable_name"] not in local_values] + [
        {"variable_name": name, "variable_value": value} for name, value in local_values.items()
    ]
    return parse_settings(raw, source=f"{settings.source or 'airflow_settings.yaml'} (local)")


def import_local_settings(warehouse_url: str, settings_path: str | None = None, env: dict[str, str] | None = None):
    """Load airflow_settings.yaml (local flavour) into the Airflow home of ``env`` (default: this process's)."""
    import tempfile

    from driftloop.airflow.settings_import import import_into_airflow, load_settings
    from driftloop.core.settings import landing_root
    from driftloop.learn.registry import tracking_uri

    settings = local_settings(load_settings(settings_path), warehouse_url, landing_root(), tracking_uri())
    with tempfile.TemporaryDirectory(prefix="driftloop-local-settings-") as tmp:
        path = Path(tmp) / "airflow_settings.local.yaml"
        path.write_text(json.dumps(settings.model_dump(mode="json")))  # JSON is YAML
        os.chmod(path, 0o600)  # it holds the warehouse password, if it has one
        airflow_bin = str(Path(sys.executable).parent / "airflow")
        import_into_airflow(path, airflow_bin=airflow_bin, env=env, timeout=900)
    return settings


def admin_password(airflow_home: Path) -> str:
    """The simple auth manager's admin password, generated once (Airflow reads the same file)."""
    path = airflow_home / PASSWORDS_FILE
    passwords = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
    if "admin" not in passwords:
        passwords["admin"] = secrets.token_urlsafe(12)
        path.write_text(json.dumps(passwords) + "\n")
        os.chmod(path, 0o600)
    return passwords["admin"]


def prepare() -> dict[str, str]:
    """Steps 1-4 of the module docstring; returns what :func:`main` prints."""
    from driftloop.airflow.local import ensure_metadata_db
    from driftloop.core import warehouse

    airflow_home = configure()
    url = warehouse.resolve_url()
    warehouse.migrate(url)
    warehouse.sync_specs(url)
    ensure_metadata_db()
    settings = import_local_settings(url)
    unpaused = unpause_project_dags() if os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False" else []
    return {"airflow_home": str(airflow_home), "warehouse": warehouse.redact(url), "password": admin_password(airflow_home),
            "settings": f"{len(settings.connections)} connections, {len(settings.variables)} variables, "
                        f"{len(settings.pools)} pools from {settings.source}",
            "unpaused": ", ".join(unpaused) or "none yet (new DAGs start unpaused)"}  # fmt: skip


def main() -> None:
    info = prepare()
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    port = os.environ.get("AIRFLOW__API__PORT", "8080")
    small = ", ".join(f"{key.split('__', 2)[-1].lower()}={os.environ[key]}" for key in SMALL_MACHINE)
    print(f"Airflow home:  {info['airflow_home']}\nwarehouse:     {info['warehouse']}\nsettings:      {info['settings']}\n"
          f"small machine: {small}\nunpaused:      {info['unpaused']}\n\n  UI: http://localhost:{port}   user: admin   password: {info['password']}\n",
          flush=True)  # fmt: skip
    os.execv(os.path.join(bin_dir, "airflow"), ["airflow", "standalone"])


if __name__ == "__main__":
    main()
