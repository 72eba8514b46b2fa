"""Ingestion against a real PostgreSQL: exactly once, nothing lost, every rejection explained."""

from __future__ import annotations

import gzip
from datetime import timedelta

import psycopg
import pytest

from driftloop.ingest import loader as ingest_module
from landing import DAY, NOW, feedback, land, prediction
from landing import ingest_at_now as run  # the `spec` and `root` fixtures are in tests/conftest.py

pytestmark = pytest.mark.integration


def table_counts(url):
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"select count(*) from raw.{table}").fetchone()[0]
            for table in ("predictions", "prediction_keys", "feedback", "rejected_records", "ingest_files")
        } | {"alerts": conn.execute("select count(*) from ops.alerts").fetchone()[0]}


def rejections(url):
    with psycopg.connect(url) as conn:
        return conn.execute("select line_number, reason, payload from raw.rejected_records order by path, line_number").fetchall()


def test_good_file_loads_once_and_rerun_adds_nothing(spec, root, warehouse_url):
    # GIVEN a landed file of three valid predictions
    events = [prediction(spec) for _ in range(3)]
    path = land(root, "churn", "predictions", "p1.jsonl", events)
    # WHEN it is ingested twice
    first = run(spec, root, warehouse_url)
    after_first = table_counts(warehouse_url)
    second = run(spec, root, warehouse_url)
    # THEN the rows load once, the manifest says so, and the rerun finds nothing new
    assert first.rows_loaded == 3 and first.rows_rejected == 0
    assert second.files == []
    assert table_counts(warehouse_url) == after_first
    assert after_first["predictions"] == 3 and after_first["prediction_keys"] == 3
    with psycopg.connect(warehouse_url) as conn:
        manifest = conn.execute("select path, status, rows_loaded, rows_rejected, checksum from raw.ingest_files").fetchall()
        row = conn.execute(
            "select prediction, score, scores->>'churn', event->'features'->>'plan', segment, tableoid::regclass::text "
            "from raw.predictions where prediction_id = %s", (events[0]["prediction_id"],)
        ).fetchone()  # fmt: skip
    assert manifest[0][:4] == (str(path), "loaded", 3, 0) and len(manifest[0][4]) == 64
    assert row == ("stay", 0.2, "0.2", "standard", "eu", "raw.predictions_20261120")


BAD_ROWS = {
    "malformed JSON": (b'{"prediction_id": "x", "model_name": ', "malformed JSON"),
    "missing required field": ({"drop": "model_version"}, "required field model_version is missing or null"),
    "wrong type": ({"features": {"tenure_months": "twelve"}}, "feature tenure_months must be a number (got a str)"),
    "probability outside [0,1]": ({"scores": {"stay": 1.3, "churn": -0.3}}, "scores.stay must be a probability in [0, 1] (got 1.3)"),
    "scores not summing to 1": ({"scores": {"stay": 0.5, "churn": 0.2}}, "class probabilities must sum to 1"),
    "unknown category": ({"features": {"plan": "platinum"}}, "feature plan has unknown category 'platinum'"),
    "timestamp in the future": ({"request_ts": (NOW + timedelta(days=1)).isoformat()}, "is in the future"),
    "timestamp without offset": ({"request_ts": "2026-11-20T10:00:00"}, "has no UTC offset"),
    "negative latency": ({"latency_ms": -3}, "latency_ms must be in [0, inf] (got -3)"),
    "unknown prediction class": ({"prediction": "maybe"}, "prediction 'maybe' is not one of the classes"),
    "scores for other classes": ({"scores": {"yes": 0.5, "no": 0.5}}, "scores must give a probability for exactly the classes"),
    "wrong model": ({"model_name": "fraud"}, "model_name 'fraud' is not this model"),
    "required feature missing": ({"features": {"plan": None}}, "required field feature plan is missing or null"),
    "not an object": (b"[1, 2, 3]", "expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_rejected_with_its_reason_and_nothing_else_is_lost(spec, root, warehouse_url, case):
    change, expected = BAD_ROWS[case]
    good = prediction(spec)
    if isinstance(change, bytes):
        bad = change
    else:
        bad = prediction(spec)
        if "drop" in change:
            del bad[change["drop"]]
        else:
            for key, value in change.items():
                bad[key] = {**bad[key], **value} if key == "features" else value
    land(root, "churn", "predictions", "mixed.jsonl", [good, bad])

    result = run(spec, root, warehouse_url)
    rerun = run(spec, root, warehouse_url)

    assert (result.rows_loaded, result.rows_rejected) == (1, 1)
    (line, reason, payload), = rejections(warehouse_url)
    assert line == 2 and expected in reason
    assert payload.encode() == (bad if isinstance(bad, bytes) else __import__("orjson").dumps(bad))
    assert rerun.files == [] and table_counts(warehouse_url)["predictions"] == 1


def test_all_problems_of_a_row_are_named(spec, root, warehouse_url):
    bad = prediction(spec, latency_ms=-1, segment="mars", features={**prediction(spec)["features"], "age": 7})
    land(root, "churn", "predictions", "p.jsonl", [bad])
    run(spec, root, warehouse_url)
    (_, reason, _), = rejections(warehouse_url)
    assert "latency_ms must be in [0, inf]" in reason
    assert "segment 'mars' is not one of the region values" in reason
    assert "feature age must be in [18.0, 110.0] (got 7)" in reason


def test_numeric_scores_and_failed_requests(spec, root, warehouse_url):
    # a bare number is the positive-class probability; a failed request may carry no prediction
    scored = prediction(spec, scores=0.9, prediction="churn")
    failed = prediction(spec, prediction=None, scores=None, features=None, error="timeout")
    land(root, "churn", "predictions", "p.jsonl", [scored, failed])
    result = run(spec, root, warehouse_url)
    assert (result.rows_loaded, result.rows_rejected) == (2, 0), rejections(warehouse_url)
    with psycopg.connect(warehouse_url) as conn:
        rows = dict(conn.execute("select prediction_id, score from raw.predictions").fetchall())
    assert rows[scored["prediction_id"]] == 0.9 and rows[failed["prediction_id"]] is None


def test_prediction_id_repeated_inside_and_across_files(spec, root, warehouse_url):
    first, second = prediction(spec), prediction(spec)
    land(root, "churn", "predictions", "a.jsonl", [first, second, {**first, "latency_ms": 99}])
    run(spec, root, warehouse_url)
    land(root, "churn", "predictions", "b.jsonl", [{**second, "request_ts": (NOW - timedelta(days=1)).isoformat()}, prediction(spec)])
    result = run(spec, root, warehouse_url)
    assert (result.rows_loaded, result.rows_rejected) == (1, 1)
    reasons = [reason for _, reason, _ in rejections(warehouse_url)]
    assert "first seen at line 1 of this file" in reasons[0]
    assert "already loaded from" in reasons[1] and "a.jsonl line 2" in reasons[1]
    # the clashing key's first COPY was rolled back: keys and predictions still match one to one
    assert table_counts(warehouse_url)["predictions"] == table_counts(warehouse_url)["prediction_keys"] == 3


def test_values_with_characters_copy_escapes_are_stored_exactly(spec, root, warehouse_url):
    # GIVEN a clean file (the Arrow reader's) whose strings hold what COPY's text format escapes: backslashes,
    # tabs, newlines, carriage returns, a literal \N, quotes, non-ASCII; a tab between tokens; CRLF line ends
    import orjson

    odd = ["back\\slash", "tab\there", "new\nline", "cr\rhere", "\\N", "\\.", 'say "hi"', "\u00e9t\u00e9 \U0001f600", ""]
    events = [prediction(spec, prediction_id=f"{value}-{index}", unit_id=value, model_version=value or "1",
                         experiment_id=value, error=None)
              for index, value in enumerate(odd)]  # fmt: skip
    lines = [orjson.dumps(event) for event in events]
    lines[0] = lines[0].replace(b'":', b'":\t', 3)
    land(root, "churn", "predictions", "odd.jsonl", b"\r\n".join(lines) + b"\r\n")
    # WHEN it is ingested
    result = run(spec, root, warehouse_url)
    # THEN every value, and every event, is stored as it was in the JSON
    assert (result.rows_loaded, result.rows_rejected) == (len(events), 0), rejections(warehouse_url)
    with psycopg.connect(warehouse_url) as conn:
        stored = conn.execute(
            "select prediction_id, p.unit_id, p.model_version, p.experiment_id, p.event, k.prediction_id from raw.predictions p "
            "join raw.prediction_keys k using (model_name, prediction_id) order by p.line_number"
        ).fetchall()  # fmt: skip
    assert [row[:4] for row in stored] == [
        (e["prediction_id"], e["unit_id"], e["model_version"], e["experiment_id"]) for e in events
    ]
    assert [row[4] for row in stored] == events and [row[5] for row in stored] == [e["prediction_id"] for e in events]


def test_same_file_landed_twice_under_another_name_is_a_duplicate(spec, root, warehouse_url):
    events = [prediction(spec) for _ in range(2)]
    land(root, "churn", "predictions", "one.jsonl", events)
    land(root, "churn", "predictions", "one-copy.jsonl", events, age=timedelta(minutes=30))
    result = run(spec, root, warehouse_url)
    statuses = {f.path.rsplit("/", 1)[-1]: (f.status, f.rows_loaded) for f in result.files}
    assert statuses == {"one.jsonl": ("loaded", 2), "one-copy.jsonl": ("duplicate", 0)}
    assert table_counts(warehouse_url)["predictions"] == 2
    with psycopg.connect(warehouse_url) as conn:
        error, = conn.execute("select error from raw.ingest_files where status = 'duplicate'").fetchone()
    assert "same content as" in error and "one.jsonl" in error


def test_truncated_gzip_is_failed_and_alerted_once(spec, root, warehouse_url):
    whole = gzip.compress(b"".join(__import__("orjson").dumps(prediction(spec)) + b"\n" for _ in range(50)))
    land(root, "churn", "predictions", "cut.jsonl.gz", whole[: len(whole) // 2])
    land(root, "churn", "predictions", "fine.jsonl", [prediction(spec)])
    first = run(spec, root, warehouse_url)
    run(spec, root, warehouse_url)
    by_status = {f.status: f for f in first.files}
    assert "truncated or corrupt" in by_status["failed"].error and by_status["loaded"].rows_loaded == 1
    counts = table_counts(warehouse_url)
    assert counts["alerts"] == 1 and counts["ingest_files"] == 2
    with psycopg.connect(warehouse_url) as conn:
        summary, severity = conn.execute("select summary, severity from ops.alerts").fetchone()
    assert "cut.jsonl.gz" in summary and severity == "warning"


def test_empty_file_is_recorded_as_empty(spec, root, warehouse_url):
    land(root, "churn", "predictions", "empty.jsonl", b"")
    result = run(spec, root, warehouse_url)
    assert [(f.status, f.rows_loaded) for f in result.files] == [("empty", 0)]
    assert run(spec, root, warehouse_url).files == []


def test_file_still_being_written_waits_then_loads(spec, root, warehouse_url):
    events = [prediction(spec) for _ in range(3)]
    complete = b"".join(__import__("orjson").dumps(e) + b"\n" for e in events)
    partial = complete[:-40]
    path = land(root, "churn", "predictions", "live.jsonl", partial, age=timedelta(seconds=5))
    waiting = run(spec, root, warehouse_url)
    assert [f.status for f in waiting.files] == ["in_progress"]
    assert table_counts(warehouse_url)["ingest_files"] == 0
    # the writer finishes; the file settles
    land(root, "churn", "predictions", "live.jsonl", complete, age=timedelta(minutes=5))
    done = run(spec, root, warehouse_url)
    assert [(f.status, f.rows_loaded, f.rows_rejected) for f in done.files] == [("loaded", 3, 0)]
    assert path.exists()


def test_old_file_with_cut_last_line_loads_the_complete_lines(spec, root, warehouse_url):
    complete = b"".join(__import__("orjson").dumps(prediction(spec)) + b"\n" for _ in range(3))
    land(root, "churn", "predictions", "died.jsonl", complete[:-40], age=timedelta(hours=2))
    result = run(spec, root, warehouse_url)
    assert (result.rows_loaded, result.rows_rejected) == (2, 1)
    (line, reason, _), = rejections(warehouse_url)
    assert line == 3 and "incomplete last line" in reason


def test_feedback_before_its_prediction_joins_when_it_arrives(spec, root, warehouse_url):
    early = prediction(spec)
    land(root, "churn", "feedback", "f1.jsonl", [feedback(early["prediction_id"], label="churn")])
    first = run(spec, root, warehouse_url)
    assert first.rows_loaded_of("feedback") == 1
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("select count(*) from raw.feedback_awaiting_prediction").fetchone()[0] == 1
    land(root, "churn", "predictions", "p-late.jsonl", [early])
    run(spec, root, warehouse_url)
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("select count(*) from raw.feedback_awaiting_prediction").fetchone()[0] == 0
        joined = conn.execute(
            "select p.prediction, f.label from raw.predictions p join raw.feedback f using (model_name, prediction_id)"
        ).fetchall()
    assert joined == [("stay", "churn")]


def test_feedback_rules(spec, root, warehouse_url):
    pid = prediction(spec)["prediction_id"]
    rows = [
        feedback(pid),
        feedback(pid),  # exact repeat
        feedback(pid, feedback_ts=(NOW - timedelta(minutes=5)).isoformat(), label="churn"),  # a correction: kept
        {**feedback("other"), "model_name": "no_such_model"},
        feedback("x", label="unknown"),
        feedback("y", feedback_ts="2026-11-20 10:00"),
        {k: v for k, v in feedback("z").items() if k != "label"},
    ]
    land(root, "churn", "feedback", "f.jsonl", rows)
    result = run(spec, root, warehouse_url)
    assert (result.rows_loaded, result.rows_rejected) == (2, 5)
    reasons = {line: reason for line, reason, _ in rejections(warehouse_url)}
    assert "duplicate feedback" in reasons[2]
    assert "feedback for unknown model 'no_such_model'" in reasons[4]
    assert "label 'unknown' is not one of the classes" in reasons[5]
    assert "not an RFC 3339 timestamp" in reasons[6]
    assert "required field label is missing" in reasons[7]


def test_crash_mid_file_commits_nothing_and_the_retry_loads_once(spec, root, warehouse_url, monkeypatch):
    land(root, "churn", "predictions", "p.jsonl", [prediction(spec) for _ in range(5)] + [b"not json"])
    real_reject = ingest_module._FileLoader.reject

    def die(self, *args, **kwargs):  # after the predictions COPY, before rejects + manifest counts
        raise RuntimeError("worker killed")

    monkeypatch.setattr(ingest_module._FileLoader, "reject", die)
    crashed = run(spec, root, warehouse_url)
    counts = table_counts(warehouse_url)
    # the file's rows are rolled back; it is marked failed (with the error and its path), not half-loaded
    assert counts["predictions"] == counts["prediction_keys"] == 0 and counts["ingest_files"] == 1
    assert [f.status for f in crashed.files] == ["failed"] and "RuntimeError: worker killed" in crashed.files[0].error
    monkeypatch.setattr(ingest_module._FileLoader, "reject", real_reject)
    assert run(spec, root, warehouse_url).files == []  # same bytes: not retried on every run
    result = run(spec, root, warehouse_url, retry_failed=True)
    assert (result.rows_loaded, result.rows_rejected) == (5, 1)
    assert run(spec, root, warehouse_url).files == []
    assert table_counts(warehouse_url)["predictions"] == 5


def test_events_on_several_days_land_in_their_partitions(spec, root, warehouse_url):
    events = [prediction(spec, request_ts=(NOW - timedelta(days=d)).isoformat()) for d in range(3)]
    land(root, "churn", "predictions", "p.jsonl", events, day=DAY)
    run(spec, root, warehouse_url)
    with psycopg.connect(warehouse_url) as conn:
        parts = [r[0] for r in conn.execute(
            "select tableoid::regclass::text from raw.predictions order by request_ts").fetchall()]  # fmt: skip
    assert parts == ["raw.predictions_20261118", "raw.predictions_20261119", "raw.predictions_20261120"]


def _loaded_rows(url):
    with psycopg.connect(url) as conn:
        return conn.execute(
            """select prediction_id, model_version, variant, experiment_id, unit_id, request_ts, latency_ms, event,
                      prediction, scores, score, segment, error, line_number
               from raw.predictions order by line_number"""
        ).fetchall()


def test_fast_and_exact_readers_load_identical_rows(spec, root, admin_url, monkeypatch):
    from conftest import drop_database, new_database

    from driftloop.ingest import parsing

    # GIVEN a clean file with nulls in optional fields, ints for floats, numeric scores and failed requests
    events = [prediction(spec) for _ in range(20)]
    events[3]["features"] = {**events[3]["features"], "age": None, "discount_pct": 5}
    events[5]["scores"] = {"stay": 0.25, "churn": 0.75}
    events[7] = prediction(spec, prediction=None, scores=None, features=None, error="model timeout")
    events[9]["experiment_id"] = "exp-1"
    land(root, "churn", "predictions", "clean.jsonl", events)
    fast_url, exact_url = new_database(admin_url), new_database(admin_url)
    try:
        # WHEN it is loaded by the Arrow reader, and again with the Arrow reader turned off
        readers = []
        real_read_arrow = parsing._read_arrow
        def spy(*args):
            readers.append(real_read_arrow(*args))
            return readers[-1]

        monkeypatch.setattr(parsing, "_read_arrow", spy)
        assert run(spec, root, fast_url).rows_loaded == 20
        monkeypatch.setattr(parsing, "_read_arrow", lambda *a: None)
        assert run(spec, root, exact_url).rows_loaded == 20
        # THEN the warehouse holds exactly the same rows
        assert len(readers) == 1 and readers[0] is not None and readers[0].reader == "arrow"
        assert _loaded_rows(fast_url) == _loaded_rows(exact_url)
    finally:
        drop_database(admin_url, fast_url)
        drop_database(admin_url, exact_url)


def test_arrow_reader_is_used_for_clean_files_and_gives_up_on_dirty_ones(spec):
    from driftloop.ingest.parsing import parse_file

    clean = b"".join(__import__("orjson").dumps(prediction(spec)) + b"\n" for _ in range(3))
    dirty = clean + b'{"prediction_id": 5}\n'
    assert parse_file(spec, "predictions", "a.jsonl", clean, young=False).reader == "arrow"
    assert parse_file(spec, "predictions", "a.jsonl", dirty, young=False).reader == "rows"


def test_clean_files_written_together_each_keep_their_own_record(spec, root, warehouse_url, caplog):
    # GIVEN clean files landed in order: the third reuses an id of the first, the fifth has the second's bytes,
    # the fourth has a rejected row
    files = [[prediction(spec, prediction_id=f"t-{n}-{k}") for k in range(3)] for n in range(6)]
    files[2][1]["prediction_id"] = "t-0-2"
    files[3][0]["latency_ms"] = -1.0
    for n, events in enumerate(files):
        land(root, "churn", "predictions", f"p{n}.jsonl", files[1] if n == 4 else events, age=timedelta(minutes=60 - n))
    # WHEN they are ingested (the clean runs of them several to a transaction)
    with caplog.at_level("INFO", logger="driftloop.ingest.loader"):
        result = run(spec, root, warehouse_url)
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]
    # THEN each file has its own manifest row and verdict, decided in landing order
    statuses = [(f.path.rsplit("/", 1)[-1], f.status, f.rows_loaded, f.rows_rejected) for f in result.files]
    assert statuses == [("p0.jsonl", "loaded", 3, 0), ("p1.jsonl", "loaded", 3, 0), ("p2.jsonl", "loaded", 2, 1),
                        ("p3.jsonl", "loaded", 2, 1), ("p4.jsonl", "duplicate", 0, 0), ("p5.jsonl", "loaded", 3, 0)]  # fmt: skip
    reasons = {line: reason for line, reason, _ in rejections(warehouse_url)}
    assert "already loaded from" in reasons[2] and "p0.jsonl line 3" in reasons[2] and "latency_ms" in reasons[1]
    with psycopg.connect(warehouse_url) as conn:
        manifest = conn.execute(
            """select regexp_replace(path, '^.*/', ''), status, rows_loaded, rows_rejected, min_event_ts is not null,
                      (select count(*) from raw.predictions p where p.file_id = f.file_id)
               from raw.ingest_files f order by file_id"""
        ).fetchall()  # fmt: skip
    assert [row[0] for row in manifest] == [f"p{n}.jsonl" for n in range(6)]
    assert [(status, loaded, rejected, loaded == rows) for _, status, loaded, rejected, _, rows in manifest] == [
        (s, loaded, rejected, True) for _, s, loaded, rejected in statuses]  # fmt: skip
    assert table_counts(warehouse_url)["predictions"] == table_counts(warehouse_url)["prediction_keys"] == 13
    # AND new files, one of them repeating an id loaded by the first run, load the same way; reruns add nothing
    land(root, "churn", "predictions", "q0.jsonl", [prediction(spec) for _ in range(2)], age=timedelta(minutes=20))
    land(root, "churn", "predictions", "q1.jsonl", [prediction(spec), files[5][0]], age=timedelta(minutes=19))
    land(root, "churn", "predictions", "q2.jsonl", [prediction(spec)], age=timedelta(minutes=18))
    caplog.clear()
    with caplog.at_level("INFO", logger="driftloop.ingest.loader"):
        again = run(spec, root, warehouse_url)
    assert [r for r in caplog.records if "one by one" in r.getMessage()]  # the id loaded before: written alone
    assert [(f.status, f.rows_loaded, f.rows_rejected) for f in again.files] == [("loaded", 2, 0), ("loaded", 1, 1), ("loaded", 1, 0)]
    assert any("already loaded from" in reason and "p5.jsonl line 1" in reason for _, reason, _ in rejections(warehouse_url))
    assert run(spec, root, warehouse_url).files == []
    assert table_counts(warehouse_url)["predictions"] == table_counts(warehouse_url)["prediction_keys"] == 17
