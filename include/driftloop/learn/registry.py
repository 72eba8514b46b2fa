"""The MLflow adapter: where the tracking store is, experiments, registering versions, aliases.

Default store (nothing installed): SQLite plus an artifact folder under ``$DRIFTLOOP_HOME/mlflow``;
``MLFLOW_TRACKING_URI`` points it at a server (docker-compose) or any other store. Aliases set here
are mirrored into ``ops.model_aliases`` so the warehouse can say which version serves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftloop.core.settings import home

# The tag that ties a registered version to the training attempt that created it: a retried attempt
# finds its version instead of registering a second one.
RUN_KEY_TAG = "driftloop.run_key"
CHAMPION = "champion"
CHALLENGER = "challenger"


def _quiet() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def local_store() -> Path:
    return home() / "mlflow"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local SQLite store under ``$DRIFTLOOP_HOME/mlflow``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = local_store()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def client():
    """An MlflowClient on :func:`tracking_uri` (also made the process's tracking URI)."""
    _quiet()
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(model_name: str) -> str:
    """The experiment ``driftloop/<model>``, created on first use; with a SQLite store its artifacts
    live next to the database (``$DRIFTLOOP_HOME/mlflow/artifacts`` by default), not in ``./mlruns``."""
    mlflow_client = client()
    name = f"driftloop/{model_name}"
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = _local_artifact_location(tracking_uri())
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by a concurrent run
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _local_artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go next to the database file; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


@dataclass(frozen=True)
class VersionInfo:
    model_name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]


def _info(version: Any) -> VersionInfo:
    return VersionInfo(version.name, str(version.version), version.run_id, version.source, dict(version.tags or {}))


def version_by_alias(model_name: str, alias: str) -> VersionInfo | None:
    """The version behind ``alias``, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return _info(client().get_model_version_by_alias(model_name, alias))
    except MlflowException:
        return None


def version_for_run_key(model_name: str, run_key: str) -> VersionInfo | None:
    """The version a training attempt registered, if it got that far."""
    from mlflow.exceptions import MlflowException

    try:
        found = client().search_model_versions(f"name = '{_quoted(model_name)}'")
    except MlflowException:
        return None
    for version in found:
        if (version.tags or {}).get(RUN_KEY_TAG) == run_key:
            return _info(version)
    return None


def _quoted(value: str) -> str:
    return value.replace("'", "''")


def register(model_name: str, model_uri: str, run_id: str, run_key: str, tags: dict[str, str] | None = None) -> VersionInfo:
    """Register ``model_uri`` as a new version of ``model_name``, once per ``run_key``: a second call
    with the same key returns the version the first one created."""
    from mlflow.exceptions import MlflowException

    existing = version_for_run_key(model_name, run_key)
    if existing is not None:
        return existing
    mlflow_client = client()
    try:
        mlflow_client.create_registered_model(model_name, description=f"driftloop-managed model {model_name}")
    except MlflowException as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
            raise
    version = mlflow_client.create_model_version(
        model_name, source=model_uri, run_id=run_id, tags={RUN_KEY_TAG: run_key, **(tags or {})}
    )
    return _info(version)


def set_alias(url: str, model_name: str, alias: str, version: str, retrain_run_id: int | None = None) -> None:
    """Point ``alias`` at ``version`` in the registry, then record it in ``ops.model_aliases``.
    Both writes are idempotent, so a crash between them is repaired by running this again."""
    from driftloop.core import warehouse

    client().set_registered_model_alias(model_name, alias, str(version))
    with warehouse.connect(url) as conn, conn.transaction():
        conn.execute(
            """
            insert into ops.model_aliases (model_name, alias, model_version, retrain_run_id, updated_at)
            values (%s, %s, %s, %s, now())
            on conflict (model_name, alias) do update set
                model_version = excluded.model_version, retrain_run_id = excluded.retrain_run_id,
                updated_at = now()
            where ops.model_aliases.model_version is distinct from excluded.model_version
            """,
            (model_name, alias, str(version), retrain_run_id),
        )


def remove_alias(url: str, model_name: str, alias: str, version: str) -> None:
    """Remove ``alias`` if it still points at ``version`` (registry, then ops.model_aliases). Idempotent."""
    from mlflow.exceptions import MlflowException

    from driftloop.core import warehouse

    current = version_by_alias(model_name, alias)
    if current is not None and current.version == str(version):
        try:
            client().delete_registered_model_alias(model_name, alias)
        except MlflowException:  # removed meanwhile
            pass
    with warehouse.connect(url) as conn, conn.transaction():
        conn.execute(
            "delete from ops.model_aliases where model_name = %s and alias = %s and model_version = %s",
            (model_name, alias, str(version)),
        )


def load_model(model_name: str, alias: str):
    """The pyfunc model behind ``models:/<name>@<alias>``."""
    client()
    import mlflow

    return mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")
