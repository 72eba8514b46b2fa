"""Reference profiles for the example model: what "training data" looked like for a model version.

Retraining (a later issue) stores the reference of each new version from its real training set;
until then the example model's version is given one from simulated training data drawn from the
same world as its serving traffic, before the traffic starts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from driftloop import warehouse
from driftloop.spec import ModelSpec


def has_reference(url: str, model_name: str, model_version: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select 1 from profiles.reference_profiles where model_name = %s and model_version = %s",
            (model_name, str(model_version)),
        ).fetchone()
    return row is not None


def store_simulated_reference(
    url: str | None,
    spec: ModelSpec,
    model_version: str = "1",
    *,
    training_end: datetime,
    rows: int = 20_000,
    seed: int = 42,
    days: int = 14,
) -> int:
    """Profile `rows` simulated training rows from the `days` before `training_end` and store them as
    the reference of `model_version` (replacing any previous one). Returns the reference profile id."""
    from driftloop.profiling import reference_profile, store_reference
    from driftloop.simulate import Scenario, generate_predictions

    url = warehouse.resolve_url(url)
    end = training_end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    frame = generate_predictions(spec, rows, end - timedelta(days=days), end, Scenario(seed=seed, model_version=model_version))
    source = {"kind": "simulated training data", "seed": seed, "rows": rows, "until": end.isoformat()}
    return store_reference(url, spec, reference_profile(spec, model_version, frame, source=source))
