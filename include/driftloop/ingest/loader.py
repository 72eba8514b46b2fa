"""Ingestion: landed contract files -> raw.* in the warehouse, exactly once, losing nothing.

For each model and kind (predictions, then feedback) the new files under
`<root>/<model>/<kind>/dt=YYYY-MM-DD/` are found through the manifest (raw.ingest_files). Each file
is one batch: parsed, validated with Great Expectations against checks derived from the spec and
the contract, and then, in ONE transaction, its valid rows are COPYed into raw, its rejected rows
into raw.rejected_records (line, original payload, reason), and its manifest row is written (small clean
files several to one transaction, each with its own rows, rejections and manifest row: `_write_chunk`). A
run that dies half-way commits nothing for the file (or chunk) it was on, so a retry loads it exactly once.

No file can stop a run: any failure of one file (I/O, parse, validation, COPY, a bug) rolls back that
file alone, marks it `failed` in the manifest with the error and raises one alert; the run goes on.
Every file under the model's folders gets a manifest row (`skipped` when ingest does not read it), and
a file whose bytes change after it was loaded is `changed` (appended lines are loaded, a rewrite is not).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.copy import QueuedLibpqWriter

from driftloop.core import warehouse
from driftloop.core.alerts import enqueue_alert
from driftloop.core.contracts import FEEDBACK, KINDS, PREDICTIONS
from driftloop.core.locks import lock_model
from driftloop.core.settings import landing_root as default_landing_root
from driftloop.core.spec import ModelSpec
from driftloop.ingest.checks import CheckedBatch, check_batch, check_batches
from driftloop.ingest.parsing import (
    ParsedFile,
    StillBeingWritten,
    UnreadableFile,
    decompress,
    parse_file,
    parse_text,
)
from driftloop.ingest.validation import Reason

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz", ".parquet")  # any case
_DAY_FOLDER = re.compile(r"^dt=\d{4}-\d{2}-\d{2}$")
VANISHED = (
    "the file disappeared between listing and reading (deleted or moved by another process, or a symlink "
    "whose target is missing); nothing of it is loaded"
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class IngestError(RuntimeError):
    pass


@dataclass
class FileResult:
    path: str
    kind: str
    status: str  # loaded | empty | duplicate | failed | skipped | changed | in_progress | already_loaded
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
            "files_failed": self.count("failed"),
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
    skip_reason: str | None = None  # why ingest does not read it (an unsupported suffix, a wrong folder)


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


def _skip_reason(kind: str, folders: list[str], name: str) -> str | None:
    if not name.lower().endswith(SUFFIXES):
        suffix = "".join(f".{part}" for part in name.split(".")[1:][-2:]) or "no suffix"
        return f"unsupported file type ({suffix}): ingest reads {', '.join(SUFFIXES)} (any case); nothing of it is loaded"
    if len(folders) != 1 or not _DAY_FOLDER.match(folders[0]):
        where = "/".join(folders) or f"{kind}/ itself"
        return (f"not in a day folder ({where}): ingest reads <model>/{kind}/dt=YYYY-MM-DD/<file>; "
                "nothing of it is loaded until it is moved there")  # fmt: skip


def discover(root: str, model_name: str, kind: str) -> list[LandedFile]:
    """Every file under a model's kind folder, in landing order; files ingest does not read carry a
    `skip_reason`. Hidden and temporary names (., _ or .tmp: a writer's file before its rename) are left out."""
    fs, fs_root = _filesystem(root)
    base = f"{fs_root.rstrip('/')}/{model_name}/{kind}"
    found = []
    try:
        listing = fs.find(base, withdirs=False, detail=True)
    except FileNotFoundError:
        listing = {}
    for fs_path, info in sorted(listing.items()):
        parts = fs_path[len(base) :].strip("/").split("/")
        folders, name = parts[:-1], parts[-1]
        if any(part.startswith((".", "_")) for part in parts) or name.endswith(".tmp"):
            continue
        if info.get("type") == "directory":
            continue
        path = fs_path if _is_local(fs) else fs.unstrip_protocol(fs_path)
        found.append(LandedFile(path, fs_path, kind, int(info.get("size") or 0), _mtime(info),
                                _skip_reason(kind, folders, name)))  # fmt: skip
    # first landed, first loaded: decides which of two identical files is "the original"
    return sorted(found, key=lambda landed: (landed.mtime or 0.0, landed.path))


@dataclass(frozen=True)
class KnownFile:
    """A file's manifest row as a run found it."""

    file_id: int
    status: str
    size: int
    checksum: str | None
    seen_size: int | None
    seen_mtime: float | None

    def listing_changed(self, landed: LandedFile) -> bool:
        """The listing differs from when ingest last looked (then the bytes are read and compared)."""
        if landed.size != (self.seen_size if self.seen_size is not None else self.size):
            return True
        return self.seen_mtime is not None and landed.mtime is not None and landed.mtime != self.seen_mtime


def _manifest(conn: psycopg.Connection, paths: list[str]) -> dict[str, KnownFile]:
    if not paths:
        return {}
    rows = conn.execute(
        """select path, file_id, status, size_bytes, checksum, seen_size_bytes, seen_mtime
           from raw.ingest_files where path = any(%s)""",
        (paths,),
    ).fetchall()
    return {row[0]: KnownFile(*row[1:]) for row in rows}


def _sanitize_payload(payload: bytes) -> str:
    # bytes that are not UTF-8 stay visible as \xNN escapes (PostgreSQL text cannot hold them, nor NUL)
    return payload.decode("utf-8", errors="backslashreplace").replace("\x00", "\\u0000")


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


# COPY text format: the server parses it faster than CSV with every value quoted (where each quote of a
# JSON event is doubled); a backslash, newline, carriage return or tab in a value is escaped.
_TEXT_ESCAPES = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_COPY_CHUNK_ROWS = 32_768


def _value_bytes(array: pa.Array) -> memoryview:
    """The bytes of a string array's values, end to end (no copy)."""
    if len(array) == 0 or array.buffers()[2] is None:
        return memoryview(b"")
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset : array.offset + len(array) + 1]
    return memoryview(array.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def _text_values(column: pa.Array) -> pa.Array:
    """A column's values as COPY text (null stays null)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return pc.cast(column, pa.large_string())
    column = column.cast(pa.large_string())
    data = _value_bytes(column).tobytes()
    for char, escaped in _TEXT_ESCAPES:
        if char.encode() in data:
            column = pc.replace_substring(column, char, escaped)
    return column


def _copy_text(table: pa.Table) -> memoryview:
    """Rows of an Arrow table as COPY text: tab-separated values, \\N for null, one line a row."""
    text = partial(pa.scalar, type=pa.large_string())
    columns = [_text_values(column.combine_chunks()) for column in table.columns]
    columns[-1] = pc.binary_join_element_wise(pc.fill_null(columns[-1], text("\\N")), text("\n"), text(""))
    lines = pc.binary_join_element_wise(*columns, text("\t"), null_handling="replace", null_replacement="\\N")
    return _value_bytes(lines)


def _copy_arrow(conn: psycopg.Connection, table: str, arrow_table: pa.Table) -> None:
    """COPY an Arrow table (column names = target columns) in text format, formatted by Arrow's kernels."""
    if arrow_table.num_rows == 0:
        return
    statement = psycopg.sql.SQL("copy {} ({}) from stdin").format(
        psycopg.sql.SQL(".").join(map(psycopg.sql.Identifier, table.split("."))),
        psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, arrow_table.column_names)),
    )
    # a writer thread sends each chunk while the next one is formatted (the server never waits for it); one
    # chunk has nothing to overlap with, and starting the thread cost ~3 ms (most of a small file's COPY)
    writer = QueuedLibpqWriter if arrow_table.num_rows > _COPY_CHUNK_ROWS else None
    with conn.cursor() as cursor, cursor.copy(statement, writer=writer and writer(cursor)) as copy:
        for start in range(0, arrow_table.num_rows, _COPY_CHUNK_ROWS):
            copy.write(_copy_text(arrow_table.slice(start, _COPY_CHUNK_ROWS)))


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

    def insert_manifest(self, checksum: str | None, status: str, error: str | None = None, duplicate_of: int | None = None,
                        size: int | None = None) -> int:  # fmt: skip
        landed = self.landed
        row = self.conn.execute(
            """
            insert into raw.ingest_files (model_name, kind, path, size_bytes, checksum, status, error, duplicate_of, run_id,
                                          seen_size_bytes, seen_mtime)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning file_id
            """,
            (self.spec.name, landed.kind, landed.path, landed.size if size is None else size, checksum, status, error,
             duplicate_of, self.run_id, landed.size, landed.mtime),
        ).fetchone()  # fmt: skip
        return row[0]

    def alert(self, what: str, summary: str, error: str, checksum: str | None = None) -> None:
        """One alert per file and event (a retry of the same bytes raises none)."""
        landed = self.landed
        enqueue_alert(
            self.conn, dedup_key=f"ingest-file-{what}:{landed.path}:{checksum or ''}", source="ingest", severity="warning",
            model_name=self.spec.name, summary=f"{self.spec.name}: landed {landed.kind} file {summary}: {landed.path}",
            details={"path": landed.path, "error": error, "size_bytes": landed.size, "run_id": self.run_id},
        )  # fmt: skip

    def reject(self, file_id: int, parsed: ParsedFile, rejected: dict[int, list[Reason]]) -> None:
        if not rejected:  # an empty COPY is still a round trip and a statement for the server
            return
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
    ids, candidate = _candidates(batch, rejected)
    if not candidate.any():
        return 0, None, None
    table = _prediction_rows(spec, source, batch, parsed, file_id)
    try:
        # Optimistic: the keys' primary key refuses a prediction_id already loaded for the model (the
        # model's lock is held), so when this COPY passes, none was and the lookup would find nothing.
        with conn.transaction():
            _copy_keys(conn, table, candidate)
    except psycopg.errors.UniqueViolation:
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
        _reject_loaded(ids, lines, candidate, rejected, loaded, _describe_prediction_id)
        if not candidate.any():
            return 0, None, None
        _copy_keys(conn, table, candidate)
    table = table.filter(pa.array(candidate))
    _copy_arrow(conn, "raw.predictions", table)
    kept = batch.timestamps[candidate]
    return table.num_rows, kept.min().to_pydatetime(), kept.max().to_pydatetime()


def _describe_prediction_id(key: str) -> str:
    return f"duplicate prediction_id {_short(key)}"


def _candidates(batch: CheckedBatch, rejected: dict[int, list[Reason]]) -> tuple[pd.Series, np.ndarray]:
    """A predictions file's ids, and the mask of its rows to load: valid, and the first of their id in the file
    (a later one is added to `rejected`)."""
    parsed = batch.parsed
    ids = pd.Series(parsed.source.arrow("prediction_id", "string").to_pandas(), dtype=object)
    candidate = batch.valid()
    _reject_repeats(ids, parsed.lines, candidate, rejected,
                    lambda key, first: f"{_describe_prediction_id(key)} (first seen at line {first} of this file)")  # fmt: skip
    candidate &= ~np.isin(parsed.lines, list(rejected))
    return ids, candidate


def _copy_keys(conn: psycopg.Connection, table: pa.Table, candidate: np.ndarray) -> None:
    """The loaded rows' keys, in prediction_id order: the primary key's index is then filled page after page
    (ids in line order, random UUIDs, cost twice the server time)."""
    keys = table.select(["model_name", "prediction_id", "request_ts", "file_id", "line_number"]).filter(pa.array(candidate))
    _copy_arrow(conn, "raw.prediction_keys", keys.take(pc.sort_indices(keys, [("prediction_id", "ascending")])))


def _prediction_rows(spec: ModelSpec, source, batch: CheckedBatch, parsed: ParsedFile, file_id: int) -> pa.Table:
    """Every parsed row of a predictions file in raw.predictions' columns (the caller keeps the loaded ones)."""
    lines = parsed.lines
    rows = len(lines)
    positive = spec.positive_class
    return pa.table(
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
    )


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
    """A landed file read, parsed and validated; nothing written yet.

    `mode`: new (a file seen for the first time, or a failed one retried), skip (not read), unchanged
    (its listing moved but not its bytes), append (lines added after those loaded), rewrite (its loaded
    bytes changed: recorded, not loaded).
    """

    landed: LandedFile
    result: FileResult
    previous: KnownFile | None = None
    mode: str = "new"
    checksum: str | None = None
    size: int | None = None
    batch: CheckedBatch | None = None
    parsed: ParsedFile | None = None  # parsed, not validated yet (validate_prepared does it for many files)
    failure: str | None = None
    first_line: int = 1  # append: the first line number not accounted for by the earlier load

    @property
    def done(self) -> bool:
        """Nothing to write (still being written): leave it for a later run."""
        return self.result.status == "in_progress"


def _appended(previous: KnownFile, path: str, data: bytes) -> tuple[bytes, int] | None:
    """(the text after the lines ingest accounted for, the first new line number) when `data` only added
    bytes after those it loaded; None when it rewrote them."""
    if path.lower().endswith(".parquet") or previous.checksum is None or len(data) <= previous.size:
        return None
    if hashlib.sha256(data[: previous.size]).hexdigest() != previous.checksum:
        return None
    try:
        old, new = decompress(path, data[: previous.size]), decompress(path, data)
    except UnreadableFile:
        return None
    if not new.startswith(old):
        return None
    cut = old.rfind(b"\n") + 1  # an incomplete last line of the earlier load is read again, whole
    return new[cut:], old[:cut].count(b"\n") + 1


def _describe_failure(landed: LandedFile, exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return f"unexpected error while loading {landed.path}: {type(exc).__name__}" + (f": {message}" if message else "")


def prepare_file(url: str, spec: ModelSpec, landed: LandedFile, fs, *, now: datetime, previous: KnownFile | None = None,
                 retry_failed: bool = False, validate: bool = True) -> PreparedFile:  # fmt: skip
    """Read, parse and validate a landed file (no warehouse writes but its day partitions). Never raises:
    whatever goes wrong becomes the file's `failure`. With `validate=False` the file is parsed only
    (`validate_prepared` then validates many such files at once)."""
    prepared = PreparedFile(landed, FileResult(landed.path, landed.kind, "loaded"), previous)
    try:
        _prepare(url, spec, prepared, fs, now=now, retry_failed=retry_failed)
    except Exception as exc:  # noqa: BLE001 - one file's problem, whatever it is, must not stop the run
        log.exception("%s: preparing %s failed", spec.name, landed.path)
        prepared.batch, prepared.parsed, prepared.failure = None, None, _describe_failure(landed, exc)
    if validate:
        validate_prepared(url, spec, [prepared], now=now)
    return prepared


def _prepare(url: str, spec: ModelSpec, prepared: PreparedFile, fs, *, now: datetime, retry_failed: bool) -> None:
    landed, result, previous = prepared.landed, prepared.result, prepared.previous
    if landed.skip_reason is not None:
        prepared.mode, result.status, result.error = "skip", "skipped", landed.skip_reason
        return
    try:
        data = fs.cat_file(landed.fs_path)
    except FileNotFoundError:
        prepared.failure = VANISHED
        return
    except (OSError, ValueError) as exc:
        prepared.failure = f"cannot read the file ({type(exc).__name__}: {exc})"
        return
    prepared.checksum, prepared.size = hashlib.sha256(data).hexdigest(), len(data)
    young = landed.mtime is not None and (now.timestamp() - landed.mtime) < spec.ingest.settle_seconds
    text, first_line = None, 1
    if previous is not None:
        retry = previous.status == "failed" and (retry_failed or previous.checksum != prepared.checksum)
        if not retry and previous.checksum == prepared.checksum:
            prepared.mode, result.status = "unchanged", "unchanged"
            return
        if not retry:
            appended = _appended(previous, landed.path, data)
            if appended is None:
                prepared.mode, result.status = "rewrite", "changed"
                result.error = (
                    f"its bytes changed after ingest read them (size {previous.size} -> {len(data)}, another sha256, and "
                    "the bytes read are not a prefix of the new ones): the rows loaded from the earlier version stay and "
                    "nothing of the new version is loaded; to load it, land it again under a new name (rows already "
                    "loaded are then rejected as duplicates)"
                )
                return
            prepared.mode, (text, first_line) = "append", appended
            prepared.first_line = first_line
    try:
        if text is None:
            parsed = parse_file(spec, landed.kind, landed.path, data, young=young)
        else:
            parsed = parse_text(spec, landed.kind, landed.path, text, young=young, first_line=first_line)
    except StillBeingWritten:
        result.status = "in_progress"
        result.error = "last line is incomplete and the file changed recently: still being written"
        return
    except UnreadableFile as exc:
        if young:
            result.status, result.error = "in_progress", f"not readable yet ({exc}); the file changed recently"
        else:
            prepared.failure = str(exc)
        return
    if parsed.rows == 0 and not parsed.unparsed:
        if young and prepared.mode == "new":
            result.status, result.error = "in_progress", "empty and changed recently"
        return
    prepared.parsed = parsed


def validate_prepared(url: str, spec: ModelSpec, prepared: list[PreparedFile], *, now: datetime) -> None:
    """GX validation of the parsed files, one validation for all (`check_batches`: each file keeps its own
    verdict, rejected rows and reasons), then their day partitions. Never raises: when the validation of
    the group fails, each file is validated alone, and a file that then fails gets its `failure`."""
    waiting = [one for one in prepared if one.parsed is not None]
    by_kind: dict[str, list[PreparedFile]] = {}
    for one in waiting:
        by_kind.setdefault(one.landed.kind, []).append(one)
    for kind, group in by_kind.items():
        try:
            for one, batch in zip(group, check_batches(spec, kind, [one.parsed for one in group], now), strict=True):
                one.batch = batch
        except Exception:  # noqa: BLE001 - validated again file by file, so one file's problem stays its own
            log.exception("%s: validating %d files together failed; validating them one by one", spec.name, len(group))
            for one in group:
                try:
                    one.batch = check_batch(spec, kind, one.parsed, now)
                except Exception as exc:  # noqa: BLE001
                    log.exception("%s: preparing %s failed", spec.name, one.landed.path)
                    one.batch, one.failure = None, _describe_failure(one.landed, exc)
    days = set()
    for one in waiting:
        one.parsed = None
        if one.batch is not None and one.landed.kind == PREDICTIONS:
            # UTC days: the distinct days, then their dates (not a date object per row; pandas' floor("D") of
            # zone-aware times cost ~3 ms a small file)
            stamps = one.batch.timestamps[one.batch.valid()].dropna()
            days.update(np.unique(stamps.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")).tolist())
    try:
        _ensure_partitions(url, days)
    except Exception as exc:  # noqa: BLE001 - the files are not loaded; each records the failure
        log.exception("%s: creating day partitions failed", spec.name)
        for one in waiting:
            if one.batch is not None and one.landed.kind == PREDICTIONS:
                one.batch, one.failure = None, _describe_failure(one.landed, exc)


def _load_rows(loader: _FileLoader, file_id: int, batch: CheckedBatch, result: FileResult) -> tuple[int, datetime | None, datetime | None]:
    rejected = {line: list(reasons) for line, reasons in batch.reasons.items()}
    load = _load_predictions if loader.landed.kind == PREDICTIONS else _load_feedback
    loaded, first_ts, last_ts = load(loader, file_id, batch, rejected)
    loader.reject(file_id, batch.parsed, rejected)
    result.rows_loaded, result.rows_rejected = loaded, len(rejected)
    result.reasons = dict(Counter(reasons[0].rule for reasons in rejected.values()))
    return loaded, first_ts, last_ts


def _still_as_listed(conn: psycopg.Connection, prepared: PreparedFile) -> bool:
    """Under the model's lock: the manifest row is as this run found it (no other run handled the file meanwhile)."""
    now_known = _manifest(conn, [prepared.landed.path]).get(prepared.landed.path)
    previous = prepared.previous
    if previous is None or now_known is None:
        return previous is None and now_known is None
    return (now_known.status, now_known.checksum, now_known.seen_size, now_known.seen_mtime) == (
        previous.status, previous.checksum, previous.seen_size, previous.seen_mtime)  # fmt: skip


class _Connection:
    """One warehouse connection for a run's file transactions (opening one cost ~5 ms a file); a new one
    when the last one broke."""

    def __init__(self, url: str):
        self.url = url
        self.conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.close()
            self.conn = psycopg.connect(self.url)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def load_file(url: str, spec: ModelSpec, prepared: PreparedFile, *, run_id: str,
              connection: _Connection | None = None) -> FileResult:  # fmt: skip
    """Write a prepared file's outcome in ONE transaction: rows, rejections and its manifest row (on
    `connection`'s connection, else on a new one)."""
    if prepared.done:
        return prepared.result
    if connection is None:
        with _Connection(url) as own:
            return _write_file(own.get(), spec, prepared, run_id)
    return _write_file(connection.get(), spec, prepared, run_id)


def _write_file(conn: psycopg.Connection, spec: ModelSpec, prepared: PreparedFile, run_id: str) -> FileResult:
    landed, result, previous = prepared.landed, prepared.result, prepared.previous
    with conn.transaction():
        lock_model(conn, "ingest", spec.name)
        if not _still_as_listed(conn, prepared):
            result.status, result.error = "already_loaded", "handled by another run meanwhile"
            return result
        loader = _FileLoader(conn, spec, landed, run_id)
        if prepared.mode == "unchanged":
            _mark_seen(conn, previous.file_id, landed)
            return result
        if prepared.mode in ("rewrite", "append") or (prepared.failure is not None and previous is not None
                                                      and previous.status != "failed"):  # fmt: skip
            return _load_change(loader, prepared)
        if previous is not None:  # a failed file retried: its row holds no rows, it is written anew
            conn.execute("delete from raw.ingest_files where file_id = %s", (previous.file_id,))
        if prepared.mode == "skip":
            result.file_id = loader.insert_manifest(None, "skipped", result.error)
            loader.alert("skipped", "was skipped", result.error)
            return result
        if prepared.failure is not None:
            result.status, result.error = "failed", prepared.failure
            result.file_id = loader.insert_manifest(prepared.checksum, "failed", prepared.failure, size=prepared.size)
            loader.alert("failed", "could not be loaded", prepared.failure, prepared.checksum)
            return result
        if prepared.batch is None:
            result.status = "empty"
            result.file_id = loader.insert_manifest(prepared.checksum, "empty", "the file has no records", size=prepared.size)
            return result
        twin = conn.execute(
            """select file_id, path from raw.ingest_files
               where model_name = %s and kind = %s and checksum = %s and status in ('loaded', 'changed')""",
            (spec.name, landed.kind, prepared.checksum),
        ).fetchone()
        if twin is not None:
            result.status = "duplicate"
            result.error = f"same content as {twin[1]} (file {twin[0]}), which is already loaded"
            result.file_id = loader.insert_manifest(prepared.checksum, "duplicate", result.error, duplicate_of=twin[0],
                                                    size=prepared.size)  # fmt: skip
            return result
        file_id = result.file_id = loader.insert_manifest(prepared.checksum, "loaded", size=prepared.size)
        loaded, first_ts, last_ts = _load_rows(loader, file_id, prepared.batch, result)
        conn.execute(
            """update raw.ingest_files set rows_loaded = %s, rows_rejected = %s, min_event_ts = %s, max_event_ts = %s
               where file_id = %s""",
            (loaded, result.rows_rejected, first_ts, last_ts, file_id),
        )
    log.info("%s: %s read by the %s reader", spec.name, landed.path, prepared.batch.parsed.reader)
    return result


def _mark_seen(conn: psycopg.Connection, file_id: int, landed: LandedFile) -> None:
    conn.execute(
        "update raw.ingest_files set seen_size_bytes = %s, seen_mtime = %s where file_id = %s",
        (landed.size, landed.mtime, file_id),
    )


def _load_change(loader: _FileLoader, prepared: PreparedFile) -> FileResult:
    """A file that changed after it was loaded: `changed`, with an alert. Appended lines are loaded (the
    lines read before keep their rows and rejections); a rewrite, or a failure reading the new lines,
    loads nothing and keeps the bytes accounted for, so the next change is compared with them again."""
    conn, landed, result, previous = loader.conn, prepared.landed, prepared.result, prepared.previous
    result.status, result.file_id = "changed", previous.file_id
    _mark_seen(conn, previous.file_id, landed)
    if prepared.mode == "rewrite" or prepared.failure is not None:
        if prepared.failure is not None:
            result.error = f"it changed after it was loaded, and the new version could not be read: {prepared.failure}"
        conn.execute("update raw.ingest_files set status = 'changed', error = %s, run_id = %s where file_id = %s",
                     (result.error, loader.run_id, previous.file_id))  # fmt: skip
        loader.alert("changed", "changed after it was loaded", result.error, prepared.checksum)
        return result
    # an incomplete last line of the earlier load was rejected as such; it is read again, whole
    conn.execute("delete from raw.rejected_records where file_id = %s and line_number >= %s",
                 (previous.file_id, prepared.first_line))  # fmt: skip
    first_ts = last_ts = None
    if prepared.batch is not None:
        _, first_ts, last_ts = _load_rows(loader, previous.file_id, prepared.batch, result)
    result.error = (
        f"grew from {previous.size} to {prepared.size} bytes after it was loaded (a writer appended instead of writing "
        f"a new file and renaming it): the lines from {prepared.first_line} on were read now "
        f"({result.rows_loaded} loaded, {result.rows_rejected} rejected)"
    )
    conn.execute(
        """update raw.ingest_files set status = 'changed', error = %s, run_id = %s, size_bytes = %s, checksum = %s,
               rows_loaded = rows_loaded + %s,
               rows_rejected = (select count(*) from raw.rejected_records where file_id = %s),
               min_event_ts = least(min_event_ts, %s), max_event_ts = greatest(max_event_ts, %s), loaded_at = now()
           where file_id = %s""",
        (result.error, loader.run_id, prepared.size, prepared.checksum, result.rows_loaded, previous.file_id,
         first_ts, last_ts, previous.file_id),
    )  # fmt: skip
    loader.alert("changed", "changed after it was loaded", result.error, prepared.checksum)
    return result


def _record_failure(url: str, spec: ModelSpec, prepared: PreparedFile, error: str, run_id: str,
                    connection: _Connection | None = None) -> FileResult:  # fmt: skip
    """A file whose load raised: its transaction is rolled back; record the failure in a new one."""
    prepared.batch, prepared.failure = None, error
    prepared.mode = "new" if prepared.previous is None or prepared.previous.status == "failed" else "append"
    prepared.result = FileResult(prepared.landed.path, prepared.landed.kind, "failed", error=error)
    return load_file(url, spec, prepared, run_id=run_id, connection=connection)


# Files validated together (one GX validation of their summaries): GX's fixed cost per expectation is
# then paid once per group, not per file. A group stops at this many files or rows (its memory).
_GROUP_FILES = 200
_GROUP_ROWS = 200_000
# Nothing is COPYed before the first group is validated: it is smaller, so the COPYs start sooner.
_FIRST_GROUP_ROWS = _GROUP_ROWS // 4


def _groups(pending: list[tuple[LandedFile, KnownFile | None]]) -> list[list[tuple[LandedFile, KnownFile | None]]]:
    groups: list[list] = []
    size = 0
    for item in pending:
        if not groups or len(groups[-1]) >= _GROUP_FILES or size >= (_FIRST_GROUP_ROWS if len(groups) == 1 else _GROUP_ROWS):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += max(1, item[0].size // 500)  # ~ rows: a landed prediction line is several hundred bytes
    return groups


def _prepare_group(url: str, spec: ModelSpec, fs, now: datetime, retry_failed: bool,
                   group: list[tuple[LandedFile, KnownFile | None]]) -> list[PreparedFile]:  # fmt: skip
    prepared = [prepare_file(url, spec, landed, fs, now=now, previous=previous, retry_failed=retry_failed, validate=False)
                for landed, previous in group]  # fmt: skip
    validate_prepared(url, spec, prepared, now=now)
    return prepared


def ingest(
    spec: ModelSpec,
    *,
    landing_root: str | None = None,
    url: str | None = None,
    now: datetime | None = None,
    run_id: str = "cli",
    kinds: Iterable[str] = KINDS,
    retry_failed: bool = False,
) -> IngestResult:
    """Load every new landed file of `spec`'s model (predictions first, then feedback). A file that failed
    is tried again when its bytes change, or on every file with `retry_failed`."""
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
            known = _manifest(conn, [c.path for c in candidates])
        pending = []
        for landed in candidates:
            previous = known.get(landed.path)
            if previous is None or (previous.status == "failed" and retry_failed):
                pending.append((landed, previous))
            elif previous.status != "skipped" and previous.listing_changed(landed):
                pending.append((landed, previous))
        prepare = partial(_prepare_group, url, spec, fs, now, retry_failed)
        groups = _groups(pending)

        # Two cores: the next group of files is parsed and validated while this one is COPYed (the server works).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftloop-prepare") as pool, _Connection(url) as connection:
            upcoming = pool.submit(prepare, groups[0]) if groups else None
            for number in range(len(groups)):
                group = upcoming.result()
                if number + 1 < len(groups):
                    upcoming = pool.submit(prepare, groups[number + 1])
                _load_group(url, spec, group, run_id, result, connection)
    log.info(
        "%s: %d files, %d rows loaded, %d rejected in %.1fs (%d failed)", spec.name, len(result.files), result.rows_loaded,
        result.rows_rejected, time.perf_counter() - started, result.count("failed"),
    )  # fmt: skip
    return result


def _load_one(url: str, spec: ModelSpec, prepared: PreparedFile, run_id: str, result: IngestResult,
              connection: _Connection) -> None:  # fmt: skip
    try:
        file_result = load_file(url, spec, prepared, run_id=run_id, connection=connection)
    except Exception as exc:  # noqa: BLE001 - rolled back; the file is marked failed, the run goes on
        # (with the warehouse unreachable, recording the failure raises too, and the run stops)
        log.exception("%s: loading %s failed", spec.name, prepared.landed.path)
        file_result = _record_failure(url, spec, prepared, _describe_failure(prepared.landed, exc), run_id, connection)
    _report(spec, file_result, result)


def _report(spec: ModelSpec, file_result: FileResult, result: IngestResult) -> None:
    if file_result.status == "unchanged":
        return
    log.info(
        "%s %s: %s (%d loaded, %d rejected)%s", spec.name, file_result.path, file_result.status,
        file_result.rows_loaded, file_result.rows_rejected, f": {file_result.error}" if file_result.error else "",
    )  # fmt: skip
    result.files.append(file_result)


# Clean new predictions files are written several to a transaction: one manifest insert, one COPY of their
# keys and one of their rows (the costs per statement and per commit were most of a small file's load).
# A file sharing a prediction_id or its bytes with an earlier file of the chunk is written alone after it,
# as ever; anything unusual (a file handled by another run meanwhile, a twin already loaded, an id loaded
# before, any error) rolls the chunk back and its files are written one by one, each in its transaction.
_CHUNK_FILES = 100
_CHUNK_FILE_ROWS = 10_000  # a bigger file gains nothing (and would be held twice in memory while COPYed)


class _WriteAlone(Exception):
    """The files of a chunk must be written one by one."""


def _chunkable(prepared: PreparedFile) -> bool:
    return (not prepared.done and prepared.mode == "new" and prepared.previous is None and prepared.failure is None
            and prepared.batch is not None and prepared.landed.kind == PREDICTIONS
            and prepared.batch.parsed.rows <= _CHUNK_FILE_ROWS)  # fmt: skip


def _load_group(url: str, spec: ModelSpec, group: list[PreparedFile], run_id: str, result: IngestResult,
                connection: _Connection) -> None:  # fmt: skip
    """Write a group's files in their order: runs of clean new predictions files in chunks, the others alone."""
    chunk: list[PreparedFile] = []
    ids: set[str] = set()  # of the group's files so far (written or in the chunk)
    checksums: set[str] = set()

    def flush() -> None:
        if len(chunk) == 1:
            _load_one(url, spec, chunk[0], run_id, result, connection)
        elif chunk:
            _load_chunk(url, spec, chunk, run_id, result, connection)
        chunk.clear()

    for prepared in group:
        if not _chunkable(prepared):
            flush()
            _load_one(url, spec, prepared, run_id, result, connection)
            continue
        file_ids = set(prepared.batch.parsed.source.arrow("prediction_id", "string").drop_null().to_pylist())
        shares = prepared.checksum in checksums or not ids.isdisjoint(file_ids)
        ids.update(file_ids)
        checksums.add(prepared.checksum)
        if shares:
            flush()  # what the file shares with an earlier one is decided as ever: after that one is written
            _load_one(url, spec, prepared, run_id, result, connection)
            continue
        if len(chunk) >= _CHUNK_FILES:
            flush()
        chunk.append(prepared)
    flush()


def _load_chunk(url: str, spec: ModelSpec, chunk: list[PreparedFile], run_id: str, result: IngestResult,
                connection: _Connection) -> None:  # fmt: skip
    try:
        written = _write_chunk(connection.get(), spec, chunk, run_id)
    except Exception as exc:  # noqa: BLE001 - rolled back: each file is written alone (a failing one fails alone)
        log.info("%s: writing %d files in one transaction gave up (%s: %s); writing them one by one",
                 spec.name, len(chunk), type(exc).__name__, exc)  # fmt: skip
        for prepared in chunk:
            _load_one(url, spec, prepared, run_id, result, connection)
        return
    for prepared, file_result in zip(chunk, written, strict=True):
        log.info("%s: %s read by the %s reader", spec.name, prepared.landed.path, prepared.batch.parsed.reader)
        _report(spec, file_result, result)


def _write_chunk(conn: psycopg.Connection, spec: ModelSpec, chunk: list[PreparedFile], run_id: str) -> list[FileResult]:
    """Clean new predictions files (no two sharing an id or bytes) in ONE transaction: what `_write_file` writes
    for each. Raises `_WriteAlone` (or any error) and writes nothing when they must be written one by one."""
    with conn.transaction():
        lock_model(conn, "ingest", spec.name)
        if _manifest(conn, [prepared.landed.path for prepared in chunk]):
            raise _WriteAlone("a file was handled by another run meanwhile")
        twin = conn.execute(
            """select 1 from raw.ingest_files
               where model_name = %s and kind = %s and checksum = any(%s) and status in ('loaded', 'changed') limit 1""",
            (spec.name, PREDICTIONS, [prepared.checksum for prepared in chunk]),
        ).fetchone()
        if twin is not None:
            raise _WriteAlone("a file has the same content as one already loaded")
        plans = []
        for prepared in chunk:
            rejected = {line: list(reasons) for line, reasons in prepared.batch.reasons.items()}
            _, candidate = _candidates(prepared.batch, rejected)
            kept = prepared.batch.timestamps[candidate]
            first_ts, last_ts = (kept.min().to_pydatetime(), kept.max().to_pydatetime()) if candidate.any() else (None, None)
            plans.append((rejected, candidate, first_ts, last_ts))
        with conn.cursor() as cursor:
            cursor.executemany(
                """
                insert into raw.ingest_files (model_name, kind, path, size_bytes, checksum, status, run_id, seen_size_bytes,
                                              seen_mtime, rows_loaded, rows_rejected, min_event_ts, max_event_ts)
                values (%s, %s, %s, %s, %s, 'loaded', %s, %s, %s, %s, %s, %s, %s) returning file_id
                """,
                [(spec.name, prepared.landed.kind, prepared.landed.path, prepared.size, prepared.checksum, run_id,
                  prepared.landed.size, prepared.landed.mtime, int(candidate.sum()), len(rejected), first_ts, last_ts)
                 for prepared, (rejected, candidate, first_ts, last_ts) in zip(chunk, plans, strict=True)],
                returning=True,
            )  # fmt: skip
            file_ids = [cursor.fetchone()[0]]
            while cursor.nextset():
                file_ids.append(cursor.fetchone()[0])
        tables = [
            _prediction_rows(spec, prepared.batch.parsed.source, prepared.batch, prepared.batch.parsed, file_id)
            .filter(pa.array(candidate))
            for prepared, file_id, (_, candidate, _, _) in zip(chunk, file_ids, plans, strict=True)
        ]  # fmt: skip
        table = pa.concat_tables(tables)
        if table.num_rows:
            try:  # the keys' primary key refuses an id loaded before (the model's lock is held)
                _copy_keys(conn, table, np.ones(table.num_rows, dtype=bool))
            except psycopg.errors.UniqueViolation as exc:
                raise _WriteAlone("a prediction_id was loaded before") from exc
            _copy_arrow(conn, "raw.predictions", table)
        results = []
        for prepared, file_id, (rejected, candidate, _, _) in zip(chunk, file_ids, plans, strict=True):
            _FileLoader(conn, spec, prepared.landed, run_id).reject(file_id, prepared.batch.parsed, rejected)
            results.append(FileResult(prepared.landed.path, prepared.landed.kind, "loaded", int(candidate.sum()), len(rejected),
                                      file_id=file_id, reasons=dict(Counter(reasons[0].rule for reasons in rejected.values()))))  # fmt: skip
    for prepared, file_result in zip(chunk, results, strict=True):
        prepared.result = file_result
    return results
