"""Retraining: from a fired trigger to a registered challenger, recorded in ``ops.retrain_runs``.

One attempt is one row, keyed by ``run_key`` (the Airflow run, or a CLI / bootstrap key):

1. :func:`begin` claims the row in a transaction: a finished attempt is returned as it is, a retried
   one resumes its row, another model's run or a recent training refuses it (at most one running
   training per model, enforced by a partial unique index, and the cool-down).
2. training (driftloop.learn.training) on labelled warehouse rows, or rows a ``data_loader`` gives (the
   example model's first champion: driftloop.sim.examples.bootstrap);
3. one MLflow run with everything needed to audit it; the row records the run before registration;
4. registration, once per run_key (a retry finds the version its first try registered), the reference
   profile of the training data into ``profiles``, the alias (``challenger``, or ``champion`` for a
   bootstrap) in MLflow and ``ops.model_aliases``;
5. the row is marked succeeded. Any error marks it failed with the error and raises an alert; aliases
   other than the one this attempt sets are never touched, and that one only after registration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from driftloop.core import warehouse
from driftloop.core.locks import lock_model
from driftloop.core.spec import ModelSpec
from driftloop.learn import registry

log = logging.getLogger(__name__)

PACKAGES = ("driftloop", "mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "whylogs", "pyarrow", "psycopg")
MODEL_REQUIREMENTS = ("mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "pyarrow")


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


@dataclasses.dataclass
class Begun:
    status: str  # started, resumed, done, busy, cooling_down
    retrain_run_id: int | None
    message: str
    row: dict[str, Any] | None = None


def _row(conn, where: str, params: tuple) -> dict[str, Any] | None:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(f"select * from ops.retrain_runs where {where}", params).fetchone()


def begin(
    url: str,
    spec: ModelSpec,
    *,
    run_key: str,
    trigger: str,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    respect_cooldown: bool = True,
    now: datetime | None = None,
) -> Begun:
    """Claim the training of ``spec`` for ``run_key`` (see the module docstring)."""
    config = spec.retraining
    with warehouse.connect(url) as conn, conn.transaction():
        lock_model(conn, "retrain", spec.name)
        now = now or conn.execute("select now()").fetchone()[0]
        mine = _row(conn, "run_key = %s", (run_key,))
        if mine is not None and mine["status"] == "succeeded":
            return Begun("done", mine["retrain_run_id"], f"{run_key} already registered version {mine['model_version']}", mine)
        other = _row(conn, "model_name = %s and status = 'running' and run_key <> %s", (spec.name, run_key))
        if other is not None:
            if other["started_at"] > now - config.training.timeout:
                return Begun("busy", other["retrain_run_id"],
                             f"{spec.name} is already training ({other['run_key']}, started {other['started_at']:%Y-%m-%d %H:%M} UTC)")  # fmt: skip
            conn.execute(
                "update ops.retrain_runs set status = 'failed', finished_at = %s, error = %s where retrain_run_id = %s",
                (now, f"abandoned: still running after {config.training.timeout} (the worker died?)", other["retrain_run_id"]),
            )
        if mine is not None:
            conn.execute(
                "update ops.retrain_runs set status = 'running', attempts = attempts + 1, error = null, "
                "finished_at = null where retrain_run_id = %s",
                (mine["retrain_run_id"],),
            )
            return Begun("resumed", mine["retrain_run_id"], f"{run_key} resumed (attempt {mine['attempts'] + 1})", mine)
        if respect_cooldown:
            last = conn.execute(
                "select max(started_at) from ops.retrain_runs where model_name = %s", (spec.name,)
            ).fetchone()[0]
            if last is not None and last > now - config.cooldown:
                return Begun("cooling_down", None,
                             f"{spec.name} trained at {last:%Y-%m-%d %H:%M} UTC; cool-down {config.cooldown} not over")  # fmt: skip
        (retrain_run_id,) = conn.execute(
            """
            insert into ops.retrain_runs (model_name, run_key, trigger, reason, evidence, status, started_at)
            values (%s, %s, %s, %s, %s::jsonb, 'running', %s)
            returning retrain_run_id
            """,
            (spec.name, run_key, trigger, reason, _json(dict(evidence or {})), now),
        ).fetchone()
    return Begun("started", retrain_run_id, f"{run_key} started ({trigger})")


def _update(url: str, retrain_run_id: int, **columns: Any) -> None:
    from psycopg import sql

    jsonb = {"evidence", "metrics", "feature_importance"}
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.SQL("cast(%s as jsonb)") if name in jsonb else sql.SQL("%s"))
        for name in columns
    )
    values = [(_json(v) if k in jsonb and v is not None else v) for k, v in columns.items()]
    with warehouse.connect(url) as conn, conn.transaction():
        conn.execute(
            sql.SQL("update ops.retrain_runs set {} where retrain_run_id = %s").format(assignments),
            [*values, retrain_run_id],
        )


def _fail(url: str, spec: ModelSpec, retrain_run_id: int, run_key: str, error: BaseException,
          finished_at: datetime | None = None) -> None:  # fmt: skip
    from driftloop.core.alerts import enqueue_alert

    message = f"{type(error).__name__}: {error}"[:4000]
    try:
        with warehouse.connect(url) as conn, conn.transaction():
            conn.execute(
                "update ops.retrain_runs set status = 'failed', finished_at = coalesce(%s, now()), error = %s "
                "where retrain_run_id = %s",
                (finished_at, message, retrain_run_id),
            )
            enqueue_alert(
                conn,
                dedup_key=f"retrain-failed:{run_key}",  # one alert per run, not one per task retry
                source="retrain",
                severity="warning",
                model_name=spec.name,
                summary=f"Retraining {spec.name} failed ({type(error).__name__}); the champion still serves",
                details={"run_key": run_key, "retrain_run_id": retrain_run_id, "error": message},
            )
    except Exception:  # the warehouse being down must not hide the training error
        log.exception("could not record the failure of retrain run %s", retrain_run_id)


# --------------------------------------------------------------------------------------------------
# The champion


def champion_model(model_name: str):
    """The champion's driftloop model (for a warm start) and its version, or (None, None)."""
    found = registry.version_by_alias(model_name, registry.CHAMPION)
    if found is None:
        return None, None
    try:
        loaded = registry.load_model(model_name, registry.CHAMPION)
        wrapped = loaded.unwrap_python_model()
        return getattr(wrapped, "model", None), found
    except Exception:  # a champion not built by driftloop: no warm start, still a comparison later
        log.warning("could not load the champion of %s as a driftloop model", model_name, exc_info=True)
        return None, found


def _original_rows(champion_version, spec: ModelSpec):
    """The champion's own training rows (logged as data/train.parquet), for mixing in; or None."""
    import pandas as pd

    if champion_version is None or not champion_version.run_id:
        return None
    try:
        import mlflow

        registry.client()
        path = mlflow.artifacts.download_artifacts(run_id=champion_version.run_id, artifact_path="data/train.parquet")
        return pd.read_parquet(path)
    except Exception:
        log.warning("the champion of %s has no data/train.parquet to mix in", spec.name, exc_info=True)
        return None


# --------------------------------------------------------------------------------------------------
# MLflow


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _reference(outcome, model_version: str):
    """The reference profile of the training rows: features, and the winner's scores and predicted class."""
    from driftloop.core.spec import Task
    from driftloop.monitor.profiling import PREDICTION_CLASS, SCORE_PREFIX, reference_profile

    spec = outcome.spec
    train = outcome.split.train
    names = [f.name for f in spec.features]
    predicted = outcome.best.model.predict_frame(train[names])
    frame = train[["request_ts", *names]].copy()
    scored = [str(spec.positive_class)] if spec.task is Task.binary else [str(c) for c in spec.classes]
    for cls in scored:
        frame[SCORE_PREFIX + cls] = predicted[cls].to_numpy()
    frame[PREDICTION_CLASS] = predicted["prediction"].to_numpy()
    source = {"kind": f"training data ({outcome.data.source})", "rows": len(train), "data_hash": outcome.data_hash}
    return reference_profile(spec, model_version, frame, source=source)


def log_training(outcome, context: Mapping[str, Any], folder: Path) -> tuple[str, str, Any]:
    """One MLflow run: params, metrics of every candidate, data version, spec and config snapshot,
    package versions, feature importance, the training report, the reference profile, the train and
    holdout rows, and the winner as a pyfunc model with signature and input example.
    Returns (mlflow run id, model URI, reference profile)."""
    import mlflow
    import yaml

    from driftloop.learn import pyfunc
    from driftloop.learn.report import write_report

    spec = outcome.spec
    config = spec.retraining.training
    registry.client()
    experiment = registry.experiment_id(spec.name)
    names = [f.name for f in spec.features]
    split = outcome.split.describe()
    data = outcome.data
    data_version = {
        "source": data.source,
        "query": data.query,
        "time_range": {"start": data.start, "end": data.end},
        "rows": {"total": len(data.frame), **{part: split[part]["rows"] for part in split}},
        "split": split,
        "content_hash": outcome.data_hash,
        "labels_loaded_until": data.labels_loaded_until,
    }
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    reference = _reference(outcome, "pending")
    with mlflow.start_run(
        experiment_id=experiment,
        run_name=f"{spec.name} {context['trigger']} {datetime.now(UTC):%Y-%m-%d %H:%M}",
        tags={"driftloop.model_name": spec.name, registry.RUN_KEY_TAG: context["run_key"],
              "driftloop.trigger": context["trigger"], "driftloop.winner": outcome.best.kind},  # fmt: skip
    ) as run:
        mlflow.log_params({
            "model_name": spec.name, "trigger": context["trigger"], "winner": outcome.best.kind,
            "selection_metric": config.selection_metric, "candidates": ",".join(config.candidates),
            "training_window": str(config.window), "validation_fraction": config.validation_fraction,
            "holdout_fraction": config.holdout_fraction, "original_data_fraction": config.original_data_fraction,
            "lightgbm_learning_rate": config.lightgbm_learning_rate, "lightgbm_num_leaves": config.lightgbm_num_leaves,
            "lightgbm_max_rounds": config.lightgbm_max_rounds, "early_stopping_rounds": config.early_stopping_rounds,
            "seed": config.seed, "data_source": data.source, "data_hash": outcome.data_hash,
            "data_start": data.start, "data_end": data.end, "n_train": split["train"]["rows"],
            "n_validation": split["validation"]["rows"], "n_holdout": split["holdout"]["rows"],
            "holdout_start": split["holdout"]["start"], "holdout_end": split["holdout"]["end"],
            "n_original_rows": outcome.n_original,
            "spec_sha256": hashlib.sha256(spec_yaml.encode()).hexdigest(),
        })  # fmt: skip
        metrics: dict[str, float] = {}
        for candidate in outcome.candidates:
            if candidate.model is None:
                continue
            for part, values in (("validation", candidate.validation), ("holdout", candidate.holdout)):
                metrics.update({f"{candidate.kind}.{part}.{k}": v for k, v in values.items() if v is not None})
            metrics[f"{candidate.kind}.train_seconds"] = candidate.seconds
            if candidate.latency_ms_per_row is not None:
                metrics[f"{candidate.kind}.latency_ms_per_row"] = candidate.latency_ms_per_row
        for part, values in (("validation", outcome.best.validation), ("holdout", outcome.best.holdout)):
            metrics.update({f"{part}.{k}": v for k, v in values.items() if v is not None})
        mlflow.log_metrics(metrics)
        mlflow.log_text(spec_yaml, "config/spec.yaml")
        mlflow.log_dict(json.loads(_json(context)), "config/trigger.json")
        mlflow.log_dict(json.loads(_json(data_version)), "data/data_version.json")
        mlflow.log_dict(package_versions(), "environment/packages.json")
        mlflow.log_dict(outcome.importance, "importance/feature_importance.json")
        write_report(outcome, folder / "report", dict(context))
        mlflow.log_artifacts(str(folder / "report"), "report")
        profile_path = folder / "reference.bin"
        profile_path.write_bytes(reference.view.serialize())
        mlflow.log_artifact(str(profile_path), "reference")
        mlflow.log_dict(reference.bin_edges, "reference/bin_edges.json")
        kept = ["prediction_id", "request_ts", "segment", "label", *names]
        # the holdout with the winner's in-process probabilities: the promotion gate scores the champion
        # on the same rows, and anyone can check that the registered model reproduces them
        holdout = outcome.split.holdout[kept].copy()
        scored = outcome.best.model.predict_frame(outcome.split.holdout[names], outcome.best.holdout_probabilities)
        holdout["prediction"] = scored["prediction"].to_numpy()
        for cls in outcome.best.model.classes:
            holdout[f"score.{cls}"] = scored[cls].to_numpy()
        for part, frame in (("train", outcome.split.train[kept]), ("holdout", holdout)):
            path = folder / f"{part}.parquet"
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), "data")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc.DriftloopModel(outcome.best.model),
            signature=pyfunc.signature(spec),
            input_example=pyfunc.input_example(outcome.split.holdout, spec),
            pip_requirements=[f"{name}=={metadata.version(name)}" for name in MODEL_REQUIREMENTS],
        )
    return run.info.run_id, info.model_uri, reference


def _stored_reference(run_id: str, spec: ModelSpec, version: str):
    """The reference profile an earlier try logged (for a retry that finds its version registered)."""
    import mlflow
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    from driftloop.monitor.profiling import ReferenceProfile, bin_edges

    registry.client()
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reference/reference.bin")
    view = DatasetProfileView.deserialize(Path(path).read_bytes())
    n_rows = max((c.get_metric("counts").n.value for c in view.get_columns().values()), default=0)
    return ReferenceProfile(spec.name, version, view, bin_edges(view, spec), int(n_rows), source={"kind": "training data", "mlflow_run_id": run_id})


# --------------------------------------------------------------------------------------------------
# The whole attempt


def run_retrain(
    url: str | None,
    spec: ModelSpec,
    *,
    run_key: str,
    trigger: str,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    alias: str = registry.CHALLENGER,
    as_of: datetime | None = None,
    data_loader: Callable[[], Any] | None = None,
    respect_cooldown: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, log and register a challenger of ``spec`` (see the module docstring). Returns a summary
    with ``status`` (succeeded, done, busy, cooling_down) and, when a version exists, ``model_version``.

    ``as_of`` is the attempt's clock (a DAG passes its data interval's end): the training window ends
    there, and the attempt's start, the cool-down and the dead-worker timeout are measured on it, so a
    replayed or simulated run sees the same world whatever the wall clock says. Default: the wall clock."""
    from driftloop.learn import training
    from driftloop.learn.data import load_training_data
    from driftloop.monitor.profiling import store_reference

    url = warehouse.resolve_url(url)
    say = progress or (lambda message: log.info("%s", message))
    wall_started = time.perf_counter()

    def clock() -> datetime:
        """The attempt's now: as_of, advanced by the time the attempt has taken."""
        if as_of is None:
            return datetime.now(UTC)
        return as_of + timedelta(seconds=time.perf_counter() - wall_started)

    begun = begin(url, spec, run_key=run_key, trigger=trigger, reason=reason, evidence=evidence,
                  respect_cooldown=respect_cooldown, now=as_of)  # fmt: skip
    if begun.status in ("busy", "cooling_down"):
        say(begun.message)
        return {"status": begun.status, "message": begun.message, "model_version": None}
    if begun.status == "done":
        say(begun.message)
        return {"status": "done", "message": begun.message, "model_version": begun.row["model_version"],
                "retrain_run_id": begun.retrain_run_id, "mlflow_run_id": begun.row["mlflow_run_id"]}  # fmt: skip
    retrain_run_id = begun.retrain_run_id
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        existing = registry.version_for_run_key(spec.name, run_key)
        if existing is not None:  # an earlier try registered before it died: finish its work, train nothing
            say(f"{run_key} already registered version {existing.version}; finishing")
            version, mlflow_run_id = existing.version, existing.run_id
            reference = _stored_reference(mlflow_run_id, spec, version)
        else:
            config = spec.retraining.training
            champion, champion_version = champion_model(spec.name)
            if data_loader is not None:
                data = data_loader()
            else:
                end = as_of or clock()
                data = load_training_data(url, spec, end - config.window, end, config.max_rows)
            timings["extract"] = time.perf_counter() - started
            say(f"{len(data.frame)} labelled rows ({data.source}) in {timings['extract']:.1f}s")
            original = _original_rows(champion_version, spec) if config.original_data_fraction > 0 else None
            outcome = training.train_candidates(spec, data, champion=champion, original=original, progress=say)
            timings.update(outcome.timings)
            split = outcome.split.describe()
            context = {"run_key": run_key, "trigger": trigger, "reason": reason, "evidence": dict(evidence or {}),
                       "retrain_run_id": retrain_run_id,
                       "champion_version": champion_version.version if champion_version else None}  # fmt: skip
            logged = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="driftloop-retrain-") as folder:
                mlflow_run_id, model_uri, reference = log_training(outcome, context, Path(folder))
            timings["log"] = time.perf_counter() - logged
            _update(
                url, retrain_run_id,
                data_source=data.source, data_start=data.start, data_end=data.end,
                labels_loaded_until=data.labels_loaded_until, data_hash=outcome.data_hash,
                n_train=split["train"]["rows"], n_validation=split["validation"]["rows"],
                n_holdout=split["holdout"]["rows"], holdout_start=split["holdout"]["start"],
                holdout_end=split["holdout"]["end"], candidate=outcome.best.kind,
                metrics={"validation": outcome.best.validation, "holdout": outcome.best.holdout,
                         "candidates": {c.kind: {"validation": c.validation, "holdout": c.holdout,
                                                 "train_seconds": c.seconds, "skipped": c.skipped,
                                                 "latency_ms_per_row": c.latency_ms_per_row}
                                        for c in outcome.candidates}},
                feature_importance=outcome.importance, mlflow_run_id=mlflow_run_id,
            )  # fmt: skip
            registered = time.perf_counter()
            version = registry.register(
                spec.name, model_uri, mlflow_run_id, run_key,
                tags={"driftloop.trigger": trigger, "driftloop.candidate": outcome.best.kind},
            ).version  # fmt: skip
            timings["register"] = time.perf_counter() - registered
        say(f"registered {spec.name} version {version}")
        finishing = time.perf_counter()
        store_reference(url, spec, dataclasses.replace(reference, model_version=str(version)))
        registry.set_alias(url, spec.name, alias, str(version), retrain_run_id)
        _update(url, retrain_run_id, model_version=str(version), alias=alias, mlflow_run_id=mlflow_run_id,
                status="succeeded", finished_at=clock())  # fmt: skip
        timings["finish"] = time.perf_counter() - finishing
    except BaseException as error:
        _fail(url, spec, retrain_run_id, run_key, error, finished_at=clock())
        raise
    say(f"{spec.name} version {version} is now '{alias}'")
    return {"status": "succeeded", "model_version": str(version), "alias": alias, "retrain_run_id": retrain_run_id,
            "mlflow_run_id": mlflow_run_id, "timings": timings}  # fmt: skip


def converge_champion(url: str, spec: ModelSpec, champion: registry.VersionInfo) -> None:
    """A registry that already has a champion, and a warehouse that does not know it (a new warehouse,
    or a crash before the mirror was written): record the alias and store the champion's reference."""
    from driftloop.monitor.profiling import store_reference
    from driftloop.monitor.reference import has_reference

    if not has_reference(url, spec.name, champion.version) and champion.run_id:
        try:
            store_reference(url, spec, _stored_reference(champion.run_id, spec, champion.version))
        except Exception:  # a champion not trained by driftloop has no reference artifact
            log.warning("the champion of %s has no reference profile artifact", spec.name, exc_info=True)
    with warehouse.connect(url) as conn:
        known = conn.execute(
            "select model_version from ops.model_aliases where model_name = %s and alias = %s",
            (spec.name, registry.CHAMPION),
        ).fetchone()
    if known is None or known[0] != champion.version:
        registry.set_alias(url, spec.name, registry.CHAMPION, champion.version)


# --------------------------------------------------------------------------------------------------
# The gate retrain__<model>'s sensor applies


@dataclasses.dataclass(frozen=True)
class Gate:
    fire: bool
    trigger: str | None
    reason: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return json.loads(_json(dataclasses.asdict(self)))


def decide_gate(signal: Mapping[str, Any] | None, *, manual_reason: str | None = None,
                last_started_at: datetime | None = None) -> Gate:  # fmt: skip
    """Fire for a manual request (with its reason), or when ``marts.retrain_signals`` says so AND was
    computed after the last training attempt started (a row built before it is stale: the training it
    asked for already happened). Pure: the sensor reads the inputs, this decides."""
    if manual_reason and manual_reason.strip():
        return Gate(True, "manual", manual_reason.strip(), {"requested_by": "manual trigger", "signals": dict(signal or {})})
    if signal is None:
        return Gate(False, None, "marts.retrain_signals has no row for this model yet (no metrics build)", {})
    evidence = dict(signal)
    if not signal.get("should_retrain"):
        return Gate(False, None, str(signal.get("reason") or "no trigger fires"), evidence)
    as_of = signal.get("as_of")
    if last_started_at is not None and as_of is not None and as_of <= last_started_at:
        return Gate(False, None, f"signals computed at {as_of} predate the last training ({last_started_at}); "
                    "waiting for a metrics build", evidence)  # fmt: skip
    return Gate(True, signal.get("primary_trigger"), str(signal.get("reason")), evidence)


def read_gate_inputs(url: str, model_name: str) -> tuple[dict[str, Any] | None, datetime | None]:
    """The model's retrain_signals row (None when the mart does not exist or has no row) and when its
    last training attempt started."""
    import psycopg
    from psycopg.rows import dict_row

    with warehouse.connect(url) as conn:
        last = conn.execute(
            "select max(started_at) from ops.retrain_runs where model_name = %s", (model_name,)
        ).fetchone()[0]
        try:
            with conn.cursor(row_factory=dict_row) as cursor:
                signal = cursor.execute("select * from marts.retrain_signals where model_name = %s", (model_name,)).fetchone()
        except psycopg.errors.UndefinedTable:
            signal = None
    return signal, last


def check_gate(url: str | None, model_name: str, manual_reason: str | None = None) -> Gate:
    signal, last = read_gate_inputs(warehouse.resolve_url(url), model_name)
    return decide_gate(signal, manual_reason=manual_reason, last_started_at=last)
