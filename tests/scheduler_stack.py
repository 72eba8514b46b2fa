"""A real Airflow 3 for a test: api-server, scheduler, dag-processor and triggerer (LocalExecutor) as
separate processes on a temporary Airflow home, with the small-machine settings of `make airflow`
(driftloop.airflow.standalone.SMALL_MACHINE), driven through the REST API.

Each component runs in its own process group; :meth:`AirflowStack.stop` ends every group it started
(SIGTERM, then SIGKILL after a grace period), whatever happened. The metadata database is the one
``sql_alchemy_conn`` names (a PostgreSQL database on the test server: four processes write to it at
once). The API has no login by default (``simple_auth_manager_all_admins``: the test's own instance only);
the Model health test turns the login on through ``extra_env``. :meth:`AirflowStack.start` can start a
subset of the components (the api-server alone serves the UI and its plugins).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from driftloop.airflow.standalone import SMALL_MACHINE

AIRFLOW = str(Path(sys.executable).parent / "airflow")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StackError(AssertionError):
    """A component died or a wait ran out; the message carries the tail of every component's log."""


class AirflowStack:
    def __init__(self, home: Path, sql_alchemy_conn: str, extra_env: Mapping[str, str]):
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.token: str | None = None
        home.mkdir(parents=True, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW__")}
        env.update(SMALL_MACHINE)
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__CORE__DAGS_FOLDER": os.environ["AIRFLOW__CORE__DAGS_FOLDER"],
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # the test unpauses what it runs
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "driftloop-test-only",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        })  # fmt: skip
        env.update(extra_env)
        self.env = env

    # -- processes --------------------------------------------------------------------------------

    def migrate(self) -> None:
        done = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise StackError(f"airflow db migrate failed:\n{done.stderr[-3000:]}")

    def start(self, components: tuple[str, ...] = COMPONENTS) -> None:
        for name in components:
            log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            self.processes[name] = subprocess.Popen([AIRFLOW, name], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                    start_new_session=True)  # fmt: skip
            log.close()

    def stop(self, grace: float = 30.0) -> None:
        """End every process group this stack started: SIGTERM, then SIGKILL for what is left."""
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group's children too (task workers, gunicorn / uvicorn workers)
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)

    def logs(self, lines: int = 40) -> str:
        parts = []
        for name in COMPONENTS:
            path = self.home / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {name} (exit {self.processes[name].poll() if name in self.processes else '-'})\n"
                         + "\n".join(text))  # fmt: skip
        return "\n".join(parts)

    def check_alive(self) -> None:
        dead = {name: process.poll() for name, process in self.processes.items() if process.poll() is not None}
        if dead:
            raise StackError(f"Airflow components exited: {dead}\n{self.logs()}")

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
        """Poll ``probe`` until it returns something truthy; a hang guard, not a speed limit."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise StackError(f"gave up waiting for {what} after {timeout:.0f} s\n{self.logs()}")
            self._wait_for_an_exit(interval)

    def _wait_for_an_exit(self, timeout: float) -> None:
        """Between two probes: wait (at most ``timeout``) for the scheduler, or else any component, to exit,
        so a crash is reported at once by the next check_alive rather than after the next probe."""
        process = self.processes.get("scheduler") or next(iter(self.processes.values()), None)
        if process is None:
            raise StackError("no Airflow component is running: start() the stack before waiting on it")
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    # -- REST API ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self._request(method, f"/api/v2{path}", body)

    def wait_until_up(self, timeout: float, login: tuple[str, str] | None = None) -> None:
        """Wait for the API server, then take a token: with ``login`` (user, password) from the auth manager's
        login endpoint, else the all-admins token (``simple_auth_manager_all_admins``)."""

        def healthy():
            try:
                return self._request("GET", "/api/v2/monitor/health", auth=False)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return None

        self.wait_for("the API server", healthy, timeout)
        if login:
            body = {"username": login[0], "password": login[1]}
            self.token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
        else:
            self.token = self._request("GET", "/auth/token", auth=False)["access_token"]

    def dag_exists(self, dag_id: str) -> bool:
        try:
            self.api("GET", f"/dags/{dag_id}")
            return True
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        return self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?order_by=start_date&limit=100")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        rows = self.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances")
        return {row["task_id"]: row for row in rows["task_instances"]}

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances/{task_id}",
                 {"new_state": state})  # fmt: skip
