"""Files validated together (stacked when the Arrow reader read them alike) keep exactly the verdicts,
rejected lines, reasons and typed columns each gets validated alone."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from driftloop.core.spec import get_spec
from driftloop.ingest.checks import check_batch, check_batches
from driftloop.ingest.parsing import parse_text, stack_key
from driftloop.ingest.validation import _VERDICTS
from landing import NOW, encode, prediction

SPEC = get_spec("churn")


def _features(**overrides):
    return {**prediction(SPEC)["features"], **overrides}


# one fault a file (None: a clean file); every one of them is read by the Arrow reader but the last
FAULTS = [
    None,
    {"latency_ms": -5.0},
    None,
    {"features": _features(plan="platinum")},
    {"request_ts": "2026-11-20T10:00:00"},
    {"request_ts": (NOW + timedelta(days=3)).isoformat()},
    {"request_ts": "yesterday"},
    None,
    {"model_name": "another_model"},
    {"scores": {"stay": 0.9, "churn": 0.3}},
    {"prediction": "maybe", "segment": "mars"},
    {"features": _features(tenure_months=None)},
    FAILED_REQUEST := {"error": "timeout", "prediction": None, "scores": None, "features": None},  # valid
    BARE_PROBABILITY := ("every line", {"scores": 0.25}),  # another Arrow schema, valid
    ("every line", {"scores": 0.25, "latency_ms": -1.0}),
    {"scores": {"stay": 1.5, "churn": -0.5}},
    None,
    {"unit_id": "u" * 300},
    {"latency_ms": "fast"},  # a wrong type: the row reader's
]


def _file(number: int, fault: dict | tuple | None) -> bytes:
    events = [prediction(SPEC, prediction_id=f"p-{number}-{line}") for line in range(6)]
    if isinstance(fault, tuple):
        for event in events:
            event.update(fault[1])
    elif fault is not None:
        events[2 + number % 3].update(fault)
    return encode(events)


@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_files_validated_together_get_what_each_gets_alone(order):
    # GIVEN files of one model, clean ones and ones with one fault each, most read by the Arrow reader alike
    faults = FAULTS if order == "as listed" else FAULTS[::-1]
    now = NOW + timedelta(minutes=5)

    def parsed():
        return [parse_text(SPEC, "predictions", f"f{n}.jsonl", _file(n, f), young=False) for n, f in enumerate(faults)]

    files = parsed()
    assert len({stack_key(one) for one in files} - {None}) == 2 and stack_key(files[-1 if order == "as listed" else 0]) is None
    # WHEN they are validated together, and each alone (no verdict remembered from before)
    _VERDICTS.clear()
    together = check_batches(SPEC, "predictions", files, now)
    _VERDICTS.clear()
    alone = [check_batch(SPEC, "predictions", one, now) for one in parsed()]
    # THEN every file has the same rejected lines with the same reasons in the same order, and the same columns
    for fault, mine, theirs in zip(faults, together, alone, strict=True):
        assert mine.reasons == theirs.reasons, fault
        assert (fault in (None, FAILED_REQUEST, BARE_PROBABILITY)) == (not mine.reasons)
        pd.testing.assert_series_equal(mine.timestamps, theirs.timestamps)
        assert mine.scores.keys() == theirs.scores.keys()
        for cls in mine.scores:
            pd.testing.assert_series_equal(mine.scores[cls], theirs.scores[cls])
