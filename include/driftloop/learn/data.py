"""Training data: labelled, successfully served predictions from the warehouse (features from
``raw.predictions.event``, the latest label from ``raw.feedback``), with their data version (the query,
the time range, when the labels were loaded up to), and the time-based split into train < validation <
holdout on ``request_ts``."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from driftloop.core.spec import FeatureType, ModelSpec


class TrainingError(RuntimeError):
    """Training cannot produce a model from this data (too few rows, one class only, ...)."""


@dataclass
class TrainingData:
    """Labelled rows, newest last: ``prediction_id``, ``request_ts``, ``model_version``, ``segment``,
    ``label``, one column per feature (contract values), plus where they came from."""

    frame: pd.DataFrame
    source: str  # warehouse, simulated
    query: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    labels_loaded_until: datetime | None = None

    def content_hash(self, spec: ModelSpec) -> str:
        """sha256 over ids, request times, labels and features: the data version."""
        columns = ["prediction_id", "request_ts", "label", *[f.name for f in spec.features]]
        hashed = pd.util.hash_pandas_object(self.frame[columns].astype(str), index=False).to_numpy()
        return hashlib.sha256(hashed.tobytes()).hexdigest()


def _feature_sql(spec: ModelSpec):
    from psycopg import sql

    parts = []
    for feature in spec.features:
        value = sql.SQL("predictions.event -> 'features' ->> {}").format(sql.Literal(feature.name))
        if feature.type is FeatureType.numeric:
            value = sql.SQL("cast({} as double precision)").format(value)
        elif feature.type is FeatureType.boolean:
            value = sql.SQL("cast({} as boolean)").format(value)
        parts.append(sql.SQL("{} as {}").format(value, sql.Identifier(feature.name)))
    return sql.SQL(", ").join(parts)


def training_query(spec: ModelSpec, start: datetime, end: datetime, max_rows: int):
    """Labelled, successfully served predictions of ``spec`` requested in [start, end), the newest
    ``max_rows``; the label is the latest feedback (a later feedback_ts is a correction)."""
    from psycopg import sql

    return sql.SQL(
        """
        with labels as (
            -- one sort of the model's feedback (a hash join then), not an index probe per prediction
            select distinct on (feedback.prediction_id) feedback.prediction_id, feedback.label
            from raw.feedback as feedback
            where feedback.model_name = {model}
            order by feedback.prediction_id, feedback.feedback_ts desc
        )
        select predictions.prediction_id, predictions.request_ts, predictions.model_version,
            predictions.segment, labels.label, {features}
        from raw.predictions as predictions
        inner join labels on labels.prediction_id = predictions.prediction_id
        where predictions.model_name = {model}
            and predictions.request_ts >= {start} and predictions.request_ts < {end}
            and predictions.error is null
        order by predictions.request_ts desc, predictions.prediction_id
        limit {limit}
        """
    ).format(
        features=_feature_sql(spec), model=sql.Literal(spec.name), start=sql.Literal(start),
        end=sql.Literal(end), limit=sql.Literal(max_rows),
    )  # fmt: skip


def load_training_data(url: str, spec: ModelSpec, start: datetime, end: datetime, max_rows: int) -> TrainingData:
    """Read the labelled rows in one repeatable-read snapshot (COPY, parsed by Arrow), together with the
    newest feedback ``loaded_at`` that snapshot holds: labels loaded after it are new to this training."""
    import psycopg
    import pyarrow as pa
    from pyarrow import csv

    query = training_query(spec, start, end, max_rows)
    buffer = io.BytesIO()
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            # one pass over each side: right after a big load the planner's row estimates can be stale
            # (autovacuum has not analyzed yet) and a nested loop over a million rows never ends
            conn.execute("set local enable_nestloop = off")
            conn.execute("set local work_mem = '256MB'")
            text = query.as_string(conn)
            with conn.cursor().copy(f"copy ({text}) to stdout with (format csv, header)") as copy:
                for block in copy:
                    buffer.write(block)
            loaded_until = conn.execute(
                "select max(loaded_at) from raw.feedback where model_name = %s", (spec.name,)
            ).fetchone()[0]
    buffer.seek(0)
    types = {"prediction_id": pa.string(), "model_version": pa.string(), "segment": pa.string(), "label": pa.string()}
    for feature in spec.features:
        types[feature.name] = {
            FeatureType.numeric: pa.float64(), FeatureType.boolean: pa.bool_(), FeatureType.categorical: pa.string(),
        }[feature.type]  # fmt: skip
    table = csv.read_csv(
        buffer,
        convert_options=csv.ConvertOptions(column_types=types, strings_can_be_null=True, true_values=["t"], false_values=["f"]),
    )
    frame = table.to_pandas()
    frame["request_ts"] = pd.to_datetime(frame["request_ts"], utc=True, format="ISO8601")
    frame = frame.sort_values(["request_ts", "prediction_id"], kind="stable").reset_index(drop=True)
    return TrainingData(frame, "warehouse", " ".join(text.split()), start, end, loaded_until)


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    def describe(self) -> dict[str, Any]:
        def bounds(part: pd.DataFrame) -> dict[str, Any]:
            if part.empty:
                return {"rows": 0, "start": None, "end": None}
            return {"rows": len(part), "start": part["request_ts"].min().isoformat(), "end": part["request_ts"].max().isoformat()}

        return {"train": bounds(self.train), "validation": bounds(self.validation), "holdout": bounds(self.holdout)}


def time_split(frame: pd.DataFrame, validation_fraction: float, holdout_fraction: float) -> Split:
    """Oldest rows train, then validation, newest holdout, cut on request_ts so that every validation row
    is strictly newer than every training row and every holdout row strictly newer than both (rows with
    the same timestamp never straddle a cut)."""
    ordered = frame.sort_values(["request_ts", "prediction_id"], kind="stable").reset_index(drop=True)
    ts = ordered["request_ts"].to_numpy()
    n = len(ordered)

    def cut(share_after: float) -> int:
        position = int(round(n * (1 - share_after)))
        position = min(max(position, 0), n)
        # move the cut back to the first row of its timestamp, so equal timestamps stay together
        return int(np.searchsorted(ts, ts[position], side="left")) if position < n else n

    holdout_at = cut(holdout_fraction)
    validation_at = min(cut(holdout_fraction + validation_fraction), holdout_at)
    return Split(ordered.iloc[:validation_at], ordered.iloc[validation_at:holdout_at], ordered.iloc[holdout_at:])
