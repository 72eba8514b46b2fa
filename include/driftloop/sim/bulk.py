"""Simulated history bulk-loaded into the raw tables in exactly the shape ingest writes (every column of
``raw.predictions`` with ``event`` = the JSON line as landed, ``raw.prediction_keys``, ``raw.feedback`` and
one ``raw.ingest_files`` manifest row per hourly file), by COPY: millions of rows in minutes, where
running them through ingest would take an hour. For the benchmarks' setup (metrics, retrain), never
for a measured step.

``load_history`` writes ``plan.rows`` predictions over ``[S - plan.days, S)`` in two arms (control v1
80 %, challenger v2 20 %, made by :func:`driftloop.sim.world.generate_predictions`) and the feedback
that arrived before S (about 70 % labelled, exponential delays of mean ``plan.label_delay_hours``),
one day at a time (the next day is generated while the server loads this one); each hourly file is
"loaded" 5 minutes after its hour. ``land_next_hour`` adds the next hour: ``plan.new_rows`` new
predictions and the next ``plan.late_labels`` labels of the ``plan.late_days`` before S, loaded now."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

from driftloop.core import warehouse
from driftloop.core.spec import ModelSpec
from driftloop.sim.world import Scenario, feedback_lines, generate_predictions, prediction_lines

RUN_ID = "benchmark-bulk-load"
ARMS = (  # (share of the traffic, scenario)
    (0.8, {"model_version": "1", "variant": "control"}),
    (0.2, {"model_version": "2", "variant": "challenger"}),
)
LABEL_RATE = 0.7
LOAD_DELAY = timedelta(minutes=5)  # an hourly file is loaded this long after its hour ends
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class HistoryPlan:
    """What to load: predictions and days of history, when the labels of the late days arrive, and the
    next hour's new predictions and late labels."""

    rows: int
    days: int
    label_delay_hours: float = 24.0
    late_days: float = 3.0
    seed: int = 42
    new_rows: int = 0
    late_labels: int = 0


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

    model_name: str
    run_id: str = RUN_ID
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
                "file_id": file_id, "model_name": self.model_name, "kind": kind, "path": path, "size_bytes": len(data),
                "checksum": hashlib.sha256(data).hexdigest(), "status": "loaded", "rows_loaded": rows,
                "rows_rejected": 0, "min_event_ts": datetime.fromtimestamp(min_ms / 1000, UTC),
                "max_event_ts": datetime.fromtimestamp(max_ms / 1000, UTC), "run_id": self.run_id, "loaded_at": loaded_at,
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
        path = f"{folder}/{spec.name}/predictions/dt={_day_label(hour)}/predictions-{_hour_label(hour)}-{variant}.jsonl"
        file_ids[start:end] = manifest.add(
            "predictions", path, _file_bytes(events.slice(start, end - start)), end - start,
            int(request_ms[start]), int(request_ms[end - 1]), at,
        )  # fmt: skip
        line_numbers[start:end] = np.arange(1, end - start + 1)
        loaded[start:end] = _ms(at) if at else 0
    classes = [str(c) for c in spec.classes]
    n = len(frame)
    columns = {
        "model_name": pa.repeat(pa.scalar(spec.name), n),
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


def feedback_rows(frame: pd.DataFrame, model_name: str) -> pa.Table:
    """The feedback events of a frame's labelled rows (not loaded yet: they wait for their hour)."""
    labelled = frame[frame["labelled"].to_numpy(dtype=bool)]
    return pa.table(
        {
            "prediction_id": _strings(labelled["prediction_id"]),
            "label": _strings(labelled["label"]),
            "outcome": pa.array(labelled["outcome"].to_numpy()),
            "feedback_ms": pa.array(_epoch_ms(labelled["feedback_ts"])),
            "request_ms": pa.array(_epoch_ms(labelled["request_ts"])),
            "event": _split_lines(feedback_lines(labelled, model_name)),
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
        path = f"{folder}/{manifest.model_name}/feedback/dt={_day_label(hour)}/feedback-{_hour_label(hour)}.jsonl"
        file_ids[start:end] = manifest.add(
            "feedback", path, _file_bytes(events.slice(start, end - start)), end - start,
            int(feedback_ms[start]), int(feedback_ms[end - 1]), at,
        )  # fmt: skip
        line_numbers[start:end] = np.arange(1, end - start + 1)
        loaded[start:end] = _ms(at) if at else 0
    columns = {
        "model_name": pa.repeat(pa.scalar(manifest.model_name), n),
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


def load_history(url: str, spec: ModelSpec, args: HistoryPlan, s: datetime, folder: str) -> History:
    """args.rows predictions over [S - days, S) and the feedback that arrived before S, day by day:
    the next day is generated while the server loads this one."""
    delay = timedelta(hours=args.label_delay_hours)
    first = s - timedelta(days=args.days)
    late_from = _ms(s - timedelta(days=args.late_days))
    manifest = Manifest(spec.name)
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
                waiting.append(feedback_rows(frame, spec.name))
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


def land_next_hour(url: str, spec: ModelSpec, args: HistoryPlan, s: datetime, history: History,
                   folder: str) -> tuple[int, int]:  # fmt: skip
    """args.new_rows predictions requested in [S, S + 1 h) and the next args.late_labels labels for
    predictions of the late days, loaded now (loaded_at = now(), like ingest)."""
    manifest = Manifest(spec.name, next_id=_next_file_id(url))
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
        late = late.set_column(late.schema.get_field_index("event"), "event", _feedback_events(late, spec.name))
    feedback = feedback_table(late, manifest, f"{folder}/next-hour", loaded_at=False)
    load_batch(
        url, Batch([s.date()], manifest.take(), [t[0] for t in tables], [t[1] for t in tables], feedback)
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select setval('raw.ingest_files_file_id_seq', %s, false)", (manifest.next_id,))
    return sum(t[0].num_rows for t in tables), feedback.num_rows


def _feedback_events(rows: pa.Table, model_name: str) -> pa.Array:
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
    return _split_lines(feedback_lines(frame, model_name))


def _next_file_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select coalesce(max(file_id), 0) + 1 from raw.ingest_files").fetchone()[0]
