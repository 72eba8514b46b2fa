"""Serving router: overhead per prediction of routing + logging, excluding the model.

    .venv/bin/python benchmarks/router.py [--predictions 50000] [--real-model]

Goal (the issue): p99 overhead < 1 ms.

The router (driftloop.serve.router.Router) serves churn with a 10 % challenger allocation (fixed here,
so no database is involved; the warehouse read happens once per TTL, 30 s by default), assigns each
request's unit by hashing, builds the one-row model input, calls the model, builds the contract
event and appends it to the landing-zone logger (rotating files, published by atomic rename).
Per prediction: overhead = router.predict wall time - the model's own time (the event's latency_ms,
measured around model.predict). The baseline printed next to it is the model call alone on the same
input. By default the model is a stub returning fixed probabilities (the model is not what is
measured); --real-model bootstraps a real LightGBM / logistic-regression champion in a temporary
MLflow store and serves it through its pyfunc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from driftloop.core.spec import get_spec  # noqa: E402
from driftloop.serve import router as serving  # noqa: E402

GOAL_MS = 1.0


class StubModel:
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"prediction": ["stay"], "stay": [0.8], "churn": [0.2]})


def _requests(n: int) -> list[dict]:
    from driftloop.sim.world import FEATURE_PREFIX, generate_predictions

    spec = get_spec("churn")
    frame = generate_predictions(spec, n, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    names = [c for c in frame.columns if c.startswith(FEATURE_PREFIX)]
    rows = frame[names].astype(object).where(frame[names].notna(), None).to_dict("records")
    return [{k[len(FEATURE_PREFIX):]: v for k, v in row.items()} for row in rows]


def _percentiles(values_ms: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(values_ms, [50, 90, 99])
    return f"p50 {p50:.3f} ms   p90 {p90:.3f} ms   p99 {p99:.3f} ms"


def measure(predictions: int = 50_000, real_model: bool = False, verbose: bool = True) -> dict:
    """The router's overhead per prediction and the model alone, p99 in ms."""
    work = Path(tempfile.mkdtemp(prefix="dl-bench-router-"))
    try:
        models = {"1": StubModel(), "2": StubModel()}
        if real_model:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
            from driftloop.core import warehouse
            from driftloop.learn import registry
            from driftloop.sim import examples

            url = warehouse.resolve_url()
            warehouse.migrate(url)
            examples.bootstrap(url, get_spec("churn"), rows=5000, training_end=datetime.now(UTC) - timedelta(days=1))
            champion = registry.load_model("churn", "champion")
            models = {"1": champion, "2": champion}
        requests = _requests(predictions)
        logger = serving.EventLogger(work / "landing", "churn", max_events=10_000)
        router = serving.Router("churn", allocation=serving.Allocation("1", "2", 0.10, "bench"), models=models, logger=logger)
        for i in range(200):  # warm up
            router.predict(requests[i], unit_id=f"u-{i}")
        wall = np.empty(len(requests))
        model_ms = np.empty(len(requests))
        for i, features in enumerate(requests):
            started = time.perf_counter()
            event = router.predict(features, unit_id=f"u-{i % 20_000}", segment="eu")
            wall[i] = (time.perf_counter() - started) * 1000
            model_ms[i] = event["latency_ms"]
        router.close()
        overhead = wall - model_ms
        baseline = np.empty(min(len(requests), 5000))
        model = models["1"]
        names = [f.name for f in get_spec("churn").features]
        for i in range(len(baseline)):
            frame = pd.DataFrame([{n: requests[i].get(n) for n in names}])
            started = time.perf_counter()
            model.predict(frame)
            baseline[i] = (time.perf_counter() - started) * 1000
        p99 = float(np.percentile(overhead, 99))
        numbers = {"overhead_p99_ms": p99, "model_p99_ms": float(np.percentile(baseline, 99))}
        if not verbose:
            return numbers
        print(f"{len(requests):,} predictions through the router ({'real model' if real_model else 'stub model'}), "
              f"{len(logger.published)} event files published")  # fmt: skip
        print(f"  router overhead (routing + input + event + log): {_percentiles(overhead)}")
        print(f"  model alone (baseline, same inputs):            {_percentiles(baseline)}")
        print(f"  router total:                                   {_percentiles(wall)}")
        print(f"overhead p99 / model p99 = {p99 / float(np.percentile(baseline, 99)):.2f}")
        print(f"goal: overhead p99 < {GOAL_MS} ms -> {'met' if p99 < GOAL_MS else 'MISSED'} ({p99:.3f} ms)")
        return numbers
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=50_000)
    parser.add_argument("--real-model", action="store_true")
    args = parser.parse_args()
    measure(args.predictions, args.real_model)


if __name__ == "__main__":
    main()
