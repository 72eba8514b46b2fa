"""Promotion, step 1: the offline gate. The challenger and the champion are scored on the challenger's
holdout (rows newer than any the challenger trained on) and the challenger passes only if every check
of ``spec.promotion.offline_gate`` passes:

* ROC AUC better by at least ``min_relative_auc_gain`` (relative);
* prediction time per row within ``max_latency_ratio`` of the champion's;
* top-label ECE not worse by more than ``max_ece_increase``;
* no segment (with ``min_segment_rows``) losing more than ``max_segment_auc_drop`` of AUC;
* feature importance not shifted: Spearman rank correlation of gain importance over the union of
  both models' ``top_features`` at least ``min_importance_rank_correlation``.

:func:`evaluate_gate` is pure (numbers in, verdicts out); :func:`run_offline_gate` gathers the numbers
from the registry and the warehouse, records the decision in ``ops.decisions`` and, on a failure,
removes the ``challenger`` alias (the version is tagged rejected), and says why in an alert.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftloop.core import warehouse
from driftloop.core.audit import record_decision
from driftloop.core.spec import ModelSpec, OfflineGate
from driftloop.learn import registry

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    threshold: float
    passed: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[Check, ...]

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        if not failed:
            return "offline gate passed: " + "; ".join(c.detail for c in self.checks)
        return "offline gate failed: " + "; ".join(c.detail for c in failed)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [dataclasses.asdict(c) for c in self.checks]}


def _auc(spec: ModelSpec, y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    from driftloop.core.quality import quality_metrics

    return quality_metrics(spec, y_true, probabilities).get("roc_auc")


def _ece(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    from driftloop.core.quality import expected_calibration_error

    return expected_calibration_error((probabilities.argmax(axis=1) == y_true).astype(float), probabilities.max(axis=1))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def importance_rank_correlation(champion: Mapping[str, float], challenger: Mapping[str, float], top: int) -> float | None:
    """Spearman correlation of the two gain importances over the union of each one's top features."""
    from scipy.stats import spearmanr

    def leaders(importance: Mapping[str, float]) -> list[str]:
        return sorted(importance, key=lambda name: (-importance[name], name))[:top]

    features = sorted(set(leaders(champion)) | set(leaders(challenger)))
    a = [champion.get(f, 0.0) for f in features]
    b = [challenger.get(f, 0.0) for f in features]
    if len(features) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def evaluate_gate(
    spec: ModelSpec,
    policy: OfflineGate,
    *,
    y_true: np.ndarray,
    segments: Sequence[str | None],
    champion_probabilities: np.ndarray,
    challenger_probabilities: np.ndarray,
    champion_ms_per_row: float,
    challenger_ms_per_row: float,
    champion_importance: Mapping[str, float] | None,
    challenger_importance: Mapping[str, float] | None,
) -> GateResult:
    """Every check with its value, threshold and verdict (pure)."""
    checks = []
    auc_champion = _auc(spec, y_true, champion_probabilities)
    auc_challenger = _auc(spec, y_true, challenger_probabilities)
    gain = (auc_challenger - auc_champion) / auc_champion if auc_champion and auc_challenger is not None else None
    checks.append(Check(
        "auc_gain", gain, policy.min_relative_auc_gain, gain is not None and gain >= policy.min_relative_auc_gain,
        f"ROC AUC {_fmt(auc_challenger)} vs champion {_fmt(auc_champion)}: relative gain {_fmt(gain)} "
        f"(needs >= {policy.min_relative_auc_gain})",
    ))  # fmt: skip
    ratio = challenger_ms_per_row / champion_ms_per_row if champion_ms_per_row > 0 else None
    checks.append(Check(
        "latency_ratio", ratio, policy.max_latency_ratio, ratio is not None and ratio <= policy.max_latency_ratio,
        f"{challenger_ms_per_row:.5f} ms/row vs champion {champion_ms_per_row:.5f}: ratio {_fmt(ratio)} "
        f"(needs <= {policy.max_latency_ratio})",
    ))  # fmt: skip
    ece_increase = _ece(y_true, challenger_probabilities) - _ece(y_true, champion_probabilities)
    checks.append(Check(
        "ece_increase", ece_increase, policy.max_ece_increase, ece_increase <= policy.max_ece_increase,
        f"ECE change {ece_increase:+.4f} (needs <= +{policy.max_ece_increase})",
    ))  # fmt: skip
    labels = np.asarray([s if s is not None else "(none)" for s in segments], dtype=object)
    worst, worst_segment, measured = None, None, []
    for segment in sorted(set(labels.tolist())):
        mask = labels == segment
        if mask.sum() < policy.min_segment_rows:
            continue
        a = _auc(spec, y_true[mask], champion_probabilities[mask])
        b = _auc(spec, y_true[mask], challenger_probabilities[mask])
        if a is None or b is None:
            continue
        measured.append(segment)
        if worst is None or b - a < worst:
            worst, worst_segment = b - a, segment
    checks.append(Check(
        "segment_auc_drop", -worst if worst is not None else None, policy.max_segment_auc_drop,
        worst is None or -worst <= policy.max_segment_auc_drop,
        f"worst segment {worst_segment!r}: AUC change {worst:+.4f} over {len(measured)} segments "
        f"(needs >= -{policy.max_segment_auc_drop})" if worst is not None else "no segment with enough rows",
    ))  # fmt: skip
    correlation = (
        importance_rank_correlation(champion_importance, challenger_importance, policy.top_features)
        if champion_importance and challenger_importance else None
    )  # fmt: skip
    checks.append(Check(
        "importance_rank_correlation", correlation, policy.min_importance_rank_correlation,
        correlation is None or correlation >= policy.min_importance_rank_correlation,
        f"gain importance rank correlation {_fmt(correlation)} (needs >= {policy.min_importance_rank_correlation})"
        if correlation is not None else "importance of one model unknown: not compared",
    ))  # fmt: skip
    return GateResult(all(c.passed for c in checks), tuple(checks))


# --------------------------------------------------------------------------------------------------
# Against the registry and the warehouse


def _importance(url: str, model_name: str, version: str) -> dict[str, float] | None:
    with warehouse.connect(url) as conn:
        row = conn.execute(
            "select feature_importance -> 'gain' from ops.retrain_runs where model_name = %s and model_version = %s "
            "and status = 'succeeded' order by finished_at desc limit 1",
            (model_name, version),
        ).fetchone()
    return row[0] if row else None


def reject_challenger(url: str, spec: ModelSpec, version: str, reason: str) -> None:
    """Tag the version rejected with the reason and remove the ``challenger`` alias if it points at it.
    Idempotent."""
    client = registry.client()
    client.set_model_version_tag(spec.name, version, "driftloop.status", "rejected")
    client.set_model_version_tag(spec.name, version, "driftloop.rejected_because", reason[:4000])
    registry.remove_alias(url, spec.name, registry.CHALLENGER, str(version))


def run_offline_gate(url: str | None, spec: ModelSpec, challenger_version: str | None = None,
                     airflow_run_id: str | None = None) -> GateResult:  # fmt: skip
    """Score champion and challenger on the challenger's holdout, decide, record, and act on a failure."""
    import mlflow
    import pandas as pd

    from driftloop.core.alerts import enqueue_alert
    from driftloop.learn.training import encode_labels, paired_ms_per_row

    url = warehouse.resolve_url(url)
    client = registry.client()
    champion = registry.version_by_alias(spec.name, registry.CHAMPION)
    challenger = (
        registry.VersionInfo(spec.name, str(challenger_version), None, "", {})
        if challenger_version else registry.version_by_alias(spec.name, registry.CHALLENGER)
    )  # fmt: skip
    if champion is None or challenger is None:
        raise LookupError(f"{spec.name}: the offline gate needs a champion and a challenger")
    challenger_run = client.get_model_version(spec.name, challenger.version).run_id
    holdout = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=challenger_run, artifact_path="data/holdout.parquet"))
    names = [f.name for f in spec.features]
    features = holdout[names]
    champion_model = mlflow.pyfunc.load_model(f"models:/{spec.name}/{champion.version}")
    challenger_model = mlflow.pyfunc.load_model(f"models:/{spec.name}/{challenger.version}")
    classes = [str(c) for c in spec.classes]
    champion_ms, challenger_ms = paired_ms_per_row(champion_model.predict, challenger_model.predict, features)
    result = evaluate_gate(
        spec, spec.promotion.offline_gate,
        y_true=encode_labels(holdout["label"].tolist(), spec),
        segments=holdout["segment"].tolist(),
        champion_probabilities=champion_model.predict(features)[classes].to_numpy(dtype=float),
        challenger_probabilities=challenger_model.predict(features)[classes].to_numpy(dtype=float),
        champion_ms_per_row=champion_ms,
        challenger_ms_per_row=challenger_ms,
        champion_importance=_importance(url, spec.name, champion.version),
        challenger_importance=_importance(url, spec.name, challenger.version),
    )  # fmt: skip
    evidence = {**result.as_dict(), "champion_version": champion.version, "challenger_version": challenger.version,
                "holdout_rows": len(holdout), "holdout_start": holdout["request_ts"].min(),
                "holdout_end": holdout["request_ts"].max(), "policy": spec.promotion.offline_gate.model_dump()}  # fmt: skip
    with warehouse.connect(url) as conn, conn.transaction():
        record_decision(conn, spec.name, step="offline_gate", decision="pass" if result.passed else "fail",
                        reason=result.reason, evidence=evidence, airflow_run_id=airflow_run_id)  # fmt: skip
    if not result.passed:
        reject_challenger(url, spec, challenger.version, result.reason)
        with warehouse.connect(url) as conn, conn.transaction():
            enqueue_alert(
                conn, dedup_key=f"offline-gate-failed:{spec.name}:{challenger.version}", source="promote",
                severity="info", model_name=spec.name,
                summary=f"{spec.name} version {challenger.version} rejected by the offline gate; "
                        f"version {champion.version} stays champion",
                details={"reason": result.reason, "checks": result.as_dict()["checks"]},
            )  # fmt: skip
    log.info("%s", result.reason)
    return result
