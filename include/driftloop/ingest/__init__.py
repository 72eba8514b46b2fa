"""Ingest: landed prediction and feedback files into the warehouse, exactly once, losing nothing.

``parsing`` (a landed file -> typed columns: an Arrow fast path and a row-by-row exact path), ``checks``
(the expectations the contract and the spec imply), ``validation`` (Great Expectations, row-level
reasons), ``loader`` (discovery, the manifest, dedup, COPY, one transaction per file).

Owns ``raw.predictions`` (partitioned by day), ``raw.prediction_keys``, ``raw.feedback``,
``raw.ingest_files`` (the manifest) and ``raw.rejected_records``.
"""
