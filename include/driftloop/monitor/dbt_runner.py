"""The dbt metrics layer (dbt_project/): run it against a warehouse from Python, without Airflow.

dbt reads its connection from the environment (dbt_project/profiles.yml): :func:`dbt_env` turns a
warehouse URL or libpq conninfo string into those ``DRIFTLOOP_DBT_*`` variables, :func:`run_dbt`
runs any dbt command in-process with dbt's programmatic ``dbtRunner`` and raises
:class:`DbtRunError` naming every failing node, and :func:`build` is ``dbt build`` (models, unit
tests and data tests) with the build's clock (``as_of``, used for label maturity) pinned.

dbt is not safe to run twice at once in one process; run builds one after the other.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from driftloop.core.settings import PROJECT_DIR, home

log = logging.getLogger(__name__)

DBT_PROJECT_DIR = PROJECT_DIR / "dbt_project"
ENV_PREFIX = "DRIFTLOOP_DBT_"
# dbt-postgres refuses an empty password even where the server asks for none (trust, peer).
PLACEHOLDER_PASSWORD = "unused"
_FAILED = {"error", "fail", "runtime error"}
# dbt and its telemetry: no network calls from a build.
_QUIET_ENV = {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # dbt colours unit test diffs


class DbtRunError(RuntimeError):
    """A dbt command failed; the message names each failing node (model, test, unit test) and why."""

    def __init__(self, command: Sequence[str], failures: list[str], cause: BaseException | None = None):
        self.command = list(command)
        self.failures = failures
        detail = "\n".join(f"  - {failure}" for failure in failures) or f"  {cause or 'no details from dbt'}"
        super().__init__(f"dbt {' '.join(self.command)} failed:\n{detail}")


def dbt_env(url: str) -> dict[str, str]:
    """The ``DRIFTLOOP_DBT_*`` environment that dbt_project/profiles.yml reads, from a warehouse URL
    (``postgresql://...``) or a libpq conninfo string (``user=... dbname=... host=...``).

    A unix socket folder is a valid host (the embedded warehouse has no TCP port). What the URL
    leaves out gets libpq's defaults (PGHOST / PGPORT / PGUSER / PGDATABASE, then localhost, 5432,
    the OS user, the user name); an empty password becomes a placeholder dbt-postgres accepts.
    """
    info = conninfo_to_dict(url)
    user = info.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    env = {
        "HOST": info.get("host") or info.get("hostaddr") or os.environ.get("PGHOST") or "localhost",
        "PORT": str(info.get("port") or os.environ.get("PGPORT") or 5432),
        "USER": user,
        "PASSWORD": info.get("password") or os.environ.get("PGPASSWORD") or PLACEHOLDER_PASSWORD,
        "DBNAME": info.get("dbname") or os.environ.get("PGDATABASE") or user,
    }
    if "," in env["HOST"] or "," in env["PORT"]:
        raise ValueError("dbt-postgres connects to one host: the warehouse URL lists several")
    if info.get("sslmode"):
        env["SSLMODE"] = str(info["sslmode"])
    return {f"{ENV_PREFIX}{key}": str(value) for key, value in env.items()}


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (dbt reads env_var() from os.environ)."""
    saved = {key: os.environ.get(key) for key in values}
    # a DRIFTLOOP_DBT_SSLMODE left over from another warehouse must not leak into this one
    stale = [key for key in os.environ if key.startswith(ENV_PREFIX) and key not in values]
    saved.update({key: os.environ[key] for key in stale})
    try:
        for key in stale:
            del os.environ[key]
        os.environ.update(values)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _as_of_text(as_of: datetime | str) -> str:
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None or as_of.utcoffset() is None:
            raise ValueError("as_of must be timezone-aware")
        return as_of.isoformat()
    return str(as_of)


def _failures(result: Any) -> list[str]:
    """'<node>: <status>: <message>' for every node that errored or failed."""
    failures = []
    for node_result in getattr(getattr(result, "result", None), "results", None) or []:
        status = str(getattr(node_result, "status", "")).lower()
        if status in _FAILED:
            node = getattr(node_result, "node", None)
            name = getattr(node, "unique_id", None) or getattr(node, "name", "?")
            message = _ANSI.sub("", getattr(node_result, "message", None) or "").strip()
            failures.append(f"{name}: {status}: {message}")
    return failures


def node_results(result: Any) -> list[dict[str, Any]]:
    """One row per node dbt ran (model, test, unit test), in the order dbt finished them: its unique
    id, status (success, pass, warn, skipped, error, fail) and seconds; what a single build task
    reports instead of a task per model."""
    rows = []
    for node_result in getattr(getattr(result, "result", None), "results", None) or []:
        node = getattr(node_result, "node", None)
        rows.append({
            "node": getattr(node, "unique_id", None) or getattr(node, "name", "?"),
            "status": str(getattr(node_result, "status", "")).lower(),
            "seconds": round(float(getattr(node_result, "execution_time", 0.0) or 0.0), 3),
        })  # fmt: skip
    return rows


def run_dbt(
    args: Sequence[str],
    url: str,
    *,
    as_of: datetime | str | None = None,
    vars: Mapping[str, Any] | None = None,
    project_dir: Path | None = None,
    target_path: Path | str | None = None,
    log_path: Path | str | None = None,
):
    """Run one dbt command (``["build", "--select", "marts"]``) in-process against ``url``.

    The project and profiles dir are dbt_project/ (``project_dir`` to override). ``as_of`` (an
    aware datetime or an RFC 3339 string) and ``vars`` become ``--vars``. ``target_path`` /
    ``log_path`` keep concurrent callers apart (default: dbt_project/target and dbt_project/logs).
    Returns dbt's ``dbtRunnerResult``; raises :class:`DbtRunError` if the command did not succeed.
    """
    from dbt.cli.main import dbtRunner  # heavy: only when a build runs

    project = Path(project_dir or DBT_PROJECT_DIR)
    command = [*args, "--project-dir", str(project), "--profiles-dir", str(project)]
    all_vars = dict(vars or {})
    if as_of is not None:
        all_vars["as_of"] = _as_of_text(as_of)
    if all_vars:
        command += ["--vars", json.dumps(all_vars, default=str)]
    if target_path is not None:
        command += ["--target-path", str(target_path)]
    if log_path is not None:
        command += ["--log-path", str(log_path)]
    log.info("dbt %s", " ".join(args))
    with _environment({**_QUIET_ENV, **dbt_env(url)}):
        result = dbtRunner().invoke(command)
    if not result.success:
        raise DbtRunError(args, _failures(result), result.exception)
    return result


@contextmanager
def command_state(command: str) -> Iterator[tuple[Path, Path]]:
    """A target and a log folder for one kind of dbt command (``build``, ``freshness``) that persist
    between its runs, held under a lock for the duration.

    dbt keeps its parse of the project in ``target/partial_parse.msgpack``: with a fresh target folder
    every run parses the whole project again (15 s on a 2-core machine, before any model runs); with
    this one, a run re-parses only what changed. The lock (``flock`` on a file next to them) keeps two
    runs of the same kind on one machine from sharing run files: the second waits, as it would have to
    anyway (two builds of the same incremental marts at once do not make sense)."""
    folder = home() / "dbt" / command
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder / "target", folder / "logs"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(
    url: str,
    full_refresh: bool = False,
    as_of: datetime | str | None = None,
    *,
    unit_tests: bool = True,
    select: Sequence[str] = (),
    vars: Mapping[str, Any] | None = None,
    target_path: Path | str | None = None,
    log_path: Path | str | None = None,
):
    """``dbt build``: every model (marts incrementally unless ``full_refresh``), its unit tests and
    data tests. ``as_of`` is the build's clock for label maturity (default: when dbt starts).

    ``unit_tests=False`` leaves the unit tests out, as a production build should: their inputs are
    fixed rows, so they check the SQL, not the data, and dbt's documentation recommends running them
    in development and CI only (the test suite runs them on every change); the data tests still run
    on every build."""
    args = ["build"]
    if full_refresh:
        args.append("--full-refresh")
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if select:
        args += ["--select", *select]
    return run_dbt(args, url, as_of=as_of, vars=vars, target_path=target_path, log_path=log_path)
