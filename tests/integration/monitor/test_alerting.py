"""The spec's alert rules evaluated on real marts (the dbt project's tables, built empty, then given the
rows of each case): latest complete qualifying window, maturity and sample sizes, thresholds absolute and
relative (holdout, trailing median, ingest intervals), one alert listing the drifted features, updates,
resolution after clear windows, idempotent reruns, segments, silences."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from driftloop.core import alerts, warehouse
from driftloop.core.spec import ModelSpec, get_spec
from driftloop.monitor.alerting import evaluate_rules
from driftloop.monitor.dbt_runner import run_dbt

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # dbt creates the marts once (about a minute)

DAY = datetime(2026, 11, 19, tzinfo=UTC)
NOW = DAY + timedelta(days=1, hours=12)  # the 19th is complete, the 20th is not


@pytest.fixture(scope="module")
def marts_template(admin_url, tmp_path_factory):
    """A migrated database whose marts dbt created (empty), cloned by each test."""
    from conftest import new_database

    url = new_database(admin_url)
    warehouse.sync_specs(url)
    scratch = tmp_path_factory.mktemp("dbt")
    run_dbt(["run", "--select", "+marts"], url, target_path=scratch / "target", log_path=scratch / "logs")
    yield url
    warehouse.drop_database(admin_url, url)


@pytest.fixture
def url(admin_url, marts_template):
    template = psycopg.conninfo.conninfo_to_dict(marts_template)["dbname"]
    url = warehouse.create_database(admin_url, f"dl_test_{uuid.uuid4().hex[:12]}", template)
    with psycopg.connect(url) as conn:
        conn.execute("insert into ops.model_aliases (model_name, alias, model_version) values ('churn', 'champion', '1')")
        conn.execute(
            "insert into ops.retrain_runs (model_name, run_key, trigger, reason, status, model_version, metrics, finished_at) "
            "values ('churn', 'test', 'bootstrap', 't', 'succeeded', '1', "
            "'{\"holdout\": {\"precision\": 0.82, \"accuracy\": 0.85}}', %s)",
            (DAY - timedelta(days=10),),
        )
    yield url
    warehouse.drop_database(admin_url, url)


def spec_with(*rules: dict, resolve_after: int = 2) -> ModelSpec:
    payload = get_spec("churn").model_dump(mode="json")
    payload["alerts"]["rules"] = list(rules)
    payload["alerts"]["resolve_after"] = resolve_after
    return ModelSpec.model_validate(payload)


QUALITY = {"name": "quality_floor", "mart": "fct_model_quality", "column": "precision", "comparator": "<",
           "relative": {"baseline": "holdout", "change": -0.15}, "window_size": "day", "min_samples": 200,
           "severity": "critical"}  # fmt: skip
DRIFT = {"name": "feature_drift", "mart": "fct_feature_drift", "column": "is_drifted", "comparator": "==",
         "threshold": True, "window_size": "day", "min_samples": 200, "severity": "warning"}  # fmt: skip
LATENCY = {"name": "latency_p95_degradation", "mart": "fct_latency", "column": "latency_p95_ms", "comparator": ">",
           "relative": {"baseline": "trailing", "change": 0.5, "windows": 24}, "window_size": "hour",
           "min_samples": 50, "severity": "warning"}  # fmt: skip
NO_DATA = {"name": "no_data", "mart": "model_health", "column": "seconds_since_latest_load", "comparator": ">",
           "ingest_intervals": 4, "severity": "warning"}  # fmt: skip


def quality(url, day, precision, *, n=500, mature=True, segment="(all)", version="1"):
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into marts.fct_model_quality (model_name, model_version, variant, segment, window_size, window_start, "
            "window_end, n_labelled, precision, is_mature) values ('churn', %s, 'control', %s, 'day', %s, %s, %s, %s, %s)",
            (version, segment, day, day + timedelta(days=1), n, precision, mature),
        )


def drift(url, day, drifted: dict[str, bool], n=500):
    with psycopg.connect(url) as conn:
        for feature, is_drifted in drifted.items():
            conn.execute(
                "insert into marts.fct_feature_drift (model_name, model_version, variant, segment, window_size, "
                "window_start, window_end, feature, n_values, psi, js_distance, is_drifted) "
                "values ('churn', '1', 'control', '(all)', 'day', %s, %s, %s, %s, %s, %s, %s)",
                (day, day + timedelta(days=1), feature, n, 0.3 if is_drifted else 0.01, 0.2 if is_drifted else 0.02, is_drifted),
            )


def latency(url, hour, p95, n=100):
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into marts.fct_latency (model_name, model_version, variant, segment, window_size, window_start, "
            "window_end, n_predictions, latency_p95_ms) values ('churn', '1', 'control', '(all)', 'hour', %s, %s, %s, %s)",
            (hour, hour + timedelta(hours=1), n, p95),
        )


def state(url) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select rule_name, segment, status, severity, n_evaluations, latest_value, "
            "(select array_agg(channel || ':' || event order by delivery_id) from ops.alert_deliveries d "
            " where d.alert_id = a.alert_id) from ops.alerts a order by alert_id"
        ).fetchall()


def outcome(report, rule="quality_floor", segment="(all)"):
    return next(o for o in report.outcomes if o.rule == rule and o.segment == segment)


# --------------------------------------------------------------------------------------------------


def test_quality_below_the_holdout_floor_on_the_latest_mature_window_pages(url):
    # GIVEN holdout precision 0.82 (floor 0.82 x 0.85 = 0.697): the 18th fine, the 19th at 0.61,
    # the 20th worse but not complete, and a 19th of another segment too small to count
    spec = spec_with(QUALITY)
    quality(url, DAY - timedelta(days=1), 0.80)
    quality(url, DAY, 0.61)
    quality(url, DAY + timedelta(days=1), 0.30)  # not complete at NOW
    quality(url, DAY, 0.10, n=50, segment="eu")

    # WHEN the rules are evaluated, twice (a rerun of the same look)
    report = evaluate_rules(url, spec, now=NOW)
    rerun = evaluate_rules(url, spec, now=NOW + timedelta(minutes=30))

    # THEN one critical alert about the 19th, routed to PagerDuty and Slack; the rerun changes nothing
    first = outcome(report)
    assert first.result == "opened" and first.window_start == DAY
    assert first.value == pytest.approx(0.61) and first.threshold == pytest.approx(0.82 * 0.85)
    assert outcome(rerun).result == "unchanged"
    assert state(url) == [("quality_floor", "(all)", "firing", "critical", 1, 0.61, ["pagerduty:trigger", "slack:trigger"])]
    with psycopg.connect(url) as conn:
        summary, details = conn.execute("select summary, details from ops.alerts").fetchone()
    assert "precision 0.61 below 0.697" in summary and "2026-11-19" in summary
    assert "holdout 0.82" in details["threshold_reason"] and details["window"]["n"] == 500


def test_immature_or_small_windows_say_nothing(url):
    spec = spec_with(QUALITY)
    quality(url, DAY, 0.40, mature=False)
    quality(url, DAY - timedelta(days=1), 0.40, n=100)

    report = evaluate_rules(url, spec, now=NOW)

    assert outcome(report).result == "not_evaluated" and state(url) == []


def test_a_condition_resolves_after_two_clear_windows_and_the_resolution_is_sent(url):
    spec = spec_with(QUALITY)
    quality(url, DAY, 0.61)
    evaluate_rules(url, spec, now=NOW)
    quality(url, DAY + timedelta(days=1), 0.80)
    counted = evaluate_rules(url, spec, now=NOW + timedelta(days=1))
    again = evaluate_rules(url, spec, now=NOW + timedelta(days=1, hours=1))  # the same clear window: counted once
    quality(url, DAY + timedelta(days=2), 0.81)
    resolved = evaluate_rules(url, spec, now=NOW + timedelta(days=2))

    assert (outcome(counted).result, outcome(again).result, outcome(resolved).result) == ("counted", "counted", "resolved")
    ((*_, status, _, _, _, channels),) = state(url)
    assert status == "resolved" and channels == ["pagerduty:trigger", "slack:trigger", "pagerduty:resolve", "slack:resolve"]
    # a new breach later is a new alert
    quality(url, DAY + timedelta(days=3), 0.50)
    assert outcome(evaluate_rules(url, spec, now=NOW + timedelta(days=3))).result == "opened"
    assert [row[2] for row in state(url)] == ["resolved", "firing"]


def test_many_features_drifting_make_one_alert_listing_them_and_more_of_them_an_update(url):
    spec = spec_with(DRIFT)
    drift(url, DAY, {"tenure_months": True, "age": True, "plan": True, "sessions_7d": False})

    first = evaluate_rules(url, spec, now=NOW)
    drift(url, DAY + timedelta(days=1), {"tenure_months": True, "age": True, "plan": True, "sessions_7d": True})
    second = evaluate_rules(url, spec, now=NOW + timedelta(days=1))

    assert outcome(first, "feature_drift").result == "opened"
    assert sorted(outcome(first, "feature_drift").value) == ["age", "plan", "tenure_months"]
    assert outcome(second, "feature_drift").result == "updated"
    ((rule, _, status, severity, n, value, channels),) = state(url)
    assert (rule, status, severity, n) == ("feature_drift", "firing", "warning", 2)
    assert sorted(value) == ["age", "plan", "sessions_7d", "tenure_months"]
    assert channels == ["slack:trigger", "slack:update"]
    with psycopg.connect(url) as conn:
        (summary,) = conn.execute("select summary from ops.alerts").fetchone()
    assert summary.startswith("churn: 4 feature(s) drifted")


def test_latency_against_the_median_of_the_previous_windows(url):
    spec = spec_with(LATENCY)
    start = DAY + timedelta(days=1)
    for i in range(24):
        latency(url, start - timedelta(hours=24 - i), 20.0 + (i % 3))
    latency(url, start, 25.0)

    calm = evaluate_rules(url, spec, now=start + timedelta(hours=1))
    latency(url, start + timedelta(hours=1), 40.0)
    slow = evaluate_rules(url, spec, now=start + timedelta(hours=2))

    assert outcome(calm, "latency_p95_degradation").result == "nothing", calm.outcomes
    hit = outcome(slow, "latency_p95_degradation")
    assert hit.result == "opened" and hit.threshold == pytest.approx(21.0 * 1.5)


def test_no_data_for_four_ingest_intervals_warns_then_resolves_when_files_load_again(url):
    spec = spec_with(NO_DATA)
    with psycopg.connect(url) as conn:
        conn.execute("delete from marts.model_health")  # dbt built a row per spec (no traffic yet)
        conn.execute("insert into marts.model_health (model_name, latest_loaded_at) values ('churn', %s)",
                     (NOW - timedelta(minutes=45),))  # fmt: skip

    fresh = evaluate_rules(url, spec, now=NOW)
    stale = evaluate_rules(url, spec, now=NOW + timedelta(minutes=30))  # 75 min > 4 x 15 min
    with psycopg.connect(url) as conn:
        conn.execute("update marts.model_health set latest_loaded_at = %s", (NOW + timedelta(minutes=40),))
    clear_1 = evaluate_rules(url, spec, now=NOW + timedelta(minutes=45))
    clear_2 = evaluate_rules(url, spec, now=NOW + timedelta(minutes=60))

    assert outcome(fresh, "no_data").result == "nothing", fresh.outcomes
    assert outcome(stale, "no_data").result == "opened" and outcome(stale, "no_data").threshold == 3600
    assert (outcome(clear_1, "no_data").result, outcome(clear_2, "no_data").result) == ("counted", "resolved")


def test_each_segment_is_its_own_alert(url):
    spec = spec_with(QUALITY | {"segments": "each", "min_samples": 100})
    quality(url, DAY, 0.50, segment="eu")
    quality(url, DAY, 0.80, segment="na")
    quality(url, DAY, 0.60, segment="(all)")

    report = evaluate_rules(url, spec, now=NOW)

    assert {(o.segment, o.result) for o in report.outcomes} == {("(all)", "opened"), ("eu", "opened"), ("na", "nothing")}
    assert sorted(row[1] for row in state(url)) == ["(all)", "eu"]


def test_a_silenced_rule_raises_nothing_until_the_silence_ends(url):
    spec = spec_with(QUALITY)
    quality(url, DAY, 0.61)
    with psycopg.connect(url) as conn, conn.transaction():
        alerts.silence(conn, "churn", "quality_floor", NOW + timedelta(hours=6), "on it")

    silenced = evaluate_rules(url, spec, now=NOW)
    later = evaluate_rules(url, spec, now=NOW + timedelta(hours=7))

    assert outcome(silenced).result == "silenced" and outcome(later).result == "opened"
