"""Row-level batch validation with Great Expectations.

Callers describe checks (`Check`: a GX expectation plus how to explain a failure to a person);
`validate_frame` runs them as one GX suite over a pandas batch and returns, per failing row (by its
`__line`), the reasons. GX is imported lazily: it takes seconds to import.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

LINE = "__line"


@dataclass(frozen=True)
class Reason:
    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Check:
    """One expectation over one column, and the sentence a person reads when a row fails it."""

    expectation: str  # GX class name, e.g. "ExpectColumnValuesToBeBetween"
    column: str
    field: str  # contract / feature name the person knows
    rule: str  # short machine-friendly rule name: not_null, type, range, allowed_values, ...
    explain: Callable[[Any], str]  # failing value -> message
    kwargs: dict[str, Any] = field(default_factory=dict)
    # For a regex in which every digit is matched by \d and no literal digit appears: replacing each
    # digit of a value by 0 cannot change whether it matches, so distinct "shapes" stand for the values.
    digits_alike: bool = False


@dataclass
class ValidationReport:
    reasons: dict[int, list[Reason]]
    checks_run: int
    failed_checks: list[str]

    def rejected_lines(self) -> set[int]:
        return set(self.reasons)


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # That module sets its own logger to INFO on import, and every ephemeral context then logs "Created
    # temporary directory ... for ephemeral docs site": one stderr line per validated file, whatever the
    # caller's logging level. It says nothing to a reader.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx, gxe, ProgressBarsConfig


# GX copies and filters the whole batch frame for every metric it computes, so the cost grows with
# columns x checks; validating narrow slices of the frame keeps it linear in the checks.
_COLUMNS_PER_RUN = 6


def _column_groups(checks: list[Check], columns_per_run: int = _COLUMNS_PER_RUN) -> list[list[int]]:
    by_column: dict[str, list[int]] = {}
    for index, check in enumerate(checks):
        by_column.setdefault(check.column, []).append(index)
    columns = list(by_column)
    return [
        [index for column in columns[start : start + columns_per_run] for index in by_column[column]]
        for start in range(0, len(columns), columns_per_run)
    ]


def _condition_columns(frame: pd.DataFrame, check: Check) -> list[str]:
    condition = check.kwargs.get("row_condition") or ""
    return [column for column in frame.columns if column in condition]


def _run_suites(context, frame: pd.DataFrame, checks: list[Check], selected: list[int], result_format: dict,
                suite_name: str, columns_per_run: int = _COLUMNS_PER_RUN) -> list[tuple[int, Any]]:  # fmt: skip
    """Run the selected checks in narrow column groups; returns (check, GX result) pairs."""
    gx, gxe, _ = _gx()
    source = context.data_sources.add_pandas(f"driftloop-{uuid.uuid4().hex[:8]}")
    outcomes = []
    for group_number, group in enumerate(_column_groups([checks[i] for i in selected], columns_per_run)):
        group = [selected[i] for i in group]
        columns = [LINE]
        for index in group:
            for column in [checks[index].column, *_condition_columns(frame, checks[index])]:
                if column not in columns:
                    columns.append(column)
        batch = source.add_dataframe_asset(f"slice-{group_number}").add_batch_definition_whole_dataframe("whole")
        expectations = [
            getattr(gxe, checks[index].expectation)(column=checks[index].column, meta={"check": index}, **checks[index].kwargs)
            for index in group
        ]
        # all expectations at once: adding them one by one re-serializes the suite each time
        suite = context.suites.add(
            gx.ExpectationSuite(name=f"{suite_name}-{group_number}-{uuid.uuid4().hex[:8]}", expectations=expectations)
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate-{suite.name}", data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame[columns]}, result_format=result_format)
        for outcome in result.results:
            check = checks[outcome.expectation_config.meta["check"]]
            if outcome.exception_info and outcome.exception_info.get("raised_exception"):
                # A check that cannot run is a bug in the derived suite, never a reason to drop rows silently.
                raise RuntimeError(
                    f"validation check {check.rule} on {check.column} failed to run: "
                    f"{outcome.exception_info.get('exception_message')}"
                )
            outcomes.append((outcome.expectation_config.meta["check"], outcome))
    return outcomes


_CONDITION_KEYS = ("row_condition", "condition_parser")


_IS_TRUE = re.compile(r"^(\w+) == True$")


def _condition_mask(frame: pd.DataFrame, condition: str) -> np.ndarray:
    """The rows a pandas row condition keeps (`frame.eval`; a boolean column `== True` directly: eval costs
    ~15 ms a call, a third of a small file's time)."""
    simple = _IS_TRUE.match(condition)
    if simple and simple.group(1) in frame.columns and frame[simple.group(1)].dtype == bool:
        return frame[simple.group(1)].to_numpy(dtype=bool)
    return frame.eval(condition).to_numpy(dtype=bool)


def _representatives(check: Check, frame: pd.DataFrame, masks: dict[str, np.ndarray]) -> list[Any]:
    """A few values of the check's column that fail the check exactly when some row does.

    The four expectations used here are predicates on single values (null, in a set, in a range,
    matching a regex), so a column passes iff its distinct values pass, iff its extremes pass (range).
    """
    values = frame[check.column]
    condition = check.kwargs.get("row_condition")
    if condition:
        if condition not in masks:
            masks[condition] = _condition_mask(frame, condition)
        values = values[masks[condition]]
    present = values.dropna()
    if check.expectation == "ExpectColumnValuesToNotBeNull":
        return ([None] if len(present) < len(values) else []) + (present.iloc[:1].tolist() or ["(no rows)"])
    if present.empty:
        return [None]
    if check.expectation == "ExpectColumnValuesToBeBetween":
        return [present.min(), present.max()]
    if check.expectation == "ExpectColumnValuesToMatchRegex" and check.digits_alike:
        import pyarrow.compute as pc

        return pc.unique(_digits_as_zero(present.astype(str))).to_pylist()
    return pd.unique(present).tolist()


_DIGITS_AS_ZERO = np.arange(256, dtype=np.uint8)
_DIGITS_AS_ZERO[ord("0") : ord("9") + 1] = ord("0")


def _digits_as_zero(values: pd.Series):
    """The strings with every ASCII digit replaced by 0 (a regex's \\d), byte by byte: in UTF-8 the bytes
    of digits never occur inside another character. A regex replacement cost ~0.25 s per 100k strings."""
    import pyarrow as pa

    strings = pa.array(values, type=pa.string())
    if strings.buffers()[2] is None:  # only empty strings
        return strings
    data = _DIGITS_AS_ZERO[np.frombuffer(strings.buffers()[2], dtype=np.uint8)]
    return pa.Array.from_buffers(pa.string(), len(strings), [strings.buffers()[0], strings.buffers()[1], pa.py_buffer(data)],
                                 offset=strings.offset)  # fmt: skip


def _summary_frame(values: list[list[Any]], checks: list[Check]) -> tuple[pd.DataFrame, list[Check]]:
    """One small frame of representatives per check (padded by repeating a value: never changes a verdict)."""
    columns: dict[str, list[Any]] = {}
    summary_checks = []
    for index, (check, representatives) in enumerate(zip(checks, values, strict=True)):
        name = f"c{index}"
        columns[name] = representatives
        kwargs = {k: v for k, v in check.kwargs.items() if k not in _CONDITION_KEYS}
        summary_checks.append(replace(check, column=name, kwargs=kwargs))
    rows = max(len(values) for values in columns.values())
    padded = {name: pd.Series(values + [values[-1]] * (rows - len(values))) for name, values in columns.items()}
    return pd.DataFrame({LINE: np.arange(rows), **padded}), summary_checks


# GX's verdict of a check on a summary column depends only on the expectation, its arguments and the
# column's values: verdicts already computed in this process are reused. Files of one model repeat the
# same nulls, categories and id shapes, so for small files GX then runs only the checks whose values are
# new (mostly ranges); GX's fixed cost per expectation (~10 ms) was most of a small file's time.
_VERDICTS: dict[tuple, bool] = {}
_VERDICTS_MAX = 20_000


def _verdict_key(check: Check, values: list[Any]) -> tuple:
    kwargs = sorted((k, repr(v)) for k, v in check.kwargs.items() if k not in _CONDITION_KEYS)
    if check.expectation == "ExpectColumnValuesToNotBeNull":  # its present value only fills the column
        values = [None if v is None else "(present)" for v in values]
    return (check.expectation, tuple(kwargs), tuple((type(v).__name__, repr(v)) for v in values))


def validate_frame(frame: pd.DataFrame, checks: list[Check], *, suite_name: str = "batch") -> ValidationReport:
    """Run `checks` with GX on `frame` (which has a `__line` column); collect reasons per failing line.

    Two passes: GX first validates a summary of the batch (for each check, the few values that fail
    it exactly when a row does: nulls, distinct values, extremes) with BOOLEAN_ONLY results; then
    only the failed checks run again on the whole batch with COMPLETE results, which list the
    failing rows by `__line`. Clean batches, the common case, cost one small validation, of the checks
    whose summary values this process has not validated before (see _VERDICTS).
    """
    if frame.empty or not checks:
        return ValidationReport({}, len(checks), [])
    contexts = _Contexts()
    masks: dict[str, np.ndarray] = {}
    values = [_representatives(check, frame, masks) for check in checks]
    keys = [_verdict_key(check, representatives) for check, representatives in zip(checks, values, strict=True)]
    verdicts = {key: _VERDICTS[key] for key in keys if key in _VERDICTS}
    unknown = [index for index, key in enumerate(keys) if key not in verdicts]
    if unknown:
        summary, summary_checks = _summary_frame([values[i] for i in unknown], [checks[i] for i in unknown])
        first = _run_suites(
            contexts.get(), summary, summary_checks, list(range(len(unknown))), {"result_format": "BOOLEAN_ONLY"},
            suite_name, columns_per_run=len(unknown),
        )  # fmt: skip
        for position, outcome in first:
            verdicts[keys[unknown[position]]] = bool(outcome.success)
        _remember({keys[i]: verdicts[keys[i]] for i in unknown})
    return _detail(contexts, frame, checks, [index for index, key in enumerate(keys) if not verdicts[key]], suite_name)


class _Contexts:
    """One ephemeral GX context, made when first needed."""

    def __init__(self):
        self.context = None

    def get(self):
        if self.context is None:
            gx, _, ProgressBarsConfig = _gx()
            self.context = gx.get_context(mode="ephemeral")
            self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        return self.context


def _remember(verdicts: dict[tuple, bool]) -> None:
    if len(_VERDICTS) > _VERDICTS_MAX:
        _VERDICTS.clear()
    _VERDICTS.update(verdicts)


def _detail(contexts: _Contexts, frame: pd.DataFrame, checks: list[Check], failed_checks: list[int],
            suite_name: str) -> ValidationReport:  # fmt: skip
    """The failed checks again on the whole batch, COMPLETE: the failing rows by `__line`, with reasons."""
    reasons: dict[int, list[Reason]] = defaultdict(list)
    if failed_checks:
        detail = {"result_format": "COMPLETE", "unexpected_index_column_names": [LINE]}
        for index, outcome in _run_suites(contexts.get(), frame, checks, failed_checks, detail, suite_name):
            check = checks[index]
            for unexpected in outcome.result.get("unexpected_index_list") or []:
                reasons[int(unexpected[LINE])].append(Reason(check.field, check.rule, check.explain(unexpected.get(check.column))))
    failed = [f"{checks[i].field}:{checks[i].rule}" for i in failed_checks]
    return ValidationReport(dict(reasons), len(checks), failed)


def validate_frames(batches: list[tuple[pd.DataFrame, list[Check]]], *, suite_name: str = "batch") -> list[ValidationReport]:
    """`validate_frame` for many batches (files), with one GX validation of their stacked summaries
    (`_failed_checks`); then every batch with a failed check is validated again alone, whole (its failing
    rows and reasons by GX); the others are clean. Same verdicts and reasons as `validate_frame` on each batch.
    """
    contexts = _Contexts()
    failed = _failed_checks(contexts, [(frame, checks, None) for frame, checks in batches], suite_name)
    return [
        ValidationReport({}, len(checks), []) if frame.empty or not checks
        else _detail(contexts, frame, checks, failed_checks, suite_name)
        for (frame, checks), failed_checks in zip(batches, failed, strict=True)
    ]  # fmt: skip


def failed_checks_of_stacks(stacks: list[tuple[pd.DataFrame, list[Check], list[int]]], *,
                            suite_name: str = "batch") -> list[list[list[int]]]:  # fmt: skip
    """The checks each batch fails, for batches stacked end to end in one frame (with their checks, and
    the rows of each batch, in order): for each stack, for each of its batches, the failed checks' indices.

    A check passes on a stack exactly when it passes on each of its batches (the expectations are
    predicates on single values), so the summary values are taken once a stack (`_failed_checks`: one GX
    validation for all stacks); only the checks a stack fails are summarised again batch by batch (one
    more GX validation for all such batches) to name the batches that fail them.
    """
    contexts = _Contexts()
    failed = _failed_checks(contexts, [(frame, checks, None) for frame, checks, _ in stacks], suite_name)
    per_batch: list[list[list[int]]] = [[[] for _ in rows] for _, _, rows in stacks]
    slices, owners = [], []
    for number, ((frame, checks, rows), stack_failed) in enumerate(zip(stacks, failed, strict=True)):
        if not stack_failed:
            continue
        if len(rows) == 1:
            per_batch[number][0] = stack_failed
            continue
        ends = np.cumsum(rows)
        for position, (start, end) in enumerate(zip(ends - rows, ends, strict=True)):
            slices.append((frame.iloc[start:end], checks, stack_failed))
            owners.append((number, position))
    for (number, position), batch_failed in zip(owners, _failed_checks(contexts, slices, suite_name), strict=True):
        per_batch[number][position] = batch_failed
    return per_batch


def detail_report(frame: pd.DataFrame, checks: list[Check], failed_checks: list[int], *,
                  suite_name: str = "batch") -> ValidationReport:  # fmt: skip
    """The report of a batch whose failed checks are known (`failed_checks_of_stacks`): those checks run
    again on the whole batch, COMPLETE, for its failing rows and reasons (nothing runs for a clean batch)."""
    if frame.empty or not checks:
        return ValidationReport({}, len(checks), [])
    return _detail(_Contexts(), frame, checks, failed_checks, suite_name)


def _failed_checks(contexts: _Contexts, batches: list[tuple[pd.DataFrame, list[Check], list[int] | None]],
                   suite_name: str) -> list[list[int]]:  # fmt: skip
    """The failed checks of each batch (among its `selected` checks, None: all), from one GX validation of
    their stacked summary values.

    Each batch's summary values (see `validate_frame`) whose verdict this process does not know are
    stacked, check by check, into one summary frame: one column per distinct (expectation, arguments),
    each row remembering which batch its value came from. GX validates that frame once with COMPLETE
    results; the rows it lists as unexpected name the batches that fail the check (the expectations are
    predicates on single values, so a batch fails a check exactly when one of its values does).
    """
    keys: list[dict[int, tuple]] = []
    # stacked columns: (expectation, arguments) -> values, the batch of each value, a check standing for them
    stacks: dict[tuple, tuple[list[Any], list[int], Check]] = {}
    pending: list[list[tuple[int, tuple]]] = []  # per batch: (check index, stack key) of its unknown checks
    known: list[dict[tuple, bool]] = []  # per batch: the verdicts this process knew
    for number, (frame, checks, selected) in enumerate(batches):
        keys.append({})
        pending.append([])
        known.append({})
        if frame.empty or not checks:
            continue
        masks: dict[str, np.ndarray] = {}
        for index in range(len(checks)) if selected is None else selected:
            check = checks[index]
            representatives = _representatives(check, frame, masks)
            key = _verdict_key(check, representatives)
            keys[number][index] = key
            if key in _VERDICTS:
                known[number][key] = _VERDICTS[key]
                continue
            stack_key = key[:2] + (check.digits_alike,)
            stack = stacks.setdefault(stack_key, ([], [], check))
            stack[0].extend(representatives)
            stack[1].extend([number] * len(representatives))
            pending[number].append((index, stack_key))
    failing: dict[tuple, set[int]] = {}
    if stacks:
        order = list(stacks)
        summary, summary_checks = _summary_frame([stacks[k][0] for k in order], [stacks[k][2] for k in order])
        owners = [np.asarray(stacks[k][1] + [stacks[k][1][-1]] * (len(summary) - len(stacks[k][1]))) for k in order]
        outcomes = _run_suites(
            contexts.get(), summary, summary_checks, list(range(len(order))),
            {"result_format": "COMPLETE", "unexpected_index_column_names": [LINE]}, suite_name, columns_per_run=len(order),
        )  # fmt: skip
        for position, outcome in outcomes:
            rows = [int(u[LINE]) for u in outcome.result.get("unexpected_index_list") or []]
            failing[order[position]] = {int(owners[position][row]) for row in rows}
            if not outcome.success and not rows:  # a failure GX did not attribute to rows: every batch of it fails
                failing[order[position]] = set(stacks[order[position]][1])
    failed = []
    for number in range(len(batches)):
        verdicts = {keys[number][index]: number not in failing.get(stack_key, set()) for index, stack_key in pending[number]}
        _remember(verdicts)
        verdicts.update(known[number])
        failed.append([index for index, key in keys[number].items() if not verdicts[key]])
    return failed
