"""Ingestion: landed contract files -> raw.* in the warehouse, exactly once, losing nothing.

For each model and kind (predictions, then feedback) the new files under
`<root>/<model>/<kind>/dt=YYYY-MM-DD/` are found through the manifest (raw.ingest_files). Each file
is one batch: parsed, validated with Great Expectations against checks derived from the spec and
the contract, and then, in ONE transaction, its valid rows are COPYed into raw, its rejected rows
into raw.rejected_records (line, original payload, reason), and its manifest row is written. A run
that dies half-way commits nothing for the file it was on, so a retry loads it exactly once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
import psycopg

from driftloop import warehouse
from driftloop.alerts import enqueue_alert
from driftloop.contracts import CONTRACTS, FEEDBACK, KINDS, PREDICTIONS, ContractField
from driftloop.settings import landing_root as default_landing_root
from driftloop.spec import FeatureType, ModelSpec, Task
from driftloop.validation import LINE, Check, Reason, validate_frame

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz", ".parquet")
# RFC 3339 date-time with a mandatory offset ("Z" or +hh:mm).
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
# Timestamps that cannot be parsed get this value so the range check names them.
_UNPARSEABLE_TS = pd.Timestamp("1900-01-01", tz="UTC")
_EARLIEST_TS = "2000-01-01T00:00:00+00:00"
_NUMBER_TYPES = ["int", "float"]
_NULL = "NoneType"

PREDICTION_COLUMNS = (
    "model_name", "prediction_id", "model_version", "variant", "experiment_id", "unit_id", "request_ts",
    "latency_ms", "features", "prediction", "scores", "score", "segment", "error", "file_id", "line_number",
)  # fmt: skip
FEEDBACK_COLUMNS = (
    "model_name", "prediction_id", "label", "outcome", "feedback_ts", "source", "file_id", "line_number",
)  # fmt: skip


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
# Reading files


@dataclass
class Record:
    line: int
    payload: bytes
    data: dict[str, Any] | None  # None when the line is not a JSON object
    reason: Reason | None = None


class UnreadableFile(Exception):
    """The file cannot be parsed at all (truncated gzip, not Parquet, ...)."""


class StillBeingWritten(Exception):
    pass


def _decompress(path: str, data: bytes) -> bytes:
    if not path.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise UnreadableFile(f"cannot decompress gzip ({type(exc).__name__}: {exc}); the file is truncated or corrupt") from exc


def parse_records(path: str, data: bytes, *, young: bool) -> list[Record]:
    """Records of a landed file, one per non-blank line (JSON lines) or row (Parquet)."""
    if path.endswith(".parquet"):
        return _parquet_records(data)
    text = _decompress(path, data)
    lines = text.split(b"\n")
    last_complete = text.endswith(b"\n")
    records: list[Record] = []
    loads = orjson.loads
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except orjson.JSONDecodeError as exc:
            is_last = number == len(lines) and not last_complete
            if is_last and young:
                raise StillBeingWritten(path) from None
            message = (
                "incomplete last line: the file ends in the middle of a record (truncated, or the writer died)"
                if is_last
                else f"malformed JSON: {exc}"
            )
            records.append(Record(number, line, None, Reason("(line)", "json", message)))
            continue
        if not isinstance(obj, dict):
            records.append(Record(number, line, None, Reason("(line)", "json", f"expected a JSON object, got {type(obj).__name__}")))
        elif b"\\u0000" in line:
            records.append(Record(number, line, None, Reason("(line)", "nul", "contains a NUL character (\\u0000), which PostgreSQL cannot store")))
        else:
            records.append(Record(number, line, obj))
    return records


def _parquet_records(data: bytes) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any reader error means the file is unreadable
        raise UnreadableFile(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    records = []
    for number, row in enumerate(rows, start=1):
        for key in ("features", "scores"):
            if isinstance(row.get(key), str):  # JSON-encoded objects are allowed in Parquet
                try:
                    row[key] = orjson.loads(row[key])
                except orjson.JSONDecodeError:
                    pass  # left as a string: the type check rejects it with a clear reason
        for key, value in list(row.items()):
            if isinstance(value, datetime):
                row[key] = value.isoformat() if value.tzinfo else value.isoformat()
        records.append(Record(number, orjson.dumps(row, default=str), row))
    return records


# --------------------------------------------------------------------------------------------
# Turning records into a checked frame


def _type_names(values: list[Any]) -> list[str]:
    return [type(v).__name__ for v in values]


def _class_text(value: Any) -> Any:
    # classes arrive as strings or ints; they are compared and stored as text
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


_ALLOWED_TYPES = {
    "string": ["str"],
    "class": ["str", "int"],
    "number": _NUMBER_TYPES,
    "timestamp": ["str"],
    "features": ["dict"],
    "scores": ["dict", "int", "float"],
}
_TYPE_WORDS = {
    "string": "a string",
    "class": "a string or integer class",
    "number": "a number",
    "timestamp": "an RFC 3339 timestamp string",
    "features": "an object",
    "scores": "an object of class probabilities or a number",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _FrameBuilder:
    """Builds the batch frame and the list of GX checks for it, side by side."""

    def __init__(self, lines: list[int]):
        self.columns: dict[str, Any] = {LINE: lines}
        self.checks: list[Check] = []

    def add(self, name: str, values: Any) -> None:
        self.columns[name] = values

    def check(self, expectation: str, column: str, field_name: str, rule: str, explain, **kwargs) -> None:
        self.checks.append(Check(expectation, column, field_name, rule, explain, kwargs))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns)

    # --- reusable pieces ------------------------------------------------------------------

    def typed(self, column: str, field_name: str, values: list[Any], allowed: list[str], words: str) -> pd.Series:
        types = _type_names(values)
        self.add(f"type__{column}", types)
        self.check(
            "ExpectColumnValuesToBeInSet", f"type__{column}", field_name, "type",
            lambda t, f=field_name, w=words: f"{f} must be {w} (got a {t})",
            value_set=[*allowed, _NULL],
        )  # fmt: skip
        return pd.Series(types)

    def required(self, column: str, field_name: str, **kwargs) -> None:
        self.check(
            "ExpectColumnValuesToNotBeNull", column, field_name, "required",
            lambda _v, f=field_name: f"required field {f} is missing or null", **kwargs,
        )  # fmt: skip

    def number(self, column: str, field_name: str, values: list[Any], types: pd.Series, low=None, high=None) -> pd.Series:
        numbers = pd.to_numeric(pd.Series(values, dtype=object).where(types.isin(_NUMBER_TYPES)), errors="coerce")
        self.add(f"number__{column}", numbers)
        if low is not None or high is not None:
            bounds = f"in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            self.check(
                "ExpectColumnValuesToBeBetween", f"number__{column}", field_name, "range",
                lambda v, f=field_name, b=bounds: f"{f} must be {b} (got {v:g})",
                min_value=low, max_value=high,
            )  # fmt: skip
        return numbers

    def timestamp(self, column: str, field_name: str, values: list[Any], latest: datetime) -> pd.Series:
        strings = pd.Series([v if isinstance(v, str) else None for v in values], dtype=object)
        self.add(f"text__{column}", strings)
        self.check(
            "ExpectColumnValuesToMatchRegex", f"text__{column}", field_name, "timestamp_format",
            lambda v, f=field_name: (
                f"{f} {_short(v)} has no UTC offset (write e.g. 2026-01-31T12:00:00+00:00)"
                if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?$", str(v))
                else f"{f} {_short(v)} is not an RFC 3339 timestamp with offset"
            ),
            regex=RFC3339,
        )  # fmt: skip
        parsed = pd.to_datetime(strings, utc=True, format="ISO8601", errors="coerce")
        parsed = parsed.where(strings.isna() | parsed.notna(), _UNPARSEABLE_TS)
        self.add(f"ts__{column}", parsed)
        self.check(
            "ExpectColumnValuesToBeBetween", f"ts__{column}", field_name, "timestamp_range",
            lambda v, f=field_name, latest=latest: (
                f"{f} is not a valid date-time"
                if v == _UNPARSEABLE_TS
                else f"{f} {v.isoformat()} is in the future (later than {latest.isoformat()})"
                if v > latest
                else f"{f} {v.isoformat()} is before {_EARLIEST_TS[:10]}"
            ),
            min_value=_EARLIEST_TS, max_value=latest.isoformat(),
        )  # fmt: skip
        return parsed

    def in_set(self, column: str, field_name: str, values: list[Any], allowed: list[str], rule: str, explain) -> None:
        self.add(column, values)
        self.check("ExpectColumnValuesToBeInSet", column, field_name, rule, explain, value_set=list(allowed))

    def contract_fields(self, fields: Iterable[ContractField], objects: list[dict], latest: datetime,
                        conditional: dict[str, str] | None = None) -> dict[str, list[Any]]:
        """Presence, null and type checks for the contract's top-level fields; returns the raw columns."""
        raw: dict[str, list[Any]] = {}
        for contract_field in fields:
            name = contract_field.name
            values = [obj.get(name) for obj in objects]
            raw[name] = values
            self.add(f"raw__{name}", pd.Series(values, dtype=object))
            if contract_field.required:
                condition = (conditional or {}).get(name)
                kwargs = {"row_condition": condition, "condition_parser": "pandas"} if condition else {}
                self.required(f"raw__{name}", name, **kwargs)
            self.typed(name, name, values, _ALLOWED_TYPES[contract_field.kind], _TYPE_WORDS[contract_field.kind])
        return raw


def _feature_checks(builder: _FrameBuilder, spec: ModelSpec, objects: list[dict]) -> None:
    feature_maps = [obj.get("features") if isinstance(obj.get("features"), dict) else {} for obj in objects]
    for feature in spec.features:
        label = f"feature {feature.name}"
        column = f"feature__{feature.name}"
        values = [features.get(feature.name) for features in feature_maps]
        builder.add(column, pd.Series(values, dtype=object))
        if feature.required:
            builder.required(column, label, row_condition="raw__error.isnull()", condition_parser="pandas")
        if feature.type is FeatureType.numeric:
            types = builder.typed(column, label, values, _NUMBER_TYPES, "a number")
            builder.number(column, label, values, types, feature.min, feature.max)
        elif feature.type is FeatureType.categorical:
            builder.typed(column, label, values, ["str", "int"], "a string category")
            categories = feature.categories or []
            builder.in_set(
                f"category__{feature.name}", label, [_class_text(v) if v is not None else None for v in values],
                categories, "allowed_values",
                lambda v, f=label, c=categories: f"{f} has unknown category {_short(v)} (allowed: {', '.join(c)})",
            )
        else:
            builder.typed(column, label, values, ["bool"], "true or false")


def _score_columns(builder: _FrameBuilder, spec: ModelSpec, scores: list[Any]) -> list[dict[str, float] | None]:
    """Normalise scores to {class: probability}; check classes, [0, 1] and the sum."""
    classes = list(spec.classes)
    canonical = ",".join(sorted(classes))
    normalized: list[dict[str, float] | None] = []
    key_sets: list[str | None] = []
    for value in scores:
        if isinstance(value, dict):
            normalized.append(value)
            key_sets.append(",".join(sorted(str(k) for k in value)))
        elif isinstance(value, int | float) and not isinstance(value, bool) and spec.task is Task.binary:
            probability = float(value)
            normalized.append({spec.positive_class: probability, spec.negative_class: 1.0 - probability})
            key_sets.append(canonical)
        else:
            normalized.append(None)
            # a bare number for a multiclass model says nothing about the other classes
            key_sets.append("(a single number)" if isinstance(value, int | float) and not isinstance(value, bool) else None)
    builder.in_set(
        "scores__classes", "scores", key_sets, [canonical], "scores_classes",
        lambda v, c=classes: f"scores must give a probability for exactly the classes {c} (got {v})",
    )  # fmt: skip
    totals = []
    for cls in classes:
        column = [(s.get(cls) if s is not None else None) for s in normalized]
        column = [v if isinstance(v, int | float) and not isinstance(v, bool) else None for v in column]
        builder.add(f"score__{cls}", pd.to_numeric(pd.Series(column, dtype=object), errors="coerce"))
        builder.check(
            "ExpectColumnValuesToBeBetween", f"score__{cls}", f"scores.{cls}", "probability",
            lambda v, c=cls: f"scores.{c} must be a probability in [0, 1] (got {v:g})",
            min_value=0.0, max_value=1.0,
        )  # fmt: skip
        totals.append(builder.columns[f"score__{cls}"])
    total = pd.concat(totals, axis=1).sum(axis=1, min_count=len(classes))
    builder.add("score__sum", total)
    tolerance = spec.ingest.score_sum_tolerance
    builder.check(
        "ExpectColumnValuesToBeBetween", "score__sum", "scores", "probability_sum",
        lambda v, t=tolerance: f"class probabilities must sum to 1 (+/- {t}); they sum to {v:.4f}",
        min_value=1.0 - tolerance, max_value=1.0 + tolerance,
    )  # fmt: skip
    return normalized


@dataclass
class CheckedBatch:
    frame: pd.DataFrame
    reasons: dict[int, list[Reason]]
    scores: list[dict[str, float] | None] | None = None


def check_predictions(spec: ModelSpec, records: list[Record], now: datetime) -> CheckedBatch:
    objects = [r.data for r in records if r.data is not None]
    lines = [r.line for r in records if r.data is not None]
    latest = now + spec.ingest.max_future_skew
    builder = _FrameBuilder(lines)
    # a failed request (error set) may lack a prediction, scores and features
    served = "raw__error.isnull()"
    raw = builder.contract_fields(
        CONTRACTS[PREDICTIONS], objects, latest,
        conditional={"prediction": served, "scores": served, "features": served},
    )  # fmt: skip
    builder.in_set(
        "model__name", "model_name", raw["model_name"], [spec.name], "model",
        lambda v, m=spec.name: f"model_name {_short(v)} is not this model ({m!r}); is the file in the right folder?",
    )  # fmt: skip
    builder.in_set(
        "prediction__class", "prediction", [_class_text(v) for v in raw["prediction"]], spec.classes, "allowed_values",
        lambda v, c=spec.classes: f"prediction {_short(v)} is not one of the classes {c}",
    )  # fmt: skip
    if spec.segment is not None and spec.segment.values:
        builder.in_set(
            "segment__value", "segment", raw["segment"], spec.segment.values, "allowed_values",
            lambda v, s=spec.segment: f"segment {_short(v)} is not one of the {s.name} values {s.values}",
        )  # fmt: skip
    latency_types = pd.Series(_type_names(raw["latency_ms"]))
    builder.number("latency_ms", "latency_ms", raw["latency_ms"], latency_types, low=0)
    builder.timestamp("request_ts", "request_ts", raw["request_ts"], latest)
    _feature_checks(builder, spec, objects)
    scores = _score_columns(builder, spec, raw["scores"])
    frame = builder.frame()
    report = validate_frame(frame, builder.checks, suite_name=f"{spec.name}-predictions")
    return CheckedBatch(frame, report.reasons, scores)


def check_feedback(spec: ModelSpec, records: list[Record], now: datetime) -> CheckedBatch:
    objects = [r.data for r in records if r.data is not None]
    lines = [r.line for r in records if r.data is not None]
    latest = now + spec.ingest.max_future_skew
    builder = _FrameBuilder(lines)
    raw = builder.contract_fields(CONTRACTS[FEEDBACK], objects, latest)
    builder.in_set(
        "model__name", "model_name", raw["model_name"], [spec.name], "model",
        lambda v, m=spec.name: f"feedback for unknown model {_short(v)}: this landing folder is for {m!r}",
    )  # fmt: skip
    builder.in_set(
        "label__class", "label", [_class_text(v) for v in raw["label"]], spec.classes, "allowed_values",
        lambda v, c=spec.classes: f"label {_short(v)} is not one of the classes {c}",
    )  # fmt: skip
    outcome_types = pd.Series(_type_names(raw["outcome"]))
    builder.number("outcome", "outcome", raw["outcome"], outcome_types)
    builder.timestamp("feedback_ts", "feedback_ts", raw["feedback_ts"], latest)
    frame = builder.frame()
    report = validate_frame(frame, builder.checks, suite_name=f"{spec.name}-feedback")
    return CheckedBatch(frame, report.reasons)


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


class _FileLoader:
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

    def reject(self, file_id: int, rejected: list[tuple[Record, list[Reason]]]) -> None:
        _copy_rows(
            self.conn,
            "raw.rejected_records",
            ("model_name", "kind", "file_id", "path", "line_number", "payload", "reason", "reasons"),
            (
                (self.spec.name, self.landed.kind, file_id, self.landed.path, record.line,
                 _sanitize_payload(record.payload), _reason_sentence(reasons),
                 orjson.dumps([r.as_dict() for r in reasons]).decode())
                for record, reasons in rejected
            ),
        )  # fmt: skip


def _load_predictions(loader: _FileLoader, file_id: int, records: list[Record], batch: CheckedBatch,
                      rejected: dict[int, list[Reason]]) -> tuple[int, datetime | None, datetime | None]:
    spec, conn = loader.spec, loader.conn
    frame = batch.frame
    by_line = {r.line: r for r in records}
    ids = frame["raw__prediction_id"].tolist()
    lines = frame[LINE].tolist()
    candidate = [i for i, line in enumerate(lines) if line not in rejected]
    # duplicates inside the file: the first occurrence loads, later ones are rejected
    first_seen: dict[str, int] = {}
    for i in candidate:
        first = first_seen.setdefault(ids[i], lines[i])
        if first != lines[i]:
            rejected.setdefault(lines[i], []).append(
                Reason("prediction_id", "duplicate", f"duplicate prediction_id {_short(ids[i])} (first seen at line {first} of this file)")
            )
    candidate = [i for i in candidate if lines[i] not in rejected]
    existing = {
        row[0]: (row[1], row[2])
        for row in _lookup(
            conn,
            """select k.prediction_id, f.path, k.line_number from raw.prediction_keys k
               join raw.ingest_files f using (file_id) where k.model_name = %s and k.prediction_id = any(%s)""",
            spec.name,
            [ids[i] for i in candidate],
        )
    }
    for i in candidate:
        if ids[i] in existing:
            rejected.setdefault(lines[i], []).append(
                Reason("prediction_id", "duplicate",
                       "duplicate prediction_id {}: already loaded from {} line {}".format(_short(ids[i]), *existing[ids[i]]))
            )  # fmt: skip
    keep = [i for i in candidate if lines[i] not in rejected]
    if not keep:
        return 0, None, None
    request_ts = frame["ts__request_ts"]
    raw_ts = frame["raw__request_ts"].tolist()
    positive = spec.positive_class
    versions = frame["raw__model_version"].tolist()
    variants = frame["raw__variant"].tolist()
    experiments = frame["raw__experiment_id"].tolist()
    units = frame["raw__unit_id"].tolist()
    latency = frame["number__latency_ms"].tolist()
    predictions = frame["prediction__class"].tolist()
    segments = frame["raw__segment"].tolist()
    errors = frame["raw__error"].tolist()
    scores = batch.scores or []
    dumps = orjson.dumps

    def rows():
        for i in keep:
            record = by_line[lines[i]].data
            features = record.get("features")
            score_map = scores[i]
            yield (
                spec.name, ids[i], versions[i], variants[i], experiments[i], units[i], raw_ts[i], latency[i],
                dumps(features).decode() if features is not None else None, predictions[i],
                dumps(score_map).decode() if score_map is not None else None,
                score_map.get(positive) if (score_map is not None and positive is not None) else None,
                segments[i], errors[i], file_id, lines[i],
            )  # fmt: skip

    _copy_rows(conn, "raw.prediction_keys", ("model_name", "prediction_id", "request_ts", "file_id", "line_number"),
               ((spec.name, ids[i], raw_ts[i], file_id, lines[i]) for i in keep))  # fmt: skip
    _copy_rows(conn, "raw.predictions", PREDICTION_COLUMNS, rows())
    kept_ts = request_ts.iloc[keep]
    return len(keep), kept_ts.min().to_pydatetime(), kept_ts.max().to_pydatetime()


def _load_feedback(loader: _FileLoader, file_id: int, records: list[Record], batch: CheckedBatch,
                   rejected: dict[int, list[Reason]]) -> tuple[int, datetime | None, datetime | None]:
    spec, conn = loader.spec, loader.conn
    frame = batch.frame
    ids = frame["raw__prediction_id"].tolist()
    lines = frame[LINE].tolist()
    feedback_ts = frame["ts__feedback_ts"]
    ts_keys = [ts.isoformat() if not pd.isna(ts) else None for ts in feedback_ts]
    candidate = [i for i, line in enumerate(lines) if line not in rejected]
    first_seen: dict[tuple, int] = {}
    for i in candidate:
        key = (ids[i], ts_keys[i])
        first = first_seen.setdefault(key, lines[i])
        if first != lines[i]:
            rejected.setdefault(lines[i], []).append(
                Reason("prediction_id", "duplicate", f"duplicate feedback for {_short(ids[i])} at {ts_keys[i]} (first seen at line {first})")
            )
    candidate = [i for i in candidate if lines[i] not in rejected]
    existing_keys = {
        (prediction_id, feedback_time.astimezone(UTC).isoformat())
        for prediction_id, feedback_time in _lookup(
            conn,
            "select prediction_id, feedback_ts from raw.feedback where model_name = %s and prediction_id = any(%s)",
            spec.name,
            [ids[i] for i in candidate],
        )
    }
    for i in candidate:
        if (ids[i], ts_keys[i]) in existing_keys:
            rejected.setdefault(lines[i], []).append(
                Reason("prediction_id", "duplicate", f"duplicate feedback for {_short(ids[i])} at {ts_keys[i]}: already loaded")
            )
    keep = [i for i in candidate if lines[i] not in rejected]
    if not keep:
        return 0, None, None
    labels = frame["label__class"].tolist()
    outcomes = frame["number__outcome"].tolist()
    sources = frame["raw__source"].tolist()
    raw_ts = frame["raw__feedback_ts"].tolist()
    _copy_rows(
        conn, "raw.feedback", FEEDBACK_COLUMNS,
        ((spec.name, ids[i], labels[i], None if pd.isna(outcomes[i]) else outcomes[i], raw_ts[i], sources[i],
          file_id, lines[i]) for i in keep),
    )  # fmt: skip
    kept_ts = feedback_ts.iloc[keep]
    return len(keep), kept_ts.min().to_pydatetime(), kept_ts.max().to_pydatetime()


def _ensure_partitions(url: str, days: Iterable) -> None:
    # Own short transaction: creating a partition locks the parent table, so never hold it during a load.
    days = sorted(set(days))
    if not days:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        warehouse.ensure_day_partitions(conn, days)


def ingest_file(url: str, spec: ModelSpec, landed: LandedFile, fs, *, now: datetime, run_id: str) -> FileResult:
    """Load one landed file in one transaction (see the module docstring)."""
    data = fs.cat_file(landed.fs_path)
    checksum = hashlib.sha256(data).hexdigest()
    young = landed.mtime is not None and (now.timestamp() - landed.mtime) < spec.ingest.settle_seconds
    result = FileResult(landed.path, landed.kind, "loaded")
    records: list[Record] = []
    batch: CheckedBatch | None = None
    failure: str | None = None
    try:
        records = parse_records(landed.path, data, young=young)
    except StillBeingWritten:
        result.status = "in_progress"
        result.error = "last line is incomplete and the file changed recently: still being written"
        return result
    except UnreadableFile as exc:
        if young:
            result.status, result.error = "in_progress", f"not readable yet ({exc}); the file changed recently"
            return result
        failure = str(exc)
    if failure is None and not records:
        if young:
            result.status, result.error = "in_progress", "empty and changed recently"
            return result
        result.status = "empty"
    if failure is None and records:
        check = check_predictions if landed.kind == PREDICTIONS else check_feedback
        batch = check(spec, records, now)
        if landed.kind == PREDICTIONS:
            valid_ts = batch.frame["ts__request_ts"][~batch.frame[LINE].isin(batch.reasons)]
            _ensure_partitions(url, valid_ts.dropna().dt.date.unique())

    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"driftloop.ingest:{spec.name}",))
        if _known_paths(conn, [landed.path]):
            result.status, result.error = "already_loaded", "loaded by another run meanwhile"
            return result
        loader = _FileLoader(conn, spec, landed, run_id)
        if failure is not None:
            result.status, result.error = "failed", failure
            result.file_id = loader.insert_manifest(checksum, "failed", failure)
            enqueue_alert(
                conn, dedup_key=f"ingest-file-failed:{landed.path}", source="ingest", severity="warning",
                model_name=spec.name, summary=f"{spec.name}: landed {landed.kind} file could not be read: {landed.path}",
                details={"path": landed.path, "error": failure, "size_bytes": landed.size, "run_id": run_id},
            )  # fmt: skip
            return result
        twin = conn.execute(
            "select file_id, path from raw.ingest_files where model_name = %s and kind = %s and checksum = %s and status = 'loaded'",
            (spec.name, landed.kind, checksum),
        ).fetchone()
        if twin is not None and records:
            result.status = "duplicate"
            result.error = f"same content as {twin[1]} (file {twin[0]}), which is already loaded"
            result.file_id = loader.insert_manifest(checksum, "duplicate", result.error, duplicate_of=twin[0])
            return result
        if not records:
            result.file_id = loader.insert_manifest(checksum, "empty", "the file has no records")
            return result
        file_id = loader.insert_manifest(checksum, "loaded")
        result.file_id = file_id
        assert batch is not None
        rejected: dict[int, list[Reason]] = {line: list(reasons) for line, reasons in batch.reasons.items()}
        for record in records:
            if record.reason is not None:
                rejected[record.line] = [record.reason]
        load = _load_predictions if landed.kind == PREDICTIONS else _load_feedback
        loaded, first_ts, last_ts = load(loader, file_id, records, batch, rejected)
        by_line = {r.line: r for r in records}
        rejected_rows = [(by_line[line], reasons) for line, reasons in sorted(rejected.items())]
        loader.reject(file_id, rejected_rows)
        conn.execute(
            """update raw.ingest_files set rows_loaded = %s, rows_rejected = %s, min_event_ts = %s, max_event_ts = %s
               where file_id = %s""",
            (loaded, len(rejected_rows), first_ts, last_ts, file_id),
        )
        result.rows_loaded, result.rows_rejected = loaded, len(rejected_rows)
        result.reasons = dict(Counter(reason.rule for _, reasons in rejected_rows for reason in reasons[:1]))
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
        for landed in candidates:
            if landed.path in known:
                continue
            file_result = ingest_file(url, spec, landed, fs, now=now, run_id=run_id)
            log.info(
                "%s %s: %s (%d loaded, %d rejected)%s", spec.name, landed.path, file_result.status,
                file_result.rows_loaded, file_result.rows_rejected, f": {file_result.error}" if file_result.error else "",
            )  # fmt: skip
            result.files.append(file_result)
    log.info(
        "%s: %d files, %d rows loaded, %d rejected in %.1fs", spec.name, len(result.files), result.rows_loaded,
        result.rows_rejected, time.perf_counter() - started,
    )  # fmt: skip
    return result
