"""The closed loop in simulated time, through the real DAGs: serve, land, ingest, profile, measure,
alert, retrain, test on live traffic, promote or reject, watch.

:class:`Loop` plays a :class:`~driftloop.sim.scenarios.LoopScenario` interval by interval. At each
interval ``[start, end)`` it

1. serves the interval's requests through the real :class:`~driftloop.serve.router.Router` (real
   MLflow models by alias, the live ``ops.traffic_allocation``; latency, serving errors and serving
   skew from the scenario, seeded), and lands the feedback whose labels have arrived by ``end``;
2. runs ``ingest__<model>``, ``profile__<model>``, ``metrics`` and ``monitor__<model>`` with
   ``dag.test()``, logical date and conf ``now`` = ``end`` (the order their Assets say);
3. moves the simulation clock (:mod:`driftloop.core.clock`) to ``end``: what promote__<model>'s look
   sensor waits on, so its look sees the interval's data loaded;
4. asks ``retrain__<model>``'s gate (the function its sensor pokes) and runs the DAG when it fires
   (a scheduler would run it every hour and most runs would end skipped; one challenger at a time:
   not while an experiment or a watch runs);
5. a new challenger starts ``promote__<model>`` in its own process: its deferrable look sensor waits
   in simulated time for new data, looks, ramps, decides and watches; the loop waits for each look
   of the interval before it moves on, so the story is the same on every machine.

What happened comes back as :class:`LoopEvent` lines (alerts opened and resolved, retrains and why,
the gate's verdict, the experiment's allocation changes and decision, the watch) and a summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml

from driftloop.core import clock, warehouse
from driftloop.core.spec import ModelSpec, get_spec, load_spec, specs_dir
from driftloop.sim.scenarios import LoopScenario, arm_hooks, serving_transform

__all__ = ["Loop", "LoopEvent", "loop_spec_payload"]

LOOK_WAIT_SECONDS = 900.0  # wall-clock guard for one look of promote__<model> (a hang, not a speed limit)


@dataclass(frozen=True)
class LoopEvent:
    at: datetime  # simulated time
    kind: str  # alert, resolved, retrain, gate, experiment, allocation, decision, promotion, watch
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.at:%a %d %b %H:%M}  {self.kind:<10} {self.text}"


def loop_spec_payload(base: ModelSpec, scenario: LoopScenario) -> dict[str, Any]:
    """The example spec with what a two-week story needs: a step per interval for the looks, a training
    window of recent traffic (after a concept drift, old labels teach the old world), ramp steps a day
    of traffic can fill, and a watch window of two days."""
    payload = base.model_dump(mode="json", exclude_none=True)
    interval = f"{int(scenario.interval.total_seconds() // 3600)}h"
    retraining = payload["retraining"]
    retraining["cooldown"] = "1d"
    retraining["triggers"]["volume"]["enabled"] = False  # labels pile up every interval: not a reason here
    retraining["triggers"]["schedule"]["every"] = "30d"
    retraining["triggers"]["degradation"]["window"] = "24h"
    retraining["training"]["window"] = "1d"  # a day of labels is ~7,000 rows; two would mix the old world in
    retraining["training"]["candidates"] = ["lightgbm", "logistic_regression"]
    # the offline gate times both models on this machine (a LightGBM challenger against a logistic
    # champion differs by more than any noise, and a loaded machine moves the ratio): the story must not
    # depend on the machine, so the loop leaves latency to the online guardrails, which see simulated,
    # seeded latencies (a run rejected a good challenger at ratio 1.99 under a limit of 1.5)
    payload["promotion"]["offline_gate"]["max_latency_ratio"] = 1000.0
    # a concept drift changes which features matter: an importance-stability check would reject the
    # very challenger that learned the new relationship
    payload["promotion"]["offline_gate"]["min_importance_rank_correlation"] = -1.0
    online = payload["promotion"]["online"]
    per_day = scenario.rows_per_day
    online.update({"poke_interval": interval, "allocation_settle": "1m", "max_duration": "6d",
                   "min_treatment_assigned_per_step": max(online.get("min_assigned_for_guardrails", 200), per_day // 20), "min_labelled_per_arm": 200})  # fmt: skip
    payload["promotion"]["watch"].update({"window": "2d", "poke_interval": interval})
    return payload


class Loop:
    """Play ``scenario`` for ``model_name`` through the DAGs (module docstring). ``home`` holds the run's
    landing zone, MLflow store, spec, clock and Airflow home; the warehouse is ``url`` (default: the
    embedded server). ``say`` receives each event line and progress line."""

    def __init__(self, scenario: LoopScenario, home: str | os.PathLike[str], *, model_name: str = "churn",
                 url: str | None = None, say: Callable[[str], None] = print) -> None:  # fmt: skip
        self.scenario, self.model_name, self.say = scenario, model_name, say
        self.home = Path(home).resolve()
        self.url = warehouse.resolve_url(url)
        self.events: list[LoopEvent] = []
        self.served: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self._promote: subprocess.Popen | None = None
        self._promote_log: Any = None
        self._seen = {"decision": 0, "alert": 0, "retrain": 0}
        self._open_alerts: dict[int, str] = {}
        self._pending_feedback: list[Any] = []

    # ------------------------------------------------------------------ setup
    def setup(self) -> ModelSpec:
        """Environment of a deployment (warehouse, landing, MLflow, spec, clock, Airflow), the warehouse
        migrated, the first champion trained on the world before the story starts."""
        from driftloop.airflow import local as local_airflow
        from driftloop.sim import examples

        specs = self.home / "specs"
        specs.mkdir(parents=True, exist_ok=True)
        base = load_spec(specs_dir() / f"{self.model_name}.yaml")  # a loop spec again, when a loop ran before
        (specs / f"{self.model_name}.yaml").write_text(yaml.safe_dump(loop_spec_payload(base, self.scenario), sort_keys=False))
        os.environ.update({
            "DRIFTLOOP_WAREHOUSE_URL": self.url,
            "DRIFTLOOP_LANDING": str(self.home / "landing"),
            "DRIFTLOOP_SPECS_DIR": str(specs),
            clock.CLOCK_FILE_VARIABLE: str(self.home / "clock"),
            "MLFLOW_TRACKING_URI": os.environ.get("DRIFTLOOP_LOOP_MLFLOW_URI") or f"sqlite:///{self.home / 'mlflow.db'}",
            "AIRFLOW_CONN_DRIFTLOOP_WAREHOUSE": warehouse.airflow_connection_json(self.url),
        })  # fmt: skip
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("DBT_QUIET", "true")
        local_airflow.configure_environment()
        local_airflow.forget_runs([f"{kind}__{self.model_name}" for kind in ("ingest", "profile", "monitor", "retrain", "promote")]
                                  + ["metrics"])  # fmt: skip
        from driftloop.core import spec as spec_module

        spec_module._cached_specs.cache_clear()  # the loop's spec folder replaces the one read before
        self.spec = get_spec(self.model_name)
        local_airflow.dag_bag(refresh=True)  # the DAGs as the loop's spec builds them, parsed once for the run
        warehouse.migrate(self.url)
        warehouse.sync_specs(self.url)
        clock.set_now(self.scenario.start)
        booted = examples.bootstrap(self.url, self.spec, seed=self.scenario.seed, training_end=self.scenario.start,
                                    now=self.scenario.start)  # fmt: skip
        say, self.say = self.say, lambda line: None
        self._catch_up()  # the bootstrap's retrain run is not a story event
        self.say = say
        self.events.clear()
        self.say(f"champion: {self.model_name} version {booted['model_version']} (trained on the world before "
                 f"{self.scenario.start:%d %b})")  # fmt: skip
        return self.spec

    # ------------------------------------------------------------------ one interval
    def serve(self, start: datetime, end: datetime) -> int:
        """The interval's requests through the router; the feedback that has arrived by ``end`` lands."""
        import pandas as pd

        from driftloop.core.contracts import FEEDBACK, landing_path
        from driftloop.learn import registry
        from driftloop.serve.router import Router
        from driftloop.sim.world import FEATURE_PREFIX, _atomic_write, feedback_lines

        frame = self.scenario.requests(self.spec, start, end)
        roles = {}
        champion = registry.version_by_alias(self.model_name, registry.CHAMPION)
        challenger = registry.version_by_alias(self.model_name, registry.CHALLENGER)
        if champion is not None:
            roles[champion.version] = "champion"
        if challenger is not None:
            roles[challenger.version] = "challenger"
        role_of = lambda version: roles.get(version, "champion")  # noqa: E731
        latency, failure = arm_hooks(self.scenario, role_of, seed=int(start.timestamp()))
        router = getattr(self, "_router", None)
        if router is None:
            router = self._router = Router(self.model_name, self.url, ttl_seconds=0.0)
        router.latency, router.failure = latency, failure
        router.transform = serving_transform(self.scenario, role_of)
        features = frame[[FEATURE_PREFIX + f.name for f in self.spec.features]].rename(columns=lambda c: c[len(FEATURE_PREFIX):])
        stamps = list(frame["request_ts"].array.to_pydatetime())
        events = router.predict_batch(features, unit_ids=frame["unit_id"].tolist(), segments=frame["segment"].tolist(),
                                      prediction_ids=frame["prediction_id"].tolist(), request_ts=stamps)  # fmt: skip
        router.logger.flush()
        for event in events:
            self.served[event["variant"]] = self.served.get(event["variant"], 0) + 1
        labelled = frame[frame["labelled"].to_numpy(dtype=bool)]
        pending = pd.concat([*self._pending_feedback, labelled]) if self._pending_feedback else labelled
        arrived = pending[pending["feedback_ts"] < pd.Timestamp(end)]
        self._pending_feedback = [pending[pending["feedback_ts"] >= pd.Timestamp(end)]]
        if len(arrived):
            for day, rows in arrived.groupby(arrived["feedback_ts"].dt.strftime("%Y-%m-%d")):
                path = landing_path(str(self.home / "landing"), self.model_name, FEEDBACK, day,
                                    f"feedback-{end:%Y%m%dT%H%M}.jsonl")  # fmt: skip
                _atomic_write(path, feedback_lines(rows, self.model_name))
        return len(events)

    def _run(self, dag_id: str, now: datetime, conf: dict[str, Any] | None = None) -> str:
        from driftloop.airflow import local as local_airflow

        started = time.perf_counter()
        run = local_airflow.run_dag(dag_id, run_conf={"now": now.isoformat(), **(conf or {})}, logical_date=now,
                                    reparse=False)  # fmt: skip
        key = dag_id.split("__")[0]
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - started
        state = str(run.state)
        if state != "success":
            failed = {task: s for task, s in local_airflow.task_states(run).items() if s not in ("success", "skipped")}
            self.say(f"   {dag_id} at {now:%d %b %H:%M}: {state} {failed}")
        return state

    def step(self, start: datetime, end: datetime) -> None:
        from driftloop.learn.retrain import check_gate

        began = time.perf_counter()
        served = self.serve(start, end)
        self.timings["serve"] = self.timings.get("serve", 0.0) + time.perf_counter() - began
        self._run(f"ingest__{self.model_name}", end)
        self._run(f"profile__{self.model_name}", end)
        self._run("metrics", end)
        self._run(f"monitor__{self.model_name}", end)
        # only now does promote__<model>'s clock reach the interval's end: its look sees the interval's
        # files loaded and its marts built, as a look an hour after them would in a deployment
        # (moved first, the look raced the interval's ingestion and saw its predictions without labels)
        clock.set_now(end)
        if not self._promoting():
            gate = check_gate(self.url, self.model_name)
            if gate.fire:
                self._run(f"retrain__{self.model_name}", end)
                self._catch_up(end)
                if self._new_challenger():
                    self._start_promote(end)
        self._wait_for_look(end)
        self._catch_up(end)
        self.timings["requests"] = self.timings.get("requests", 0) + served

    # ------------------------------------------------------------------ promote__<model> in its own process
    def _promoting(self) -> bool:
        if self._promote is not None and self._promote.poll() is not None:
            self._promote_log.close()
            self._promote = None
        return self._promote is not None

    def _new_challenger(self) -> bool:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("select 1 from ops.model_aliases where model_name = %s and alias = 'challenger'",
                               (self.model_name,)).fetchone()  # fmt: skip
        return row is not None

    def _start_promote(self, now: datetime) -> None:
        log_path = self.home / "logs" / f"promote-{now:%Y%m%dT%H%M}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._promote_log = open(log_path, "w")  # noqa: SIM115 - closed when the process ends
        self._promote = subprocess.Popen(
            [sys.executable, "-m", "driftloop.airflow.local", f"promote__{self.model_name}",
             "--conf", json.dumps({"now": now.isoformat()}), "--logical-date", now.isoformat()],
            stdout=self._promote_log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip

    def _looked_at(self, now: datetime) -> bool:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "select 1 from ops.decisions where model_name = %s and step in ('sequential_test', 'watch') "
                "and decided_at >= %s limit 1",
                (self.model_name, now),
            ).fetchone()
        return row is not None

    def _wait_for_look(self, now: datetime) -> None:
        """Until promote__<model> has looked at this interval (or ended): the story stays in time order."""
        deadline = time.monotonic() + LOOK_WAIT_SECONDS
        started = time.perf_counter()
        while self._promoting() and not self._looked_at(now):
            if time.monotonic() > deadline:
                raise TimeoutError(f"promote__{self.model_name} made no look at {now} in {LOOK_WAIT_SECONDS:.0f} s "
                                   f"(see {self.home / 'logs'})")  # fmt: skip
            try:  # between two checks of ops.decisions, the run ending is the other thing worth waking for
                self._promote.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        self.timings["promote_wait"] = self.timings.get("promote_wait", 0.0) + time.perf_counter() - started

    def close(self) -> None:
        if self._promote is not None and self._promote.poll() is None:
            self._promote.terminate()
            try:
                self._promote.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._promote.kill()
        if self._promote_log is not None:
            self._promote_log.close()
        router = getattr(self, "_router", None)
        if router is not None:
            router.close()

    # ------------------------------------------------------------------ events
    def _catch_up(self, now: datetime | None = None) -> None:
        at = now or self.scenario.start
        with psycopg.connect(self.url) as conn:
            retrains = conn.execute(
                "select retrain_run_id, trigger, reason, status, model_version, coalesce(error, '') from ops.retrain_runs "
                "where model_name = %s and retrain_run_id > %s order by retrain_run_id",
                (self.model_name, self._seen["retrain"]),
            ).fetchall()
            decisions = conn.execute(
                "select decision_id, step, decision, reason, evidence from ops.decisions "
                "where model_name = %s and decision_id > %s order by decision_id",
                (self.model_name, self._seen["decision"]),
            ).fetchall()
            alerts = conn.execute(
                "select alert_id, severity, summary, status from ops.alerts where model_name = %s "
                "and (alert_id > %s or alert_id = any(%s)) order by alert_id",
                (self.model_name, self._seen["alert"], list(self._open_alerts)),
            ).fetchall()
        for run_id, trigger, reason, status, version, error in retrains:
            self._seen["retrain"] = run_id
            outcome = f"-> version {version}" if version else f"{status} {error}".strip()
            self._event(at, "retrain", f"{trigger}: {reason} {outcome}", {"trigger": trigger, "version": version})
        for decision_id, step, decision, reason, evidence in decisions:
            self._seen["decision"] = decision_id
            if step == "sequential_test" and decision in ("continue", "ramp", "reallocate"):
                continue  # the allocation row says it once
            kind = {"offline_gate": "gate", "allocation": "allocation", "sequential_test": "decision", "watch": "watch"}.get(step, step)
            if step == "allocation" and decision in ("promoted", "rolled_back"):
                kind = "promotion" if decision == "promoted" else "rollback"
            when = evidence.get("as_of") or evidence.get("effective_at")
            stamp = datetime.fromisoformat(when) if isinstance(when, str) else at
            self._event(stamp, kind, f"{decision}: {reason}", {"step": step, "decision": decision})
        for alert_id, severity, summary, status in alerts:
            self._seen["alert"] = max(self._seen["alert"], alert_id)
            if status in ("firing", "notified") and alert_id not in self._open_alerts:
                self._open_alerts[alert_id] = summary
                self._event(at, "alert", f"[{severity}] {summary}", {"severity": severity, "alert_id": alert_id})
            elif status == "resolved" and alert_id in self._open_alerts:
                del self._open_alerts[alert_id]
                self._event(at, "resolved", summary, {"alert_id": alert_id})

    def _event(self, at: datetime, kind: str, text: str, data: dict[str, Any]) -> None:
        event = LoopEvent(at.astimezone(UTC), kind, " ".join(text.split()), data)
        self.events.append(event)
        self.say(event.line())

    # ------------------------------------------------------------------ the story
    def run(self, progress: Callable[[int, int, datetime], None] | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        self.setup()
        self.timings["setup"] = time.perf_counter() - started
        steps = self.scenario.intervals()
        try:
            for i, (start, end) in enumerate(steps):
                self.step(start, end)
                if progress is not None:
                    progress(i + 1, len(steps), end)
            # let a running experiment take its last look, then stop it (the story ends here)
        finally:
            self.close()
        summary = self.summary()
        summary["wall_seconds"] = time.perf_counter() - started
        summary["timings"] = dict(self.timings)
        return summary

    def summary(self) -> dict[str, Any]:
        """Accuracy before the drift, during it (until a promotion) and after the promotion (daily windows
        of what served, from the marts), requests per variant, and the times to detect and to promote."""
        drift = self.scenario.concept_drift.start if self.scenario.concept_drift else None
        promoted = next((e.at for e in self.events if e.kind == "promotion"), None)
        detected = next((e.at for e in self.events if drift and e.at >= drift and e.kind in ("alert", "retrain")), None)
        with psycopg.connect(self.url) as conn:
            daily = conn.execute(
                "select window_start, cast(sum(n_labelled) as bigint), "
                "cast(sum(accuracy * n_labelled) / nullif(sum(n_labelled), 0) as double precision) "
                "from marts.fct_model_quality where model_name = %s and window_size = 'day' and segment = '(all)' "
                "group by window_start order by window_start",
                (self.model_name,),
            ).fetchall()

        def accuracy(lo: datetime | None, hi: datetime | None) -> float | None:
            rows = [(n, a) for start, n, a in daily if a is not None and (lo is None or start >= lo) and (hi is None or start < hi)]
            total = sum(n for n, _ in rows)
            return sum(n * a for n, a in rows) / total if total else None

        after = (promoted + timedelta(days=1)).replace(hour=0, minute=0) if promoted else None
        return {
            "scenario": self.scenario.name,
            "requests": dict(self.served),
            "accuracy_before_drift": accuracy(None, drift) if drift else accuracy(None, None),
            "accuracy_during_drift": accuracy(drift + timedelta(days=1), promoted) if drift else None,
            "accuracy_after_promotion": accuracy(after, None) if after else None,
            "promoted_at": promoted,
            "time_to_detect": (detected - drift) if detected and drift else None,
            "time_to_promote": (promoted - drift) if promoted and drift else None,
            "events": [e.line() for e in self.events],
            "daily_accuracy": [(start, float(a)) for start, _, a in daily if a is not None],
        }
