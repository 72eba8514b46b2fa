"""What the Model health page reads, on a real PostgreSQL: only in read-only transactions, the numbers the
warehouse holds, and empty states (not errors) on a warehouse the metrics DAG has not built yet."""

from __future__ import annotations

import psycopg
import pytest
from health_seed import seed_model

from driftloop.core import warehouse
from driftloop.ui import app, data, pages

pytestmark = pytest.mark.integration
LINKS = pages.Links("/driftloop", "/airflow")


def test_the_page_reads_in_read_only_transactions(warehouse_url):
    # GIVEN the page's connection
    with data.read_only(warehouse_url) as conn:
        # WHEN anything tries to write through it
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("insert into ops.model_aliases (model_name, alias, model_version) values ('x', 'champion', '1')")
        conn.rollback()
        # THEN the server refused it: every transaction of the connection is read only
        assert conn.execute("show transaction_read_only").fetchone()[0] == "on"


def test_the_series_hold_the_warehouse_numbers(warehouse_url):
    # GIVEN churn seeded with 60 days of marts, a canary with 12 looks, and a drifted feature
    with psycopg.connect(warehouse_url) as conn:
        seeded = seed_model(conn, "churn")
    # WHEN the page's data is read
    with data.read_only(warehouse_url) as conn:
        page = data.model_page(conn, "churn", days=30)
        overview = data.overview(conn)
    # THEN the series cover the asked window, per version and variant, drift relative to the threshold
    series = page["series"]
    days = {row["window_start"] for row in series["quality"]}
    assert len(days) == 30 and max(days) == seeded["end"]
    assert {(r["model_version"], r["variant"]) for r in series["quality"]} == {("1", "control"), ("2", "challenger")}
    assert {r["segment"] for r in series["segments"]} == {"eu", "us"}
    drifted = {r["name"] for r in series["drift"] if r["is_drifted"]}
    assert drifted == {"feature_01"}
    assert max(r["ratio"] for r in series["drift"] if r["name"] == "feature_01") == pytest.approx((0.02 + 0.01 * 2 / 10 + 0.35) / 0.2)
    assert len(series["looks"]) == 12 and series["looks"][-1]["share"] == 0.25
    assert {e["kind"] for e in page["events"]} == {"retrain", "experiment", "alert"}
    assert overview == [{**overview[0], "model_name": "churn", "status": "critical", "serving_version": "1",
                         "n_open_alerts": 1}]  # fmt: skip
    assert overview[0]["last_decision"]["decision"] == "ramp"


def test_a_warehouse_without_marts_renders_empty_states(warehouse_url):
    # GIVEN a migrated warehouse with the example specs and nothing else (no dbt build yet)
    warehouse.sync_specs(warehouse_url)
    # WHEN the overview and churn's page are rendered
    overview = app.render_overview(warehouse_url, LINKS)
    page = app.render_model(warehouse_url, "churn", LINKS)
    # THEN they render and say what to run next, with no chart
    assert "/driftloop/models/churn" in overview and ">no data<" in overview
    assert page is not None and "<svg" not in page
    for hint in ["No champion yet: run <code>driftloop bootstrap</code>", "No experiment yet",
                 "No quality windows yet: run the metrics DAG", "No drift windows yet", "No open alert",
                 "No decision yet", "No retraining run yet"]:  # fmt: skip
        assert hint in page, hint
    assert 'href="/airflow/dags/retrain__churn" target="_top"' in page
    assert app.render_model(warehouse_url, "nope", LINKS) is None
