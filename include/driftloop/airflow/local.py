"""Run the project's DAGs in-process with `dag.test()` on a local Airflow (SQLite under DRIFTLOOP_HOME).

Used by the demo and the e2e tests; the scheduler runs the same DAGs in a real deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from driftloop.core.settings import dags_dir, home

_MIGRATED_MARKER = ".driftloop-db-migrated"


def configure_environment() -> Path:
    """Defaults for a local Airflow; must run before Airflow is first imported. Returns AIRFLOW_HOME."""
    airflow_home = Path(os.environ.setdefault("AIRFLOW_HOME", str(home() / "airflow")))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(dags_dir()))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    airflow_home.mkdir(parents=True, exist_ok=True)
    return airflow_home


def ensure_metadata_db() -> None:
    """`airflow db migrate` once per Airflow home and version (about 15 s the first time)."""
    airflow_home = configure_environment()
    import airflow

    marker = airflow_home / _MIGRATED_MARKER
    if marker.exists() and marker.read_text() == airflow.__version__:
        return
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    done = subprocess.run([airflow_bin, "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stderr[-4000:]}")
    marker.write_text(airflow.__version__)


_BAGS: dict[str, Any] = {}


def dag_bag(refresh: bool = False):
    """The dags folder parsed once per process (a loop that runs DAGs every simulated interval would
    otherwise parse every DAG file before every run); ``refresh`` parses again."""
    folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    if refresh or folder not in _BAGS:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=folder)
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        _BAGS[folder] = bag
    return _BAGS[folder]


def run_dag(dag_id: str, run_conf: dict[str, Any] | None = None, logical_date: datetime | None = None,
            reparse: bool = True):  # fmt: skip
    """Run one DAG of the dags folder with dag.test(); returns the DagRun. ``logical_date`` is the run's
    clock (its data interval follows from the timetable); default: now. ``reparse=False`` reuses this
    process's parse of the folder (the simulation loop: the DAG files do not change between its runs)."""
    ensure_metadata_db()
    folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    dag = dag_bag(refresh=reparse).get_dag(dag_id)
    if dag is None:
        raise KeyError(f"no DAG {dag_id!r} in {folder}")
    return dag.test(run_conf=run_conf, logical_date=logical_date)


def forget_runs(dag_ids: list[str]) -> int:
    """Delete the local metadata DB's runs of these DAGs (their task instances go with them): a simulation
    that replays the same simulated dates starts a fresh story instead of resuming an old one's runs
    (dag.test names a run after its logical date). Local Airflow only; returns the runs deleted."""
    ensure_metadata_db()
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(TaskInstance).filter(TaskInstance.dag_id.in_(dag_ids)).delete(synchronize_session=False)
        return session.query(DagRun).filter(DagRun.dag_id.in_(dag_ids)).delete(synchronize_session=False)


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def main(argv: list[str] | None = None) -> int:
    """``python -m driftloop.airflow.local DAG_ID [--conf JSON] [--logical-date ISO]``: one dag.test() run
    in its own process (the simulation loop runs promote__<model>, which waits for days of simulated time,
    next to the DAGs it runs itself). Exit code 0 when the run succeeded."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m driftloop.airflow.local")
    parser.add_argument("dag_id")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--logical-date", default=None)
    args = parser.parse_args(argv)
    configure_environment()
    logical_date = datetime.fromisoformat(args.logical_date) if args.logical_date else None
    run = run_dag(args.dag_id, run_conf=json.loads(args.conf), logical_date=logical_date)
    print(json.dumps({"run_id": run.run_id, "state": str(run.state), "tasks": task_states(run)}), flush=True)
    return 0 if str(run.state) == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
