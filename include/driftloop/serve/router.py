"""What a serving application uses: a router that serves the champion and, during an experiment, the
challenger to a sticky share of the units, and logs contract events into the landing zone for
ingest__<model> (through driftloop.serve.events.EventLogger).

    router = Router("churn")                     # models by the versions in ops.traffic_allocation
    result = router.predict({"tenure_months": 3, ...}, unit_id="user-42", segment="eu")
    result["prediction"], result["scores"], result["variant"]
    router.close()                               # publishes the last event file

Assignment is ``blake2b(experiment_id, unit_id)`` mapped to [0, 1) and compared with the challenger's
share: the same unit gets the same arm for the whole experiment, on every server, and a ramp from
10 % to 25 % keeps the first 10 % where they were. The allocation is read from the warehouse at most
every ``ttl_seconds``; without a row the registry's ``champion`` serves everything.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from driftloop.serve.events import EventLogger

CONTROL = "control"
CHALLENGER = "challenger"
_HASH_SCALE = float(1 << 64)


@dataclass(frozen=True)
class Allocation:
    champion_version: str
    challenger_version: str | None = None
    challenger_share: float = 0.0
    experiment_id: str | None = None


def assignment_point(experiment_id: str | None, unit_id: str) -> float:
    """The unit's fixed point in [0, 1) for this experiment (uniform, deterministic, sticky)."""
    digest = hashlib.blake2b(f"{experiment_id or ''}\x1f{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def assign(allocation: Allocation, unit_id: str) -> str:
    if allocation.challenger_version is None or allocation.challenger_share <= 0:
        return CONTROL
    return CHALLENGER if assignment_point(allocation.experiment_id, unit_id) < allocation.challenger_share else CONTROL


def read_allocation(url: str, model_name: str) -> Allocation | None:
    from driftloop.core import warehouse

    with warehouse.connect(url) as conn:
        row = conn.execute(
            "select champion_version, challenger_version, challenger_share, experiment_id "
            "from ops.traffic_allocation where model_name = %s",
            (model_name,),
        ).fetchone()
    return Allocation(row[0], row[1], float(row[2]), row[3]) if row else None


class Router:
    """Serve ``model_name``: assign the request's unit to an arm, predict with that arm's model, log the
    contract event. ``models`` maps a version to an object with ``predict(DataFrame)`` (default: the
    registry's ``models:/<name>/<version>``, loaded once). ``latency`` replaces the measured latency
    with a given one per version (simulations, tests)."""

    def __init__(
        self,
        model_name: str,
        url: str | None = None,
        *,
        landing_root: str | os.PathLike[str] | None = None,
        ttl_seconds: float = 30.0,
        models: Mapping[str, Any] | None = None,
        allocation: Allocation | None = None,
        logger: EventLogger | None = None,
        clock: Callable[[], float] = time.monotonic,
        latency: Callable[[str], float] | None = None,
    ) -> None:
        from driftloop.core import warehouse
        from driftloop.core.settings import landing_root as default_landing
        from driftloop.core.spec import get_spec

        self.spec = get_spec(model_name)
        self.model_name = model_name
        self.url = None if allocation is not None else warehouse.resolve_url(url)
        self.ttl_seconds, self.clock = ttl_seconds, clock
        # (model version) -> latency in ms, logged instead of the measured time: simulations and tests
        # give every arm its own seeded noise, so the story does not depend on the machine's load
        self.latency = latency
        self._fixed = allocation
        self._allocation: Allocation | None = allocation
        self._read_at = float("-inf")
        self._models: dict[str, Any] = dict(models or {})
        self._classes = [str(c) for c in self.spec.classes]
        self._features = [f.name for f in self.spec.features]
        self.logger = logger or EventLogger(default_landing(landing_root), model_name)

    # ------------------------------------------------------------------ allocation
    def allocation(self) -> Allocation:
        """The current allocation, re-read from ops.traffic_allocation at most every ttl_seconds."""
        if self._fixed is not None:
            return self._fixed
        now = self.clock()
        if self._allocation is None or now - self._read_at >= self.ttl_seconds:
            found = read_allocation(self.url, self.model_name)
            if found is None:
                from driftloop.learn import registry

                champion = registry.version_by_alias(self.model_name, registry.CHAMPION)
                if champion is None:
                    raise LookupError(f"{self.model_name}: no ops.traffic_allocation row and no 'champion' in the registry")
                found = Allocation(champion.version)
            self._allocation, self._read_at = found, now
        return self._allocation

    def model(self, version: str):
        if version not in self._models:
            from driftloop.learn import registry

            registry.client()
            import mlflow

            self._models[version] = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
        return self._models[version]

    # ------------------------------------------------------------------ serving
    def route(self, unit_id: str | None) -> tuple[str, str, str | None]:
        """(variant, model_version, experiment_id) for a request of this unit."""
        allocation = self.allocation()
        variant = assign(allocation, unit_id) if unit_id is not None else CONTROL
        version = allocation.challenger_version if variant == CHALLENGER else allocation.champion_version
        experiment_id = allocation.experiment_id if allocation.challenger_share > 0 else None
        return variant, version, experiment_id

    def predict(
        self,
        features: Mapping[str, Any],
        *,
        unit_id: str | None = None,
        segment: str | None = None,
        prediction_id: str | None = None,
        request_ts: datetime | None = None,
    ) -> dict[str, Any]:
        """Serve one request; returns the logged prediction event (prediction, scores, variant, ...)."""
        import pandas as pd

        variant, version, experiment_id = self.route(unit_id)
        values = {name: features.get(name) for name in self._features}
        row = pd.DataFrame([values])
        started = time.perf_counter()
        error = None
        try:
            output = self.model(version).predict(row)
        except Exception as exc:  # a failed request is logged as such (and counts in the error rate)
            output, error = None, f"{type(exc).__name__}: {exc}"[:500]
        latency_ms = (time.perf_counter() - started) * 1000.0 if self.latency is None else float(self.latency(version))
        event = self._event(values, unit_id, segment, prediction_id, request_ts, variant, version,
                            experiment_id, latency_ms, output, error)  # fmt: skip
        self.logger.write(event)
        return event

    def _event(self, features, unit_id, segment, prediction_id, request_ts, variant, version, experiment_id,
               latency_ms, output, error) -> dict[str, Any]:  # fmt: skip
        stamp = (request_ts or datetime.now(UTC)).astimezone(UTC)
        event: dict[str, Any] = {
            "prediction_id": prediction_id or str(uuid.uuid4()),
            "model_name": self.model_name,
            "model_version": version,
            "variant": variant,
            "experiment_id": experiment_id,
            "unit_id": unit_id,
            "request_ts": stamp.isoformat(timespec="milliseconds"),
            "latency_ms": round(latency_ms, 3),
            "features": features,
            "prediction": None,
            "scores": None,
            "segment": segment,
            "error": error,
        }
        if output is not None:
            first = output.iloc[0] if hasattr(output, "iloc") else output[0]
            event["prediction"] = str(first["prediction"])
            event["scores"] = {cls: round(float(first[cls]), 6) for cls in self._classes}
        return event

    def close(self) -> None:
        self.logger.close()
