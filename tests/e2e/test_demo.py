"""`make demo` (driftloop.sim.demo): the closed loop's story on the terminal and in a report."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import psycopg
import pytest

from driftloop.sim.demo import reset_demo_state, run_demo

pytestmark = [pytest.mark.dags, pytest.mark.slow]


def test_the_demo_prints_a_line_per_day_and_per_event_a_summary_and_writes_the_report(
    airflow_db, warehouse_url, tmp_path
):
    saved = dict(os.environ)
    lines: list[str] = []
    try:
        summary = run_demo("churn", days=3, rows_per_day=2_000, url=warehouse_url, demo_home=tmp_path / "demo",
                           report=tmp_path / "report" / "index.html", out=lines.append)  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(saved)
    days = [line for line in lines if line.startswith("day ")]
    assert [line.split()[1] for line in days] == ["1/3", "2/3", "3/3"]
    assert "[###]" in days[-1] and "6,000 predictions" in days[-1]
    assert any(line.startswith("champion: churn version 1") for line in lines)
    printed = "\n".join(lines)
    table = printed[printed.index("\nsummary\n"):]
    assert "accuracy before the drift" in table and "predictions served                 6,000" in table
    page = (tmp_path / "report" / "index.html").read_text()
    assert summary["report"].endswith("index.html") and page.count("<svg") >= 3
    assert not re.search(r"(src|href)=\"https?://", page)  # nothing fetched: it opens from disk
    assert summary["requests"] == {"control": 6_000} and summary["time_to_promote"] is None
    assert timedelta(0) < timedelta(seconds=summary["wall_seconds"])


def test_the_demo_never_drops_data_of_a_warehouse_it_does_not_own(warehouse_url):
    reset_demo_state(warehouse_url, embedded=False)  # migrated but without data: taken
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("select count(*) from pg_namespace where nspname in ('raw', 'ops')").fetchone()[0] == 0
    from driftloop.core import warehouse

    warehouse.migrate(warehouse_url)
    with psycopg.connect(warehouse_url) as conn:
        conn.execute("insert into raw.ingest_files (model_name, kind, path, size_bytes, status) "
                     "values ('churn', 'predictions', 'churn/predictions/p.jsonl', 10, 'loaded')")  # fmt: skip
    with pytest.raises(RuntimeError, match="has loaded files already"):
        reset_demo_state(warehouse_url, embedded=False)
    reset_demo_state(warehouse_url, embedded=True)  # its own warehouse: emptied for the story
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("select to_regclass('raw.ingest_files')").fetchone()[0] is None
