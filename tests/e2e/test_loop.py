"""The closed loop end to end: scenarios played in simulated time through the real DAGs (dag.test()),
the real router, a real MLflow store and a real warehouse; what the warehouse and the registry hold
afterwards is the story's outcome.

* ``drift``: the churn relationship changes on day 6; quality drops, a retrain fires, the challenger
  passes the offline gate, wins its live experiment, is promoted and kept by the watch, and quality
  comes back to within 2 points of where it was before the drift;
* ``control``: nothing changes; nothing is promoted and no critical alert opens;
* ``worse_online``: the challenger wins offline but its serving path reads a feature in cents: on
  live traffic it is worse, and the experiment rejects it.

Every run is seeded and its clock is simulated, so the story is the same on every machine.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest

from driftloop.sim.loop import Loop
from driftloop.sim.scenarios import get_scenario

pytestmark = [pytest.mark.dags, pytest.mark.slow]

ROWS_PER_DAY = 5_000
DAILY = timedelta(hours=24)
DRIFT = get_scenario("drift")


@pytest.fixture
def play(airflow_db, warehouse_url, tmp_path):
    """Play a scenario (days, rows a day and a daily step unless told) and return its summary, the
    loop and the warehouse URL; the environment the loop sets is restored afterwards."""
    saved = dict(os.environ)

    def run(name: str, **overrides):
        scenario = get_scenario(name, **{"rows_per_day": ROWS_PER_DAY, "interval": DAILY, **overrides})
        loop = Loop(scenario, tmp_path / name, url=warehouse_url, say=lambda line: None)
        return loop.run(), loop

    yield run, warehouse_url
    os.environ.clear()
    os.environ.update(saved)


def _rows(url: str, query: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_drift_is_detected_retrained_tested_live_promoted_and_quality_recovers(play):
    run, url = play
    # the drift story, shortened: the relationship changes on day 3 of 10
    summary, loop = run("drift", days=10, concept_drift=replace(DRIFT.concept_drift, start=DRIFT.start + timedelta(days=3)))
    story = "\n".join(summary["events"])
    drift_day = loop.scenario.concept_drift.start
    retrains = _rows(url, "select trigger, status, model_version from ops.retrain_runs "
                          "where trigger <> 'bootstrap' and started_at >= %s order by retrain_run_id", drift_day)  # fmt: skip
    assert retrains and retrains[0][0] in ("degradation", "drift") and retrains[0][1] == "succeeded", story
    experiments = _rows(url, "select challenger_version, status from ops.experiments order by started_at")
    assert experiments and experiments[0] == (retrains[0][2], "promoted"), (experiments, story)
    decisions = _rows(url, "select step, decision from ops.decisions where model_name = 'churn' order by decision_id")
    assert ("offline_gate", "pass") in decisions and ("watch", "keep") in decisions, story
    assert ("watch", "rolled_back") not in decisions, story
    # the challenger served real traffic through the router, logged as the experiment's arm
    assert summary["requests"].get("challenger", 0) > 0
    # detected within two days of the drift, promoted within the story, quality back within 2 points
    assert summary["time_to_detect"] is not None and summary["time_to_detect"] <= timedelta(days=2), story
    assert summary["time_to_promote"] is not None, story
    before, during, after = (summary[k] for k in ("accuracy_before_drift", "accuracy_during_drift", "accuracy_after_promotion"))
    assert during < before - 0.03, (before, during, story)
    assert after is not None and after >= before - 0.02, (before, during, after, story)


def test_control_promotes_nothing_and_opens_no_critical_alert(play):
    run, url = play
    summary, loop = run("control", days=5)
    assert summary["promoted_at"] is None
    assert _rows(url, "select alias, model_version from ops.model_aliases where alias = 'champion'") == [("champion", "1")]
    critical = _rows(url, "select summary from ops.alerts where severity = 'critical'")
    assert critical == []
    assert summary["requests"] == {"control": 5 * ROWS_PER_DAY}


def test_a_challenger_worse_on_live_traffic_is_rejected_and_the_champion_keeps_serving(play):
    run, url = play
    worse = get_scenario("worse_online")
    summary, loop = run("worse_online", days=7, concept_drift=replace(worse.concept_drift, start=worse.start + timedelta(days=2)))
    story = "\n".join(summary["events"])
    decisions = _rows(url, "select step, decision from ops.decisions where model_name = 'churn' order by decision_id")
    assert ("offline_gate", "pass") in decisions, story  # good offline ...
    statuses = [row[0] for row in _rows(url, "select status from ops.experiments order by started_at")]
    assert statuses and statuses[0] == "rejected" and "promoted" not in statuses, (statuses, story)  # ... worse online
    assert summary["promoted_at"] is None and summary["requests"].get("challenger", 0) > 0
    assert _rows(url, "select model_version from ops.model_aliases where alias = 'champion'") == [("1",)]
    if statuses[-1] != "running":  # a later challenger may be on trial when the story ends
        assert _rows(url, "select challenger_share from ops.traffic_allocation where model_name = 'churn'") == [(0.0,)]
