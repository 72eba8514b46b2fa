"""The trigger promote__<model>'s sensor defers to, against a real warehouse: it fires when a look is worth
making (new files loaded since the last look, the phase ended, the deadline passed) and not otherwise."""

from __future__ import annotations

import asyncio
import importlib
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from driftloop.airflow.sensors import NewEvidenceTrigger
from driftloop.core.spec import get_spec
from driftloop.promote import experiments
from training_data import sync

pytestmark = pytest.mark.integration


@pytest.fixture
def experiment(warehouse_url, monkeypatch):
    """A running experiment of churn; the trigger finds the warehouse like a task does."""
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    spec = get_spec("churn")
    sync(warehouse_url, spec)
    return experiments.start_experiment(warehouse_url, spec, "1", "2")


def trigger(experiment_id: str, looked_at: datetime, *, deadline: datetime | None = None, phase: str = "experiment"):
    return NewEvidenceTrigger(
        model_name="churn", experiment_id=experiment_id, phase=phase, looked_at=looked_at.isoformat(),
        not_before=looked_at.isoformat(), deadline=(deadline or looked_at + timedelta(days=14)).isoformat(),
        poll_seconds=0.05,
    )  # fmt: skip


def first_event(instance: NewEvidenceTrigger) -> dict:
    async def run():
        return await anext(instance.run())

    return asyncio.run(asyncio.wait_for(run(), timeout=60)).payload


def load_file(url: str, rows: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into raw.ingest_files (model_name, kind, path, size_bytes, checksum, status, rows_loaded) "
            "values ('churn', 'predictions', %s, 10, %s, %s, %s)",
            (f"/landing/{rows}-{datetime.now(UTC).timestamp()}.jsonl", str(datetime.now(UTC).timestamp()),
             "loaded" if rows else "empty", rows),
        )  # fmt: skip


def test_nothing_new_is_not_worth_a_look(warehouse_url, experiment):
    # GIVEN a look now, and then only an empty file
    looked_at = datetime.now(UTC)
    load_file(warehouse_url, 0)
    # WHEN the trigger polls THEN the experiment runs and nothing new was loaded
    assert asyncio.run(trigger(experiment, looked_at)._poll(warehouse_url)) == ("running", False)


def test_a_file_loaded_after_the_look_fires(warehouse_url, experiment):
    looked_at = datetime.now(UTC)
    load_file(warehouse_url, 25)
    assert first_event(trigger(experiment, looked_at))["why"] == "new_data"


def test_a_file_loaded_before_the_look_does_not_count(warehouse_url, experiment):
    load_file(warehouse_url, 25)
    looked_at = datetime.now(UTC) + timedelta(seconds=1)
    # the deadline is what ends the wait here, not the old file
    assert first_event(trigger(experiment, looked_at, deadline=looked_at))["why"] == "deadline"


def test_an_experiment_ended_elsewhere_fires(warehouse_url, experiment):
    with psycopg.connect(warehouse_url) as conn:
        conn.execute("update ops.experiments set status = 'rejected', ended_at = now() where experiment_id = %s", (experiment,))
    event = first_event(trigger(experiment, datetime.now(UTC)))
    assert (event["why"], event["status"]) == ("phase_ended", "rejected")


def test_the_trigger_survives_serialization(experiment):
    # the triggerer rebuilds it from its class path and kwargs
    original = trigger(experiment, datetime.now(UTC), phase="watch")
    classpath, kwargs = original.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs) and kwargs["phase"] == "watch"
    with pytest.raises(ValueError, match="phase"):
        trigger(experiment, datetime.now(UTC), phase="later")


def test_under_a_simulated_clock_the_wait_follows_simulated_time(warehouse_url, experiment, monkeypatch, tmp_path):
    from driftloop.core import clock

    # GIVEN a simulation whose clock stands at the look, and a file loaded (wall clock) after the look
    monkeypatch.setenv(clock.CLOCK_FILE_VARIABLE, str(tmp_path / "clock"))
    simulated_look = datetime(2026, 3, 5, 12, tzinfo=UTC)
    clock.set_now(simulated_look)
    loaded_since = datetime.now(UTC)
    load_file(warehouse_url, 5)
    waiting = NewEvidenceTrigger(
        model_name="churn", experiment_id=experiment, phase="experiment", looked_at=simulated_look.isoformat(),
        not_before=(simulated_look + timedelta(hours=1)).isoformat(),
        deadline=(simulated_look + timedelta(days=14)).isoformat(), poll_seconds=3600, loaded_since=loaded_since.isoformat(),
    )  # fmt: skip

    async def run():
        events = waiting.run()
        pending = asyncio.ensure_future(anext(events))
        done, _ = await asyncio.wait({pending}, timeout=1.0)
        assert not done  # WHEN the simulated hour has not passed THEN no look, however much wall time goes by
        clock.set_now(simulated_look + timedelta(hours=1))  # the simulation moves its clock
        return await asyncio.wait_for(pending, timeout=10)  # polled every 0.1 s of wall time, not every hour

    # THEN it fires for the new file, stamped with the simulated time
    payload = asyncio.run(run()).payload
    assert payload["why"] == "new_data" and payload["at"] == (simulated_look + timedelta(hours=1)).isoformat()
