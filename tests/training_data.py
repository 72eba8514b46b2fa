"""Labelled traffic in a real warehouse, and a fast-training copy of the example spec, for the
retraining tests (integration and DAG)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from driftloop.core import warehouse
from driftloop.core.spec import ModelSpec, get_spec
from driftloop.ingest.loader import ingest
from driftloop.sim.world import Scenario, feedback_lines, generate_predictions, prediction_lines
from landing import land

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
TRAFFIC_START = NOW - timedelta(days=3)


def fast_spec(**training: object) -> ModelSpec:
    """The churn spec with a small training budget (tests train in seconds)."""
    payload = get_spec("churn").model_dump(mode="json")
    payload["retraining"]["training"].update({
        "lightgbm_max_rounds": 60, "early_stopping_rounds": 10, "permutation_rows": 1500, "min_rows": 300,
        **training,
    })  # fmt: skip
    return ModelSpec.model_validate(payload)


def traffic(spec: ModelSpec, start: datetime, end: datetime, per_hour: int, seed: int = 11) -> pd.DataFrame:
    hours = int((end - start) / timedelta(hours=1))
    frame = generate_predictions(spec, per_hour * hours, start, end, Scenario(seed=seed, label_delay_mean=timedelta(hours=2)))
    frame.loc[frame["feedback_ts"] > NOW, "labelled"] = False  # not arrived yet
    return frame


def load_traffic(url: str, spec: ModelSpec, root: Path, frame: pd.DataFrame, name: str) -> int:
    """Land the frame's predictions and feedback as files and ingest them; returns labels loaded."""
    land(root, spec.name, "predictions", f"{name}.jsonl", prediction_lines(frame), now=NOW)
    land(root, spec.name, "feedback", f"{name}.jsonl", feedback_lines(frame), now=NOW)
    result = ingest(spec, landing_root=str(root), url=url, now=NOW)
    assert result.rows_rejected == 0, [f.reasons for f in result.files]
    return int(frame["labelled"].sum())


def use_mlflow_store(folder: Path) -> str:
    """Point MLflow at a fresh SQLite store in ``folder`` (returns the previous MLFLOW_TRACKING_URI)."""
    previous = os.environ.get("MLFLOW_TRACKING_URI", "")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    return previous


def restore_mlflow_store(previous: str) -> None:
    if previous:
        os.environ["MLFLOW_TRACKING_URI"] = previous
    else:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def sync(url: str, spec: ModelSpec) -> None:
    warehouse.sync_specs(url, {spec.name: spec})
