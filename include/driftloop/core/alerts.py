"""Alert outbox (ops.alerts). Every alert is written here first, deduplicated by key, so it is never
lost when no Slack / PagerDuty connection is configured; delivery is the notifier's job."""

from __future__ import annotations

import logging
from typing import Any, Literal

import orjson
import psycopg

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]


def enqueue_alert(
    conn: psycopg.Connection,
    *,
    dedup_key: str,
    source: str,
    severity: Severity,
    summary: str,
    details: dict[str, Any] | None = None,
    model_name: str | None = None,
) -> bool:
    """Write an alert to the outbox in the caller's transaction. Returns False when the same
    dedup_key was already raised (the alert fires once)."""
    row = conn.execute(
        """
        insert into ops.alerts (dedup_key, model_name, source, severity, summary, details)
        values (%s, %s, %s, %s, %s, %s::jsonb)
        on conflict (dedup_key) do nothing
        returning alert_id
        """,
        (dedup_key, model_name, source, severity, summary, orjson.dumps(details or {}).decode()),
    ).fetchone()
    if row:
        log.warning("alert %s [%s] %s", dedup_key, severity, summary)
    return row is not None
