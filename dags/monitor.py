"""monitor__<model>: the spec's alert rules on the marts, then the alert outbox to Slack / PagerDuty.

Runs after every marts build (the marts Asset) and on its own clock (alerts.monitor_schedule, every 30
minutes by default): freshness ("no data") must be judged when no data arrives, and deliveries that
failed are retried. evaluate_rules opens, updates and resolves alerts (one per model, rule and segment;
driftloop.monitor.alerting); deliver_alerts sends what is due and the daily digest (driftloop.core.notify;
the connections driftloop_slack, driftloop_slack_webhook, driftloop_pagerduty; none configured: alerts
wait in ops.alerts). The run's clock is the one it states in its conf ({"now": ...}), else its data
interval's end. Wiring only (see include/driftloop/airflow/tasks.py).
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from driftloop.airflow.assets import marts_asset
from driftloop.airflow.tasks import dag_defaults
from driftloop.core.spec import ModelSpec, load_specs


def build_monitor_dag(spec: ModelSpec):
    @dag(
        dag_id=f"monitor__{spec.name}",
        description=f"Alert rules of {spec.name} on the marts; alerts delivered to Slack / PagerDuty",
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(spec.alerts.monitor_schedule, timezone="UTC"), assets=[marts_asset()]
        ),
        **dag_defaults(spec.owner),
        tags=["driftloop", "monitor", spec.name],
        doc_md=__doc__,
    )
    def monitor_dag():
        @task
        def evaluate_rules(dag_run=None, **context) -> dict:
            from driftloop.airflow.tasks import run_clock, run_monitor

            return run_monitor(spec.name, now=run_clock({**context, "dag_run": dag_run}), dag_id=dag_run.dag_id, run_id=dag_run.run_id)

        @task(trigger_rule="all_done")  # deliver what other sources raised even if the rules failed
        def deliver_alerts(**context) -> dict:
            from driftloop.airflow.tasks import deliver_alerts as deliver
            from driftloop.airflow.tasks import run_clock

            return deliver(spec.name, now=run_clock(context))

        evaluate_rules() >> deliver_alerts()

    return monitor_dag()


for _spec in load_specs().values():
    globals()[f"monitor__{_spec.name}"] = build_monitor_dag(_spec)
