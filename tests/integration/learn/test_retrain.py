"""Retraining against a real warehouse (PostgreSQL), a real MLflow store (SQLite + artifacts on disk),
real LightGBM / scikit-learn training and real dbt builds of marts.retrain_signals.

GIVEN three days of labelled churn traffic ingested from landed files, and a champion bootstrapped
from simulated example data; WHEN a retrain runs (and is retried, crashes, fails, races); THEN the
registry, ops.retrain_runs, the alerts outbox and the reference profiles say exactly what happened.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from driftloop.learn import registry, retrain
from driftloop.monitor import dbt_runner as metrics
from driftloop.sim import examples
from training_data import (
    NOW,
    TRAFFIC_START,
    fast_spec,
    load_traffic,
    restore_mlflow_store,
    sync,
    traffic,
    use_mlflow_store,
)


def query(url: str, statement: str, params=()) -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return cursor.execute(statement, params).fetchall()


def versions(model_name: str) -> list:
    return sorted(registry.client().search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version))


def alias(model_name: str, name: str) -> str | None:
    found = registry.version_by_alias(model_name, name)
    return found.version if found else None


@pytest.fixture(scope="module")
def world(admin_url, tmp_path_factory):
    """A warehouse with 3 days of churn traffic (labels with a 2 h mean delay), a champion (version 1)
    bootstrapped from simulated data, and a first challenger (version 2) trained on the warehouse."""
    from conftest import drop_database, new_database

    tmp = tmp_path_factory.mktemp("retrain")
    previous = use_mlflow_store(tmp / "mlflow")
    url = new_database(admin_url)
    spec = fast_spec()
    try:
        sync(url, spec)
        frame = traffic(spec, TRAFFIC_START, NOW, per_hour=120)
        load_traffic(url, spec, tmp / "landing", frame, "traffic")
        bootstrap = examples.bootstrap(url, spec, rows=4000, training_end=TRAFFIC_START)
        first = retrain.run_retrain(url, spec, run_key="test/first", trigger="manual", reason="first challenger",
                                    evidence={"test": True}, as_of=NOW, respect_cooldown=False)  # fmt: skip
        yield {"url": url, "spec": spec, "tmp": tmp, "frame": frame, "bootstrap": bootstrap, "first": first}
    finally:
        drop_database(admin_url, url)
        restore_mlflow_store(previous)


# ------------------------------------------------------------------------------------------------
# bootstrap and a successful retrain


def test_bootstrap_registers_the_first_champion_once(world):
    url, spec = world["url"], world["spec"]
    assert world["bootstrap"]["status"] == "succeeded" and world["bootstrap"]["model_version"] == "1"
    assert examples.bootstrap(url, spec) == {"status": "exists", "model_version": "1"}
    assert alias(spec.name, "champion") == "1"
    rows = query(url, "select alias, model_version from ops.model_aliases where model_name = %s order by alias", (spec.name,))
    assert rows == [{"alias": "challenger", "model_version": "2"}, {"alias": "champion", "model_version": "1"}]
    (boot,) = query(url, "select * from ops.retrain_runs where trigger = 'bootstrap'")
    assert boot["status"] == "succeeded" and boot["data_source"] == "simulated" and boot["alias"] == "champion"


def test_retrain_registers_a_challenger_and_leaves_the_champion(world):
    url, spec, first = world["url"], world["spec"], world["first"]
    assert first["status"] == "succeeded" and first["model_version"] == "2"
    assert alias(spec.name, "challenger") == "2"
    assert alias(spec.name, "champion") == "1"  # untouched
    (run,) = query(url, "select * from ops.retrain_runs where run_key = 'test/first'")
    assert run["status"] == "succeeded" and run["model_version"] == "2" and run["trigger"] == "manual"
    assert run["data_source"] == "warehouse" and len(run["data_hash"]) == 64
    labelled = int(world["frame"]["labelled"].sum())
    assert run["n_train"] + run["n_validation"] + run["n_holdout"] == labelled
    assert run["labels_loaded_until"] is not None
    assert set(run["metrics"]["candidates"]) == {"lightgbm", "logistic_regression", "lightgbm_warm_start"}
    assert 0.5 < run["metrics"]["holdout"]["roc_auc"] <= 1
    assert abs(sum(run["feature_importance"]["gain"].values()) - 1) < 1e-9
    assert run["mlflow_run_id"] == registry.version_by_alias(spec.name, "challenger").run_id


def test_the_registered_model_predicts_what_the_in_process_model_predicted(world):
    import mlflow

    spec = world["spec"]
    run_id = world["first"]["mlflow_run_id"]
    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data/holdout.parquet"))
    loaded = registry.load_model(spec.name, "challenger")
    served = loaded.predict(holdout[[f.name for f in spec.features]])
    for cls in spec.classes:
        np.testing.assert_array_equal(served[cls].to_numpy(), holdout[f"score.{cls}"].to_numpy())
    assert (served["prediction"].to_numpy() == holdout["prediction"].to_numpy()).all()


def test_the_split_is_by_time_and_the_holdout_is_newest(world):
    import mlflow

    run_id = world["first"]["mlflow_run_id"]
    train = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data/train.parquet"))
    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data/holdout.parquet"))
    assert train["request_ts"].max() < holdout["request_ts"].min()
    (run,) = query(world["url"], "select * from ops.retrain_runs where run_key = 'test/first'")
    assert run["holdout_start"] == holdout["request_ts"].min().to_pydatetime()
    assert run["holdout_end"] == holdout["request_ts"].max().to_pydatetime()


def test_the_mlflow_run_holds_what_an_audit_needs(world, tmp_path):
    import mlflow

    run = registry.client().get_run(world["first"]["mlflow_run_id"])
    assert run.data.params["trigger"] == "manual" and run.data.params["winner"] in {
        "lightgbm", "logistic_regression", "lightgbm_warm_start"}  # fmt: skip
    assert run.data.params["data_hash"] == query(world["url"], "select data_hash from ops.retrain_runs where run_key = 'test/first'")[0]["data_hash"]
    assert "holdout.roc_auc" in run.data.metrics and "lightgbm.validation.roc_auc" in run.data.metrics
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path)))
    for artifact in ("report/report.md", "report/roc.png", "report/importance.png", "config/spec.yaml",
                     "config/trigger.json", "data/data_version.json", "environment/packages.json",
                     "importance/feature_importance.json", "reference/reference.bin", "reference/bin_edges.json"):  # fmt: skip
        assert (folder / artifact).is_file(), artifact
    data_version = json.loads((folder / "data/data_version.json").read_text())
    assert "raw.predictions" in data_version["query"] and data_version["content_hash"] == run.data.params["data_hash"]
    assert "lightgbm" in json.loads((folder / "environment/packages.json").read_text())
    assert "Training report: churn" in (folder / "report/report.md").read_text()


def test_the_reference_profile_of_the_training_data_is_stored_for_the_new_version(world):
    rows = query(world["url"], "select model_version, n_rows, source from profiles.reference_profiles order by model_version")
    assert [r["model_version"] for r in rows] == ["1", "2"]
    (run,) = query(world["url"], "select n_train from ops.retrain_runs where run_key = 'test/first'")
    assert rows[1]["n_rows"] == run["n_train"] and rows[1]["source"]["kind"] == "training data (warehouse)"


# ------------------------------------------------------------------------------------------------
# retries, crashes, failures, races


def test_a_retried_run_does_not_register_a_second_version(world):
    url, spec = world["url"], world["spec"]
    before = len(versions(spec.name))
    again = retrain.run_retrain(url, spec, run_key="test/first", trigger="manual", reason="retry", respect_cooldown=False)
    assert again["status"] == "done" and again["model_version"] == "2"
    assert len(versions(spec.name)) == before


def test_a_crash_after_registration_is_finished_by_the_retry_without_training_again(world, monkeypatch):
    url, spec = world["url"], world["spec"]
    real_set_alias = registry.set_alias

    def crash(*args, **kwargs):
        raise ConnectionError("worker lost between registration and alias")

    monkeypatch.setattr(registry, "set_alias", crash)
    with pytest.raises(ConnectionError):
        retrain.run_retrain(url, spec, run_key="test/crash", trigger="manual", reason="crash", as_of=NOW, respect_cooldown=False)
    (crashed,) = query(url, "select * from ops.retrain_runs where run_key = 'test/crash'")
    assert crashed["status"] == "failed" and "worker lost" in crashed["error"]
    registered = registry.version_for_run_key(spec.name, "test/crash")
    assert registered is not None
    assert alias(spec.name, "challenger") == "2" and alias(spec.name, "champion") == "1"  # nothing moved
    alerts = query(url, "select * from ops.alerts where source = 'retrain' and details ->> 'run_key' = 'test/crash'")
    assert len(alerts) == 1 and "the champion still serves" in alerts[0]["summary"]

    monkeypatch.setattr(registry, "set_alias", real_set_alias)
    n_versions = len(versions(spec.name))
    resumed = retrain.run_retrain(url, spec, run_key="test/crash", trigger="manual", reason="crash", respect_cooldown=False)
    assert resumed["status"] == "succeeded" and resumed["model_version"] == registered.version
    assert "train_lightgbm" not in resumed["timings"]  # it did not train again
    assert len(versions(spec.name)) == n_versions
    (done,) = query(url, "select * from ops.retrain_runs where run_key = 'test/crash'")
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["error"] is None
    assert alias(spec.name, "challenger") == registered.version and alias(spec.name, "champion") == "1"


def test_a_failed_training_records_the_error_alerts_and_touches_nothing(world):
    url = world["url"]
    spec = fast_spec(window="1d")
    n_versions = len(versions(spec.name))
    aliases = (alias(spec.name, "champion"), alias(spec.name, "challenger"))
    long_after = NOW + timedelta(days=30)  # no traffic in the day before: nothing to train on
    with pytest.raises(Exception, match="labelled rows"):
        retrain.run_retrain(url, spec, run_key="test/empty", trigger="volume", reason="t", as_of=long_after, respect_cooldown=False)
    (run,) = query(url, "select * from ops.retrain_runs where run_key = 'test/empty'")
    assert run["status"] == "failed" and "training needs at least 300" in run["error"] and run["model_version"] is None
    assert query(url, "select count(*) as n from ops.alerts where source = 'retrain' and details ->> 'run_key' = 'test/empty'") == [{"n": 1}]
    assert len(versions(spec.name)) == n_versions
    assert (alias(spec.name, "champion"), alias(spec.name, "challenger")) == aliases


def test_one_training_at_a_time_and_the_cooldown(warehouse_url):
    spec = fast_spec()
    sync(warehouse_url, spec)
    results: list[retrain.Begun] = []
    barrier = threading.Barrier(2)

    def start(key: str) -> None:
        barrier.wait()
        results.append(retrain.begin(warehouse_url, spec, run_key=key, trigger="volume", reason="race"))

    threads = [threading.Thread(target=start, args=(f"race/{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in results) == ["busy", "started"]
    # the database itself refuses a second running training, whoever asks
    with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(warehouse_url) as conn:
        conn.execute(
            "insert into ops.retrain_runs (model_name, run_key, trigger, reason, status) values (%s, 'sneaky', 'manual', 'x', 'running')",
            (spec.name,),
        )
    started = next(r for r in results if r.status == "started")
    with psycopg.connect(warehouse_url) as conn:
        conn.execute(
            "update ops.retrain_runs set status = 'succeeded', model_version = '9', finished_at = now() where retrain_run_id = %s",
            (started.retrain_run_id,),
        )
    cooling = retrain.begin(warehouse_url, spec, run_key="after/1", trigger="volume", reason="again")
    assert cooling.status == "cooling_down"
    manual = retrain.begin(warehouse_url, spec, run_key="after/2", trigger="manual", reason="asked", respect_cooldown=False)
    assert manual.status == "started"
    # a "running" row older than the training timeout is taken as a dead worker
    later = retrain.begin(warehouse_url, spec, run_key="after/3", trigger="volume", reason="later",
                          now=started_at(warehouse_url, "after/2") + timedelta(hours=13))  # fmt: skip
    assert later.status == "started"
    (dead,) = query(warehouse_url, "select status, error from ops.retrain_runs where run_key = 'after/2'")
    assert dead["status"] == "failed" and dead["error"].startswith("abandoned")


def started_at(url: str, run_key: str):
    return query(url, "select started_at from ops.retrain_runs where run_key = %s", (run_key,))[0]["started_at"]


# ------------------------------------------------------------------------------------------------
# marts.retrain_signals on real data


@pytest.mark.slow
def test_retrain_signals_count_new_labels_and_hold_the_cooldown(world):
    url, spec, tmp = world["url"], world["spec"], world["tmp"]
    (first,) = query(url, "select labels_loaded_until, started_at from ops.retrain_runs where run_key = 'test/first'")
    later = traffic(spec, NOW - timedelta(hours=6), NOW, per_hour=300, seed=12)
    new_labels = load_traffic(url, spec, tmp / "landing", later, "later")
    expected = query(
        url,
        "select count(distinct prediction_id) as n from raw.feedback where model_name = %s and loaded_at > "
        "(select max(labels_loaded_until) from ops.retrain_runs where status = 'succeeded' and data_source = 'warehouse')",
        (spec.name,),
    )[0]["n"]
    assert expected == new_labels > spec.retraining.triggers.volume.min_new_labels
    dbt = {"target_path": tmp / "target", "log_path": tmp / "logs"}
    last_start = query(url, "select max(started_at) as t from ops.retrain_runs")[0]["t"]
    loaded = query(url, "select max(loaded_at) as t from raw.feedback")[0]["t"]
    assert loaded + timedelta(minutes=1) < last_start + spec.retraining.cooldown

    metrics.build(url, select=["+retrain_signals"], as_of=loaded + timedelta(minutes=1), **dbt)
    (signal,) = query(url, "select * from marts.retrain_signals")
    assert signal["n_new_labels"] == expected and signal["volume_fired"]
    assert signal["is_cooling_down"] and not signal["should_retrain"] and signal["reason"].startswith("cooling down")
    assert not retrain.check_gate(url, spec.name).fire

    metrics.build(url, select=["retrain_signals"], as_of=last_start + spec.retraining.cooldown + timedelta(minutes=1), **dbt)
    (signal,) = query(url, "select * from marts.retrain_signals")
    assert signal["should_retrain"] and not signal["is_cooling_down"] and signal["champion_version"] == "1"
    assert f"{expected} new labels since the last training" in signal["reason"]
    gate = retrain.check_gate(url, spec.name)
    assert gate.fire and gate.trigger == signal["primary_trigger"] and gate.evidence["n_new_labels"] == expected


# ------------------------------------------------------------------------------------------------
# the offline gate on the registered models


def _policy(spec, **gate):
    payload = spec.model_dump(mode="json")
    payload["promotion"]["offline_gate"].update(gate)
    return type(spec).model_validate(payload)


def test_the_offline_gate_records_every_check_and_a_pass_moves_nothing(world):
    from driftloop.promote.gate import run_offline_gate

    url = world["url"]
    spec = _policy(world["spec"], min_relative_auc_gain=0.0, max_latency_ratio=100.0, max_ece_increase=1.0,
                   max_segment_auc_drop=1.0, min_importance_rank_correlation=-1.0)  # fmt: skip
    challenger = alias(spec.name, "challenger")
    result = run_offline_gate(url, spec)
    (decision,) = query(url, "select * from ops.decisions where step = 'offline_gate'")
    checks = {c["name"]: c for c in decision["evidence"]["checks"]}
    assert set(checks) == {"auc_gain", "latency_ratio", "ece_increase", "segment_auc_drop", "importance_rank_correlation"}
    assert decision["evidence"]["challenger_version"] == challenger and decision["evidence"]["champion_version"] == "1"
    # the challenger learnt this traffic; the champion learnt simulated example data of another world
    assert checks["auc_gain"]["value"] > 0
    assert result.passed and decision["decision"] == "pass"
    assert (alias(spec.name, "champion"), alias(spec.name, "challenger")) == ("1", challenger)


def test_a_failed_offline_gate_removes_the_challenger_alias_and_says_why(world):
    from driftloop.promote.gate import run_offline_gate

    url = world["url"]
    spec = _policy(world["spec"], min_relative_auc_gain=5.0)  # 500 % better: impossible
    challenger = alias(spec.name, "challenger")
    result = run_offline_gate(url, spec, airflow_run_id="manual__test")
    assert not result.passed and "relative gain" in result.reason
    (decision,) = query(url, "select * from ops.decisions where step = 'offline_gate' and decision = 'fail'")
    assert decision["airflow_run_id"] == "manual__test" and decision["reason"] == result.reason
    assert alias(spec.name, "challenger") is None and alias(spec.name, "champion") == "1"
    assert query(url, "select count(*) as n from ops.model_aliases where alias = 'challenger'") == [{"n": 0}]
    tags = registry.client().get_model_version(spec.name, challenger).tags
    assert tags["driftloop.status"] == "rejected" and "relative gain" in tags["driftloop.rejected_because"]
    (alert,) = query(url, "select * from ops.alerts where source = 'promote'")
    assert f"version {challenger} rejected by the offline gate" in alert["summary"]
