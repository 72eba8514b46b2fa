"""The glue between Airflow and the package: each function takes explicit arguments and calls one
piece of driftloop. DAG files import this module only inside task callables (it pulls in pandas)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

LANDING_VARIABLE = "driftloop_landing_root"


def dag_defaults(owner: str = "driftloop") -> dict[str, Any]:
    """What every driftloop DAG shares: a static start, no catchup, one run at a time, retries and
    a failure alert. DAG files spread it into @dag(...)."""
    from datetime import UTC, datetime, timedelta

    return {
        "start_date": datetime(2026, 1, 1, tzinfo=UTC),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "owner": owner,
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
            "on_failure_callback": on_task_failure,
        },
    }


def landing_root_from_airflow() -> str:
    """The `driftloop_landing_root` Variable, else DRIFTLOOP_LANDING / the default."""
    from airflow.sdk import Variable

    from driftloop.core.settings import landing_root

    try:
        value = Variable.get(LANDING_VARIABLE, default=None)
    except Exception:  # noqa: BLE001 - no metadata DB / variable backend: use the environment default
        value = None
    return landing_root(value)


def run_ingest(model_name: str, kind: str, run_id: str, now: Any = None) -> dict[str, Any]:
    """Load one kind of landed file. ``now`` (default: the wall clock) is the clock "not in the future"
    and "still being written" are judged on."""
    from driftloop.core import warehouse
    from driftloop.core.spec import get_spec
    from driftloop.ingest.loader import ingest

    url = warehouse.resolve_url(use_airflow=True)
    warehouse.migrate(url)  # a no-op when applied; lets a new warehouse work without a separate step
    warehouse.sync_specs(url)
    result = ingest(get_spec(model_name), landing_root=landing_root_from_airflow(), url=url, run_id=run_id, kinds=[kind],
                    now=_aware(now))  # fmt: skip
    failed = [f.path for f in result.files if f.status == "failed"]
    summary = {
        "kind": kind,
        "files": len(result.files),
        "rows_loaded": result.rows_loaded,
        "rows_rejected": result.rows_rejected,
        "n_files_failed": len(failed),
        "files_failed": failed,
        "files_skipped": [f.path for f in result.files if f.status == "skipped"],
        "files_changed": [f.path for f in result.files if f.status == "changed"],
        "files_in_progress": [f.path for f in result.files if f.status == "in_progress"],
    }
    log.info("ingest %s %s: %s", model_name, kind, summary)
    return summary


def on_task_failure(context: dict[str, Any]) -> None:
    """Task failure callback: an alert in the outbox (one per task try), routed by the model's spec."""
    from driftloop.core import warehouse
    from driftloop.core.alerts import enqueue_alert

    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = context.get("run_id") or getattr(ti, "run_id", "?")
    error = context.get("exception")
    model_name = dag_id.split("__", 1)[1] if "__" in dag_id else None
    try:
        import psycopg

        with psycopg.connect(warehouse.resolve_url(use_airflow=True)) as conn:
            enqueue_alert(
                conn,
                dedup_key=f"task-failed:{dag_id}:{task_id}:{run_id}",
                source="airflow",
                severity="warning",
                model_name=model_name,
                summary=f"{dag_id}.{task_id} failed in {run_id}: {type(error).__name__ if error else 'error'}",
                details={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "error": str(error)[:2000],
                         "airflow": {"dag_id": dag_id, "run_id": run_id}},
            )  # fmt: skip
    except Exception:  # a broken warehouse must not hide the original failure
        log.exception("could not record the failure of %s.%s in the alert outbox", dag_id, task_id)


def run_profiling(model_name: str, now: Any = None) -> dict[str, Any]:
    """Profile the windows touched by prediction files loaded since the last profiling run, and those
    closed by the clock since then (driftloop.monitor.profiling.profile_pending)."""
    from datetime import UTC, datetime

    from driftloop.core import warehouse
    from driftloop.core.spec import get_spec
    from driftloop.monitor.profiling import profile_pending

    url = warehouse.resolve_url(use_airflow=True)
    warehouse.migrate(url)
    result = profile_pending(url, get_spec(model_name), now or datetime.now(UTC))
    summary = {"hours": len(result.hours), "days": len(result.days), "weeks": len(result.windows.get("week", [])),
               "profiles": result.profiles, "rows": result.rows, "unbinned_versions": result.unbinned_versions}  # fmt: skip
    log.info("profiled %s: %s", model_name, summary)
    return summary


def run_metrics_build(as_of: Any = None) -> dict[str, Any]:
    """The metrics DAG's one ``dbt build`` (models and data tests; the unit tests run in CI, see
    :func:`~driftloop.monitor.dbt_runner.build`) with the run's clock as ``as_of`` (None: when dbt
    starts). Logs and returns every node's status and seconds; a failure raises
    :class:`~driftloop.monitor.dbt_runner.DbtRunError` naming the failing nodes. Builds keep their own
    target folder (:func:`~driftloop.monitor.dbt_runner.command_state`: dbt's partial parse survives,
    and a build never shares run files with another dbt command)."""
    import time
    from collections import Counter

    from driftloop.core import warehouse
    from driftloop.monitor.dbt_runner import build, command_state, node_results

    url = warehouse.resolve_url(use_airflow=True)
    started = time.perf_counter()
    with command_state("build") as (target, logs):
        result = build(url, as_of=_aware(as_of), unit_tests=False, target_path=target, log_path=logs)
    seconds = round(time.perf_counter() - started, 2)
    nodes = node_results(result)
    for row in nodes:
        log.info("dbt %-8s %7.2fs  %s", row["status"], row["seconds"], row["node"])
    counts = dict(Counter(row["status"] for row in nodes))
    log.info("dbt build: %d nodes in %.1f s: %s", len(nodes), seconds, counts)
    return {"seconds": seconds, "counts": counts, "nodes": nodes}


def run_source_freshness() -> dict[str, Any]:
    """`dbt source freshness` on the raw sources; fails (and so alerts) when a source is past its
    error_after, e.g. a serving system stopped logging. Its own target path: runs beside the builds."""
    from driftloop.core import warehouse
    from driftloop.monitor.dbt_runner import command_state, run_dbt

    url = warehouse.resolve_url(use_airflow=True)
    with command_state("freshness") as (target, logs):
        result = run_dbt(["source", "freshness"], url, target_path=target, log_path=logs)
    statuses = {str(r.node.unique_id): str(r.status) for r in result.result.results}
    log.info("source freshness: %s", statuses)
    return statuses


def retrain_gate(model_name: str, manual_reason: str | None = None) -> dict[str, Any] | None:
    """The sensor's poke: the fired trigger and its evidence, or None to keep waiting."""
    from driftloop.core import warehouse
    from driftloop.learn.retrain import check_gate

    gate = check_gate(warehouse.resolve_url(use_airflow=True), model_name, manual_reason)
    log.info("retrain gate %s: %s (%s)", model_name, "FIRES" if gate.fire else "waits", gate.reason)
    return gate.as_dict() if gate.fire else None


def stop_running_experiment(model_name: str, reason: str, *, by: str, now: Any = None, run_id: str | None = None) -> dict[str, Any]:
    """stop_experiment__<model>'s task: stop the running experiment (or say there is none)."""
    from driftloop.core import warehouse
    from driftloop.core.spec import get_spec
    from driftloop.promote.experiments import stop_experiment

    stopped = stop_experiment(warehouse.resolve_url(use_airflow=True), get_spec(model_name), reason=reason, by=by,
                              as_of=_aware(now), airflow_run_id=run_id)  # fmt: skip
    if stopped is None:
        log.info("%s: no experiment is running; nothing to stop", model_name)
        return {"stopped": None}
    log.info("%s: experiment %s stopped by %s: %s", model_name, stopped["experiment_id"], by, reason)
    return {"stopped": stopped["experiment_id"], "champion_version": stopped["champion_version"]}


def _aware(value: Any) -> Any:
    """A datetime (or ISO 8601 text, as run conf carries it) as an aware UTC datetime; None stays None.

    Always a plain ``datetime``: Airflow's context holds pendulum DateTimes, and a pendulum DateTime in
    ``datetime.timezone.utc`` loses its zone in arithmetic (``stamp - timedelta(days=2)`` is naive),
    which made every comparison with a stored time fail."""
    from datetime import UTC, datetime

    if value is None or value == "":
        return None
    stamp = datetime.fromisoformat(value if isinstance(value, str) else value.isoformat())
    if stamp.tzinfo is None:
        raise ValueError(f"the run's clock must carry a UTC offset (got {value!r})")
    return stamp.astimezone(UTC)


def stated_clock(context: dict[str, Any]) -> Any:
    """The clock a run states in its conf (``{"now": "2026-11-02T12:00:00+00:00"}``: a replay, the demo,
    a simulation), else None."""
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    return _aware(conf.get("now"))


def run_clock(context: dict[str, Any]) -> Any:
    """The run's "now" for windowed work (Airflow's best practice: never the wall clock): the clock the
    run states, else the end of its data interval, else its logical date; None (the wall clock) for a
    run that has none (an Airflow 3 manual run without a logical date)."""
    return stated_clock(context) or _aware(context.get("data_interval_end") or context.get("logical_date"))


def run_retrain(model_name: str, fired: dict[str, Any], run_key: str, as_of: Any = None) -> dict[str, Any]:
    """Train, log and register a challenger for the trigger the sensor let through; ``as_of`` is the
    run's clock (the training window ends there)."""
    from driftloop.core import warehouse
    from driftloop.core.spec import get_spec
    from driftloop.learn import retrain

    return retrain.run_retrain(
        warehouse.resolve_url(use_airflow=True),
        get_spec(model_name),
        run_key=run_key,
        trigger=fired.get("trigger") or "manual",
        reason=fired.get("reason") or "",
        evidence=fired.get("evidence") or {},
        respect_cooldown=fired.get("trigger") != "manual",
        as_of=as_of,
    )


def run_offline_gate(model_name: str, run_id: str) -> dict[str, Any]:
    """The offline gate on the current challenger; the decision is recorded, a failure acted on."""
    from driftloop.core import warehouse
    from driftloop.core.spec import get_spec
    from driftloop.learn import registry
    from driftloop.promote import gate as promotion

    url = warehouse.resolve_url(use_airflow=True)
    challenger = registry.version_by_alias(model_name, registry.CHALLENGER)
    champion = registry.version_by_alias(model_name, registry.CHAMPION)
    if challenger is None or champion is None:
        return {"passed": False, "reason": "no champion or no challenger in the registry", "challenger_version": None}
    result = promotion.run_offline_gate(url, get_spec(model_name), challenger.version, airflow_run_id=run_id)
    return {"passed": result.passed, "reason": result.reason, "challenger_version": challenger.version,
            "champion_version": champion.version}  # fmt: skip


def start_experiment(model_name: str, gate: dict[str, Any], run_id: str, now: Any = None) -> str:
    """Open the experiment at the run's clock ``now`` (default: the database's now)."""
    from driftloop.core import warehouse
    from driftloop.core.spec import get_spec
    from driftloop.promote import experiments

    return experiments.start_experiment(
        warehouse.resolve_url(use_airflow=True), get_spec(model_name), gate["champion_version"],
        gate["challenger_version"], airflow_run_id=run_id, now=now,
    )  # fmt: skip


def experiment_look(model_name: str, run_id: str) -> dict[str, Any]:
    """One look at the running experiment. ``done`` when it ended (promote, reject, halt, inconclusive;
    or no experiment runs anymore); otherwise what the sensor needs to wait for the next look."""
    from datetime import UTC, datetime

    from driftloop.core import clock, warehouse
    from driftloop.core.spec import get_spec
    from driftloop.promote import experiments

    spec = get_spec(model_name)
    url = warehouse.resolve_url(use_airflow=True)
    as_of, looked_at_wall = clock.now(), datetime.now(UTC)
    decision = experiments.step_experiment(url, spec, as_of=as_of, airflow_run_id=run_id)
    if decision is None:
        return {"done": True, "action": "ended", "reason": "no experiment is running (finished or repaired)"}
    log.info("experiment look %s: %s (%s)", model_name, decision.action, decision.reason)
    if decision.action not in ("continue", "ramp", "reallocate"):
        return {"done": True, "action": decision.action, "reason": decision.reason}
    experiment = experiments.running_experiment(url, model_name)
    if experiment is None:  # ended by someone else since this look
        return {"done": True, "action": "ended", "reason": "the experiment ended elsewhere"}
    return {"done": False, "action": decision.action, "reason": decision.reason, "as_of": as_of.isoformat(),
            "looked_at_wall": looked_at_wall.isoformat(), "experiment_id": experiment["experiment_id"],
            "deadline": (experiment["started_at"] + spec.promotion.online.max_duration).isoformat()}  # fmt: skip


def watch_look(model_name: str, run_id: str) -> dict[str, Any]:
    """One look at a freshly promoted champion. ``skip`` when nothing is watched (the experiment did not
    promote, or the watch is off); ``done`` when the watch ended (kept or rolled back)."""
    from datetime import UTC, datetime

    from driftloop.core import clock, warehouse
    from driftloop.core.spec import get_spec
    from driftloop.promote import experiments

    spec = get_spec(model_name)
    url = warehouse.resolve_url(use_airflow=True)
    if experiments.watching_experiment(url, model_name) is None:
        return {"skip": True, "reason": "no promoted champion is being watched"}
    as_of, looked_at_wall = clock.now(), datetime.now(UTC)
    decision = experiments.step_watch(url, spec, as_of=as_of, airflow_run_id=run_id)
    watched = experiments.watching_experiment(url, model_name)
    if decision is None or watched is None:
        return {"done": True, "action": decision.action if decision else "ended",
                "reason": decision.reason if decision else "the watch ended"}  # fmt: skip
    log.info("watch look %s: %s (%s)", model_name, decision.action, decision.reason)
    return {"done": False, "action": decision.action, "reason": decision.reason, "as_of": as_of.isoformat(),
            "looked_at_wall": looked_at_wall.isoformat(), "experiment_id": watched["experiment_id"],
            "deadline": watched["watch_ends_at"].isoformat()}  # fmt: skip


def run_monitor(model_name: str, now: Any = None, dag_id: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Evaluate the model's alert rules on the marts at the run's clock (opening, updating and resolving
    alerts in the outbox); the outbox is delivered by :func:`deliver_alerts`."""
    from datetime import UTC, datetime

    from driftloop.core import warehouse
    from driftloop.core.spec import get_spec
    from driftloop.monitor.alerting import evaluate_rules

    url = warehouse.resolve_url(use_airflow=True)
    warehouse.migrate(url)
    airflow_run = {"dag_id": dag_id, "run_id": run_id} if dag_id and run_id else None
    report = evaluate_rules(url, get_spec(model_name), now=_aware(now) or datetime.now(UTC), airflow_run=airflow_run)
    summary = {result: report.count(result) for result in ("opened", "updated", "resolved", "counted", "unchanged",
                                                           "silenced", "not_evaluated")}  # fmt: skip
    log.info("monitor %s: %s", model_name, summary)
    return summary | {"outcomes": report.as_dict()["outcomes"]}


def deliver_alerts(model_name: str, now: Any = None) -> dict[str, Any]:
    """Send what is due in the alert outbox (every source's alerts, not only this model's) and the daily
    digest when it is due. With no connection configured the alerts stay in the outbox: never an error."""
    from datetime import UTC, datetime

    from driftloop.core import notify, warehouse
    from driftloop.core.spec import get_spec

    url = warehouse.resolve_url(use_airflow=True)
    clock = _aware(now) or datetime.now(UTC)
    channels = notify.channels_from_connections()
    report = notify.deliver_pending(url, now=clock, channels=channels)
    digest = get_spec(model_name).alerts.digest
    if digest.enabled:
        report.digest = notify.send_digest(url, now=clock, channels=channels, hour_utc=digest.hour_utc)
    log.info("alert delivery: %s", {k: v for k, v in report.as_dict().items() if k != "errors"})
    return report.as_dict()
