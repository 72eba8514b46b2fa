"""The `driftloop` command line, run in-process against a real warehouse."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.core.spec import get_spec
from landing import land, prediction

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_ingest_command_loads_and_reports_json(warehouse_url, tmp_path):
    spec = get_spec("churn")
    land(tmp_path, "churn", "predictions", "p.jsonl", [prediction(spec), prediction(spec, latency_ms=-2)])
    done = runner.invoke(app, ["ingest", "--model", "churn", "--landing", str(tmp_path), "--url", warehouse_url, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert (report["rows_loaded"], report["rows_rejected"]) == (1, 1)
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("select model_name from ops.model_specs").fetchall() == [("churn",)]
    again = runner.invoke(app, ["ingest", "--model", "churn", "--landing", str(tmp_path), "--url", warehouse_url])
    assert again.exit_code == 0 and "no new files" in again.output


def test_ingest_of_a_model_without_spec_fails_clearly(warehouse_url, tmp_path):
    done = runner.invoke(app, ["ingest", "--model", "fraud", "--landing", str(tmp_path), "--url", warehouse_url])
    assert done.exit_code == 1
    assert "unknown model 'fraud'" in done.output and "known: churn" in done.output


def test_failed_file_makes_the_command_exit_2(warehouse_url, tmp_path):
    land(tmp_path, "churn", "predictions", "cut.jsonl.gz", b"\x1f\x8b\x08\x00broken")
    done = runner.invoke(app, ["ingest", "--model", "churn", "--landing", str(tmp_path), "--url", warehouse_url])
    assert done.exit_code == 2 and "failed" in done.output


def test_specs_validate(tmp_path):
    assert runner.invoke(app, ["specs", "validate"]).exit_code == 0
    bad = tmp_path / "churn.yaml"
    bad.write_text("name: churn\ntask: binary_classification\nclasses: [a]\nfeatures: []\n")
    done = runner.invoke(app, ["specs", "validate", str(bad)])
    assert done.exit_code == 1 and "needs exactly 2 classes" in done.output
