"""Every Airflow Asset driftloop produces or consumes, declared once (names only: no URI validation,
no connection needed at parse time). Producers set outlets, consumers schedule on these."""

from __future__ import annotations


def raw_asset_name(model_name: str) -> str:
    return f"driftloop.{model_name}.raw"


def raw_asset(model_name: str):
    """Raw predictions and feedback of a model changed (emitted by ingest__<model>)."""
    from airflow.sdk import Asset

    return Asset(name=raw_asset_name(model_name), group="driftloop")
