"""Monitor: what the warehouse says about a model's health.

``profiling`` (whylogs profiles per closed window, version, variant and segment; summaries and bins on
the reference's edges), ``reference`` (reference profiles of model versions), ``dbt_runner`` (the dbt
project that builds the marts: windowed quality, latency, label coverage, feature and prediction drift,
``model_health``, ``retrain_signals``).

Owns ``profiles.*`` (whylogs_profiles, column_summaries, column_bins, reference_profiles) and, through
dbt, the ``staging``, ``intermediate`` and ``marts`` schemas.
"""
