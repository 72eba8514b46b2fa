"""dbt metrics layer: an hourly incremental build vs a full rebuild, on a month of raw predictions.

    .venv/bin/python benchmarks/metrics.py [--rows 10000000] [--days 30] [--new-rows 100000]
        [--late-labels 20000] [--late-days 3] [--label-delay-hours 24] [--select ...] [--no-verify] [--keep]

    .venv/bin/python benchmarks/metrics.py --rows 1000000 --days 3     # a quick run (~7 minutes)

Goal (the issue): with 10,000,000 predictions in raw (about 30 days), the hourly incremental build
after 100,000 new rows takes <= 10 % of a full rebuild.

What it does, in a fresh database on the warehouse (the embedded PostgreSQL unless
DRIFTLOOP_WAREHOUSE_URL is set), migrated, with the churn spec (include/specs/churn.yaml) synced:

1. SETUP (not measured): ``--rows`` churn predictions over ``--days`` days ending at S (the start
   of the last whole hour), two arms (control v1 80 %, challenger v2 20 %), made by
   ``driftloop.simulate.generate_predictions``, and feedback for ~70 % of them with exponential
   delays (mean ``--label-delay-hours``); feedback after S has not arrived yet. Running all that
   through ``driftloop.ingest`` would take ~30 k rows/s, so instead the raw tables are bulk-loaded
   with COPY (CSV written by pyarrow, one day at a time, the next day generated while the server
   loads this one) in the shape ingest writes: every column of raw.predictions (``event`` = the
   JSON line as landed, ``scores`` built like ingest builds it), raw.prediction_keys, raw.feedback,
   and one raw.ingest_files manifest row per hourly file (per arm for predictions), so every
   file_id is valid. Day partitions come from ``raw.ensure_predictions_partition(day)``. Each hourly
   file is "loaded" 5 minutes after its hour (``loaded_at``), in loaded_at order, as ingest would
   have loaded it; then ``vacuum analyze`` (what autovacuum would have done over a month).
2. FULL REBUILD (measured): ``driftloop.metrics.build(url, full_refresh=True, as_of=S + 10 min)``.
3. THE NEXT HOUR (setup, not measured): ``--new-rows`` predictions requested in [S, S + 1 h) and the
   next ``--late-labels`` labels to arrive for predictions of the ``--late-days`` days before S (late
   feedback for older windows; squeezed into that hour if they would take longer), COPYed in the
   same shape with ``loaded_at`` = now().
4. INCREMENTAL BUILD (measured): ``driftloop.metrics.build(url, as_of=S + 1 h 10 min)``. Like an
   hourly run in production, ``int_labeled_predictions`` also re-reads the last files loaded before
   the full build (at S + 5 min: within dbt's ``loaded_at_lookback`` of 1 hour), finds those rows
   unchanged and does not rewrite them; the marts recompute the windows of the rows it did rewrite
   (the new hour's predictions, the late labels' predictions) and the windows whose label maturity
   changed with the later as_of.

Prints both wall times, the ratio incremental / full (goal <= 0.10), and per model (marts, views,
tests) dbt's own execution times from run_results.json for both builds, plus how many windows each
mart rewrote. dbt runs the marts on 4 threads, so on a small machine their times overlap.

Verification (default; ``--no-verify`` skips it, since it costs one more full rebuild): a
``--full-refresh`` with the incremental build's as_of, then every row of every mart compared with
what the incremental build left (exactly, and within 1e-9 for floats).

Every build is ``dbt build --select`` the metrics layer (its five marts and everything upstream, with
their unit and data tests; ``--select`` to change it, ``--select`` alone for the whole project).
dbt's log lines are hidden (errors still show) unless ``--dbt-output``.

``--keep`` keeps the database and the dbt target folder (compiled SQL; their paths are printed);
otherwise both are dropped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

# (formerly) benchmarks/profile.py would shadow the standard library's `profile` (dbt imports cProfile, which
# imports it): this folder is on sys.path only because the script lives in it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pa_csv  # noqa: E402
from psycopg import sql  # noqa: E402

from driftloop import metrics, warehouse  # noqa: E402
from driftloop.settings import specs_dir  # noqa: E402
from driftloop.simulate import Scenario, feedback_lines, generate_predictions, prediction_lines  # noqa: E402
from driftloop.spec import ModelSpec, load_spec  # noqa: E402

MODEL = "churn"
RUN_ID = "benchmark-metrics"
ARMS = (  # (share of the traffic, scenario)
    (0.8, {"model_version": "1", "variant": "control"}),
    (0.2, {"model_version": "2", "variant": "challenger"}),
)
LABEL_RATE = 0.7
LOAD_DELAY = timedelta(minutes=5)  # an hourly file is loaded this long after its hour ends
HOUR = timedelta(hours=1)
MARTS = (
    "fct_model_quality",
    "fct_class_quality",
    "fct_confusion_matrix",
    "fct_latency",
    "fct_label_coverage",
)
# The metrics layer: its marts, everything upstream of them, their unit tests and data tests.
METRICS_SELECTION = tuple(f"+{mart}" for mart in MARTS)
MART_KEYS = {
    "fct_model_quality": (),
    "fct_class_quality": ("class_name",),
    "fct_confusion_matrix": ("actual_class", "predicted_class"),
    "fct_latency": (),
    "fct_label_coverage": (),
}
GRAIN = ("model_name", "model_version", "variant", "segment", "window_size", "window_start")
WINDOW_KEY = ("model_name", "window_size", "window_start")
TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------------------
# Databases


def _database(admin_url: str) -> str:
    return warehouse.create_database(admin_url, f"bench_metrics_{uuid.uuid4().hex[:8]}")


def _drop(admin_url: str, url: str) -> None:
    warehouse.drop_database(admin_url, url)


# --------------------------------------------------------------------------------------------------
# Bulk loading in ingest's shape (setup only)


def _copy_csv(conn: psycopg.Connection, table: str, arrow_table: pa.Table) -> None:
    """COPY an Arrow table (column names = target columns) as CSV, like ingest's _copy_arrow."""
    if arrow_table.num_rows == 0:
        return
    sink = io.BytesIO()
    pa_csv.write_csv(arrow_table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))
    statement = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        sql.SQL(".").join(map(sql.Identifier, table.split("."))),
        sql.SQL(", ").join(map(sql.Identifier, arrow_table.column_names)),
    )
    view = sink.getbuffer()
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for offset in range(0, len(view), 8 << 20):
            copy.write(view[offset : offset + (8 << 20)])


def _split_lines(lines: bytes) -> pa.Array:
    """JSON lines (each ending in a newline) -> one string per line, split in C++."""
    if not lines:
        return pa.array([], pa.string())
    parts = pc.split_pattern(pa.array([lines], pa.large_binary()), b"\n").flatten()
    return parts.slice(0, len(parts) - 1).cast(pa.large_string())


def _file_bytes(events: pa.Array) -> bytes:
    """The landed file that holds these events: the lines, each ending in a newline."""
    joined = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array([0, len(events)], pa.int64()), events),
        pa.scalar("\n", events.type),
    )
    return joined[0].as_py().encode() + b"\n"


def _timestamps(values: np.ndarray) -> pa.Array:
    """Epoch milliseconds -> timestamptz (CSV: '2026-01-01 00:00:00.667Z', which Postgres reads)."""
    return pa.array(values.astype("datetime64[ms]")).cast(pa.timestamp("ms", tz="UTC"))


def _epoch_ms(column: pd.Series) -> np.ndarray:
    return (
        column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ms]").astype(np.int64)
    )


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass
class Manifest:
    """raw.ingest_files rows, with file ids assigned here (the sequence is moved past them at the end)."""

    next_id: int = 1
    rows: list[dict] = field(default_factory=list)

    def add(
        self,
        kind: str,
        path: str,
        data: bytes,
        rows: int,
        min_ms: int,
        max_ms: int,
        loaded_at: datetime | None,
    ) -> int:
        file_id = self.next_id
        self.next_id += 1
        self.rows.append(
            {
                "file_id": file_id, "model_name": MODEL, "kind": kind, "path": path, "size_bytes": len(data),
                "checksum": hashlib.sha256(data).hexdigest(), "status": "loaded", "rows_loaded": rows,
                "rows_rejected": 0, "min_event_ts": datetime.fromtimestamp(min_ms / 1000, UTC),
                "max_event_ts": datetime.fromtimestamp(max_ms / 1000, UTC), "run_id": RUN_ID, "loaded_at": loaded_at,
            }
        )  # fmt: skip
        return file_id

    def take(self) -> pa.Table:
        rows, self.rows = self.rows, []
        table = pa.Table.from_pylist(rows)
        if rows and rows[0]["loaded_at"] is None:  # now(): the column default, like ingest
            table = table.drop_columns(["loaded_at"])
        return table


def _hour_label(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%dT%H")


def _day_label(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _hourly_files(hours_ms: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(hour, first row, end row) of each run of equal hours (rows sorted by time)."""
    if len(hours_ms) == 0:
        return
    starts = np.flatnonzero(np.r_[True, hours_ms[1:] != hours_ms[:-1]])
    ends = np.r_[starts[1:], len(hours_ms)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(hours_ms[start]), start, end


def _scores_json(frame: pd.DataFrame, classes: list[str]) -> pa.Array:
    """{"class": probability, ...} like ingest builds it (class order of the spec)."""
    parts: list = []
    for index, cls in enumerate(classes):
        parts.append(("{" if index == 0 else ",") + json.dumps(cls) + ":")
        parts.append(pc.cast(pa.array(frame[f"scores.{cls}"].to_numpy()), pa.string()))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


def _strings(column: pd.Series) -> pa.Array:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return pa.array(column.astype(object).where(column.notna(), None), pa.string())
    return pa.array(column, pa.string(), from_pandas=True)


def prediction_tables(
    spec: ModelSpec, frame: pd.DataFrame, manifest: Manifest, folder: str, loaded_at: bool
) -> tuple[pa.Table, pa.Table]:
    """(raw.predictions rows, raw.prediction_keys rows) of one arm's frame (sorted by request_ts), one
    manifest row per hour; loaded_at = 5 minutes after the hour, or None (now(), the default)."""
    events = _split_lines(prediction_lines(frame))
    request_ms = _epoch_ms(frame["request_ts"])
    hours = request_ms - request_ms % 3_600_000
    file_ids = np.empty(len(frame), np.int64)
    line_numbers = np.empty(len(frame), np.int32)
    loaded = np.empty(len(frame), np.int64)
    variant = str(frame["variant"].iloc[0])
    for hour, start, end in _hourly_files(hours):
        at = datetime.fromtimestamp(hour / 1000, UTC) + HOUR + LOAD_DELAY if loaded_at else None
        path = f"{folder}/{MODEL}/predictions/dt={_day_label(hour)}/predictions-{_hour_label(hour)}-{variant}.jsonl"
        file_ids[start:end] = manifest.add(
            "predictions", path, _file_bytes(events.slice(start, end - start)), end - start,
            int(request_ms[start]), int(request_ms[end - 1]), at,
        )  # fmt: skip
        line_numbers[start:end] = np.arange(1, end - start + 1)
        loaded[start:end] = _ms(at) if at else 0
    classes = [str(c) for c in spec.classes]
    n = len(frame)
    columns = {
        "model_name": pa.repeat(pa.scalar(MODEL), n),
        "prediction_id": _strings(frame["prediction_id"]),
        "model_version": _strings(frame["model_version"]),
        "variant": _strings(frame["variant"]),
        "experiment_id": _strings(frame["experiment_id"]),
        "unit_id": _strings(frame["unit_id"]),
        "request_ts": _timestamps(request_ms),
        "latency_ms": pa.array(frame["latency_ms"].to_numpy()),
        "event": events,
        "prediction": _strings(frame["prediction"]),
        "scores": _scores_json(frame, classes),
        "score": pa.array(frame[f"scores.{spec.positive_class}"].to_numpy()),
        "segment": _strings(frame["segment"]),
        "error": _strings(frame["error"]),
        "file_id": pa.array(file_ids),
        "line_number": pa.array(line_numbers),
    }
    if loaded_at:
        columns["loaded_at"] = _timestamps(loaded)
    table = pa.table(columns)
    keys = table.select(["model_name", "prediction_id", "request_ts", "file_id", "line_number"])
    return table, keys


def feedback_rows(frame: pd.DataFrame) -> pa.Table:
    """The feedback events of a frame's labelled rows (not loaded yet: they wait for their hour)."""
    labelled = frame[frame["labelled"].to_numpy(dtype=bool)]
    return pa.table(
        {
            "prediction_id": _strings(labelled["prediction_id"]),
            "label": _strings(labelled["label"]),
            "outcome": pa.array(labelled["outcome"].to_numpy()),
            "feedback_ms": pa.array(_epoch_ms(labelled["feedback_ts"])),
            "request_ms": pa.array(_epoch_ms(labelled["request_ts"])),
            "event": _split_lines(feedback_lines(labelled, MODEL)),
        }
    )


def feedback_table(rows: pa.Table, manifest: Manifest, folder: str, loaded_at: bool) -> pa.Table:
    """raw.feedback rows (sorted by feedback_ts), one manifest row per feedback hour."""
    rows = rows.take(pc.sort_indices(rows, [("feedback_ms", "ascending"), ("prediction_id", "ascending")]))
    feedback_ms = rows["feedback_ms"].to_numpy()
    hours = feedback_ms - feedback_ms % 3_600_000
    n = rows.num_rows
    file_ids = np.empty(n, np.int64)
    line_numbers = np.empty(n, np.int32)
    loaded = np.empty(n, np.int64)
    events = rows["event"].combine_chunks()
    for hour, start, end in _hourly_files(hours):
        at = datetime.fromtimestamp(hour / 1000, UTC) + HOUR + LOAD_DELAY if loaded_at else None
        path = f"{folder}/{MODEL}/feedback/dt={_day_label(hour)}/feedback-{_hour_label(hour)}.jsonl"
        file_ids[start:end] = manifest.add(
            "feedback", path, _file_bytes(events.slice(start, end - start)), end - start,
            int(feedback_ms[start]), int(feedback_ms[end - 1]), at,
        )  # fmt: skip
        line_numbers[start:end] = np.arange(1, end - start + 1)
        loaded[start:end] = _ms(at) if at else 0
    columns = {
        "model_name": pa.repeat(pa.scalar(MODEL), n),
        "prediction_id": rows["prediction_id"],
        "label": rows["label"],
        "outcome": rows["outcome"],
        "feedback_ts": _timestamps(feedback_ms),
        "source": pa.repeat(pa.scalar("explicit"), n),
        "event": events,
        "file_id": pa.array(file_ids),
        "line_number": pa.array(line_numbers),
    }
    if loaded_at:
        columns["loaded_at"] = _timestamps(loaded)
    return pa.table(columns)


@dataclass
class Batch:
    """What one transaction loads: the day partitions it needs, then its manifest and rows."""

    days: list
    manifest: pa.Table
    predictions: list[pa.Table] = field(default_factory=list)
    keys: list[pa.Table] = field(default_factory=list)
    feedback: pa.Table | None = None

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.predictions)


def load_batch(url: str, batch: Batch) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        warehouse.ensure_day_partitions(conn, batch.days)
    with psycopg.connect(url) as conn, conn.transaction():
        _copy_csv(conn, "raw.ingest_files", batch.manifest)
        for keys in batch.keys:
            _copy_csv(conn, "raw.prediction_keys", keys)
        for predictions in batch.predictions:
            _copy_csv(conn, "raw.predictions", predictions)
        if batch.feedback is not None:
            _copy_csv(conn, "raw.feedback", batch.feedback)


def _arm_frames(
    spec: ModelSpec, rows: int, start: datetime, end: datetime, seed: int, delay: timedelta
) -> list[pd.DataFrame]:
    frames = []
    remaining = rows
    for index, (share, arm) in enumerate(ARMS):
        n = remaining if index == len(ARMS) - 1 else round(rows * share)
        remaining -= n
        scenario = Scenario(seed=seed + index, label_rate=LABEL_RATE, label_delay_mean=delay, **arm)
        if n:
            frames.append(generate_predictions(spec, n, start, end, scenario))
    return frames


def _days(start: datetime, end: datetime) -> list:
    last = (end - timedelta(milliseconds=1)).date()
    day, days = start.date(), []
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    return days


@dataclass
class History:
    predictions: int = 0
    feedback: int = 0
    pending: pa.Table | None = None  # labels that arrive after S, for predictions of the late days


def load_history(url: str, spec: ModelSpec, args: argparse.Namespace, s: datetime, folder: str) -> History:
    """args.rows predictions over [S - days, S) and the feedback that arrived before S, day by day:
    the next day is generated while the server loads this one."""
    delay = timedelta(hours=args.label_delay_hours)
    first = s - timedelta(days=args.days)
    late_from = _ms(s - timedelta(days=args.late_days))
    manifest = Manifest()
    history = History()
    waiting: list[pa.Table] = []  # feedback not loaded yet (its hour has not come)
    per_day = args.rows // args.days
    loading: Future | None = None
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-copy") as pool:
        for day in range(args.days):
            start = first + timedelta(days=day)
            end = start + timedelta(days=1)
            rows = per_day if day < args.days - 1 else args.rows - per_day * (args.days - 1)
            batch_predictions, batch_keys = [], []
            for frame in _arm_frames(spec, rows, start, end, args.seed + 100 * day, delay):
                predictions, keys = prediction_tables(spec, frame, manifest, folder, loaded_at=True)
                batch_predictions.append(predictions)
                batch_keys.append(keys)
                waiting.append(feedback_rows(frame))
                del frame
            # every label that arrives before `end` is known now: later predictions come after it
            known = pa.concat_tables(waiting)
            arrived = pc.less(known["feedback_ms"], _ms(min(end, s)))
            feedback = feedback_table(known.filter(arrived), manifest, folder, loaded_at=True)
            waiting = [known.filter(pc.invert(arrived))]
            batch = Batch(_days(start, end), manifest.take(), batch_predictions, batch_keys, feedback)
            history.predictions += batch.rows
            history.feedback += feedback.num_rows
            if loading is not None:
                loading.result()
            loading = pool.submit(load_batch, url, batch)
            elapsed = time.perf_counter() - started
            print(f"  day {day + 1:>2}/{args.days}: {history.predictions:>11,} predictions, "
                  f"{history.feedback:>11,} labels generated ({elapsed:5.0f} s)", flush=True)  # fmt: skip
        if loading is not None:
            loading.result()
    rest = pa.concat_tables(waiting)
    history.pending = rest.filter(pc.greater_equal(rest["request_ms"], late_from))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select setval('raw.ingest_files_file_id_seq', %s, false)", (manifest.next_id,))
    return history


def land_next_hour(url: str, spec: ModelSpec, args: argparse.Namespace, s: datetime, history: History,
                   folder: str) -> tuple[int, int]:  # fmt: skip
    """args.new_rows predictions requested in [S, S + 1 h) and the next args.late_labels labels for
    predictions of the late days, loaded now (loaded_at = now(), like ingest)."""
    manifest = Manifest(next_id=_next_file_id(url))
    frames = _arm_frames(
        spec, args.new_rows, s, s + HOUR, args.seed + 7_919, timedelta(hours=args.label_delay_hours)
    )
    tables = [
        prediction_tables(spec, frame, manifest, f"{folder}/next-hour", loaded_at=False) for frame in frames
    ]
    pending = history.pending
    pending = pending.take(
        pc.sort_indices(pending, [("feedback_ms", "ascending"), ("prediction_id", "ascending")])
    )
    late = pending.slice(0, min(args.late_labels, pending.num_rows))
    feedback_ms = late["feedback_ms"].to_numpy()
    s_ms, hour_ms = _ms(s), 3_600_000
    if len(feedback_ms) and feedback_ms[-1] >= s_ms + hour_ms:  # squeeze them into the hour, in order
        span = max(int(feedback_ms[-1]) - s_ms + 1, 1)
        feedback_ms = s_ms + ((feedback_ms - s_ms) * (hour_ms - 1) // span)
        late = late.set_column(
            late.schema.get_field_index("feedback_ms"), "feedback_ms", pa.array(feedback_ms)
        )
        late = late.set_column(late.schema.get_field_index("event"), "event", _feedback_events(late))
    feedback = feedback_table(late, manifest, f"{folder}/next-hour", loaded_at=False)
    load_batch(
        url, Batch([s.date()], manifest.take(), [t[0] for t in tables], [t[1] for t in tables], feedback)
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select setval('raw.ingest_files_file_id_seq', %s, false)", (manifest.next_id,))
    return sum(t[0].num_rows for t in tables), feedback.num_rows


def _feedback_events(rows: pa.Table) -> pa.Array:
    """Feedback JSON lines again after their feedback_ts changed (same fields and order)."""
    frame = pd.DataFrame(
        {
            "prediction_id": rows["prediction_id"].to_pandas(),
            "label": rows["label"].to_pandas(),
            "outcome": rows["outcome"].to_pandas(),
            "feedback_ts": pd.to_datetime(rows["feedback_ms"].to_numpy(), unit="ms", utc=True),
            "labelled": True,
        }
    )
    return _split_lines(feedback_lines(frame, MODEL))


def _next_file_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select coalesce(max(file_id), 0) + 1 from raw.ingest_files").fetchone()[0]


# --------------------------------------------------------------------------------------------------
# Builds and their figures


@dataclass
class BuildResult:
    seconds: float
    nodes: dict[str, dict]  # unique_id -> run_results entry


def timed_build(
    url: str, target: Path, logs: Path, *, full_refresh: bool, as_of: datetime, select: list[str]
) -> BuildResult:
    (target / "run_results.json").unlink(missing_ok=True)
    started = time.perf_counter()
    metrics.build(
        url, full_refresh=full_refresh, as_of=as_of, select=select, target_path=target, log_path=logs
    )
    seconds = time.perf_counter() - started
    results = json.loads((target / "run_results.json").read_text())["results"]
    return BuildResult(seconds, {r["unique_id"]: r for r in results})


def _short(unique_id: str) -> str:
    parts = unique_id.split(".")
    return parts[2] if parts[0] in ("model", "unit_test") and len(parts) > 2 else ".".join(parts[2:])


def print_build_table(full: BuildResult, incremental: BuildResult) -> None:
    def kind(unique_id: str) -> str:
        return unique_id.split(".")[0]

    def rows(result: BuildResult, unique_id: str) -> str:
        response = result.nodes.get(unique_id, {}).get("adapter_response") or {}
        value = response.get("rows_affected")
        return f"{value:>10,}" if isinstance(value, int) and value >= 0 else " " * 10

    models = sorted(
        {u for u in (*full.nodes, *incremental.nodes) if kind(u) == "model"},
        key=lambda u: -full.nodes.get(u, {}).get("execution_time", 0.0),
    )
    print(f"\n{'model':<36}{'full s':>9}{'incr s':>9}{'ratio':>8}{'full rows':>11}{'incr rows':>11}")
    for unique_id in models:
        f = full.nodes.get(unique_id, {}).get("execution_time", float("nan"))
        i = incremental.nodes.get(unique_id, {}).get("execution_time", float("nan"))
        ratio = i / f if f else float("nan")
        print(
            f"{_short(unique_id):<36}{f:9.1f}{i:9.1f}{ratio:8.2f}{rows(full, unique_id)} {rows(incremental, unique_id)}"
        )
    for label, node_kind in (("unit tests", "unit_test"), ("data tests", "test")):
        f = sum(r["execution_time"] for u, r in full.nodes.items() if kind(u) == node_kind)
        i = sum(r["execution_time"] for u, r in incremental.nodes.items() if kind(u) == node_kind)
        n = sum(1 for u in full.nodes if kind(u) == node_kind)
        print(f"{f'{label} ({n}, summed)':<36}{f:9.1f}{i:9.1f}{(i / f if f else float('nan')):8.2f}")
    slowest = sorted(
        ((r["execution_time"], u) for u, r in incremental.nodes.items() if kind(u) == "test"), reverse=True
    )[:5]
    if slowest:
        print(
            "slowest data tests (incremental build): "
            + ", ".join(f"{_short(u)} {t:.1f}s" for t, u in slowest)
        )
    for label, result in (("full", full), ("incremental", incremental)):
        summed = sum(r["execution_time"] for r in result.nodes.values())
        print(f"{label}: wall {result.seconds:.1f} s; dbt node times summed {summed:.1f} s "
              f"(4 threads: nodes overlap; the rest is dbt start-up, parsing and compiling)")  # fmt: skip


def row_versions(url: str) -> dict[str, set[tuple]]:
    """(model_name, window_size, window_start, xmin) of every mart row: a rewritten row has a new xmin."""
    with psycopg.connect(url) as conn:
        return {
            mart: set(
                conn.execute(f"select {', '.join(WINDOW_KEY)}, xmin::text from marts.{mart}").fetchall()
            )
            for mart in MARTS
        }


def rewritten_windows(
    before: dict[str, set[tuple]], after: dict[str, set[tuple]]
) -> dict[str, tuple[int, int, int]]:
    """mart -> (windows rewritten, of which hour windows, windows in the mart)."""
    out = {}
    for mart in MARTS:
        old = {row[-1] for row in before[mart]}
        rewritten = {row[:3] for row in after[mart] if row[-1] not in old}
        out[mart] = (
            len(rewritten),
            sum(1 for w in rewritten if w[1] == "hour"),
            len({row[:3] for row in after[mart]}),
        )
    return out


def dump(url: str) -> dict[str, dict[tuple, dict]]:
    """Every mart row, by its key."""
    out = {}
    with psycopg.connect(url) as conn:
        for mart in MARTS:
            cursor = conn.execute(f"select * from marts.{mart}")
            names = [c.name for c in cursor.description]
            keys = (*GRAIN, *MART_KEYS[mart])
            out[mart] = {}
            for row in cursor.fetchall():
                record = dict(zip(names, row, strict=True))
                out[mart][tuple(record[k] for k in keys)] = record
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))
    return a == b


def compare(incremental: dict, full: dict) -> dict[str, tuple[int, int, int, int]]:
    """mart -> (rows, rows not exactly equal, rows differing beyond the tolerance, keys in one only)."""
    out = {}
    for mart in MARTS:
        a, b = incremental[mart], full[mart]
        common = a.keys() & b.keys()
        inexact = sum(1 for k in common if a[k] != b[k])
        different = sum(1 for k in common if not all(_close(a[k][c], b[k][c]) for c in a[k]))
        out[mart] = (len(b), inexact, different, len(a.keys() ^ b.keys()))
    return out


# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="predictions already in raw")
    parser.add_argument("--days", type=int, default=30, help="days they cover")
    parser.add_argument("--new-rows", type=int, default=100_000, help="predictions of the next hour")
    parser.add_argument(
        "--late-labels", type=int, default=20_000, help="late labels landing with the next hour"
    )
    parser.add_argument(
        "--late-days", type=float, default=3.0, help="the late labels are for predictions this recent"
    )
    parser.add_argument(
        "--label-delay-hours", type=float, default=24.0, help="mean label delay (exponential)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the full refresh that checks the incremental result"
    )
    parser.add_argument(
        "--select",
        nargs="*",
        default=list(METRICS_SELECTION),
        help="dbt --select for every build (default: the metrics layer's marts and everything upstream; "
        "--select with no value: the whole project)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--dbt-output", action="store_true", help="show dbt's log lines (default: errors only)"
    )
    args = parser.parse_args()
    if not args.dbt_output:
        os.environ.setdefault("DBT_QUIET", "true")  # dbt still prints errors
    if args.days < 1 or args.rows < args.days:
        parser.error("--days must be >= 1 and --rows >= --days")

    spec = load_spec(specs_dir() / f"{MODEL}.yaml")
    admin = warehouse.resolve_url()
    now = datetime.now(UTC)
    t_hour = now.replace(minute=0, second=0, microsecond=0)
    s = t_hour - HOUR  # history ends here; [S, S + 1 h) is "the next hour"
    as_of_full, as_of_incremental = s + timedelta(minutes=10), s + HOUR + timedelta(minutes=10)
    work = Path(tempfile.mkdtemp(prefix="dl-bench-metrics-"))
    url = _database(admin)
    print(f"database: {warehouse.redact(url)}")
    try:
        warehouse.migrate(url)
        warehouse.sync_specs(url, {MODEL: spec})
        with psycopg.connect(url) as conn:
            settings = {
                name: conn.execute(sql.SQL("show {}").format(sql.Identifier(name))).fetchone()[0]
                for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit")
            }
        print("server: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        print(
            f"dbt build --select {' '.join(args.select)}" if args.select else "dbt build (the whole project)"
        )

        print(
            f"setup: {args.rows:,} predictions over {args.days} days up to {s.isoformat()} (bulk COPY, not measured)"
        )
        started = time.perf_counter()
        history = load_history(url, spec, args, s, f"benchmark-{uuid.uuid4().hex[:6]}")
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "vacuum (analyze) raw.predictions, raw.prediction_keys, raw.feedback, raw.ingest_files"
            )
            size = conn.execute(
                "select pg_size_pretty(pg_database_size(current_database()))"
            ).fetchone()[0]  # fmt: skip
        print(f"setup: loaded {history.predictions:,} predictions and {history.feedback:,} labels "
              f"({history.feedback / history.predictions:.0%}) in {load_seconds:.0f} s "
              f"({history.predictions / load_seconds:,.0f} predictions/s), vacuum analyze "
              f"{time.perf_counter() - started:.0f} s; database {size}", flush=True)  # fmt: skip

        target, logs = work / "target", work / "logs"
        print(f"\nfull rebuild (--full-refresh, as_of {as_of_full.isoformat()}) ...", flush=True)
        full = timed_build(url, target, logs, full_refresh=True, as_of=as_of_full, select=args.select)
        print(f"full rebuild: {full.seconds:.1f} s", flush=True)
        before = row_versions(url)

        new_rows, late = land_next_hour(url, spec, args, s, history, f"benchmark-{uuid.uuid4().hex[:6]}")
        print(f"\nnext hour landed (not measured): {new_rows:,} predictions in [{s:%H:%M}, {s + HOUR:%H:%M}) "
              f"and {late:,} late labels for predictions of the {args.late_days:g} days before, loaded_at = now()")  # fmt: skip
        print(f"incremental build (as_of {as_of_incremental.isoformat()}) ...", flush=True)
        incremental = timed_build(
            url, target, logs, full_refresh=False, as_of=as_of_incremental, select=args.select
        )
        print(f"incremental build: {incremental.seconds:.1f} s", flush=True)
        after = row_versions(url)

        print_build_table(full, incremental)
        print("\nwindows the incremental build rewrote (model, window size, window start):")
        for mart, (windows, hours, total) in rewritten_windows(before, after).items():
            print(f"  {mart:<22} {windows:>5} of {total:>5} ({hours} hour, {windows - hours} day windows)")

        ratio = incremental.seconds / full.seconds
        print(
            f"\nrows in raw: {history.predictions + new_rows:,} predictions, {history.feedback + late:,} labels"
        )
        print(f"full rebuild     : {full.seconds:8.1f} s")
        print(
            f"incremental build: {incremental.seconds:8.1f} s  ({new_rows:,} new predictions, {late:,} late labels)"
        )
        print(
            f"ratio incremental / full: {ratio:.3f}  (goal <= 0.10: {'met' if ratio <= 0.10 else 'MISSED'})"
        )

        if not args.no_verify:
            incremental_rows = dump(url)
            print(f"\nverify: --full-refresh with as_of {as_of_incremental.isoformat()} ...", flush=True)
            check = timed_build(
                url, target, logs, full_refresh=True, as_of=as_of_incremental, select=args.select
            )
            differences = compare(incremental_rows, dump(url))
            print(f"verify: full refresh took {check.seconds:.1f} s")
            for mart, (rows, inexact, different, unmatched) in differences.items():
                verdict = (
                    "equal"
                    if not (inexact or unmatched)
                    else ("equal within 1e-9" if not (different or unmatched) else "DIFFERENT")
                )
                print(f"  {mart:<22} {rows:>7,} rows: {verdict}"
                      + (f" ({inexact} not bit-equal, {different} beyond 1e-9, {unmatched} keys in one only)" if verdict != "equal" else ""))  # fmt: skip
            if any(different or unmatched for _, _, different, unmatched in differences.values()):
                sys.exit(1)
        else:
            print("\nverify: skipped (--no-verify); it costs one more full rebuild")
    finally:
        if args.keep:
            print(
                f"kept database: {url}\nkept dbt target (compiled SQL, run_results.json): {work / 'target'}"
            )
        else:
            _drop(admin, url)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
