"""A model driftloop did not train: its spec and its training data, for the `driftloop register` tests
(the fixture ``external_specs`` in conftest.py puts the spec in a specs folder next to the example's)."""

from __future__ import annotations

EXTERNAL_SPEC = """\
name: external
description: A binary model trained elsewhere.
task: binary_classification
classes: [0, 1]
positive_class: 1
features:
  - {name: amount, type: numeric}
  - {name: tier, type: categorical, categories: [0, 10, 20]}
  - {name: is_new, type: boolean}
"""


def training_file(tmp_path, rows=6_000):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    amount = rng.lognormal(4, 1, rows)
    score = 1 / (1 + np.exp(-(np.log(amount) - 4)))
    frame = pd.DataFrame({
        "amount": amount,
        "tier": rng.choice([0, 10, 20], rows, p=[0.6, 0.3, 0.1]),  # integers, as the team's data has them
        "is_new": rng.random(rows) < 0.2,
        "customer_id": np.arange(rows),  # not a feature: reported
        "p_default": score,
        "predicted": (score > 0.5).astype(int),
        "defaulted": (rng.random(rows) < score).astype(int),
    })  # fmt: skip
    path = tmp_path / "training.parquet"
    frame.to_parquet(path)
    return path, frame
