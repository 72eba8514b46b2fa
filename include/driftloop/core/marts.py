"""What an alert rule may name: the marts (dbt, schema ``marts``) and their columns a rule can compare with
a threshold, with what a value stands on. Spec validation uses it (so a rule on a column that does not
exist is refused when the spec is read), the monitor evaluates through it. Pure data, cheap to import;
``tests/unit/core/test_marts.py`` checks it against the dbt project's YAML, so it cannot drift from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mart:
    """A mart a rule can read.

    ``windowed``: one row per model, version, variant, segment, window_size and window_start (else one row
    per model). ``samples``: the column counting what a value stands on (a rule's ``min_samples``).
    ``label_based``: its values need labels, so only mature windows (``is_mature``) count. ``entity``: the
    column naming what a row is about (a feature, a prediction column): one alert lists every entity for
    which the condition holds in the window, instead of one alert each. ``columns``: what a rule may
    compare (numbers; ``is_drifted`` is a boolean)."""

    name: str
    windowed: bool
    columns: frozenset[str]
    samples: str | None = None
    label_based: bool = False
    entity: str | None = None


MARTS: dict[str, Mart] = {
    mart.name: mart
    for mart in (
        Mart(
            "fct_model_quality", True, samples="n_labelled", label_based=True,
            columns=frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "ece",
                               "positive_rate", "mean_score", "mean_confidence", "label_coverage", "n_labelled",
                               "n_predictions"}),
        ),
        Mart(
            "fct_latency", True, samples="n_predictions",
            columns=frozenset({"error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                               "throughput_per_second", "n_predictions", "n_failed"}),
        ),
        Mart(
            "fct_label_coverage", True, samples="n_scored", label_based=True,
            columns=frozenset({"label_coverage", "label_delay_p50_seconds", "label_delay_p90_seconds",
                               "label_delay_p99_seconds", "n_awaiting", "n_labelled"}),
        ),
        Mart(
            "fct_feature_drift", True, samples="n_values", entity="feature",
            columns=frozenset({"psi", "js_distance", "ks_statistic", "ks_p_value", "chi2_statistic", "chi2_p_value",
                               "statistic_value", "is_drifted"}),
        ),
        Mart(
            "fct_prediction_drift", True, samples="n_values", entity="column_name",
            columns=frozenset({"psi", "js_distance", "ks_statistic", "ks_p_value", "chi2_statistic", "chi2_p_value",
                               "statistic_value", "is_drifted"}),
        ),
        Mart(
            "fct_ingest_quality", True, samples="n_rows", entity="kind",
            columns=frozenset({"rejected_share", "rows_rejected", "rows_loaded", "n_files", "n_failed_files"}),
        ),
        Mart(
            "model_health", False,
            columns=frozenset({"seconds_since_latest_request", "seconds_since_latest_load", "accuracy", "roc_auc",
                               "f1", "log_loss", "label_coverage", "n_drifted_features"}),
        ),
    )
}  # fmt: skip

#: model_health's freshness columns are ages at the monitor's clock (now - the newest load / request),
#: not at the last dbt build's: no data means no build, and the age must still grow.
FRESHNESS_COLUMNS = {"seconds_since_latest_load": "latest_loaded_at", "seconds_since_latest_request": "latest_request_ts"}


def describe_column(mart: str, column: str) -> str | None:
    """Why ``mart.column`` cannot be named by a rule, or None when it can."""
    known = MARTS.get(mart)
    if known is None:
        return f"unknown mart {mart!r} (known: {', '.join(sorted(MARTS))})"
    if column not in known.columns:
        return f"{mart} has no column {column!r} a rule can compare (known: {', '.join(sorted(known.columns))})"
    return None
