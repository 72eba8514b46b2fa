"""driftloop.monitor.dbt_runner without a warehouse: the dbt environment, failure reports, and the project parsing."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from driftloop.monitor import dbt_runner as metrics

SOCKET_URL = "postgresql://postgres:@/postgres?host=/tmp/dl/pg"  # what pgserver hands out


@pytest.mark.parametrize(
    "url",
    [SOCKET_URL, "user=postgres dbname=postgres host=/tmp/dl/pg"],
    ids=["url", "conninfo"],
)
def test_dbt_env_from_the_embedded_warehouse(url):
    assert metrics.dbt_env(url) == {
        "DRIFTLOOP_DBT_HOST": "/tmp/dl/pg",
        "DRIFTLOOP_DBT_PORT": "5432",
        "DRIFTLOOP_DBT_USER": "postgres",
        "DRIFTLOOP_DBT_PASSWORD": "unused",  # dbt-postgres needs one even with trust auth
        "DRIFTLOOP_DBT_DBNAME": "postgres",
    }


def test_dbt_env_from_a_server_url_keeps_port_password_and_sslmode():
    env = metrics.dbt_env("postgresql://alice:s%40cret@db.example.com:6543/warehouse?sslmode=require")
    assert env == {
        "DRIFTLOOP_DBT_HOST": "db.example.com",
        "DRIFTLOOP_DBT_PORT": "6543",
        "DRIFTLOOP_DBT_USER": "alice",
        "DRIFTLOOP_DBT_PASSWORD": "s@cret",
        "DRIFTLOOP_DBT_DBNAME": "warehouse",
        "DRIFTLOOP_DBT_SSLMODE": "require",
    }


def test_dbt_env_falls_back_to_libpq_environment(monkeypatch):
    for name, value in {
        "PGHOST": "pg.internal",
        "PGPORT": "5433",
        "PGUSER": "etl",
        "PGPASSWORD": "pw",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PGDATABASE", raising=False)
    env = metrics.dbt_env("dbname=warehouse")
    assert (env["DRIFTLOOP_DBT_HOST"], env["DRIFTLOOP_DBT_PORT"], env["DRIFTLOOP_DBT_USER"]) == (
        "pg.internal",
        "5433",
        "etl",
    )
    assert (env["DRIFTLOOP_DBT_PASSWORD"], env["DRIFTLOOP_DBT_DBNAME"]) == ("pw", "warehouse")


def test_dbt_env_refuses_several_hosts():
    with pytest.raises(ValueError, match="one host"):
        metrics.dbt_env("postgresql://u@a.example.com,b.example.com/db")


def test_environment_is_restored_and_stale_dbt_settings_do_not_leak(monkeypatch):
    monkeypatch.setenv("DRIFTLOOP_DBT_SSLMODE", "verify-full")  # left over from another warehouse
    monkeypatch.delenv("DRIFTLOOP_DBT_HOST", raising=False)
    with metrics._environment(metrics.dbt_env(SOCKET_URL)):
        assert os.environ["DRIFTLOOP_DBT_HOST"] == "/tmp/dl/pg"
        assert "DRIFTLOOP_DBT_SSLMODE" not in os.environ
    assert "DRIFTLOOP_DBT_HOST" not in os.environ
    assert os.environ["DRIFTLOOP_DBT_SSLMODE"] == "verify-full"


def test_as_of_must_be_timezone_aware():
    assert metrics._as_of_text(datetime(2026, 11, 20, 12, tzinfo=UTC)) == "2026-11-20T12:00:00+00:00"
    with pytest.raises(ValueError, match="timezone-aware"):
        metrics._as_of_text(datetime(2026, 11, 20, 12))


def test_failures_name_each_failing_node_without_colours():
    def node_result(unique_id, status, message):
        return SimpleNamespace(node=SimpleNamespace(unique_id=unique_id), status=status, message=message)

    result = SimpleNamespace(
        result=SimpleNamespace(
            results=[
                node_result("model.driftloop.fct_latency", "success", "INSERT 0 4"),
                node_result(
                    "unit_test.driftloop.fct_model_quality.t", "fail", "\x1b[32mactual\x1b[0m differs"
                ),
                node_result("model.driftloop.fct_class_quality", "error", 'relation "x" does not exist'),
                node_result("test.driftloop.not_null_x", "warn", "Got 1 result"),
            ]
        )
    )
    failures = metrics._failures(result)
    assert failures == [
        "unit_test.driftloop.fct_model_quality.t: fail: actual differs",
        'model.driftloop.fct_class_quality: error: relation "x" does not exist',
    ]
    message = str(metrics.DbtRunError(["build"], failures))
    assert message.startswith("dbt build failed:") and "fct_class_quality" in message


def test_project_parses_with_its_marts_configured(tmp_path):
    import json

    # dbt parse renders the profile but never connects
    metrics.run_dbt(["parse"], SOCKET_URL, target_path=tmp_path / "target", log_path=tmp_path / "logs")
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    models = {node["name"]: node for node in manifest["nodes"].values() if node["resource_type"] == "model"}
    marts = {name for name in models if name.startswith("fct_")}
    assert marts == {
        "fct_model_quality",
        "fct_class_quality",
        "fct_confusion_matrix",
        "fct_latency",
        "fct_label_coverage",
        "fct_feature_drift",
        "fct_prediction_drift",
        "fct_experiment",
        "fct_ingest_quality",
    }
    # fct_experiment (experiment traffic only) and fct_ingest_quality (one row per landed file upstream)
    # are small and rebuilt whole; the rest recompute their windows
    rebuilt_whole = {"fct_experiment", "fct_ingest_quality"}
    assert {models[name]["config"]["materialized"] for name in rebuilt_whole} == {"table"}
    for name in marts - rebuilt_whole:
        config = models[name]["config"]
        assert (models[name]["schema"], config["materialized"], config["incremental_strategy"]) == (
            "marts",
            "incremental",
            "delete+insert",
        )
        assert config["unique_key"] == ["model_name", "window_size", "window_start"]
    assert {models[n]["schema"] for n in models if n.startswith("stg_")} == {"staging"}
    assert {models[n]["schema"] for n in models if n.startswith("int_")} == {"intermediate"}
    unit_tests = manifest.get("unit_tests", {})
    assert {test["model"] for test in unit_tests.values()} >= {
        "int_labeled_predictions", "fct_model_quality", "retrain_signals", "fct_experiment"}  # fmt: skip
    assert {models[n]["config"]["materialized"] for n in ("model_health", "retrain_signals")} == {"table"}


def test_a_broken_project_raises_with_dbt_s_reason(tmp_path):
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: broken\nversion: '1.0'\nconfig-version: 2\nprofile: driftloop\n"
    )
    (project / "profiles.yml").write_text((metrics.DBT_PROJECT_DIR / "profiles.yml").read_text())
    (project / "models" / "orphan.sql").write_text("select * from {{ ref('no_such_model') }}\n")
    with pytest.raises(metrics.DbtRunError, match="no_such_model"):
        metrics.run_dbt(
            ["parse"], SOCKET_URL, project_dir=project, target_path=tmp_path / "t", log_path=tmp_path / "l"
        )
