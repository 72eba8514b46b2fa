"""Promotion, steps 2 and 3: the live experiment, from start to promote / reject, then the watch of the
new champion, written to the warehouse.

* :func:`start_experiment` opens ``ops.experiments`` (at most one running per model: a partial unique
  index; none while a promoted champion is still watched) and points ``ops.traffic_allocation`` (what
  the router reads) at the first allocation (``ramp_steps[0]``).
* :func:`gather_evidence` counts each arm per allocation step from the warehouse (units, labelled
  predictions, correct ones, errors, latency, and the feedback's outcomes: n, > 0, sum, sum of squares,
  for the primary metric ``promotion.online.metric``), with the sequential state of the last look.
* :func:`step_experiment` is one look: evidence -> ``driftloop.promote.decision.decide`` -> ``ops.decisions`` ->
  the action: ramp (canary) or reallocate (Thompson sampling, epsilon-greedy): a new allocation step;
  promote (alias ``champion`` -> the challenger, then the allocation: 100 % to it, and the watch
  begins); reject / halt / inconclusive (allocation back to the champion, the ``challenger`` alias
  removed). Each step notifies through the alert outbox.
* :func:`step_watch` is one look at a promoted champion during ``promotion.watch.window``: its success
  rate, latency and errors since the promotion against its own as the experiment's treatment
  (``driftloop.promote.decision.decide_watch``); a degradation rolls back (alias ``champion`` back to the
  previous version, then the allocation), the end of the window keeps it.

Crash safety: a promotion or a rollback writes its decision first, then moves the alias, then (one
transaction) the allocation and the experiment's status. A crash in between leaves a decision the
state does not show yet; the next look (:func:`reconcile`) finishes it, so the state converges
whatever step died.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from driftloop.core import warehouse
from driftloop.core.audit import record_decision
from driftloop.core.locks import lock_model
from driftloop.core.spec import ModelSpec
from driftloop.learn import registry
from driftloop.promote.decision import (
    LATENCY_FLOOR_MS,
    AllocationStep,
    ArmEvidence,
    Decision,
    Evidence,
    Policy,
    SequentialState,
    WatchEvidence,
    WatchPolicy,
    decide,
    decide_watch,
)

log = logging.getLogger(__name__)

TERMINAL = {"promote": "promoted", "reject": "rejected", "halt": "halted", "inconclusive": "inconclusive"}
ALLOCATION_CHANGES = ("ramp", "reallocate")


class ExperimentConflict(RuntimeError):
    """Another experiment is running (or its promoted champion is still watched) for this model."""


def _notify(conn, spec: ModelSpec, experiment_id: str, action: str, reason: str) -> None:
    from driftloop.core.alerts import enqueue_alert

    severity = "warning" if action in ("halt", "reject", "rollback") else "info"
    enqueue_alert(conn, dedup_key=f"experiment:{experiment_id}:{action}", source="promote", severity=severity,
                  model_name=spec.name, summary=f"{spec.name} experiment {experiment_id}: {action}",
                  details={"reason": reason})  # fmt: skip


def _experiment(url: str, where: str, params: tuple) -> dict[str, Any] | None:
    from psycopg.rows import dict_row

    with warehouse.connect(url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(f"select * from ops.experiments where {where}", params).fetchone()


def running_experiment(url: str, model_name: str) -> dict[str, Any] | None:
    return _experiment(url, "model_name = %s and status = 'running'", (model_name,))


def watching_experiment(url: str, model_name: str) -> dict[str, Any] | None:
    """The promoted experiment whose new champion is being watched, if any."""
    return _experiment(url, "model_name = %s and watch_status = 'watching'", (model_name,))


def start_experiment(url: str, spec: ModelSpec, champion_version: str, challenger_version: str, *,
                     airflow_run_id: str | None = None, retrain_run_id: int | None = None,
                     now: datetime | None = None) -> str:  # fmt: skip
    """Open the experiment and give the challenger the first share. Idempotent for the same challenger;
    another running experiment of the model, or a watch in progress, raises :class:`ExperimentConflict`.
    ``now`` is the run's clock: the experiment starts there (default: the database's now)."""
    online = spec.promotion.online
    experiment_id = f"{spec.name}-v{champion_version}-vs-v{challenger_version}"
    share = online.ramp_steps[0]
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "experiment", spec.name)
        busy = conn.execute(
            "select experiment_id, status from ops.experiments where model_name = %s "
            "and (status = 'running' or watch_status = 'watching')",
            (spec.name,),
        ).fetchone()
        if busy is not None:
            if busy[0] == experiment_id:
                return experiment_id
            what = "is still running" if busy[1] == "running" else "promoted a champion that is still being watched"
            raise ExperimentConflict(f"{spec.name}: experiment {busy[0]} {what}")
        conn.execute(
            "insert into ops.experiments (experiment_id, model_name, champion_version, challenger_version, strategy, "
            "status, policy, retrain_run_id, started_at) values (%s, %s, %s, %s, %s, 'running', %s::jsonb, %s, "
            "coalesce(%s, now()))",
            (experiment_id, spec.name, champion_version, challenger_version, online.strategy,
             spec.promotion.model_dump_json(include={"online", "watch"}), retrain_run_id, now),
        )  # fmt: skip
        _set_allocation(conn, spec.name, experiment_id, champion_version, challenger_version, share)
        how = "canary" if online.strategy == "canary" else online.strategy.replace("_", "-")
        reason = f"{how}: version {challenger_version} gets {share:.0%} of the units, version {champion_version} the rest"
        record_decision(conn, spec.name, experiment_id=experiment_id, step="allocation", decision="start", reason=reason,
                        evidence={"treatment_share": share, "strategy": online.strategy},
                        airflow_run_id=airflow_run_id, decided_at=now)  # fmt: skip
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


def _counts_sql(where: str) -> str:
    """Per variant: units, labelled predictions, correct ones, errors and latency p95 of the predictions
    ``where`` selects (a fixed fragment of this module with %s parameters), and the latest feedback's
    outcome: how many requests have one (failed ones included, as fct_experiment counts them), how many
    are > 0, their sum and sum of squares (the sufficient statistics of outcome_rate and outcome_mean)."""
    return f"""
    select
        predictions.variant,
        count(distinct coalesce(predictions.unit_id, predictions.prediction_id)) as n_assigned,
        count(labels.label) filter (where predictions.error is null) as n_labelled,
        count(*) filter (where predictions.error is null and labels.label = predictions.prediction) as successes,
        count(*) filter (where predictions.error is not null) as n_errors,
        percentile_cont(0.95) within group (order by predictions.latency_ms) as latency_p95_ms,
        count(*) as n_predictions,
        avg(ln(greatest(predictions.latency_ms, {LATENCY_FLOOR_MS!r}))) as log_latency_mean,
        var_samp(ln(greatest(predictions.latency_ms, {LATENCY_FLOOR_MS!r}))) as log_latency_variance,
        count(labels.outcome) as n_outcomes,
        count(*) filter (where labels.outcome > 0) as outcome_positive,
        coalesce(sum(labels.outcome), 0) as outcome_sum,
        coalesce(sum(labels.outcome * labels.outcome), 0) as outcome_sum_squares
    from raw.predictions as predictions
    left join lateral (
        select feedback.label, feedback.outcome
        from raw.feedback as feedback
        where feedback.model_name = predictions.model_name and feedback.prediction_id = predictions.prediction_id
        order by feedback.feedback_ts desc
        limit 1
    ) as labels on true
    where predictions.model_name = %s and {where}
        and predictions.request_ts >= %s and predictions.request_ts < %s
    group by predictions.variant
"""


_ARM_COUNTS = _counts_sql("predictions.experiment_id = %s")
_VERSION_COUNTS = _counts_sql("predictions.model_version = %s")


def _arm(name: str, row: tuple | None) -> ArmEvidence:
    """An arm from its counts row; no row (no traffic) or no latency is "not measured" (None), never a
    stand-in number."""
    if row is None:
        return ArmEvidence(name, 0, 0, 0, 0)
    (n_assigned, n_labelled, successes, n_errors, p95, n_predictions, log_mean, log_variance,
     n_outcomes, outcome_positive, outcome_sum, outcome_sum_squares) = row  # fmt: skip
    # units are counted once, predictions per request: a unit's several labels never exceed its predictions
    n_assigned = max(int(n_assigned), int(n_labelled))
    # one latency has no sample variance: 0 (the test needs 2 per arm and step anyway)
    log_variance = None if log_mean is None else float(log_variance or 0.0)
    return ArmEvidence(name, n_assigned, int(n_labelled), int(successes), int(n_errors),
                       None if p95 is None else float(p95), int(n_predictions),
                       None if log_mean is None else float(log_mean), log_variance,
                       int(n_outcomes), int(outcome_positive), float(outcome_sum), float(outcome_sum_squares))  # fmt: skip


def _sum_arms(name: str, rows: list[tuple]) -> ArmEvidence:
    """One arm from several variants' rows (a version served as challenger, then as control); the p95 is
    the largest (a guardrail errs on the safe side)."""
    arms = [_arm(name, row) for row in rows]
    if not arms:
        return _arm(name, None)
    p95s = [a.latency_p95_ms for a in arms if a.latency_p95_ms is not None]
    measured = [a for a in arms if a.log_latency_mean is not None]
    n = sum(a.n_predictions for a in measured)
    mean = sum(a.n_predictions * a.log_latency_mean for a in measured) / n if n else None
    # pooled moments: within-variant sums of squares plus the between-variant part
    variance = (sum((a.n_predictions - 1) * a.log_latency_variance + a.n_predictions * (a.log_latency_mean - mean) ** 2
                    for a in measured) / (n - 1) if n > 1 else (0.0 if n else None))  # fmt: skip
    return ArmEvidence(name, sum(a.n_assigned for a in arms), sum(a.n_labelled for a in arms),
                       sum(a.successes for a in arms), sum(a.n_errors for a in arms),
                       max(p95s) if p95s else None, sum(a.n_predictions for a in arms), mean, variance,
                       sum(a.n_outcomes for a in arms), sum(a.outcome_positive for a in arms),
                       sum(a.outcome_sum for a in arms), sum(a.outcome_sum_squares for a in arms))  # fmt: skip


def allocation_steps(url: str, experiment_id: str) -> list[tuple[float, datetime]]:
    """(treatment share, since when) of every allocation of the experiment, oldest first. A change takes
    effect at the look that decided it (``effective_at``: its evidence ends there), else when recorded."""
    with warehouse.connect(url) as conn:
        rows = conn.execute(
            "select cast(evidence ->> 'treatment_share' as double precision), "
            "coalesce(cast(evidence ->> 'effective_at' as timestamptz), decided_at) as since from ops.decisions "
            "where experiment_id = %s and step = 'allocation' order by since, decision_id",
            (experiment_id,),
        ).fetchall()
    return [(float(share), since) for share, since in rows]


def _last_state(conn, experiment_id: str, step: str) -> tuple[SequentialState | None, int]:
    """The sequential state stored with the step's last decision, and how many looks there were."""
    last = conn.execute(
        "select evidence -> 'state', count(*) over () from ops.decisions "
        "where experiment_id = %s and step = %s order by decided_at desc, decision_id desc limit 1",
        (experiment_id, step),
    ).fetchone()
    return (SequentialState(**last[0]) if last and last[0] else None), (last[1] if last else 0)


def gather_evidence(url: str, spec: ModelSpec, experiment: dict[str, Any], as_of: datetime) -> Evidence:
    """Counts per allocation step. After a change the first ``allocation_settle`` is left out: routers
    cache the allocation, so those predictions may still follow the previous one."""
    settle = spec.promotion.online.allocation_settle
    steps = allocation_steps(url, experiment["experiment_id"])
    bounds = [(share, since + settle if i else since, steps[i + 1][1] if i + 1 < len(steps) else as_of)
              for i, (share, since) in enumerate(steps)]  # fmt: skip
    counted: list[AllocationStep] = []
    with warehouse.connect(url) as conn:
        for share, since, until in bounds:
            rows = {r[0]: r[1:] for r in conn.execute(_ARM_COUNTS, (spec.name, experiment["experiment_id"], since, until))}
            counted.append(AllocationStep(share, _arm("control", rows.get("control")), _arm("challenger", rows.get("challenger"))))
        previous, looks = _last_state(conn, experiment["experiment_id"], "sequential_test")
    current = counted[-1]
    hours = max((as_of - experiment["started_at"]).total_seconds() / 3600, 0.0)
    return Evidence(current.control, current.treatment, current.treatment_share, hours, looks + 1,
                    tuple(counted[:-1]), previous)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Looks and actions


def _finish(conn, spec: ModelSpec, experiment: dict[str, Any], action: str, champion: str, reason: str,
            airflow_run_id: str | None, as_of: datetime | None) -> None:  # fmt: skip
    """Allocation to ``champion`` only, the experiment closed at the deciding look (``as_of``, else now;
    a promotion starts its watch there), decision recorded, people told."""
    _set_allocation(conn, spec.name, None, champion, None, 0.0)
    window = spec.promotion.watch.window if action == "promote" else timedelta(0)
    conn.execute(
        "update ops.experiments set status = %s, ended_at = coalesce(%s, now()), "
        "watch_status = case when %s then 'watching' end, "
        "watch_ends_at = case when %s then coalesce(%s, now()) + %s end "
        "where experiment_id = %s and status = 'running'",
        (TERMINAL[action], as_of, window > timedelta(0), window > timedelta(0), as_of, window, experiment["experiment_id"]),
    )
    record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="allocation", decision=TERMINAL[action],
                    reason=reason, evidence={"champion_version": champion, "treatment_share": 0.0,
                                             "watch_window_hours": window / timedelta(hours=1)},
                    airflow_run_id=airflow_run_id, decided_at=as_of)  # fmt: skip
    _notify(conn, spec, experiment["experiment_id"], action, reason)


def _complete_promotion(url: str, spec: ModelSpec, experiment: dict[str, Any], reason: str, airflow_run_id: str | None,
                        as_of: datetime | None = None) -> None:  # fmt: skip
    registry.set_alias(url, spec.name, registry.CHAMPION, experiment["challenger_version"], experiment.get("retrain_run_id"))
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "experiment", spec.name)
        _finish(conn, spec, experiment, "promote", experiment["challenger_version"], reason, airflow_run_id, as_of)
    registry.remove_alias(url, spec.name, registry.CHALLENGER, experiment["challenger_version"])


def _retrain_run_of(url: str, model_name: str, version: str) -> int | None:
    with warehouse.connect(url) as conn:
        row = conn.execute(
            "select max(retrain_run_id) from ops.retrain_runs where model_name = %s and model_version = %s "
            "and status = 'succeeded'",
            (model_name, version),
        ).fetchone()
    return row[0] if row else None


def _complete_rollback(url: str, spec: ModelSpec, experiment: dict[str, Any], reason: str, airflow_run_id: str | None) -> None:
    """The previous champion back (registry alias, then allocation and status in one transaction)."""
    previous, demoted = experiment["champion_version"], experiment["challenger_version"]
    registry.set_alias(url, spec.name, registry.CHAMPION, previous, _retrain_run_of(url, spec.name, previous))
    client = registry.client()  # tags before the status: a crash in between is redone by reconcile
    client.set_model_version_tag(spec.name, demoted, "driftloop.status", "rolled_back")
    client.set_model_version_tag(spec.name, demoted, "driftloop.rolled_back_because", reason[:4000])
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "experiment", spec.name)
        _set_allocation(conn, spec.name, None, previous, None, 0.0)
        updated = conn.execute(
            "update ops.experiments set status = 'rolled_back', watch_status = 'rolled_back' "
            "where experiment_id = %s and watch_status = 'watching'",
            (experiment["experiment_id"],),
        ).rowcount
        if updated:
            record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="allocation",
                            decision="rolled_back", reason=reason,
                            evidence={"champion_version": previous, "rolled_back_version": demoted, "treatment_share": 0.0},
                            airflow_run_id=airflow_run_id)  # fmt: skip
            _notify(conn, spec, experiment["experiment_id"], "rollback", reason)


def _last_decision(url: str, experiment_id: str, step: str, decision: str) -> str | None:
    with warehouse.connect(url) as conn:
        row = conn.execute(
            "select reason from ops.decisions where experiment_id = %s and step = %s and decision = %s "
            "order by decided_at desc, decision_id desc limit 1",
            (experiment_id, step, decision),
        ).fetchone()
    return row[0] if row else None


def reconcile(url: str, spec: ModelSpec, airflow_run_id: str | None = None) -> str | None:
    """Finish a promotion or a rollback a crash interrupted (its decision was recorded, or the alias moved,
    but the experiment does not say so yet). Returns the experiment id it repaired."""
    experiment = running_experiment(url, spec.name)
    if experiment is not None:
        champion = registry.version_by_alias(spec.name, registry.CHAMPION)
        decided = _last_decision(url, experiment["experiment_id"], "sequential_test", "promote")
        moved = champion is not None and champion.version == experiment["challenger_version"]
        if decided or moved:
            log.warning("%s: finishing the interrupted promotion of %s", spec.name, experiment["experiment_id"])
            _complete_promotion(url, spec, experiment, decided or "promotion resumed", airflow_run_id)
            return experiment["experiment_id"]
    watched = watching_experiment(url, spec.name)
    if watched is not None:
        decided = _last_decision(url, watched["experiment_id"], "watch", "rollback")
        if decided:
            log.warning("%s: finishing the interrupted rollback of %s", spec.name, watched["experiment_id"])
            _complete_rollback(url, spec, watched, decided, airflow_run_id)
            return watched["experiment_id"]
    return None


def step_experiment(url: str | None, spec: ModelSpec, *, as_of: datetime | None = None, policy: Policy | None = None,
                    airflow_run_id: str | None = None) -> Decision | None:  # fmt: skip
    """One look at the model's running experiment; None when there is none."""
    url = warehouse.resolve_url(url)
    reconcile(url, spec, airflow_run_id)
    experiment = running_experiment(url, spec.name)
    if experiment is None:
        return None
    as_of = as_of or datetime.now(UTC)
    policy = policy or Policy.from_spec(spec.promotion.online)
    evidence = gather_evidence(url, spec, experiment, as_of)
    decision = decide(evidence, policy)
    record = {"statistics": decision.statistics, "state": dataclasses.asdict(decision.state),
              "next_allocation": decision.next_allocation, "as_of": as_of,
              "evidence": {"look": evidence.look, "hours_elapsed": evidence.hours_elapsed,
                           "steps": [dataclasses.asdict(step) for step in evidence.steps]}}  # fmt: skip
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "experiment", spec.name)
        record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="sequential_test",
                        decision=decision.action, reason=decision.reason, evidence=record,
                        airflow_run_id=airflow_run_id, decided_at=as_of)  # fmt: skip
        if decision.action in ALLOCATION_CHANGES:
            _set_allocation(conn, spec.name, experiment["experiment_id"], experiment["champion_version"],
                            experiment["challenger_version"], decision.next_allocation)  # fmt: skip
            record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="allocation",
                            decision=decision.action, reason=decision.reason,
                            evidence={"treatment_share": decision.next_allocation, "effective_at": as_of},
                            airflow_run_id=airflow_run_id, decided_at=as_of)  # fmt: skip
            if decision.next_allocation != evidence.treatment_share:
                _notify(conn, spec, experiment["experiment_id"], f"{decision.action} to {decision.next_allocation:.0%}",
                        decision.reason)  # fmt: skip
        elif decision.action in ("reject", "halt", "inconclusive"):
            _finish(conn, spec, experiment, decision.action, experiment["champion_version"], decision.reason,
                    airflow_run_id, as_of)  # fmt: skip
    if decision.action == "promote":
        _complete_promotion(url, spec, experiment, decision.reason, airflow_run_id, as_of)
    elif decision.action in ("reject", "halt", "inconclusive"):
        registry.remove_alias(url, spec.name, registry.CHALLENGER, experiment["challenger_version"])
    return decision


def stop_experiment(url: str | None, spec: ModelSpec, *, reason: str, by: str = "a person",
                    as_of: datetime | None = None, airflow_run_id: str | None = None) -> dict[str, Any] | None:  # fmt: skip
    """A person stops the model's running experiment: the champion gets all traffic back, the
    experiment ends ``halted`` with ``reason`` (required: the audit trail says why), the challenger
    alias goes, people are told. The running ``promote__<model>`` run sees the phase ended elsewhere
    at its next look and finishes. Returns the stopped experiment, or None when none was running."""
    if not reason or not reason.strip():
        raise ValueError("stopping an experiment needs a reason (it goes into ops.decisions)")
    url = warehouse.resolve_url(url)
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "experiment", spec.name)
        from psycopg.rows import dict_row

        with conn.cursor(row_factory=dict_row) as cursor:  # read under the lock: a look may be deciding now
            experiment = cursor.execute("select * from ops.experiments where model_name = %s and status = 'running'",
                                        (spec.name,)).fetchone()  # fmt: skip
        if experiment is None:
            return None
        _finish(conn, spec, experiment, "halt", experiment["champion_version"], f"stopped by {by}: {reason.strip()}",
                airflow_run_id, as_of)  # fmt: skip
    registry.remove_alias(url, spec.name, registry.CHALLENGER, experiment["challenger_version"])
    return experiment


# --------------------------------------------------------------------------------------------------
# The watch after a promotion


def gather_watch_evidence(url: str, spec: ModelSpec, experiment: dict[str, Any], as_of: datetime) -> WatchEvidence:
    """The promoted version as the experiment's treatment, and everything it served since the promotion."""
    version, promoted_at = experiment["challenger_version"], experiment["ended_at"]
    with warehouse.connect(url) as conn:
        during = dict((r[0], r[1:]) for r in conn.execute(
            _ARM_COUNTS, (spec.name, experiment["experiment_id"], experiment["started_at"], promoted_at)))  # fmt: skip
        after = conn.execute(_VERSION_COUNTS, (spec.name, version, promoted_at, as_of)).fetchall()
        previous, looks = _last_state(conn, experiment["experiment_id"], "watch")
    hours = max((as_of - promoted_at).total_seconds() / 3600, 0.0)
    return WatchEvidence(_arm("during_experiment", during.get("challenger")),
                         _sum_arms("after_promotion", [row[1:] for row in after]), hours, looks + 1, previous)  # fmt: skip


def step_watch(url: str | None, spec: ModelSpec, *, as_of: datetime | None = None, policy: WatchPolicy | None = None,
               airflow_run_id: str | None = None) -> Decision | None:  # fmt: skip
    """One look at the model's promoted champion during its watch window; None when nothing is watched."""
    url = warehouse.resolve_url(url)
    reconcile(url, spec, airflow_run_id)
    experiment = watching_experiment(url, spec.name)
    if experiment is None:
        return None
    as_of = as_of or datetime.now(UTC)
    champion = registry.version_by_alias(spec.name, registry.CHAMPION)
    if champion is None or champion.version != experiment["challenger_version"]:
        reason = (f"Watch ended: the champion alias points at version {champion.version if champion else '(none)'}, "
                  f"not at the promoted version {experiment['challenger_version']}; someone moved it.")  # fmt: skip
        with warehouse.connect(url) as conn, conn.transaction():
            lock_model(conn, "experiment", spec.name)
            conn.execute("update ops.experiments set watch_status = 'superseded' where experiment_id = %s "
                         "and watch_status = 'watching'", (experiment["experiment_id"],))  # fmt: skip
            record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="watch", decision="superseded",
                            reason=reason, evidence={"champion_version": champion.version if champion else None},
                            airflow_run_id=airflow_run_id)  # fmt: skip
        return None
    # the window the promotion set, whatever the spec says now
    policy = policy or WatchPolicy.from_spec(spec.promotion.watch, window=experiment["watch_ends_at"] - experiment["ended_at"])
    evidence = gather_watch_evidence(url, spec, experiment, as_of)
    decision = decide_watch(evidence, policy)
    record = {"statistics": decision.statistics, "state": dataclasses.asdict(decision.state), "as_of": as_of,
              "evidence": {"look": evidence.look, "hours_elapsed": evidence.hours_elapsed,
                           "during": dataclasses.asdict(evidence.during), "after": dataclasses.asdict(evidence.after)}}  # fmt: skip
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "experiment", spec.name)
        record_decision(conn, spec.name, experiment_id=experiment["experiment_id"], step="watch",
                        decision=decision.action, reason=decision.reason, evidence=record,
                        airflow_run_id=airflow_run_id, decided_at=as_of)  # fmt: skip
        if decision.action == "keep":
            conn.execute("update ops.experiments set watch_status = 'passed' where experiment_id = %s "
                         "and watch_status = 'watching'", (experiment["experiment_id"],))  # fmt: skip
            _notify(conn, spec, experiment["experiment_id"], "kept after the watch", decision.reason)
    if decision.action == "rollback":
        _complete_rollback(url, spec, experiment, decision.reason, airflow_run_id)
    return decision
