"""Unit tests of the simulator (driftloop.sim.world): files, contracts, statistics, faults. No services."""

from __future__ import annotations

import gzip
import re
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from driftloop.core.contracts import FEEDBACK_FIELDS, PREDICTION_FIELDS, FeedbackEvent, PredictionEvent
from driftloop.core.settings import INCLUDE_DIR
from driftloop.core.spec import FeatureType, ModelSpec, get_spec
from driftloop.sim.faults import (
    FAULT_FILE_CASES,
    FAULT_LINE_CASES,
    land_awaiting_prediction,
    write_fault_files,
)
from driftloop.sim.world import (
    FEATURE_PREFIX,
    SCORE_PREFIX,
    ConceptDrift,
    CovariateShift,
    Scenario,
    feedback_lines,
    generate_predictions,
    prediction_lines,
    simulate,
)

T0 = datetime(2024, 5, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
PREDICTION_KEYS = [f.name for f in PREDICTION_FIELDS]
FEEDBACK_KEYS = [f.name for f in FEEDBACK_FIELDS]
FILE_NAME = re.compile(r"^(predictions|feedback)-(\d{8}T\d{2})-[0-9a-f]{12}\.jsonl\.gz$")

MULTICLASS = ModelSpec.model_validate(
    {
        "name": "intent",
        "task": "multiclass_classification",
        "classes": ["browse", "buy", "churn", "support"],
        "features": [
            {"name": "visits", "type": "numeric", "min": 0, "max": 500},
            {"name": "basket_value", "type": "numeric", "required": False, "min": 0},
            {"name": "temperature", "type": "numeric"},
            {"name": "balance", "type": "numeric", "max": 0},
            {"name": "score", "type": "numeric", "min": -1, "max": 1},
            {"name": "channel", "type": "categorical", "categories": ["web", "app", "store"]},
            {"name": "is_member", "type": "boolean", "required": False},
        ],
        "segment": {"name": "platform"},
    }
)


@pytest.fixture(scope="module")
def churn() -> ModelSpec:
    return get_spec("churn", INCLUDE_DIR / "specs")


# -- helpers ---------------------------------------------------------------------------------------


def read_lines(path: str | Path) -> list[bytes]:
    data = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        data = gzip.decompress(data)
    return data.splitlines()


def landed(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones included), relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def events(paths: list[str]) -> list[dict]:
    return [orjson.loads(line) for path in paths for line in read_lines(path)]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- determinism and layout ------------------------------------------------------------------------


def test_same_seed_writes_byte_identical_files(tmp_path: Path, churn: ModelSpec) -> None:
    scenario = Scenario(rows_per_hour=50, seed=7)
    for folder in ("a", "b"):
        simulate(churn, tmp_path / folder, T0, T0 + 6 * HOUR, scenario, now=T0 + 30 * HOUR)
    first, second = landed(tmp_path / "a"), landed(tmp_path / "b")
    assert first and first == second

    simulate(churn, tmp_path / "c", T0, T0 + 6 * HOUR, Scenario(rows_per_hour=50, seed=8), now=T0 + 30 * HOUR)
    assert set(landed(tmp_path / "c")).isdisjoint(first)


def test_one_predictions_file_per_hour_in_the_right_day_folder(tmp_path: Path, churn: ModelSpec) -> None:
    start, hours, rows = T0 + 20 * HOUR, 8, 30  # crosses midnight
    result = simulate(churn, tmp_path, start, start + hours * HOUR, Scenario(rows_per_hour=rows))
    assert result.predictions == hours * rows
    assert len(result.prediction_files) == hours
    for i, path in enumerate(sorted(result.prediction_files)):
        hour = start + i * HOUR
        match = FILE_NAME.match(Path(path).name)
        assert match and match.group(1) == "predictions" and match.group(2) == hour.strftime("%Y%m%dT%H")
        assert Path(path).parent.name == f"dt={hour:%Y-%m-%d}"
        assert Path(path).parent.parent == tmp_path / churn.name / "predictions"
        stamps = [ts(e["request_ts"]) for e in events([path])]
        assert len(stamps) == rows and stamps == sorted(stamps)
        assert all(hour <= t < hour + HOUR for t in stamps)


def test_simulated_hours_are_generate_predictions_of_that_hour(tmp_path: Path, churn: ModelSpec) -> None:
    scenario = Scenario(rows_per_hour=40, seed=3)
    result = simulate(churn, tmp_path, T0, T0 + 3 * HOUR, scenario)
    for i, path in enumerate(sorted(result.prediction_files)):
        frame = generate_predictions(churn, 40, T0 + i * HOUR, T0 + (i + 1) * HOUR, scenario)
        assert gzip.decompress(Path(path).read_bytes()) == prediction_lines(frame)


def test_writes_are_atomic_and_landed_files_are_never_rewritten(tmp_path: Path, churn: ModelSpec) -> None:
    scenario = Scenario(rows_per_hour=20)
    first = simulate(churn, tmp_path, T0, T0 + 4 * HOUR, scenario, now=T0 + 10 * HOUR)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.gz")}

    again = simulate(churn, tmp_path, T0, T0 + 4 * HOUR, scenario, now=T0 + 10 * HOUR)
    assert again.files == []
    assert sorted(again.skipped_files) == sorted(first.files)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.gz")} == stamps


# -- contracts -------------------------------------------------------------------------------------


def check_prediction(event: dict, spec: ModelSpec) -> PredictionEvent:
    assert list(event) == PREDICTION_KEYS  # exactly the contract's fields, in order
    parsed = PredictionEvent.model_validate(event)
    assert parsed.check_against(spec) == []
    assert event["request_ts"].endswith("+00:00")
    assert list(event["features"]) == [f.name for f in spec.features]
    scores = event["scores"]
    assert list(scores) == [str(c) for c in spec.classes]
    assert abs(sum(scores.values()) - 1.0) <= 1e-6
    assert all(0.0 <= v <= 1.0 and round(v, 6) == v for v in scores.values())
    if spec.positive_class is not None:
        positive = str(spec.positive_class)
        assert (event["prediction"] == positive) == (scores[positive] >= 0.5)
    else:
        assert event["prediction"] == max(scores, key=scores.get)
    return parsed


def test_every_event_passes_the_contract_and_the_spec(tmp_path: Path, churn: ModelSpec) -> None:
    result = simulate(churn, tmp_path, T0, T0 + 48 * HOUR, Scenario(rows_per_hour=40), now=T0 + 60 * HOUR)
    predictions = events(result.prediction_files)
    assert len(predictions) == result.predictions == 48 * 40
    for event in predictions:
        check_prediction(event, churn)
        assert event["model_name"] == "churn" and event["model_version"] == "1"
        assert event["variant"] == "control" and event["segment"] in churn.segment.values
        assert re.fullmatch(r"u-\d+", event["unit_id"])
    ids = [e["prediction_id"] for e in predictions]
    assert len(set(ids)) == len(ids)
    assert len({e["unit_id"] for e in predictions}) < len(predictions)  # units come back

    feedback = events(result.feedback_files)
    assert len(feedback) == result.feedback > 0
    for event in feedback:
        assert list(event) == FEEDBACK_KEYS
        parsed = FeedbackEvent.model_validate(event)
        assert parsed.label in churn.classes and parsed.model_name == "churn"
        assert parsed.outcome in (0.0, 1.0) and parsed.source == "explicit"
        assert event["feedback_ts"].endswith("+00:00")
    assert {e["prediction_id"] for e in feedback} <= set(ids)
    assert len({e["prediction_id"] for e in feedback}) == len(feedback)


def test_generated_columns_respect_the_spec(churn: ModelSpec) -> None:
    frame = generate_predictions(churn, 50_000, T0, T0 + 24 * HOUR)
    assert frame["request_ts"].is_monotonic_increasing
    assert frame["request_ts"].between(T0, T0 + 24 * HOUR, inclusive="left").all()
    for feature in churn.features:
        column = frame[FEATURE_PREFIX + feature.name]
        null_share = column.isna().mean()
        assert null_share == 0 if feature.required else 0.01 < null_share < 0.035
        if feature.type is FeatureType.numeric:
            assert column.min() >= feature.min and column.max() <= feature.max
            assert column.nunique() > 100
        elif feature.type is FeatureType.categorical:
            assert set(column.dropna().astype(str)) == set(feature.categories)
        else:
            assert 0.05 < column.mean() < 0.95
    assert 10 < frame["latency_ms"].median() < 14 and (frame["latency_ms"] >= 0).all()
    assert 0.1 < (frame["label"] == "churn").mean() < 0.5
    auc = roc_auc_score(frame["label"] == "churn", frame["scores.churn"])
    assert 0.74 < auc < 0.88  # good, not perfect


# -- labels ----------------------------------------------------------------------------------------


def test_label_rate_and_delay_are_as_configured(tmp_path: Path, churn: ModelSpec) -> None:
    scenario = Scenario(rows_per_hour=400, label_rate=0.6, label_delay_mean=timedelta(hours=3))
    result = simulate(churn, tmp_path, T0, T0 + 24 * HOUR, scenario, now=T0 + 30 * 24 * HOUR)
    assert result.pending_feedback == 0
    assert 0.55 < result.labelled_share < 0.65  # sd ~0.005
    requested = {e["prediction_id"]: ts(e["request_ts"]) for e in events(result.prediction_files)}
    delays = [
        (ts(e["feedback_ts"]) - requested[e["prediction_id"]]) / HOUR for e in events(result.feedback_files)
    ]
    assert 2.5 < np.mean(delays) < 3.5  # exponential, mean 3 h; sd of the mean ~0.04 h
    assert 1.7 < np.median(delays) < 2.5  # median of an exponential: mean * ln 2 = 2.08 h


def test_feedback_is_never_before_its_prediction_nor_after_now(tmp_path: Path, churn: ModelSpec) -> None:
    scenario = Scenario(rows_per_hour=100, label_delay_mean="4h")
    now = T0 + 14 * HOUR + timedelta(minutes=30)
    result = simulate(churn, tmp_path, T0, T0 + 12 * HOUR, scenario, now=now)
    requested = {e["prediction_id"]: ts(e["request_ts"]) for e in events(result.prediction_files)}
    for path in result.feedback_files:
        hour = datetime.strptime(FILE_NAME.match(Path(path).name).group(2), "%Y%m%dT%H").replace(tzinfo=UTC)
        assert Path(path).parent.name == f"dt={hour:%Y-%m-%d}"
        for event in events([path]):
            at = ts(event["feedback_ts"])
            assert requested[event["prediction_id"]] <= at <= now
            assert hour <= at < hour + HOUR
    assert result.pending_feedback > 0  # labels that have not arrived yet exist and were held back

    frames = [
        generate_predictions(churn, 100, T0 + i * HOUR, T0 + (i + 1) * HOUR, scenario) for i in range(12)
    ]
    truth = pd.concat(frames)
    assert result.feedback + result.pending_feedback == truth["labelled"].sum()
    assert result.feedback == (truth["feedback_ts"] <= now).sum()


def test_a_run_continued_tick_by_tick_lands_what_one_call_lands(tmp_path: Path, churn: ModelSpec) -> None:
    scenario = Scenario(rows_per_hour=60, label_delay_mean="3h")
    whole = simulate(churn, tmp_path / "one", T0, T0 + 10 * HOUR, scenario, now=T0 + 10 * HOUR)

    first_now = T0 + 6 * HOUR + timedelta(minutes=30)  # the clock stops mid-hour
    first = simulate(churn, tmp_path / "ticks", T0, T0 + 6 * HOUR, scenario, now=first_now)
    second = simulate(
        churn,
        tmp_path / "ticks",
        T0 + 6 * HOUR,
        T0 + 10 * HOUR,
        scenario,
        now=T0 + 10 * HOUR,
        history_start=T0,
        feedback_since=first_now,
    )
    assert second.skipped_files == []
    ticks = first.prediction_files + second.prediction_files
    assert sorted(Path(p).name for p in ticks) == sorted(Path(p).name for p in whole.prediction_files)
    one_ids = Counter(e["prediction_id"] for e in events(whole.feedback_files))
    tick_ids = Counter(e["prediction_id"] for e in events(first.feedback_files + second.feedback_files))
    assert tick_ids == one_ids and max(tick_ids.values()) == 1


# -- scenario hooks --------------------------------------------------------------------------------


def test_covariate_shift_moves_the_shifted_feature_and_nothing_else(churn: ModelSpec) -> None:
    start, end, shift_at = T0, T0 + 10 * HOUR, T0 + 5 * HOUR
    base = generate_predictions(churn, 20_000, start, end)
    shifts = [
        CovariateShift(shift_at, "age", 1.0),  # a normal feature: its mean moves by one std
        (shift_at, "contract_type", {"monthly": 4.0}),  # tuples work too
        CovariateShift(shift_at, "has_partner", 2.0),
    ]
    shifted = generate_predictions(churn, 20_000, start, end, Scenario(covariate_shift=shifts))
    after = (base["request_ts"] >= shift_at).to_numpy()
    moved = {FEATURE_PREFIX + name for name in ("age", "contract_type", "has_partner")}
    for column in base.columns:
        if column.startswith(FEATURE_PREFIX) and column not in moved or column in ("request_ts", "segment"):
            pd.testing.assert_series_equal(base[column], shifted[column])
        if column in moved:
            pd.testing.assert_series_equal(base[column][~after], shifted[column][~after])

    age_before, age_after = base["features.age"][after], shifted["features.age"][after]
    assert 0.9 < (age_after.mean() - age_before.mean()) / age_before.std() < 1.1
    monthly = [(frame["features.contract_type"][after] == "monthly").mean() for frame in (base, shifted)]
    assert monthly[1] > monthly[0] + 0.1
    partner = [frame["features.has_partner"][after].mean() for frame in (base, shifted)]
    assert partner[1] > partner[0] + 0.1


def test_covariate_shift_of_an_unknown_feature_or_category_is_refused(churn: ModelSpec) -> None:
    with pytest.raises(ValueError, match="not a feature"):
        generate_predictions(churn, 10, T0, T0 + HOUR, Scenario(covariate_shift=[(T0, "nope", 1.0)]))
    with pytest.raises(ValueError, match="unknown categories"):
        generate_predictions(
            churn, 10, T0, T0 + HOUR, Scenario(covariate_shift=[(T0, "plan", {"gold": 2.0})])
        )
    with pytest.raises(ValueError, match="needs a number"):
        generate_predictions(churn, 10, T0, T0 + HOUR, Scenario(covariate_shift=[(T0, "age", {"x": 2.0})]))


def test_concept_drift_degrades_the_serving_model(churn: ModelSpec) -> None:
    drift_at = T0 + 24 * HOUR
    steady = generate_predictions(churn, 40_000, T0, T0 + 48 * HOUR)
    drifted = generate_predictions(
        churn, 40_000, T0, T0 + 48 * HOUR, Scenario(concept_drift=ConceptDrift(drift_at, 1.0))
    )
    after = (drifted["request_ts"] >= drift_at).to_numpy()
    for column in steady.columns:  # the inputs and the model's answers do not change; the truth does
        if column.startswith((FEATURE_PREFIX, SCORE_PREFIX)) or column == "prediction":
            pd.testing.assert_series_equal(steady[column], drifted[column])

    def auc(frame: pd.DataFrame, rows: np.ndarray) -> float:
        return roc_auc_score(frame["label"][rows] == "churn", frame["scores.churn"][rows])

    assert 0.74 < auc(drifted, ~after) < 0.88
    assert auc(drifted, after) < 0.6
    assert auc(steady, after) > 0.74

    halfway = Scenario(concept_drift=(drift_at, 0.5))
    partly = generate_predictions(churn, 40_000, T0, T0 + 48 * HOUR, halfway)
    assert auc(drifted, after) + 0.05 < auc(partly, after) < auc(steady, after) - 0.03


def test_scenario_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Scenario(label_rate=1.5)
    with pytest.raises(ValueError):
        Scenario(concept_drift=(T0, 2.0))
    with pytest.raises(ValueError):
        Scenario(covariate_shift=[(datetime(2024, 5, 1), "age", 1.0)])  # naive timestamp
    assert Scenario(label_delay_mean="90m").label_delay_mean == timedelta(minutes=90)


def test_simulate_rejects_bad_windows(tmp_path: Path, churn: ModelSpec) -> None:
    with pytest.raises(ValueError, match="whole hours"):
        simulate(churn, tmp_path, T0 + timedelta(minutes=5), T0 + HOUR)
    with pytest.raises(ValueError, match="timezone-aware"):
        simulate(churn, tmp_path, datetime(2024, 5, 1), datetime(2024, 5, 1, 1))
    with pytest.raises(ValueError, match="now must not be before end"):
        simulate(churn, tmp_path, T0, T0 + 2 * HOUR, now=T0 + HOUR)
    assert not list(tmp_path.iterdir())


# -- other specs -----------------------------------------------------------------------------------


def test_multiclass_spec(tmp_path: Path) -> None:
    result = simulate(MULTICLASS, tmp_path, T0, T0 + 4 * HOUR, Scenario(rows_per_hour=60), now=T0 + 48 * HOUR)
    predictions = events(result.prediction_files)
    assert len(predictions) == 240
    for event in predictions:
        check_prediction(event, MULTICLASS)
        assert event["segment"] in {"platform_1", "platform_2", "platform_3"}
        features = event["features"]
        assert 0 <= features["visits"] <= 500 and features["balance"] <= 0 and -1 <= features["score"] <= 1
        assert features["basket_value"] is None or features["basket_value"] >= 0
    for event in events(result.feedback_files):
        assert FeedbackEvent.model_validate(event).label in MULTICLASS.classes

    frame = generate_predictions(MULTICLASS, 20_000, T0, T0 + 10 * HOUR)
    scores = frame[[SCORE_PREFIX + c for c in MULTICLASS.classes]].to_numpy()
    assert np.abs(scores.sum(axis=1) - 1).max() <= 1e-6
    accuracy = (frame["prediction"].astype(str) == frame["label"].astype(str)).mean()
    assert accuracy > frame["label"].value_counts(normalize=True).max() + 0.1


def wide_spec(n_numeric: int = 12, n_categorical: int = 5, n_boolean: int = 3) -> ModelSpec:
    bounds = [
        {},
        {"min": 0},
        {"max": 10},
        {"min": 0, "max": 1},
        {"min": -50, "max": 50},
        {"min": 0, "max": 1e6},
    ]
    features = [
        {"name": f"num_{i}", "type": "numeric", "required": i % 3 != 0, **bounds[i % len(bounds)]}
        for i in range(n_numeric)
    ]
    features += [
        {"name": f"cat_{i}", "type": "categorical", "categories": [f"c{j}" for j in range(2 + i)]}
        for i in range(n_categorical)
    ]
    features += [{"name": f"flag_{i}", "type": "boolean", "required": False} for i in range(n_boolean)]
    return ModelSpec.model_validate(
        {
            "name": "wide",
            "task": "binary_classification",
            "classes": [0, 1],
            "positive_class": 1,
            "features": features,
        }
    )


def test_any_spec_works_in_memory_and_round_trips_through_the_contract() -> None:
    spec = wide_spec()
    frame = generate_predictions(spec, 5_000, T0, T0 + 2 * HOUR)
    pd.testing.assert_frame_equal(frame, generate_predictions(spec, 5_000, T0, T0 + 2 * HOUR))
    assert [c for c in frame.columns if c.startswith(FEATURE_PREFIX)] == [
        FEATURE_PREFIX + f.name for f in spec.features
    ]
    lines = prediction_lines(frame).splitlines()
    assert len(lines) == 5_000
    for line in lines[:500]:
        event = orjson.loads(line)
        check_prediction(event, spec)
        assert event["segment"] is None and event["prediction"] in ("0", "1")
    feedback = feedback_lines(frame).splitlines()
    assert len(feedback) == frame["labelled"].sum()
    for line in feedback[:200]:
        FeedbackEvent.model_validate_json(line)


# -- the fault catalogue ---------------------------------------------------------------------------


def test_fault_files_hold_exactly_the_catalogue(tmp_path: Path, churn: ModelSpec) -> None:
    day, now = "2024-05-01", T0 + 20 * HOUR
    cases = write_fault_files(churn, tmp_path, day, now)
    assert set(cases) == set(FAULT_LINE_CASES[1:]) | set(FAULT_FILE_CASES) | {"awaiting_prediction_id"}
    (awaiting,) = cases.pop("awaiting_prediction_id")
    written = {str(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {path for paths in cases.values() for path in paths}  # nothing else, no temp files
    for path in written:
        assert Path(path).parent.name == f"dt={day}"
        data = Path(path).read_bytes()
        assert path.endswith(".gz") or data == b"" or data.endswith(b"\n")  # no half-written last lines

    # The lines file: line 1 is valid, every other line breaks exactly one rule.
    (mixed,) = {p for name in FAULT_LINE_CASES[1:] for p in cases[name]}
    raw = read_lines(mixed)
    assert len(raw) == len(FAULT_LINE_CASES)
    lines = dict(zip(FAULT_LINE_CASES, raw, strict=True))
    good = orjson.loads(lines["good"])
    check_prediction(good, churn)

    def differs_only_in(case: str, *fields: str) -> dict:
        event = orjson.loads(lines[case])
        assert event["prediction_id"] == f"fault-{case}-{day}"
        changed = {k for k in set(event) | set(good) if event.get(k, "absent") != good.get(k, "absent")}
        assert changed == {"prediction_id", *fields}
        return event

    def invalid(event: dict, field: str) -> None:
        with pytest.raises(ValidationError) as info:
            PredictionEvent.model_validate(event)
        assert [e["loc"][0] for e in info.value.errors()] == [field]

    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(lines["malformed_json"])
    invalid(differs_only_in("missing_model_version", "model_version"), "model_version")
    wrong = PredictionEvent.model_validate(differs_only_in("wrong_type", "features"))
    assert wrong.features["tenure_months"] == "twelve"
    assert wrong.check_against(churn) == ["feature 'tenure_months' must be a number"]
    invalid(differs_only_in("probability_out_of_range", "scores"), "scores")
    assert sum(orjson.loads(lines["probability_out_of_range"])["scores"].values()) == pytest.approx(1.0)
    invalid(differs_only_in("scores_not_summing_to_one", "scores"), "scores")
    unknown = PredictionEvent.model_validate(differs_only_in("unknown_category", "features"))
    assert unknown.features["contract_type"] == "no_such_category"
    assert len(unknown.check_against(churn)) == 1
    assert lines["duplicate_id_in_file"] == lines["good"]
    future = PredictionEvent.model_validate(differs_only_in("request_ts_in_future", "request_ts"))
    assert future.request_ts == now + timedelta(days=1)
    invalid(differs_only_in("request_ts_without_offset", "request_ts"), "request_ts")
    invalid(differs_only_in("negative_latency", "latency_ms"), "latency_ms")

    (across,) = cases["duplicate_id_across_files"]
    fresh, repeat = (orjson.loads(line) for line in read_lines(across))
    for event in (fresh, repeat):
        check_prediction(event, churn)
    assert repeat["prediction_id"] == good["prediction_id"] and repeat != good
    assert fresh["prediction_id"] not in {orjson.loads(line).get("prediction_id") for line in raw[2:]}

    once, twice = cases["same_content_twice"]
    assert once != twice and Path(once).read_bytes() == Path(twice).read_bytes()
    assert len([check_prediction(orjson.loads(line), churn) for line in read_lines(once)]) == 3

    (truncated,) = cases["truncated_gzip"]
    with pytest.raises((EOFError, gzip.BadGzipFile, zlib.error)):
        gzip.decompress(Path(truncated).read_bytes())
    (empty,) = cases["empty_file"]
    assert Path(empty).stat().st_size == 0

    # Feedback: one label whose prediction is in no file yet, one for a model that does not exist.
    assert cases["feedback_before_prediction"] == cases["feedback_unknown_model"]
    early, foreign = (
        FeedbackEvent.model_validate_json(line) for line in read_lines(cases["feedback_unknown_model"][0])
    )
    assert early.prediction_id == awaiting and early.model_name == "churn"
    predicted = {
        orjson.loads(line)["prediction_id"]
        for path in (tmp_path / "churn" / "predictions").rglob("*.jsonl*")
        if path not in (Path(truncated),)
        for line in read_lines(path)
        if line.startswith(b'{"prediction_id":"')
    }
    assert awaiting not in predicted
    assert foreign.model_name == "no_such_model" and foreign.prediction_id == good["prediction_id"]

    # The demo lands the awaited prediction later; it is valid and precedes its feedback.
    late = land_awaiting_prediction(churn, tmp_path, day, now)
    (event,) = events([late])
    assert check_prediction(event, churn).request_ts <= early.feedback_ts
    assert event["prediction_id"] == awaiting


def test_fault_files_early_in_the_day_stay_inside_the_day_and_before_now(tmp_path: Path) -> None:
    now = T0 + timedelta(minutes=10)
    cases = write_fault_files(MULTICLASS, tmp_path, "2024-05-01", now)
    good = orjson.loads(read_lines(cases["negative_latency"][0])[0])
    check_prediction(good, MULTICLASS)
    assert T0 <= ts(good["request_ts"]) <= now
    (feedback,) = set(cases["feedback_before_prediction"])
    assert all(FeedbackEvent.model_validate_json(line).feedback_ts <= now for line in read_lines(feedback))
