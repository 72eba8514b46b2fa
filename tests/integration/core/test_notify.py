"""The alert outbox delivered for real: slack-sdk (bot token and incoming webhook) and the pagerduty
client talk to local servers that record every request (tests/fake_providers.py); the warehouse is real.
Covers the payloads, one message per alert, threads and resolutions, routing by severity, retries after
500 / 429 / a timeout, a crash between the provider's answer and the commit, no connection at all, the
digest, and that no secret is ever written anywhere."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fake_providers import CHANNEL_ID, SECRETS, WEBHOOK_PATH, FakeProviders, connection_env

from driftloop.core import alerts, notify
from driftloop.core.warehouse import sync_specs

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
WINDOW = datetime(2026, 11, 19, tzinfo=UTC)


@pytest.fixture
def fake(tmp_path):
    servers = FakeProviders(tmp_path / "tls")
    yield servers
    servers.close()


@pytest.fixture
def url(warehouse_url):
    sync_specs(warehouse_url)
    return warehouse_url


def use(monkeypatch, fake: FakeProviders, **kinds) -> notify.Channels:
    for key in ("AIRFLOW_CONN_DRIFTLOOP_SLACK", "AIRFLOW_CONN_DRIFTLOOP_SLACK_WEBHOOK", "AIRFLOW_CONN_DRIFTLOOP_PAGERDUTY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in connection_env(fake, **kinds).items():
        monkeypatch.setenv(key, value)
    channels = notify.channels_from_connections()
    channels.timeout = 1.0
    return channels


def condition(url, *, severity="critical", rule="quality_floor", segment="(all)", value=0.61, window=WINDOW,
              routes=None, now=NOW, entities=None, changed=False):  # fmt: skip
    routes = routes if routes is not None else alerts.routes_for("churn", severity)
    details = {
        "rule": {"name": rule, "mart": "fct_model_quality", "column": "precision", "comparator": "<", "severity": severity},
        "value": value, "threshold": 0.70, "threshold_reason": "version 1's holdout 0.8235 -15%",
        "window": {"size": "day", "start": window.isoformat(), "n": 1234}, "segment": segment,
        "entities": entities or [], "actions": ["retraining started (degradation, 2026-11-20 11:00 UTC)"],
        "airflow": {"dag_id": "monitor__churn", "run_id": "scheduled__2026-11-20T12:00:00+00:00"},
    }  # fmt: skip
    with psycopg.connect(url) as conn, conn.transaction():
        return alerts.raise_condition(
            conn, model_name="churn", rule_name=rule, segment=segment, severity=severity,
            summary=f"churn: precision {value} below 0.7 (day of {window:%Y-%m-%d})", details=details,
            value=value, threshold=0.70, window_size="day", window_start=window, routes=routes, now=now, changed=changed,
        )  # fmt: skip


def clear(url, window, now):
    with psycopg.connect(url) as conn, conn.transaction():
        return alerts.clear_condition(conn, model_name="churn", rule_name="quality_floor", segment="(all)",
                                      window_start=window, resolve_after=2, now=now)  # fmt: skip


def deliveries(url) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select channel, event, status, attempts from ops.alert_deliveries order by delivery_id"
        ).fetchall()


def block_text(message: dict) -> str:
    blocks = message.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return json.dumps(blocks)


# --------------------------------------------------------------------------------------------------


def test_a_critical_condition_pages_and_posts_once_with_what_how_bad_the_numbers_and_what_was_done(url, fake, monkeypatch):
    # GIVEN Slack (bot) and PagerDuty connections, and a critical condition
    channels = use(monkeypatch, fake)
    assert condition(url)[0] == "opened"

    # WHEN the outbox is delivered, then the same condition holds at the next looks (same and next window)
    first = notify.deliver_pending(url, now=NOW, channels=channels)
    assert condition(url, now=NOW + timedelta(minutes=30))[0] == "unchanged"
    assert condition(url, window=WINDOW + timedelta(days=1), value=0.58, now=NOW + timedelta(days=1))[0] == "updated"
    second = notify.deliver_pending(url, now=NOW + timedelta(days=1), channels=channels)

    # THEN one Slack message and one PagerDuty trigger, nothing more
    assert (first.sent, second.sent) == (2, 0)
    (message,) = fake.messages
    assert message["channel"] == CHANNEL_ID or message["channel"] == "#ml-alerts"
    content = block_text(message)
    for expected in ("[CRITICAL]", "churn", "quality_floor", "fct_model_quality.precision", "0.61", "< 0.7",
                     "holdout 0.8235", "day from 2026-11-19", "1234", "(all)", "retraining started",
                     "/dags/monitor__churn/runs/", "/driftloop/models/churn"):  # fmt: skip
        assert expected in content, expected
    assert message["metadata"]["event_type"] == notify.METADATA_EVENT_TYPE
    (event,) = fake.pagerduty_events()
    assert event["event_action"] == "trigger" and event["payload"]["severity"] == "critical"
    assert event["payload"]["source"] == "driftloop/churn" and "quality_floor" in event["payload"]["component"]
    assert event["payload"]["custom_details"]["Value"].startswith("0.61 < 0.7")
    assert any("/driftloop/models/churn" in link["href"] for link in event["links"])
    with psycopg.connect(url) as conn:
        n_evaluations, latest = conn.execute("select n_evaluations, latest_value from ops.alerts").fetchone()
    assert (n_evaluations, latest) == (2, 0.58)


def test_updates_and_the_resolution_go_in_the_thread_the_original_is_edited_and_pagerduty_resolves(url, fake, monkeypatch):
    # GIVEN a posted drift alert
    channels = use(monkeypatch, fake)
    condition(url, severity="critical", entities=[{"name": "tenure_months", "value": True}])
    notify.deliver_pending(url, now=NOW, channels=channels)

    # WHEN more features drift (an update), then the condition is clear for two windows
    condition(url, window=WINDOW + timedelta(days=1), entities=[{"name": "tenure_months"}, {"name": "age"}], changed=True)
    assert clear(url, WINDOW + timedelta(days=2), NOW + timedelta(days=2))[0] == "counted"
    assert clear(url, WINDOW + timedelta(days=2), NOW + timedelta(days=2, minutes=30))[0] == "counted"  # same window: once
    assert clear(url, WINDOW + timedelta(days=3), NOW + timedelta(days=3))[0] == "resolved"
    report = notify.deliver_pending(url, now=NOW + timedelta(days=3), channels=channels)

    # THEN the update and the resolution are replies in the alert's thread, the original shows RESOLVED,
    # and PagerDuty gets a resolve with the trigger's dedup key
    original, *replies = fake.messages
    assert [reply.get("thread_ts") for reply in replies] == [original["ts"], original["ts"]]
    assert "Updated" in block_text(replies[0]) and "Resolved" in block_text(replies[1])
    assert "RESOLVED" in json.dumps(original["edited"]["blocks"])
    actions = [(e["event_action"], e["dedup_key"]) for e in fake.pagerduty_events()]
    assert [a for a, _ in actions] == ["trigger", "resolve"] and actions[0][1] == actions[1][1]
    assert fake.incidents[actions[0][1]] == "resolved"
    assert report.sent == 4  # slack update + resolve, pagerduty update (recorded, not sent) + resolve
    with psycopg.connect(url) as conn:
        status, resolved_by = conn.execute("select status, resolved_by from ops.alerts").fetchone()
    assert status == "resolved" and "clear for 2 window" in resolved_by


def test_routing_follows_the_severity_and_a_rule_may_name_its_own(url, fake, monkeypatch):
    channels = use(monkeypatch, fake)
    condition(url, severity="warning", rule="feature_drift")
    condition(url, severity="info", rule="label_coverage")
    condition(url, severity="warning", rule="rejected_rows", routes=["pagerduty"])

    notify.deliver_pending(url, now=NOW, channels=channels)

    assert len(fake.messages) == 1 and "feature_drift" in block_text(fake.messages[0])  # warning -> Slack only
    (event,) = fake.pagerduty_events()  # the rule's own route
    assert "rejected_rows" in event["payload"]["component"]
    assert ("digest", "trigger", "pending", 0) in deliveries(url)  # info waits for the digest


def test_failures_are_retried_on_a_later_run_with_backoff_and_delivered_exactly_once(url, fake, monkeypatch):
    # GIVEN Slack answering 500 and PagerDuty 429 (Retry-After 120) once
    channels = use(monkeypatch, fake)
    fake.fail_next("/api/chat.postMessage", 500)
    fake.fail_next("/v2/enqueue", 429, {"Retry-After": "120"})
    condition(url)

    # WHEN delivered now, 30 s later, and 3 minutes later
    first = notify.deliver_pending(url, now=NOW, channels=channels)
    early = notify.deliver_pending(url, now=NOW + timedelta(seconds=30), channels=channels)
    later = notify.deliver_pending(url, now=NOW + timedelta(minutes=3), channels=channels)

    # THEN both failed with their reason, waited their backoff (1 min; the Retry-After), and went out once
    assert (first.failed, early.sent + early.failed, later.sent) == (2, 0, 2)
    assert len(fake.top_level_messages()) == 1 and len(fake.pagerduty_events()) == 2  # the 429'd one, then the real one
    with psycopg.connect(url) as conn:
        rows = conn.execute("select channel, status, attempts, last_error from ops.alert_deliveries order by channel").fetchall()
    assert [(c, s, a) for c, s, a, _ in rows] == [("pagerduty", "sent", 2), ("slack", "sent", 2)]
    assert "500" in first.errors[0] + first.errors[1] and "429" in " ".join(first.errors)


def test_a_timeout_is_retried_later_and_delivered_once(url, fake, monkeypatch):
    channels = use(monkeypatch, fake, bot=False, webhook=True, pagerduty=False)
    fake.hang_next(WEBHOOK_PATH)
    condition(url, severity="warning", rule="feature_drift")

    first = notify.deliver_pending(url, now=NOW, channels=channels)
    second = notify.deliver_pending(url, now=NOW + timedelta(minutes=2), channels=channels)

    assert (first.failed, second.sent) == (1, 1)
    assert "unreachable" in first.errors[0]
    assert len(fake.messages) == 1


@pytest.mark.parametrize("kind", ["bot", "pagerduty", "webhook"])
def test_a_crash_after_the_provider_accepted_sends_nothing_twice(url, fake, monkeypatch, kind):
    # GIVEN a run that dies right after the provider accepted, before the commit
    channels = use(monkeypatch, fake, bot=kind == "bot", webhook=kind == "webhook", pagerduty=kind == "pagerduty")
    condition(url, routes=["pagerduty"] if kind == "pagerduty" else ["slack"])
    real = notify._record_sent

    def die(*args, **kwargs):
        raise SystemExit("worker killed between the provider's answer and the commit")

    monkeypatch.setattr(notify, "_record_sent", die)
    with pytest.raises(SystemExit):
        notify.deliver_pending(url, now=NOW, channels=channels)
    assert deliveries(url)[0][2] == "sending"

    # WHEN the next run delivers
    monkeypatch.setattr(notify, "_record_sent", real)
    report = notify.deliver_pending(url, now=NOW + timedelta(minutes=5), channels=channels)
    again = notify.deliver_pending(url, now=NOW + timedelta(minutes=10), channels=channels)

    # THEN the message exists once: found by its metadata (bot), deduplicated by its key (PagerDuty),
    # or left unconfirmed rather than sent twice (a webhook cannot be asked)
    assert report.reconciled == 1 and again.sent == 0
    if kind == "bot":
        assert len(fake.messages) == 1 and len(fake.calls("chat.postMessage")) == 1
        assert deliveries(url)[0][2] == "sent"
    elif kind == "pagerduty":
        keys = {e["dedup_key"] for e in fake.pagerduty_events()}
        assert len(keys) == 1 and len(fake.incidents) == 1 and deliveries(url)[0][2] == "sent"
    else:
        assert len(fake.messages) == 1 and deliveries(url)[0][2] == "unconfirmed"


def test_with_no_connection_alerts_wait_in_the_outbox_and_nothing_fails(url, monkeypatch, fake):
    for key in ("AIRFLOW_CONN_DRIFTLOOP_SLACK", "AIRFLOW_CONN_DRIFTLOOP_SLACK_WEBHOOK", "AIRFLOW_CONN_DRIFTLOOP_PAGERDUTY"):
        monkeypatch.delenv(key, raising=False)
    condition(url)
    channels = notify.channels_from_connections()

    report = notify.deliver_pending(url, now=NOW, channels=channels)

    assert (channels.slack, channels.pagerduty) == (False, False)
    assert (report.sent, report.failed, report.waiting) == (0, 0, 2)
    assert {status for _, _, status, _ in deliveries(url)} == {"pending"}
    assert notify.send_digest(url, now=NOW, channels=channels)["sent"] is False


def test_the_daily_digest_lists_the_info_alerts_once_a_day(url, fake, monkeypatch):
    channels = use(monkeypatch, fake, pagerduty=False)
    condition(url, severity="info", rule="label_coverage")
    with psycopg.connect(url) as conn, conn.transaction():
        alerts.enqueue_alert(conn, dedup_key="event:1", source="promote", severity="info", model_name="churn",
                             summary="churn experiment churn-v1-vs-v2: start")  # fmt: skip

    early = notify.send_digest(url, now=NOW.replace(hour=7), channels=channels, hour_utc=8)
    sent = notify.send_digest(url, now=NOW.replace(hour=9), channels=channels, hour_utc=8)
    again = notify.send_digest(url, now=NOW.replace(hour=10), channels=channels, hour_utc=8)

    assert early == {"sent": False, "reason": "not due"}  # before 08:00 UTC
    assert sent["sent"] is True and sent["items"] == 2
    assert again == {"sent": False, "reason": "not due"}  # once a day
    (digest,) = fake.messages
    assert "daily digest" in digest["text"] and "label_coverage" not in digest["text"]
    text = block_text(digest)
    assert "experiment churn-v1-vs-v2: start" in text and "precision 0.61" in text
    assert {status for channel, _, status, _ in deliveries(url) if channel == "digest"} == {"sent"}


def test_no_secret_reaches_a_payload_a_log_line_a_row_or_an_error(url, fake, monkeypatch, caplog):
    # GIVEN every channel, failures that produce error texts, and debug logging everywhere
    caplog.set_level(logging.DEBUG)
    channels = use(monkeypatch, fake, webhook=True)
    fake.fail_next("/api/chat.postMessage", 500)
    fake.fail_next("/v2/enqueue", 400)
    condition(url)
    with psycopg.connect(url) as conn, conn.transaction():
        alerts.enqueue_alert(conn, dedup_key="event:2", source="ingest", severity="warning", model_name="churn",
                             summary="landed predictions file could not be read", details={"path": "/landing/x.jsonl"})  # fmt: skip

    # WHEN delivered twice (failures, then retries)
    notify.deliver_pending(url, now=NOW, channels=channels)
    notify.deliver_pending(url, now=NOW + timedelta(hours=2), channels=channels)

    # THEN no token, webhook path or routing key in any body sent (PagerDuty's routing_key field is its
    # authentication), any log record, or any table
    bodies = []
    for request in fake.requests:
        body = dict(request.body) if isinstance(request.body, dict) else request.body
        if isinstance(body, dict):
            body.pop("routing_key", None)
        bodies.append(json.dumps(body, default=str))
    with psycopg.connect(url) as conn:
        tables = [json.dumps(row, default=str) for table in ("ops.alerts", "ops.alert_deliveries", "ops.decisions")
                  for row in conn.execute(f"select * from {table}").fetchall()]  # fmt: skip
    logs = [record.getMessage() for record in caplog.records]
    assert len(fake.messages) >= 2 and tables
    for secret in SECRETS:
        assert not any(secret in text for text in bodies), f"{secret[:6]}... in a request body"
        assert not any(secret in text for text in logs), f"{secret[:6]}... in a log line"
        assert not any(secret in text for text in tables), f"{secret[:6]}... in a table"
