"""The dbt metrics layer on a real PostgreSQL, against scikit-learn, numpy and a full refresh.

One warehouse for the whole module (a dbt build costs seconds, so every test reads the same builds):

1. GIVEN a binary model (the shipped churn spec: two versions / variants, three segments) and a
   multiclass model (a spec written here), a day of traffic with edge cases (a window without
   labels, one whose labels are all one class, one of failed requests only, NULL and absent
   features), and the feedback known at CUT; WHEN `build` runs (fresh, so a full build);
2. GIVEN late feedback for old windows and label corrections; WHEN an incremental `build` runs
   with a later as_of (so that some windows mature by age);
3. WHEN a `--full-refresh` build runs with the same as_of.

THEN every mart equals what scikit-learn / numpy compute from the raw rows (build 3 = build 2), the
incremental build equals the full refresh, and it rewrote exactly the windows it had to.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)

from driftloop.core import warehouse
from driftloop.core.spec import ModelSpec, get_spec, load_spec
from driftloop.ingest.loader import ingest
from driftloop.monitor import dbt_runner as metrics
from driftloop.sim.world import Scenario, feedback_lines, generate_predictions, prediction_lines
from landing import land

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # dbt builds the marts (a minute or more)

DAY = datetime(2026, 11, 18, tzinfo=UTC)
CUT = DAY + timedelta(hours=20)  # feedback known at the first build
NOW = datetime(2026, 11, 19, 12, tzinfo=UTC)  # ingest clock: feedback after it has not happened
AS_OF_1 = NOW
AS_OF_2 = datetime(2026, 11, 21, 6, 30, tzinfo=UTC)  # churn hours 00-05 (3d delay) mature by age
TOLERANCE = 1e-9

NO_LABELS_HOUR = DAY + timedelta(hours=3)
ONE_CLASS_HOUR = DAY + timedelta(hours=5)
FAILED_ONLY_HOUR = DAY + timedelta(hours=7)
FEATURES_HOUR = DAY + timedelta(hours=9)
CORRECTED_HOUR = DAY + timedelta(hours=10)
MULTICLASS_ONE_CLASS_HOUR = DAY + timedelta(hours=4)

MULTICLASS_SPEC = """\
name: ticket_priority
description: Multiclass test model (three priorities).
task: multiclass_classification
classes: [low, medium, high]
features:
  - {name: words, type: numeric, required: true, min: 0, max: 5000}
  - {name: channel, type: categorical, required: true, categories: [email, chat, phone]}
  - {name: vip, type: boolean, required: false}
segment: {name: region, values: [eu, us]}
windows: {sizes: [hour, day], expected_label_delay: 1d, min_label_coverage: 0.9}
"""

GRAIN = ["model_name", "model_version", "variant", "segment", "window_size", "window_start"]
MART_KEYS = {
    "fct_model_quality": GRAIN,
    "fct_class_quality": [*GRAIN, "class_name"],
    "fct_confusion_matrix": [*GRAIN, "actual_class", "predicted_class"],
    "fct_latency": GRAIN,
    "fct_label_coverage": GRAIN,
}
WINDOW_KEY = ["model_name", "window_size", "window_start"]


# ------------------------------------------------------------------------------------------------
# Landing the scenario


def _events(lines: bytes) -> list[dict]:
    return [orjson.loads(line) for line in lines.splitlines()]


def _in_hour(frame: pd.DataFrame, hour: datetime) -> np.ndarray:
    ts = frame["request_ts"]
    return ((ts >= hour) & (ts < hour + timedelta(hours=1))).to_numpy()


def _failed_event(spec: ModelSpec, request_ts: datetime, latency_ms: float) -> dict:
    return {
        "prediction_id": str(uuid.uuid4()), "model_name": spec.name, "model_version": "1", "variant": "control",
        "experiment_id": None, "unit_id": "u-1", "request_ts": request_ts.isoformat(), "latency_ms": latency_ms,
        "features": None, "prediction": None, "scores": None, "segment": "eu", "error": "model timeout",
    }  # fmt: skip


def churn_traffic(spec: ModelSpec) -> tuple[list[dict], list[dict]]:
    """(prediction events, feedback events) of a day of churn traffic with the edge cases."""
    control = generate_predictions(spec, 24 * 30, DAY, DAY + timedelta(days=1), Scenario(seed=11))
    challenger = generate_predictions(
        spec,
        24 * 10,
        DAY,
        DAY + timedelta(days=1),
        Scenario(seed=12, model_version="2", variant="challenger"),
    )
    for traffic in (control, challenger):  # no feedback ever: only its age can change this window
        traffic.loc[_in_hour(traffic, NO_LABELS_HOUR), "labelled"] = False
    control.loc[_in_hour(control, ONE_CLASS_HOUR), "label"] = "stay"
    control = control[~_in_hour(control, FAILED_ONLY_HOUR)]
    frame = pd.concat([control, challenger], ignore_index=True)
    predictions = _events(prediction_lines(frame))
    hour = FEATURES_HOUR.strftime("%Y-%m-%dT%H")
    for index, event in enumerate(e for e in predictions if e["request_ts"].startswith(hour)):
        if index % 2:  # optional features absent ...
            for name in ("total_charges", "discount_pct", "age", "has_partner"):
                event["features"].pop(name, None)
        else:  # ... or null
            event["features"].update(total_charges=None, age=None, has_partner=None)
    predictions += [
        _failed_event(spec, FAILED_ONLY_HOUR + timedelta(minutes=m), 100.0 + m) for m in range(0, 60, 7)
    ]
    return predictions, _events(feedback_lines(frame))


def multiclass_traffic(spec: ModelSpec) -> tuple[list[dict], list[dict]]:
    frame = generate_predictions(spec, 24 * 25, DAY, DAY + timedelta(days=1), Scenario(seed=13))
    frame.loc[_in_hour(frame, MULTICLASS_ONE_CLASS_HOUR), "label"] = "low"
    return _events(prediction_lines(frame)), _events(feedback_lines(frame))


def corrections(predictions: list[dict], early: list[dict], classes: list[str]) -> list[dict]:
    """A later, different label for ten control predictions of CORRECTED_HOUR labelled by CUT."""
    hour = CORRECTED_HOUR.strftime("%Y-%m-%dT%H")
    ids = {
        e["prediction_id"]
        for e in predictions
        if e["request_ts"].startswith(hour) and e["variant"] == "control"
    }
    fixed = []
    for event in [f for f in early if f["prediction_id"] in ids][:10]:
        other = next(c for c in classes if c != event["label"])
        fixed.append({**event, "label": other, "feedback_ts": (NOW - timedelta(hours=1)).isoformat()})
    return fixed


def _split_feedback(feedback: list[dict]) -> tuple[list[dict], list[dict]]:
    happened = [f for f in feedback if datetime.fromisoformat(f["feedback_ts"]) <= NOW]
    early = [f for f in happened if datetime.fromisoformat(f["feedback_ts"]) <= CUT]
    late = [f for f in happened if datetime.fromisoformat(f["feedback_ts"]) > CUT]
    return early, late


# ------------------------------------------------------------------------------------------------
# Reading the warehouse


def dump(url: str) -> dict[str, list[dict]]:
    """Every row of every mart, ordered by its key."""
    dumped = {}
    with psycopg.connect(url) as conn:
        for mart, keys in MART_KEYS.items():
            cursor = conn.execute(f"select * from marts.{mart} order by {', '.join(keys)}")
            names = [c.name for c in cursor.description]
            dumped[mart] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return dumped


def row_versions(url: str) -> dict[str, set[tuple]]:
    """(model_name, window_size, window_start, xmin) of every mart row: xmin changes when a row is rewritten."""
    with psycopg.connect(url) as conn:
        return {
            mart: set(
                conn.execute(f"select {', '.join(WINDOW_KEY)}, xmin::text from marts.{mart}").fetchall()
            )
            for mart in MART_KEYS
        }


def mart_frame(url: str, mart: str) -> pd.DataFrame:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(f"select * from marts.{mart}")
        frame = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description], dtype=object)
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    return frame


def raw_predictions(url: str) -> pd.DataFrame:
    """Raw predictions with their latest label, first label time and label count (pandas, not dbt)."""
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "select model_name, prediction_id, model_version, variant, segment, request_ts, latency_ms, "
            "prediction, scores, score, error from raw.predictions"
        )
        predictions = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
        cursor = conn.execute(
            "select model_name, prediction_id, label, feedback_ts, loaded_at from raw.feedback"
        )
        feedback = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
    feedback = feedback.sort_values("feedback_ts")
    labels = feedback.groupby(["model_name", "prediction_id"]).agg(
        label=("label", "last"), first_label_ts=("feedback_ts", "min"), n_labels=("label", "size")
    )
    frame = predictions.join(labels, on=["model_name", "prediction_id"])
    frame["request_ts"] = pd.to_datetime(frame["request_ts"], utc=True)
    frame["first_label_ts"] = pd.to_datetime(frame["first_label_ts"], utc=True)
    frame["is_failed"] = frame["error"].notna()
    return frame


def windows(frame: pd.DataFrame, spec: ModelSpec):
    """(key, rows) per model_version, variant, segment slice, window_size and window_start."""
    parts = []
    for size in spec.windows.sizes:
        start = frame["request_ts"].dt.floor("h" if size == "hour" else "D")
        for segment in (frame["segment"].fillna("(none)"), "(all)"):
            parts.append(frame.assign(window_size=size, window_start=start, slice=segment))
    stacked = pd.concat(parts, ignore_index=True)
    for (version, variant, segment, size, start), rows in stacked.groupby(
        ["model_version", "variant", "slice", "window_size", "window_start"]
    ):
        yield (spec.name, version, variant, segment, size, start), rows


def _key(row) -> tuple:
    return tuple(row[c] for c in GRAIN[:-1]) + (pd.Timestamp(row["window_start"]).tz_convert("UTC"),)


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def assert_close(actual, expected, what: str) -> None:
    if _undefined(expected):
        assert actual is None, f"{what}: expected NULL, got {actual}"
    else:
        assert actual is not None, f"{what}: expected {expected}, got NULL"
        assert abs(float(actual) - float(expected)) <= TOLERANCE, f"{what}: {actual} != {expected}"


# ------------------------------------------------------------------------------------------------
# References: scikit-learn and numpy on the same rows


def probability_matrix(rows: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return np.array([[scores[c] for c in classes] for scores in rows["scores"]], dtype=float)


def expected_quality(rows: pd.DataFrame, spec: ModelSpec) -> dict:
    scored = rows[~rows["is_failed"]]
    evaluated = scored[scored["label"].notna()]
    y, predicted = evaluated["label"].to_numpy(dtype=object), evaluated["prediction"].to_numpy(dtype=object)
    classes = [str(c) for c in spec.classes]
    out = {
        "n_predictions": len(rows), "n_failed": int(rows["is_failed"].sum()), "n_scored": len(scored),
        "n_labelled": len(evaluated), "label_coverage": len(evaluated) / len(scored) if len(scored) else None,
    }  # fmt: skip
    binary = spec.positive_class is not None
    if binary:
        out["positive_rate"] = (
            float((scored["prediction"] == spec.positive_class).mean()) if len(scored) else None
        )
        out["mean_score"] = float(scored["score"].mean()) if len(scored) else None
    else:
        out["positive_rate"] = out["mean_score"] = None
    out["mean_confidence"] = (
        float(np.mean([max(s.values()) for s in scored["scores"]])) if len(scored) else None
    )
    if not len(evaluated):
        return out | dict.fromkeys(("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["accuracy"] = accuracy_score(y, predicted)
        if binary:
            positive = spec.positive_class
            y_positive = (y == positive).astype(int)
            score = evaluated["score"].to_numpy(dtype=float)
            kwargs = {"pos_label": positive, "zero_division": np.nan}
            out["precision"] = precision_score(y, predicted, **kwargs)
            out["recall"] = recall_score(y, predicted, **kwargs)
            out["f1"] = f1_score(y, predicted, **kwargs)
            out["roc_auc"] = roc_auc_score(y_positive, score) if 0 < y_positive.sum() < len(y) else None
            out["log_loss"] = log_loss(y_positive, score, labels=[0, 1])
            out["brier"] = brier_score_loss(y_positive, score, pos_label=1)
        else:
            labels = sorted(classes)  # scikit-learn orders probability columns by sorted label
            proba = probability_matrix(evaluated, labels)
            kwargs = {"labels": classes, "average": "macro", "zero_division": np.nan}
            out["precision"] = precision_score(y, predicted, **kwargs)
            out["recall"] = recall_score(y, predicted, **kwargs)
            out["f1"] = f1_score(y, predicted, **kwargs)
            every_class = set(y) == set(classes)  # else some one-vs-rest AUC is undefined
            out["roc_auc"] = (
                roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
                if every_class
                else None
            )
            out["log_loss"] = log_loss(y, proba, labels=labels)
            out["brier"] = brier_score_loss(y, proba, labels=labels)
    return out


def numpy_ece(rows: pd.DataFrame, classes: list[str], n_bins: int = 10) -> float | None:
    """Top-label ECE: confidence = highest probability (ties: first class in spec order)."""
    evaluated = rows[~rows["is_failed"] & rows["label"].notna()]
    if not len(evaluated):
        return None
    proba = probability_matrix(evaluated, classes)
    confidence = proba.max(axis=1)
    correct = np.array(classes, dtype=object)[proba.argmax(axis=1)] == evaluated["label"].to_numpy(
        dtype=object
    )
    bins = np.minimum(np.floor(confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


# ------------------------------------------------------------------------------------------------
# The module's warehouse, built three times


@dataclass
class Built:
    url: str
    specs: dict[str, ModelSpec]
    dumps: list[dict[str, list[dict]]] = field(default_factory=list)
    rewritten: dict[str, set[tuple]] = field(default_factory=dict)  # mart -> windows build 2 rewrote
    touched_by_late_feedback: set[tuple] = field(default_factory=set)
    late_labelled: set[tuple] = field(default_factory=set)  # (model_name, prediction_id) with late feedback
    int_rewritten: set[tuple] = field(default_factory=set)  # int_labeled_predictions rows build 2 wrote
    landed: dict[str, int] = field(default_factory=dict)
    first_build: object = None
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def built(admin_url, tmp_path_factory) -> Built:
    from conftest import drop_database, new_database

    tmp = tmp_path_factory.mktemp("metrics")
    (tmp / "specs").mkdir()
    (tmp / "specs" / "ticket_priority.yaml").write_text(MULTICLASS_SPEC)
    specs = {"churn": get_spec("churn"), "ticket_priority": load_spec(tmp / "specs" / "ticket_priority.yaml")}
    url = new_database(admin_url)
    dbt_dirs = {"target_path": tmp / "target", "log_path": tmp / "logs"}
    result = Built(url, specs)
    try:
        started = time.perf_counter()
        warehouse.sync_specs(url, specs)
        root = tmp / "landing"
        late: dict[str, list[dict]] = {}
        for name, spec in specs.items():
            predictions, feedback = (churn_traffic if name == "churn" else multiclass_traffic)(spec)
            early, late[name] = _split_feedback(feedback)
            if name == "churn":
                late[name] += corrections(predictions, early, [str(c) for c in spec.classes])
            result.landed[name] = len(predictions)
            land(root, name, "predictions", "predictions.jsonl", predictions, now=NOW)
            land(root, name, "feedback", "feedback-early.jsonl", early, now=NOW)
            loaded = ingest(spec, landing_root=str(root), url=url, now=NOW)
            assert loaded.rows_rejected == 0, [f.reasons for f in loaded.files]
        result.seconds["load"] = time.perf_counter() - started

        started = time.perf_counter()
        result.first_build = metrics.build(url, as_of=AS_OF_1, **dbt_dirs)
        result.seconds["build 1 (fresh)"] = time.perf_counter() - started
        result.dumps.append(dump(url))
        before = row_versions(url)
        with psycopg.connect(url) as conn:
            loaded_before = conn.execute("select max(loaded_at) from raw.feedback").fetchone()[0]

        for name, spec in specs.items():
            land(root, name, "feedback", "feedback-late.jsonl", late[name], now=NOW)
            loaded = ingest(spec, landing_root=str(root), url=url, now=NOW)
            assert loaded.rows_rejected == 0 and loaded.rows_loaded == len(late[name])
        with psycopg.connect(url) as conn:
            touched = conn.execute(
                """select distinct k.model_name, size.value, date_trunc(size.value, k.request_ts, 'UTC')
                   from raw.feedback f join raw.prediction_keys k using (model_name, prediction_id)
                   join ops.model_specs s using (model_name)
                   cross join jsonb_array_elements_text(s.window_sizes) as size
                   where f.loaded_at > %s""",
                (loaded_before,),
            ).fetchall()
        result.touched_by_late_feedback = set(touched)
        with psycopg.connect(url) as conn:
            result.late_labelled = set(
                conn.execute(
                    "select distinct model_name, prediction_id from raw.feedback where loaded_at > %s",
                    (loaded_before,),
                ).fetchall()
            )
            int_before = {
                row[0] for row in conn.execute("select xmin::text from intermediate.int_labeled_predictions")
            }

        # the default loaded_at_lookback (1 hour): every row loaded so far is found again, and only the
        # predictions whose label changed may be rewritten
        started = time.perf_counter()
        metrics.build(url, as_of=AS_OF_2, **dbt_dirs)
        result.seconds["build 2 (incremental)"] = time.perf_counter() - started
        result.dumps.append(dump(url))
        with psycopg.connect(url) as conn:
            result.int_rewritten = {
                (model_name, prediction_id)
                for model_name, prediction_id, version in conn.execute(
                    "select model_name, prediction_id, xmin::text from intermediate.int_labeled_predictions"
                )
                if version not in int_before
            }
        after = row_versions(url)
        old_versions = {mart: {row[-1] for row in rows} for mart, rows in before.items()}
        result.rewritten = {
            mart: {row[:3] for row in rows if row[-1] not in old_versions[mart]}
            for mart, rows in after.items()
        }

        started = time.perf_counter()
        metrics.build(url, full_refresh=True, as_of=AS_OF_2, **dbt_dirs)
        result.seconds["build 3 (full refresh)"] = time.perf_counter() - started
        result.dumps.append(dump(url))
        yield result
    finally:
        drop_database(admin_url, url)


@pytest.fixture(scope="module")
def reference(built) -> pd.DataFrame:
    return raw_predictions(built.url)


# ------------------------------------------------------------------------------------------------
# The tests


def test_build_runs_models_unit_tests_and_data_tests(built):
    results = built.first_build.result.results
    by_type: dict[str, list[str]] = {}
    for node_result in results:
        by_type.setdefault(str(node_result.node.resource_type), []).append(str(node_result.status))
    assert len(by_type["unit_test"]) >= 8 and set(by_type["unit_test"]) == {"pass"}
    assert len(by_type["test"]) >= 50 and set(by_type["test"]) == {"pass"}
    assert len(by_type["model"]) >= 12 and set(by_type["model"]) == {"success"}


@pytest.mark.parametrize("mart", sorted(MART_KEYS))
def test_incremental_build_equals_full_refresh(built, mart):
    incremental, full_refresh = built.dumps[1][mart], built.dumps[2][mart]
    assert len(incremental) == len(full_refresh) > 0
    assert incremental == full_refresh


def _window_key(row: dict) -> tuple:
    return tuple(row[c] for c in WINDOW_KEY)


def test_late_feedback_changed_old_windows(built):
    # GIVEN feedback loaded after the first build, some for windows of the early morning
    touched = built.touched_by_late_feedback
    assert any(start < CUT - timedelta(hours=12) for _, _, start in touched)
    # THEN every window it touched has a different quality row after the incremental build
    first, final = built.dumps[0]["fct_model_quality"], built.dumps[2]["fct_model_quality"]
    assert len(first) == len(final)
    changed = {_window_key(a) for a, b in zip(first, final, strict=True) if a != b}
    assert touched <= changed


def test_incremental_build_rewrote_exactly_the_relabelled_predictions(built):
    # GIVEN late feedback (new labels and corrections); the lookback found every prediction again
    assert built.late_labelled
    # THEN int_labeled_predictions rewrote exactly the predictions it labels, nothing unchanged
    assert built.int_rewritten == built.late_labelled


def test_incremental_build_rewrote_exactly_the_touched_windows(built):
    touched = built.touched_by_late_feedback
    first, final = built.dumps[0], built.dumps[2]

    def maturity_changed(mart: str) -> set[tuple]:
        return {
            _window_key(a)
            for a, b in zip(first[mart], final[mart], strict=True)
            if a["is_mature"] != b["is_mature"]
        }

    assert built.rewritten["fct_latency"] == set()  # labels do not change latency
    assert built.rewritten["fct_class_quality"] == touched
    assert built.rewritten["fct_confusion_matrix"] == touched
    assert built.rewritten["fct_model_quality"] == touched | maturity_changed("fct_model_quality")
    assert built.rewritten["fct_label_coverage"] == touched | maturity_changed("fct_label_coverage")
    # some windows were rewritten for their age alone, and most were left alone
    assert maturity_changed("fct_model_quality") - touched
    all_windows = {_window_key(row) for row in final["fct_model_quality"]}
    assert len(built.rewritten["fct_model_quality"]) < len(all_windows)


@pytest.mark.parametrize("model_name", ["churn", "ticket_priority"])
def test_quality_metrics_equal_scikit_learn(built, reference, model_name):
    spec = built.specs[model_name]
    mart = mart_frame(built.url, "fct_model_quality")
    actual = {_key(row): row for row in mart[mart["model_name"] == model_name].to_dict("records")}
    expected = dict(windows(reference[reference["model_name"] == model_name], spec))
    assert set(actual) == set(expected)
    metrics_checked = 0
    for key, rows in expected.items():
        for name, value in expected_quality(rows, spec).items():
            assert_close(actual[key][name], value, f"{key} {name}")
            metrics_checked += not _undefined(value)
    assert metrics_checked > 500


@pytest.mark.parametrize("model_name", ["churn", "ticket_priority"])
def test_ece_equals_numpy(built, reference, model_name):
    spec = built.specs[model_name]
    mart = mart_frame(built.url, "fct_model_quality")
    actual = {_key(row): row["ece"] for row in mart[mart["model_name"] == model_name].to_dict("records")}
    classes = [str(c) for c in spec.classes]
    for key, rows in windows(reference[reference["model_name"] == model_name], spec):
        assert_close(actual[key], numpy_ece(rows, classes), f"{key} ece")


@pytest.mark.parametrize("model_name", ["churn", "ticket_priority"])
def test_class_quality_and_confusion_matrix_equal_scikit_learn(built, reference, model_name):
    spec = built.specs[model_name]
    classes = [str(c) for c in spec.classes]
    per_class = mart_frame(built.url, "fct_class_quality")
    per_class = {
        (_key(r), r["class_name"]): r
        for r in per_class[per_class["model_name"] == model_name].to_dict("records")
    }
    cells = mart_frame(built.url, "fct_confusion_matrix")
    cells = {
        (_key(r), r["actual_class"], r["predicted_class"]): r["n_predictions"]
        for r in cells[cells["model_name"] == model_name].to_dict("records")
    }
    n_windows = 0
    for key, rows in windows(reference[reference["model_name"] == model_name], spec):
        n_windows += 1
        evaluated = rows[~rows["is_failed"] & rows["label"].notna()]
        y, predicted = (
            evaluated["label"].to_numpy(dtype=object),
            evaluated["prediction"].to_numpy(dtype=object),
        )
        if len(evaluated):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                precision, recall, f1, support = precision_recall_fscore_support(
                    y, predicted, labels=classes, average=None, zero_division=np.nan
                )
            matrix = confusion_matrix(y, predicted, labels=classes)
        else:
            precision = recall = f1 = [None] * len(classes)
            support, matrix = [0] * len(classes), np.zeros((len(classes), len(classes)), dtype=int)
        for i, cls in enumerate(classes):
            row = per_class[(key, cls)]
            assert row["support"] == support[i] and row["class_position"] == i + 1
            assert row["is_positive_class"] == (cls == spec.positive_class)
            for name, value in (("precision", precision[i]), ("recall", recall[i]), ("f1", f1[i])):
                assert_close(row[name], value, f"{key} {cls} {name}")
            for j, other in enumerate(classes):
                assert cells[(key, cls, other)] == matrix[i, j]
    assert len(per_class) == n_windows * len(classes)
    assert len(cells) == n_windows * len(classes) ** 2


@pytest.mark.parametrize("model_name", ["churn", "ticket_priority"])
def test_latency_and_label_coverage_equal_numpy(built, reference, model_name):
    spec = built.specs[model_name]
    latency = mart_frame(built.url, "fct_latency")
    latency = {_key(r): r for r in latency[latency["model_name"] == model_name].to_dict("records")}
    coverage = mart_frame(built.url, "fct_label_coverage")
    coverage = {_key(r): r for r in coverage[coverage["model_name"] == model_name].to_dict("records")}
    for key, rows in windows(reference[reference["model_name"] == model_name], spec):
        seconds = 3600 if key[4] == "hour" else 86400
        p50, p95, p99 = np.percentile(rows["latency_ms"].to_numpy(dtype=float), [50, 95, 99])
        row = latency[key]
        assert (row["n_predictions"], row["n_failed"]) == (len(rows), int(rows["is_failed"].sum()))
        for name, value in (("latency_p50_ms", p50), ("latency_p95_ms", p95), ("latency_p99_ms", p99),
                            ("latency_mean_ms", rows["latency_ms"].mean()), ("throughput_per_second", len(rows) / seconds),
                            ("error_rate", rows["is_failed"].mean())):  # fmt: skip
            assert_close(row[name], value, f"{key} {name}")

        scored = rows[~rows["is_failed"]]
        labelled = scored[scored["label"].notna()]
        delays = (labelled["first_label_ts"] - labelled["request_ts"]).dt.total_seconds().to_numpy()
        row = coverage[key]
        assert (row["n_scored"], row["n_labelled"], row["n_awaiting"]) == (
            len(scored),
            len(labelled),
            len(scored) - len(labelled),
        )
        assert row["n_relabelled"] == int((labelled["n_labels"] > 1).sum())
        assert_close(
            row["label_coverage"], len(labelled) / len(scored) if len(scored) else None, f"{key} coverage"
        )
        quantiles = np.percentile(delays, [50, 90, 99]) if len(delays) else [None] * 3
        for name, value in zip(("label_delay_p50_seconds", "label_delay_p90_seconds", "label_delay_p99_seconds"),
                               quantiles, strict=True):  # fmt: skip
            assert_close(row[name], value, f"{key} {name}")


@pytest.mark.parametrize("mart", ["fct_model_quality", "fct_label_coverage"])
def test_maturity_follows_coverage_and_age(built, mart):
    frame = mart_frame(built.url, mart)
    for row in frame.to_dict("records"):
        spec = built.specs[row["model_name"]]
        window_end = pd.Timestamp(row["window_end"]).tz_convert("UTC")
        matures_at = window_end + spec.windows.expected_label_delay
        coverage = row["label_coverage"]
        expected = (
            coverage is not None and coverage >= spec.windows.min_label_coverage
        ) or matures_at <= AS_OF_2
        assert pd.Timestamp(row["matures_at"]) == matures_at
        assert row["is_mature"] == expected, row


def _window(
    url: str, mart: str, model_name: str, start: datetime, segment: str = "(all)", variant: str = "control"
):
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            f"""select * from marts.{mart} where model_name = %s and variant = %s and segment = %s
                and window_size = 'hour' and window_start = %s""",
            (model_name, variant, segment, start),
        )
        rows = cursor.fetchall()
        return [dict(zip([c.name for c in cursor.description], row, strict=True)) for row in rows]


QUALITY = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "ece")


def test_window_without_labels_has_null_quality_and_zero_coverage(built):
    (row,) = _window(built.url, "fct_model_quality", "churn", NO_LABELS_HOUR)
    assert row["n_scored"] > 0 and row["n_labelled"] == 0 and row["label_coverage"] == 0
    assert all(row[name] is None for name in QUALITY)
    assert row["positive_rate"] is not None and row["mean_score"] is not None  # need no labels
    # not mature at the first build, mature by age at the second (3 days after the window's end)
    (first,) = [r for r in built.dumps[0]["fct_model_quality"] if all(r[c] == row[c] for c in GRAIN)]
    assert first["is_mature"] is False and row["is_mature"] is True
    (coverage,) = _window(built.url, "fct_label_coverage", "churn", NO_LABELS_HOUR)
    assert coverage["n_awaiting"] == coverage["n_scored"] and coverage["label_delay_p50_seconds"] is None
    assert all(r["support"] == 0 for r in _window(built.url, "fct_class_quality", "churn", NO_LABELS_HOUR))


def test_window_labelled_with_one_class_has_no_auc(built):
    (row,) = _window(built.url, "fct_model_quality", "churn", ONE_CLASS_HOUR)
    assert row["n_labelled"] > 0 and row["roc_auc"] is None and row["recall"] is None
    assert row["accuracy"] is not None and row["log_loss"] is not None and row["brier"] is not None
    (multiclass,) = _window(built.url, "fct_model_quality", "ticket_priority", MULTICLASS_ONE_CLASS_HOUR)
    assert (
        multiclass["n_labelled"] > 0 and multiclass["roc_auc"] is None and multiclass["accuracy"] is not None
    )


def test_window_of_failed_requests_only(built):
    (row,) = _window(built.url, "fct_model_quality", "churn", FAILED_ONLY_HOUR)
    assert row["n_predictions"] == row["n_failed"] == 9 and row["n_scored"] == 0
    assert row["label_coverage"] is None and row["positive_rate"] is None and row["mean_score"] is None
    assert all(row[name] is None for name in QUALITY)
    (latency,) = _window(built.url, "fct_latency", "churn", FAILED_ONLY_HOUR)
    assert latency["error_rate"] == 1.0 and latency["latency_p50_ms"] == 128.0
    assert latency["throughput_per_second"] == pytest.approx(9 / 3600, abs=TOLERANCE)


def test_null_and_absent_features_do_not_matter(built, reference):
    # every event of the hour loaded and counts, whatever its optional features
    in_hour = reference[
        (reference["model_name"] == "churn") & (reference["request_ts"].dt.floor("h") == FEATURES_HOUR)
    ]
    rows = [
        r
        for v in ("control", "challenger")
        for r in _window(built.url, "fct_model_quality", "churn", FEATURES_HOUR, variant=v)
    ]
    assert sum(r["n_predictions"] for r in rows) == len(in_hour) > 0
    assert all(r["accuracy"] is not None for r in rows)
    assert sum(built.landed.values()) == len(reference)


def test_corrected_labels_count_with_their_latest_value(built, reference):
    corrected = reference[(reference["model_name"] == "churn") & (reference["n_labels"] > 1)]
    assert len(corrected) == 10
    (row,) = _window(built.url, "fct_label_coverage", "churn", CORRECTED_HOUR)
    assert row["n_relabelled"] == 10
