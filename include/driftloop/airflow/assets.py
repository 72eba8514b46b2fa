"""Every Airflow Asset driftloop produces or consumes, declared once (names only: no URI validation,
no connection needed at parse time). Producers set outlets, consumers schedule on these."""

from __future__ import annotations


def raw_asset_name(model_name: str) -> str:
    return f"driftloop.{model_name}.raw"


def raw_asset(model_name: str):
    """Raw predictions and feedback of a model changed (emitted by ingest__<model>)."""
    from airflow.sdk import Asset

    return Asset(name=raw_asset_name(model_name), group="driftloop")


MARTS_ASSET_NAME = "driftloop.marts"


def marts_asset():
    """The dbt marts were rebuilt (emitted by the metrics DAG)."""
    from airflow.sdk import Asset

    return Asset(name=MARTS_ASSET_NAME, group="driftloop")


def profiles_asset_name(model_name: str) -> str:
    return f"driftloop.{model_name}.profiles"


def profiles_asset(model_name: str):
    """whylogs profiles, summaries and bins of a model changed (emitted by profile__<model>)."""
    from airflow.sdk import Asset

    return Asset(name=profiles_asset_name(model_name), group="driftloop")


def challenger_asset_name(model_name: str) -> str:
    return f"driftloop.{model_name}.challenger"


def challenger_asset(model_name: str):
    """A new challenger version of a model was registered (emitted by retrain__<model>)."""
    from airflow.sdk import Asset

    return Asset(name=challenger_asset_name(model_name), group="driftloop")


def metrics_inputs(model_names):
    """What the metrics DAG schedules on: new raw data or new profiles of any model."""
    from functools import reduce
    from operator import or_

    names = sorted(model_names)
    return reduce(or_, [raw_asset(name) for name in names] + [profiles_asset(name) for name in names])
