"""The data contracts of DESIGN.md: what a serving system writes, as code.

`PredictionEvent` / `FeedbackEvent` validate and serialize single events (the simulator and the
serving router write through them). Ingestion validates whole batches at once; it takes the field
lists and rules from `PREDICTION_FIELDS` / `FEEDBACK_FIELDS` below, so both sides share one contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from driftloop.core.spec import FeatureType, ModelSpec, Task

# JSON kinds a contract field may hold.
Kind = Literal["string", "class", "number", "timestamp", "features", "scores"]

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
KINDS = (PREDICTIONS, FEEDBACK)


# Limits that are part of the contract (a longer value is rejected with its reason, never loaded):
# identifiers are index keys (PostgreSQL's btree refuses entries over ~2.7 kB, 256 characters of up to
# 4 UTF-8 bytes each stay under it), and one record is one line of at most MAX_LINE_BYTES.
MAX_IDENTIFIER_LENGTH = 256
MAX_LINE_BYTES = 1 << 20
# Numbers are finite: NaN and +/-Infinity are not JSON numbers, and jsonb cannot hold them.


@dataclass(frozen=True)
class ContractField:
    name: str
    kind: Kind
    required: bool  # present and not null
    rule: str  # for people: README, error messages
    max_length: int | None = None  # characters, for strings


PREDICTION_FIELDS: tuple[ContractField, ...] = (
    ContractField("prediction_id", "string", True, "unique per prediction; the idempotency key", MAX_IDENTIFIER_LENGTH),
    ContractField("model_name", "string", True, "matches a spec in include/specs"),
    ContractField("model_version", "string", True, "registry version that produced it", MAX_IDENTIFIER_LENGTH),
    ContractField("variant", "string", True, "experiment arm that served it (control, challenger, ...)", MAX_IDENTIFIER_LENGTH),
    ContractField("experiment_id", "string", False, "set while an online experiment runs", MAX_IDENTIFIER_LENGTH),
    ContractField("unit_id", "string", False, "the randomisation unit for sticky assignment", MAX_IDENTIFIER_LENGTH),
    ContractField("request_ts", "timestamp", True, "RFC 3339 with offset, not in the future"),
    ContractField("latency_ms", "number", True, "model latency, >= 0"),
    ContractField("features", "features", True, "feature name -> value, as declared in the spec"),
    ContractField("prediction", "class", True, "predicted class, one of the spec's classes"),
    ContractField("scores", "scores", True, "class -> probability summing to 1, or the positive-class probability"),
    ContractField("segment", "string", False, "an optional slice (region, platform, ...)", MAX_IDENTIFIER_LENGTH),
    ContractField("error", "string", False, "serving error, if the request failed"),
)

FEEDBACK_FIELDS: tuple[ContractField, ...] = (
    ContractField("prediction_id", "string", True, "the prediction it labels", MAX_IDENTIFIER_LENGTH),
    ContractField("label", "class", True, "the true class, one of the spec's classes"),
    ContractField("outcome", "number", False, "the business reward for A/B (conversion 0/1, revenue)"),
    ContractField("feedback_ts", "timestamp", True, "RFC 3339 with offset, when the truth became known"),
    ContractField("source", "string", True, "explicit / implicit / human_review ..."),
    # Not in the minimal contract: feedback lands under <root>/<model>/feedback/, so the folder names
    # the model; when a writer also sets model_name it must agree with that folder.
    ContractField("model_name", "string", False, "optional; when set, the model the feedback is for"),
)

CONTRACTS: dict[str, tuple[ContractField, ...]] = {PREDICTIONS: PREDICTION_FIELDS, FEEDBACK: FEEDBACK_FIELDS}

FeatureValue = float | int | str | bool | None


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def to_json_line(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=False)) + b"\n"


_Identifier = Field(min_length=1, max_length=MAX_IDENTIFIER_LENGTH)
_OptionalIdentifier = Field(default=None, max_length=MAX_IDENTIFIER_LENGTH)


class PredictionEvent(_Event):
    prediction_id: str = _Identifier
    model_name: str = Field(min_length=1)
    model_version: str = _Identifier
    variant: str = Field(default="control", max_length=MAX_IDENTIFIER_LENGTH)
    experiment_id: str | None = _OptionalIdentifier
    unit_id: str | None = _OptionalIdentifier
    request_ts: AwareDatetime
    latency_ms: float = Field(ge=0)
    features: dict[str, FeatureValue]
    prediction: str | int
    scores: dict[str, float] | float
    segment: str | None = _OptionalIdentifier
    error: str | None = None

    @field_validator("scores")
    @classmethod
    def _probabilities(cls, value: dict[str, float] | float) -> dict[str, float] | float:
        values = list(value.values()) if isinstance(value, dict) else [value]
        if any(not (0.0 <= v <= 1.0) or math.isnan(v) for v in values):
            raise ValueError("probabilities must be in [0, 1]")
        if isinstance(value, dict) and abs(sum(values) - 1.0) > 0.01:
            raise ValueError(f"class probabilities must sum to 1 (sum {sum(values):.4f})")
        return value

    def check_against(self, spec: ModelSpec, now: datetime | None = None) -> list[str]:
        """What in this event breaks the spec (empty when it conforms). Used by writers before logging;
        ``now`` (default: the wall clock) is the writer's clock for "not in the future"."""
        problems = []
        if self.model_name != spec.name:
            problems.append(f"model_name {self.model_name!r} is not {spec.name!r}")
        if str(self.prediction) not in spec.classes:
            problems.append(f"prediction {self.prediction!r} is not one of {spec.classes}")
        for feature in spec.features:
            value = self.features.get(feature.name)
            if value is None:
                if feature.required:
                    problems.append(f"feature {feature.name!r} is required")
                continue
            if feature.type is FeatureType.numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
                problems.append(f"feature {feature.name!r} must be a number")
            elif feature.type is FeatureType.categorical and str(value) not in (feature.categories or []):
                problems.append(f"feature {feature.name!r} value {value!r} is not one of {feature.categories}")
            elif feature.type is FeatureType.boolean and not isinstance(value, bool):
                problems.append(f"feature {feature.name!r} must be true or false")
        if self.request_ts > (now or datetime.now(UTC)):
            problems.append("request_ts is in the future")
        if spec.task is Task.binary and isinstance(self.scores, dict) and set(self.scores) != set(spec.classes):
            problems.append(f"scores must have exactly the classes {spec.classes}")
        return problems


class FeedbackEvent(_Event):
    prediction_id: str = _Identifier
    label: str | int
    outcome: float | None = None
    feedback_ts: AwareDatetime
    source: str = "explicit"
    model_name: str | None = None


def landing_path(root: str, model_name: str, kind: str, day: str, filename: str) -> str:
    """`<root>/<model_name>/{predictions,feedback}/dt=YYYY-MM-DD/<filename>` (DESIGN.md, landing zone)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return f"{root.rstrip('/')}/{model_name}/{kind}/dt={day}/{filename}"


def landing_relative(path: str, model_name: str) -> str:
    """A landed file's path from the landing root on (`<model>/<kind>/dt=.../<file>`), whatever the root."""
    for kind in KINDS:
        marker = f"/{model_name}/{kind}/"
        at = path.rfind(marker)
        if at >= 0:
            return path[at + 1 :]
    return path
