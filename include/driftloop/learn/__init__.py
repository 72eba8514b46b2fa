"""Learn: from a fired retraining trigger to a registered challenger.

``data`` (labelled training rows from the warehouse, their data version, the time-based split),
``training`` (the candidates: LightGBM, logistic regression, a warm start of the champion; importance),
``registry`` (the MLflow adapter: store, idempotent registration, aliases), ``pyfunc`` (the model every
driftloop version is logged as), ``report`` (the training report), ``retrain`` (one attempt end to end,
and the gate ``retrain__<model>``'s sensor applies).

Owns ``ops.retrain_runs`` and ``ops.model_aliases`` (the mirror of the registry's aliases).
"""
