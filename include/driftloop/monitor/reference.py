"""Reference profiles: what the training data of a model version looked like (its whylogs profile and
bin edges in ``profiles.reference_profiles``; written by driftloop.monitor.profiling.store_reference
for every version driftloop trains). Drift is measured against them."""

from __future__ import annotations

import psycopg


def has_reference(url: str, model_name: str, model_version: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select 1 from profiles.reference_profiles where model_name = %s and model_version = %s",
            (model_name, str(model_version)),
        ).fetchone()
    return row is not None
