"""The spec's alert rules (``alerts.rules``), evaluated on the marts: what ``monitor__<model>`` runs after
every marts build (and on its own clock, for freshness).

For each rule: the latest *complete* window of its ``window_size`` (``window_end`` <= now) of the serving
version's ``variant`` rows that qualifies (at least ``min_samples`` in the mart's sample column; for
label-based marts, ``is_mature``), per segment (the ``(all)`` rollup, or each segment); the threshold
(absolute, relative to the serving version's holdout value or to the median of the previous windows, or a
number of ingest intervals); the comparison. A condition that holds raises (or updates) the alert of
(model, rule, segment); one that is clear counts toward its resolution (driftloop.core.alerts). A mart
with one row per entity (drift: a feature) makes one alert listing every entity for which it holds. A
window that does not qualify (too few samples, labels not mature) says nothing: the alert's state stays.
Re-evaluating the same window changes nothing, so reruns are idempotent.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import statistics
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from driftloop.core import alerts, warehouse
from driftloop.core.locks import lock_model
from driftloop.core.marts import FRESHNESS_COLUMNS, MARTS, Mart
from driftloop.core.spec import AlertRule, ModelSpec

log = logging.getLogger(__name__)

COMPARATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
               "!=": operator.ne}  # fmt: skip
_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below", "==": "is", "!=": "is not"}


@dataclasses.dataclass
class Outcome:
    rule: str
    segment: str
    result: str  # opened, updated, unchanged, counted, resolved, nothing, silenced, not_evaluated
    value: Any = None
    threshold: Any = None
    window_start: datetime | None = None
    note: str | None = None


@dataclasses.dataclass
class EvaluationReport:
    model_name: str
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(o.result == result for o in self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name,
                "outcomes": [dataclasses.asdict(o) | {"window_start": str(o.window_start) if o.window_start else None}
                             for o in self.outcomes]}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# What the monitor knows around a rule


def serving_version(conn, model_name: str) -> str | None:
    """The champion (the registry alias as ops.model_aliases mirrors it), else the version model_health says
    served most of the latest window."""
    row = conn.execute(
        "select model_version from ops.model_aliases where model_name = %s and alias = 'champion'", (model_name,)
    ).fetchone()
    if row:
        return row[0]
    try:
        with conn.transaction():  # a savepoint: the mart may not exist yet
            row = conn.execute("select serving_model_version from marts.model_health where model_name = %s",
                               (model_name,)).fetchone()  # fmt: skip
    except psycopg.errors.UndefinedTable:  # no metrics build yet
        return None
    return row[0] if row else None


def holdout_baseline(conn, model_name: str, version: str | None, column: str) -> float | None:
    """The serving version's value of ``column`` on its training holdout (what retrain_signals compares with)."""
    if version is None:
        return None
    row = conn.execute(
        "select cast(metrics -> 'holdout' ->> %s as double precision) from ops.retrain_runs "
        "where model_name = %s and model_version = %s and status = 'succeeded' "
        "order by finished_at desc nulls last limit 1",
        (column, model_name, version),
    ).fetchone()
    return row[0] if row else None


def actions_taken(conn, model_name: str, now: datetime) -> list[str]:
    """What driftloop already did about the model lately: retraining, an experiment, a rollback."""
    actions = []
    run = conn.execute(
        "select status, trigger, started_at, model_version from ops.retrain_runs where model_name = %s "
        "and started_at > %s order by started_at desc limit 1",
        (model_name, now - timedelta(days=1)),
    ).fetchone()
    if run:
        status, trigger, started_at, version = run
        what = {"running": "retraining started", "succeeded": f"a challenger (version {version}) was trained",
                "failed": "a retraining failed"}.get(status, f"retraining {status}")  # fmt: skip
        actions.append(f"{what} ({trigger}, {started_at:%Y-%m-%d %H:%M} UTC)")
    experiment = conn.execute(
        "select experiment_id, status, watch_status, challenger_version, ended_at from ops.experiments "
        "where model_name = %s and (status = 'running' or watch_status = 'watching' or ended_at > %s) "
        "order by started_at desc limit 1",
        (model_name, now - timedelta(days=3)),
    ).fetchone()
    if experiment:
        experiment_id, status, watch_status, challenger, _ = experiment
        if status == "running":
            share = conn.execute(
                "select challenger_share from ops.traffic_allocation where model_name = %s", (model_name,)
            ).fetchone()
            actions.append(f"experiment {experiment_id} running (version {challenger} at {share[0]:.0%} of the traffic)"
                           if share else f"experiment {experiment_id} running")  # fmt: skip
        elif status == "rolled_back":
            actions.append(f"version {challenger} was rolled back ({experiment_id})")
        elif watch_status == "watching":
            actions.append(f"version {challenger} was promoted and is being watched ({experiment_id})")
        else:
            actions.append(f"experiment {experiment_id} ended: {status}")
    return actions


def _ingest_interval(spec: ModelSpec, now: datetime) -> timedelta:
    from croniter import croniter

    schedule = croniter(spec.ingest.schedule, now)
    first = schedule.get_next(datetime)
    return schedule.get_next(datetime) - first


# --------------------------------------------------------------------------------------------------
# One rule


def _filters(mart: Mart, rule: AlertRule, model_name: str, version: str | None) -> tuple[list[sql.Composable], list[Any]]:
    where, params = [sql.SQL("model_name = %s")], [model_name]
    if mart.windowed:
        where.append(sql.SQL("window_size = %s"))
        params.append(rule.window_size)
    if mart.name != "fct_ingest_quality":  # every other windowed mart is per version, variant and segment
        if version is not None:
            where.append(sql.SQL("model_version = %s"))
            params.append(version)
        where.append(sql.SQL("variant = %s"))
        params.append(rule.variant)
        if rule.segments == "all":
            where.append(sql.SQL("segment = '(all)'"))
    return where, params


def _qualifies(mart: Mart, rule: AlertRule) -> sql.Composable:
    conditions = [sql.SQL("true")]
    if mart.samples and rule.min_samples:
        conditions.append(sql.SQL("{} >= {}").format(sql.Identifier(mart.samples), sql.Literal(rule.min_samples)))
    if mart.label_based:
        conditions.append(sql.SQL("is_mature"))
    return sql.SQL(" and ").join(conditions)


def _window_rows(conn, mart: Mart, rule: AlertRule, model_name: str, version: str | None, now: datetime):
    """(window_start, rows) of the latest complete window that qualifies; rows have segment, entity, value, n."""
    where, params = _filters(mart, rule, model_name, version)
    table = sql.Identifier("marts", mart.name)
    latest = sql.SQL("select max(window_start) from {} where {} and window_end <= %s and {}").format(
        table, sql.SQL(" and ").join(where), _qualifies(mart, rule))
    window_start = conn.execute(latest, [*params, now]).fetchone()[0]
    if window_start is None:
        return None, []
    segment = sql.SQL("'(all)'") if mart.name == "fct_ingest_quality" else sql.Identifier("segment")
    entity = sql.Identifier(mart.entity) if mart.entity else sql.SQL("null")
    samples = sql.Identifier(mart.samples) if mart.samples else sql.SQL("null")
    rows = conn.execute(
        sql.SQL("select {} as segment, {} as entity, {} as value, {} as n from {} where {} and window_start = %s and {}").format(
            segment, entity, sql.Identifier(rule.column), samples, table, sql.SQL(" and ").join(where),
            _qualifies(mart, rule)),
        [*params, window_start],
    ).fetchall()  # fmt: skip
    return window_start, rows


def _trailing_baseline(conn, mart: Mart, rule: AlertRule, model_name: str, version: str | None,
                       window_start: datetime, segment: str, entity: Any) -> float | None:  # fmt: skip
    where, params = _filters(mart, rule, model_name, version)
    if mart.name != "fct_ingest_quality":
        where.append(sql.SQL("segment = %s"))
        params.append(segment)
    if mart.entity:
        where.append(sql.SQL("{} = %s").format(sql.Identifier(mart.entity)))
        params.append(entity)
    values = [row[0] for row in conn.execute(
        sql.SQL("select {} from {} where {} and window_start < %s and {} is not null and {} "
                "order by window_start desc limit %s").format(
            sql.Identifier(rule.column), sql.Identifier("marts", mart.name), sql.SQL(" and ").join(where),
            sql.Identifier(rule.column), _qualifies(mart, rule)),
        [*params, window_start, rule.relative.windows])]  # fmt: skip
    return statistics.median(values) if len(values) >= 3 else None


def _threshold(conn, spec: ModelSpec, mart: Mart, rule: AlertRule, version: str | None, now: datetime,
               window_start: datetime | None, segment: str, entity: Any) -> tuple[Any, str | None]:  # fmt: skip
    """(threshold, how it was set) for this series; (None, why) when it cannot be set."""
    if rule.threshold is not None:
        return rule.threshold, None
    if rule.ingest_intervals is not None:
        interval = _ingest_interval(spec, now)
        return rule.ingest_intervals * interval.total_seconds(), f"{rule.ingest_intervals:g} ingest intervals of {interval}"
    relative = rule.relative
    if relative.baseline == "holdout":
        baseline = holdout_baseline(conn, spec.name, version, rule.column)
        what = f"version {version}'s holdout {baseline:.4g}" if baseline is not None else None
    else:
        baseline = _trailing_baseline(conn, mart, rule, spec.name, version, window_start, segment, entity)
        what = f"median of the previous {relative.windows} windows {baseline:.4g}" if baseline is not None else None
    if baseline is None:
        return None, f"no {relative.baseline} baseline for version {version}"
    return baseline * (1 + relative.change), f"{what} {relative.change:+.0%}"


def _freshness_value(conn, model_name: str, column: str, now: datetime) -> float | None:
    try:
        with conn.transaction():  # a savepoint: the mart may not exist yet
            row = conn.execute(
                sql.SQL("select {} from marts.model_health where model_name = %s").format(
                    sql.Identifier(FRESHNESS_COLUMNS[column])),
                (model_name,),
            ).fetchone()  # fmt: skip
    except psycopg.errors.UndefinedTable:  # no metrics build yet
        return None
    if not row or row[0] is None:
        return None
    return (now - row[0]).total_seconds()


def _summary(spec: ModelSpec, rule: AlertRule, value: Any, threshold: Any, window_start: datetime | None,
             segment: str, entities: list[dict[str, Any]]) -> str:  # fmt: skip
    where = f" in {segment}" if segment != "(all)" else ""
    when = f" ({rule.window_size} of {window_start:%Y-%m-%d %H:%M} UTC)" if window_start is not None else ""
    if entities:
        names = ", ".join(e["name"] for e in entities[:8]) + (f" and {len(entities) - 8} more" if len(entities) > 8 else "")
        what = {"fct_feature_drift": "feature(s) drifted", "fct_prediction_drift": "prediction column(s) drifted"}.get(
            rule.mart, f"{rule.column} {_WORDS[rule.comparator]} {threshold}")
        return f"{spec.name}: {len(entities)} {what}{where}{when}: {names}"
    if rule.column.startswith("seconds_since_"):
        return f"{spec.name}: nothing loaded for {value / 3600:.1f} h (limit {threshold / 3600:.1f} h)"
    return f"{spec.name}: {rule.column} {value:.4g} {_WORDS[rule.comparator]} {threshold:.4g}{where}{when}"


def evaluate_rule(conn, spec: ModelSpec, rule: AlertRule, *, now: datetime, version: str | None,
                  airflow_run: dict[str, str] | None = None) -> list[Outcome]:  # fmt: skip
    mart = MARTS[rule.mart]
    compare = COMPARATORS[rule.comparator]
    resolve_after = rule.resolve_after or spec.alerts.resolve_after
    routes = spec.alerts.routes_for(rule.severity, rule)
    if mart.windowed:
        window_start, rows = _window_rows(conn, mart, rule, spec.name, version, now)
        if window_start is None:
            return [Outcome(rule.name, "(all)", "not_evaluated", note="no complete window qualifies yet")]
    else:
        window_start = None
        if rule.column in FRESHNESS_COLUMNS:
            value = _freshness_value(conn, spec.name, rule.column, now)
        else:
            found = conn.execute(sql.SQL("select {} from marts.model_health where model_name = %s").format(
                sql.Identifier(rule.column)), (spec.name,)).fetchone()  # fmt: skip
            value = found[0] if found else None
        rows = [("(all)", None, value, None)] if value is not None else []
        if not rows:
            return [Outcome(rule.name, "(all)", "not_evaluated", note="no value yet")]
    by_segment: dict[str, list[tuple]] = {}
    for row in rows:
        by_segment.setdefault(row[0], []).append(row)
    outcomes = []
    actions = actions_taken(conn, spec.name, now)
    for segment, segment_rows in sorted(by_segment.items()):
        held, thresholds, reasons = [], [], []
        for _, entity, value, n in segment_rows:
            if value is None:
                continue
            threshold, reason = _threshold(conn, spec, mart, rule, version, now, window_start, segment, entity)
            if threshold is None:
                reasons.append(reason)
                continue
            thresholds.append(threshold)
            if reason:
                reasons.append(reason)
            if compare(value, threshold):
                held.append({"name": entity, "value": value, "n": n, "threshold": threshold})
        if not thresholds:
            outcomes.append(Outcome(rule.name, segment, "not_evaluated", note="; ".join(dict.fromkeys(r for r in reasons if r))))
            continue
        window = {"size": rule.window_size, "start": window_start.isoformat() if window_start else None,
                  "n": segment_rows[0][3] if not mart.entity else max((r[3] or 0) for r in segment_rows)}  # fmt: skip
        if held:
            entities = [e | {"name": str(e["name"])} for e in held] if mart.entity else []
            value = [e["name"] for e in entities] if mart.entity else held[0]["value"]
            threshold = held[0]["threshold"]
            details = {
                "rule": {"name": rule.name, "mart": rule.mart, "column": rule.column, "comparator": rule.comparator,
                         "severity": rule.severity, "description": rule.description},
                "value": held[0]["value"] if not mart.entity else len(entities), "threshold": threshold,
                "threshold_reason": "; ".join(dict.fromkeys(r for r in reasons if r)) or None,
                "window": window, "segment": segment, "model_version": version, "entities": entities,
                "actions": actions, "airflow": airflow_run or {},
            }  # fmt: skip
            summary = _summary(spec, rule, held[0]["value"], threshold, window_start, segment, entities)
            previous = conn.execute(
                "select latest_value from ops.alerts where dedup_key = %s and status = 'firing'",
                (alerts.condition_key(spec.name, rule.name, segment),),
            ).fetchone()
            changed = bool(mart.entity and previous and previous[0] is not None and set(value) - set(previous[0]))
            result, _ = alerts.raise_condition(
                conn, model_name=spec.name, rule_name=rule.name, segment=segment, severity=rule.severity,
                summary=summary, details=details, value=value, threshold=threshold, window_size=rule.window_size,
                window_start=window_start, routes=routes, now=now, changed=changed,
            )  # fmt: skip
            outcomes.append(Outcome(rule.name, segment, result, value, threshold, window_start))
        else:
            result, _ = alerts.clear_condition(
                conn, model_name=spec.name, rule_name=rule.name, segment=segment, window_start=window_start,
                resolve_after=resolve_after, now=now,
                details={"window": window, "values": [r[2] for r in segment_rows][:20]},
            )  # fmt: skip
            outcomes.append(Outcome(rule.name, segment, result, [r[2] for r in segment_rows][:5], thresholds[0], window_start))
    return outcomes


def evaluate_rules(url: str | None, spec: ModelSpec, *, now: datetime,
                   airflow_run: dict[str, str] | None = None) -> EvaluationReport:  # fmt: skip
    """Every rule of the spec at ``now`` (the run's clock), each in its own transaction."""
    url = warehouse.resolve_url(url)
    report = EvaluationReport(spec.name)
    for rule in spec.alerts.rules:
        with warehouse.connect(url) as conn:
            try:
                with conn.transaction():
                    lock_model(conn, "alerts", spec.name)
                    version = serving_version(conn, spec.name)
                    report.outcomes += evaluate_rule(conn, spec, rule, now=now, version=version, airflow_run=airflow_run)
            except psycopg.errors.UndefinedTable:  # a mart not built yet must not stop the other rules
                report.outcomes.append(Outcome(rule.name, "(all)", "not_evaluated", note=f"{rule.mart} not built yet"))
    log.info("alert rules of %s: %s", spec.name, {o.rule + "/" + o.segment: o.result for o in report.outcomes})
    return report
