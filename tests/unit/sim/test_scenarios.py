"""The closed loop's scenarios: deterministic traffic with scheduled volume changes, data faults and
per-arm serving behaviour (no services)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from driftloop.core.spec import get_spec
from driftloop.sim import scenarios
from driftloop.sim.scenarios import ArmBehaviour, DataFault, LoopScenario, VolumeChange, arm_hooks

SPEC = get_spec("churn")
START = scenarios.DEFAULT_START


def test_intervals_cover_the_days_in_order_and_volume_changes_scale_the_rows():
    story = LoopScenario("t", "t", days=3, interval=timedelta(hours=12), rows_per_day=1000,
                         volume=(VolumeChange(START + timedelta(days=1), 3.0), VolumeChange(START + timedelta(days=2), 0.5)))  # fmt: skip
    steps = story.intervals()
    assert len(steps) == 6 and steps[0][0] == START and steps[-1][1] == story.end
    assert all(a[1] == b[0] for a, b in zip(steps, steps[1:], strict=False))
    assert [story.rows(a, b) for a, b in steps] == [500, 500, 1500, 1500, 750, 750]
    with pytest.raises(ValueError, match="divide a day"):
        LoopScenario("t", "t", interval=timedelta(hours=7))


def test_requests_are_deterministic_and_faults_hit_their_share_in_their_time_range_only():
    fault = DataFault(START + timedelta(days=1), "payment_method", "null", share=0.3, end=START + timedelta(days=2))
    unit = DataFault(START + timedelta(days=1), "monthly_charges", "unit_change", value=100.0)
    new = DataFault(START, "contract_type", "new_category", value="weekly", share=0.2)
    story = LoopScenario("t", "t", days=3, rows_per_day=4000, faults=(fault, unit, new))
    day0 = story.requests(SPEC, START, START + timedelta(hours=12))
    again = story.requests(SPEC, START, START + timedelta(hours=12))
    pd.testing.assert_frame_equal(day0, again)
    clean = LoopScenario("t", "t", days=3, rows_per_day=4000).requests(SPEC, START, START + timedelta(hours=12))
    assert 0.15 < (day0["features.contract_type"] == "weekly").mean() < 0.25
    assert day0["features.payment_method"].isna().mean() < 0.1  # the NULL fault has not started
    pd.testing.assert_series_equal(day0["features.monthly_charges"], clean["features.monthly_charges"])
    day1 = story.requests(SPEC, START + timedelta(days=1), START + timedelta(days=1, hours=12))
    clean1 = LoopScenario("t", "t", days=3, rows_per_day=4000).requests(SPEC, START + timedelta(days=1), START + timedelta(days=1, hours=12))
    assert 0.25 < day1["features.payment_method"].isna().mean() < 0.40
    ratio = (day1["features.monthly_charges"] / clean1["features.monthly_charges"]).dropna()
    assert np.allclose(ratio, 100.0)
    day2 = story.requests(SPEC, START + timedelta(days=2), START + timedelta(days=2, hours=12))
    assert day2["features.payment_method"].isna().mean() < 0.1  # the NULL fault ended


def test_arm_hooks_draw_seeded_lognormal_latency_and_errors_per_role():
    story = LoopScenario("t", "t", champion=ArmBehaviour(latency_median_ms=40, latency_sigma=0.5, error_rate=0.01),
                         challenger=ArmBehaviour(latency_median_ms=60, latency_sigma=0.5, error_rate=0.04))  # fmt: skip
    role = {"1": "champion", "2": "challenger"}.get
    latency, failure = arm_hooks(story, role, seed=1)
    champion = np.array([latency("1") for _ in range(20_000)])
    challenger = np.array([latency("2") for _ in range(20_000)])
    assert abs(np.median(champion) - 40) < 1.5 and abs(np.median(challenger) - 60) < 2.0
    assert abs(np.log(champion).std() - 0.5) < 0.02
    errors = np.array([failure("1") is not None for _ in range(20_000)]).mean()
    assert 0.007 < errors < 0.013
    assert 0.035 < np.mean([failure("2") is not None for _ in range(20_000)]) < 0.045
    again, _ = arm_hooks(story, role, seed=1)
    first, _ = arm_hooks(story, role, seed=1)
    assert [again("1") for _ in range(50)] == [first("1") for _ in range(50)]


def test_the_named_scenarios_are_valid_and_the_demo_one_has_enough_traffic():
    assert {"drift", "control", "worse_online", "data_faults"} <= set(scenarios.SCENARIOS)
    drift = scenarios.get_scenario("drift")
    assert drift.concept_drift is not None and drift.concept_drift.start == START + timedelta(days=6)
    assert sum(drift.rows(a, b) for a, b in drift.intervals()) >= 100_000
    assert scenarios.get_scenario("drift", days=4).days == 4
    with pytest.raises(KeyError, match="known"):
        scenarios.get_scenario("nope")


def test_the_serving_transform_applies_only_the_role_s_skew_to_a_copy():
    story = LoopScenario("t", "t", challenger=ArmBehaviour(serving_skew={"monthly_charges": 100.0}))
    transform = scenarios.serving_transform(story, {"1": "champion", "2": "challenger"}.get)
    frame = pd.DataFrame({"monthly_charges": [70.5, None], "plan": ["basic", "pro"]})
    assert transform("1", frame) is frame
    skewed = transform("2", frame)
    assert skewed["monthly_charges"].tolist()[0] == 7050.0 and pd.isna(skewed["monthly_charges"].tolist()[1])
    assert frame["monthly_charges"].tolist()[0] == 70.5 and skewed["plan"].tolist() == ["basic", "pro"]
