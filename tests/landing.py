"""Helpers that land contract files the way a serving system would (tests only)."""

from __future__ import annotations

import gzip
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from driftloop.core.spec import ModelSpec

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = "2026-11-20"


def prediction(spec: ModelSpec, **overrides: Any) -> dict[str, Any]:
    """A valid prediction event for `spec` (the churn example), with overrides."""
    event = {
        "prediction_id": str(uuid.uuid4()),
        "model_name": spec.name,
        "model_version": "1",
        "variant": "control",
        "experiment_id": None,
        "unit_id": "u-1",
        "request_ts": (NOW - timedelta(hours=2)).isoformat(),
        "latency_ms": 12.5,
        "features": {
            "tenure_months": 12, "monthly_charges": 49.9, "total_charges": 598.8, "support_tickets_30d": 1,
            "sessions_7d": 14, "discount_pct": 0, "age": 41, "contract_type": "monthly",
            "payment_method": "card", "plan": "standard", "has_partner": True,
        },
        "prediction": "stay",
        "scores": {"stay": 0.8, "churn": 0.2},
        "segment": "eu",
        "error": None,
    }  # fmt: skip
    event.update(overrides)
    return event


def feedback(prediction_id: str, **overrides: Any) -> dict[str, Any]:
    event = {
        "prediction_id": prediction_id,
        "label": "stay",
        "outcome": 1.0,
        "feedback_ts": (NOW - timedelta(hours=1)).isoformat(),
        "source": "explicit",
    }
    event.update(overrides)
    return event


def encode(lines: list[Any]) -> bytes:
    out = bytearray()
    for line in lines:
        out += line if isinstance(line, bytes) else orjson.dumps(line)
        out += b"\n"
    return bytes(out)


def land(root: Path, model: str, kind: str, name: str, payload: bytes | list[Any], *, day: str = DAY,
         age: timedelta = timedelta(hours=1), now: datetime = NOW) -> Path:
    """Write a landed file; its mtime is `age` before `now` (files older than settle time are complete)."""
    data = payload if isinstance(payload, bytes) else encode(payload)
    if name.endswith(".gz") and not isinstance(payload, bytes):
        data = gzip.compress(data)
    path = root / model / kind / f"dt={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = (now - age).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def age_file(path: Path, age: timedelta, now: datetime = NOW) -> None:
    stamp = (now - age).timestamp() if now else time.time() - age.total_seconds()
    os.utime(path, (stamp, stamp))


def ingest_at_now(spec: ModelSpec, root: Path, url: str, **kwargs: Any):
    """driftloop's ingest of the landing zone ``root`` at the tests' clock NOW."""
    from driftloop.ingest.loader import ingest

    return ingest(spec, landing_root=str(root), url=url, now=NOW, **kwargs)
