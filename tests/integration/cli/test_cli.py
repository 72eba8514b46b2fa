"""The `driftloop` command line, run in-process against a real warehouse."""

from __future__ import annotations

import json

import psycopg
import pytest
from external_data import training_file
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


def test_register_stores_the_files_reference_its_baseline_and_reports_unused_columns(
    warehouse_url, tmp_path, external_specs
):
    import numpy as np
    from sklearn.metrics import roc_auc_score

    path, frame = training_file(tmp_path)
    done = runner.invoke(app, ["register", "--model", "external", "--version", "7", "--training-data", str(path),
                               "--label-column", "defaulted", "--score-column", "p_default",
                               "--prediction-column", "predicted", "--url", warehouse_url])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "columns NOT used" in done.output and "customer_id" in done.output
    with psycopg.connect(warehouse_url) as conn:
        (profile_id, is_simulated, source) = conn.execute(
            "select profile_id, is_simulated, source from profiles.reference_profiles "
            "where model_name = 'external' and model_version = '7'"
        ).fetchone()
        bins = conn.execute(
            "select column_name, category, fraction from profiles.column_bins where profile_id = %s "
            "and category is not null", (profile_id,)
        ).fetchall()
        summaries = {r[0]: r[1:] for r in conn.execute(
            "select column_name, p25, p50, p75 from profiles.column_summaries where profile_id = %s", (profile_id,)
        ).fetchall()}  # fmt: skip
        (metrics,) = conn.execute(
            "select metrics from ops.retrain_runs where model_name = 'external' and model_version = '7' "
            "and trigger = 'external' and status = 'succeeded'"
        ).fetchone()
    assert is_simulated is False and source["unused_columns"] == ["customer_id"]
    # category shares of the reference are the file's (integer categories taken as strings)
    shares = {(c, v): f for c, v, f in bins}
    tiers = frame["tier"].astype(str).value_counts(normalize=True)
    for tier, share in tiers.items():
        assert shares[("tier", tier)] == pytest.approx(share, abs=1e-12)
    assert shares[("is_new", "True")] == pytest.approx(frame["is_new"].mean(), abs=1e-12)
    predicted = frame["predicted"].astype(str).value_counts(normalize=True)
    for value, share in predicted.items():
        assert shares[("prediction.class", value)] == pytest.approx(share, abs=1e-12)
    # quantiles within the KLL sketch's rank error
    for column, values in (("amount", frame["amount"]), ("prediction.score.1", frame["p_default"])):
        for stored, q in zip(summaries[column], (0.25, 0.5, 0.75), strict=True):
            rank = (values <= stored).mean()
            assert abs(rank - q) <= 0.01, (column, q, stored)
    # the baseline quality the degradation trigger compares against
    assert metrics["holdout"]["roc_auc"] == pytest.approx(roc_auc_score(frame["defaulted"], frame["p_default"]), abs=1e-12)
    assert metrics["holdout"]["n"] == len(frame) and np.isfinite(metrics["holdout"]["log_loss"])


def test_register_refuses_a_file_without_the_named_columns(warehouse_url, tmp_path, external_specs):
    path, _ = training_file(tmp_path, rows=500)
    done = runner.invoke(app, ["register", "--model", "external", "--version", "7", "--training-data", str(path),
                               "--score-column", "p_missing", "--url", warehouse_url])  # fmt: skip
    assert done.exit_code == 1 and "no column 'p_missing'" in done.output


def test_reference_refuses_simulated_data_for_a_model_that_is_not_the_example(warehouse_url, external_specs):
    refused = runner.invoke(app, ["reference", "--model", "external", "--version", "1", "--url", warehouse_url])
    assert refused.exit_code == 1 and "driftloop register" in refused.output
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("select count(*) from profiles.reference_profiles").fetchone() == (0,)
    done = runner.invoke(app, ["reference", "--model", "external", "--version", "1", "--simulated", "--rows", "2000",
                               "--url", warehouse_url])  # fmt: skip
    assert done.exit_code == 0, done.output
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("select is_simulated, source ->> 'kind' from profiles.reference_profiles").fetchall() == [
            (True, "simulated training data")
        ]


def test_profile_command_profiles_what_the_dag_would(warehouse_url, tmp_path):
    from datetime import timedelta

    from driftloop.ingest.loader import ingest
    from landing import NOW

    spec = get_spec("churn")
    events = [prediction(spec, request_ts=(NOW - timedelta(hours=3, minutes=i)).isoformat()) for i in range(30)]
    land(tmp_path, "churn", "predictions", "p.jsonl", events)
    ingest(spec, landing_root=str(tmp_path), url=warehouse_url, now=NOW)
    done = runner.invoke(app, ["profile", "--model", "churn", "--now", NOW.isoformat(), "--url", warehouse_url])
    assert done.exit_code == 0, done.output
    assert "2 hour" in done.output and "no reference for version(s)" in done.output
    again = runner.invoke(app, ["profile", "--model", "churn", "--now", NOW.isoformat(), "--url", warehouse_url])
    assert again.exit_code == 0 and "0 hour" in again.output
