"""The Airflow glue: ``tasks`` (each DAG task's call into a stage, with explicit arguments), ``sensors``
(the deferrable experiment-look sensor and its trigger), ``assets`` (every Asset, declared once),
``settings_import`` (``airflow_settings.yaml`` into a plain Airflow), ``local`` (DAGs in-process with
``dag.test()``). DAG files import only this package's cheap modules at parse time. Owns no table.
"""
