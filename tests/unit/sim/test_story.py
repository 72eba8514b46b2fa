"""The loop's report renders every chart as inline SVG from known numbers, with no external reference."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from driftloop.sim.loop import LoopEvent
from driftloop.sim.scenarios import get_scenario
from driftloop.sim.story import render

START = datetime(2026, 3, 2, tzinfo=UTC)


def test_the_report_is_self_contained_with_each_chart_and_the_timeline():
    days = [START + timedelta(days=i) for i in range(6)]
    data = {
        "quality": [(d, "1", "control", 0.82 - 0.05 * (i >= 3), 900) for i, d in enumerate(days)]
        + [(days[4], "2", "challenger", 0.81, 120), (days[5], "2", "control", 0.83, 900)],
        "drift": [(d, f, 0.02 + 0.1 * (f == "tenure_months" and i >= 3), ) for i, d in enumerate(days)
                  for f in ("tenure_months", "plan")],
        "looks": [(days[4] + timedelta(hours=h), "churn-v1-vs-v2", "continue", 0.05, -0.1 + 0.02 * h, 0.2) for h in range(4)],
        "allocation": [(days[4] + timedelta(hours=h), 0.1 if h < 12 else 0.25, 300) for h in range(24)],
    }  # fmt: skip
    events = [LoopEvent(days[3], "retrain", "degradation: accuracy fell -> version 2"),
              LoopEvent(days[4], "allocation", "start: canary 10% <script>", {"decision": "start"}),
              LoopEvent(days[5], "promotion", "promoted: version 2")]  # fmt: skip
    summary = {"requests": {"control": 9000, "challenger": 1200}, "accuracy_before_drift": 0.82,
               "accuracy_during_drift": 0.77, "accuracy_after_promotion": 0.83, "time_to_promote": timedelta(days=2)}  # fmt: skip
    page = render(get_scenario("drift"), summary, data, events)
    assert page.count("<svg") == 4  # quality, drift heatmap, experiment, allocation
    assert not re.search(r"(src|href)=\"https?://", page) and "<script" not in page  # nothing fetched, text escaped
    assert "start: canary 10% &lt;script&gt;" in page and "control: 9,000, challenger: 1,200" in page
    assert "0.830" in page and "2 days, 0:00:00" in page
    empty = render(get_scenario("control"), {}, {"quality": [], "drift": [], "looks": [], "allocation": []}, [])
    assert empty.count("nothing to show yet") == 4 and "no events" in empty
