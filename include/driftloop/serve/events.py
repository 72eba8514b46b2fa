"""The event logger a serving application writes prediction events through: contract JSON lines in a
hidden file, published into the landing zone by an atomic rename, so ``ingest__<model>`` never reads a
file that is still being written."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson


class EventLogger:
    """Appends prediction events (JSON lines) to a hidden file and publishes it into the landing zone
    (``<root>/<model>/predictions/dt=<day>/<host>-<pid>-<n>.jsonl``, an atomic rename) every
    ``max_events`` events, after ``max_seconds``, when the UTC day changes, and on ``close()``.
    Ingest ignores the hidden file, so it never reads one still being written."""

    def __init__(self, landing_root: str | os.PathLike[str], model_name: str, *, max_events: int = 50_000,
                 max_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.folder = Path(landing_root) / model_name / "predictions"
        self.max_events, self.max_seconds, self.clock = max_events, max_seconds, clock
        self._prefix = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._sequence = 0
        self._file = None
        self._day: str | None = None
        self._events = 0
        self._opened = 0.0
        self.published: list[Path] = []

    def _open(self, day: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        self._path = self.folder / f".{self._prefix}-{self._sequence:06d}.jsonl.tmp"
        self._file = open(self._path, "wb")  # noqa: SIM115 - kept open across writes, closed by _publish
        self._day, self._events, self._opened = day, 0, self.clock()

    def _publish(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self._events == 0:
            self._path.unlink(missing_ok=True)
            return
        target = self.folder / f"dt={self._day}" / f"{self._prefix}-{self._sequence:06d}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, target)
        self.published.append(target)

    def write(self, event: Mapping[str, Any]) -> None:
        line = orjson.dumps(event) + b"\n"
        day = event["request_ts"][:10]
        with self._lock:
            if self._file is not None and (
                day != self._day or self._events >= self.max_events or self.clock() - self._opened >= self.max_seconds
            ):
                self._publish()
            if self._file is None:
                self._open(day)
            self._file.write(line)
            self._events += 1

    def flush(self) -> None:
        """Publish what was written so far."""
        with self._lock:
            self._publish()

    close = flush
