"""The shared core every stage stands on: model specs (``spec``), paths and environment (``settings``),
the warehouse connection, embedded server and migrations (``warehouse``), the data contracts of the
events serving systems write (``contracts``), the alert outbox (``alerts``: ``ops.alerts``), the audit
trail (``audit``: ``ops.decisions``), advisory locks (``locks``) and the quality-metric definitions
shared by training and the offline gate (``quality``).

Owns the migrations in ``include/sql/migrations`` and the tables no single stage owns: ``ops.alerts``,
``ops.decisions``, ``ops.model_specs``, ``ops.watermarks``. Imports no other driftloop package.
"""
