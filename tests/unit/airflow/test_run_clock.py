"""The run's clock as the DAG tasks read it from Airflow's context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pendulum
import pytest

from driftloop.airflow.tasks import run_clock, stated_clock


def test_a_pendulum_clock_stays_aware_through_arithmetic():
    # Airflow's context holds pendulum DateTimes; one in datetime.timezone.utc minus a timedelta is
    # naive, and comparing it with a stored time raised in retrain's cool-down check
    context = {"data_interval_end": pendulum.instance(datetime(2026, 3, 6, 12, tzinfo=UTC))}
    now = run_clock(context)
    assert (now - timedelta(days=2)).tzinfo is not None
    assert now - timedelta(days=2) < datetime(2026, 3, 5, tzinfo=UTC)


def test_the_stated_clock_wins_over_the_data_interval():
    run = SimpleNamespace(conf={"now": "2026-03-04T12:00:00+00:00"})
    context = {"dag_run": run, "data_interval_end": pendulum.datetime(2026, 3, 6)}
    assert run_clock(context) == datetime(2026, 3, 4, 12, tzinfo=UTC)
    assert stated_clock({"dag_run": SimpleNamespace(conf={})}) is None
    with pytest.raises(ValueError, match="UTC offset"):
        run_clock({"dag_run": SimpleNamespace(conf={"now": "2026-03-04T12:00:00"})})
