"""Training pieces without services: the split, the feature encoding, the metrics, the candidates,
the retraining spec block and the sensor's gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from driftloop.core.spec import ModelSpec, SpecError, get_spec, load_spec
from driftloop.learn import data as data_module
from driftloop.learn import training
from driftloop.learn.retrain import decide_gate
from driftloop.sim import examples

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    payload = get_spec("churn").model_dump(mode="json")
    payload["retraining"]["training"].update({"lightgbm_max_rounds": 40, "early_stopping_rounds": 5,
                                              "permutation_rows": 500, "min_rows": 100})  # fmt: skip
    return ModelSpec.model_validate(payload)


@pytest.fixture(scope="module")
def data(spec) -> data_module.TrainingData:
    return examples.simulated_training_data(spec, 3000, T0, T0 + timedelta(days=3), seed=5)


@pytest.fixture(scope="module")
def outcome(spec, data) -> training.TrainingOutcome:
    return training.train_candidates(spec, data)


# ------------------------------------------------------------------------------------------------
# the split


def test_time_split_keeps_equal_timestamps_together_and_the_holdout_newest():
    # GIVEN 100 rows on 10 distinct timestamps (10 rows each)
    stamps = [T0 + timedelta(minutes=i // 10) for i in range(100)]
    frame = pd.DataFrame({"prediction_id": [f"p{i:03d}" for i in range(100)], "request_ts": pd.to_datetime(stamps)})
    # WHEN it is split 70 / 15 / 15 (cuts at rows 70 and 85 fall inside a timestamp's rows)
    split = data_module.time_split(frame.sample(frac=1, random_state=1), validation_fraction=0.15, holdout_fraction=0.15)
    # THEN the cuts move back to the first row of their timestamp, and every part is strictly newer
    assert (len(split.train), len(split.validation), len(split.holdout)) == (70, 10, 20)
    assert split.train["request_ts"].max() < split.validation["request_ts"].min()
    assert split.validation["request_ts"].max() < split.holdout["request_ts"].min()
    assert sorted(pd.concat([split.train, split.validation, split.holdout])["prediction_id"]) == sorted(frame["prediction_id"])


# ------------------------------------------------------------------------------------------------
# features and labels


def test_feature_frame_types_contract_values(spec):
    raw = pd.DataFrame({
        "tenure_months": [3, None], "monthly_charges": ["12.5", 7], "contract_type": ["annual", "weekly"],
        "has_partner": ["true", None], "plan": [None, "basic"],
    })  # fmt: skip
    frame = training.feature_frame(raw, spec)
    assert list(frame.columns) == [f.name for f in spec.features]  # absent features come as all-null columns
    assert frame["tenure_months"].tolist()[0] == 3.0 and np.isnan(frame["tenure_months"].tolist()[1])
    assert frame["monthly_charges"].tolist() == [12.5, 7.0]
    assert frame["contract_type"].tolist()[0] == "annual" and pd.isna(frame["contract_type"].tolist()[1])  # unknown
    assert list(frame["contract_type"].cat.categories) == ["monthly", "annual", "two_year"]
    assert frame["has_partner"].tolist()[0] == 1.0 and np.isnan(frame["has_partner"].tolist()[1])
    assert frame["age"].isna().all()


def test_labels_outside_the_classes_are_an_error(spec):
    assert training.encode_labels(["stay", "churn", "churn"], spec).tolist() == [0, 1, 1]
    with pytest.raises(training.TrainingError, match="maybe"):
        training.encode_labels(["stay", "maybe"], spec)


# ------------------------------------------------------------------------------------------------
# candidates


def test_candidates_train_and_the_best_on_validation_wins(spec, data, outcome):
    trained = {c.kind: c for c in outcome.candidates}
    assert trained["lightgbm_warm_start"].model is None and "no LightGBM champion" in trained["lightgbm_warm_start"].skipped
    assert trained["lightgbm"].model is not None and trained["logistic_regression"].model is not None
    best = max((c for c in outcome.candidates if c.model), key=lambda c: c.validation["roc_auc"])
    assert outcome.best.kind == best.kind
    assert 0.6 < outcome.best.holdout["roc_auc"] <= 1.0  # the simulated world is learnable
    gain = outcome.importance["gain"]
    assert set(gain) == {f.name for f in spec.features} and sum(gain.values()) == pytest.approx(1.0)
    assert len(outcome.data_hash) == 64 and outcome.data_hash == data.content_hash(spec)


def test_a_warm_start_continues_the_champions_booster(spec, data, outcome):
    champion = next(c.model for c in outcome.candidates if c.kind == "lightgbm")
    again = training.train_candidates(spec, data, champion=champion)
    warm = next(c for c in again.candidates if c.kind == "lightgbm_warm_start")
    assert warm.model is not None and warm.model.booster.num_trees() > champion.booster.num_trees()


def test_probabilities_follow_the_spec_class_order_whatever_the_estimator_learnt(spec, data, outcome):
    model = outcome.best.model
    features = data.frame[[f.name for f in spec.features]].head(50)
    frame = model.predict_frame(features)
    assert list(frame.columns) == ["prediction", "stay", "churn"]
    np.testing.assert_allclose(frame[["stay", "churn"]].sum(axis=1), 1.0)
    assert (frame["prediction"] == np.where(frame["churn"] > frame["stay"], "churn", "stay")).all()


def test_the_champions_original_rows_can_be_mixed_into_training(spec, data):
    payload = spec.model_dump(mode="json")
    payload["retraining"]["training"].update({"original_data_fraction": 0.5, "candidates": ["logistic_regression"]})
    mixing = ModelSpec.model_validate(payload)
    original = examples.simulated_training_data(spec, 5000, T0 - timedelta(days=9), T0 - timedelta(days=2), seed=9).frame
    outcome = training.train_candidates(mixing, data, original=original)
    assert outcome.n_original == round(len(outcome.split.train) * 0.5)
    # the mixed rows only train: validation and holdout stay the newest warehouse rows
    assert outcome.split.validation["request_ts"].min() >= T0
    assert training.train_candidates(spec, data, original=original).n_original == 0  # fraction 0: not mixed


def test_too_few_rows_or_one_class_cannot_train(spec, data):
    with pytest.raises(training.TrainingError, match="at least 100"):
        training.train_candidates(spec, data_module.TrainingData(data.frame.head(50), "test"))
    one_class = data.frame.assign(label="stay")
    with pytest.raises(training.TrainingError, match="single class"):
        training.train_candidates(spec, data_module.TrainingData(one_class, "test"))


# ------------------------------------------------------------------------------------------------
# the spec block


def test_retraining_defaults_and_durations():
    spec = get_spec("churn")
    assert spec.retraining.cooldown == timedelta(hours=12)
    assert spec.retraining.triggers.volume.min_new_labels == 500
    assert spec.retraining.triggers.degradation.metric == "precision"
    # the warehouse stores the spec as JSON (ISO 8601 durations); it reads back the same
    assert ModelSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_a_multiclass_model_cannot_use_a_binary_only_degradation_metric(tmp_path):
    path = tmp_path / "tiers.yaml"
    path.write_text(
        "name: tiers\ntask: multiclass_classification\nclasses: [a, b, c]\n"
        "features: [{name: x, type: numeric}]\n"
        "retraining: {triggers: {degradation: {metric: precision}}}\n"
    )
    with pytest.raises(SpecError, match="retraining.*binary models only"):
        load_spec(path)


# ------------------------------------------------------------------------------------------------
# the gate


def _signal(**overrides):
    return {"should_retrain": True, "primary_trigger": "volume", "reason": "812 new labels", "as_of": T0, **overrides}


def test_the_gate_fires_on_a_fresh_signal_and_carries_its_evidence():
    gate = decide_gate(_signal(), last_started_at=T0 - timedelta(days=2))
    assert gate.fire and gate.trigger == "volume" and gate.reason == "812 new labels"
    assert gate.evidence["as_of"] == T0


def test_the_gate_waits_when_nothing_fires_or_the_signal_predates_the_last_training():
    assert not decide_gate(_signal(should_retrain=False, reason="cooling down")).fire
    assert not decide_gate(None).fire
    stale = decide_gate(_signal(), last_started_at=T0 + timedelta(minutes=1))
    assert not stale.fire and "predate" in stale.reason


def test_a_manual_reason_opens_the_gate_whatever_the_signals():
    gate = decide_gate(_signal(should_retrain=False), manual_reason="  new features shipped ")
    assert gate.fire and gate.trigger == "manual" and gate.reason == "new features shipped"
    assert not decide_gate(_signal(should_retrain=False), manual_reason="   ").fire
