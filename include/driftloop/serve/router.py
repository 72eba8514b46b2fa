"""What a serving application uses: a router that serves the champion and, during an experiment, the
challenger to a sticky share of the units, and logs contract events into the landing zone for
ingest__<model> (through driftloop.serve.events.EventLogger).

    router = Router("churn")                     # models by the versions in ops.traffic_allocation
    result = router.predict({"tenure_months": 3, ...}, unit_id="user-42", segment="eu")
    result["prediction"], result["scores"], result["variant"]
    router.predict_batch(frame, request_ts=stamps, unit_ids=units)   # many requests, one model call per arm
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from driftloop.core.spec import FeatureType
from driftloop.serve.events import EventLogger

CONTROL = "control"
CHALLENGER = "challenger"
_HASH_SCALE = float(1 << 64)


_PLAIN = (str, int, float, bool)  # exact types: a subclass (numpy scalars, enums) goes through pandas


def _typed_row(features: Mapping[str, Any], numeric: Mapping[str, bool]) -> dict[str, Any] | None:
    """One request's features as ``predict_batch`` logs them, without pandas: every feature of the spec in
    order, numbers as float, the others as given, None where missing or NaN. None when a value is of a
    type whose pandas typing (``typed_features``) this does not reproduce (numpy scalars, timestamps, a
    string given for a number): the caller then uses pandas."""
    typed: dict[str, Any] = {}
    for name, is_numeric in numeric.items():
        value = features.get(name)
        if value is not None and (type(value) not in _PLAIN or (is_numeric and isinstance(value, str))):
            return None
        if value is not None and is_numeric:
            value = float(value)
        typed[name] = None if value != value else value  # NaN
    return typed


def _error_text(exc: BaseException, limit: int = 500) -> str:
    """The logged error of a failed request: its start and its end (where libraries put the cause)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit // 3] + " … " + text[-(limit - limit // 3 - 3) :]


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
        failure: Callable[[str], str | None] | None = None,
        transform: Callable[[str, Any], Any] | None = None,
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
        # (model version) -> an error message or None: a simulated serving failure (timeouts, OOM), logged
        # as a failed request like a real one, so the error-rate guardrail faces noise in every arm
        self.failure = failure
        # (model version, features frame) -> the frame that version's serving path hands its model: where a
        # simulation puts a serving skew (one arm reads a feature in other units); logged features stay raw
        self.transform = transform
        self._fixed = allocation
        self._allocation: Allocation | None = allocation
        self._read_at = float("-inf")
        self._models: dict[str, Any] = dict(models or {})
        self._classes = [str(c) for c in self.spec.classes]
        # feature name -> numeric?, in the spec's order (the model input's columns)
        self._numeric = {f.name: f.type is FeatureType.numeric for f in self.spec.features}
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
    def route(self, unit_id: str | None, allocation: Allocation | None = None) -> tuple[str, str, str | None]:
        """(variant, model_version, experiment_id) for a request of this unit (under ``allocation``, default:
        the current one)."""
        allocation = allocation or self.allocation()
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
        """Serve one request; returns the logged prediction event (prediction, scores, variant, ...).
        Logs exactly what ``predict_batch([features], ...)`` would, without pandas' per-column work
        (the typed one-row input is built directly) unless a value is of a type only pandas can type."""
        typed = _typed_row(features, self._numeric) if isinstance(features, Mapping) else None
        if typed is None:
            return self.predict_batch([features], unit_ids=[unit_id], segments=[segment],
                                      prediction_ids=[prediction_id], request_ts=[request_ts])[0]  # fmt: skip
        import numpy as np
        import pandas as pd

        # the model input: float64 numbers (None is NaN there), object columns for the others
        frame = pd.DataFrame({name: np.array([typed[name]], dtype=np.float64 if numeric else object)
                              for name, numeric in self._numeric.items()})  # fmt: skip
        variant, version, experiment_id = self.route(unit_id)
        outputs, errors, latencies = self._serve_arm(version, frame)
        event = self._event(typed, unit_id, segment, prediction_id, request_ts, variant, version, experiment_id,
                            latencies[0], outputs[0], errors[0])  # fmt: skip
        self.logger.write(event)
        return event

    def predict_batch(
        self,
        features: Sequence[Mapping[str, Any]] | Any,
        *,
        unit_ids: Sequence[str | None] | None = None,
        segments: Sequence[str | None] | None = None,
        prediction_ids: Sequence[str | None] | None = None,
        request_ts: Sequence[datetime | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Serve many requests (a list of feature mappings or a DataFrame with one column per feature):
        each is routed on its own, each arm's model predicts its rows in one call, every request is
        logged in the given order. Returns the logged events. A failing model call (or a ``failure``
        hook's message) fails the requests it covered, never the others."""
        import pandas as pd

        frame = self._model_input(pd.DataFrame(features) if not isinstance(features, pd.DataFrame) else features)
        n = len(frame)
        unit_ids = list(unit_ids) if unit_ids is not None else [None] * n
        segments = list(segments) if segments is not None else [None] * n
        prediction_ids = list(prediction_ids) if prediction_ids is not None else [None] * n
        request_ts = list(request_ts) if request_ts is not None else [None] * n
        if not all(len(column) == n for column in (unit_ids, segments, prediction_ids, request_ts)):
            raise ValueError("predict_batch: unit_ids, segments, prediction_ids and request_ts need one entry per row")
        allocation = self.allocation()  # one allocation for the whole batch
        routes = [self.route(unit, allocation) for unit in unit_ids]
        outputs: list[Any] = [None] * n
        errors: list[str | None] = [None] * n
        latencies = [0.0] * n
        for version in dict.fromkeys(route[1] for route in routes):
            rows = [i for i, route in enumerate(routes) if route[1] == version]
            for i, output, error, latency in zip(rows, *self._serve_arm(version, frame.iloc[rows].reset_index(drop=True)),
                                                 strict=True):  # fmt: skip
                outputs[i], errors[i], latencies[i] = output, error, latency
        values = frame.astype(object).where(frame.notna(), None).to_dict("records")
        events = []
        for i, (variant, version, experiment_id) in enumerate(routes):
            event = self._event(values[i], unit_ids[i], segments[i], prediction_ids[i], request_ts[i], variant,
                                version, experiment_id, latencies[i], outputs[i], errors[i])  # fmt: skip
            self.logger.write(event)
            events.append(event)
        return events

    def _serve_arm(self, version: str, inputs) -> tuple[list[Any], list[str | None], list[float]]:
        """One model call for the rows of one arm (``inputs``, typed): per row its output record, its error
        (a failed call fails all its rows; the ``failure`` hook fails single rows) and its latency (the
        call's time shared out, or the ``latency`` hook's)."""
        n = len(inputs)
        errors: list[str | None] = [None] * n
        started = time.perf_counter()
        try:
            output = self.model(version).predict(inputs if self.transform is None else self.transform(version, inputs))
            records = output.to_dict("records") if hasattr(output, "to_dict") else list(output)
        except Exception as exc:  # a failed model call is logged as failed requests (the error rate)
            records, errors = [None] * n, [_error_text(exc)] * n
        per_row = (time.perf_counter() - started) * 1000.0 / max(n, 1)
        if len(records) != n:
            raise ValueError(f"{self.model_name} version {version}: the model returned {len(records)} rows for {n}")
        latencies = [per_row] * n
        for i in range(n):  # the hooks in row order, latency before failure (seeded simulations rely on it)
            if self.latency is not None:
                latencies[i] = float(self.latency(version))
            failed = self.failure(version) if self.failure is not None else None
            if failed is not None and errors[i] is None:
                records[i], errors[i] = None, str(failed)[:500]
        return records, errors, latencies

    def _model_input(self, frame):
        """The batch as the models' signature types it (driftloop.learn.pyfunc.typed_features), indexed 0..n-1."""
        from driftloop.learn.pyfunc import typed_features

        return typed_features(frame.reset_index(drop=True), self.spec)

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
            event["prediction"] = str(output["prediction"])
            event["scores"] = {cls: round(float(output[cls]), 6) for cls in self._classes}
        return event

    def close(self) -> None:
        self.logger.close()
