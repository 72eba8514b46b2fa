"""Promote: a challenger faces the champion offline, then on live traffic, then is watched.

``gate`` (the offline gate on the challenger's holdout), ``decision`` (the pure decision of one look:
the always-valid sequential test, sample-ratio check, guardrails, bandit allocation, the watch),
``experiments`` (the experiment's lifecycle in the warehouse and the registry: allocation, evidence,
looks, promote / reject / rollback, crash repair).

Owns ``ops.experiments`` and ``ops.traffic_allocation`` (what serving reads); writes ``ops.decisions``.
"""
