"""`driftloop register --mlflow-model`: a model trained elsewhere (real scikit-learn and LightGBM models
saved with MLflow) registered in a real MLflow store, served by the real router, against a real warehouse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest
from external_data import training_file
from typer.testing import CliRunner

from driftloop.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()
REQUESTS = [{"amount": 30.0, "tier": "10", "is_new": True}, {"amount": 900.0, "tier": "0", "is_new": False},
            {"amount": 55.0, "tier": "20", "is_new": None}]  # fmt: skip


def _sklearn_model(frame: pd.DataFrame, folder, columns=("amount", "tier", "is_new")):
    """A pipeline trained on the team's columns as they are (tier as integers), saved with its signature."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    inputs = frame[list(columns)].copy()
    if "is_new" in inputs:
        inputs["is_new"] = inputs["is_new"].astype(float)
    numeric = [c for c in columns if c != "tier"]
    model = make_pipeline(
        ColumnTransformer([("tier", OneHotEncoder(handle_unknown="ignore"), ["tier"]),
                           ("rest", SimpleImputer(), numeric)]),  # fmt: skip
        LogisticRegression(max_iter=500),
    ).fit(inputs, frame["defaulted"])
    path = folder / "sklearn_model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(inputs), pip_requirements=["scikit-learn"],
                             serialization_format="cloudpickle")
    return model, path


def _register(path, url, *extra):
    return runner.invoke(app, ["register", "--model", "external", "--training-data", str(path), "--label-column", "defaulted",
                               "--score-column", "p_default", "--url", url, *extra])  # fmt: skip


def _router(url, tmp_path):
    from driftloop.serve.router import Router

    return Router("external", url, landing_root=tmp_path / "landing")


def test_an_sklearn_model_registered_as_champion_is_served_by_the_router(
    warehouse_url, mlflow_store, tmp_path, external_specs
):
    from driftloop.learn import registry

    # GIVEN a team's pipeline (tier as integers, booleans as numbers) saved with MLflow, and its training data
    path, frame = training_file(tmp_path, rows=3_000)
    model, model_path = _sklearn_model(frame, tmp_path)
    # WHEN it is registered with its team's version name and made champion
    done = _register(path, warehouse_url, "--version", "7", "--mlflow-model", str(model_path), "--champion")
    # THEN it is version 1 of the registered model, champion, with the reference stored for 1 and for 7
    assert done.exit_code == 0, done.output
    assert "registered as MLflow version 1" in done.output and "alias 'champion' -> version 1" in done.output
    champion = registry.version_by_alias("external", registry.CHAMPION)
    assert champion.version == "1" and champion.tags["driftloop.trigger"] == "external"
    assert champion.tags["driftloop.external_version"] == "7"
    with psycopg.connect(warehouse_url) as conn:
        versions = conn.execute(
            "select model_version from profiles.reference_profiles where model_name = 'external' order by 1"
        ).fetchall()
        alias = conn.execute("select model_version from ops.model_aliases where model_name = 'external' and alias = 'champion'").fetchone()
        baselines = conn.execute(
            "select model_version from ops.retrain_runs where model_name = 'external' and trigger = 'external' order by 1"
        ).fetchall()
    assert versions == [("1",), ("7",)] and alias == ("1",) and baselines == [("1",), ("7",)]
    # AND the router serves it by the alias with the team's model's own probabilities
    router = _router(warehouse_url, tmp_path)
    try:
        events = router.predict_batch(REQUESTS, unit_ids=["a", "b", "c"])
    finally:
        router.close()
    expected = model.predict_proba(pd.DataFrame({"amount": [30.0, 900.0, 55.0], "tier": [10, 0, 20], "is_new": [1.0, 0.0, np.nan]}))
    assert [e["error"] for e in events] == [None, None, None]
    assert [e["model_version"] for e in events] == ["1", "1", "1"]
    assert [e["scores"]["1"] for e in events] == pytest.approx(expected[:, 1], abs=1e-6)
    assert [e["prediction"] for e in events] == [str(int(p > 0.5)) for p in expected[:, 1]]


def test_registering_the_same_model_again_adds_no_version(warehouse_url, mlflow_store, tmp_path, external_specs):
    from driftloop.learn import registry

    path, frame = training_file(tmp_path, rows=1_000)
    _, model_path = _sklearn_model(frame, tmp_path)
    first = _register(path, warehouse_url, "--mlflow-model", str(model_path))
    again = _register(path, warehouse_url, "--mlflow-model", str(model_path), "--champion")
    assert first.exit_code == 0 and again.exit_code == 0, again.output
    assert "no alias set" in first.output
    assert "already registered (same model content): nothing new as MLflow version 1" in again.output
    assert [str(v.version) for v in registry.client().search_model_versions("name = 'external'")] == ["1"]
    assert registry.version_by_alias("external", registry.CHAMPION).version == "1"


def test_a_model_whose_inputs_are_not_the_specs_features_is_refused_clearly(
    warehouse_url, mlflow_store, tmp_path, external_specs
):
    from driftloop.learn import registry

    path, frame = training_file(tmp_path, rows=1_000)
    frame["income"] = frame["amount"] * 2
    _, model_path = _sklearn_model(frame, tmp_path, columns=("amount", "tier", "income"))
    done = _register(path, warehouse_url, "--mlflow-model", str(model_path), "--champion")
    assert done.exit_code == 1
    assert "the model takes inputs the spec 'external' has no feature for: income" in done.output
    assert registry.version_by_alias("external", registry.CHAMPION) is None
    with psycopg.connect(warehouse_url) as conn:  # nothing stored for a refused model
        assert conn.execute("select count(*) from profiles.reference_profiles").fetchone() == (0,)


def test_a_lightgbm_model_logged_in_a_run_is_served_from_its_runs_uri(
    warehouse_url, mlflow_store, tmp_path, external_specs
):
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    from driftloop.learn import registry

    # GIVEN a LightGBM classifier (tier as a pandas category) logged in a run of the same tracking store
    path, frame = training_file(tmp_path, rows=3_000)
    inputs = frame[["amount", "tier", "is_new"]].assign(tier=frame["tier"].astype(str).astype("category"))
    model = lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(inputs, frame["defaulted"])
    registry.client()
    with mlflow.start_run() as run:
        mlflow.lightgbm.log_model(model, name="team_model", signature=infer_signature(inputs.assign(tier=inputs["tier"].astype(str))),
                                  pip_requirements=["lightgbm"])  # fmt: skip
    done = _register(path, warehouse_url, "--mlflow-model", f"runs:/{run.info.run_id}/team_model", "--champion")
    assert done.exit_code == 0, done.output
    router = _router(warehouse_url, tmp_path)
    try:
        events = router.predict_batch(REQUESTS[:2])
    finally:
        router.close()
    given = pd.DataFrame({"amount": [30.0, 900.0], "tier": pd.Categorical(["10", "0"], categories=inputs["tier"].cat.categories),
                          "is_new": [True, False]})  # fmt: skip
    assert [e["scores"]["1"] for e in events] == pytest.approx(model.predict_proba(given)[:, 1], abs=1e-6)


class TeamScorer:
    """A team's own pyfunc: the probability of each class, one column per class named by class."""

    def predict(self, context, model_input, params=None):
        p = 1 / (1 + np.exp(-(np.log(model_input["amount"].astype(float)) - 4)))
        return pd.DataFrame({"0": 1 - p, "1": p})


def _pyfunc_model(folder, name, amount_type):
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    class Model(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return TeamScorer().predict(context, model_input)

    path = folder / name
    mlflow.pyfunc.save_model(str(path), python_model=Model(), pip_requirements=["mlflow"],
                             signature=ModelSignature(inputs=Schema([ColSpec(amount_type, "amount")])))  # fmt: skip
    return path


def test_a_plain_pyfunc_is_served_and_a_wrongly_typed_input_is_refused(
    warehouse_url, mlflow_store, tmp_path, external_specs
):
    path, _ = training_file(tmp_path, rows=1_000)
    wrong = _register(path, warehouse_url, "--mlflow-model", str(_pyfunc_model(tmp_path, "as_text", "string")))
    assert wrong.exit_code == 1
    assert "model inputs whose type does not fit the spec's feature: amount (spec: numeric, model: string)" in wrong.output
    done = _register(path, warehouse_url, "--mlflow-model", str(_pyfunc_model(tmp_path, "as_number", "double")), "--champion")
    assert done.exit_code == 0, done.output
    assert "spec features the model does not take (still profiled): tier, is_new" in done.output
    router = _router(warehouse_url, tmp_path)
    try:
        (event,) = router.predict_batch(REQUESTS[:1])
    finally:
        router.close()
    assert event["scores"]["1"] == pytest.approx(1 / (1 + np.exp(-(np.log(30.0) - 4))), abs=1e-6)
    assert event["prediction"] == "0" and event["model_version"] == "1"


def test_register_needs_a_version_or_a_model_and_champion_needs_a_model(warehouse_url, tmp_path, external_specs):
    path, _ = training_file(tmp_path, rows=200)
    neither = _register(path, warehouse_url)
    assert neither.exit_code == 1 and "give the version (--version), or the MLflow model" in neither.output
    champion = _register(path, warehouse_url, "--version", "3", "--champion")
    assert champion.exit_code == 1 and "--champion needs --mlflow-model" in champion.output
