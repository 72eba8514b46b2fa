"""The audit trail: ``ops.decisions``, one row for every automated decision (offline gate, each look of
an experiment, allocation changes, the watch, rollbacks) with its reason and its evidence as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def record_decision(conn, model_name: str, *, step: str, decision: str, reason: str, evidence: Mapping[str, Any],
                    experiment_id: str | None = None, airflow_run_id: str | None = None,
                    decided_at: Any = None) -> None:  # fmt: skip
    """Append to ops.decisions in the caller's transaction (so a decision and its effect commit together).
    ``decided_at`` is the deciding look's clock (a replay or a simulation states it); default: now."""
    conn.execute(
        "insert into ops.decisions (model_name, experiment_id, step, decision, reason, evidence, airflow_run_id, "
        "decided_at) values (%s, %s, %s, %s, %s, %s::jsonb, %s, coalesce(%s, now()))",
        (model_name, experiment_id, step, decision, reason, json.dumps(evidence, default=str), airflow_run_id,
         decided_at),
    )
