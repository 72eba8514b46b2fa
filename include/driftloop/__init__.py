"""driftloop: keep production ML models healthy on Airflow, dbt, Postgres, Great Expectations, whylogs and
MLflow.

One sub-package per pipeline stage, the Airflow glue on top, the simulator apart, a small shared core at the
bottom. Imports only go down this list (``tests/unit/test_layout.py`` checks it):

* ``core``: spec, settings, warehouse, contracts, the alert outbox, the audit trail, locks, metric definitions;
* the stages, in pipeline order (a stage imports the core and the stages before it):
  ``ingest`` -> ``monitor`` -> ``learn`` -> ``promote`` -> ``serve``;
* ``airflow`` (tasks, sensors, Assets, settings import, the local ``dag.test()`` runner) and ``report``
  (status screens from the warehouse);
* ``ui``: the Model health page of the Airflow UI (read-only: the marts and the ``ops`` tables);
* ``sim``: the data-generating process, example data, the decision simulations, the demo (nothing above
  imports it);
* ``cli``: the ``driftloop`` command.

Nothing here is imported eagerly: DAG files import only cheap modules at parse time.
"""
