"""Promotion, step 2: the live experiment, from start to promote / reject, written to the warehouse.

* :func:`start_experiment` opens ``ops.experiments`` (at most one running per model: a partial unique
  index) and points ``ops.traffic_allocation`` (what the router reads) at the first canary step.
* :func:`gather_evidence` counts each arm per allocation step from the warehouse (units, labelled
  predictions, correct ones, errors, latency p95), with the sequential state of the last look.
* :func:`step_experiment` is one look: evidence -> ``driftloop.decision.decide`` -> ``ops.decisions`` ->
  the action: ramp (allocation share), promote (alias ``champion`` -> the challenger, then the
  allocation: 100 % to it), reject / halt / inconclusive (allocation back to the champion, the
  ``challenger`` alias removed). Each step notifies through the alert outbox.

Crash safety: a promotion writes its decision first, then moves the alias, then (one transaction) the
allocation and the experiment's status. A crash in between leaves a running experiment whose challenger
is already the registry's champion; the next look (:func:`reconcile`) finishes it, so the state
converges whatever step died.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from driftloop import registry, warehouse
from driftloop.decision import (
    AllocationStep,
    ArmEvidence,
    Decision,
    Evidence,
    Policy,
    SequentialState,
    decide,
)
from driftloop.promotion import record_decision
from driftloop.spec import ModelSpec

log = logging.getLogger(__name__)

TERMINAL = {"promote": "promoted", "reject": "rejected", "halt": "halted", "inconclusive": "inconclusive"}


class ExperimentConflict(RuntimeError):
    """Another experiment is running for this model."""


def _lock(conn, model_name: str) -> None:
    conn.execute("select pg_advisory_xact_lock(hashtext('driftloop.experiment:' || %s))", (model_name,))


def _notify(conn, spec: ModelSpec, experiment_id: str, action: str, reason: str) -> None:
    from driftloop.alerts import enqueue_alert

    severity = "warning" if action in ("halt", "reject") else "info"
    enqueue_alert(conn, dedup_key=f"experiment:{experiment_id}:{action}", source="promote", severity=severity,
                  model_name=spec.name, summary=f"{spec.name} experiment {experiment_id}: {action}",
                  details={"reason": reason})  # fmt: skip


def running_experiment(url: str, model_name: str) -> dict[str, Any] | None:
    from psycopg.rows import dict_row

    with warehouse.connect(url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "select * from ops.experiments where model_name = %s and status = 'running'", (model_name,)
        ).fetchone()


def start_experiment(url: str, spec: ModelSpec, champion_version: str, challenger_version: str, *,
                     airflow_run_id: str | None = None, retrain_run_id: int | None = None) -> str:  # fmt: skip
    """Open the experiment and give the challenger the first canary share. Idempotent for the same
    challenger; another running experiment of the model raises :class:`ExperimentConflict`."""
    online = spec.promotion.online
    experiment_id = f"{spec.name}-v{champion_version}-vs-v{challenger_version}"
    share = online.ramp_steps[0]
    with warehouse.connect(url) as conn, conn.transaction():
        _lock(conn, spec.name)
        running = conn.execute(
            "select experiment_id from ops.experiments where model_name = %s and status = 'running'", (spec.name,)
        ).fetchone()
        if running is not None:
            if running[0] == experiment_id:
                return experiment_id
            raise ExperimentConflict(f"{spec.name}: experiment {running[0]} is still running")
        conn.execute(
            "insert into ops.experiments (experiment_id, model_name, champion_version, challenger_version, strategy, "
            "status, policy, retrain_run_id) values (%s, %s, %s, %s, 'canary', 'running', %s::jsonb, %s)",
            (experiment_id, spec.name, champion_version, challenger_version, online.model_dump_json(), retrain_run_id),
        )
        _set_allocation(conn, spec.name, experiment_id, champion_version, challenger_version, share)
        reason = f"canary: version {challenger_version} gets {share:.0%} of the units, version {champion_version} the rest"
        record_decision(conn, spec.name, experiment_id=experiment_id, step="allocation", decision="start", reason=reason,
                        evidence={"treatment_share": share}, airflow_run_id=airflow_run_id)  # fmt: skip
        _notify(conn, spec, experiment_id, "start", reason)
    return experiment_id


def _set_allocation(conn, model_name: str, experiment_id: str | None, champion: str, challenger: str | None,
                    share: float) -> None:  # fmt: skip
    conn.execute(
        """
        insert into ops.traffic_allocation (model_name, experiment_id, champion_version, challenger_version,
            challenger_share, updated_at)
        values (%s, %s, %s, %s, %s, now())
        on conflict (model_name) do update set experiment_id = excluded.experiment_id,
            champion_version = excluded.champion_version, challenger_version = excluded.challenger_version,
            challenger_share = excluded.challenger_share, updated_at = now()
        """,
        (model_name, experiment_id, champion, challenger, share),
    )


# --------------------------------------------------------------------------------------------------
# Evidence


_ARM_COUNTS = """
    select
        predictions.variant,
        count(distinct coalesce(predictions.unit_id, predictions.prediction_id)) as n_assigned,
        count(labels.label) filter (where predictions.error is null) as n_labelled,
        count(*) filter (where predictions.error is null and labels.label = predictions.prediction) as successes,
        count(*) filter (where predictions.error is not null) as n_errors,
        percentile_cont(0.95) within group (order by predictions.latency_ms) as latency_p95_ms
    from raw.predictions as predictions
    left join lateral (
        select feedback.label
        from raw.feedback as feedback
        where feedback.model_name = predictions.model_name and feedback.prediction_id = predictions.prediction_id
        order by feedback.feedback_ts desc
        limit 1
    ) as labels on true
    where predictions.model_name = %s and predictions.experiment_id = %s
        and predictions.request_ts >= %s and predictions.request_ts < %s
    group by predictions.variant
"""


def _arm(name: str, row: tuple | None) -> ArmEvidence:
    if row is None:
        return ArmEvidence(name, 0, 0, 0, 0, 1e-9)
    n_assigned, n_labelled, successes, n_errors, p95 = row
    # units are counted once, predictions per request: a unit's several labels never exceed its predictions
    n_assigned = max(int(n_assigned), int(n_labelled))
    return ArmEvidence(name, n_assigned, int(n_labelled), int(successes), min(int(n_errors), n_assigned),
                       float(p95) if p95 else 1e-9)  # fmt: skip


def allocation_steps(url: str, experiment_id: str) -> list[tuple[float, datetime]]:
    """(treatment share, since when) of every allocation of the experiment, oldest first."""
    with warehouse.connect(url) as conn:
        rows = conn.execute(
            "select cast(evidence ->> 'treatment_share' as double precision), decided_at from ops.decisions "
            "where experiment_id = %s and step = 'allocation' order by decided_at, decision_id",
            (experiment_id,),
        ).fetchall()
    return [(float(share), since) for share, since in rows]


def gather_evidence(url: str, spec: ModelSpec, experiment: dict[str, Any], as_of: datetime) -> Evidence:
    steps = allocation_steps(url, experiment["experiment_id"])
    bounds = [(share, since, steps[i + 1][1] if i + 1 < len(steps) else as_of) for i, (share, since) in enumerate(steps)]
    counted: list[AllocationStep] = []
    with warehouse.connect(url) as conn:
        for share, since, until in bounds:
            rows = {r[0]: r[1:] for r in conn.execute(_ARM_COUNTS, (spec.name, experiment["experiment_id"], since, until))}
            counted.append(AllocationStep(share, _arm("control", rows.get("control")), _arm("challenger", rows.get("challenger"))))
        last = conn.execute(
            "select evidence -> 'state', count(*) over () from ops.decisions "
            "where experiment_id = %s and step = 'sequential_test' order by decided_at desc, decision_id desc limit 1",
            (experiment["experiment_id"],),
        ).fetchone()
    previous = SequentialState(**last[0]) if last and last[0] else None
    current = counted[-1]
    hours = max((as_of - experiment["started_at"]).total_seconds() / 3600, 0.0)
    return Evidence(current.control, current.treatment, current.treatment_share, hours, (last[1] if last else 0) + 1,
                    tuple(counted[:-1]), previous)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Looks and actions


def _finish(conn, spec: ModelSpec, experiment: dict[str, Any], action: str, champion: str, reason: str,
            airflow_run_id: str | None) -> None:  # fmt: skip
    """Allocation to ``champion`` only, the experiment closed, decision recorded, people told."""
    _set_allocation(conn, spec.name, None, champion, None, 0.0)
    conn.execute(
        "update ops.experiments set status = %s, ended_at = now() where experiment_id = %s and status = 'running'",
        (TERMINAL[action], experiment["experiment_id"]),
    )
    record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="allocation", decision=TERMINAL[action],
                    reason=reason, evidence={"champion_version": champion, "treatment_share": 0.0},
                    airflow_run_id=airflow_run_id)  # fmt: skip
    _notify(conn, spec, experiment["experiment_id"], action, reason)


def _complete_promotion(url: str, spec: ModelSpec, experiment: dict[str, Any], reason: str, airflow_run_id: str | None) -> None:
    registry.set_alias(url, spec.name, registry.CHAMPION, experiment["challenger_version"], experiment.get("retrain_run_id"))
    with warehouse.connect(url) as conn, conn.transaction():
        _lock(conn, spec.name)
        _finish(conn, spec, experiment, "promote", experiment["challenger_version"], reason, airflow_run_id)
    registry.remove_alias(url, spec.name, registry.CHALLENGER, experiment["challenger_version"])


def reconcile(url: str, spec: ModelSpec, airflow_run_id: str | None = None) -> str | None:
    """Finish a promotion a crash interrupted (the alias moved, or the promote decision was recorded, but
    the experiment still runs). Returns the experiment id it repaired."""
    experiment = running_experiment(url, spec.name)
    if experiment is None:
        return None
    champion = registry.version_by_alias(spec.name, registry.CHAMPION)
    with warehouse.connect(url) as conn:
        decided = conn.execute(
            "select reason from ops.decisions where experiment_id = %s and step = 'sequential_test' and decision = 'promote' "
            "order by decided_at desc limit 1",
            (experiment["experiment_id"],),
        ).fetchone()
    moved = champion is not None and champion.version == experiment["challenger_version"]
    if not (decided or moved):
        return None
    log.warning("%s: finishing the interrupted promotion of %s", spec.name, experiment["experiment_id"])
    _complete_promotion(url, spec, experiment, (decided[0] if decided else "promotion resumed"), airflow_run_id)
    return experiment["experiment_id"]


def step_experiment(url: str | None, spec: ModelSpec, *, as_of: datetime | None = None, policy: Policy | None = None,
                    airflow_run_id: str | None = None) -> Decision | None:  # fmt: skip
    """One look at the model's running experiment; None when there is none."""
    url = warehouse.resolve_url(url)
    reconcile(url, spec, airflow_run_id)
    experiment = running_experiment(url, spec.name)
    if experiment is None:
        return None
    as_of = as_of or datetime.now(UTC)
    policy = policy or spec.promotion.online.policy()
    evidence = gather_evidence(url, spec, experiment, as_of)
    decision = decide(evidence, policy)
    record = {"statistics": decision.statistics, "state": dataclasses.asdict(decision.state),
              "next_allocation": decision.next_allocation, "as_of": as_of,
              "evidence": {"look": evidence.look, "hours_elapsed": evidence.hours_elapsed,
                           "steps": [dataclasses.asdict(step) for step in evidence.steps]}}  # fmt: skip
    with warehouse.connect(url) as conn, conn.transaction():
        _lock(conn, spec.name)
        record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="sequential_test",
                        decision=decision.action, reason=decision.reason, evidence=record,
                        airflow_run_id=airflow_run_id)  # fmt: skip
        if decision.action == "ramp":
            _set_allocation(conn, spec.name, experiment["experiment_id"], experiment["champion_version"],
                            experiment["challenger_version"], decision.next_allocation)  # fmt: skip
            record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="allocation", decision="ramp",
                            reason=decision.reason, evidence={"treatment_share": decision.next_allocation},
                            airflow_run_id=airflow_run_id)  # fmt: skip
            _notify(conn, spec, experiment["experiment_id"], f"ramp to {decision.next_allocation:.0%}", decision.reason)
        elif decision.action in ("reject", "halt", "inconclusive"):
            _finish(conn, spec, experiment, decision.action, experiment["champion_version"], decision.reason, airflow_run_id)
    if decision.action == "promote":
        _complete_promotion(url, spec, experiment, decision.reason, airflow_run_id)
    elif decision.action in ("reject", "halt", "inconclusive"):
        registry.remove_alias(url, spec.name, registry.CHALLENGER, experiment["challenger_version"])
    return decision
