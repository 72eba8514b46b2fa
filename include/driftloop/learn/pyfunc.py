"""The MLflow pyfunc every driftloop model is logged as: contract features in, the prediction and one
probability per class out. Serving (``models:/<name>@champion``) and the promotion gate load it."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from driftloop.core.spec import FeatureType, ModelSpec
from driftloop.learn.training import TrainedModel


class DriftloopModel(mlflow.pyfunc.PythonModel):
    def __init__(self, model: TrainedModel):
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.model.predict_frame(pd.DataFrame(model_input))

    def unwrap_python_model(self) -> TrainedModel:
        return self.model


def signature(spec: ModelSpec):
    """Inputs: one column per feature (optional features may be missing or null); outputs: the predicted
    class and a probability per class."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    kinds = {FeatureType.numeric: "double", FeatureType.categorical: "string", FeatureType.boolean: "boolean"}
    inputs = Schema([ColSpec(kinds[f.type], f.name, required=f.required) for f in spec.features])
    outputs = Schema([ColSpec("string", "prediction"), *[ColSpec("double", str(c)) for c in spec.classes]])
    return ModelSignature(inputs=inputs, outputs=outputs)


def typed_features(features: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """One column per feature (a missing one all null), in the dtypes the signature declares: numbers as
    float64, categories and booleans as plain objects with None for missing. pandas' category or nullable
    dtypes would fail MLflow's schema enforcement."""
    typed = features.reindex(columns=[f.name for f in spec.features])
    for feature in spec.features:
        column = typed[feature.name]
        if feature.type is FeatureType.numeric:
            typed[feature.name] = pd.to_numeric(column, errors="coerce").astype("float64")
        else:
            typed[feature.name] = column.astype(object).where(column.notna(), None)
    return typed


def input_example(features: pd.DataFrame, spec: ModelSpec, rows: int = 5) -> pd.DataFrame:
    """A few rows of contract features with the dtypes the signature declares."""
    return typed_features(features.head(rows), spec)
