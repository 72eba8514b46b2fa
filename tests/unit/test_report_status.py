"""The status screen's layout from known facts (no services): every fact on its line, 100 columns."""

from __future__ import annotations

from datetime import UTC, datetime

from driftloop.report import format_model_status

AT = datetime(2026, 3, 9, 12, tzinfo=UTC)


def test_the_status_screen_shows_each_fact_and_fits_100_columns():
    status = {
        "model_name": "churn",
        "allocation": {"champion_version": "3", "challenger_version": "4", "challenger_share": 0.25,
                       "experiment_id": "churn-v3-vs-v4", "updated_at": AT},
        "aliases": [{"alias": "champion", "model_version": "3"}, {"alias": "challenger", "model_version": "4"}],
        "experiment": {"experiment_id": "churn-v3-vs-v4", "strategy": "canary", "status": "running", "watch_status": None,
                       "started_at": AT, "ended_at": None},
        "estimate": {"decided_at": AT, "decision": "ramp", "metric": "accuracy", "difference": 0.0312,
                     "interval": [0.004, 0.0581], "level": 0.9, "share": 0.25},
        "decisions": [{"decided_at": AT, "step": "allocation", "decision": "ramp", "reason": "x " * 80}],
        "retrain": {"started_at": AT, "trigger": "degradation", "status": "succeeded", "model_version": "4"},
        "open_alerts": [{"severity": "critical", "summary": "churn quality_floor: precision 0.41 < 0.52"}],
        "health": {"quality_window_start": AT, "quality_n_labelled": 812, "accuracy": 0.7712, "roc_auc": 0.8123,
                   "f1": 0.61, "traffic_window_start": AT, "n_predictions": 8000, "label_coverage": 0.9,
                   "drift_window_start": AT, "n_features_measured": 8, "n_drifted_features": 1,
                   "drifted_features": "tenure_months", "is_prediction_drifted": False,
                   "seconds_since_latest_load": 1800.0, "as_of": AT},
    }  # fmt: skip
    lines = format_model_status(status).splitlines()
    assert max(len(line) for line in lines) <= 100 and lines[-1].endswith("…")
    assert "serving   version 3, challenger version 4 on 25% of the units (churn-v3-vs-v4)" in lines
    assert "  estimate accuracy challenger - champion +0.0312, 90% always-valid interval [+0.0040, +0.0581]" in lines
    assert "  last look 2026-03-09 12:00: ramp, challenger share 25%" in lines
    assert "retrain   2026-03-09 12:00 degradation: succeeded -> version 4" in lines
    assert "  critical churn quality_floor: precision 0.41 < 0.52" in lines
    assert any(line.startswith("  quality   day 2026-03-09 12:00 (mature labels, n 812): accuracy 0.771") for line in lines)
    assert "  drift     day 2026-03-09 12:00: 1 of 8 features drifted (tenure_months); prediction drift False" in lines
    empty = format_model_status({"model_name": "new", "allocation": None, "aliases": [], "experiment": None,
                                 "estimate": None, "decisions": [], "retrain": None, "open_alerts": [], "health": None})  # fmt: skip
    assert empty.splitlines() == [
        "== new", "serving   registry champion - (no allocation row yet)",
        "experiment none yet (a challenger that passes the offline gate starts one)", "alerts    0 open",
        "health    no marts yet: run the metrics DAG", "decisions none yet",
    ]  # fmt: skip
