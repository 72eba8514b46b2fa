"""The simulation clock: the wall clock unless a clock file is set; moved atomically."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from driftloop.core import clock


def test_without_a_clock_file_it_is_the_wall_clock(monkeypatch):
    monkeypatch.delenv(clock.CLOCK_FILE_VARIABLE, raising=False)
    before = datetime.now(UTC)
    assert not clock.simulated() and before <= clock.now() <= datetime.now(UTC)


def test_a_simulation_moves_the_clock_and_every_reader_sees_it(monkeypatch, tmp_path):
    path = tmp_path / "clock"
    monkeypatch.setenv(clock.CLOCK_FILE_VARIABLE, str(path))
    with pytest.raises(RuntimeError, match="does not exist"):
        clock.now()
    start = datetime(2026, 3, 2, 12, tzinfo=timezone(timedelta(hours=2)))
    clock.set_now(start)
    assert clock.simulated() and clock.now() == start and clock.now().tzinfo == UTC
    clock.set_now(start + timedelta(hours=12))
    assert clock.now() == start + timedelta(hours=12)
    assert [p.name for p in tmp_path.iterdir()] == ["clock"]  # no partial file left
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set_now(datetime(2026, 3, 2))
    path.write_text("2026-03-02T12:00:00")
    with pytest.raises(RuntimeError, match="no time zone"):
        clock.now()
