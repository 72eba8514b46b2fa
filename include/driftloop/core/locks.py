"""Transaction-level advisory locks: one writer at a time per (scope, model) across processes and
machines sharing the warehouse. The lock is released when the caller's transaction ends."""

from __future__ import annotations

from typing import Any


def lock_model(conn: Any, scope: str, model_name: str) -> None:
    """Wait for, then hold until the end of the transaction, the lock of ``scope`` (``ingest``,
    ``profiles``, ``retrain``, ``experiment``, ...) for ``model_name``."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"driftloop.{scope}:{model_name}",))
