"""Ingestion: landed contract files -> raw.* in the warehouse, exactly once, losing nothing.

For each model and kind (predictions, then feedback) the new files under
`<root>/<model>/<kind>/dt=YYYY-MM-DD/` are found through the manifest (raw.ingest_files). Each file
is one batch: parsed, validated with Great Expectations against checks derived from the spec and
the contract, and then, in ONE transaction, its valid rows are COPYed into raw, its rejected rows
into raw.rejected_records (line, original payload, reason), and its manifest row is written. A run
that dies half-way commits nothing for the file it was on, so a retry loads it exactly once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from driftloop.core import warehouse
from driftloop.core.alerts import enqueue_alert
from driftloop.core.contracts import FEEDBACK, KINDS, PREDICTIONS
from driftloop.core.locks import lock_model
from driftloop.core.settings import landing_root as default_landing_root
from driftloop.core.spec import ModelSpec
from driftloop.ingest.checks import CheckedBatch, check_batch
from driftloop.ingest.parsing import ParsedFile, StillBeingWritten, UnreadableFile, parse_file
from driftloop.ingest.validation import Reason

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz", ".parquet")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class IngestError(RuntimeError):
    pass


@dataclass
class FileResult:
    path: str
    kind: str
    status: str  # loaded | empty | duplicate | failed | in_progress
    rows_loaded: int = 0
    rows_rejected: int = 0
    error: str | None = None
    file_id: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)  # rule -> rejected rows


@dataclass
class IngestResult:
    model_name: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(f.rows_rejected for f in self.files)

    def rows_loaded_of(self, kind: str) -> int:
        return sum(f.rows_loaded for f in self.files if f.kind == kind)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "rows_loaded": self.rows_loaded,
            "rows_rejected": self.rows_rejected,
            "predictions_loaded": self.rows_loaded_of(PREDICTIONS),
            "feedback_loaded": self.rows_loaded_of(FEEDBACK),
            "files": [asdict(f) for f in self.files],
        }


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class LandedFile:
    path: str  # as stored in the manifest
    fs_path: str  # as the file system wants it
    kind: str
    size: int
    mtime: float | None


def _filesystem(root: str):
    import fsspec

    fs, fs_root = fsspec.core.url_to_fs(root)
    return fs, fs_root


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("updated")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def discover(root: str, model_name: str, kind: str) -> list[LandedFile]:
    """Candidate files for a model and kind, in landing order. Hidden and temporary files are skipped."""
    fs, fs_root = _filesystem(root)
    pattern = f"{fs_root.rstrip('/')}/{model_name}/{kind}/dt=*/*"
    found = []
    for fs_path, info in sorted(fs.glob(pattern, detail=True).items()):
        name = fs_path.rsplit("/", 1)[-1]
        if name.startswith((".", "_")) or name.endswith(".tmp") or not name.endswith(SUFFIXES):
            continue
        if info.get("type") == "directory":
            continue
        path = fs_path if _is_local(fs) else fs.unstrip_protocol(fs_path)
        found.append(LandedFile(path, fs_path, kind, int(info.get("size") or 0), _mtime(info)))
    # first landed, first loaded: decides which of two identical files is "the original"
    return sorted(found, key=lambda landed: (landed.mtime or 0.0, landed.path))


def _known_paths(conn: psycopg.Connection, paths: list[str]) -> set[str]:
    if not paths:
        return set()
    rows = conn.execute("select path from raw.ingest_files where path = any(%s)", (paths,)).fetchall()
    return {row[0] for row in rows}


def _sanitize_payload(payload: bytes) -> str:
    return payload.decode("utf-8", errors="replace").replace("\x00", "\\u0000")


def _reason_sentence(reasons: list[Reason]) -> str:
    return "; ".join(dict.fromkeys(r.message for r in reasons))


def _copy_rows(conn: psycopg.Connection, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    statement = psycopg.sql.SQL("copy {} ({}) from stdin").format(
        psycopg.sql.SQL(".").join(map(psycopg.sql.Identifier, table.split("."))),
        psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)),
    )
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _lookup(conn: psycopg.Connection, query: str, model_name: str, ids: list[str]) -> list[tuple]:
    """Rows of `query` (model_name, ids) in chunks, so a big file does not build one huge array."""
    rows: list[tuple] = []
    for start in range(0, len(ids), 100_000):
        rows.extend(conn.execute(query, (model_name, ids[start : start + 100_000])).fetchall())
    return rows


def _copy_arrow(conn: psycopg.Connection, table: str, arrow_table: pa.Table) -> None:
    """COPY an Arrow table (column names = target columns) as CSV: the C++ writer does the formatting."""
    if arrow_table.num_rows == 0:
        return
    sink = io.BytesIO()
    pa_csv.write_csv(arrow_table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))
    statement = psycopg.sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        psycopg.sql.SQL(".").join(map(psycopg.sql.Identifier, table.split("."))),
        psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, arrow_table.column_names)),
    )
    view = sink.getbuffer()
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for offset in range(0, len(view), 8 << 20):
            copy.write(view[offset : offset + (8 << 20)])


def _scores_json(scores: dict[str, pd.Series]) -> pa.Array:
    """{"class": probability, ...} per row, built column-wise (null where a probability is missing)."""
    parts: list[Any] = []
    for index, (cls, probability) in enumerate(scores.items()):
        parts.append(("{" if index == 0 else ",") + orjson.dumps(cls).decode() + ":")
        parts.append(pc.cast(pa.array(probability.to_numpy(), from_pandas=True), pa.string()))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


class _FileLoader:
    """Writes one landed file's outcome inside the caller's transaction."""

    def __init__(self, conn: psycopg.Connection, spec: ModelSpec, landed: LandedFile, run_id: str):
        self.conn = conn
        self.spec = spec
        self.landed = landed
        self.run_id = run_id

    def insert_manifest(self, checksum: str, status: str, error: str | None = None, duplicate_of: int | None = None) -> int:
        row = self.conn.execute(
            """
            insert into raw.ingest_files (model_name, kind, path, size_bytes, checksum, status, error, duplicate_of, run_id)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s) returning file_id
            """,
            (self.spec.name, self.landed.kind, self.landed.path, self.landed.size, checksum, status, error,
             duplicate_of, self.run_id),
        ).fetchone()  # fmt: skip
        return row[0]

    def reject(self, file_id: int, parsed: ParsedFile, rejected: dict[int, list[Reason]]) -> None:
        _copy_rows(
            self.conn,
            "raw.rejected_records",
            ("model_name", "kind", "file_id", "path", "line_number", "payload", "reason", "reasons"),
            (
                (self.spec.name, self.landed.kind, file_id, self.landed.path, line,
                 _sanitize_payload(parsed.payload(line)), _reason_sentence(reasons),
                 orjson.dumps([r.as_dict() for r in reasons]).decode())
                for line, reasons in sorted(rejected.items())
            ),
        )  # fmt: skip


def _reject_repeats(ids: pd.Series, lines: np.ndarray, candidate: np.ndarray, rejected: dict[int, list[Reason]],
                    describe) -> None:  # fmt: skip
    """Inside one file the first occurrence of a key loads; later ones are rejected."""
    keys = ids[candidate]
    repeats = keys.duplicated(keep="first")
    if not repeats.any():
        return
    first_line = dict(zip(keys[~repeats], lines[candidate][~repeats.to_numpy()], strict=True))
    for key, line in zip(keys[repeats], lines[candidate][repeats.to_numpy()], strict=True):
        rejected.setdefault(int(line), []).append(Reason("prediction_id", "duplicate", describe(key, first_line[key])))


def _reject_loaded(keys: pd.Series, lines: np.ndarray, candidate: np.ndarray, rejected: dict[int, list[Reason]],
                   loaded: dict[str, str], describe) -> None:  # fmt: skip
    """Keys that an earlier file already loaded (`loaded`: key -> where) are rejected, with a pointer."""
    if not loaded:
        return
    for index in np.flatnonzero(candidate & keys.isin(loaded).to_numpy()):
        key = keys.iloc[index]
        rejected.setdefault(int(lines[index]), []).append(
            Reason("prediction_id", "duplicate", f"{describe(key)}: already loaded from {loaded[key]}")
        )
        candidate[index] = False


def _load_predictions(loader: _FileLoader, file_id: int, batch: CheckedBatch,
                      rejected: dict[int, list[Reason]]) -> tuple[int, datetime | None, datetime | None]:  # fmt: skip
    spec, conn, parsed = loader.spec, loader.conn, batch.parsed
    source, lines = parsed.source, parsed.lines
    ids = pd.Series(source.arrow("prediction_id", "string").to_pandas(), dtype=object)
    candidate = batch.valid()
    describe = lambda key: f"duplicate prediction_id {_short(key)}"  # noqa: E731
    _reject_repeats(ids, lines, candidate, rejected, lambda key, first: f"{describe(key)} (first seen at line {first} of this file)")
    candidate &= ~np.isin(lines, list(rejected))
    loaded = {
        prediction_id: f"{path} line {line}"
        for prediction_id, path, line in _lookup(
            conn,
            """select k.prediction_id, f.path, k.line_number from raw.prediction_keys k
               join raw.ingest_files f using (file_id) where k.model_name = %s and k.prediction_id = any(%s)""",
            spec.name,
            ids[candidate].tolist(),
        )
    }
    _reject_loaded(ids, lines, candidate, rejected, loaded, describe)
    if not candidate.any():
        return 0, None, None
    keep = pa.array(candidate)
    rows = len(lines)
    positive = spec.positive_class
    table = pa.table(
        {
            "model_name": pa.repeat(spec.name, rows),
            "prediction_id": source.arrow("prediction_id", "string"),
            "model_version": source.arrow("model_version", "string"),
            "variant": source.arrow("variant", "string"),
            "experiment_id": source.arrow("experiment_id", "string"),
            "unit_id": source.arrow("unit_id", "string"),
            "request_ts": source.arrow("request_ts", "string"),
            "latency_ms": source.arrow("latency_ms", "float64"),
            "event": parsed.events,
            "prediction": source.arrow("prediction", "string"),
            "scores": _scores_json(batch.scores),
            "score": pa.array(batch.scores[positive].to_numpy(), from_pandas=True) if positive else pa.nulls(rows, pa.float64()),
            "segment": source.arrow("segment", "string"),
            "error": source.arrow("error", "string"),
            "file_id": pa.array(np.full(rows, file_id, dtype=np.int64)),
            "line_number": pa.array(lines),
        }
    ).filter(keep)
    _copy_arrow(conn, "raw.prediction_keys", table.select(["model_name", "prediction_id", "request_ts", "file_id", "line_number"]))
    _copy_arrow(conn, "raw.predictions", table)
    kept = batch.timestamps[candidate]
    return table.num_rows, kept.min().to_pydatetime(), kept.max().to_pydatetime()


def _load_feedback(loader: _FileLoader, file_id: int, batch: CheckedBatch,
                   rejected: dict[int, list[Reason]]) -> tuple[int, datetime | None, datetime | None]:  # fmt: skip
    spec, conn, parsed = loader.spec, loader.conn, batch.parsed
    source, lines = parsed.source, parsed.lines
    ids = pd.Series(source.arrow("prediction_id", "string").to_pandas(), dtype=object)
    stamps = batch.timestamps
    keys = ids + "@" + stamps.map(lambda ts: ts.isoformat() if not pd.isna(ts) else "")
    candidate = batch.valid()
    describe = lambda key: "duplicate feedback for {} at {}".format(_short(key.split("@")[0]), key.split("@")[1])  # noqa: E731
    _reject_repeats(keys, lines, candidate, rejected, lambda key, first: f"{describe(key)} (first seen at line {first})")
    candidate &= ~np.isin(lines, list(rejected))
    loaded = {
        f"{prediction_id}@{feedback_time.astimezone(UTC).isoformat()}": path
        for prediction_id, feedback_time, path in _lookup(
            conn,
            """select f.prediction_id, f.feedback_ts, m.path from raw.feedback f join raw.ingest_files m using (file_id)
               where f.model_name = %s and f.prediction_id = any(%s)""",
            spec.name,
            ids[candidate].tolist(),
        )
    }
    _reject_loaded(keys, lines, candidate, rejected, loaded, describe)
    if not candidate.any():
        return 0, None, None
    rows = len(lines)
    table = pa.table(
        {
            "model_name": pa.repeat(spec.name, rows),
            "prediction_id": source.arrow("prediction_id", "string"),
            "label": source.arrow("label", "string"),
            "outcome": source.arrow("outcome", "float64"),
            "feedback_ts": source.arrow("feedback_ts", "string"),
            "source": source.arrow("source", "string"),
            "event": parsed.events,
            "file_id": pa.array(np.full(rows, file_id, dtype=np.int64)),
            "line_number": pa.array(lines),
        }
    ).filter(pa.array(candidate))
    _copy_arrow(conn, "raw.feedback", table)
    kept = stamps[candidate]
    return table.num_rows, kept.min().to_pydatetime(), kept.max().to_pydatetime()


def _ensure_partitions(url: str, days: Iterable) -> None:
    # Own short transaction: creating a partition locks the parent table, so never hold it during a load.
    days = sorted(set(days))
    if not days:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        warehouse.ensure_day_partitions(conn, days)


@dataclass
class PreparedFile:
    """A landed file read, parsed and validated; nothing written yet."""

    landed: LandedFile
    checksum: str
    result: FileResult
    batch: CheckedBatch | None = None
    failure: str | None = None

    @property
    def done(self) -> bool:
        """Nothing to write (still being written): leave it for a later run."""
        return self.result.status == "in_progress"


def prepare_file(url: str, spec: ModelSpec, landed: LandedFile, fs, *, now: datetime) -> PreparedFile:
    """Read, parse and validate a landed file (no warehouse writes but its day partitions)."""
    data = fs.cat_file(landed.fs_path)
    young = landed.mtime is not None and (now.timestamp() - landed.mtime) < spec.ingest.settle_seconds
    prepared = PreparedFile(landed, hashlib.sha256(data).hexdigest(), FileResult(landed.path, landed.kind, "loaded"))
    result = prepared.result
    try:
        parsed = parse_file(spec, landed.kind, landed.path, data, young=young)
    except StillBeingWritten:
        result.status = "in_progress"
        result.error = "last line is incomplete and the file changed recently: still being written"
        return prepared
    except UnreadableFile as exc:
        if young:
            result.status, result.error = "in_progress", f"not readable yet ({exc}); the file changed recently"
        else:
            prepared.failure = str(exc)
        return prepared
    if parsed.rows == 0 and not parsed.unparsed:
        if young:
            result.status, result.error = "in_progress", "empty and changed recently"
        return prepared
    prepared.batch = check_batch(spec, landed.kind, parsed, now)
    if landed.kind == PREDICTIONS:
        _ensure_partitions(url, prepared.batch.timestamps[prepared.batch.valid()].dropna().dt.date.unique())
    return prepared


def load_file(url: str, spec: ModelSpec, prepared: PreparedFile, *, run_id: str) -> FileResult:
    """Write a prepared file's outcome in ONE transaction: rows, rejections and its manifest row."""
    landed, batch, result = prepared.landed, prepared.batch, prepared.result
    if prepared.done:
        return result
    with psycopg.connect(url) as conn, conn.transaction():
        lock_model(conn, "ingest", spec.name)
        if _known_paths(conn, [landed.path]):
            result.status, result.error = "already_loaded", "loaded by another run meanwhile"
            return result
        loader = _FileLoader(conn, spec, landed, run_id)
        if prepared.failure is not None:
            result.status, result.error = "failed", prepared.failure
            result.file_id = loader.insert_manifest(prepared.checksum, "failed", prepared.failure)
            enqueue_alert(
                conn, dedup_key=f"ingest-file-failed:{landed.path}", source="ingest", severity="warning",
                model_name=spec.name, summary=f"{spec.name}: landed {landed.kind} file could not be read: {landed.path}",
                details={"path": landed.path, "error": prepared.failure, "size_bytes": landed.size, "run_id": run_id},
            )  # fmt: skip
            return result
        if batch is None:
            result.status = "empty"
            result.file_id = loader.insert_manifest(prepared.checksum, "empty", "the file has no records")
            return result
        twin = conn.execute(
            "select file_id, path from raw.ingest_files where model_name = %s and kind = %s and checksum = %s and status = 'loaded'",
            (spec.name, landed.kind, prepared.checksum),
        ).fetchone()
        if twin is not None:
            result.status = "duplicate"
            result.error = f"same content as {twin[1]} (file {twin[0]}), which is already loaded"
            result.file_id = loader.insert_manifest(prepared.checksum, "duplicate", result.error, duplicate_of=twin[0])
            return result
        file_id = result.file_id = loader.insert_manifest(prepared.checksum, "loaded")
        rejected = {line: list(reasons) for line, reasons in batch.reasons.items()}
        load = _load_predictions if landed.kind == PREDICTIONS else _load_feedback
        loaded, first_ts, last_ts = load(loader, file_id, batch, rejected)
        loader.reject(file_id, batch.parsed, rejected)
        conn.execute(
            """update raw.ingest_files set rows_loaded = %s, rows_rejected = %s, min_event_ts = %s, max_event_ts = %s
               where file_id = %s""",
            (loaded, len(rejected), first_ts, last_ts, file_id),
        )
        result.rows_loaded, result.rows_rejected = loaded, len(rejected)
        result.reasons = dict(Counter(reasons[0].rule for reasons in rejected.values()))
    log.info("%s: %s read by the %s reader", spec.name, landed.path, batch.parsed.reader)
    return result


def ingest(
    spec: ModelSpec,
    *,
    landing_root: str | None = None,
    url: str | None = None,
    now: datetime | None = None,
    run_id: str = "cli",
    kinds: Iterable[str] = KINDS,
) -> IngestResult:
    """Load every new landed file of `spec`'s model (predictions first, then feedback)."""
    root = default_landing_root(landing_root)
    url = warehouse.resolve_url(url)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise IngestError("now must be timezone-aware")
    result = IngestResult(spec.name)
    started = time.perf_counter()
    for kind in kinds:
        if kind not in KINDS:
            raise IngestError(f"unknown kind {kind!r}; expected one of {KINDS}")
        fs, _ = _filesystem(root)
        candidates = discover(root, spec.name, kind)
        with psycopg.connect(url) as conn:
            known = _known_paths(conn, [c.path for c in candidates])
        pending = [landed for landed in candidates if landed.path not in known]
        # Two cores: the next file is parsed and validated while this one is COPYed (the server works).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftloop-prepare") as pool:
            upcoming = pool.submit(prepare_file, url, spec, pending[0], fs, now=now) if pending else None
            for position in range(len(pending)):
                prepared = upcoming.result()
                if position + 1 < len(pending):
                    upcoming = pool.submit(prepare_file, url, spec, pending[position + 1], fs, now=now)
                file_result = load_file(url, spec, prepared, run_id=run_id)
                log.info(
                    "%s %s: %s (%d loaded, %d rejected)%s", spec.name, file_result.path, file_result.status,
                    file_result.rows_loaded, file_result.rows_rejected, f": {file_result.error}" if file_result.error else "",
                )  # fmt: skip
                result.files.append(file_result)
    log.info(
        "%s: %d files, %d rows loaded, %d rejected in %.1fs", spec.name, len(result.files), result.rows_loaded,
        result.rows_rejected, time.perf_counter() - started,
    )  # fmt: skip
    return result
