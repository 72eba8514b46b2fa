"""Headless Chromium for a test, driven through the DevTools protocol (CDP) over its websocket.

Debian's ``chromium`` package (``apt-get install -y chromium``; ``.ci/run`` installs it); no browser is
downloaded. :func:`chromium_path` is None when none is installed (the browser tests skip, saying how to
enable them). One :class:`Browser` is one Chromium process in its own profile folder and process group;
``close()`` kills the group. Console errors, uncaught exceptions and failed loads are collected from the
moment the page is opened.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

INSTALL_HINT = "install Debian's chromium (apt-get install -y chromium) or set CHROMIUM=/path/to/chromium"


def chromium_path() -> str | None:
    candidates = [os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                  shutil.which("google-chrome")]  # fmt: skip
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, executable: str, width: int = 1280, height: int = 900, timeout: float = 120.0):
        self.profile = Path(tempfile.mkdtemp(prefix="dl-chromium-"))
        self.timeout = timeout
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--metrics-recording-only", "--hide-scrollbars",
             f"--window-size={width},{height}", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        from websockets.sync.client import connect

        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited at start-up with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not open its DevTools port")
            try:
                self.process.wait(timeout=0.2)  # a crash ends the wait at once
            except subprocess.TimeoutExpired:
                pass
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            targets = json.loads(response.read())
        page = next(t for t in targets if t["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        wanted = self._next_id
        self.socket.send(json.dumps({"id": wanted, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=self.timeout))
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for_event(self, method: str) -> dict[str, Any]:
        for index, event in enumerate(self.events):
            if event["method"] == method:
                return self.events.pop(index)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("method") == method:
                return message
            if "method" in message:
                self.events.append(message)
        raise BrowserError(f"no {method} within {self.timeout:.0f} s")

    def set_cookie(self, name: str, value: str, url: str) -> None:
        self.send("Network.setCookie", name=name, value=value, url=url, httpOnly=True, sameSite="Lax")

    def open(self, url: str) -> dict[str, Any]:
        """Navigate and wait for the load event; returns the main document's response (status, url)."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")
        responses = [e["params"]["response"] for e in self.events if e["method"] == "Network.responseReceived"
                     and e["params"].get("type") == "Document"]  # fmt: skip
        return responses[-1] if responses else {}

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, condition: str, timeout: float | None = None) -> Any:
        """Evaluate the JavaScript expression ``condition`` in the page until it is truthy (the page polls it
        on every animation frame) and return its value; a hang guard of ``timeout`` seconds, not a delay."""
        limit = int(1000 * (timeout or self.timeout))
        return self.evaluate(f"""new Promise((resolve, reject) => {{
            const started = performance.now();
            const look = () => {{
                let value = null;
                try {{ value = ({condition}); }} catch (error) {{ value = null; }}
                if (value) resolve(value);
                else if (performance.now() - started > {limit}) reject(new Error("condition not met"));
                else requestAnimationFrame(look);
            }};
            look();
        }})""")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions, log errors and failed loads seen since the page was opened."""
        errors = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                errors.append(f"load failed: {params.get('errorText')}")
        return errors

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the viewport) as PNG."""
        metrics = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1})  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
