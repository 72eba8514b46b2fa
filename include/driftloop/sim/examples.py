"""The shipped example model's example data: what a new project starts from before it has traffic of
its own. The first champion of ``churn`` is trained on simulated rows (:func:`bootstrap`), and a version
that served simulated traffic gets a reference profile from simulated training data
(:func:`store_simulated_reference`). Production code never imports this module: a model driftloop did
not train gets its reference from its own training data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from driftloop.core import warehouse
from driftloop.core.spec import FeatureType, ModelSpec
from driftloop.learn import registry, retrain
from driftloop.learn.data import TrainingData
from driftloop.monitor.profiling import reference_profile, store_reference
from driftloop.sim.world import FEATURE_PREFIX, Scenario, generate_predictions

EXAMPLE_MODEL = "churn"  # the shipped example: the only model a simulated reference is made for unasked

def simulated_training_data(spec: ModelSpec, rows: int, start: datetime, end: datetime, seed: int) -> TrainingData:
    """Training rows drawn from the simulator's world (the example model's "original" data): every row
    labelled with its true class."""
    generated = generate_predictions(spec, rows, start, end, Scenario(seed=seed))
    frame = pd.DataFrame({
        "prediction_id": generated["prediction_id"],
        "request_ts": generated["request_ts"],
        "model_version": None,
        "segment": generated["segment"].astype(object) if "segment" in generated else None,
        "label": generated["label"].astype(str),
    })  # fmt: skip
    for feature in spec.features:
        column = generated[FEATURE_PREFIX + feature.name]
        frame[feature.name] = column.astype(object).where(column.notna(), None) if feature.type is not FeatureType.numeric else column
    return TrainingData(frame, "simulated", None, start, end, None)


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
    url = warehouse.resolve_url(url)
    end = training_end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    frame = generate_predictions(spec, rows, end - timedelta(days=days), end, Scenario(seed=seed, model_version=model_version))
    source = {"kind": "simulated training data", "simulated": True, "seed": seed, "rows": rows, "until": end.isoformat()}
    return store_reference(url, spec, reference_profile(spec, model_version, frame, source=source))


def bootstrap(url: str | None, spec: ModelSpec, *, rows: int = 20_000, seed: int = 42,
              training_end: datetime | None = None, days: int = 14, now: datetime | None = None) -> dict[str, Any]:  # fmt: skip
    """Train and register the first champion of ``spec`` from simulated example data, when the registry
    has no champion yet. Idempotent: with a champion it only reports it. ``now`` is the attempt's clock
    (``run_retrain``'s ``as_of``); the simulated data ends at ``training_end`` (default: ``now``)."""
    found = registry.version_by_alias(spec.name, registry.CHAMPION)
    if found is not None:
        retrain.converge_champion(warehouse.resolve_url(url), spec, found)
        return {"status": "exists", "model_version": found.version}
    end = (training_end or now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    return retrain.run_retrain(
        url, spec,
        run_key=f"bootstrap/{spec.name}/{seed}/{end:%Y%m%dT%H}",
        trigger="bootstrap",
        reason=f"first champion of {spec.name}, trained on {rows} simulated example rows",
        evidence={"rows": rows, "seed": seed, "start": start, "end": end},
        alias=registry.CHAMPION,
        data_loader=lambda: simulated_training_data(spec, rows, start, end, seed),
        respect_cooldown=False,
        as_of=now,
    )  # fmt: skip
