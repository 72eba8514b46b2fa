"""Alert rules in the spec (alerts:) and the mart catalog they name (driftloop.core.marts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftloop.core.marts import MARTS
from driftloop.core.settings import PROJECT_DIR
from driftloop.core.spec import AlertRule, SpecError, get_spec, load_spec


def _write(tmp_path: Path, rules: list[dict], **alerts) -> Path:
    payload = yaml.safe_load((PROJECT_DIR / "include" / "specs" / "churn.yaml").read_text())
    payload["alerts"] = {"rules": rules, **alerts}
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def test_the_catalog_names_only_columns_the_dbt_marts_have():
    documented = {}
    for path in (PROJECT_DIR / "dbt_project" / "models" / "marts").glob("*.yml"):
        for model in yaml.safe_load(path.read_text()).get("models", []):
            documented[model["name"]] = {column["name"] for column in model.get("columns", [])}
    for mart in MARTS.values():
        assert mart.name in documented, mart.name
        named = set(mart.columns) | {c for c in (mart.samples, mart.entity) if c}
        assert named <= documented[mart.name], (mart.name, named - documented[mart.name])
        if mart.label_based:
            assert "is_mature" in documented[mart.name]


def test_the_example_spec_ships_the_default_rules_and_routes():
    alerts = get_spec("churn").alerts
    names = {rule.name for rule in alerts.rules}
    assert {"serving_error_rate", "quality_floor", "feature_drift", "prediction_drift", "latency_p95_degradation",
            "no_data"} <= names  # fmt: skip
    assert alerts.routes_for("critical") == ["pagerduty", "slack"] and alerts.routes_for("info") == ["digest"]
    severity = {rule.name: rule.severity for rule in alerts.rules}
    assert severity["serving_error_rate"] == severity["quality_floor"] == "critical"
    assert severity["feature_drift"] == severity["no_data"] == "warning"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"mart": "fct_model_quality", "column": "acuracy", "comparator": "<", "threshold": 0.7, "window_size": "day"},
         "rule 'my_rule': fct_model_quality has no column 'acuracy'"),
        ({"mart": "fct_nothing", "column": "x", "comparator": "<", "threshold": 1, "window_size": "day"},
         "rule 'my_rule': unknown mart 'fct_nothing'"),
        ({"mart": "fct_latency", "column": "error_rate", "comparator": ">", "window_size": "hour"},
         "rule 'my_rule': give exactly one of threshold, relative, ingest_intervals"),
        ({"mart": "fct_latency", "column": "error_rate", "comparator": ">", "threshold": 0.1},
         "rule 'my_rule': fct_latency is windowed: window_size is required"),
        ({"mart": "fct_feature_drift", "column": "is_drifted", "comparator": "==", "threshold": 0.5, "window_size": "day"},
         "rule 'my_rule': is_drifted takes a boolean threshold"),
        ({"mart": "fct_latency", "column": "latency_p95_ms", "comparator": ">", "window_size": "hour",
          "relative": {"baseline": "holdout", "change": 0.5}},
         "rule 'my_rule': a holdout baseline exists for quality metrics only"),
    ],
)  # fmt: skip
def test_a_bad_rule_is_refused_with_its_name_and_what_is_wrong(tmp_path, rule, expected):
    with pytest.raises(SpecError) as error:
        load_spec(_write(tmp_path, [{"name": "my_rule", **rule}]))
    assert expected in str(error.value) and "churn.yaml" in str(error.value)


def test_rule_names_are_unique_and_windows_must_be_the_specs(tmp_path):
    rule = {"name": "dup", "mart": "fct_latency", "column": "error_rate", "comparator": ">", "threshold": 0.1,
            "window_size": "hour"}  # fmt: skip
    with pytest.raises(SpecError, match="repeated: dup"):
        load_spec(_write(tmp_path, [rule, rule]))
    payload = yaml.safe_load(_write(tmp_path, [rule]).read_text())
    payload["windows"]["sizes"] = ["day"]
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(payload))
    with pytest.raises(SpecError, match="alerts.rules 'dup': window_size 'hour' is not one of windows.sizes"):
        load_spec(tmp_path / "churn.yaml")


def test_a_spec_without_rules_gets_the_defaults_and_a_rule_its_own_routes():
    from driftloop.core.spec import Alerts

    assert {rule.name for rule in Alerts().rules} >= {"quality_floor", "no_data"}
    rule = AlertRule(name="x", mart="fct_latency", column="error_rate", comparator=">", threshold=0.1,
                     window_size="hour", severity="warning", routes=["pagerduty"])  # fmt: skip
    assert Alerts().routes_for("warning", rule) == ["pagerduty"] and Alerts().routes_for("warning") == ["slack"]
