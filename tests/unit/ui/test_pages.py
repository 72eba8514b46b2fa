"""The Model health page without services: the marts' columns it reads exist in dbt, the plugin is cheap to
import, warehouse text is escaped, and empty states say what to do next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from driftloop.ui import pages
from driftloop.ui.data import MART_COLUMNS

PROJECT = Path(__file__).resolve().parents[3]
LINKS = pages.Links("/driftloop", "")


def test_every_mart_column_the_page_reads_is_a_column_of_the_dbt_model():
    for mart, columns in MART_COLUMNS.items():
        document = yaml.safe_load((PROJECT / "dbt_project" / "models" / "marts" / f"{mart}.yml").read_text())
        model = next(m for m in document["models"] if m["name"] == mart)
        declared = {column["name"] for column in model["columns"]}
        assert set(columns) <= declared, (mart, set(columns) - declared)


def test_the_plugin_imports_no_web_database_or_plotting_library():
    # GIVEN a fresh interpreter that has imported Airflow's plugin base class (every component has)
    probe = (
        "import sys, runpy; import airflow.plugins_manager; before = set(sys.modules); "
        f"runpy.run_path({str(PROJECT / 'plugins' / 'driftloop_health.py')!r}); "
        "new = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
        "{'fastapi', 'starlette', 'matplotlib', 'numpy', 'pandas', 'psycopg', 'driftloop'}); print(new)"
    )
    # WHEN the plugin file is imported
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    # THEN it added none of them (the app is built on the API server's first request)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_warehouse_text_is_escaped_and_the_empty_overview_says_what_to_do():
    hostile = {"model_name": "<script>x</script>", "task": "binary_classification", "status": "no data",
               "serving_version": None, "allocation": None, "experiment": None, "n_open_alerts": 0,
               "last_decision": {"decided_at": None, "step": "<b>", "decision": "&", "reason": ""}, "health": None}  # fmt: skip
    html = pages.overview([hostile], LINKS)
    assert "<script>x" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "/driftloop/models/%3Cscript%3Ex%3C%2Fscript%3E" in html
    empty = pages.overview([], LINKS)
    assert "No monitored model yet" in empty and "driftloop warehouse migrate" in empty
