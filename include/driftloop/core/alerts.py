"""The alert outbox: ``ops.alerts`` (one row per alert) and ``ops.alert_deliveries`` (what is sent about
it where). Every source writes here, in its own transaction, and nothing else: ingest failures,
retraining failures, promotion decisions, Airflow task failures (events: :func:`enqueue_alert`) and the
monitor's rules (conditions: :func:`raise_condition`, :func:`clear_condition`). Delivery to Slack,
PagerDuty and the daily digest is driftloop.core.notify's job; with no channel configured an alert stays
here (and in the log), never lost.

An event fires once per ``dedup_key``. A condition is one ``firing`` alert per ``dedup_key`` (model, rule,
segment) at a time: evaluations while it holds update it (count, latest value, last seen) without a new
message; it resolves after ``resolve_after`` clear windows, or by hand, and the resolution is sent where
the alert was. A silenced rule (a person is on it) raises nothing until the silence ends.

Routing is by severity (the spec's ``alerts.routes``: critical -> PagerDuty and Slack, warning -> Slack,
info -> the digest), overridable per rule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
DEFAULT_ROUTES: dict[str, list[str]] = {"critical": ["pagerduty", "slack"], "warning": ["slack"], "info": ["digest"]}


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def routes_for(model_name: str | None, severity: str) -> list[str]:
    """The channels of ``severity`` for ``model_name``'s spec (its alerts.routes), else the defaults."""
    if model_name:
        try:
            from driftloop.core.spec import get_spec

            return get_spec(model_name).alerts.routes_for(severity)
        except Exception:  # noqa: BLE001 - an unknown model (or no spec folder) is routed by the defaults
            pass
    return list(DEFAULT_ROUTES.get(severity, []))


def _deliveries(conn: psycopg.Connection, alert_id: int, event: str, channels: Sequence[str], now: datetime | None) -> None:
    for channel in dict.fromkeys(channels):
        conn.execute(
            # due at once whatever the deliverer's clock (a replay's, a simulation's) when the source has none
            "insert into ops.alert_deliveries (alert_id, event, channel, next_attempt_at, created_at) "
            "values (%s, %s, %s, coalesce(%s::timestamptz, 'epoch'::timestamptz), coalesce(%s::timestamptz, now()))",
            (alert_id, event, channel, now, now),
        )


def enqueue_alert(
    conn: psycopg.Connection,
    *,
    dedup_key: str,
    source: str,
    severity: Severity,
    summary: str,
    details: dict[str, Any] | None = None,
    model_name: str | None = None,
    routes: Sequence[str] | None = None,
    now: datetime | None = None,
) -> bool:
    """An event alert in the caller's transaction, with a delivery per route. Returns False when the same
    ``dedup_key`` already fired (an event fires once)."""
    channels = list(routes) if routes is not None else routes_for(model_name, severity)
    row = conn.execute(
        """
        insert into ops.alerts (dedup_key, model_name, source, severity, summary, details, status, routes,
                                created_at, updated_at, first_seen_at, last_seen_at)
        values (%s, %s, %s, %s, %s, %s::jsonb, 'notified', %s,
                coalesce(%s, now()), coalesce(%s, now()), coalesce(%s, now()), coalesce(%s, now()))
        on conflict (dedup_key) where status in ('firing', 'notified') do nothing
        returning alert_id
        """,
        (dedup_key, model_name, source, severity, summary, _json(details or {}), channels, now, now, now, now),
    ).fetchone()
    if row:
        _deliveries(conn, row[0], "trigger", channels, now)
        log.warning("alert %s [%s] %s", dedup_key, severity, summary)
    return row is not None


def condition_key(model_name: str, rule_name: str, segment: str) -> str:
    return f"rule:{model_name}:{rule_name}:{segment}"


def is_silenced(conn: psycopg.Connection, model_name: str, rule_name: str, now: datetime) -> bool:
    return conn.execute(
        "select 1 from ops.alert_silences where model_name = %s and rule_name = %s and until > %s limit 1",
        (model_name, rule_name, now),
    ).fetchone() is not None


def raise_condition(
    conn: psycopg.Connection,
    *,
    model_name: str,
    rule_name: str,
    segment: str,
    severity: Severity,
    summary: str,
    details: Mapping[str, Any],
    value: Any,
    threshold: Any,
    window_size: str | None,
    window_start: datetime | None,
    routes: Sequence[str],
    now: datetime,
    changed: bool = False,
) -> tuple[str, int | None]:
    """The rule's condition holds in ``window_start``: open its alert, or update the firing one (count,
    latest value, last seen; a new window resets the clear count). ``changed`` (what the alert is about
    changed, e.g. more features drifted) sends an update where the alert was sent. Returns (what happened:
    opened / updated / unchanged / silenced, alert id)."""
    key = condition_key(model_name, rule_name, segment)
    if is_silenced(conn, model_name, rule_name, now):
        return "silenced", None
    firing = conn.execute(
        "select alert_id, window_start, severity from ops.alerts where dedup_key = %s and status = 'firing' for update",
        (key,),
    ).fetchone()
    if firing is None:
        (alert_id,) = conn.execute(
            """
            insert into ops.alerts (dedup_key, model_name, source, severity, summary, details, status, rule_name,
                                    segment, window_size, window_start, latest_value, threshold, routes,
                                    created_at, updated_at, first_seen_at, last_seen_at)
            values (%s, %s, 'monitor', %s, %s, %s::jsonb, 'firing', %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s,
                    %s, %s, %s, %s)
            returning alert_id
            """,
            (key, model_name, severity, summary, _json(dict(details)), rule_name, segment, window_size, window_start,
             _json(value), _json(threshold), list(routes), now, now, now, now),
        ).fetchone()  # fmt: skip
        _deliveries(conn, alert_id, "trigger", routes, now)
        log.warning("alert opened %s [%s] %s", key, severity, summary)
        return "opened", alert_id
    alert_id, seen_window, _ = firing
    new_window = window_start is not None and (seen_window is None or window_start > seen_window)
    if not new_window and not changed:
        return "unchanged", alert_id
    conn.execute(
        """
        update ops.alerts set summary = %s, details = %s::jsonb, latest_value = %s::jsonb, threshold = %s::jsonb,
            window_start = coalesce(%s, window_start), n_evaluations = n_evaluations + %s, clear_windows = 0,
            clear_window_start = null, last_seen_at = %s, updated_at = %s
        where alert_id = %s
        """,
        (summary, _json(dict(details)), _json(value), _json(threshold), window_start, 1 if new_window else 0,
         now, now, alert_id),
    )  # fmt: skip
    if changed:
        sent_to = _channels_of(conn, alert_id)
        _deliveries(conn, alert_id, "update", [c for c in routes if c in sent_to and c != "digest"], now)
    return "updated", alert_id


def clear_condition(
    conn: psycopg.Connection,
    *,
    model_name: str,
    rule_name: str,
    segment: str,
    window_start: datetime | None,
    resolve_after: int,
    now: datetime,
    details: Mapping[str, Any] | None = None,
) -> tuple[str, int | None]:
    """The rule's condition is clear in ``window_start``: count the clear window; after ``resolve_after`` of
    them resolve the firing alert. Returns (nothing / counted / resolved, alert id)."""
    key = condition_key(model_name, rule_name, segment)
    firing = conn.execute(
        "select alert_id, clear_windows, clear_window_start, window_start from ops.alerts "
        "where dedup_key = %s and status = 'firing' for update",
        (key,),
    ).fetchone()
    if firing is None:
        return "nothing", None
    alert_id, clear_windows, counted_window, firing_window = firing
    stamp = window_start or now  # a rule on a one-row mart (freshness) counts evaluations
    if counted_window is not None and stamp <= counted_window:  # counted already (a rerun of the same look)
        return "counted", alert_id
    if firing_window is not None and window_start is not None and window_start <= firing_window:
        return "counted", alert_id  # an older window than the one that fired says nothing new
    clear_windows += 1
    if clear_windows >= resolve_after:
        resolve_alert(conn, alert_id, by=f"condition clear for {clear_windows} window(s)", now=now, details=details)
        return "resolved", alert_id
    conn.execute(
        "update ops.alerts set clear_windows = %s, clear_window_start = %s, updated_at = %s where alert_id = %s",
        (clear_windows, stamp, now, alert_id),
    )
    return "counted", alert_id


def _channels_of(conn: psycopg.Connection, alert_id: int) -> list[str]:
    """Where the alert was sent (its trigger deliveries), in the order they were made."""
    return [row[0] for row in conn.execute(
        "select channel from ops.alert_deliveries where alert_id = %s and event = 'trigger' "
        "group by channel order by min(delivery_id)", (alert_id,))]  # fmt: skip


def resolve_alert(conn: psycopg.Connection, alert_id: int, *, by: str, now: datetime,
                  details: Mapping[str, Any] | None = None) -> bool:  # fmt: skip
    """Resolve a firing alert (its condition cleared, or a person resolved it): the resolution goes where
    the alert went (not to the digest). Returns False when it was not firing."""
    updated = conn.execute(
        "update ops.alerts set status = 'resolved', resolved_at = %s, resolved_by = %s, updated_at = %s, "
        "details = details || %s::jsonb where alert_id = %s and status = 'firing' returning alert_id",
        (now, by, now, _json({"resolution": dict(details or {})}), alert_id),
    ).fetchone()
    if updated is None:
        return False
    _deliveries(conn, alert_id, "resolve", [c for c in _channels_of(conn, alert_id) if c != "digest"], now)
    log.warning("alert %s resolved: %s", alert_id, by)
    return True


def silence(conn: psycopg.Connection, model_name: str, rule_name: str, until: datetime, reason: str | None = None) -> int:
    (silence_id,) = conn.execute(
        "insert into ops.alert_silences (model_name, rule_name, until, reason) values (%s, %s, %s, %s) returning silence_id",
        (model_name, rule_name, until, reason),
    ).fetchone()
    return silence_id


def list_alerts(conn: psycopg.Connection, model_name: str | None = None, status: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
    """Alerts, newest first, with their deliveries' states (channel: status)."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            """
            select alerts.alert_id, alerts.model_name, alerts.source, alerts.rule_name, alerts.segment,
                   alerts.severity, alerts.status, alerts.summary, alerts.n_evaluations, alerts.first_seen_at,
                   alerts.last_seen_at, alerts.resolved_at, alerts.resolved_by,
                   coalesce((select jsonb_object_agg(d.channel || ':' || d.event, d.status)
                             from ops.alert_deliveries d where d.alert_id = alerts.alert_id), '{}'::jsonb) as deliveries
            from ops.alerts as alerts
            where (%(model)s::text is null or alerts.model_name = %(model)s)
              and (%(status)s::text is null or alerts.status = %(status)s)
            order by alerts.last_seen_at desc, alerts.alert_id desc
            limit %(limit)s
            """,
            {"model": model_name, "status": status, "limit": limit},
        ).fetchall()
