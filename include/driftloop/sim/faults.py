"""The catalogue of bad inputs: contract files with every kind of fault the demo and the ingest tests
show (malformed lines, wrong types, probabilities off, unknown categories, duplicated ids, timestamps
in the future or without an offset, a truncated gzip, an empty file, feedback that comes before its
prediction or names another model), generated from any model spec by :mod:`driftloop.sim.world`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from driftloop.core.contracts import FEEDBACK, PREDICTIONS, landing_path
from driftloop.core.spec import FeatureType, ModelSpec
from driftloop.sim.world import (
    FEEDBACK_SOURCE,
    Scenario,
    _atomic_write,
    _aware,
    _gzip,
    _iso,
    _local_root,
    _stable_int,
    generate_predictions,
    prediction_lines,
)

__all__ = [
    "FAULT_FILE_CASES",
    "FAULT_LINE_CASES",
    "awaiting_prediction_line",
    "land_awaiting_prediction",
    "write_fault_files",
]


#: The lines of the mixed faults file, in order (line ``i + 1`` is entry ``i``): line 1 is a valid
#: event (``good``, not a fault), every other line is one fault case.
FAULT_LINE_CASES: tuple[str, ...] = (
    "good",
    "malformed_json",
    "missing_model_version",
    "wrong_type",
    "probability_out_of_range",
    "scores_not_summing_to_one",
    "unknown_category",
    "duplicate_id_in_file",
    "request_ts_in_future",
    "request_ts_without_offset",
    "negative_latency",
)

#: Cases written as whole files (besides the mixed file holding FAULT_LINE_CASES).
FAULT_FILE_CASES: tuple[str, ...] = (
    "duplicate_id_across_files",
    "same_content_twice",
    "truncated_gzip",
    "empty_file",
    "feedback_before_prediction",
    "feedback_unknown_model",
)


def _day_start(day: str) -> datetime:
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)


def _fault_base_ts(day: str, now: datetime) -> datetime:
    """A request time inside ``day`` that is not after ``now`` (noon, or earlier if now is earlier)."""
    day_start = _day_start(day)
    _aware(now, "now")
    if now < day_start:
        raise ValueError(f"now ({now.isoformat()}) is before the day {day}")
    return max(day_start, min(day_start + timedelta(hours=12), now - timedelta(hours=1)))


def _valid_events(spec: ModelSpec, day: str, now: datetime, n: int, purpose: str) -> list[dict[str, Any]]:
    """``n`` valid prediction events of the day, requested in the half hour up to the base time
    (so inside the day and not after ``now``), as dicts."""
    base = _fault_base_ts(day, now)
    lo = max(_day_start(day), base - timedelta(minutes=30))
    hi = max(base, lo + timedelta(milliseconds=1))
    scenario = Scenario(seed=_stable_int("faults", spec.name, day, purpose) % 2**31, missing_rate=0.0)
    frame = generate_predictions(spec, n, lo, hi, scenario)
    return [orjson.loads(line) for line in prediction_lines(frame).splitlines()]


def _line(event: Mapping[str, Any]) -> bytes:
    return orjson.dumps(event)


def awaiting_prediction_line(spec: ModelSpec, day: str, now: datetime) -> tuple[str, bytes]:
    """The prediction that :func:`write_fault_files`' early feedback refers to: ``(prediction_id, line)``."""
    event = _valid_events(spec, day, now, 1, "awaiting")[0]
    event["prediction_id"] = f"fault-awaiting-prediction-{day}"
    return event["prediction_id"], _line(event) + b"\n"


def land_awaiting_prediction(
    spec: ModelSpec, landing_root: str | os.PathLike[str], day: str, now: datetime
) -> str:
    """Land the prediction that the early feedback of :func:`write_fault_files` was waiting for.

    Written as ``faults-<day>-07-awaiting-prediction.jsonl`` under the day's predictions folder;
    returns its path.
    """
    _, line = awaiting_prediction_line(spec, day, now)
    path = landing_path(
        _local_root(landing_root), spec.name, PREDICTIONS, day, f"faults-{day}-07-awaiting-prediction.jsonl"
    )
    _atomic_write(path, line)
    return path


def write_fault_files(
    spec: ModelSpec,
    landing_root: str | os.PathLike[str],
    day: str,
    now: datetime,
) -> dict[str, list[str]]:
    """Land the catalogue of bad inputs for ``day`` (``YYYY-MM-DD``); return case -> paths.

    Predictions, under ``<root>/<model>/predictions/dt=<day>/`` (names sort in writing order):

    * ``faults-<day>-01-lines.jsonl``: one line per :data:`FAULT_LINE_CASES` entry, in that order.
      Line 1 is a valid event; each later line breaks exactly one rule, and its ``prediction_id`` is
      ``fault-<case>-<day>`` (except ``duplicate_id_in_file``, a verbatim replay of line 1):
      ``malformed_json`` (not JSON), ``missing_model_version``, ``wrong_type`` (the first numeric
      feature as the string ``"twelve"``; no numeric feature: ``latency_ms``),
      ``probability_out_of_range`` (scores 1.2 / -0.2: the sum is 1), ``scores_not_summing_to_one``
      (every class 0.7), ``unknown_category`` (the first categorical feature is
      ``"no_such_category"``; no categorical feature: an unknown ``prediction`` class),
      ``duplicate_id_in_file``, ``request_ts_in_future`` (``now`` + 1 day),
      ``request_ts_without_offset``, ``negative_latency`` (-5.0).
    * ``duplicate_id_across_files``: ``faults-<day>-02-duplicate-across-files.jsonl``, a valid new
      event plus a different event that reuses the prediction_id of line 1 of the lines file.
    * ``same_content_twice``: ``faults-<day>-03-same-content.jsonl.gz`` and
      ``faults-<day>-04-same-content-again.jsonl.gz``, byte-identical (three valid events).
    * ``truncated_gzip``: ``faults-<day>-05-truncated.jsonl.gz``, a valid gzip cut in half.
    * ``empty_file``: ``faults-<day>-06-empty.jsonl``, zero bytes.

    Feedback, under ``<root>/<model>/feedback/dt=<day>/faults-<day>-feedback.jsonl``:

    * ``feedback_before_prediction``: line 1 labels ``fault-awaiting-prediction-<day>``, a
      prediction in no file yet (land it later with :func:`land_awaiting_prediction`);
    * ``feedback_unknown_model``: line 2 labels line 1 of the lines file with
      ``"model_name": "no_such_model"``.

    The mapping also holds ``"awaiting_prediction_id": [<that prediction_id>]``. Files whose last
    line is incomplete (still being written) are not part of this catalogue.
    """
    root = _local_root(landing_root)
    _aware(now, "now")
    base = _fault_base_ts(day, now)
    good, *others = _valid_events(spec, day, now, 8, "catalogue")
    good["prediction_id"] = f"fault-good-{day}"

    def case(name: str, **changes: Any) -> dict[str, Any]:
        event = {**good, "prediction_id": f"fault-{name}-{day}", **changes}
        return event

    numeric = next((f.name for f in spec.features if f.type is FeatureType.numeric), None)
    categorical = next((f.name for f in spec.features if f.type is FeatureType.categorical), None)
    classes = [str(c) for c in spec.classes]
    positive = str(spec.positive_class) if spec.positive_class is not None else classes[-1]
    high, low = (positive, next(c for c in classes if c != positive)) if len(classes) == 2 else classes[:2]
    out_of_range = dict.fromkeys(classes, 0.0)  # the sum stays 1: only the range is wrong
    out_of_range[high], out_of_range[low] = 1.2, -0.2
    missing = case("missing_model_version")
    del missing["model_version"]
    if numeric is not None:
        wrong_type = case("wrong_type", features={**good["features"], numeric: "twelve"})
    else:
        wrong_type = case("wrong_type", latency_ms="twelve")
    if categorical is not None:
        unknown = case("unknown_category", features={**good["features"], categorical: "no_such_category"})
    else:
        unknown = case("unknown_category", prediction="no_such_class")
    no_offset = good["request_ts"].removesuffix("+00:00")
    good_line = _line(good)
    lines = [
        good_line,
        f'{{"prediction_id": "fault-malformed_json-{day}", "model_name": "{spec.name}", oops}}'.encode(),
        _line(missing),
        _line(wrong_type),
        _line(case("probability_out_of_range", scores=out_of_range)),
        _line(case("scores_not_summing_to_one", scores=dict.fromkeys(classes, 0.7))),
        _line(unknown),
        good_line,
        _line(case("request_ts_in_future", request_ts=_iso(now + timedelta(days=1)))),
        _line(case("request_ts_without_offset", request_ts=no_offset)),
        _line(case("negative_latency", latency_ms=-5.0)),
    ]
    assert len(lines) == len(FAULT_LINE_CASES)

    def land(kind: str, name: str, data: bytes) -> str:
        path = landing_path(root, spec.name, kind, day, f"faults-{day}-{name}")
        _atomic_write(path, data)
        return path

    result: dict[str, list[str]] = {}
    mixed = land(PREDICTIONS, "01-lines.jsonl", b"\n".join(lines) + b"\n")
    for name in FAULT_LINE_CASES[1:]:
        result[name] = [mixed]

    fresh, replay = others[0], {**others[1], "prediction_id": good["prediction_id"]}
    fresh["prediction_id"] = f"fault-duplicate_id_across_files-{day}"
    result["duplicate_id_across_files"] = [
        land(PREDICTIONS, "02-duplicate-across-files.jsonl", _line(fresh) + b"\n" + _line(replay) + b"\n")
    ]
    same = others[2:5]
    for i, event in enumerate(same):
        event["prediction_id"] = f"fault-same_content_twice-{day}-{i}"
    same_gz = _gzip(b"\n".join(_line(e) for e in same) + b"\n")
    result["same_content_twice"] = [
        land(PREDICTIONS, "03-same-content.jsonl.gz", same_gz),
        land(PREDICTIONS, "04-same-content-again.jsonl.gz", same_gz),
    ]
    cut = others[5:7]
    for i, event in enumerate(cut):
        event["prediction_id"] = f"fault-truncated_gzip-{day}-{i}"
    whole = _gzip(b"\n".join(_line(e) for e in cut) + b"\n")
    result["truncated_gzip"] = [land(PREDICTIONS, "05-truncated.jsonl.gz", whole[: len(whole) // 2])]
    result["empty_file"] = [land(PREDICTIONS, "06-empty.jsonl", b"")]

    awaiting_id, _ = awaiting_prediction_line(spec, day, now)
    feedback_ts = _iso(min(base + timedelta(minutes=30), now))
    label = good["prediction"]
    early = {"prediction_id": awaiting_id, "label": label, "outcome": 1.0, "feedback_ts": feedback_ts,
             "source": FEEDBACK_SOURCE, "model_name": spec.name}  # fmt: skip
    unknown_model = {**early, "prediction_id": good["prediction_id"], "model_name": "no_such_model"}
    feedback = land(FEEDBACK, "feedback.jsonl", _line(early) + b"\n" + _line(unknown_model) + b"\n")
    result["feedback_before_prediction"] = [feedback]
    result["feedback_unknown_model"] = [feedback]
    result["awaiting_prediction_id"] = [awaiting_id]
    return result
