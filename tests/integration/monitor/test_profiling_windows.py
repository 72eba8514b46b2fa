"""Profiling against a real PostgreSQL: windows, grains, merges, bins on the reference, reruns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from driftloop.core.spec import get_spec
from driftloop.ingest.loader import ingest
from driftloop.monitor import profiling
from driftloop.monitor.profiling import (
    ALL,
    column_bins,
    load_profile,
    profile_columns,
    profile_frame,
    profile_windows,
    profiling_frame,
    reference_profile,
    store_reference,
)
from driftloop.sim.world import Scenario, generate_predictions, prediction_lines
from landing import NOW, land, prediction

pytestmark = pytest.mark.integration

SPEC = get_spec("churn")
D0 = datetime(2026, 11, 18, tzinfo=UTC)  # two closed days: 2026-11-18 and 2026-11-19 (NOW is 11-20 12:00)
D1 = D0 + timedelta(days=1)
END = D0 + timedelta(days=2)
OPTIONAL = [f.name for f in SPEC.features if not f.required]
COLUMNS = [c.name for c in profile_columns(SPEC)]
FAILED_HOURS = [D0 + timedelta(hours=3), D1 + timedelta(hours=10)]


def _clone(admin_url: str, template_url: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(template_url)
    name = f"dl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(info["dbname"])
            )
        )
    return psycopg.conninfo.make_conninfo(**{**info, "dbname": name})


@pytest.fixture(scope="module")
def landed(admin_url, tmp_path_factory):
    """A warehouse holding two days of ingested churn traffic: version "1" (control) both days with 10 %
    nulls in optional features, version "2" (challenger) on the second day, and failed requests;
    plus a reference for version "1". Returns (url, the generated frames by (version, day))."""
    from conftest import drop_database, new_database

    url = new_database(admin_url)
    root = tmp_path_factory.mktemp("landing")
    frames = {}
    for day in (D0, D1):
        frames[("1", day)] = generate_predictions(
            SPEC, 2_400, day, day + timedelta(days=1), Scenario(seed=day.day, missing_rate=0.1)
        )
    frames[("2", D1)] = generate_predictions(
        SPEC, 600, D1, D1 + timedelta(days=1),
        Scenario(seed=7, model_version="2", variant="challenger", missing_rate=0.1),
    )  # fmt: skip
    for (version, day), frame in frames.items():
        failed = b"".join(
            orjson.dumps(prediction(SPEC, prediction=None, scores=None, features=None, error="timeout",
                                    request_ts=(hour + timedelta(minutes=20)).isoformat())) + b"\n"
            for hour in FAILED_HOURS if hour.date() == day.date() and version == "1"
        )  # fmt: skip
        land(
            root,
            "churn",
            "predictions",
            f"v{version}.jsonl",
            prediction_lines(frame) + failed,
            day=day.date().isoformat(),
        )
    result = ingest(SPEC, landing_root=str(root), url=url, now=NOW, kinds=["predictions"])
    assert result.rows_rejected == 0 and result.rows_loaded == sum(len(f) for f in frames.values()) + len(
        FAILED_HOURS
    )
    training = generate_predictions(
        SPEC, 20_000, D0 - timedelta(days=30), D0 - timedelta(days=2), Scenario(seed=100)
    )
    store_reference(
        url, SPEC, reference_profile(SPEC, "1", training, source={"kind": "simulated training data"})
    )
    yield url, frames
    drop_database(admin_url, url)


@pytest.fixture
def url(admin_url, landed):
    """A copy of the landed warehouse for one test."""
    from conftest import drop_database

    copy = _clone(admin_url, landed[0])
    yield copy
    drop_database(admin_url, copy)


def query(url, statement, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(statement, params).fetchall()


def table_counts(url):
    return {
        table: query(url, f"select count(*) from profiles.{table}")[0][0]
        for table in ("whylogs_profiles", "reference_profiles", "column_summaries", "column_bins")
    }


def test_one_profile_per_window_version_variant_and_segment(url):
    result = profile_windows(url, SPEC, D0, END, now=NOW)

    # hourly: one per hour x version x variant x segment seen in raw (failed requests excluded), plus '(all)'
    expected_hourly = query(url, """
        select count(*) from (
            select distinct date_trunc('hour', request_ts), model_version, variant, coalesce(segment, '(null)')
            from raw.predictions where error is null
            union all
            select distinct date_trunc('hour', request_ts), model_version, variant, '(all)'
            from raw.predictions where error is null) as grains""")[0][0]  # fmt: skip
    grains = dict(query(url, "select window_size, count(*) from profiles.whylogs_profiles group by 1"))
    assert grains == {
        "hour": expected_hourly,
        "day": 4 + 4 + 4,
        "reference": 1,
    }  # day: 2 x v1 + 1 x v2, 3 segments + (all)
    assert len(result.hours) == 48 and result.days == [D0, D1] and result.profiles == expected_hourly + 12
    assert result.unbinned_versions == ["2"]
    # n_rows: the raw rows of the window; segments add up to '(all)'; failed requests are not profiled
    by_window = query(url, """
        select p.window_start, p.model_version, p.n_rows, s.n_rows, r.n
        from profiles.whylogs_profiles p
        join (select window_start, model_version, sum(n_rows) as n_rows from profiles.whylogs_profiles
              where window_size = 'hour' and segment <> '(all)' group by 1, 2) s using (window_start, model_version)
        join (select date_trunc('hour', request_ts) as window_start, model_version, count(*) filter (where error is null) as n
              from raw.predictions group by 1, 2) r using (window_start, model_version)
        where p.window_size = 'hour' and p.segment = '(all)'""")  # fmt: skip
    assert len(by_window) == 48 + 24 and all(n == s == r for _, _, n, s, r in by_window)
    daily = query(url, "select model_version, window_start, n_rows from profiles.whylogs_profiles "
                       "where window_size = 'day' and segment = '(all)' order by 1, 2")  # fmt: skip
    assert daily == [("1", D0, 2_400), ("1", D1, 2_400), ("2", D1, 600)]
    # every profile is flattened: a summary per column; bins per column on the reference of version "1"
    profiles = query(url, "select count(*) from profiles.whylogs_profiles")[0][0]
    assert table_counts(url)["column_summaries"] == profiles * len(COLUMNS)
    edges = query(url, "select bin_edges from profiles.reference_profiles where model_version = '1'")[0][0]
    bins = query(url, """
        select model_version, column_name, count(*), sum(fraction) from profiles.column_bins
        group by profile_id, model_version, column_name""")  # fmt: skip
    assert {v for v, *_ in bins} == {"1"}  # version "2" has no reference (yet): no bins
    v1_profiles = query(url, "select count(*) from profiles.whylogs_profiles where model_version = '1'")[0][0]
    assert len(bins) == v1_profiles * len(COLUMNS)
    for _, column, n_bins, total in bins:
        entry = edges[column]
        assert n_bins == len(entry.get("edges", entry.get("categories"))) + 1
        assert total == pytest.approx(1.0, abs=1e-9)
    # the stored profile is a whylogs profile of the window
    profile_id, n_rows = query(url, "select profile_id, n_rows from profiles.whylogs_profiles "
                                    "where window_size = 'hour' and segment = 'eu' limit 1")[0]  # fmt: skip
    view = load_profile(url, profile_id)
    assert sorted(view.get_columns()) == sorted(COLUMNS)
    assert view.get_column("plan").get_metric("counts").n.value == n_rows


def test_daily_profile_is_the_merge_of_its_hours(url, landed):
    # GIVEN the windows profiled; the daily profiles are merges of the hourly ones
    profile_windows(url, SPEC, D0, END, now=NOW)
    day_frame = profiling_frame(landed[1][("1", D1)], SPEC)
    # WHEN the whole day is profiled in one go from the rows that were landed
    whole = profile_frame(day_frame, SPEC)
    edges = query(url, "select bin_edges from profiles.reference_profiles where model_version = '1'")[0][0]
    stored = query(url, """
        select column_name, array_agg(fraction order by bin_index), min(count)
        from profiles.column_bins where window_size = 'day' and window_start = %s and model_version = '1'
          and segment = '(all)' group by column_name""", (D1,))  # fmt: skip
    # THEN the daily bins equal the whole day's, within the KLL error (categories: exactly)
    assert {column for column, _, _ in stored} == set(COLUMNS)
    for column, fractions, _ in stored:
        expected = [b["fraction"] for b in column_bins(whole.get_column(column), edges[column])]
        if edges[column]["type"] == "numeric":
            kll = whole.get_column(column).get_metric("distribution").kll.value
            tolerance = 2 * kll.normalized_rank_error(True)
        else:
            tolerance = 1e-9
        assert np.abs(np.subtract(fractions, expected)).max() <= tolerance, column
    # AND the daily counts are exactly the hours' counts
    counts = query(url, """
        select d.column_name, d.count, d.null_count, h.count, h.null_count
        from profiles.column_summaries d
        join (select column_name, sum(count) as count, sum(null_count) as null_count from profiles.column_summaries
              where window_size = 'hour' and segment = '(all)' and model_version = '1'
                and window_start >= %(day)s and window_start < %(day)s + interval '1 day' group by 1) h using (column_name)
        where d.window_size = 'day' and d.window_start = %(day)s and d.segment = '(all)' and d.model_version = '1'
        """, {"day": D1})  # fmt: skip
    assert len(counts) == len(COLUMNS) and all(dc == hc and dn == hn for _, dc, dn, hc, hn in counts)
    day_summary = {c: (n, nulls) for c, n, nulls, _, _ in counts}
    assert day_summary["age"] == (len(day_frame), day_frame["age"].isna().sum())


@pytest.mark.slow
def test_rerun_replaces_windows_and_adds_no_rows(url):
    profile_windows(url, SPEC, D0, END, now=NOW)
    first = table_counts(url)
    first_ids = {
        r[0]
        for r in query(
            url, "select profile_id from profiles.whylogs_profiles where window_size <> 'reference'"
        )
    }
    # WHEN everything is profiled again, then a few hours of the first day
    profile_windows(url, SPEC, D0, END, now=NOW)
    partial = profile_windows(url, SPEC, D0 + timedelta(hours=5), D0 + timedelta(hours=8), now=NOW)
    # THEN the windows were rewritten (new ids), nothing was added, and no grain is duplicated
    assert table_counts(url) == first
    ids = {
        r[0]
        for r in query(
            url, "select profile_id from profiles.whylogs_profiles where window_size <> 'reference'"
        )
    }
    assert len(ids) == len(first_ids) and not ids & first_ids
    assert len(partial.hours) == 3 and partial.days == []  # the day is not complete inside the range
    duplicates = query(
        url,
        """
        select count(*) from (select 1 from profiles.whylogs_profiles
        group by model_name, model_version, variant, segment, window_size, window_start having count(*) > 1) d""",
    )
    assert duplicates == [(0,)]
    # AND an hour whose raw rows are gone (retention) keeps its profiles on a rerun
    gone = D0 + timedelta(hours=2)
    with psycopg.connect(url) as conn:
        conn.execute(
            "delete from raw.predictions where request_ts >= %s and request_ts < %s",
            (gone, gone + timedelta(hours=1)),
        )
    rerun = profile_windows(url, SPEC, D0, D1, now=NOW)
    assert gone not in rerun.hours and len(rerun.hours) == 23
    assert table_counts(url) == first
    assert query(url, "select count(*) from profiles.whylogs_profiles where window_start = %s", (gone,)) == [
        (4,)
    ]


def test_null_features_are_counted_as_nulls(url):
    profile_windows(url, SPEC, D0, END, now=NOW)
    raw_nulls = query(url, sql.SQL("""
        select date_trunc('hour', request_ts), model_version, count(*), {}
        from raw.predictions where error is null group by 1, 2""").format(
        sql.SQL(", ").join(sql.SQL("count(*) filter (where event -> 'features' ->> {} is null)").format(sql.Literal(f))
                           for f in OPTIONAL)))  # fmt: skip
    summaries = {
        (ts, version, column): (n, nulls)
        for ts, version, column, n, nulls in query(url, """
            select window_start, model_version, column_name, count, null_count from profiles.column_summaries
            where window_size = 'hour' and segment = '(all)'""")
    }  # fmt: skip
    assert sum(row[3] for row in raw_nulls) > 50  # there are nulls to count (10 % of optional values)
    for ts, version, n, *nulls in raw_nulls:
        for feature, expected in zip(OPTIONAL, nulls, strict=True):
            assert summaries[(ts, version, feature)] == (n, expected), (ts, version, feature)
        assert summaries[(ts, version, "plan")] == (n, 0)
    # null rate and the statistics over non-null values
    row = query(url, """
        select null_fraction, mean, p50, frequent_items from profiles.column_summaries
        where window_size = 'day' and segment = '(all)' and model_version = '1' and window_start = %s
          and column_name = 'has_partner'""", (D0,))[0]  # fmt: skip
    assert 0.05 < row[0] < 0.15 and 0 < row[1] < 1 and {i["value"] for i in row[3]} == {"True", "False"}


@pytest.mark.slow
def test_a_reference_stored_later_bins_the_stored_windows(url):
    profile_windows(url, SPEC, D0, END, now=NOW)
    assert query(url, "select count(*) from profiles.column_bins where model_version = '2'") == [(0,)]
    v1_bins = query(url, "select count(*) from profiles.column_bins where model_version = '1'")[0][0]
    # WHEN version "2" gets a reference, and version "1" a new one
    training = generate_predictions(
        SPEC, 5_000, D0 - timedelta(days=10), D0, Scenario(seed=200, model_version="2")
    )
    ref2 = store_reference(url, SPEC, reference_profile(SPEC, "2", training))
    ref1 = store_reference(url, SPEC, reference_profile(SPEC, "1", training))
    # THEN every stored window of version "2" is binned on its reference, version "1" is re-binned on
    # the new reference, and the old reference is gone with every bin computed on it
    v2_profiles = query(url, "select count(*) from profiles.whylogs_profiles where model_version = '2' "
                             "and window_size <> 'reference'")[0][0]  # fmt: skip
    per_reference = dict(
        query(
            url,
            "select reference_profile_id, count(distinct profile_id) from profiles.column_bins group by 1",
        )
    )
    assert per_reference[ref2] == v2_profiles + 1  # its windows and itself
    assert query(url, "select count(*) from profiles.column_bins where model_version = '1'") == [(v1_bins,)]
    assert set(per_reference) == {ref1, ref2}
    assert query(url, "select model_version, profile_id from profiles.reference_profiles order by 1") == [
        ("1", ref1),
        ("2", ref2),
    ]
    assert query(url, "select count(*) from profiles.whylogs_profiles where window_size = 'reference'") == [
        (2,)
    ]


def test_open_windows_are_not_profiled(url):
    now = D0 + timedelta(hours=5, minutes=30)
    result = profile_windows(url, SPEC, D0 - timedelta(minutes=30), END, now=now)
    assert result.hours == [D0 + timedelta(hours=h) for h in range(5)] and result.days == []
    assert query(url, "select max(window_end) from profiles.whylogs_profiles where window_size = 'hour'") == [
        (D0 + timedelta(hours=5),)
    ]
    # the profile's timestamp is its window's start
    (profile_id,) = query(url, "select profile_id from profiles.whylogs_profiles where window_start = %s and segment = %s",
                          (D0 + timedelta(hours=4), ALL))[0]  # fmt: skip
    assert load_profile(url, profile_id).dataset_timestamp == D0 + timedelta(hours=4)


def test_read_raw_types_features_by_the_spec(url):
    with psycopg.connect(url) as conn:
        data = profiling._read_raw(conn, SPEC, D0, D0 + timedelta(hours=1))
    assert len(data) == query(url, "select count(*) from raw.predictions where request_ts < %s and error is null",
                              (D0 + timedelta(hours=1),))[0][0]  # fmt: skip
    dtypes = data.dtypes.astype(str).to_dict()
    assert dtypes["tenure_months"] == "float64" and dtypes["has_partner"] == "boolean"
    assert dtypes["plan"] == "category" and dtypes["prediction.class"] == "category"
    assert isinstance(data["prediction.score.churn"].iloc[0], float) and pd.api.types.is_integer_dtype(
        data["hour"]
    )


def _spec_with_sizes(sizes: list[str]):
    """The churn spec with other window sizes (and no alert rules, which name hourly windows)."""
    from driftloop.core.spec import ModelSpec

    raw = SPEC.model_dump(mode="json")
    raw["windows"]["sizes"] = sizes
    raw["alerts"]["rules"] = []
    return ModelSpec.model_validate(raw)


@pytest.mark.slow  # a dbt build of the marts
def test_a_spec_with_day_windows_builds_no_hourly_profile_or_mart_row(url, tmp_path):
    from driftloop.core import warehouse
    from driftloop.monitor import dbt_runner

    spec = _spec_with_sizes(["day"])
    warehouse.sync_specs(url, {"churn": spec})
    # GIVEN files that touched the second day's morning only; WHEN profiling runs to the end of that day
    result = profile_windows(url, spec, D1 + timedelta(hours=2), D1 + timedelta(days=1), now=NOW)
    # THEN the whole closed day is profiled from raw (nothing stores a part of it), no hour is
    assert result.hours == [] and result.days == [D1] and result.rows > 0
    assert query(url, "select distinct window_size from profiles.whylogs_profiles order by 1") == [("day",), ("reference",)]
    # the day equals profiling its raw rows at once (the merge of its hours, in memory)
    day_rows = query(url, "select sum(n_rows) from profiles.whylogs_profiles where window_size = 'day' and segment = %s", (ALL,))
    assert day_rows == [(len(landed_frames_rows(url, D1)),)]
    profile_windows(url, spec, D0, END, now=NOW)
    dbt_runner.build(url, select=["+fct_feature_drift", "+fct_prediction_drift", "+fct_model_quality", "+fct_latency"],
                     target_path=tmp_path / "target", log_path=tmp_path / "logs", as_of=NOW)  # fmt: skip
    for mart in ("fct_feature_drift", "fct_prediction_drift", "fct_model_quality", "fct_latency"):
        sizes = query(url, f"select window_size, count(*) from marts.{mart} group by 1 order by 1")
        assert [size for size, _ in sizes] == ["day"], (mart, sizes)
    drift_days = query(url, "select distinct window_start from marts.fct_feature_drift order by 1")
    assert drift_days == [(D0,), (D1,)]


def landed_frames_rows(url, day):
    return query(url, "select 1 from raw.predictions where request_ts >= %s and request_ts < %s and error is null",
                 (day, day + timedelta(days=1)))  # fmt: skip


def test_week_windows_close_by_the_clock_and_merge_their_days(url):
    spec = _spec_with_sizes(["day", "week"])
    monday = datetime(2026, 11, 16, tzinfo=UTC)  # the week of D0 (Wednesday) and D1
    # before the week has ended: its days, no week
    early = profile_windows(url, spec, D0, monday + timedelta(days=7), now=NOW)
    assert early.days == [D0, D1] and early.windows.get("week") is None
    # once the clock passes Monday the 23rd the week closes, without any new file: merged from the stored days
    later = profile_windows(url, spec, monday + timedelta(days=4), monday + timedelta(days=7),
                            now=monday + timedelta(days=7, minutes=5))  # fmt: skip
    assert later.windows["week"] == [monday] and later.rows == 0
    week = query(url, "select model_version, variant, segment, window_end, n_rows from profiles.whylogs_profiles "
                      "where window_size = 'week' order by 1, 2, 3")  # fmt: skip
    days = query(url, "select model_version, variant, segment, sum(n_rows) from profiles.whylogs_profiles "
                      "where window_size = 'day' group by 1, 2, 3 order by 1, 2, 3")  # fmt: skip
    assert [(v, a, s, n) for v, a, s, _, n in week] == [tuple(d) for d in days]
    assert {end for *_, end, _ in week} == {monday + timedelta(days=7)}
    assert query(url, "select count(*) from profiles.whylogs_profiles where window_size = 'hour'") == [(0,)]


def _stored_rows(url):
    """Every stored window row but its ids and creation times, in a stable order."""
    grain = "p.model_version, p.variant, p.segment, p.window_size, p.window_start"
    return {
        "profiles": query(url, f"select {grain}, p.window_end, p.n_rows from profiles.whylogs_profiles p "
                               "where p.window_size <> 'reference' order by 1, 2, 3, 4, 5"),
        "summaries": query(url, f"select {grain}, s.* from profiles.column_summaries s join profiles.whylogs_profiles p "
                                "using (profile_id) where p.window_size <> 'reference'"),
        "bins": query(url, f"select {grain}, b.* from profiles.column_bins b join profiles.whylogs_profiles p "
                           "using (profile_id) where p.window_size <> 'reference'"),
        "statistics": query(url, f"select {grain}, c.* from profiles.column_statistics c join profiles.whylogs_profiles p "
                                 "using (profile_id) where p.window_size <> 'reference'"),
    }  # fmt: skip


def _without_ids(rows, url, table):
    names = [r[0] for r in query(url, "select column_name from information_schema.columns where table_schema = "
                                      "'profiles' and table_name = %s order by ordinal_position", (table,))]  # fmt: skip
    drop = {5 + names.index(n) for n in ("profile_id", "created_at")}
    # frequent items of equal counts may come in either order (the sketch's), which is not a change
    return sorted((tuple(sorted(map(repr, v)) if isinstance(v, list) else v for i, v in enumerate(row) if i not in drop)
                   for row in rows), key=repr)  # fmt: skip


def test_many_small_windows_profiled_in_parallel_store_what_one_process_stores(admin_url):
    from conftest import drop_database, new_database

    from driftloop.core import warehouse
    from driftloop.sim.bulk import HistoryPlan, load_history

    spec = _spec_with_sizes(["day", "week"])
    end = datetime(2026, 11, 16, tzinfo=UTC)  # a Monday: two whole weeks of days before it
    url = new_database(admin_url)
    try:
        warehouse.sync_specs(url, {"churn": spec})
        load_history(url, spec, HistoryPlan(rows=6_000, days=14, seed=11), end, "parallel")
        training = generate_predictions(SPEC, 5_000, end - timedelta(days=60), end - timedelta(days=30), Scenario(seed=4))
        store_reference(url, spec, reference_profile(spec, "1", training))  # version "2" stays unbinned
        stored = {}
        for processes in (1, 2):
            with psycopg.connect(url) as conn:
                conn.execute("delete from profiles.whylogs_profiles where window_size <> 'reference'")
            # GIVEN 14 daily windows (batches of several, shared out by rows between the processes)
            result = profile_windows(url, spec, end - timedelta(days=14), end, now=end + timedelta(hours=1),
                                     processes=processes)  # fmt: skip
            assert len(result.days) == 14 and result.windows["week"] == [end - timedelta(days=14), end - timedelta(days=7)]
            assert result.unbinned_versions == ["2"]
            rows = _stored_rows(url)
            stored[processes] = {
                "profiles": rows["profiles"],
                **{name: _without_ids(rows[name], url, table) for name, table in
                   (("summaries", "column_summaries"), ("bins", "column_bins"), ("statistics", "column_statistics"))},
            }  # fmt: skip
        # THEN two processes store what one stores: every profile, and of each day every summary, bin and
        # statistic exactly; a week merges its days' sketches (KLL compaction draws random bits, so its
        # quantiles may differ between runs): its counts, extremes and moments agree
        assert stored[2]["profiles"] == stored[1]["profiles"]
        for name in ("summaries", "bins", "statistics"):
            days_of = {p: [row for row in stored[p][name] if row[3] == "day"] for p in (1, 2)}
            assert len(days_of[2]) == len(days_of[1]) > 0, name
            diff = [(i, a, b) for one, two in zip(days_of[1], days_of[2], strict=True)
                    for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b]  # fmt: skip
            assert not diff, (name, diff[:5])
        summary_names = [r[0] for r in query(url, "select column_name from information_schema.columns where "
                                                  "table_schema = 'profiles' and table_name = 'column_summaries' "
                                                  "and column_name not in ('profile_id', 'created_at') order by ordinal_position")]  # fmt: skip
        at = {n: 5 + i for i, n in enumerate(summary_names)}
        weeks = {p: [row for row in stored[p]["summaries"] if row[3] == "week"] for p in (1, 2)}
        assert len(weeks[2]) == len(weeks[1]) > 0
        for one, two in zip(weeks[1], weeks[2], strict=True):
            assert [one[at[n]] for n in ("column_name", "count", "null_count", "min", "max")] == [
                two[at[n]] for n in ("column_name", "count", "null_count", "min", "max")]
            for n in ("mean", "stddev"):
                assert (one[at[n]] is None and two[at[n]] is None) or np.isclose(one[at[n]], two[at[n]], rtol=1e-9)
        ks, chi2 = query(url, "select count(ks_p_value), count(chi2_p_value) from profiles.column_statistics")[0]
        assert ks > 0 and chi2 > 0
        # and the weeks are the merges of their days
        weeks = {(v, a, s, start): n for v, a, s, size, start, _, n in stored[2]["profiles"] if size == "week"}
        days: dict = {}
        for v, a, s, size, start, _, n in stored[2]["profiles"]:
            if size == "day":
                key = (v, a, s, end - timedelta(days=14 if start < end - timedelta(days=7) else 7))
                days[key] = days.get(key, 0) + n
        assert weeks == days
    finally:
        drop_database(admin_url, url)
