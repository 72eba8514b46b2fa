"""An MLflow model driftloop did not train, registered so the router can serve it
(``driftloop register --mlflow-model URI``).

The router hands every model the spec's features (``pyfunc.typed_features``) and reads back the
predicted class and one probability per class, as driftloop's own versions answer. A team's model
answers in its own way (an sklearn estimator's ``predict`` gives labels, a LightGBM Booster gives the
positive class's probability), so it is registered wrapped: :class:`ExternalModel` is a pyfunc that
carries the team's model as an artifact, feeds it the columns its signature names in the types it
declares, and turns its probabilities into driftloop's output. The registered version follows the
conventions of a retrained one: a run in the experiment ``driftloop/<model>`` with the reference
profile as an artifact, the ``driftloop.run_key`` tag (here the model's content hash, so registering
the same model again finds its version instead of adding one), and aliases set through
:func:`driftloop.learn.registry.set_alias`.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from driftloop.core.spec import FeatureType, ModelSpec, Task
from driftloop.learn import registry

__all__ = ["ExternalModel", "ModelCheck", "check_model", "log_external_model", "model_digest", "resolve_model"]

ARTIFACT = "external_model"
NUMERIC_TYPES = {"double", "float", "long", "integer"}
# the flavours whose native model is loaded (predict_proba / Booster.predict); any other goes through pyfunc
NATIVE_FLAVORS = ("sklearn", "lightgbm")


class ExternalModelError(ValueError):
    """An MLflow model that cannot serve the spec; the message says which input or output and why."""


@dataclass
class ModelCheck:
    flavor: str  # sklearn, lightgbm or python_function
    inputs: dict[str, str]  # model input column -> its type ("double", "string", "boolean", ...)
    unused_features: list[str] = field(default_factory=list)  # spec features the model does not take
    input_source: str = "signature"  # where the inputs came from: signature, the estimator, or the spec


# --------------------------------------------------------------------------------------------------
# The model as the router serves it


class ExternalModel(mlflow.pyfunc.PythonModel):
    """The team's model behind driftloop's pyfunc contract: spec features in, ``prediction`` and one
    probability column per class out. It deliberately has no ``model`` attribute: the warm start looks
    for a driftloop ``TrainedModel`` there and must not find this one."""

    def __init__(self, spec: ModelSpec, check: ModelCheck):
        self.classes = [str(c) for c in spec.classes]
        self.positive_class = str(spec.positive_class) if spec.task is Task.binary else None
        self.categorical = {f.name for f in spec.features if f.type is FeatureType.categorical}
        self.boolean = {f.name for f in spec.features if f.type is FeatureType.boolean}
        self.flavor = check.flavor
        self.inputs = dict(check.inputs)
        self._native: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # the team's model travels as the artifact, not inside the pickle
        return {**self.__dict__, "_native": None}

    def load_context(self, context: Any) -> None:
        self.load(context.artifacts[ARTIFACT])

    def load(self, path: str) -> None:
        import mlflow

        if self.flavor == "sklearn":
            self._native = mlflow.sklearn.load_model(path)
        elif self.flavor == "lightgbm":
            self._native = mlflow.lightgbm.load_model(path)
        else:
            self._native = mlflow.pyfunc.load_model(path)

    def model_input(self, features: pd.DataFrame) -> pd.DataFrame:
        """The columns the team's model takes, in its order and declared types."""
        frame = pd.DataFrame(index=features.index)
        for column, kind in self.inputs.items():
            values = features[column] if column in features.columns else pd.Series(None, index=features.index, dtype=object)
            if kind in NUMERIC_TYPES:
                values = pd.to_numeric(values.map(lambda v: float(v) if isinstance(v, bool) else v), errors="coerce")
                values = values.astype("float64")
            elif kind == "boolean":
                values = values.astype(object).where(values.notna(), None)
            else:
                values = values.astype(object).where(values.isna(), values.astype(str)).where(values.notna(), None)
            if self.flavor == "lightgbm" and column in self.categorical and kind not in NUMERIC_TYPES:
                values = values.astype("category")  # LightGBM maps pandas categories onto its training ones
            if self.flavor == "lightgbm" and kind == "boolean":
                values = values.map({True: 1.0, False: 0.0}).astype("float64")
            frame[column] = values
        return frame

    def probabilities(self, features: pd.DataFrame) -> np.ndarray:
        """One column per spec class (spec order), one row per request."""
        inputs = self.model_input(features)
        native = self._native
        if hasattr(native, "predict_proba") and hasattr(native, "classes_"):
            raw = np.asarray(native.predict_proba(inputs), dtype=float)
            return self._by_class(raw, [str(c) for c in native.classes_])
        if hasattr(native, "predict_proba"):
            return self._in_spec_order(np.asarray(native.predict_proba(inputs), dtype=float))
        output = native.predict(inputs)
        if isinstance(output, pd.DataFrame) and set(self.classes) <= {str(c) for c in output.columns}:
            output = output.rename(columns=str)
            return output[self.classes].to_numpy(dtype=float)
        try:
            raw = np.asarray(output, dtype=float)
        except (TypeError, ValueError):
            raise ExternalModelError(
                "the model's predict returns labels, not probabilities: log it so that predict gives probabilities "
                "(mlflow.sklearn.log_model(..., pyfunc_predict_fn='predict_proba'), or a pyfunc returning one column per class)"
            ) from None
        return self._in_spec_order(raw)

    def _by_class(self, raw: np.ndarray, model_classes: list[str]) -> np.ndarray:
        if sorted(model_classes) != sorted(self.classes):
            raise ExternalModelError(f"the model's classes {model_classes} are not the spec's classes {self.classes}")
        return raw[:, [model_classes.index(c) for c in self.classes]]

    def _in_spec_order(self, raw: np.ndarray) -> np.ndarray:
        """Probabilities without class names: a vector is the positive class's (binary), a matrix has one
        column per spec class in the spec's order."""
        if raw.ndim == 2 and raw.shape[1] == 1:
            raw = raw[:, 0]
        if raw.ndim == 1 and self.positive_class is not None:
            result = np.empty((len(raw), 2))
            positive = self.classes.index(self.positive_class)
            result[:, positive], result[:, 1 - positive] = raw, 1.0 - raw
            raw = result
        if raw.ndim != 2 or raw.shape[1] != len(self.classes):
            raise ExternalModelError(f"the model's output has shape {raw.shape}: expected one probability per class {self.classes}")
        return raw

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input).reset_index(drop=True)
        probabilities = self.probabilities(frame)
        if not np.all(np.isfinite(probabilities)) or probabilities.min() < -1e-9 or probabilities.max() > 1 + 1e-9:
            raise ExternalModelError("the model's output is not probabilities in [0, 1]")
        result = pd.DataFrame(probabilities, columns=self.classes)
        result.insert(0, "prediction", np.asarray(self.classes, dtype=object)[probabilities.argmax(axis=1)])
        return result


# --------------------------------------------------------------------------------------------------
# Resolving and checking


def resolve_model(model_uri: str, folder: Path) -> Path:
    """A local copy of the model at ``model_uri`` (a directory with an MLmodel file, ``runs:/``,
    ``models:/`` or any artifact URI MLflow reads) inside ``folder``."""
    import mlflow

    local = Path(model_uri)
    if local.exists():
        if not (local / "MLmodel").is_file():
            raise ExternalModelError(f"{model_uri}: no MLmodel file in this folder (expected an MLflow model directory)")
        return local
    registry.client()
    try:
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder)))
    except Exception as exc:
        raise ExternalModelError(f"{model_uri}: cannot read this MLflow model ({type(exc).__name__}: {exc})") from None
    if not (path / "MLmodel").is_file():
        raise ExternalModelError(f"{model_uri}: no MLmodel file there (expected an MLflow model)")
    return path


def model_digest(path: Path) -> str:
    """sha256 over the model directory's files (relative names and bytes): the same model, the same digest."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _estimator_inputs(path: Path, flavor: str) -> list[str] | None:
    """Input names the estimator itself knows (sklearn's feature_names_in_, LightGBM's feature names)."""
    probe = ExternalModel.__new__(ExternalModel)
    probe.flavor = flavor
    probe.load(str(path))
    native = probe._native
    names = getattr(native, "feature_names_in_", None)
    if names is None and hasattr(native, "feature_name"):
        names = native.feature_name()
    if names is None and hasattr(native, "booster_"):
        names = native.booster_.feature_name()
    return [str(n) for n in names] if names is not None else None


def check_model(spec: ModelSpec, path: Path) -> ModelCheck:
    """Check the model's inputs against the spec's features: every input the model takes must be a feature
    of the spec, in a type the feature can be given as. Raises :class:`ExternalModelError` naming the
    inputs that do not match."""
    from mlflow.models import Model

    mlmodel = Model.load(str(path / "MLmodel"))
    flavor = next((f for f in NATIVE_FLAVORS if f in mlmodel.flavors), "python_function")
    if flavor == "python_function" and "python_function" not in mlmodel.flavors:
        raise ExternalModelError(f"{path}: the model has no python_function flavour (flavours: {', '.join(mlmodel.flavors)})")
    features = {f.name: f for f in spec.features}
    signature = mlmodel.signature
    source = "signature"
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        inputs = {}
        for column in signature.inputs.inputs:
            kind = getattr(column.type, "name", str(column.type))
            inputs[column.name] = str(kind)
    else:
        names = _estimator_inputs(path, flavor) if flavor in NATIVE_FLAVORS else None
        source = "the estimator" if names is not None else "the spec"
        names = names if names is not None else list(features)
        kinds = {FeatureType.numeric: "double", FeatureType.categorical: "string", FeatureType.boolean: "boolean"}
        inputs = {n: kinds[features[n].type] if n in features else "unknown" for n in names}
    unknown = [n for n in inputs if n not in features]
    if unknown:
        raise ExternalModelError(
            f"the model takes inputs the spec {spec.name!r} has no feature for: {', '.join(unknown)} "
            f"(model inputs from {source}: {', '.join(inputs)}; spec features: {', '.join(features)})"
        )
    wrong = []
    for name, kind in inputs.items():
        feature = features[name]
        if feature.type is FeatureType.numeric and kind not in NUMERIC_TYPES:
            wrong.append(f"{name} (spec: numeric, model: {kind})")
        elif feature.type is FeatureType.boolean and kind not in NUMERIC_TYPES | {"boolean"}:
            wrong.append(f"{name} (spec: boolean, model: {kind})")
        elif feature.type is FeatureType.categorical and kind in NUMERIC_TYPES:
            not_numbers = [c for c in feature.categories or [] if not _is_number(c)]
            if not_numbers:
                wrong.append(f"{name} (spec: categorical with {not_numbers[:3]}, model: {kind})")
        elif feature.type is FeatureType.categorical and kind not in NUMERIC_TYPES | {"string"}:
            wrong.append(f"{name} (spec: categorical, model: {kind})")
    if wrong:
        raise ExternalModelError(f"model inputs whose type does not fit the spec's feature: {'; '.join(wrong)}")
    return ModelCheck(flavor, inputs, [n for n in features if n not in inputs], source)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def try_on(spec: ModelSpec, path: Path, check: ModelCheck, features: pd.DataFrame) -> ExternalModel:
    """The wrapped model, loaded, after predicting a few rows of the training data as the router would
    hand them: a model that cannot serve them fails here, before anything is registered."""
    from driftloop.learn.pyfunc import typed_features

    wrapped = ExternalModel(spec, check)
    wrapped.load(str(path))
    sample = typed_features(features.head(200), spec)
    try:
        output = wrapped.predict(None, sample)
    except ExternalModelError:
        raise
    except Exception as exc:
        raise ExternalModelError(f"the model fails on rows of the training data: {type(exc).__name__}: {exc}") from None
    sums = output[wrapped.classes].sum(axis=1).to_numpy()
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ExternalModelError(f"the model's class probabilities do not sum to 1 (e.g. {sums[0]:.4f})")
    return wrapped


# --------------------------------------------------------------------------------------------------
# Registering


def requirements(path: Path, pinned: tuple[str, ...]) -> list[str]:
    """What the wrapped model needs to load: driftloop's model packages at this environment's versions,
    plus the team model's own requirements.txt lines for any other package (xgboost, catboost, ...)."""
    import re

    lines = [f"{name}=={metadata.version(name)}" for name in pinned]
    own = path / "requirements.txt"
    if own.is_file():
        for line in own.read_text().splitlines():
            line = line.strip()
            name = re.split(r"[<>=!~;\[ @]", line, maxsplit=1)[0].lower().replace("_", "-")
            if line and not line.startswith(("#", "-")) and name not in pinned and line not in lines:
                lines.append(line)
    return lines


def log_external_model(
    spec: ModelSpec,
    model_uri: str,
    path: Path,
    wrapped: ExternalModel,
    reference: Any,
    features: pd.DataFrame,
    *,
    digest: str,
    external_version: str | None,
) -> registry.VersionInfo:
    """One MLflow run in ``driftloop/<model>`` (the source URI, its digest, the reference profile, the
    wrapped model) and a registered version, once per model digest."""
    import mlflow

    from driftloop.learn import pyfunc
    from driftloop.learn.retrain import MODEL_REQUIREMENTS

    run_key = f"external/{spec.name}/{digest}"
    existing = registry.version_for_run_key(spec.name, run_key)
    if existing is not None:
        return existing
    registry.client()
    experiment = registry.experiment_id(spec.name)
    tags = {"driftloop.model_name": spec.name, registry.RUN_KEY_TAG: run_key, "driftloop.trigger": "external",
            "driftloop.source_uri": model_uri, **({"driftloop.external_version": external_version} if external_version else {})}  # fmt: skip
    with mlflow.start_run(experiment_id=experiment, run_name=f"{spec.name} external {external_version or digest[:8]}", tags=tags) as run:
        mlflow.log_params({"model_name": spec.name, "source_uri": model_uri, "model_sha256": digest, "flavor": wrapped.flavor,
                           "external_version": external_version or "", "inputs": ",".join(wrapped.inputs)})  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            profile_path = Path(folder) / "reference.bin"
            profile_path.write_bytes(reference.view.serialize())
            mlflow.log_artifact(str(profile_path), "reference")
        mlflow.log_dict(reference.bin_edges, "reference/bin_edges.json")
        mlflow.log_dict(reference.source, "data/data_version.json")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapped,
            artifacts={ARTIFACT: str(path)},
            signature=pyfunc.signature(spec),
            input_example=pyfunc.input_example(features, spec),
            pip_requirements=requirements(path, MODEL_REQUIREMENTS),
        )
    version_tags = {"driftloop.trigger": "external", "driftloop.candidate": f"external:{wrapped.flavor}",
                    "driftloop.source_uri": model_uri, **({"driftloop.external_version": external_version} if external_version else {})}  # fmt: skip
    return registry.register(spec.name, info.model_uri, run.info.run_id, run_key, tags=version_tags)
