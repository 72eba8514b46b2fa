"""The cost of learning drift thresholds from a reference (the null model), by reference size.

    .venv/bin/python benchmarks/null_model.py [--rows 100000 1000000 4000000]

For each size: a reference of that many rows with four columns (a continuous numeric, a numeric with
repeated values, a categorical with 12 levels, a boolean), profiled like a stored reference (bins,
fractions, quantiles), then ``driftloop.monitor.drift.null_model`` timed per column, with its learned
JS threshold (mean + 3 sd) at 1,000 rows. The null model subsamples a column of more than
``NULL_MAX_VALUES`` values, so its time stops growing with the reference beyond that.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from driftloop.core.spec import ModelSpec  # noqa: E402
from driftloop.monitor import drift  # noqa: E402
from driftloop.monitor.profiling import bin_edges, column_bins, profile_frame, profiling_frame  # noqa: E402

LEVELS = [f"level_{i}" for i in range(12)]
SPEC = ModelSpec.model_validate({
    "name": "null_model_bench", "task": "binary_classification", "classes": [0, 1], "positive_class": 1,
    "features": [{"name": "amount", "type": "numeric"}, {"name": "rating", "type": "numeric"},
                 {"name": "region", "type": "categorical", "categories": LEVELS}, {"name": "is_new", "type": "boolean"}],
})  # fmt: skip


def reference(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weights = np.linspace(1, 3, len(LEVELS))
    return pd.DataFrame({
        "amount": rng.lognormal(3, 1, rows),
        "rating": np.round(rng.normal(3, 1, rows), 1),  # repeated values: the KS null's tie path
        "region": pd.Categorical(rng.choice(LEVELS, rows, p=weights / weights.sum()), categories=LEVELS),
        "is_new": rng.random(rows) < 0.3,
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    args = parser.parse_args()
    print(f"null model: windows at {len(drift.NULL_SIZES)} sizes ({drift.NULL_SIZES[0]}-{drift.NULL_SIZES[-1]:,} rows), "
          f"columns subsampled to {drift.NULL_MAX_VALUES:,} values")  # fmt: skip
    for rows in args.rows:
        data = profiling_frame(reference(rows), SPEC)
        view = profile_frame(data, SPEC)
        edges = bin_edges(view, SPEC)
        for name, entry in edges.items():
            column = view.get_column(name)
            entry["fractions"] = [b["fraction"] for b in column_bins(column, entry)]
            counts = column.get_metric("counts")
            entry["n"] = int(counts.n.value - counts.null.value)
        cells, total = [], 0.0
        for name in ("amount", "rating", "region", "is_new"):
            started = time.perf_counter()
            null = drift.null_model(data[[name]], {name: edges[name]})[name]
            seconds = time.perf_counter() - started
            total += seconds
            mean, sd = drift.null_at(null, "js", 1_000)
            cells.append(f"{name} {seconds:.2f} s (JS threshold at 1,000 rows {mean + 3 * sd:.4f})")
        print(f"{rows:>10,} rows: total {total:.2f} s; " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
