"""Reading a landed file into typed columns, fast when the file is clean, exact when it is not.

Two readers give the same shape (`ParsedFile`: line numbers, the original line of every row, and a
`Source` of typed columns):

* the Arrow reader parses JSON lines in C++ against a schema derived from the spec. Any row that
  does not fit (a wrong type, an unknown field, a malformed line) makes it give up on the file;
* the row reader parses line by line with orjson, keeps every line it cannot parse with a reason,
  and records each value's JSON type so validation can name the rows of the wrong type.

Validation (driftloop.ingest.checks) and loading (driftloop.ingest.loader) never know which reader ran.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from driftloop.core.contracts import CONTRACTS, MAX_LINE_BYTES, PREDICTIONS, ContractField
from driftloop.core.spec import FeatureType, ModelSpec, Task
from driftloop.ingest.validation import Reason

_ARROW_BLOCK = 16 << 20


class UnreadableFile(Exception):
    """The file cannot be parsed at all (truncated gzip, not Parquet, ...)."""


class StillBeingWritten(Exception):
    pass


@dataclass
class Unparsed:
    line: int
    payload: bytes
    reasons: list[Reason]


def _non_finite(value: Any, path: str = "") -> list[tuple[str, float]]:
    """(path, value) of every NaN / infinite number in a parsed value."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path or "(value)", value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _non_finite(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _non_finite(item, f"{path}[{index}]")]
    return []


def _non_finite_reasons(found: list[tuple[str, float]]) -> list[Reason]:
    words = lambda v: "NaN" if math.isnan(v) else f"{'-' if v < 0 else ''}Infinity (or beyond +/-1.8e308)"  # noqa: E731
    return [
        Reason(path, "non_finite", f"{path} is {words(value)}: the contract allows finite numbers only")
        for path, value in found
    ]


def _too_long(line: bytes) -> list[Reason] | None:
    if len(line) <= MAX_LINE_BYTES:
        return None
    return [Reason("(line)", "line_length",
                   f"the record is {len(line):,} bytes long; the contract allows at most {MAX_LINE_BYTES:,} bytes per line")]  # fmt: skip


def _lenient_non_finite(line: bytes) -> list[tuple[str, float]]:
    """Why a line orjson refused may still be JSON to a lenient parser: NaN / Infinity / 1e400 numbers."""
    try:
        value = json.loads(line)
    except ValueError:
        return []
    return _non_finite(value) if isinstance(value, dict) else []


def _class_text(value: Any) -> Any:
    """Classes arrive as strings or ints; they are compared and stored as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Source:
    """Typed access to a batch's fields by path ("prediction_id", "features.plan", "scores.churn")."""

    exact_types = False  # True when the reader already enforced the JSON types

    def present(self, path: str) -> pd.Series:
        """Null where the field is missing or null."""
        raise NotImplementedError

    def type_names(self, path: str) -> pd.Series:
        """The JSON type of each value (row reader only)."""
        raise NotImplementedError

    def number(self, path: str) -> pd.Series:
        """float64; NaN where missing, null or not a number."""
        raise NotImplementedError

    def text(self, path: str, *, ints: bool = False) -> pd.Series:
        """category of strings (ints as text when `ints`); NaN otherwise."""
        raise NotImplementedError

    def strings(self, path: str) -> pd.Series:
        """object strings; None where missing or not a string."""
        raise NotImplementedError

    def lengths(self, path: str) -> pd.Series:
        """float64 length in characters of each string; NaN where missing or not a string."""
        raise NotImplementedError

    def arrow(self, path: str, kind: str) -> pa.Array:
        """The field as an Arrow array of `kind` ("string", "float64") for COPY; null where unusable."""
        raise NotImplementedError

    def scores(self, spec: ModelSpec) -> tuple[dict[str, pd.Series], pd.Series | None]:
        """Per-class probability columns (a bare number means the positive class) and, when the
        reader could not enforce it, each row's set of score keys for the classes check."""
        raise NotImplementedError


@dataclass
class ParsedFile:
    lines: np.ndarray  # int64 line number of each row
    events: pa.Array  # the original line of each row (string), stored as raw.*.event
    source: Source
    unparsed: list[Unparsed] = field(default_factory=list)
    reader: str = "rows"

    @property
    def rows(self) -> int:
        return len(self.lines)

    def payload(self, line: int) -> bytes:
        for item in self.unparsed:
            if item.line == line:
                return item.payload
        index = int(np.searchsorted(self.lines, line))
        return self.events[index].as_py().encode()


# --------------------------------------------------------------------------------------------- row reader


class _RowSource(Source):
    def __init__(self, objects: list[dict[str, Any]], spec: ModelSpec):
        self.objects = objects
        self.spec = spec
        self._values: dict[str, list[Any]] = {}

    def values(self, path: str) -> list[Any]:
        if path not in self._values:
            if "." in path:
                parent, child = path.split(".", 1)
                self._values[path] = [v.get(child) if isinstance(v, dict) else None for v in self.values(parent)]
            else:
                self._values[path] = [obj.get(path) for obj in self.objects]
        return self._values[path]

    def type_names(self, path: str) -> pd.Series:
        names = [None if v is None else type(v).__name__ for v in self.values(path)]
        return pd.Series(names, dtype="category")

    def present(self, path: str) -> pd.Series:
        return self.type_names(path)

    def number(self, path: str) -> pd.Series:
        return pd.Series([float(v) if _is_number(v) else np.nan for v in self.values(path)], dtype="float64")

    def text(self, path: str, *, ints: bool = False) -> pd.Series:
        convert = _class_text if ints else (lambda v: v if isinstance(v, str) else None)
        return pd.Series([convert(v) for v in self.values(path)], dtype="category")

    def strings(self, path: str) -> pd.Series:
        return pd.Series([v if isinstance(v, str) else None for v in self.values(path)], dtype=object)

    def lengths(self, path: str) -> pd.Series:
        return pd.Series([float(len(v)) if isinstance(v, str) else np.nan for v in self.values(path)], dtype="float64")

    def arrow(self, path: str, kind: str) -> pa.Array:
        if kind == "float64":
            return pa.array(self.number(path).to_numpy(), type=pa.float64(), from_pandas=True)
        return pa.array([_class_text(v) for v in self.values(path)], type=pa.string())

    def scores(self, spec: ModelSpec) -> tuple[dict[str, pd.Series], pd.Series | None]:
        classes = list(spec.classes)
        columns: dict[str, list[float]] = {cls: [] for cls in classes}
        key_sets: list[str | None] = []
        canonical = ",".join(sorted(classes))
        for value in self.values("scores"):
            if isinstance(value, dict):
                key_sets.append(",".join(sorted(str(k) for k in value)))
                for cls in classes:
                    probability = value.get(cls)
                    columns[cls].append(float(probability) if _is_number(probability) else np.nan)
            elif _is_number(value) and spec.task is Task.binary:
                key_sets.append(canonical)
                columns[spec.positive_class].append(float(value))
                columns[spec.negative_class].append(1.0 - float(value))
            else:
                # a bare number for a multiclass model says nothing about the other classes
                key_sets.append("(a single number)" if _is_number(value) else None)
                for cls in classes:
                    columns[cls].append(np.nan)
        series = {cls: pd.Series(values, dtype="float64") for cls, values in columns.items()}
        return series, pd.Series(key_sets, dtype="category")


def decompress(path: str, data: bytes) -> bytes:
    if not path.lower().endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise UnreadableFile(
            f"cannot decompress gzip ({type(exc).__name__}: {exc}); the file is truncated or corrupt"
        ) from exc


_BYTE_ORDER_MARKS = (  # longest first: the UTF-32 LE mark starts like the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)", "UTF-32BE"),
    (b"\xef\xbb\xbf", "UTF-8 with a byte-order mark", "UTF-8-SIG"),
    (b"\xff\xfe", "UTF-16 (little-endian)", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16 (big-endian)", "UTF-16BE"),
)


def _check_encoding(text: bytes) -> None:
    """A whole file in another encoding is one reason for the file, not one per fragment of it."""
    for mark, name, iconv in _BYTE_ORDER_MARKS:
        if text.startswith(mark):
            raise UnreadableFile(
                f"encoding: the file is {name} (it starts with the byte-order mark {mark.hex(' ').upper()}); the "
                f"contract is UTF-8 without a byte-order mark, so nothing of it is loaded: convert it (e.g. "
                f"iconv -f {iconv} -t UTF-8) and land it again"
            )
    head = text[:4096]
    if head and head.count(b"\x00") * 4 >= len(head):
        raise UnreadableFile(
            "encoding: the file looks like UTF-16 or UTF-32 without a byte-order mark (NUL bytes between the "
            "characters); the contract is UTF-8, so nothing of it is loaded: convert it and land it again"
        )


def _not_utf8(line: bytes) -> list[Reason] | None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = line[exc.start]
        return [Reason("(line)", "encoding",
                       f"encoding: the line is not UTF-8 (byte 0x{byte:02X} at position {exc.start}: "
                       f"{'Latin-1 or Windows-1252?' if byte >= 0x80 else exc.reason}); the contract is UTF-8")]  # fmt: skip
    return None


def _read_rows(spec: ModelSpec, text: bytes, *, young: bool, path: str, first_line: int = 1) -> ParsedFile:
    lines = text.split(b"\n")
    last_complete = text.endswith(b"\n")
    last_number = first_line + len(lines) - 1
    numbers: list[int] = []
    payloads: list[str] = []
    objects: list[dict[str, Any]] = []
    unparsed: list[Unparsed] = []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        problem = _too_long(line) or _not_utf8(line)
        if problem and not (young and number == last_number and not last_complete):
            unparsed.append(Unparsed(number, line, problem))
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            is_last = number == last_number and not last_complete
            if is_last and young:
                raise StillBeingWritten(path) from None
            non_finite = [] if is_last else _lenient_non_finite(line)
            if non_finite:
                unparsed.append(Unparsed(number, line, _non_finite_reasons(non_finite)))
                continue
            message = (
                "incomplete last line: the file ends in the middle of a record (truncated, or the writer died)"
                if is_last
                else f"malformed JSON: {exc}"
            )
            unparsed.append(Unparsed(number, line, [Reason("(line)", "json", message)]))
            continue
        if not isinstance(obj, dict):
            reason = Reason("(line)", "json", f"expected a JSON object, got {type(obj).__name__}")
            unparsed.append(Unparsed(number, line, [reason]))
        elif b"\\u0000" in line:
            reason = Reason("(line)", "nul", "contains a NUL character (\\u0000), which PostgreSQL cannot store")
            unparsed.append(Unparsed(number, line, [reason]))
        else:
            numbers.append(number)
            payloads.append(line.decode().strip())
            objects.append(obj)
    return ParsedFile(
        np.array(numbers, dtype=np.int64), pa.array(payloads, type=pa.string()), _RowSource(objects, spec), unparsed
    )


def _read_parquet(spec: ModelSpec, data: bytes) -> ParsedFile:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any reader error means the file is unreadable
        raise UnreadableFile(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    for row in rows:
        for key in ("features", "scores"):
            if isinstance(row.get(key), str):  # JSON-encoded objects are allowed in Parquet
                try:
                    row[key] = orjson.loads(row[key])
                except orjson.JSONDecodeError:
                    pass  # left as a string: the type check rejects it with a clear reason
        for key, value in list(row.items()):
            if isinstance(value, datetime):  # naive values keep no offset and are rejected as such
                row[key] = value.isoformat()
    numbers, payloads, kept, unparsed = [], [], [], []
    for number, row in enumerate(rows, start=1):
        # NaN would be written as null by orjson: a value changed without a word; refuse it instead
        non_finite = _non_finite(row)
        payload = orjson.dumps(row, default=str)
        problems = _non_finite_reasons(non_finite) if non_finite else _too_long(payload)
        if problems:
            unparsed.append(Unparsed(number, payload, problems))
            continue
        numbers.append(number)
        payloads.append(payload.decode())
        kept.append(row)
    return ParsedFile(
        np.array(numbers, dtype=np.int64), pa.array(payloads, type=pa.string()), _RowSource(kept, spec), unparsed
    )


# --------------------------------------------------------------------------------------------- arrow reader


def _arrow_class_type(value: Any) -> pa.DataType:
    return pa.int64() if isinstance(value, int) and not isinstance(value, bool) else pa.string()


_ARROW_TYPES = {"string": pa.string(), "number": pa.float64(), "timestamp": pa.string()}


def _arrow_schema(spec: ModelSpec, fields: tuple[ContractField, ...], first: dict[str, Any]) -> pa.Schema | None:
    columns = []
    for contract_field in fields:
        name = contract_field.name
        if contract_field.kind in _ARROW_TYPES:
            columns.append((name, _ARROW_TYPES[contract_field.kind]))
        elif contract_field.kind == "class":
            columns.append((name, _arrow_class_type(first.get(name))))
        elif contract_field.kind == "features":
            feature_types = {
                FeatureType.numeric: pa.float64(),
                FeatureType.categorical: pa.string(),
                FeatureType.boolean: pa.bool_(),
            }
            columns.append((name, pa.struct([(f.name, feature_types[f.type]) for f in spec.features])))
        elif contract_field.kind == "scores":
            if isinstance(first.get("scores"), dict):
                columns.append((name, pa.struct([(str(c), pa.float64()) for c in spec.classes])))
            elif _is_number(first.get("scores")) and spec.task is Task.binary:
                columns.append((name, pa.float64()))
            else:
                return None
    return pa.schema(columns)


class _ArrowSource(Source):
    exact_types = True

    def __init__(self, table: pa.Table, spec: ModelSpec):
        self.nested = table
        self.table = table.flatten()
        self.spec = spec

    def column(self, path: str) -> pa.ChunkedArray:
        if path in self.table.column_names:
            return self.table.column(path)
        return self.nested.column(path)

    def present(self, path: str) -> pd.Series:
        column = self.column(path)
        if pa.types.is_struct(column.type) or pa.types.is_string(column.type):
            # only whether it is there matters here (encoding a column of ids as categories cost more than the checks)
            import pyarrow.compute as pc

            return pd.Series(np.where(pc.is_null(column).to_numpy(zero_copy_only=False), np.nan, 1.0))
        return column.to_pandas()

    def number(self, path: str) -> pd.Series:
        return self.column(path).cast(pa.float64()).to_pandas()

    def text(self, path: str, *, ints: bool = False) -> pd.Series:
        return self.column(path).cast(pa.string()).dictionary_encode().to_pandas()

    def strings(self, path: str) -> pd.Series:
        return self.column(path).to_pandas()

    def lengths(self, path: str) -> pd.Series:
        import pyarrow.compute as pc

        return pc.utf8_length(self.column(path)).cast(pa.float64()).to_pandas()

    def arrow(self, path: str, kind: str) -> pa.Array:
        return self.column(path).cast(pa.float64() if kind == "float64" else pa.string()).combine_chunks()

    def scores(self, spec: ModelSpec) -> tuple[dict[str, pd.Series], pd.Series | None]:
        if "scores" in self.table.column_names:  # a bare positive-class probability (binary)
            probability = self.number("scores")
            return {spec.positive_class: probability, spec.negative_class: 1.0 - probability}, None
        return {str(c): self.number(f"scores.{c}") for c in spec.classes}, None


def stack_key(parsed: ParsedFile) -> tuple | None:
    """Files read by the Arrow reader with the same schema can be stacked (`stacked`); None: this one cannot."""
    if not isinstance(parsed.source, _ArrowSource) or parsed.unparsed:
        return None
    return parsed.source.nested.schema, parsed.events.type


def stacked(files: list[ParsedFile]) -> ParsedFile:
    """Files of one `stack_key` end to end, as one file: their rows in order (each keeps its line numbers)."""
    source = files[0].source
    table = pa.concat_tables([one.source.nested for one in files]).combine_chunks()
    events = pa.concat_arrays([one.events for one in files])
    return ParsedFile(np.concatenate([one.lines for one in files]), events, _ArrowSource(table, source.spec), reader="arrow")


def _line_spans(text: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Start offsets and 1-based numbers of the lines; None when a line is blank or too long."""
    newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
    starts = np.concatenate(([0], newlines + 1))
    if starts[-1] == len(text):  # the file ends with a newline: no last line after it
        starts = starts[:-1]
    ends = np.concatenate((starts[1:], [len(text)]))
    if len(starts) == 0 or np.any(ends - starts <= 1) or np.any(ends - starts > MAX_LINE_BYTES + 1):
        return None
    return starts, np.arange(1, len(starts) + 1, dtype=np.int64)


def _has_non_finite(table: pa.Table) -> bool:
    """Arrow reads NaN / Infinity literals as numbers; the row reader rejects them with their reason."""
    import pyarrow.compute as pc

    return any(
        pc.any(pc.invert(pc.is_finite(column))).as_py()
        for column in table.flatten().columns
        if pa.types.is_floating(column.type)
    )


def _read_arrow(spec: ModelSpec, kind: str, text: bytes, first_line: int = 1) -> ParsedFile | None:
    """The fast path, or None when the file needs the row reader to explain its problems."""
    import pyarrow.compute as pc
    import pyarrow.json as pj

    if not text.endswith(b"\n") or b"\\u0000" in text:
        return None
    first_end = text.find(b"\n")
    try:
        first = orjson.loads(text[:first_end])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(first, dict):
        return None
    schema = _arrow_schema(spec, CONTRACTS[kind], first)
    spans = _line_spans(text)
    if schema is None or spans is None:
        return None
    try:
        table = pj.read_json(
            io.BytesIO(text),
            read_options=pj.ReadOptions(block_size=_ARROW_BLOCK),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    starts, numbers = spans
    numbers = numbers + (first_line - 1)
    if table.num_rows != len(starts) or _has_non_finite(table):
        return None
    offsets = pa.py_buffer(np.concatenate((starts, [len(text)])).astype(np.int32 if len(text) < 2**31 else np.int64))
    array_type = pa.binary() if len(text) < 2**31 else pa.large_binary()
    raw_lines = pa.Array.from_buffers(array_type, len(starts), [None, offsets, pa.py_buffer(text)])
    try:
        events = pc.utf8_rtrim_whitespace(raw_lines.cast(pa.string() if len(text) < 2**31 else pa.large_string()))
    except pa.ArrowInvalid:  # not UTF-8
        return None
    return ParsedFile(numbers, events, _ArrowSource(table, spec), reader="arrow")


def parse_file(spec: ModelSpec, kind: str, path: str, data: bytes, *, young: bool) -> ParsedFile:
    """Parse a landed file (JSON lines, gzipped or not, or Parquet)."""
    if path.lower().endswith(".parquet"):
        return _read_parquet(spec, data)
    return parse_text(spec, kind, path, decompress(path, data), young=young)


def parse_text(spec: ModelSpec, kind: str, path: str, text: bytes, *, young: bool, first_line: int = 1) -> ParsedFile:
    """Parse JSON lines (already decompressed); the first line of `text` is line `first_line` of the file."""
    if first_line == 1:
        _check_encoding(text)
    if kind == PREDICTIONS or kind in CONTRACTS:
        fast = _read_arrow(spec, kind, text, first_line) if text else None
        if fast is not None:
            return fast
    return _read_rows(spec, text, young=young, path=path, first_line=first_line)
