"""The drift marts (fct_feature_drift, fct_prediction_drift) and model_health on a real PostgreSQL,
against numpy / scipy on the stored bins and against a full refresh.

One warehouse for the whole module (a dbt build costs seconds, so every test reads the same builds):

1. GIVEN the churn spec (version "1" on control for two days, a covariate shift of tenure_months
   from the second day on; version "2" on a challenger arm the second day), a multiclass model that
   never gets a reference and a model without traffic; a reference for churn version "1"; the
   first day profiled; WHEN `build` runs (fresh, so a full build);
2. GIVEN the second day profiled; WHEN an incremental build runs;
3. GIVEN a reference stored for churn version "2" (which re-bins its windows), new drift thresholds
   in the multiclass model's spec and one of its hours' profiles deleted; WHEN an incremental build
   runs;
4. WHEN a `--full-refresh` build of the drift marts runs.

THEN PSI and JS distance equal numpy / scipy on the same bins, the shift flags tenure_months and
nothing else, the per-feature threshold of monthly_charges is the one reported, versions without a
reference have rows with NULL measures, the incremental builds rewrote exactly the windows they had
to (and dropped the deleted hour) and equal the full refresh, and model_health reports the serving
version, its quality and drifted features, and the data's freshness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from scipy.spatial.distance import jensenshannon

from driftloop.core import warehouse
from driftloop.core.spec import ModelSpec, get_spec, load_spec
from driftloop.ingest.loader import ingest
from driftloop.monitor import dbt_runner as metrics
from driftloop.monitor.profiling import profile_windows, reference_profile, store_reference
from driftloop.sim.world import Scenario, feedback_lines, generate_predictions, prediction_lines
from landing import land

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # dbt builds the marts (a minute or more)

D0 = datetime(2026, 11, 16, tzinfo=UTC)
D1 = D0 + timedelta(days=1)  # tenure_months shifts from here on; version "2" serves a share
D2 = D0 + timedelta(days=2)
NOW = D2 + timedelta(hours=6)  # ingest and profiling clock; the builds' as_of
SEED = 5
SHIFTED = "tenure_months"
SHIFT = [(D1, SHIFTED, 2.0)]
CONTROL_PER_HOUR, CHALLENGER_PER_HOUR, TICKETS_PER_HOUR = 200, 30, 40
EPSILON = 1e-4  # macros/drift.sql: psi_epsilon()
TOLERANCE = 1e-9

TICKETS_SPEC = """\
name: tickets
description: Multiclass test model without a reference profile.
task: multiclass_classification
classes: [low, medium, high]
features:
  - {name: words, type: numeric, required: true, min: 0, max: 5000}
  - {name: channel, type: categorical, required: true, categories: [email, chat, phone]}
windows: {sizes: [hour, day], expected_label_delay: 1d, min_label_coverage: 0.5}
"""

TICKETS_THRESHOLDS = """\
drift: {thresholds: {psi: 0.3, js: 0.15}, prediction: {psi: 0.25, js: 0.125}}
"""
DELETED_HOUR = D1 + timedelta(hours=5)  # its tickets profiles are deleted before build 3

IDLE_SPEC = """\
name: idle
description: A monitored model without traffic yet.
task: binary_classification
classes: [ham, spam]
positive_class: spam
features:
  - {name: x, type: numeric, required: true}
"""

MARTS = {
    "fct_feature_drift": [
        "model_name", "model_version", "variant", "segment", "window_size", "window_start", "feature"
    ],
    "fct_prediction_drift": [
        "model_name", "model_version", "variant", "segment", "window_size", "window_start", "column_name"
    ],
}  # fmt: skip
WINDOW_KEY = ["model_name", "window_size", "window_start"]
DRIFT_MODELS = ["fct_feature_drift", "fct_prediction_drift", "model_health"]


# ------------------------------------------------------------------------------------------------
# Reading the warehouse


def query(url: str, statement: str, params=()) -> list[dict]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(statement, params)
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def dump(url: str) -> dict[str, list[dict]]:
    """Every row of every drift mart, ordered by its key."""
    return {
        mart: query(url, f"select * from marts.{mart} order by {', '.join(keys)}")
        for mart, keys in MARTS.items()
    }


def row_versions(url: str) -> dict[str, set[tuple]]:
    """(model_name, window_size, window_start, xmin) of every drift mart row: xmin changes when a row is rewritten."""
    with psycopg.connect(url) as conn:
        return {
            mart: set(
                conn.execute(f"select {', '.join(WINDOW_KEY)}, xmin::text from marts.{mart}").fetchall()
            )
            for mart in MARTS
        }


def rewritten(before: dict[str, set[tuple]], after: dict[str, set[tuple]]) -> dict[str, set[tuple]]:
    old = {mart: {row[-1] for row in rows} for mart, rows in before.items()}
    return {mart: {row[:3] for row in rows if row[-1] not in old[mart]} for mart, rows in after.items()}


def _window_key(row: dict) -> tuple:
    return tuple(row[c] for c in WINDOW_KEY)


def profile_windows_of(url: str, where: str, params=()) -> set[tuple]:
    rows = query(
        url,
        f"select distinct {', '.join(WINDOW_KEY)} from profiles.whylogs_profiles "
        f"where window_size in ('hour', 'day') and {where}",
        params,
    )
    return {tuple(r[c] for c in WINDOW_KEY) for r in rows}


# ------------------------------------------------------------------------------------------------
# The module's warehouse, built four times


@dataclass
class Built:
    url: str
    specs: dict[str, ModelSpec]
    first_build: object = None
    dumps: list[dict[str, list[dict]]] = field(default_factory=list)  # after builds 1, 2, 3, 4
    rewritten: list[dict[str, set[tuple]]] = field(default_factory=list)  # by builds 2 and 3
    day_one_windows: set[tuple] = field(default_factory=set)  # windows profiled before build 2
    version_two_windows: set[tuple] = field(default_factory=set)  # windows holding a version "2" profile
    tickets_windows: set[tuple] = field(default_factory=set)  # before build 3 (thresholds changed)


def _traffic(
    spec: ModelSpec, per_hour: int, start: datetime, end: datetime, scenario: Scenario
) -> pd.DataFrame:
    hours = int((end - start) / timedelta(hours=1))
    frame = generate_predictions(spec, per_hour * hours, start, end, scenario)
    frame.loc[frame["feedback_ts"] > NOW, "labelled"] = False  # that feedback has not happened yet
    return frame


def _reference(url: str, spec: ModelSpec, version: str) -> None:
    """A reference for `version`: the same world (seed) before the shift, 30 days of training data."""
    training = generate_predictions(
        spec,
        20_000,
        D0 - timedelta(days=30),
        D0 - timedelta(days=1),
        Scenario(seed=SEED, model_version=version),
    )
    store_reference(url, spec, reference_profile(spec, version, training, source={"kind": "test"}))


@pytest.fixture(scope="module")
def built(admin_url, tmp_path_factory) -> Built:
    from conftest import drop_database, new_database

    tmp = tmp_path_factory.mktemp("drift")
    (tmp / "specs").mkdir()
    (tmp / "specs" / "tickets.yaml").write_text(TICKETS_SPEC)
    (tmp / "specs" / "idle.yaml").write_text(IDLE_SPEC)
    specs = {
        "churn": get_spec("churn"),
        "tickets": load_spec(tmp / "specs" / "tickets.yaml"),
        "idle": load_spec(tmp / "specs" / "idle.yaml"),
    }
    churn, tickets = specs["churn"], specs["tickets"]
    url = new_database(admin_url)
    dbt = {"target_path": tmp / "target", "log_path": tmp / "logs", "as_of": NOW}
    result = Built(url, specs)
    try:
        warehouse.sync_specs(url, specs)
        root = tmp / "landing"
        traffic = {
            "churn": pd.concat([
                _traffic(churn, CONTROL_PER_HOUR, D0, D2, Scenario(seed=SEED, covariate_shift=SHIFT)),
                _traffic(churn, CHALLENGER_PER_HOUR, D1, D2,
                         Scenario(seed=SEED, model_version="2", variant="challenger", covariate_shift=SHIFT)),
            ], ignore_index=True),
            "tickets": _traffic(tickets, TICKETS_PER_HOUR, D1, D2, Scenario(seed=SEED)),
        }  # fmt: skip
        for name, frame in traffic.items():
            land(root, name, "predictions", "predictions.jsonl", prediction_lines(frame), now=NOW)
            land(root, name, "feedback", "feedback.jsonl", feedback_lines(frame), now=NOW)
            loaded = ingest(specs[name], landing_root=str(root), url=url, now=NOW)
            assert loaded.rows_rejected == 0, [f.reasons for f in loaded.files]
        _reference(url, churn, "1")
        profile_windows(url, churn, D0, D1, now=NOW)

        result.first_build = metrics.build(url, select=[f"+{name}" for name in DRIFT_MODELS], **dbt)
        result.dumps.append(dump(url))

        before = row_versions(url)
        for spec in (churn, tickets):
            profile_windows(url, spec, D1, D2, now=NOW)
        result.day_one_windows = profile_windows_of(url, "window_start >= %s", (D1,))
        metrics.build(url, select=DRIFT_MODELS, **dbt)
        result.dumps.append(dump(url))
        after = row_versions(url)
        result.rewritten.append(rewritten(before, after))

        before = after
        _reference(url, churn, "2")
        result.version_two_windows = profile_windows_of(url, "model_name = 'churn' and model_version = '2'")
        # ... and the tickets spec's thresholds change, and one of its hours loses its profiles
        (tmp / "specs" / "tickets.yaml").write_text(TICKETS_SPEC + TICKETS_THRESHOLDS)
        specs["tickets"] = result.specs["tickets"] = load_spec(tmp / "specs" / "tickets.yaml")
        warehouse.sync_specs(url, {"tickets": specs["tickets"]})
        with psycopg.connect(url) as conn:
            conn.execute(
                "delete from profiles.whylogs_profiles where model_name = 'tickets' and window_start = %s "
                "and window_size = 'hour'",
                (DELETED_HOUR,),
            )
        result.tickets_windows = profile_windows_of(url, "model_name = 'tickets'")
        metrics.build(url, select=DRIFT_MODELS, **dbt)
        result.dumps.append(dump(url))
        result.rewritten.append(rewritten(before, row_versions(url)))

        metrics.build(url, full_refresh=True, select=list(MARTS), **dbt)
        result.dumps.append(dump(url))
        yield result
    finally:
        drop_database(admin_url, url)


# ------------------------------------------------------------------------------------------------
# numpy / scipy on the stored bins


def psi_numpy(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def stored_bins(url: str) -> dict[int | tuple, np.ndarray]:
    """Fractions by bin_index per (profile_id, column_name), windows and references alike."""
    rows = query(
        url,
        "select profile_id, column_name, array_agg(fraction order by bin_index) as fractions "
        "from profiles.column_bins group by profile_id, column_name",
    )
    return {(r["profile_id"], r["column_name"]): np.asarray(r["fractions"], dtype=float) for r in rows}


# ------------------------------------------------------------------------------------------------
# The tests


def test_build_runs_the_drift_models_their_unit_tests_and_data_tests(built):
    statuses: dict[str, list[tuple[str, str]]] = {}
    for node_result in built.first_build.result.results:
        node = node_result.node
        statuses.setdefault(str(node.resource_type), []).append((node.name, str(node_result.status)))
    models = dict(statuses["model"])
    for name in ["stg_profiles__whylogs_profiles", "stg_profiles__reference_profiles",
                 "stg_profiles__column_summaries", "stg_profiles__column_bins", "stg_ops__model_drift_specs", "stg_raw__ingest_files",
                 "int_window_profile_columns", "int_window_profile_bins", *DRIFT_MODELS]:  # fmt: skip
        assert models[name] == "success", name
    unit_tests = dict(statuses["unit_test"])
    drift_unit_tests = [n for n in unit_tests if "drift" in n or "profile" in n or "model_health" in n]
    assert len(drift_unit_tests) == 6 and {unit_tests[n] for n in drift_unit_tests} == {"pass"}
    tests = statuses["test"]
    assert {status for _, status in tests} == {"pass"}
    assert "assert_drift_macros_match_known_values" in {name for name, _ in tests}


def test_psi_and_js_distance_equal_numpy_and_scipy_on_the_stored_bins(built):
    bins = stored_bins(built.url)
    column_statistics = {
        (r["profile_id"], r["column_name"]): r for r in query(built.url, "select * from profiles.column_statistics")
    }
    checked = small = 0
    for mart, keys in MARTS.items():
        column = keys[-1]
        rows = built.dumps[-1][mart]
        for row in rows:
            window = bins.get((row["profile_id"], row[column]))
            reference = bins.get((row["reference_profile_id"], row[column]))
            if window is None or reference is None:
                assert row["n_bins"] == 0, row
                assert row["psi"] is row["js_distance"] is row["is_drifted"] is None, row
                continue
            assert row["n_bins"] == len(window) == len(reference)
            assert abs(row["psi"] - psi_numpy(reference, window)) <= TOLERANCE, row
            assert abs(row["js_distance"] - jensenshannon(window, reference, base=2)) <= TOLERANCE, row
            statistics = column_statistics.get((row["profile_id"], row[column]))
            assert statistics is not None, row
            assert row["statistic"] == "js"
            assert row["statistic_value"] == row["js_distance"]
            if row[column] == "monthly_charges":  # its own spec thresholds win over a learned one
                assert (row["threshold_source"], row["threshold"]) == ("spec", row["js_threshold"])
            else:
                k = built.specs[row["model_name"]].drift.k
                learned = statistics["js_null_mean"] + k * statistics["js_null_sd"]
                assert row["threshold_source"] == "reference" and abs(row["threshold"] - learned) <= TOLERANCE
            numeric = row.get("feature_type", row.get("column_type")) == "numeric"
            assert (row["ks_statistic"] is not None) == numeric and (row["chi2_statistic"] is not None) != numeric
            if row["n_values"] < row["min_samples"]:
                small += 1  # distances reported, no verdict
                assert row["is_drifted"] is None, row
            else:
                assert row["is_drifted"] == (row["statistic_value"] >= row["threshold"]), row
            checked += 1
    assert checked > 3000
    assert small > 100  # the challenger's segments' hours: ~10 rows each


def test_the_shift_flags_the_shifted_feature_and_no_other(built):
    days = [
        r
        for r in built.dumps[-1]["fct_feature_drift"]
        if r["model_name"] == "churn" and r["window_size"] == "day"
    ]
    assert {(r["model_version"], r["segment"], r["window_start"]) for r in days} >= {
        ("1", "(all)", D0),
        ("1", "(all)", D1),
        ("2", "(all)", D1),
    }
    # every daily window has a verdict, but a feature with too few values in it (min_samples)
    unjudged = [r for r in days if r["is_drifted"] is None]
    assert all(r["n_values"] < r["min_samples"] for r in unjudged), unjudged[:3]
    # the shifted feature, in every window of every version and segment since the shift
    shifted = [r for r in days if r["feature"] == SHIFTED and r["window_start"] >= D1]
    assert len(shifted) == 8
    # flagged wherever there is a verdict (the challenger's eu day has fewer than min_samples rows)
    judged = [r for r in shifted if r["n_values"] >= r["min_samples"]]
    assert len(judged) >= 6 and all(r["is_drifted"] for r in judged), [
        (r["model_version"], r["segment"], r["n_values"], r["js_distance"], r["threshold"], r["threshold_source"],
         r["is_drifted"], r["statistic"], r["statistic_value"], r["min_samples"])
        for r in judged if not r["is_drifted"]
    ]
    # in the windows of a few hundred rows or more, the unshifted features flag at about the false-alarm
    # rate of a mean + 3 sd threshold (~1 %; a 4,700-row day of discount_pct reaches JS 0.0263 against
    # a learned 0.0259 by chance): at most 5 % of them
    large = [r for r in days if r["n_rows"] >= 500]
    assert len({(r["model_version"], r["segment"], r["window_start"]) for r in large}) == 9
    assert {(r["feature"], r["window_start"]) for r in large if r["is_drifted"] and r["feature"] == SHIFTED} == {
        (SHIFTED, D1)
    }
    unshifted = [r for r in large if r["feature"] != SHIFTED and r["is_drifted"] is not None]
    assert len(unshifted) > 80 and sum(r["is_drifted"] for r in unshifted) <= 0.05 * len(unshifted)
    # the shifted hours flag it too, clearly
    hours = [r for r in built.dumps[-1]["fct_feature_drift"]
             if r["model_name"] == "churn" and r["window_size"] == "hour" and r["segment"] == "(all)"
             and r["model_version"] == "1" and r["feature"] == SHIFTED and r["window_start"] >= D1]  # fmt: skip
    assert len(hours) == 24 and all(r["is_drifted"] for r in hours)
    assert min(r["psi"] for r in hours) > 1.0 and min(r["js_distance"] for r in hours) > 0.5


def test_small_windows_are_judged_on_thresholds_learned_for_their_size(built):
    """With ~200 rows an hour, the sampling noise of the JS distance on 10 bins (about
    sqrt(9 / (8 n ln 2)) ~ 0.08) reaches a fixed 0.1 in some unshifted hours; the threshold learned
    from the reference at the window's n (null mean + 3 sd) keeps them quiet."""
    hours = [r for r in built.dumps[-1]["fct_feature_drift"]
             if r["model_name"] == "churn" and r["window_size"] == "hour" and r["segment"] == "(all)"
             and r["model_version"] == "1" and r["window_start"] < D1 and r["feature"] != "monthly_charges"]  # fmt: skip
    assert len(hours) == 24 * (len(built.specs["churn"].features) - 1)
    assert all(r["threshold_source"] == "reference" for r in hours)
    # numbers on 10 bins are noisier than a 0.1 at this size; a few categories are less noisy
    assert all(r["threshold"] > r["js_threshold"] for r in hours if r["feature_type"] == "numeric")
    over_fixed = [r for r in hours if r["js_distance"] >= r["js_threshold"]]
    flagged = [r for r in hours if r["is_drifted"]]
    assert over_fixed and len(flagged) <= 0.05 * len(hours)


def test_thresholds_come_from_the_spec_with_the_feature_override(built):
    churn = built.specs["churn"].drift
    assert churn.features["monthly_charges"].psi != churn.thresholds.psi  # the spec overrides it
    for row in built.dumps[-1]["fct_feature_drift"]:
        drift = built.specs[row["model_name"]].drift
        expected = drift.features.get(row["feature"], drift.thresholds)
        assert (row["psi_threshold"], row["js_threshold"]) == (expected.psi, expected.js), row
    assert {(r["psi_threshold"], r["js_threshold"]) for r in built.dumps[-1]["fct_feature_drift"]
            if r["feature"] == "monthly_charges"} == {(0.25, 0.12)}  # fmt: skip
    # a changed spec is what the incremental build reports
    assert {(r["psi_threshold"], r["js_threshold"]) for r in built.dumps[-1]["fct_feature_drift"]
            if r["model_name"] == "tickets"} == {(0.3, 0.15)}  # fmt: skip
    for row in built.dumps[-1]["fct_prediction_drift"]:
        drift = built.specs[row["model_name"]].drift.prediction
        assert (row["psi_threshold"], row["js_threshold"]) == (drift.psi, drift.js), row


def test_prediction_drift_covers_the_scores_and_the_predicted_class(built):
    rows = built.dumps[-1]["fct_prediction_drift"]
    columns = {(r["model_name"], r["column_name"], r["column_role"], r["class_name"]) for r in rows}
    assert columns == {
        ("churn", "prediction.score.churn", "score", "churn"),
        ("churn", "prediction.class", "prediction", None),
        ("tickets", "prediction.score.low", "score", "low"),
        ("tickets", "prediction.score.medium", "score", "medium"),
        ("tickets", "prediction.score.high", "score", "high"),
        ("tickets", "prediction.class", "prediction", None),
    }
    measured = [r for r in rows if r["model_name"] == "churn"]
    assert measured and all(r["psi"] is not None for r in measured)


def test_a_version_without_a_reference_has_rows_with_null_measures(built):
    after_build_2, final = built.dumps[1], built.dumps[-1]
    for mart in MARTS:
        unmeasured = [
            r for r in after_build_2[mart] if r["model_version"] == "2" and r["model_name"] == "churn"
        ] + [r for r in final[mart] if r["model_name"] == "tickets"]
        assert len(unmeasured) > 100
        for row in unmeasured:
            assert row["reference_profile_id"] is None and row["n_rows"] > 0 and row["psi_threshold"] > 0
            assert row["n_bins"] == 0 and row["psi"] is row["js_distance"] is row["is_drifted"] is None
        # once version "2" has a reference, its windows are measured against it, not version "1"'s
        version_two = [r for r in final[mart] if r["model_version"] == "2"]
        references = query(built.url, "select model_version, profile_id from profiles.reference_profiles")
        assert {r["reference_profile_id"] for r in version_two} == {
            r["profile_id"] for r in references if r["model_version"] == "2"
        }
        assert all(r["psi"] is not None for r in version_two)


@pytest.mark.parametrize("mart", sorted(MARTS))
def test_incremental_build_equals_full_refresh(built, mart):
    incremental, full_refresh = built.dumps[2][mart], built.dumps[3][mart]
    assert len(incremental) == len(full_refresh) > 0
    assert incremental == full_refresh


@pytest.mark.parametrize("mart", sorted(MARTS))
def test_incremental_builds_rewrote_exactly_the_touched_windows(built, mart):
    # build 2: the windows of the newly profiled day (and no window of the first day)
    assert built.rewritten[0][mart] == built.day_one_windows
    assert all(start >= D1 for _, _, start in built.day_one_windows)
    # build 3: every window holding a profile of version "2", whose reference was stored (re-binned),
    # and every tickets window (its thresholds changed)...
    assert built.rewritten[1][mart] == built.version_two_windows | built.tickets_windows
    # ... but the one whose profiles are gone: its rows went with them
    deleted = ("tickets", "hour", DELETED_HOUR)
    assert deleted not in built.tickets_windows
    assert any(_window_key(r) == deleted for r in built.dumps[1][mart])
    assert not any(_window_key(r) == deleted for r in built.dumps[2][mart])
    # what build 1 wrote for the first day is still there, unchanged
    first_day = [r for r in built.dumps[0][mart] if r["window_start"] < D1]
    assert first_day and first_day == [r for r in built.dumps[-1][mart] if r["window_start"] < D1]


def test_model_health_reports_serving_version_quality_drift_and_freshness(built):
    health = {r["model_name"]: r for r in query(built.url, "select * from marts.model_health")}
    assert set(health) == {"churn", "tickets", "idle"}

    churn = health["churn"]
    assert (churn["serving_model_version"], churn["serving_variant"]) == ("1", "control")
    assert churn["serving_has_reference"] is True
    assert churn["drift_window_start"] == D1
    assert churn["drifted_features"] == SHIFTED and churn["n_drifted_features"] == 1
    assert churn["n_features_measured"] == len(built.specs["churn"].features)
    prediction = [r for r in built.dumps[-1]["fct_prediction_drift"]
                  if (r["model_name"], r["model_version"], r["variant"], r["segment"], r["window_size"],
                      r["window_start"]) == ("churn", "1", "control", "(all)", "day", D1)]  # fmt: skip
    assert len(prediction) == 2
    assert churn["is_prediction_drifted"] == any(r["is_drifted"] for r in prediction)

    quality = query(
        built.url,
        "select * from marts.fct_model_quality where model_name = 'churn' and model_version = '1' "
        "and variant = 'control' and segment = '(all)' and window_size = 'day' and is_mature "
        "order by window_start desc limit 1",
    )[0]
    assert churn["quality_window_start"] == quality["window_start"]
    for name in ("accuracy", "roc_auc", "f1", "log_loss"):
        assert churn[name] == quality[name] is not None

    raw = query(
        built.url,
        "select model_name, max(request_ts) as latest, count(*) filter (where request_ts >= %s) as last_day "
        "from raw.predictions group by model_name",
        (D1,),
    )
    raw = {r["model_name"]: r for r in raw}
    loads = query(
        built.url, "select model_name, max(loaded_at) as loaded from raw.feedback group by model_name"
    )
    raw["churn"]["loaded"] = max(r["loaded"] for r in loads if r["model_name"] == "churn")
    assert churn["traffic_window_start"] == D1
    assert churn["n_predictions"] == raw["churn"]["last_day"]  # every version and variant
    assert 0 < churn["label_coverage"] <= 1
    assert churn["latest_request_ts"] == raw["churn"]["latest"]
    assert churn["latest_loaded_at"] == raw["churn"]["loaded"]  # feedback loads after its predictions
    assert churn["as_of"] == NOW
    assert churn["seconds_since_latest_request"] == (NOW - raw["churn"]["latest"]).total_seconds()
    assert churn["seconds_since_latest_load"] == (NOW - churn["latest_loaded_at"]).total_seconds()

    # served by a version without a reference: drift not measured, the rest known
    tickets = health["tickets"]
    assert tickets["serving_model_version"] == "1" and tickets["serving_has_reference"] is False
    assert tickets["drift_window_start"] == D1 and tickets["n_features_measured"] == 0
    assert (
        tickets["n_drifted_features"]
        is tickets["drifted_features"]
        is tickets["is_prediction_drifted"]
        is None
    )
    assert tickets["n_predictions"] == 24 * TICKETS_PER_HOUR

    # no traffic at all: a row of NULLs
    idle = health["idle"]
    assert idle["serving_model_version"] is idle["latest_request_ts"] is idle["n_predictions"] is None
