"""Models driftloop did not train: a version's reference profile (and baseline quality) from the
team's own training data (``driftloop register``).

The file (Parquet, CSV or JSON lines) holds one row per training example: the spec's features (by
name, or ``features.<name>``), optionally the label, the model's scores and its predicted class on
those rows. The reference profile is that of the file (features, ``prediction.class``,
``prediction.score.<class>``), stored for the version like a retrain's, with the same bins and
learned thresholds. Every column it does not use is reported, never silently dropped. With labels
and scores, the version's quality on the file is stored as a succeeded ``ops.retrain_runs`` row
(trigger ``external``): the baseline the degradation trigger compares the version's traffic against.

With an MLflow model (``mlflow_model``), the model is checked against the spec's features and tried on
rows of the file, then registered as a version of the model's registered model
(:mod:`driftloop.learn.external_model`), optionally as ``champion``, so the router serves it. The
reference and baseline are stored for the registry's version (the ``model_version`` the router logs)
and, when the team's own version name differs, for that one too (predictions served elsewhere).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from driftloop.core import warehouse
from driftloop.core.quality import quality_metrics
from driftloop.core.spec import ModelSpec, Task
from driftloop.monitor.profiling import PREDICTION_CLASS, SCORE_PREFIX, reference_profile, store_reference

__all__ = ["Registration", "read_training_data", "register_external"]


class RegistrationError(ValueError):
    """Training data that cannot be used as given; the message says which column and why."""


@dataclass
class Registration:
    model_name: str
    model_version: str
    n_rows: int
    reference_profile_id: int
    used_columns: dict[str, str] = field(default_factory=dict)  # file column -> profiled column
    unused_columns: list[str] = field(default_factory=list)
    missing_features: list[str] = field(default_factory=list)
    baseline: dict[str, float | None] | None = None
    retrain_run_id: int | None = None
    # with an MLflow model: the registry's version, whether it existed already, the alias set, the check
    registry_version: str | None = None
    already_registered: bool = False
    alias: str | None = None
    model_check: Any = None
    stored_versions: list[str] = field(default_factory=list)


def read_training_data(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return pd.read_parquet(path)
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return pd.read_csv(path)
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json")):
        return pd.read_json(path, lines=True)
    raise RegistrationError(f"{path}: expected a .parquet, .csv or .jsonl file")


def _score_columns(spec: ModelSpec, score_columns: list[str]) -> dict[str, str]:
    """profiled score column -> file column. Binary: one column, the positive class's probability;
    else CLASS=COLUMN per class (or one column per class, in the spec's order)."""
    classes = [str(c) for c in spec.classes]
    if not score_columns:
        return {}
    if spec.task is Task.binary:
        if len(score_columns) != 1 or "=" in score_columns[0] and score_columns[0].split("=", 1)[0] != str(spec.positive_class):
            raise RegistrationError(
                f"a binary model takes one score column: the probability of {spec.positive_class!r} (got {score_columns})"
            )
        return {SCORE_PREFIX + str(spec.positive_class): score_columns[0].split("=", 1)[-1]}
    if all("=" in c for c in score_columns):
        pairs = dict(c.split("=", 1) for c in score_columns)
        unknown = sorted(set(pairs) - set(classes))
        if unknown:
            raise RegistrationError(f"score columns name classes the spec does not have: {', '.join(unknown)}")
        return {SCORE_PREFIX + cls: column for cls, column in pairs.items()}
    if len(score_columns) != len(classes):
        raise RegistrationError(f"give CLASS=COLUMN, or one score column per class in the spec's order {classes}")
    return {SCORE_PREFIX + cls: column for cls, column in zip(classes, score_columns, strict=True)}


def register_external(
    url: str | None,
    spec: ModelSpec,
    model_version: str | None,
    training_data: str | Path,
    *,
    label_column: str | None = None,
    score_columns: list[str] | None = None,
    prediction_column: str | None = None,
    mlflow_model: str | None = None,
    champion: bool = False,
    now: datetime | None = None,
) -> Registration:
    """Store `training_data`'s reference profile for `model_version` (replacing any earlier one) and,
    with labels and scores, its baseline quality. With `mlflow_model`, register that model in MLflow
    first (once per model content; `champion` moves the alias to it) and store the reference for the
    registry's version too. Raises :class:`RegistrationError` on a file that does not fit the spec
    (a named column missing, no feature at all) or a model whose inputs or outputs do not."""
    if model_version is None and mlflow_model is None:
        raise RegistrationError("give the version (--version), or the MLflow model whose registry version it becomes")
    if champion and mlflow_model is None:
        raise RegistrationError("--champion needs --mlflow-model: only a model in the registry can serve")
    frame = read_training_data(training_data)
    if frame.empty:
        raise RegistrationError(f"{training_data}: the file has no rows")
    used: dict[str, str] = {}
    missing = []
    for feature in spec.features:
        source = next((c for c in (feature.name, f"features.{feature.name}") if c in frame.columns), None)
        if source is None:
            missing.append(feature.name)
        else:
            used[source] = feature.name
    if len(missing) == len(spec.features):
        raise RegistrationError(f"{training_data}: none of the spec's features is a column (columns: {', '.join(map(str, frame.columns))})")
    scores = _score_columns(spec, list(score_columns or []))
    for profiled, column in scores.items():
        used[column] = profiled
    if prediction_column is not None:
        used[prediction_column] = PREDICTION_CLASS
    for column in [*scores.values(), *([prediction_column] if prediction_column else []), *([label_column] if label_column else [])]:
        if column not in frame.columns:
            raise RegistrationError(f"{training_data}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    profiled = frame[list(used)].rename(columns=used)
    if PREDICTION_CLASS in profiled.columns:
        profiled[PREDICTION_CLASS] = profiled[PREDICTION_CLASS].astype(str)
    for feature in spec.features:
        if feature.type.value == "categorical" and feature.name in profiled.columns:
            # integer categories (0, 10, 20) are the spec's strings ("0", "10", "20")
            column = profiled[feature.name]
            profiled[feature.name] = column.where(column.isna(), column.astype(str))
    unused = [str(c) for c in frame.columns if c not in used and c != label_column]
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
    source = {"kind": "external training data", "file": str(training_data), "rows": len(frame), "sha256": digest,
              "used_columns": used, "unused_columns": unused, "missing_features": missing}  # fmt: skip
    reference = reference_profile(spec, str(model_version or "pending"), profiled, source=source)
    baseline = _baseline(spec, frame, label_column, scores) if label_column is not None and scores else None
    url = warehouse.resolve_url(url)
    warehouse.migrate(url)
    versions = [str(model_version)] if model_version is not None else []
    registered = None
    if mlflow_model is not None:
        registered, check, existed = _register_model(spec, mlflow_model, profiled, reference, model_version)
        versions = list(dict.fromkeys([registered.version, *versions]))
    result = Registration(spec.name, versions[0], len(frame), 0, used, unused, missing, baseline=baseline)
    if registered is not None:
        result.registry_version, result.already_registered, result.model_check = registered.version, existed, check
    for version in versions:  # the registry's version first: the id reported is its reference's
        profile_id = store_reference(url, spec, dataclasses.replace(reference, model_version=version))
        run_id = _record_baseline(url, spec, version, result, source, now or datetime.now(UTC)) if baseline else None
        if not result.stored_versions:
            result.reference_profile_id, result.retrain_run_id = profile_id, run_id
        result.stored_versions.append(version)
    if champion and registered is not None:
        from driftloop.learn import registry

        registry.set_alias(url, spec.name, registry.CHAMPION, registered.version, result.retrain_run_id)
        result.alias = registry.CHAMPION
    return result


def _register_model(spec: ModelSpec, model_uri: str, profiled: pd.DataFrame, reference, external_version: str | None):
    """Check the MLflow model against the spec, try it on the file's rows, register it (or find the version
    registered from the same model before). Returns (version, check, whether it existed)."""
    from driftloop.learn import external_model, registry

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = external_model.resolve_model(model_uri, Path(folder))
            check = external_model.check_model(spec, path)
            digest = external_model.model_digest(path)
            existed = registry.version_for_run_key(spec.name, f"external/{spec.name}/{digest}")
            if existed is not None:
                return existed, check, True
            wrapped = external_model.try_on(spec, path, check, profiled)
            version = external_model.log_external_model(spec, model_uri, path, wrapped, reference, profiled,
                                                        digest=digest, external_version=external_version)  # fmt: skip
        except external_model.ExternalModelError as exc:
            raise RegistrationError(f"{model_uri}: {exc}") from None
    return version, check, False


def _baseline(spec: ModelSpec, frame: pd.DataFrame, label_column: str, scores: dict[str, str]) -> dict[str, float | None]:
    classes = [str(c) for c in spec.classes]
    labels = frame[label_column].astype(str)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise RegistrationError(f"label column {label_column!r} has values that are not classes of the spec: {unknown[:5]}")
    y_true = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    if spec.task is Task.binary:
        positive = classes.index(str(spec.positive_class))
        p = frame[scores[SCORE_PREFIX + str(spec.positive_class)]].to_numpy(dtype=float)
        probabilities = np.zeros((len(frame), 2))
        probabilities[:, positive], probabilities[:, 1 - positive] = p, 1 - p
    else:
        probabilities = np.column_stack([frame[scores[SCORE_PREFIX + c]].to_numpy(dtype=float) for c in classes])
    return quality_metrics(spec, y_true, probabilities)


def _record_baseline(url: str, spec: ModelSpec, version: str, result: Registration, source: dict[str, Any],
                     now: datetime) -> int:  # fmt: skip
    """The version's baseline quality as a succeeded retrain run (trigger 'external'), replacing an
    earlier registration of the same version."""
    metrics = orjson.dumps({"holdout": result.baseline, "source": "external training data"}).decode()
    with warehouse.connect(url) as conn:
        (run_id,) = conn.execute(
            """insert into ops.retrain_runs (model_name, run_key, trigger, reason, evidence, status, started_at,
                   finished_at, data_source, data_hash, n_holdout, metrics, model_version)
               values (%s, %s, 'external', %s, %s::jsonb, 'succeeded', %s, %s, 'external', %s, %s, %s::jsonb, %s)
               on conflict (run_key) do update set evidence = excluded.evidence, data_hash = excluded.data_hash,
                   n_holdout = excluded.n_holdout, metrics = excluded.metrics, finished_at = excluded.finished_at
               returning retrain_run_id""",
            (spec.name, f"register/{spec.name}/{version}", f"version {version} registered from {source['file']}",
             orjson.dumps(source).decode(), now, now, source["sha256"], result.n_rows, metrics, version),
        ).fetchone()
    return run_id
