"""The Postgres warehouse: where it is, how to start the embedded one, and its migrations.

Resolution order for the URL: an explicit URL, `DRIFTLOOP_WAREHOUSE_URL`, the Airflow connection
`driftloop_warehouse` (when asked for, i.e. inside Airflow tasks), else the embedded PostgreSQL
from the `pgserver` package in `<DRIFTLOOP_HOME>/pgdata` (a real server on a unix socket).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg

from driftloop.core.settings import home, migrations_dir

log = logging.getLogger(__name__)

AIRFLOW_CONN_ID = "driftloop_warehouse"
EMBEDDED_DATABASE = "driftloop"
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY = 0x64726966746C6F6F  # "driftloo"
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class WarehouseError(RuntimeError):
    pass


def embedded_datadir() -> Path:
    return home() / "pgdata"


def start_embedded(datadir: Path | None = None, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or reuse) the embedded PostgreSQL and return a URL for `database` on it.

    The server keeps running after this process exits, so every process (CLI, Airflow task, dbt)
    shares it; `driftloop warehouse down` stops it.
    """
    import pgserver  # heavy-ish; only needed for the embedded default

    datadir = Path(datadir or embedded_datadir())
    datadir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(datadir, cleanup_mode=None)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
        if not exists:
            try:
                conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(database)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it between our check and our create
    return server.get_uri(database)


def stop_embedded(datadir: Path | None = None) -> bool:
    """Stop the embedded server of `datadir` if it runs (pg_ctl stop, fast mode)."""
    import pgserver

    datadir = Path(datadir or embedded_datadir())
    if not (datadir / "postmaster.pid").exists():
        return False
    # pgserver runs the server as its own OS user when we are root; pg_ctl must run as that user too
    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=datadir, **({"user": user} if user else {}))
    except Exception as exc:  # noqa: BLE001 - already stopped, or stale pid file
        log.info("embedded warehouse in %s was not running (%s)", datadir, exc)
        return False
    return True


def url_from_connection(conn: object) -> str:
    """A libpq URL from an Airflow Connection (postgres conn type)."""
    login = quote(getattr(conn, "login", None) or "", safe="")
    password = quote(getattr(conn, "password", None) or "", safe="")
    host = getattr(conn, "host", None) or ""
    port = getattr(conn, "port", None)
    database = getattr(conn, "schema", None) or "postgres"
    auth = f"{login}:{password}@" if password else (f"{login}@" if login else "")
    extra = getattr(conn, "extra_dejson", None) or {}
    libpq_params = {k: v for k, v in extra.items() if k in {"sslmode", "sslrootcert", "connect_timeout", "options"}}
    if host.startswith("/"):  # a unix socket folder goes in the query string
        libpq_params["host"] = host
        host = ""
    netloc = f"{auth}{host}{f':{port}' if port and host else ''}"
    query = f"?{urlencode(libpq_params)}" if libpq_params else ""
    return f"postgresql://{netloc}/{quote(database, safe='')}{query}"


def _airflow_connection_url() -> str | None:
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        return None
    try:
        return url_from_connection(BaseHook.get_connection(AIRFLOW_CONN_ID))
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and friends: fall back to the default
        log.info("no Airflow connection %r (%s); using the default warehouse", AIRFLOW_CONN_ID, type(exc).__name__)
        return None


def resolve_url(explicit: str | None = None, *, use_airflow: bool = False) -> str:
    if explicit:
        return explicit
    if os.environ.get("DRIFTLOOP_WAREHOUSE_URL"):
        return os.environ["DRIFTLOOP_WAREHOUSE_URL"]
    if use_airflow or os.environ.get(f"AIRFLOW_CONN_{AIRFLOW_CONN_ID.upper()}"):
        url = _airflow_connection_url()
        if url:
            return url
    return start_embedded()


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"(postgres(?:ql)?://[^:/@]*:)[^@]*@", r"\1***@", url)


@contextmanager
def connect(url: str | None = None, **kwargs) -> Iterator[psycopg.Connection]:
    with psycopg.connect(resolve_url(url), **kwargs) as conn:
        yield conn


# ---------------------------------------------------------------------------------------------
# Migrations: numbered SQL files in include/sql/migrations, applied in order, each once.


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise WarehouseError(f"{path}: migration files are named NNNN_description.sql")
        migrations.append(Migration(match.group(1), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise WarehouseError(f"{directory}: two migrations share a version number")
    return migrations


def migrate(url: str | None = None, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied. Safe to run twice and concurrently.

    One transaction under a transaction-level advisory lock: a second process waits, then finds
    everything applied. A migration that fails rolls back entirely.
    """
    migrations = load_migrations(directory)
    applied_now: list[str] = []
    with connect(url) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        conn.execute(
            """
            create table if not exists public.driftloop_migrations (
                version text primary key,
                name text not null,
                checksum text not null,
                applied_at timestamptz not null default now()
            )
            """
        )
        done = {row[0]: row[1] for row in conn.execute("select version, checksum from public.driftloop_migrations")}
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise WarehouseError(
                        f"migration {migration.name} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            conn.execute(migration.sql)
            conn.execute(
                "insert into public.driftloop_migrations (version, name, checksum) values (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.name)
    return applied_now


def ensure_day_partitions(conn: psycopg.Connection, days: list) -> None:
    """Create the daily partitions of raw.predictions that `days` (dates) need, if missing."""
    for day in sorted(set(days)):
        conn.execute("select raw.ensure_predictions_partition(%s)", (day,))


def sync_specs(url: str | None = None, specs: dict | None = None) -> list[str]:
    """Upsert the model specs into ops.model_specs (one row per model); returns the model names."""
    import orjson

    from driftloop.core.spec import load_specs

    specs = specs if specs is not None else load_specs()
    with connect(url) as conn, conn.transaction():
        for spec in specs.values():
            payload = spec.model_dump(mode="json")
            conn.execute(
                """
                insert into ops.model_specs (model_name, task, classes, positive_class, segment_name, features,
                    window_sizes, expected_label_delay, min_label_coverage, spec, synced_at)
                values (%s, %s, %s::jsonb, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s::jsonb, now())
                on conflict (model_name) do update set
                    task = excluded.task, classes = excluded.classes, positive_class = excluded.positive_class,
                    segment_name = excluded.segment_name, features = excluded.features,
                    window_sizes = excluded.window_sizes, expected_label_delay = excluded.expected_label_delay,
                    min_label_coverage = excluded.min_label_coverage, spec = excluded.spec, synced_at = now()
                """,
                (
                    spec.name, spec.task.value, orjson.dumps(list(spec.classes)).decode(), spec.positive_class,
                    spec.segment.name if spec.segment else None, orjson.dumps(payload["features"]).decode(),
                    orjson.dumps(list(spec.windows.sizes)).decode(), spec.windows.expected_label_delay,
                    spec.windows.min_label_coverage, orjson.dumps(payload).decode(),
                ),
            )  # fmt: skip
    return sorted(specs)


def airflow_connection_json(url: str) -> str:
    """The warehouse as an Airflow connection (JSON for AIRFLOW_CONN_DRIFTLOOP_WAREHOUSE), for a local
    Airflow (demo, tests, `make airflow`) where no connection was configured."""
    import orjson

    info = psycopg.conninfo.conninfo_to_dict(url)
    return orjson.dumps(
        {
            "conn_type": "postgres",
            "host": info.get("host") or "localhost",
            "port": int(info.get("port") or 5432),
            "login": info.get("user") or "postgres",
            # Airflow's postgres hook and dbt-postgres want a non-empty password even with trust auth
            "password": info.get("password") or "unused",
            "schema": info.get("dbname") or "postgres",
        }
    ).decode()


def with_database(url: str, database: str) -> str:
    """The same server URL, pointed at another database."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database `name` (optionally from a template) on the admin URL's server; returns its URL."""
    from psycopg import sql

    statement = sql.SQL("create database {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" template {}").format(sql.Identifier(template))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)
    return with_database(admin_url, name)


def drop_database(admin_url: str, url_or_name: str) -> None:
    """Drop a database (by URL or name), disconnecting its sessions."""
    from psycopg import sql

    name = psycopg.conninfo.conninfo_to_dict(url_or_name).get("dbname") if "=" in url_or_name or "://" in url_or_name else url_or_name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
