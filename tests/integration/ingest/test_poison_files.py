"""Issue 12: no file can stop ingestion, and no file is passed over without a record.

Each test lands a hostile file next to good ones (predictions and feedback) and checks that the hostile
one is isolated with a reason a person understands, that everything else loads, and that reruns do
nothing more.
"""

from __future__ import annotations

import gzip
import os
from datetime import timedelta

import orjson
import psycopg
import pytest

from driftloop.ingest import loader as ingest_module
from driftloop.ingest.loader import VANISHED
from landing import age_file, encode, feedback, land, prediction
from landing import ingest_at_now as run  # the `spec` and `root` fixtures are in tests/conftest.py

pytestmark = pytest.mark.integration


def manifest(url):
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select path, status, rows_loaded, rows_rejected, error from raw.ingest_files order by file_id"
        ).fetchall()
    return {path.rsplit("/", 1)[-1]: (status, loaded, rejected, error) for path, status, loaded, rejected, error in rows}


def alerts(url):
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("select summary from ops.alerts order by alert_id").fetchall()]


def rejections(url):
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select regexp_replace(path, '^.*/', ''), line_number, reason from raw.rejected_records order by path, line_number"
        ).fetchall()


def count(url, table):
    with psycopg.connect(url) as conn:
        return conn.execute(f"select count(*) from raw.{table}").fetchone()[0]


def land_good_neighbours(spec, root):
    """A good predictions file landed after the hostile one, and good feedback."""
    good = prediction(spec)
    land(root, "churn", "predictions", "z-good.jsonl", [good], age=timedelta(minutes=30))
    land(root, "churn", "feedback", "f.jsonl", [feedback(good["prediction_id"])], age=timedelta(minutes=30))


def _has_poison(arrow_table) -> bool:
    return any(key.startswith("poison-") for key in arrow_table.column("prediction_id").to_pylist())


# ------------------------------------------------------------------------------------------ isolation


def test_an_unexpected_error_in_one_file_fails_that_file_alone(spec, root, warehouse_url, monkeypatch):
    # GIVEN a file whose COPY raises (any bug or server refusal), then good predictions and feedback
    land(root, "churn", "predictions", "a-poison.jsonl", [prediction(spec, prediction_id=f"poison-{k}") for k in range(3)])
    land_good_neighbours(spec, root)
    real_copy = ingest_module._copy_arrow

    def refuse(conn, table, arrow_table):  # any COPY of the file's rows, alone or with others
        if table == "raw.predictions" and _has_poison(arrow_table):
            raise psycopg.errors.ProgramLimitExceeded("index row size 5016 exceeds btree version 4 maximum 2704")
        return real_copy(conn, table, arrow_table)

    monkeypatch.setattr(ingest_module, "_copy_arrow", refuse)
    # WHEN ingest runs
    result = run(spec, root, warehouse_url)
    # THEN that file alone is rolled back and marked failed with the error and its path; the rest loads
    statuses = {f.path.rsplit("/", 1)[-1]: f.status for f in result.files}
    assert statuses == {"a-poison.jsonl": "failed", "z-good.jsonl": "loaded", "f.jsonl": "loaded"}
    assert result.count("failed") == 1 and result.as_dict()["files_failed"] == 1
    status, loaded, _, error = manifest(warehouse_url)["a-poison.jsonl"]
    assert (status, loaded) == ("failed", 0)
    assert "a-poison.jsonl" in error and "ProgramLimitExceeded" in error and "btree" in error
    assert count(warehouse_url, "predictions") == 1 and count(warehouse_url, "prediction_keys") == 1
    assert count(warehouse_url, "feedback") == 1
    assert len(alerts(warehouse_url)) == 1 and "a-poison.jsonl" in alerts(warehouse_url)[0]
    # AND it is not retried while its bytes stay the same (touching it changes nothing)
    monkeypatch.setattr(ingest_module, "_copy_arrow", real_copy)
    age_file(root / "churn" / "predictions" / "dt=2026-11-20" / "a-poison.jsonl", timedelta(minutes=10))
    assert run(spec, root, warehouse_url).files == []
    # AND `retry_failed` tries it again (here it loads), once
    retried = run(spec, root, warehouse_url, retry_failed=True)
    assert [(f.status, f.rows_loaded) for f in retried.files] == [("loaded", 3)]
    assert run(spec, root, warehouse_url, retry_failed=True).files == []
    assert len(alerts(warehouse_url)) == 1


def test_a_connection_lost_in_one_file_fails_that_file_alone(spec, root, warehouse_url, monkeypatch):
    # GIVEN a file during whose load the server ends the run's connection (the files share one connection)
    land(root, "churn", "predictions", "a-poison.jsonl", [prediction(spec, prediction_id=f"poison-{k}") for k in range(3)])
    land_good_neighbours(spec, root)
    real_copy = ingest_module._copy_arrow

    def terminated(conn, table, arrow_table):
        if table == "raw.predictions" and _has_poison(arrow_table):
            conn.execute("select pg_terminate_backend(pg_backend_pid())")
        return real_copy(conn, table, arrow_table)

    monkeypatch.setattr(ingest_module, "_copy_arrow", terminated)
    # WHEN ingest runs
    result = run(spec, root, warehouse_url)
    # THEN that file alone is failed (nothing of it kept), on a new connection; the files after it load
    statuses = {f.path.rsplit("/", 1)[-1]: f.status for f in result.files}
    assert statuses == {"a-poison.jsonl": "failed", "z-good.jsonl": "loaded", "f.jsonl": "loaded"}
    assert manifest(warehouse_url)["a-poison.jsonl"][:2] == ("failed", 0)
    assert count(warehouse_url, "predictions") == 1 and count(warehouse_url, "feedback") == 1
    monkeypatch.setattr(ingest_module, "_copy_arrow", real_copy)
    assert [(f.status, f.rows_loaded) for f in run(spec, root, warehouse_url, retry_failed=True).files] == [("loaded", 3)]


def test_a_failed_file_is_retried_when_its_bytes_change(spec, root, warehouse_url):
    whole = gzip.compress(encode([prediction(spec) for _ in range(20)]))
    path = land(root, "churn", "predictions", "cut.jsonl.gz", whole[: len(whole) // 2])
    assert [f.status for f in run(spec, root, warehouse_url).files] == ["failed"]
    assert run(spec, root, warehouse_url).files == []
    land(root, "churn", "predictions", "cut.jsonl.gz", whole, age=timedelta(minutes=20))  # the sender re-sends it whole
    assert [(f.status, f.rows_loaded) for f in run(spec, root, warehouse_url).files] == [("loaded", 20)]
    assert manifest(warehouse_url)["cut.jsonl.gz"][:2] == ("loaded", 20) and path.exists()


def test_a_file_that_vanishes_after_listing_is_recorded_and_the_run_goes_on(spec, root, warehouse_url, monkeypatch):
    # GIVEN a dangling symlink, and a file a retention job deletes between listing and reading
    folder = root / "churn" / "predictions" / "dt=2026-11-20"
    folder.mkdir(parents=True)
    os.symlink(root / "nowhere.jsonl", folder / "a-dangling.jsonl")
    doomed = land(root, "churn", "predictions", "b-deleted.jsonl", [prediction(spec)], age=timedelta(minutes=50))
    land_good_neighbours(spec, root)
    real_discover = ingest_module.discover

    def list_then_delete(*args):
        found = real_discover(*args)
        doomed.unlink(missing_ok=True)
        return found

    monkeypatch.setattr(ingest_module, "discover", list_then_delete)
    # WHEN ingest runs, THEN both are failed with the reason, and the good files load
    result = run(spec, root, warehouse_url)
    files = manifest(warehouse_url)
    assert files["a-dangling.jsonl"][0] == files["b-deleted.jsonl"][0] == "failed"
    assert files["a-dangling.jsonl"][3] == VANISHED and files["b-deleted.jsonl"][3] == VANISHED
    assert files["z-good.jsonl"][:2] == ("loaded", 1) and files["f.jsonl"][:2] == ("loaded", 1)
    assert result.count("failed") == 2
    assert run(spec, root, warehouse_url).files == []


# ------------------------------------------------------------------------------------------ every file recorded


def test_files_ingest_does_not_read_are_skipped_with_the_reason(spec, root, warehouse_url):
    land(root, "churn", "predictions", "export.csv", b"prediction_id,score\nx,0.3\n")
    land(root, "churn", "predictions", "events.json", encode([prediction(spec)]))
    land(root, "churn", "predictions", "upper.JSONL", [prediction(spec)])  # suffixes are read in any case
    stray = root / "churn" / "predictions" / "no-day-folder.jsonl"
    stray.write_bytes(encode([prediction(spec)]))
    age_file(stray, timedelta(hours=1))
    land(root, "churn", "predictions", "_SUCCESS", b"")  # a writer's marker: ignored, like .tmp files
    result = run(spec, root, warehouse_url)
    files = manifest(warehouse_url)
    assert set(files) == {"export.csv", "events.json", "upper.JSONL", "no-day-folder.jsonl"}
    assert files["upper.JSONL"][:2] == ("loaded", 1)
    assert files["export.csv"][0] == files["events.json"][0] == files["no-day-folder.jsonl"][0] == "skipped"
    assert "unsupported file type (.csv)" in files["export.csv"][3] and ".jsonl.gz" in files["export.csv"][3]
    assert "unsupported file type (.json)" in files["events.json"][3]
    assert "not in a day folder" in files["no-day-folder.jsonl"][3]
    assert result.count("skipped") == 3 and len(alerts(warehouse_url)) == 3
    assert run(spec, root, warehouse_url).files == []


def test_a_loaded_file_that_grows_is_changed_and_its_new_lines_load_once(spec, root, warehouse_url):
    # GIVEN a loaded file of two predictions
    first = [prediction(spec) for _ in range(2)]
    path = land(root, "churn", "predictions", "appended.jsonl", first, age=timedelta(hours=2))
    run(spec, root, warehouse_url)
    # WHEN its writer appends a good line, a bad one and a repeat of line 1, and ingest runs twice
    more = [prediction(spec), prediction(spec, latency_ms=-1), first[0]]
    path.write_bytes(path.read_bytes() + encode(more))
    age_file(path, timedelta(minutes=30))
    grown = run(spec, root, warehouse_url)
    again = run(spec, root, warehouse_url)
    # THEN it is `changed` with an alert, lines 3-5 are read once: one loaded, two rejected
    assert [(f.status, f.rows_loaded, f.rows_rejected) for f in grown.files] == [("changed", 1, 2)]
    assert again.files == []
    status, loaded, rejected, error = manifest(warehouse_url)["appended.jsonl"]
    assert (status, loaded, rejected) == ("changed", 3, 2) and "grew from" in error and "lines from 3 on" in error
    assert [(line, "latency_ms" in reason or "already loaded" in reason) for _, line, reason in rejections(warehouse_url)] == [
        (4, True), (5, True)]  # fmt: skip
    assert count(warehouse_url, "predictions") == 3
    assert any("changed after it was loaded" in summary for summary in alerts(warehouse_url))


def test_a_cut_last_line_completed_later_is_read_again_whole(spec, root, warehouse_url):
    complete = encode([prediction(spec) for _ in range(3)])
    path = land(root, "churn", "predictions", "died.jsonl", complete[:-40], age=timedelta(hours=2))
    run(spec, root, warehouse_url)
    assert [line for _, line, _ in rejections(warehouse_url)] == [3]
    path.write_bytes(complete)
    age_file(path, timedelta(minutes=30))
    result = run(spec, root, warehouse_url)
    assert [(f.status, f.rows_loaded, f.rows_rejected) for f in result.files] == [("changed", 1, 0)]
    assert rejections(warehouse_url) == [] and count(warehouse_url, "predictions") == 3
    assert manifest(warehouse_url)["died.jsonl"][:3] == ("changed", 3, 0)


def test_a_gzip_file_appended_to_loads_the_new_member(spec, root, warehouse_url):
    path = land(root, "churn", "feedback", "f.jsonl.gz", [feedback("a"), feedback("b")], age=timedelta(hours=2))
    run(spec, root, warehouse_url)
    path.write_bytes(path.read_bytes() + gzip.compress(encode([feedback("c")])))
    age_file(path, timedelta(minutes=30))
    result = run(spec, root, warehouse_url)
    assert [(f.status, f.rows_loaded) for f in result.files] == [("changed", 1)]
    assert count(warehouse_url, "feedback") == 3


def test_a_loaded_file_rewritten_in_place_is_changed_and_loads_nothing(spec, root, warehouse_url):
    path = land(root, "churn", "predictions", "rewritten.jsonl", [prediction(spec) for _ in range(2)], age=timedelta(hours=2))
    run(spec, root, warehouse_url)
    path.write_bytes(encode([prediction(spec) for _ in range(2)]))
    age_file(path, timedelta(minutes=30))
    result = run(spec, root, warehouse_url)
    assert [(f.status, f.rows_loaded) for f in result.files] == [("changed", 0)]
    status, loaded, _, error = manifest(warehouse_url)["rewritten.jsonl"]
    assert (status, loaded) == ("changed", 2) and "land it again under a new name" in error
    assert count(warehouse_url, "predictions") == 2 and len(alerts(warehouse_url)) == 1
    assert run(spec, root, warehouse_url).files == []
    # the remedy the message names: the same bytes under a new name load what is new, duplicate nothing
    land(root, "churn", "predictions", "rewritten-again.jsonl", path.read_bytes(), age=timedelta(minutes=20))
    assert run(spec, root, warehouse_url).rows_loaded == 2 and count(warehouse_url, "predictions") == 4


def test_touching_a_loaded_file_changes_nothing(spec, root, warehouse_url):
    path = land(root, "churn", "predictions", "p.jsonl", [prediction(spec)], age=timedelta(hours=2))
    run(spec, root, warehouse_url)
    age_file(path, timedelta(minutes=30))
    assert run(spec, root, warehouse_url).files == []
    assert manifest(warehouse_url)["p.jsonl"][0] == "loaded" and alerts(warehouse_url) == []


def test_an_empty_file_filled_later_loads_its_lines(spec, root, warehouse_url):
    path = land(root, "churn", "predictions", "late.jsonl", b"", age=timedelta(hours=2))
    assert [f.status for f in run(spec, root, warehouse_url).files] == ["empty"]
    path.write_bytes(encode([prediction(spec)]))
    age_file(path, timedelta(minutes=30))
    assert [(f.status, f.rows_loaded) for f in run(spec, root, warehouse_url).files] == [("changed", 1)]
    assert orjson.loads(path.read_bytes())["model_name"] == "churn"


# ------------------------------------------------------------------------------------------ one verdict per value


def _replace(line: bytes, field: bytes, value: bytes) -> bytes:
    """Set a numeric JSON field to a literal orjson cannot write (NaN, Infinity, 1e400)."""
    key = b'"' + field + b'":'
    start = line.index(key) + len(key)
    end = start
    while line[end : end + 1] not in (b",", b"}"):
        end += 1
    return line[:start] + value + line[end:]


NON_FINITE = {
    "latency Infinity": ("predictions", b"latency_ms", b"Infinity", "latency_ms is Infinity"),
    "required feature -Infinity": ("predictions", b"tenure_months", b"-Infinity", "features.tenure_months is -Infinity"),
    "optional feature NaN": ("predictions", b"age", b"NaN", "features.age is NaN"),
    "score beyond a double": ("predictions", b"churn", b"1e400", "scores.churn is Infinity (or beyond"),
    "feedback outcome NaN": ("feedback", b"outcome", b"NaN", "outcome is NaN"),
}


@pytest.mark.parametrize("neighbour", ["clean neighbours", "a malformed neighbour"])
@pytest.mark.parametrize("case", sorted(NON_FINITE))
def test_non_finite_numbers_are_rejected_whatever_the_neighbours(spec, root, warehouse_url, case, neighbour):
    kind, field, literal, expected = NON_FINITE[case]
    make = (lambda: prediction(spec)) if kind == "predictions" else (lambda: feedback(prediction(spec)["prediction_id"]))
    bad = _replace(orjson.dumps(make()), field, literal)
    lines = [make(), bad, make()] + ([b'{"prediction_id": '] if neighbour == "a malformed neighbour" else [])
    land(root, "churn", kind, "odd-numbers.jsonl", lines)
    result = run(spec, root, warehouse_url)
    assert result.count("failed") == 0, result.files
    assert result.rows_loaded == 2
    reasons = {line: reason for _, line, reason in rejections(warehouse_url)}
    assert expected in reasons[2] and "the contract allows finite numbers only" in reasons[2]
    with psycopg.connect(warehouse_url) as conn:
        rules = conn.execute("select reasons->0->>'rule' from raw.rejected_records where line_number = 2").fetchone()
    assert rules == ("non_finite",)


def test_non_finite_numbers_in_parquet_are_rejected_not_nulled(spec, root, warehouse_url):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [prediction(spec) for _ in range(2)]
    rows[1]["latency_ms"] = float("nan")
    table = pa.Table.from_pylist([{**row, "features": orjson.dumps(row["features"]).decode(),
                                   "scores": orjson.dumps(row["scores"]).decode()} for row in rows])  # fmt: skip
    folder = root / "churn" / "predictions" / "dt=2026-11-20"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "p.parquet")
    age_file(folder / "p.parquet", timedelta(hours=1))
    result = run(spec, root, warehouse_url)
    assert (result.rows_loaded, result.rows_rejected) == (1, 1)
    assert "latency_ms is NaN" in rejections(warehouse_url)[0][2]


LONG = {
    "prediction_id": ({"prediction_id": "p" * 5000}, "prediction_id is 5,000 characters long; the contract allows at most 256"),
    "unit_id": ({"unit_id": "u" * 3000}, "unit_id is 3,000 characters long"),
    "model_version": ({"model_version": "9" * 300}, "model_version is 300 characters long"),
    "variant": ({"variant": "v" * 257}, "variant is 257 characters long"),
    "experiment_id": ({"experiment_id": "e" * 1000}, "experiment_id is 1,000 characters long"),
    "segment": ({"segment": "s" * 999}, "segment is 999 characters long"),
    "the line": ({"error": "x" * (1 << 20)}, "the contract allows at most 1,048,576 bytes per line"),
}


@pytest.mark.parametrize("case", sorted(LONG))
def test_values_over_the_contract_length_are_rejected_with_the_limit(spec, root, warehouse_url, case):
    change, expected = LONG[case]
    land(root, "churn", "predictions", "long.jsonl", [prediction(spec), prediction(spec, **change)])
    result = run(spec, root, warehouse_url)
    assert result.count("failed") == 0, result.files
    assert (result.rows_loaded, result.rows_rejected) == (1, 1)
    assert expected in rejections(warehouse_url)[0][2]


def test_a_long_feedback_prediction_id_is_rejected(spec, root, warehouse_url):
    land(root, "churn", "feedback", "f.jsonl", [feedback("p" * 4000), feedback("ok")])
    result = run(spec, root, warehouse_url)
    assert (result.rows_loaded, result.rows_rejected) == (1, 1)
    assert "prediction_id is 4,000 characters long" in rejections(warehouse_url)[0][2]


@pytest.mark.parametrize("stamp", ["2263-01-01T00:00:00+00:00", "9999-12-31T23:59:59Z"])
def test_a_timestamp_after_2262_is_in_the_future(spec, root, warehouse_url, stamp):
    land(root, "churn", "predictions", "p.jsonl", [prediction(spec), prediction(spec, request_ts=stamp)])
    land(root, "churn", "feedback", "f.jsonl", [feedback("a", feedback_ts=stamp)])
    run(spec, root, warehouse_url)
    reasons = [reason for _, _, reason in rejections(warehouse_url)]
    assert len(reasons) == 2 and all("is in the future" in reason for reason in reasons), reasons


# ------------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("utf-16", "the file is UTF-16 (little-endian)"), ("utf-8-sig", "UTF-8 with a byte-order mark"),
     ("utf-32", "the file is UTF-32 (little-endian)"), ("utf-16-le", "looks like UTF-16 or UTF-32 without a byte-order mark")],
)  # fmt: skip
def test_a_file_in_another_encoding_fails_with_one_reason(spec, root, warehouse_url, encoding, expected):
    text = encode([prediction(spec) for _ in range(3)]).decode()
    land(root, "churn", "predictions", "wide.jsonl", text.encode(encoding))
    land_good_neighbours(spec, root)
    result = run(spec, root, warehouse_url)
    status, _, rejected, error = manifest(warehouse_url)["wide.jsonl"]
    assert (status, rejected) == ("failed", 0) and error.startswith("encoding: ") and expected in error
    assert result.rows_loaded == 2 and rejections(warehouse_url) == []


def test_a_latin1_line_is_rejected_naming_the_encoding(spec, root, warehouse_url):
    latin = orjson.dumps(prediction(spec, error="caf\u00e9 down")).decode().encode("latin-1")
    land(root, "churn", "predictions", "mixed.jsonl", [prediction(spec), latin, prediction(spec)])
    result = run(spec, root, warehouse_url)
    assert (result.rows_loaded, result.rows_rejected) == (2, 1)
    (_, line, reason), = rejections(warehouse_url)
    assert line == 2 and "encoding: the line is not UTF-8 (byte 0xE9" in reason and "Latin-1" in reason
    with psycopg.connect(warehouse_url) as conn:
        payload, = conn.execute("select payload from raw.rejected_records").fetchone()
    assert "caf\\xe9 down" in payload  # the original byte stays visible
