"""Local HTTP servers that play Slack (Web API and an incoming webhook) and PagerDuty (Events API v2, over
TLS with a certificate made here: the pagerduty client accepts only https) and record every request, for
tests that run slack-sdk and the pagerduty client for real (tests only). Failures are planned per path:
a status (500, 429 with Retry-After) or a hang (the client times out)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

SLACK_TOKEN = "xoxb-test-4242-secret-token"
WEBHOOK_PATH = "/services/T000/B000/webhook-secret-path-4242"
ROUTING_KEY = "R0UTINGKEYsecret4242abcdef0123456"
CHANNEL_ID = "C0ALERTS"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


@dataclass
class Plan:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer  # type: ignore[assignment]

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> tuple[bytes, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        kind = self.headers.get("Content-Type") or ""
        if "json" in kind and raw:
            return raw, json.loads(raw)
        if raw:
            return raw, {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        return raw, {}

    def _handle(self, method: str) -> None:
        raw, body = self._body()
        parsed = urlparse(self.path)
        if method == "GET":
            body = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(Recorded(method, parsed.path, dict(self.headers), body, raw))
            plans = fake.plans.get(parsed.path)
            plan = plans.pop(0) if plans else None
        if plan is not None and plan.hang_seconds:
            fake.hung.wait(plan.hang_seconds)
            self.close_connection = True
            return
        if plan is not None and plan.status != 200:
            self.send_response(plan.status)
            for key, value in plan.headers.items():
                self.send_header(key, value)
            payload = json.dumps({"ok": False, "error": f"planned {plan.status}"}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        status, payload = fake.answer(method, parsed.path, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(payload, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeProviders, context: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)


class FakeProviders:
    """Slack on http://127.0.0.1:<port>/api/ and <port>/services/..., PagerDuty on https://127.0.0.1:<port>."""

    def __init__(self, folder: Path):
        self.lock = threading.Lock()
        self.hung = threading.Event()
        self.requests: list[Recorded] = []
        self.plans: dict[str, list[Plan]] = defaultdict(list)
        self.messages: list[dict[str, Any]] = []  # Slack: every posted message (thread replies too)
        self.incidents: dict[str, str] = {}  # PagerDuty: dedup_key -> triggered / resolved
        self._ts = 1_700_000_000
        self.ca_file = _self_signed(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca_file, folder / "key.pem")
        self.slack_server = FakeServer(self)
        self.pagerduty_server = FakeServer(self, context)
        for server in (self.slack_server, self.pagerduty_server):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    # -------------------------------------------------------------- addresses
    @property
    def slack_base_url(self) -> str:
        return f"http://127.0.0.1:{self.slack_server.server_address[1]}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.slack_server.server_address[1]}{WEBHOOK_PATH}"

    @property
    def pagerduty_base_url(self) -> str:
        return f"https://127.0.0.1:{self.pagerduty_server.server_address[1]}"

    def close(self) -> None:
        self.hung.set()
        for server in (self.slack_server, self.pagerduty_server):
            server.shutdown()
            server.server_close()

    # -------------------------------------------------------------- plans and views
    def fail_next(self, path: str, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        with self.lock:
            self.plans[path] += [Plan(status, headers or {}) for _ in range(times)]

    def hang_next(self, path: str, seconds: float = 30.0) -> None:
        with self.lock:
            self.plans[path].append(Plan(hang_seconds=seconds))

    def calls(self, path_suffix: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    def pagerduty_events(self) -> list[dict[str, Any]]:
        return [r.body for r in self.calls("/v2/enqueue")]

    def top_level_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if not m.get("thread_ts")]

    # -------------------------------------------------------------- answers
    def answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == WEBHOOK_PATH:
            with self.lock:
                self.messages.append({"via": "webhook", **body})
            return 200, b"ok"
        if path.startswith("/api/") and body.get("token") is None and method == "POST":
            pass  # slack-sdk sends the bot token in the Authorization header
        if path == "/api/chat.postMessage":
            with self.lock:
                self._ts += 1
                ts = f"{self._ts}.000100"
                metadata = body.get("metadata")
                if isinstance(metadata, str):
                    metadata = json.loads(metadata)
                self.messages.append({"via": "bot", "ts": ts, "channel": CHANNEL_ID, **body, "metadata": metadata})
            return 200, {"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": {"ts": ts}}
        if path == "/api/chat.update":
            with self.lock:
                for message in self.messages:
                    if message.get("ts") == body.get("ts"):
                        message["edited"] = body
            return 200, {"ok": True, "channel": CHANNEL_ID, "ts": body.get("ts")}
        if path == "/api/conversations.history":
            with self.lock:
                found = [m for m in self.messages if m.get("via") == "bot" and not m.get("thread_ts")]
            return 200, {"ok": True, "messages": list(reversed(found)), "has_more": False}
        if path == "/api/conversations.replies":
            with self.lock:
                found = [m for m in self.messages if m.get("thread_ts") == body.get("ts") or m.get("ts") == body.get("ts")]
            return 200, {"ok": True, "messages": found, "has_more": False}
        if path == "/v2/enqueue":
            key = body.get("dedup_key") or f"pd-{len(self.incidents) + 1}"
            with self.lock:
                self.incidents[key] = "resolved" if body.get("event_action") == "resolve" else "triggered"
            return 202, {"status": "success", "message": "Event processed", "dedup_key": key}
        return 404, {"ok": False, "error": "unknown_method"}


def _self_signed(folder: Path) -> Path:
    """A certificate for 127.0.0.1 (and its key), written to folder; returns the certificate's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    path = folder / "cert.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def connection_env(fake: FakeProviders, *, bot: bool = True, webhook: bool = False, pagerduty: bool = True) -> dict[str, str]:
    """AIRFLOW_CONN_* variables for the driftloop connections, pointed at the fake servers."""
    env = {"SSL_CERT_FILE": str(fake.ca_file)}
    if bot:
        env["AIRFLOW_CONN_DRIFTLOOP_SLACK"] = json.dumps({
            "conn_type": "slack", "password": SLACK_TOKEN,
            "extra": {"channel": "#ml-alerts", "base_url": fake.slack_base_url},
        })  # fmt: skip
    if webhook:
        env["AIRFLOW_CONN_DRIFTLOOP_SLACK_WEBHOOK"] = json.dumps({"conn_type": "slackwebhook", "password": fake.webhook_url})
    if pagerduty:
        env["AIRFLOW_CONN_DRIFTLOOP_PAGERDUTY"] = json.dumps({
            "conn_type": "pagerduty_events", "password": ROUTING_KEY, "extra": {"base_url": fake.pagerduty_base_url},
        })  # fmt: skip
    return env


SECRETS = (SLACK_TOKEN, WEBHOOK_PATH.rsplit("/", 1)[-1], ROUTING_KEY)
