"""The Model health page of the Airflow UI: what the marts and the ``ops`` tables say about every monitored
model, read in a read-only transaction (``data``), drawn as SVG charts (``charts``), rendered as server-side
HTML (``pages``) and served by a FastAPI app behind Airflow's login (``app``, mounted by
``plugins/driftloop_health.py``). Nothing here writes to the warehouse.
"""
