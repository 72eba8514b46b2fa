"""Migrations against a real PostgreSQL: in order, once, safe twice and from two processes at once."""

from __future__ import annotations

import multiprocessing
from datetime import date, timedelta
from types import SimpleNamespace

import psycopg
import pytest

from driftloop.core import warehouse

pytestmark = pytest.mark.integration


def _applied(url):
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("select name from public.driftloop_migrations order by version")]


def test_migrate_twice_applies_once(empty_database_url):
    first = warehouse.migrate(empty_database_url)
    second = warehouse.migrate(empty_database_url)
    assert first == [m.name for m in warehouse.load_migrations()] and second == []
    with psycopg.connect(empty_database_url) as conn:
        schemas = {r[0] for r in conn.execute("select schema_name from information_schema.schemata")}
    assert {"raw", "ops"} <= schemas


def _migrate_in_process(url, queue):
    try:
        queue.put(("ok", warehouse.migrate(url)))
    except Exception as exc:  # noqa: BLE001
        queue.put(("error", repr(exc)))


def test_two_processes_migrate_at_once(empty_database_url):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_migrate_in_process, args=(empty_database_url, queue)) for _ in range(2)]
    for process in processes:
        process.start()
    outcomes = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert all(status == "ok" for status, _ in outcomes), outcomes
    applied_lists = sorted((applied for _, applied in outcomes), key=len)
    assert applied_lists[0] == [] and len(applied_lists[1]) == len(warehouse.load_migrations())
    assert len(_applied(empty_database_url)) == len(warehouse.load_migrations())


def test_edited_migration_is_refused(empty_database_url, tmp_path):
    (tmp_path / "0001_first.sql").write_text("create table public.t (x int);")
    warehouse.migrate(empty_database_url, tmp_path)
    (tmp_path / "0001_first.sql").write_text("create table public.t (x bigint);")
    with pytest.raises(warehouse.WarehouseError, match="changed after it was applied"):
        warehouse.migrate(empty_database_url, tmp_path)


def test_failed_migration_rolls_back_entirely(empty_database_url, tmp_path):
    (tmp_path / "0001_ok.sql").write_text("create table public.t1 (x int);")
    (tmp_path / "0002_bad.sql").write_text("create table public.t2 (x int); select no_such_function();")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        warehouse.migrate(empty_database_url, tmp_path)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select to_regclass('public.t1')").fetchone()[0] is None


def test_day_partitions_on_demand(warehouse_url):
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        warehouse.ensure_day_partitions(conn, [date(2026, 3, 1), date(2026, 3, 1), date(2026, 3, 2)])
        warehouse.ensure_day_partitions(conn, [date(2026, 3, 1)])
        bounds = conn.execute(
            """select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i
               join pg_class c on c.oid = i.inhrelid where i.inhparent = 'raw.predictions'::regclass order by 1"""
        ).fetchall()
    assert bounds == [
        ("predictions_20260301", "FOR VALUES FROM ('2026-03-01 00:00:00+00') TO ('2026-03-02 00:00:00+00')"),
        ("predictions_20260302", "FOR VALUES FROM ('2026-03-02 00:00:00+00') TO ('2026-03-03 00:00:00+00')"),
    ]


def test_url_from_airflow_connection():
    conn = SimpleNamespace(login="dl", password="p@ss:word", host="db.internal", port=5433, schema="wh",
                           extra_dejson={"sslmode": "require", "application_name": "x"})  # fmt: skip
    assert warehouse.url_from_connection(conn) == "postgresql://dl:p%40ss%3Aword@db.internal:5433/wh?sslmode=require"
    socket = SimpleNamespace(login="postgres", password=None, host="/tmp/pg", port=None, schema="driftloop", extra_dejson={})
    assert warehouse.url_from_connection(socket) == "postgresql://postgres@/driftloop?host=%2Ftmp%2Fpg"
    assert warehouse.redact("postgresql://dl:secret@h:5432/db") == "postgresql://dl:***@h:5432/db"


def test_specs_sync_into_the_warehouse_and_resync_updates(warehouse_url):
    from driftloop.core.spec import get_spec

    spec = get_spec("churn")
    assert warehouse.sync_specs(warehouse_url, {"churn": spec}) == ["churn"]
    changed = spec.model_copy(update={"positive_class": "stay"})
    warehouse.sync_specs(warehouse_url, {"churn": changed})
    with psycopg.connect(warehouse_url) as conn:
        rows = conn.execute(
            "select model_name, task, classes, positive_class, segment_name, expected_label_delay, min_label_coverage "
            "from ops.model_specs"
        ).fetchall()
    assert rows == [("churn", "binary_classification", ["stay", "churn"], "stay", "region", timedelta(days=3), 0.5)]
