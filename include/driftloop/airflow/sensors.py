"""The deferrable sensor of promote__<model>: a look now, then wait in the triggerer (no worker slot)
until the next look is due *and* the warehouse has something new to look at.

:class:`ExperimentLookSensor` runs one look (an experiment look, or a watch look after a promotion)
through :mod:`driftloop.airflow.tasks`. When the look does not end it, the task defers to
:class:`NewEvidenceTrigger`, which polls the warehouse cheaply (``raw.ingest_files`` and the
experiment's row, asynchronously) and fires once ``poke_interval`` has passed since the look and

* a file with rows was loaded for the model since the look (new predictions or labels), or
* the experiment left the phase being waited on (finished or rolled back elsewhere), or
* the phase's deadline passed (max duration, end of the watch window), which the look turns into
  a decision.

So an hour without traffic costs no look and no ops.decisions row, and a look happens at most every
``poke_interval`` however often files land. Times are :func:`driftloop.core.clock.now`: the wall clock,
or a simulation's clock (``driftloop simulate``, ``make demo``), which the trigger then polls every
0.1 s of wall time; "loaded since the look" always compares wall-clock load times (``loaded_since``). The trigger gets no secrets: it resolves the warehouse like
the tasks do (DRIFTLOOP_WAREHOUSE_URL, the ``driftloop_warehouse`` connection, the embedded default).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

PHASE_STATUS = {"experiment": ("status", "running"), "watch": ("watch_status", "watching")}


class NewEvidenceTrigger(BaseTrigger):
    """Fires when the next look of an experiment's phase is worth making (module docstring)."""

    def __init__(self, model_name: str, experiment_id: str, phase: str, looked_at: str, not_before: str,
                 deadline: str, poll_seconds: float = 60.0, loaded_since: str | None = None) -> None:  # fmt: skip
        super().__init__()
        if phase not in PHASE_STATUS:
            raise ValueError(f"phase must be one of {sorted(PHASE_STATUS)}, got {phase!r}")
        self.model_name, self.experiment_id, self.phase = model_name, experiment_id, phase
        self.looked_at, self.not_before, self.deadline = looked_at, not_before, deadline
        self.poll_seconds = poll_seconds
        self.loaded_since = loaded_since or looked_at  # wall clock: raw.ingest_files.loaded_at is the database's

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"model_name": self.model_name, "experiment_id": self.experiment_id, "phase": self.phase,
             "looked_at": self.looked_at, "not_before": self.not_before, "deadline": self.deadline,
             "poll_seconds": self.poll_seconds, "loaded_since": self.loaded_since},
        )  # fmt: skip

    async def _poll(self, url: str) -> tuple[str | None, bool]:
        """(the phase's status column, whether a file with rows was loaded since the look)."""
        import psycopg

        column, _ = PHASE_STATUS[self.phase]
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cursor = await conn.execute(
                f"select experiments.{column}, exists (select 1 from raw.ingest_files as files "
                "where files.model_name = experiments.model_name and files.status in ('loaded', 'changed') "
                "and files.rows_loaded > 0 "
                "and files.loaded_at > %s) from ops.experiments as experiments where experiments.experiment_id = %s",
                (datetime.fromisoformat(self.loaded_since), self.experiment_id),
            )
            row = await cursor.fetchone()
        return (row[0], bool(row[1])) if row else (None, False)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from driftloop.core import clock, warehouse

        # a connection lookup (or starting the embedded server) blocks: not on the triggerer's event loop
        url = await asyncio.to_thread(warehouse.resolve_url, use_airflow=True)
        _, waiting_status = PHASE_STATUS[self.phase]
        not_before, deadline = datetime.fromisoformat(self.not_before), datetime.fromisoformat(self.deadline)
        poll_seconds = 0.1 if clock.simulated() else self.poll_seconds  # simulated hours pass in wall seconds
        while True:
            now = clock.now()
            if now >= not_before:
                status, new_data = await self._poll(url)
                why = ("phase_ended" if status != waiting_status else "new_data" if new_data
                       else "deadline" if now >= deadline else None)  # fmt: skip
                if why:
                    yield TriggerEvent({"why": why, "status": status, "at": now.isoformat()})
                    return
            wait = (not_before - now).total_seconds() if now < not_before else poll_seconds
            await asyncio.sleep(max(0.05, min(wait, poll_seconds)))


class ExperimentLookSensor(BaseOperator):
    """Look at the model's experiment (``phase="experiment"``) or the watch of its new champion
    (``phase="watch"``) until the phase ends; between looks the task is deferred. Returns the final
    decision (action, reason); a watch with nothing to watch (no promotion) is skipped."""

    ui_color = "#e8f0fe"

    def __init__(self, *, model_name: str, phase: str, poke_interval: timedelta, deadline_grace: timedelta,
                 poll_seconds: float = 60.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        if phase not in PHASE_STATUS:
            raise ValueError(f"phase must be one of {sorted(PHASE_STATUS)}, got {phase!r}")
        self.model_name, self.phase = model_name, phase
        self.poke_interval, self.deadline_grace, self.poll_seconds = poke_interval, deadline_grace, poll_seconds

    def execute(self, context: Any) -> dict[str, Any]:
        return self._look(context)

    def resume(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.log.info("next look: %s", event)
        return self._look(context)

    def _look(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from driftloop.airflow.tasks import experiment_look, watch_look
        from driftloop.core import clock

        run_id = context.get("run_id") or "manual"
        outcome = (experiment_look if self.phase == "experiment" else watch_look)(self.model_name, run_id)
        if outcome.get("skip"):
            raise AirflowSkipException(outcome["reason"])
        if outcome["done"]:
            return outcome
        looked_at = datetime.fromisoformat(outcome["as_of"])
        deadline = datetime.fromisoformat(outcome["deadline"])
        self.defer(
            trigger=NewEvidenceTrigger(
                model_name=self.model_name, experiment_id=outcome["experiment_id"], phase=self.phase,
                looked_at=looked_at.isoformat(), not_before=(looked_at + self.poke_interval).isoformat(),
                deadline=deadline.isoformat(), poll_seconds=min(self.poll_seconds, self.poke_interval.total_seconds()),
                loaded_since=outcome.get("looked_at_wall"),
            ),
            method_name="resume",
            # a phase that outlives its deadline by far means looks stopped working: fail (and alert); a
            # simulation's deadline is in simulated time, which Airflow's (wall-clock) timeout cannot follow
            timeout=None if clock.simulated() else max(deadline - looked_at, timedelta(0)) + self.deadline_grace,
        )  # fmt: skip
