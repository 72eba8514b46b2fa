"""`driftloop status` and the `driftloop ingest` report: true examples, paths from the landing root,
100 columns, and a readable report for many files."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.core.spec import get_spec
from landing import DAY, land, prediction

pytestmark = pytest.mark.integration
runner = CliRunner()


def _invoke(*args):
    done = runner.invoke(app, list(args))
    return done.exit_code, done.output


def test_status_shows_a_true_example_per_rule_within_100_columns(warehouse_url, tmp_path):
    # GIVEN two rows broken by the same rule (range) with different reasons, the first on line 1,
    # in a file with a long name, and a skipped file
    spec = get_spec("churn")
    name = "serving-logger-eu-west-1-" + "x" * 60 + ".jsonl"
    rows = [prediction(spec, latency_ms=-1), prediction(spec, features={**prediction(spec)["features"], "age": 7})]
    land(tmp_path, "churn", "predictions", name, rows)
    land(tmp_path, "churn", "predictions", "export.csv", b"a,b\n")
    assert _invoke("ingest", "--model", "churn", "--landing", str(tmp_path), "--url", warehouse_url)[0] == 0
    # WHEN status is printed
    code, output = _invoke("status", "--model", "churn", "--url", warehouse_url)
    # THEN the example of the rule is line 1 with line 1's reason, paths start at the landing root
    assert code == 0, output
    lines = output.splitlines()
    example = next(i for i, line in enumerate(lines) if "predictions / range, e.g." in line)
    location = "".join(part.strip() for part in lines[example:example + 3])
    assert f"churn/predictions/dt={DAY}/serving-logger" in location and ".jsonl:1" in location
    assert "latency_ms must be in [0, inf] (got -1)" in " ".join(lines[example + 1 : example + 4])
    assert f"[skipped] churn/predictions/dt={DAY}/export.csv: unsupported file type (.csv)" in output
    assert str(tmp_path) not in output
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)


def test_ingest_report_for_many_files_shows_day_folders_and_a_line_per_later_day(warehouse_url, tmp_path):
    # GIVEN eight days of the same file name (part-0.jsonl), one of them corrupt on the seventh day
    spec = get_spec("churn")
    for offset in range(8):
        day = f"2026-11-{12 + offset:02d}"
        age = timedelta(hours=10 - offset)
        land(tmp_path, "churn", "predictions", "part-0.jsonl", [prediction(spec)], day=day, age=age)
        land(tmp_path, "churn", "predictions", "part-1.jsonl", [prediction(spec)], day=day, age=age)
    land(tmp_path, "churn", "predictions", "part-2.jsonl.gz", b"\x1f\x8b\x08\x00broken", day="2026-11-18",
         age=timedelta(hours=3))  # fmt: skip
    # WHEN ingest runs
    code, output = _invoke("ingest", "--model", "churn", "--landing", str(tmp_path), "--url", warehouse_url)
    # THEN the first three days list their files with the dt= folder, later days get one line each,
    # and the failed file is listed on its own
    assert code == 2
    lines = output.splitlines()
    assert sum("dt=2026-11-12/part-0.jsonl" in line for line in lines) == 1
    assert sum("dt=2026-11-14/part-1.jsonl" in line for line in lines) == 1
    assert not any("dt=2026-11-15/part-0.jsonl" in line for line in lines)
    day_lines = [line for line in lines if "files)" in line]
    assert len(day_lines) == 5 and "dt=2026-11-15/ (2 files)" in day_lines[0] and "2 loaded" in day_lines[0]
    assert any("dt=2026-11-18/part-2.jsonl.gz" in line and "failed" in line for line in lines)
    assert "1 failed, 2 loaded" in next(line for line in day_lines if "dt=2026-11-18" in line)
    assert "17 files, 16 rows loaded, 0 rejected, 1 files failed." in output
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
