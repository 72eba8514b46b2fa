"""NannyML's side of benchmarks/drift_reference.py, run in its own environment (.venv-nannyml: NannyML
0.13 needs lightgbm<4.6, the project pins 4.7). Prints one JSON object on stdout:

    {"nannyml": version, "reference_csv": path, "analysis_csv": path, "chunk_size": n,
     "fit_seconds": s, "calculate_seconds": s (the fastest of --repeats passes), "chunks": [{"chunk": i, "start": row, "end": row}],
     "results": {feature: [{"chunk": i, "value": js, "upper_threshold": t, "alert": bool}, ...]}}

Univariate drift with the Jensen-Shannon distance for every feature (continuous and categorical),
chunks of --chunk-size rows, thresholds learned from the reference: mean + 3 sd of the reference
chunks' own values (StandardDeviationThreshold).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources

import nannyml as nml
from nannyml.thresholds import StandardDeviationThreshold

FEATURES = ["distance_from_office", "salary_range", "gas_price_per_litre", "public_transportation_cost",
            "wfh_prev_workday", "workday", "tenure"]  # fmt: skip
CATEGORICAL = ["salary_range", "wfh_prev_workday", "workday"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunk-size", type=int, default=5_000)
    parser.add_argument("--k", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5, help="passes over the windows; the fastest is reported")
    args = parser.parse_args()
    reference, analysis, _ = nml.load_synthetic_binary_classification_dataset()
    threshold = StandardDeviationThreshold(std_lower_multiplier=None, std_upper_multiplier=args.k)
    calculator = nml.UnivariateDriftCalculator(
        column_names=FEATURES,
        treat_as_categorical=CATEGORICAL,
        timestamp_column_name="timestamp",
        continuous_methods=["jensen_shannon"],
        categorical_methods=["jensen_shannon"],
        chunk_size=args.chunk_size,
        thresholds={"jensen_shannon": threshold},
    )
    started = time.perf_counter()
    calculator.fit(reference)
    fit_seconds = time.perf_counter() - started
    passes = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = calculator.calculate(analysis)
        passes.append(time.perf_counter() - started)
    result = result.filter(period="analysis")
    frame = result.to_df()
    chunks = [
        {"chunk": i, "start": int(start), "end": int(end) + 1}
        for i, (start, end) in enumerate(zip(frame[("chunk", "chunk", "start_index")], frame[("chunk", "chunk", "end_index")], strict=True))
    ]  # fmt: skip
    results = {}
    for feature in FEATURES:
        values = frame[(feature, "jensen_shannon", "value")]
        uppers = frame[(feature, "jensen_shannon", "upper_threshold")]
        alerts = frame[(feature, "jensen_shannon", "alert")]
        results[feature] = [
            {"chunk": i, "value": float(v), "upper_threshold": float(u), "alert": bool(a)}
            for i, (v, u, a) in enumerate(zip(values, uppers, alerts, strict=True))
        ]
    data = resources.files("nannyml.datasets.data")
    print(json.dumps({
        "nannyml": nml.__version__,
        "reference_csv": str(data / "synthetic_sample_reference.csv"),
        "analysis_csv": str(data / "synthetic_sample_analysis.csv"),
        "chunk_size": args.chunk_size,
        "fit_seconds": fit_seconds,
        "calculate_seconds": min(passes),
        "calculate_passes": passes,
        "chunks": chunks,
        "results": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
