"""Model specs: the example is valid, and a bad spec names the file, the field and what was expected."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from driftloop.core.settings import specs_dir
from driftloop.core.spec import SpecError, Task, load_spec, load_specs, parse_duration


def test_example_spec_is_valid_and_complete():
    spec = load_spec(specs_dir() / "churn.yaml")
    assert spec.task is Task.binary and spec.positive_class == "churn" and spec.negative_class == "stay"
    assert len(spec.features) >= 10
    assert {f.type.value for f in spec.features} == {"numeric", "categorical", "boolean"}
    assert spec.segment.name == "region"
    assert spec.windows.expected_label_delay == timedelta(days=3)
    assert load_specs().keys() >= {"churn"}


def _write(tmp_path, changes, name="churn"):
    raw = yaml.safe_load((specs_dir() / "churn.yaml").read_text())
    for dotted, value in changes.items():
        target = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(leaf) if leaf.isdigit() else leaf]
        else:
            target[int(leaf) if leaf.isdigit() else leaf] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


_DELETE = object()

BAD_SPECS = [
    ({"task": "regression"}, "task: Input should be 'binary_classification' or 'multiclass_classification'"),
    ({"classes": ["stay"]}, "binary_classification needs exactly 2 classes"),
    ({"positive_class": "leave"}, "positive_class 'leave' is not one of classes"),
    # features are named by name, not position
    ({"features.0.type": "text"}, "features.tenure_months.type: Input should be 'numeric', 'categorical' or 'boolean'"),
    ({"features.0.min": 500}, "features.tenure_months: min (500.0) must be <= max (240.0)"),
    ({"features.7.categories": []}, "features.contract_type: categorical features need a non-empty 'categories' list"),
    ({"features.8.categories": ["card", ["nested"]]}, "features.payment_method.categories.1: Input should be a valid string"),
    ({"drift.statistic.numeric": "chi2"}, "drift.statistic.numeric: Input should be 'js', 'psi' or 'ks'"),
    ({"windows.sizes": ["minute"]}, "windows.sizes.0: Input should be 'hour', 'day' or 'week'"),
    ({"features.1.name": "tenure_months"}, "feature names must be unique (repeated: tenure_months)"),
    ({"windows.expected_label_delay": "three days"}, "windows.expected_label_delay: a duration like"),
    ({"windows.min_label_coverage": 1.5}, "windows.min_label_coverage: Input should be less than or equal to 1"),
    ({"ingest.schedul": "@hourly"}, "ingest.schedul: unknown field"),
    ({"label": _DELETE, "task": _DELETE}, "task: required field is missing"),
    ({"promotion.online.metric": "revenue"},
     "promotion.online.metric: Input should be 'accuracy', 'outcome_rate' or 'outcome_mean'"),
    ({"promotion.online.metric": "outcome_mean", "promotion.online.mixing_sd": _DELETE},
     "metric outcome_mean needs mixing_sd in the outcome's units"),
]


@pytest.mark.parametrize(("changes", "expected"), BAD_SPECS, ids=[e for _, e in BAD_SPECS])
def test_bad_spec_names_file_field_and_expectation(tmp_path, changes, expected):
    path = _write(tmp_path, changes)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message


def test_integer_categories_are_taken_as_their_strings(tmp_path):
    path = _write(tmp_path, {"features.9.categories": [0, 10, 20]})
    assert load_spec(path).feature("plan").categories == ["0", "10", "20"]


def test_name_must_match_file(tmp_path):
    path = _write(tmp_path, {}, name="fraud")
    with pytest.raises(SpecError, match="name: expected the file name 'fraud'"):
        load_spec(path)


def test_not_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("2h", 7200), ("3d", 259200), ("1w", 604800), (30, 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("online", "metric"), [({}, "accuracy"), ({"metric": "outcome_rate"}, "outcome_rate"),
                                                ({"metric": "outcome_mean", "mixing_sd": 1.0}, "outcome_mean")])
def test_the_primary_metric_of_the_online_experiment(tmp_path, online, metric):
    # GIVEN the example spec with promotion.online.metric set (or not) WHEN loading it
    spec = load_spec(_write(tmp_path, {f"promotion.online.{key}": value for key, value in online.items()}))

    # THEN the metric is the one written, accuracy by default, and the decision's policy uses it
    from driftloop.promote.decision import Policy

    assert spec.promotion.online.metric == metric and Policy.from_spec(spec.promotion.online).metric == metric
