"""Delivery of the alert outbox (driftloop.core.alerts) to Slack and PagerDuty, and the daily digest: the
one notifier every source goes through.

Channels come from Airflow connections (or ``AIRFLOW_CONN_*`` environment variables), never from code:

* ``driftloop_slack`` (conn type ``slack``): password = a bot token, extra ``{"channel": "#ml-alerts"}``
  (and ``base_url`` for an enterprise grid or a test server). Updates and the resolution are posted in the
  alert's thread and the original message is edited to show the alert's state.
* ``driftloop_slack_webhook`` (conn type ``slackwebhook``): an incoming webhook (password = its full URL,
  or host = the URL and password = the path); every event is a new message. Used when there is no bot.
* ``driftloop_pagerduty`` (conn type ``pagerduty_events``): password = the Events API v2 routing key
  (extra ``base_url`` for the EU service region or a test server). Trigger and resolve share the alert's
  dedup key, severities map one to one.

Exactly once. A delivery is committed ``sending`` (attempts + 1) before the provider is called and ``sent``
(with the provider's ids: Slack channel and ts, PagerDuty dedup key) right after it answers; a failure
is ``failed`` with the error (secrets redacted) and a next attempt after a backoff (a 429's Retry-After,
else 1, 2, 4, ... minutes up to an hour), retried by a later run. One run delivers at a time (a session
advisory lock), so a row found ``sending`` belongs to a run that died between the provider's answer and
the commit; it is reconciled, never blindly sent again: a Slack bot message is looked up by the
delivery id it carries in its message metadata (found: recorded as sent; not found: sent); PagerDuty
events are sent again (the Events API deduplicates by dedup key, so there is still one incident); an
incoming webhook cannot be asked, so the delivery is marked ``unconfirmed`` rather than risk a second
message. With no channel configured, deliveries wait in the outbox (and the log): nothing is lost, and
they go out once a connection exists.

Messages say what happened, how bad, the numbers, what driftloop already did, and link to the Airflow
run and the model's page. No token, webhook URL or routing key is ever in a payload, a log line, an
alert row or an error stored here.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from driftloop.core import settings, warehouse

log = logging.getLogger(__name__)

SLACK_CONN_ID = "driftloop_slack"
SLACK_WEBHOOK_CONN_ID = "driftloop_slack_webhook"
PAGERDUTY_CONN_ID = "driftloop_pagerduty"
TIMEOUT_SECONDS = 10.0
MAX_BACKOFF = timedelta(hours=1)
METADATA_EVENT_TYPE = "driftloop_alert"
_LOCK_KEY = 0x64726966746E6F74  # 'driftnot': one delivering run at a time (session advisory lock)
_SEVERITY_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
_PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


class DeliveryError(Exception):
    """A provider refused or did not answer; ``retry_after`` is what it asked for (429), in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# --------------------------------------------------------------------------------------------------
# Channels


@dataclasses.dataclass
class Channels:
    """The configured providers. ``secrets`` are redacted from anything this module stores or logs."""

    slack_token: str | None = None
    slack_channel: str | None = None
    slack_base_url: str | None = None
    slack_webhook_url: str | None = None
    pagerduty_routing_key: str | None = None
    pagerduty_base_url: str | None = None
    timeout: float = TIMEOUT_SECONDS

    @property
    def slack(self) -> bool:
        return bool((self.slack_token and self.slack_channel) or self.slack_webhook_url)

    @property
    def slack_bot(self) -> bool:
        return bool(self.slack_token and self.slack_channel)

    @property
    def pagerduty(self) -> bool:
        return bool(self.pagerduty_routing_key)

    def configured(self, channel: str) -> bool:
        return {"slack": self.slack, "pagerduty": self.pagerduty, "digest": self.slack}.get(channel, False)

    @property
    def secrets(self) -> list[str]:
        values = [self.slack_token, self.slack_webhook_url, self.pagerduty_routing_key]
        if self.slack_webhook_url:
            values.append(self.slack_webhook_url.split("://", 1)[-1])
            values += [part for part in self.slack_webhook_url.split("/") if len(part) >= 8]
        return [value for value in values if value]

    def redact(self, text: Any) -> str:
        result = str(text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            result = result.replace(secret, "***")
        return re.sub(r"xox[abposr]-[A-Za-z0-9-]+", "***", result)


def _connection(conn_id: str):
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - not configured (AirflowNotFoundException and friends)
        return None


def _extra(connection) -> dict[str, Any]:
    try:
        return dict(connection.extra_dejson or {})
    except Exception:  # noqa: BLE001
        return {}


def channels_from_connections() -> Channels:
    """The channels the Airflow connections (or AIRFLOW_CONN_* variables) configure; none is fine."""
    channels = Channels()
    slack = _connection(SLACK_CONN_ID)
    if slack is not None and slack.password:
        extra = _extra(slack)
        channels.slack_token = slack.password
        channels.slack_channel = extra.get("channel") or extra.get("default_channel")
        channels.slack_base_url = extra.get("base_url")
        if not channels.slack_channel:
            log.warning("connection %s has no extra 'channel': Slack alerts cannot be posted", SLACK_CONN_ID)
    webhook = _connection(SLACK_WEBHOOK_CONN_ID)
    if webhook is not None:
        password, host = webhook.password or "", webhook.host or ""
        url = password if "://" in password else (f"{host.rstrip('/')}/{password.lstrip('/')}" if host else "")
        if url and "://" not in url:
            url = "https://" + url
        channels.slack_webhook_url = url or None
    pagerduty = _connection(PAGERDUTY_CONN_ID)
    if pagerduty is not None and pagerduty.password:
        channels.pagerduty_routing_key = pagerduty.password
        channels.pagerduty_base_url = _extra(pagerduty).get("base_url")
    return channels


# --------------------------------------------------------------------------------------------------
# Messages


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "n/a"
    if isinstance(value, int | float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _lines(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of what the alert is about."""
    details = alert.get("details") or {}
    pairs = [("Model", alert.get("model_name") or "n/a")]
    if alert.get("rule_name"):
        rule = details.get("rule", {})
        pairs.append(("Rule", f"{alert['rule_name']} ({rule.get('mart', '')}.{rule.get('column', '')})".strip()))
        pairs.append(("Value", f"{_number(details.get('value'))} {rule.get('comparator', '')} {_number(details.get('threshold'))}"
                      + (f" ({details['threshold_reason']})" if details.get("threshold_reason") else "")))  # fmt: skip
        if details.get("window"):
            window = details["window"]
            pairs.append(("Window", f"{window.get('size')} from {window.get('start')}, n = {_number(window.get('n'))}"))
        pairs.append(("Segment", alert.get("segment") or "(all)"))
        if details.get("entities"):
            pairs.append(("Affected", ", ".join(
                f"{e['name']} ({_number(e.get('value'))})" for e in details["entities"][:20])))  # fmt: skip
    else:
        pairs.append(("Source", alert.get("source") or "n/a"))
        for key, value in list(details.items())[:6]:
            if key not in ("actions", "links", "airflow") and not isinstance(value, dict | list):
                pairs.append((key.replace("_", " ").capitalize(), str(value)[:300]))
    pairs.append(("Severity", str(alert.get("severity"))))
    return pairs


def _actions(alert: Mapping[str, Any]) -> list[str]:
    actions = (alert.get("details") or {}).get("actions") or []
    return [str(action) for action in actions] or ["nothing yet"]


def _links(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    details = alert.get("details") or {}
    links = []
    airflow = details.get("airflow") or {}
    if airflow.get("dag_id") and airflow.get("run_id"):
        links.append((f"Airflow run {airflow['dag_id']}", settings.dag_run_url(airflow["dag_id"], airflow["run_id"])))
    if alert.get("model_name"):
        links.append((f"{alert['model_name']} model health", settings.model_page_url(alert["model_name"])))
    return links


def _title(alert: Mapping[str, Any], event: str) -> str:
    state = {"trigger": "", "update": "Updated: ", "resolve": "Resolved: "}[event]
    return f"{state}[{str(alert.get('severity')).upper()}] {alert.get('summary')}"


def slack_message(alert: Mapping[str, Any], event: str, *, state: str | None = None) -> tuple[str, list[dict]]:
    """Fallback text and Block Kit blocks of one event of an alert. ``state`` ("RESOLVED") marks an edited
    original message."""
    icon = ":white_check_mark:" if event == "resolve" or state == "RESOLVED" else _SEVERITY_ICON.get(str(alert.get("severity")), "")
    title = _title(alert, event)
    if state:
        title = f"{state}: {title}"
    text = f"{icon} {title}"
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{value}"[:2000]} for label, value in _lines(alert)]
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        *({"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10)),
    ]
    if event == "resolve":
        resolution = (alert.get("resolved_by") or "resolved")[:500]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Resolved:* {resolution}"}})
    else:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "*What driftloop already did:* " + "; ".join(_actions(alert))[:2900]}})  # fmt: skip
    links = _links(alert)
    if links:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": label[:75]}, "url": url} for label, url in links]})  # fmt: skip
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"first seen {alert.get('first_seen_at')}, last seen {alert.get('last_seen_at')}, "
        f"{alert.get('n_evaluations') or 1} evaluation(s) · key `{alert.get('dedup_key')}`")[:2900]}]})  # fmt: skip
    return text[:3000], blocks


def pagerduty_event(alert: Mapping[str, Any], event: str) -> dict[str, Any]:
    """The Events API v2 fields of a trigger (a resolve needs only the dedup key)."""
    details = alert.get("details") or {}
    return {
        "summary": str(alert.get("summary"))[:1024],
        "source": f"driftloop/{alert.get('model_name') or 'driftloop'}",
        "severity": _PAGERDUTY_SEVERITY.get(str(alert.get("severity")), "warning"),
        "custom_details": {label: value for label, value in _lines(alert)}
        | {"actions": _actions(alert), "dedup_key": alert.get("dedup_key"), "first_seen": str(alert.get("first_seen_at"))}
        | ({"entities": details["entities"][:50]} if details.get("entities") else {}),
        "links": [{"href": url, "text": label} for label, url in _links(alert)],
        "component": alert.get("rule_name") or alert.get("source"),
        "group": alert.get("model_name"),
    }


def pagerduty_dedup_key(alert: Mapping[str, Any]) -> str:
    """The incident key (a firing condition and its resolution share it; an event has its own)."""
    return f"driftloop-{alert['alert_id']}-{alert['dedup_key']}"[:255]


# --------------------------------------------------------------------------------------------------
# Providers


# slack-sdk logs request URLs and bodies at debug level (a webhook's URL is its secret): its clients get
# a logger that never does
_PROVIDER_LOG = logging.getLogger("driftloop.core.notify.providers")
_PROVIDER_LOG.setLevel(logging.WARNING)


class _Providers:
    """The real clients (slack-sdk, the pagerduty package), built once per run; their own retries are off
    (the outbox retries, on a later run, with backoff)."""

    def __init__(self, channels: Channels):
        self.channels = channels
        self._slack = self._webhook = self._pagerduty = None

    def slack(self):
        if self._slack is None:
            from slack_sdk import WebClient

            kwargs = {"base_url": self.channels.slack_base_url} if self.channels.slack_base_url else {}
            self._slack = WebClient(token=self.channels.slack_token, timeout=int(max(1, self.channels.timeout)),
                                    logger=_PROVIDER_LOG, retry_handlers=[], **kwargs)  # fmt: skip
        return self._slack

    def webhook(self):
        if self._webhook is None:
            from slack_sdk.webhook import WebhookClient

            self._webhook = WebhookClient(self.channels.slack_webhook_url, timeout=int(max(1, self.channels.timeout)),
                                          logger=_PROVIDER_LOG, retry_handlers=[])  # fmt: skip
        return self._webhook

    def pagerduty(self):
        if self._pagerduty is None:
            from pagerduty import EventsApiV2Client

            client = EventsApiV2Client(self.channels.pagerduty_routing_key, base_url=self.channels.pagerduty_base_url)
            # retries are the outbox's (a later run, with backoff): the client must answer at once
            client.retry = {status: 1 for status in (429, 500, 502, 503, 504)}
            client.max_http_attempts = -1
            client.max_network_attempts = 0
            client.timeout = self.channels.timeout
            self._pagerduty = client
        return self._pagerduty


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return float(value[0] if isinstance(value, list | tuple) else value)
            except (TypeError, ValueError):
                return None
    return None


def _slack_call(call: Callable[[], Any]) -> Any:
    from slack_sdk.errors import SlackApiError

    try:
        response = call()
    except SlackApiError as error:
        status = getattr(error.response, "status_code", None)
        raise DeliveryError(f"Slack API error {status}: {error.response.get('error') if error.response else error}",
                            _retry_after(getattr(error.response, "headers", None))) from None  # fmt: skip
    except Exception as error:  # noqa: BLE001 - timeouts, refused connections: retried by a later run
        raise DeliveryError(f"Slack unreachable: {type(error).__name__}: {error}") from None
    return response


def _webhook_send(providers: _Providers, text: str, blocks: list[dict]) -> None:
    try:
        response = providers.webhook().send(text=text, blocks=blocks)
    except Exception as error:  # noqa: BLE001
        raise DeliveryError(f"Slack webhook unreachable: {type(error).__name__}: {error}") from None
    if response.status_code != 200:
        raise DeliveryError(f"Slack webhook answered {response.status_code}: {str(response.body)[:200]}",
                            _retry_after(response.headers))  # fmt: skip


def _pagerduty_send(providers: _Providers, action: str, dedup_key: str, alert: Mapping[str, Any]) -> str:
    from pagerduty import Error as PagerDutyError
    from pagerduty import HttpError

    client = providers.pagerduty()
    try:
        if action == "trigger":
            event = pagerduty_event(alert, action)
            return client.send_event(
                "trigger", dedup_key=dedup_key, links=event["links"],
                payload={k: event[k] for k in ("summary", "source", "severity", "custom_details", "component", "group")},
            )  # fmt: skip
        return client.send_event("resolve", dedup_key=dedup_key)
    except HttpError as error:
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        raise DeliveryError(f"PagerDuty answered {status}", _retry_after(getattr(response, "headers", None))) from None
    except PagerDutyError as error:
        raise DeliveryError(f"PagerDuty unreachable: {type(error.__cause__ or error).__name__}") from None
    except Exception as error:  # noqa: BLE001
        raise DeliveryError(f"PagerDuty unreachable: {type(error).__name__}: {error}") from None


# --------------------------------------------------------------------------------------------------
# The outbox


@dataclasses.dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    waiting: int = 0  # no channel configured, or an earlier message of the alert is not out yet
    reconciled: int = 0
    unconfirmed: int = 0
    busy: bool = False
    errors: list[str] = dataclasses.field(default_factory=list)
    digest: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@contextmanager
def _delivery_lock(url: str) -> Iterator[bool]:
    with psycopg.connect(url, autocommit=True) as conn:
        taken = conn.execute("select pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]
        try:
            yield bool(taken)
        finally:
            if taken:
                conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))


_DUE = """
    select deliveries.*, alerts.dedup_key, alerts.model_name, alerts.source, alerts.severity, alerts.summary,
           alerts.details, alerts.status as alert_status, alerts.rule_name, alerts.segment, alerts.n_evaluations,
           alerts.first_seen_at, alerts.last_seen_at, alerts.resolved_at, alerts.resolved_by
    from ops.alert_deliveries as deliveries
    inner join ops.alerts as alerts on alerts.alert_id = deliveries.alert_id
    where deliveries.channel <> 'digest'
      and (deliveries.status = 'sending'
           or (deliveries.status in ('pending', 'failed') and deliveries.next_attempt_at <= %s))
    order by deliveries.delivery_id
    limit %s
"""


def _set(conn, delivery_id: int, **columns: Any) -> None:
    from psycopg import sql

    jsonb = {"provider_ref"}
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.SQL("%s::jsonb") if name in jsonb else sql.SQL("%s"))
        for name in columns
    )
    values = [orjson.dumps(v).decode() if k in jsonb else v for k, v in columns.items()]
    conn.execute(sql.SQL("update ops.alert_deliveries set {}, updated_at = now() where delivery_id = %s").format(assignments),
                 [*values, delivery_id])  # fmt: skip


def _earlier_open(conn, delivery: Mapping[str, Any]) -> bool:
    """An earlier message of the same alert and channel is not out yet (order: trigger, updates, resolve)."""
    return conn.execute(
        "select 1 from ops.alert_deliveries where alert_id = %s and channel = %s and delivery_id < %s "
        "and status in ('pending', 'sending', 'failed') limit 1",
        (delivery["alert_id"], delivery["channel"], delivery["delivery_id"]),
    ).fetchone() is not None


def _trigger_ref(conn, delivery: Mapping[str, Any]) -> dict[str, Any]:
    row = conn.execute(
        "select provider_ref from ops.alert_deliveries where alert_id = %s and channel = %s and event = 'trigger' "
        "and status in ('sent', 'unconfirmed') order by delivery_id limit 1",
        (delivery["alert_id"], delivery["channel"]),
    ).fetchone()
    return dict(row[0]) if row and row[0] else {}


def _metadata(delivery: Mapping[str, Any]) -> dict[str, Any]:
    return {"event_type": METADATA_EVENT_TYPE,
            "event_payload": {"delivery_id": str(delivery["delivery_id"]), "alert_id": str(delivery["alert_id"])}}  # fmt: skip


def _find_slack_message(providers: _Providers, delivery: Mapping[str, Any], thread: dict[str, Any]) -> str | None:
    """The ts of the message a dead run posted for this delivery, looked up by its metadata."""
    channel = thread.get("channel") or providers.channels.slack_channel
    client = providers.slack()
    if delivery["event"] == "trigger":
        response = _slack_call(lambda: client.conversations_history(channel=channel, include_all_metadata=True, limit=200))
    else:
        response = _slack_call(lambda: client.conversations_replies(channel=channel, ts=thread["ts"],
                                                                    include_all_metadata=True, limit=200))  # fmt: skip
    wanted = str(delivery["delivery_id"])
    for message in response.get("messages") or []:
        payload = (message.get("metadata") or {}).get("event_payload") or {}
        if (message.get("metadata") or {}).get("event_type") == METADATA_EVENT_TYPE and str(payload.get("delivery_id")) == wanted:
            return message.get("ts")
    return None


def _send_slack(providers: _Providers, conn, delivery: Mapping[str, Any], alert: Mapping[str, Any]) -> dict[str, Any]:
    event = delivery["event"]
    text, blocks = slack_message(alert, event)
    if not providers.channels.slack_bot:
        _webhook_send(providers, text, blocks)
        return {"via": "webhook"}
    client, channel = providers.slack(), providers.channels.slack_channel
    if event == "trigger":
        response = _slack_call(lambda: client.chat_postMessage(channel=channel, text=text, blocks=blocks,
                                                               metadata=_metadata(delivery), unfurl_links=False))  # fmt: skip
        return {"via": "bot", "channel": response.get("channel") or channel, "ts": response.get("ts")}
    thread = _trigger_ref(conn, delivery)
    if not thread.get("ts"):  # the alert was first posted through a webhook: a message of its own
        response = _slack_call(lambda: client.chat_postMessage(channel=channel, text=text, blocks=blocks,
                                                               metadata=_metadata(delivery)))  # fmt: skip
        return {"via": "bot", "channel": response.get("channel") or channel, "ts": response.get("ts")}
    reply = _slack_call(lambda: client.chat_postMessage(channel=thread["channel"], thread_ts=thread["ts"], text=text,
                                                        blocks=blocks, metadata=_metadata(delivery)))  # fmt: skip
    state = "RESOLVED" if event == "resolve" else "UPDATED"
    edited_text, edited_blocks = slack_message(alert, "trigger", state=state)
    _slack_call(lambda: client.chat_update(channel=thread["channel"], ts=thread["ts"], text=edited_text, blocks=edited_blocks))
    return {"via": "bot", "channel": thread["channel"], "ts": reply.get("ts"), "thread_ts": thread["ts"]}


def _backoff(attempts: int, retry_after: float | None) -> timedelta:
    if retry_after is not None and retry_after >= 0:
        return min(timedelta(seconds=retry_after), MAX_BACKOFF)
    return min(timedelta(minutes=2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _record_sent(conn, delivery_id: int, ref: dict[str, Any], now: datetime) -> None:
    """The provider answered: this delivery is out (its own transaction, right after the call)."""
    _set(conn, delivery_id, status="sent", sent_at=now, last_error=None, provider_ref=ref)


def deliver_pending(url: str | None = None, *, now: datetime, channels: Channels | None = None,
                    limit: int = 200) -> DeliveryReport:  # fmt: skip
    """Send what is due in the outbox (Slack, PagerDuty; the digest by :func:`send_digest`). Safe to run
    from several places: one run delivers at a time, the others return ``busy``."""
    url = warehouse.resolve_url(url)
    channels = channels or channels_from_connections()
    report = DeliveryReport()
    providers = _Providers(channels)
    with _delivery_lock(url) as mine:
        if not mine:
            report.busy = True
            return report
        with psycopg.connect(url, autocommit=True) as conn:
            with conn.cursor(row_factory=dict_row) as cursor:
                due = cursor.execute(_DUE, (now, limit)).fetchall()
            for delivery in due:
                _deliver_one(conn, providers, delivery, now, report)
    if report.waiting:
        log.info("%d alert deliveries wait in the outbox (no channel configured, or an earlier one is not out)",
                 report.waiting)  # fmt: skip
    return report


def _deliver_one(conn, providers: _Providers, delivery: dict[str, Any], now: datetime, report: DeliveryReport) -> None:
    channels, channel = providers.channels, delivery["channel"]
    alert = dict(delivery) | {"details": delivery["details"] or {}}
    if not channels.configured(channel):
        report.waiting += 1
        return
    if delivery["status"] != "sending" and _earlier_open(conn, delivery):
        report.waiting += 1
        return
    try:
        if delivery["status"] == "sending":  # its run died between the provider's answer and the commit
            report.reconciled += 1
            if channel == "slack" and not channels.slack_bot:
                _set(conn, delivery["delivery_id"], status="unconfirmed",
                     last_error="interrupted after the webhook call; not sent again (a webhook cannot be asked)")  # fmt: skip
                report.unconfirmed += 1
                return
            if channel == "slack":
                found = _find_slack_message(providers, delivery, _trigger_ref(conn, delivery))
                if found:
                    _record_sent(conn, delivery["delivery_id"], {"via": "bot", "channel": channels.slack_channel,
                                                                 "ts": found, "reconciled": True}, now)  # fmt: skip
                    return
            # PagerDuty: sent again with the same dedup key (one incident); Slack: not posted, so post it
        _set(conn, delivery["delivery_id"], status="sending", attempts=delivery["attempts"] + 1)
        if channel == "slack":
            ref = _send_slack(providers, conn, delivery, alert)
        else:
            dedup_key = pagerduty_dedup_key(alert)
            action = "resolve" if delivery["event"] == "resolve" else "trigger"
            if delivery["event"] == "update":
                ref = {"dedup_key": dedup_key, "note": "PagerDuty keeps the incident; updates go to Slack"}
                _record_sent(conn, delivery["delivery_id"], ref, now)
                report.sent += 1
                return
            ref = {"dedup_key": _pagerduty_send(providers, action, dedup_key, alert)}
        _record_sent(conn, delivery["delivery_id"], ref, now)
        report.sent += 1
    except DeliveryError as error:
        message = channels.redact(error)[:1000]
        attempts = delivery["attempts"] + 1
        _set(conn, delivery["delivery_id"], status="failed", attempts=attempts, last_error=message,
             next_attempt_at=now + _backoff(attempts, error.retry_after))  # fmt: skip
        report.failed += 1
        report.errors.append(f"{channel} delivery {delivery['delivery_id']}: {message}")
        log.warning("alert delivery %s to %s failed (attempt %d): %s", delivery["delivery_id"], channel, attempts, message)


# --------------------------------------------------------------------------------------------------
# The daily digest


def _digest_due(conn, now: datetime, hour_utc: int) -> bool:
    """From ``hour_utc`` on, once a day."""
    mark = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    if now < mark:
        return False
    row = conn.execute("select value from ops.watermarks where name = 'digest:slack'").fetchone()
    return row is None or row[0] < mark


def _trends(conn, model_names: list[str], now: datetime) -> list[str]:
    lines = []
    for model_name in model_names:
        try:
            rows = conn.execute(
                """
                select window_start::date, n_predictions, accuracy, is_mature from marts.fct_model_quality
                where model_name = %s and window_size = 'day' and segment = '(all)' and variant = 'control'
                  and window_end <= %s
                order by window_start desc limit 7
                """,
                (model_name, now),
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # no metrics build yet (autocommit: nothing to roll back)
            rows = []
        if rows:
            days = ", ".join(f"{day:%m-%d} {_number(accuracy)}{'' if mature else '*'}" for day, _, accuracy, mature in reversed(rows))
            lines.append(f"*{model_name}* daily accuracy (* = labels not mature yet): {days}")
    return lines


def send_digest(url: str | None = None, *, now: datetime, channels: Channels | None = None, hour_utc: int = 8,
                force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Once a day (from ``hour_utc``): one Slack message with the info alerts since the last digest and each
    model's quality trend; their digest deliveries are marked sent with the message's ts."""
    url = warehouse.resolve_url(url)
    channels = channels or channels_from_connections()
    if not channels.slack:
        return {"sent": False, "reason": "no Slack connection: digest items wait in the outbox"}
    providers = _Providers(channels)
    with _delivery_lock(url) as mine:
        if not mine:
            return {"sent": False, "reason": "another run is delivering"}
        with psycopg.connect(url, autocommit=True) as conn:
            # items a dead run left 'sending' go back: a digest line twice beats a line lost
            conn.execute("update ops.alert_deliveries set status = 'pending' where channel = 'digest' and status = 'sending'")
            if not force and not _digest_due(conn, now, hour_utc):
                return {"sent": False, "reason": "not due"}
            with conn.cursor(row_factory=dict_row) as cursor:
                items = cursor.execute(
                    "select deliveries.delivery_id, alerts.model_name, alerts.summary, alerts.first_seen_at, alerts.status "
                    "from ops.alert_deliveries deliveries join ops.alerts alerts using (alert_id) "
                    "where deliveries.channel = 'digest' and deliveries.status in ('pending', 'failed') "
                    "order by deliveries.delivery_id limit 200"
                ).fetchall()  # fmt: skip
            models = sorted({row[0] for row in conn.execute("select model_name from ops.model_specs")})
            trend_lines = _trends(conn, models, now)
            if not items and not trend_lines:
                return {"sent": False, "reason": "nothing to report"}
            body = [f"• {item['model_name'] or ''}: {item['summary']} ({item['first_seen_at']:%Y-%m-%d %H:%M} UTC, {item['status']})"
                    for item in items] or ["• no info alerts since the last digest"]  # fmt: skip
            text = f":newspaper: driftloop daily digest, {now:%Y-%m-%d}"
            blocks = [
                {"type": "header", "text": {"type": "plain_text", "text": text.replace(':newspaper: ', '')[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": ("*Info alerts*\n" + "\n".join(body))[:2900]}},
            ]
            if trend_lines:
                blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Trends*\n" + "\n".join(trend_lines)[:2900]}})
            ids = [item["delivery_id"] for item in items]
            for delivery_id in ids:
                _set(conn, delivery_id, status="sending")
            try:
                if channels.slack_bot:
                    response = _slack_call(lambda: providers.slack().chat_postMessage(
                        channel=channels.slack_channel, text=text, blocks=blocks))  # fmt: skip
                    ref = {"via": "bot", "channel": response.get("channel"), "ts": response.get("ts"), "digest": True}
                else:
                    _webhook_send(providers, text, blocks)
                    ref = {"via": "webhook", "digest": True}
            except DeliveryError as error:
                message = channels.redact(error)[:1000]
                for delivery_id in ids:
                    _set(conn, delivery_id, status="failed", last_error=message, next_attempt_at=now)
                return {"sent": False, "reason": message}
            for delivery_id in ids:
                _record_sent(conn, delivery_id, ref, now)
            conn.execute(
                "insert into ops.watermarks (name, value) values ('digest:slack', %s) "
                "on conflict (name) do update set value = excluded.value, updated_at = now()",
                (now,),
            )
    return {"sent": True, "items": len(ids), "trend_lines": len(trend_lines)}
