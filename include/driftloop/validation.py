"""Row-level batch validation with Great Expectations.

Callers describe checks (`Check`: a GX expectation plus how to explain a failure to a person);
`validate_frame` runs them as one GX suite over a pandas batch and returns, per failing row (by its
`__line`), the reasons. GX is imported lazily: it takes seconds to import.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

    return gx, gxe, ProgressBarsConfig


def validate_frame(frame: pd.DataFrame, checks: list[Check], *, suite_name: str = "batch") -> ValidationReport:
    """Run `checks` with GX on `frame` (which has a `__line` column); collect reasons per failing line."""
    if frame.empty or not checks:
        return ValidationReport({}, len(checks), [])
    gx, gxe, ProgressBarsConfig = _gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas("driftloop")
        .add_dataframe_asset("landed_file")
        .add_batch_definition_whole_dataframe("whole_file")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_name}-{uuid.uuid4().hex[:8]}"))
    for index, check in enumerate(checks):
        expectation_class = getattr(gxe, check.expectation)
        suite.add_expectation(expectation_class(column=check.column, meta={"check": index}, **check.kwargs))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate-{suite.name}", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [LINE]},
    )
    reasons: dict[int, list[Reason]] = defaultdict(list)
    failed: list[str] = []
    for outcome in result.results:
        check = checks[outcome.expectation_config.meta["check"]]
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            # A check that cannot run is a bug in the derived suite, never a reason to drop rows silently.
            raise RuntimeError(
                f"validation check {check.rule} on {check.column} failed to run: "
                f"{outcome.exception_info.get('exception_message')}"
            )
        if outcome.success:
            continue
        failed.append(f"{check.field}:{check.rule}")
        for unexpected in outcome.result.get("unexpected_index_list") or []:
            value = unexpected.get(check.column)
            reasons[int(unexpected[LINE])].append(Reason(check.field, check.rule, check.explain(value)))
    return ValidationReport(dict(reasons), len(checks), failed)
