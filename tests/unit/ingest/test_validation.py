"""The GX runner finds exactly the failing rows, whatever the summary pass reduces the batch to."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from driftloop.ingest.validation import _VERDICTS, LINE, Check, validate_frame, validate_frames

RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[Zz]|[+-]\d{2}:\d{2})$"


def _frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    stamps = pd.Series([f"2026-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}T10:00:00+00:00" for _ in range(rows)])
    return pd.DataFrame(
        {
            LINE: np.arange(1, rows + 1),
            "served": rng.random(rows) > 0.1,
            "value": rng.normal(0, 1, rows),
            "category": pd.Series(rng.choice(["a", "b", "c"], rows), dtype="category"),
            "required": pd.Series(rng.choice(["x", "y"], rows), dtype=object),
            "stamp": stamps,
        }
    )


def _checks() -> list[Check]:
    return [
        Check("ExpectColumnValuesToBeBetween", "value", "value", "range", str, {"min_value": -3, "max_value": 3}),
        Check("ExpectColumnValuesToBeInSet", "category", "category", "allowed", str, {"value_set": ["a", "b", "c"]}),
        Check(
            "ExpectColumnValuesToNotBeNull", "required", "required", "required", str,
            {"row_condition": "served == True", "condition_parser": "pandas"},
        ),  # fmt: skip
        Check("ExpectColumnValuesToMatchRegex", "stamp", "stamp", "format", str, {"regex": RFC3339}, digits_alike=True),
    ]


def _brute_force(frame: pd.DataFrame) -> dict[int, set[str]]:
    expected: dict[int, set[str]] = {}
    for row in frame.to_dict("records"):
        rules = set()
        if not pd.isna(row["value"]) and not -3 <= row["value"] <= 3:
            rules.add("range")
        if not pd.isna(row["category"]) and row["category"] not in {"a", "b", "c"}:
            rules.add("allowed")
        if row["served"] and row["required"] is None:
            rules.add("required")
        if row["stamp"] is not None and not re.match(RFC3339, row["stamp"]):
            rules.add("format")
        if rules:
            expected[row[LINE]] = rules
    return expected


@pytest.mark.parametrize("seed", range(4))
def test_reasons_match_a_row_by_row_evaluation(seed):
    rng = np.random.default_rng(seed)
    frame = _frame(rng, 400)
    bad = rng.choice(len(frame), size=12, replace=False)
    frame.loc[bad[:3], "value"] = [5.0, -9.0, 3.5]
    frame["category"] = frame["category"].cat.add_categories(["zz"])
    frame.loc[bad[3:5], "category"] = "zz"
    frame.loc[bad[5:8], "required"] = None
    frame.loc[bad[8:10], "stamp"] = ["2026-01-01T10:00:00", "yesterday"]
    frame.loc[bad[10:], "served"] = False  # not served: a missing `required` is fine there
    frame.loc[bad[10:], "required"] = None

    report = validate_frame(frame, _checks())

    found = {line: {reason.rule for reason in reasons} for line, reasons in report.reasons.items()}
    assert found == _brute_force(frame)


def test_clean_batch_has_no_reasons():
    frame = _frame(np.random.default_rng(9), 200)
    report = validate_frame(frame, _checks())
    assert report.reasons == {} and report.failed_checks == []


def test_validating_a_batch_writes_no_temporary_directory_line(caplog):
    # GIVEN logging at INFO (Airflow tasks, `driftloop -v`): GX used to log one line per validated file
    frame = pd.DataFrame({LINE: [1, 2], "value": [0.5, 3.0]})
    check = Check("ExpectColumnValuesToBeBetween", "value", "value", "range", str, {"max_value": 1.0})
    with caplog.at_level("INFO"):
        report = validate_frame(frame, [check])
    assert set(report.reasons) == {2}
    assert not [r for r in caplog.records if "Created temporary directory" in r.getMessage()]


def test_verdicts_reused_across_batches_still_find_each_batchs_failures():
    # GIVEN a batch validated first (its verdicts are kept for the same values)
    rng = np.random.default_rng(11)
    def rules(frame):
        return {line: {r.rule for r in reasons} for line, reasons in validate_frame(frame, _checks()).reasons.items()}

    clean = _frame(rng, 200)
    assert rules(clean) == _brute_force(clean)
    # WHEN batches with the same categories and stamp shapes come, one of them with a null and a bad category
    same = _frame(rng, 200)
    assert rules(same) == _brute_force(same)
    dirty = _frame(rng, 200)
    dirty["category"] = dirty["category"].cat.add_categories(["zz"])
    dirty.loc[[3, 7], "category"] = "zz"
    dirty.loc[dirty.index[dirty["served"]][:2], "required"] = None
    found = rules(dirty)
    # THEN every failing row of each batch is found, and a repeat of a failing batch fails the same way
    assert found == _brute_force(dirty) and {"allowed", "required"} <= set().union(*found.values())
    assert rules(dirty) == found


def test_many_batches_validated_together_each_keep_their_own_failures():
    # GIVEN several batches, some clean, some failing different checks, none of their verdicts known yet
    _VERDICTS.clear()
    rng = np.random.default_rng(21)
    frames = [_frame(rng, 150) for _ in range(6)]
    frames[1].loc[[4, 9], "value"] = [7.0, -4.0]
    frames[3]["category"] = frames[3]["category"].cat.add_categories(["zz"])
    frames[3].loc[[2], "category"] = "zz"
    frames[4].loc[frames[4].index[frames[4]["served"]][:1], "required"] = None
    frames[5].loc[[0], "stamp"] = "2026-01-01 10:00"
    # WHEN they are validated in one GX validation of their stacked summaries
    reports = validate_frames([(frame, _checks()) for frame in frames])
    # THEN each batch has exactly the failing rows and reasons a row-by-row evaluation gives, and the
    # same verdicts as validating it alone
    for frame, report in zip(frames, reports, strict=True):
        assert {line: {r.rule for r in reasons} for line, reasons in report.reasons.items()} == _brute_force(frame)
    _VERDICTS.clear()
    alone = [validate_frame(frame, _checks()) for frame in frames]
    assert [r.failed_checks for r in reports] == [r.failed_checks for r in alone]
    assert [r.failed_checks for r in reports][0] == [] and reports[1].failed_checks == ["value:range"]


def test_a_row_condition_keeps_the_rows_pandas_eval_keeps():
    from driftloop.ingest.validation import _condition_mask

    frame = _frame(np.random.default_rng(5), 50)
    assert (_condition_mask(frame, "served == True") == frame.eval("served == True").to_numpy(dtype=bool)).all()
    assert (_condition_mask(frame, "value > 0") == (frame["value"] > 0).to_numpy()).all()


def test_digit_shapes_are_those_of_a_regex_replacing_each_digit():
    import pyarrow as pa
    import pyarrow.compute as pc

    from driftloop.ingest.validation import _digits_as_zero

    # ASCII digits only (a regex's \\d), whatever the other characters: Arabic-Indic and full-width digits stay
    values = pd.Series(["2026-11-20T10:00:00.123+05:30", "", "x9\u0663\uff13y", "\U0001f600 42", "no digits", "0123456789"])
    expected = pc.replace_substring_regex(pa.array(values, type=pa.string()), r"\d", "0")
    assert _digits_as_zero(values).to_pylist() == expected.to_pylist()
    assert _digits_as_zero(values[2:]).to_pylist() == expected.to_pylist()[2:]
