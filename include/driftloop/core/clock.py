"""The one clock that work without a data interval reads: the wall clock, or a simulation's.

Windowed work takes "now" from its run (``run_clock``: the conf's ``now``, the data interval), never
from here. What has no run to ask — a deferred sensor's next look, its trigger's wait — asks
:func:`now`. A simulation (``driftloop simulate``, ``make demo``) sets ``DRIFTLOOP_CLOCK_FILE`` to a
file holding the simulated instant and moves it with :func:`set_now`; the looks and their waits then
follow simulated time, so a two-week experiment plays in minutes and the same story comes out on
every machine. Without the variable (every deployment) it is the wall clock.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["CLOCK_FILE_VARIABLE", "now", "set_now", "simulated"]

CLOCK_FILE_VARIABLE = "DRIFTLOOP_CLOCK_FILE"


def simulated() -> bool:
    """Whether a simulation drives the clock (``DRIFTLOOP_CLOCK_FILE`` is set)."""
    return bool(os.environ.get(CLOCK_FILE_VARIABLE))


def now() -> datetime:
    """The simulated instant when a simulation runs, else the wall clock (UTC, aware)."""
    path = os.environ.get(CLOCK_FILE_VARIABLE)
    if not path:
        return datetime.now(UTC)
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        raise RuntimeError(f"{CLOCK_FILE_VARIABLE}={path}: the simulation's clock file does not exist") from None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise RuntimeError(f"{CLOCK_FILE_VARIABLE}={path}: {text!r} has no time zone")
    return value.astimezone(UTC)


def set_now(value: datetime, path: str | os.PathLike[str] | None = None) -> None:
    """Move the simulated clock (atomically: a reader sees the old or the new instant, never half)."""
    if value.tzinfo is None:
        raise ValueError("set_now needs a timezone-aware datetime")
    target = Path(path or os.environ[CLOCK_FILE_VARIABLE])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.write_text(value.astimezone(UTC).isoformat())
    os.replace(partial, target)
