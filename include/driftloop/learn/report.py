"""The training report logged with every retrain: Markdown with the candidates' numbers, the split,
feature importance and plots (ROC curves, reliability diagram, importance), written to a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from driftloop.core.spec import Task
from driftloop.learn.training import TrainingOutcome, encode_labels

_METRICS = ("roc_auc", "log_loss", "brier", "ece", "accuracy", "precision", "recall", "f1")


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _plots(outcome: TrainingOutcome, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    spec = outcome.spec
    holdout = outcome.split.holdout
    y_true = encode_labels(holdout["label"].tolist(), spec)
    classes = [str(c) for c in spec.classes]
    positive = classes.index(str(spec.positive_class)) if spec.task is Task.binary else None
    written = []

    figure, axes = plt.subplots(figsize=(5, 5))
    for candidate in outcome.candidates:
        if candidate.model is None:
            continue
        probabilities = candidate.holdout_probabilities
        if positive is not None:
            fpr, tpr, _ = roc_curve(y_true == positive, probabilities[:, positive])
        else:  # multiclass: micro-averaged one-vs-rest
            one_hot = np.eye(len(classes))[y_true]
            fpr, tpr, _ = roc_curve(one_hot.ravel(), probabilities.ravel())
        axes.plot(fpr, tpr, label=f"{candidate.kind} (AUC {_number(candidate.holdout.get('roc_auc'))})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "roc.png", dpi=90)
    plt.close(figure)
    written.append("roc.png")

    probabilities = outcome.best.holdout_probabilities
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(int)
    if len(np.unique(correct)) > 1:
        observed, predicted = calibration_curve(correct, confidence, n_bins=10, strategy="uniform")
        figure, axes = plt.subplots(figsize=(5, 5))
        axes.plot(predicted, observed, marker="o", label=outcome.best.kind)
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes.set(xlabel="confidence (top-class probability)", ylabel="accuracy", title="Reliability on the holdout")
        axes.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        figure.savefig(folder / "calibration.png", dpi=90)
        plt.close(figure)
        written.append("calibration.png")

    gain = outcome.importance["gain"]
    ordered = sorted(gain, key=gain.get)
    figure, axes = plt.subplots(figsize=(6, 0.3 * len(ordered) + 1.2))
    axes.barh(ordered, [gain[name] for name in ordered])
    axes.set(xlabel="share of importance (gain)", title=f"Feature importance: {outcome.best.kind}")
    figure.tight_layout()
    figure.savefig(folder / "importance.png", dpi=90)
    plt.close(figure)
    written.append("importance.png")
    return written


def write_report(outcome: TrainingOutcome, folder: Path, context: dict[str, Any]) -> Path:
    """Write ``report.md`` and its plots into ``folder``; returns the Markdown file."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(outcome, folder)
    spec = outcome.spec
    split = outcome.split.describe()
    lines = [
        f"# Training report: {spec.name}",
        "",
        f"- trigger: **{context.get('trigger')}** — {context.get('reason')}",
        f"- run key: `{context.get('run_key')}`",
        f"- data: {outcome.data.source}, {len(outcome.data.frame)} labelled rows, sha256 `{outcome.data_hash[:16]}…`",
        f"- winner: **{outcome.best.kind}** (best validation {spec.retraining.training.selection_metric})",
        "",
        "## Split (time-based: train < validation < holdout)",
        "",
        "| part | rows | first request | last request |",
        "| --- | ---: | --- | --- |",
        *[f"| {name} | {part['rows']} | {part['start']} | {part['end']} |" for name, part in split.items()],
        "",
        "## Candidates",
        "",
        "| candidate | set | " + " | ".join(_METRICS) + " | train s | ms/row |",
        "| --- | --- | " + " | ".join("---:" for _ in _METRICS) + " | ---: | ---: |",
    ]
    for candidate in outcome.candidates:
        if candidate.model is None:
            lines.append(f"| {candidate.kind} | skipped: {candidate.skipped} |" + " |" * (len(_METRICS) + 2))
            continue
        for name, values in (("validation", candidate.validation), ("holdout", candidate.holdout)):
            cells = " | ".join(_number(values.get(m)) for m in _METRICS)
            lines.append(
                f"| {candidate.kind} | {name} | {cells} | {candidate.seconds:.1f} | {_number(candidate.latency_ms_per_row)} |"
            )
    gain, permutation = outcome.importance["gain"], outcome.importance["permutation"]
    lines += [
        "",
        "## Feature importance (winner)",
        "",
        "| feature | gain share | permutation drop |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {gain[name]:.4f} | {permutation.get(name, 0.0):.4f} |" for name in sorted(gain, key=gain.get, reverse=True)],
        "",
        "## Plots",
        "",
        *[f"![{plot}]({plot})" for plot in plots],
        "",
    ]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path
