"""profile__churn run for real with dag.test(): new raw data -> profiles, once."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from driftloop.core.spec import get_spec
from driftloop.ingest.loader import ingest
from landing import NOW, land, prediction

pytestmark = pytest.mark.dags


def _profiles(url):
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select window_size, count(*), sum(n_rows)::int from profiles.whylogs_profiles where segment = '(all)' "
            "group by window_size order by window_size"
        ).fetchall()


def test_profile_dag_profiles_new_hours_once(dagbag, warehouse_url, tmp_path, monkeypatch):
    spec = get_spec("churn")
    events = [prediction(spec, request_ts=(NOW - timedelta(hours=3, minutes=i)).isoformat()) for i in range(30)]
    land(tmp_path, "churn", "predictions", "p.jsonl", events)
    ingest(spec, landing_root=str(tmp_path), url=warehouse_url, now=NOW)
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    dag = dagbag.get_dag("profile__churn")

    first = dag.test()
    after_first = _profiles(warehouse_url)
    second = dag.test()

    assert first.state == "success" and second.state == "success"
    # 30 predictions between 08:31 and 09:00 on 2026-11-20: hours 08 and 09, one day
    assert after_first == [("day", 1, 30), ("hour", 2, 30)]
    assert _profiles(warehouse_url) == after_first
    with psycopg.connect(warehouse_url) as conn:
        summaries = conn.execute(
            "select count(distinct column_name) from profiles.column_summaries s "
            "join profiles.whylogs_profiles p using (profile_id) where p.window_size = 'day' and p.segment = '(all)'"
        ).fetchone()[0]
    assert summaries >= len(spec.features)
