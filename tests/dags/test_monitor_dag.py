"""monitor__churn run for real with dag.test(): a quality drop and a drift in real marts (simulated traffic
ingested, profiled against the version's reference, dbt build) reach a local Slack and PagerDuty as exactly
the expected messages; once the condition clears for two windows, exactly the resolutions arrive."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml
from fake_providers import FakeProviders, connection_env

from driftloop.core.spec import get_spec, load_spec
from driftloop.core.warehouse import sync_specs
from driftloop.ingest.loader import ingest
from driftloop.monitor.dbt_runner import build
from driftloop.monitor.profiling import profile_windows
from driftloop.sim.examples import store_simulated_reference
from driftloop.sim.world import (
    ConceptDrift,
    CovariateShift,
    Scenario,
    feedback_lines,
    generate_predictions,
    prediction_lines,
)
from landing import land

pytestmark = [pytest.mark.dags, pytest.mark.slow]

DRIFT_DAY = datetime(2026, 11, 18, tzinfo=UTC)  # concept drift and a covariate shift
HEALTHY_DAYS = [DRIFT_DAY + timedelta(days=1), DRIFT_DAY + timedelta(days=2)]


def monitor_spec(folder):
    """The churn spec with two rules: accuracy below 0.70 on a mature day (critical) and feature drift
    (warning); resolved after two clear days."""
    payload = get_spec("churn").model_dump(mode="json")
    payload["alerts"]["rules"] = [
        {"name": "quality_floor", "mart": "fct_model_quality", "column": "accuracy", "comparator": "<",
         "threshold": 0.70, "window_size": "day", "min_samples": 1000, "severity": "critical"},
        {"name": "feature_drift", "mart": "fct_feature_drift", "column": "is_drifted", "comparator": "==",
         "threshold": True, "window_size": "day", "min_samples": 1000, "severity": "warning"},
    ]  # fmt: skip
    payload["alerts"]["resolve_after"] = 2
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "churn.yaml").write_text(yaml.safe_dump(payload, sort_keys=False))
    return load_spec(folder / "churn.yaml")


def land_day(url, spec, root, day: datetime, scenario: Scenario, name: str) -> None:
    frame = generate_predictions(spec, 4800, day, day + timedelta(days=1), scenario)
    now = day + timedelta(days=1, hours=6)
    frame.loc[frame["feedback_ts"] > now, "labelled"] = False
    land(root, spec.name, "predictions", f"{name}.jsonl", prediction_lines(frame), day=f"{day:%Y-%m-%d}", now=now)
    land(root, spec.name, "feedback", f"{name}.jsonl", feedback_lines(frame), day=f"{day:%Y-%m-%d}", now=now)
    result = ingest(spec, landing_root=str(root), url=url, now=now)
    assert result.rows_rejected == 0, [f.reasons for f in result.files]
    profile_windows(url, spec, day, day + timedelta(days=1), now=now)


def run_monitor(dag, now: datetime):
    run = dag.test(logical_date=now, run_conf={"now": now.isoformat()})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "success", states
    return run


def test_a_quality_drop_and_a_drift_reach_slack_and_pagerduty_once_and_their_resolutions_after(
    airflow_db, warehouse_url, tmp_path, monkeypatch
):
    # GIVEN version 1's reference (the healthy world), one day of traffic after a concept drift and a
    # covariate shift of tenure_months, labels in, marts built, and Slack (bot) and PagerDuty connections
    spec = monitor_spec(tmp_path / "specs")
    monkeypatch.setenv("DRIFTLOOP_SPECS_DIR", str(tmp_path / "specs"))
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    fake = FakeProviders(tmp_path / "tls")
    for key, value in connection_env(fake).items():
        monkeypatch.setenv(key, value)
    sync_specs(warehouse_url, {spec.name: spec})
    store_simulated_reference(warehouse_url, spec, "1", training_end=DRIFT_DAY - timedelta(days=1), rows=20_000)
    drifted = Scenario(seed=42, label_delay_mean=timedelta(hours=1), label_rate=0.9,
                       concept_drift=ConceptDrift(DRIFT_DAY, strength=1.0),
                       covariate_shift=[CovariateShift(DRIFT_DAY, "tenure_months", 1.5)])  # fmt: skip
    land_day(warehouse_url, spec, tmp_path / "landing", DRIFT_DAY, drifted, "drifted")
    dbt = {"target_path": tmp_path / "dbt" / "target", "log_path": tmp_path / "dbt" / "logs"}
    build(warehouse_url, as_of=DRIFT_DAY + timedelta(days=1, hours=6), **dbt)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag("monitor__churn")
    assert [rule.name for rule in spec.alerts.rules] == ["quality_floor", "feature_drift"]

    try:
        # WHEN monitor__churn runs after the drifted day, then again half an hour later
        run_monitor(dag, DRIFT_DAY + timedelta(days=1, hours=6))
        run_monitor(dag, DRIFT_DAY + timedelta(days=1, hours=6, minutes=30))

        # THEN Slack got one message per alert (quality: critical, drift: warning, naming tenure_months),
        # PagerDuty one trigger (the critical one), and the repeat sent nothing
        messages = fake.top_level_messages()
        assert len(messages) == 2, [m["text"] for m in messages]
        quality, drift = sorted(messages, key=lambda m: "drift" in m["text"])
        assert "[CRITICAL]" in quality["text"] and "accuracy" in quality["text"]
        assert "[WARNING]" in drift["text"] and "tenure_months" in json.dumps(drift["blocks"])
        (trigger,) = fake.pagerduty_events()
        assert trigger["event_action"] == "trigger" and trigger["payload"]["severity"] == "critical"
        assert "quality_floor" in trigger["payload"]["component"]

        # WHEN two healthy days arrive, and the monitor runs after each
        healthy = Scenario(seed=42, label_delay_mean=timedelta(hours=1), label_rate=0.9)
        for i, day in enumerate(HEALTHY_DAYS):
            land_day(warehouse_url, spec, tmp_path / "landing", day, healthy, f"healthy-{i}")
        build(warehouse_url, as_of=HEALTHY_DAYS[-1] + timedelta(days=1, hours=6), **dbt)
        run_monitor(dag, HEALTHY_DAYS[0] + timedelta(days=1, hours=6))
        assert len(fake.messages) == 2  # one clear window: not resolved yet
        run_monitor(dag, HEALTHY_DAYS[1] + timedelta(days=1, hours=6))

        # THEN exactly the two resolutions, in each alert's thread, and PagerDuty's resolve
        replies = [m for m in fake.messages if m.get("thread_ts")]
        assert len(replies) == 2 and len(fake.top_level_messages()) == 2
        assert {r["thread_ts"] for r in replies} == {quality["ts"], drift["ts"]}
        assert all("Resolved" in r["text"] for r in replies)
        assert [e["event_action"] for e in fake.pagerduty_events()] == ["trigger", "resolve"]
        assert fake.pagerduty_events()[1]["dedup_key"] == trigger["dedup_key"]
        with psycopg.connect(warehouse_url) as conn:
            states = conn.execute("select rule_name, status from ops.alerts order by alert_id").fetchall()
            undelivered = conn.execute(
                "select count(*) from ops.alert_deliveries where status not in ('sent')").fetchone()[0]  # fmt: skip
        assert sorted(states) == [("feature_drift", "resolved"), ("quality_floor", "resolved")]
        assert undelivered == 0
    finally:
        fake.close()
