"""Ingest throughput: the full driftloop path vs a plain COPY of the same rows, in one run.

    .venv/bin/python benchmarks/ingest.py [--rows 1000000] [--files 10]
    .venv/bin/python benchmarks/ingest.py --small-files 600 [--rows-per-file 200]   # many small files vs one

Lands N predictions of a 20-feature binary model (JSON lines, split into hourly-sized files) and
times `driftloop.ingest.loader.ingest` (discover, read, parse, GX validation, dedup, COPY into the
partitioned raw.predictions and raw.prediction_keys, manifest) into a fresh warehouse database.
The baseline is a plain COPY of the same rows, already in their final column form, into an empty
table with the same columns. Prints rows/s for both and the ratio (goal: >= 0.5).
Uses the embedded warehouse unless DRIFTLOOP_WAREHOUSE_URL is set.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import psycopg  # noqa: E402

from driftloop.core import warehouse  # noqa: E402
from driftloop.core.spec import ModelSpec  # noqa: E402
from driftloop.ingest.loader import ingest  # noqa: E402
from driftloop.sim.world import Scenario, generate_predictions, prediction_lines  # noqa: E402

COLUMNS = (
    "model_name", "prediction_id", "model_version", "variant", "experiment_id", "unit_id", "request_ts",
    "latency_ms", "event", "prediction", "scores", "score", "segment", "error", "file_id", "line_number",
)  # fmt: skip


def benchmark_spec() -> ModelSpec:
    numeric = [{"name": f"num_{i:02d}", "type": "numeric", "required": i % 3 != 0, "min": -1e6, "max": 1e6} for i in range(14)]
    categorical = [
        {"name": f"cat_{i}", "type": "categorical", "required": True, "categories": [f"c{j}" for j in range(8)]}
        for i in range(5)
    ]
    return ModelSpec.model_validate(
        {
            "name": "bench",
            "task": "binary_classification",
            "classes": ["no", "yes"],
            "positive_class": "yes",
            "features": [*numeric, *categorical, {"name": "flag", "type": "boolean", "required": False}],
            "segment": {"name": "region", "values": ["na", "eu", "apac"]},
        }
    )


def _database(admin_url: str) -> str:
    return warehouse.create_database(admin_url, f"bench_{uuid.uuid4().hex[:8]}")


def _drop(admin_url: str, url: str) -> None:
    warehouse.drop_database(admin_url, url)


def _copy_text(lines: bytes, model_name: str) -> bytes:
    """The landed rows as COPY text in raw.predictions' columns (prepared outside the timing)."""
    import orjson

    out = io.StringIO()
    for number, line in enumerate(lines.splitlines(), start=1):
        event = orjson.loads(line)
        scores = event["scores"]
        values = [
            model_name, event["prediction_id"], event["model_version"], event["variant"], event["experiment_id"],
            event["unit_id"], event["request_ts"], event["latency_ms"], line.decode(),
            event["prediction"], orjson.dumps(scores).decode(), scores.get("yes"), event["segment"], event["error"], 1, number,
        ]  # fmt: skip
        out.write("\t".join("\\N" if v is None else str(v).replace("\\", "\\\\") for v in values) + "\n")
    return out.getvalue().encode()


def _land(work: Path, spec: ModelSpec, lines: bytes, files: int, now: datetime, start: datetime,
          prefix: str = "predictions") -> None:
    """Split the JSON lines into `files` files of one day folder, old enough to have settled."""
    all_lines = lines.splitlines(keepends=True)
    per_file = -(-len(all_lines) // files)
    folder = work / "landing" / spec.name / "predictions" / f"dt={start.date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    old = (now - timedelta(hours=1)).timestamp()
    for index in range(files):
        path = folder / f"{prefix}-{index:04d}.jsonl"
        path.write_bytes(b"".join(all_lines[index * per_file : (index + 1) * per_file]))
        os.utime(path, (old, old))


def _timed_ingest(admin: str, spec: ModelSpec, landing: Path, now: datetime) -> tuple[float, int]:
    """The full ingest path into a fresh, migrated warehouse database: (seconds, rows loaded). GX is
    imported before (once a process, ~5 s) and no GX verdict of an earlier run is kept."""
    from driftloop.ingest import validation

    validation._gx()
    validation._VERDICTS.clear()
    url = _database(admin)
    try:
        warehouse.migrate(url)
        t0 = time.perf_counter()
        result = ingest(spec, landing_root=str(landing), url=url, now=now, kinds=["predictions"])
        seconds = time.perf_counter() - t0
        with psycopg.connect(url) as conn:
            loaded = conn.execute("select count(*) from raw.predictions").fetchone()[0]
        assert loaded == result.rows_loaded, (loaded, result.rows_loaded, result.rows_rejected)
        return seconds, loaded
    finally:
        _drop(admin, url)


def _times(rows: int, hours: int) -> tuple[datetime, datetime, datetime]:
    now = datetime.now(UTC).replace(microsecond=0)
    start = (now - timedelta(days=2)).replace(hour=0, minute=0, second=0)
    return now, start, start + timedelta(hours=hours)


def measure(rows: int = 1_000_000, files: int = 10, verbose: bool = True) -> dict:
    """Ingest of `rows` predictions in `files` files vs a plain COPY of the same rows (seconds of both)."""
    spec = benchmark_spec()
    admin = warehouse.resolve_url()
    now, start, end = _times(rows, files)
    work = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    try:
        t0 = time.perf_counter()
        frame = generate_predictions(spec, rows, start, end, Scenario(seed=1))
        lines = prediction_lines(frame)
        del frame
        _land(work, spec, lines, files, now, start)
        copy_payload = _copy_text(lines, spec.name)
        size_mb = len(lines) / 1e6
        del lines
        if verbose:
            print(f"data: {rows:,} predictions, {len(spec.features)} features, {files} files, {size_mb:.0f} MB "
                  f"of JSON lines (prepared in {time.perf_counter() - t0:.0f}s)")  # fmt: skip

        # Baseline: plain COPY of the same rows into an empty table with the same columns.
        baseline_url = _database(admin)
        with psycopg.connect(baseline_url) as conn:
            conn.execute(
                """create table plain_predictions (
                    model_name text, prediction_id text, model_version text, variant text, experiment_id text,
                    unit_id text, request_ts timestamptz, latency_ms double precision, event jsonb,
                    prediction text, scores jsonb, score double precision, segment text, error text,
                    file_id bigint, line_number integer)"""
            )
            conn.commit()
            t0 = time.perf_counter()
            with conn.cursor() as cursor, cursor.copy(
                f"copy plain_predictions ({', '.join(COLUMNS)}) from stdin"
            ) as copy:
                for offset in range(0, len(copy_payload), 1 << 20):
                    copy.write(copy_payload[offset : offset + (1 << 20)])
            conn.commit()
            copy_seconds = time.perf_counter() - t0
            copied = conn.execute("select count(*) from plain_predictions").fetchone()[0]
        _drop(admin, baseline_url)
        del copy_payload

        ingest_seconds, loaded = _timed_ingest(admin, spec, work / "landing", now)
        assert copied == rows and loaded == rows, (copied, loaded)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": rows, "files": files, "driftloop_s": ingest_seconds, "baseline_s": copy_seconds}


def measure_small_files(files: int = 600, rows_per_file: int = 200, verbose: bool = True) -> dict:
    """Ingest of `files` files of `rows_per_file` rows vs the same rows in one file (seconds of both)."""
    spec = benchmark_spec()
    admin = warehouse.resolve_url()
    rows = files * rows_per_file
    now, start, end = _times(rows, 20)
    many, one = Path(tempfile.mkdtemp(prefix="dl-bench-many-")), Path(tempfile.mkdtemp(prefix="dl-bench-one-"))
    try:
        lines = prediction_lines(generate_predictions(spec, rows, start, end, Scenario(seed=1)))
        _land(many, spec, lines, files, now, start)
        _land(one, spec, lines, 1, now, start)
        one_seconds, one_loaded = _timed_ingest(admin, spec, one / "landing", now)
        many_seconds, many_loaded = _timed_ingest(admin, spec, many / "landing", now)
        assert one_loaded == many_loaded == rows, (one_loaded, many_loaded, rows)
    finally:
        shutil.rmtree(many, ignore_errors=True)
        shutil.rmtree(one, ignore_errors=True)
    overhead_ms = (many_seconds - one_seconds) / files * 1000
    if verbose:
        print(f"{files} files of {rows_per_file} rows: {many_seconds:.1f} s; the same {rows:,} rows in one file: "
              f"{one_seconds:.1f} s; per-file overhead {overhead_ms:.1f} ms")  # fmt: skip
    return {"rows": rows, "files": files, "driftloop_s": many_seconds, "baseline_s": one_seconds,
            "per_file_ms": overhead_ms}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--small-files", type=int, default=0,
                        help="instead: this many files of --rows-per-file rows vs the same rows in one file")
    parser.add_argument("--rows-per-file", type=int, default=200)
    args = parser.parse_args()
    if args.small_files:
        measure_small_files(args.small_files, args.rows_per_file)
        return
    numbers = measure(args.rows, args.files)
    copy_rate, ingest_rate = args.rows / numbers["baseline_s"], args.rows / numbers["driftloop_s"]
    print(f"plain COPY     : {numbers['baseline_s']:7.1f} s  {copy_rate:>10,.0f} rows/s")
    print(f"driftloop ingest: {numbers['driftloop_s']:7.1f} s  {ingest_rate:>10,.0f} rows/s")
    print(f"ratio ingest / plain COPY: {ingest_rate / copy_rate:.2f}  (goal >= 0.50)")


if __name__ == "__main__":
    main()
