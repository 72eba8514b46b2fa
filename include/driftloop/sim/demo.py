"""`make demo`: the closed loop on the embedded warehouse, in simulated time, through the real DAGs.

The ``drift`` scenario (:mod:`driftloop.sim.scenarios`) plays 14 simulated days of the example model's
traffic: a first champion is trained, requests are served through the real router, files land and
ingest__/profile__/metrics/monitor__ run interval by interval with ``dag.test()``; from day 6 the
churn relationship changes, quality drops, an alert opens, retrain__churn trains a challenger, the
offline gate lets it through, promote__churn tests it on live traffic (canary ramp, always-valid
sequential test, guardrails), promotes it and watches it. The terminal shows one progress line per
simulated day and one line per event; the run ends with a summary table and leaves a report at
``reports/demo/index.html`` (:mod:`driftloop.sim.story`).

The demo owns what it writes: on the embedded warehouse (no ``DRIFTLOOP_WAREHOUSE_URL``) it starts
from an empty warehouse, MLflow store and landing zone every time, so a rerun tells the same story.
Against a warehouse you name, it refuses to run unless that warehouse holds no driftloop data.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from driftloop.core import warehouse
from driftloop.core.settings import PROJECT_DIR, home

__all__ = ["DEMO_DAYS", "DEMO_ROWS_PER_DAY", "format_summary", "reset_demo_state", "run_demo"]

DEMO_DAYS = 14
DEMO_ROWS_PER_DAY = 7_500  # 105,000 predictions in 14 days
DEMO_INTERVAL_HOURS = 24  # a step (serve, land, the DAGs, a look) per simulated day: the 5-minute budget
DEMO_REPORT = PROJECT_DIR / "reports" / "demo" / "index.html"
_SCHEMAS = ("raw", "staging", "intermediate", "marts", "profiles", "ops")


def reset_demo_state(url: str, *, embedded: bool) -> None:
    """An empty warehouse for the story. The embedded one is the demo's own: its driftloop schemas are
    dropped. Any other warehouse must have loaded no file yet (the demo never drops a user's data);
    its empty driftloop schemas are dropped and migrated again."""
    with psycopg.connect(url, autocommit=True) as conn:
        present = [row[0] for row in conn.execute("select nspname from pg_namespace where nspname = any(%s)", (list(_SCHEMAS),))]
        if not present:
            return
        if not embedded:
            has_rows = conn.execute("select to_regclass('raw.ingest_files') is not null").fetchone()[0] and conn.execute(
                "select exists (select 1 from raw.ingest_files)"
            ).fetchone()[0]
            if has_rows:
                raise RuntimeError(
                    f"{warehouse.redact(url)} has loaded files already: the demo only runs on the embedded warehouse or "
                    "on a warehouse without data (unset DRIFTLOOP_WAREHOUSE_URL, or name a new database)"
                )
        for schema in present:
            conn.execute(f'drop schema "{schema}" cascade')
        conn.execute("drop table if exists public.driftloop_migrations")


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    hours = int(value.total_seconds() // 3600)
    return f"{hours // 24}d {hours % 24:02d}h"


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_summary(summary: dict[str, Any]) -> str:
    """The table the demo ends with."""
    requests = summary.get("requests", {})
    lines = [
        "",
        "summary",
        f"  {'accuracy before the drift':<34} {_accuracy(summary.get('accuracy_before_drift'))}",
        f"  {'accuracy during the drift':<34} {_accuracy(summary.get('accuracy_during_drift'))}",
        f"  {'accuracy after the promotion':<34} {_accuracy(summary.get('accuracy_after_promotion'))}",
        f"  {'predictions served':<34} {sum(requests.values()):,} ("
        + ", ".join(f"{variant} {count:,}" for variant, count in sorted(requests.items())) + ")",
        f"  {'time to detect (drift -> alert)':<34} {_duration(summary.get('time_to_detect'))}",
        f"  {'time to promote (drift -> promoted)':<34} {_duration(summary.get('time_to_promote'))}",
    ]
    if summary.get("wall_seconds") is not None:
        lines.append(f"  {'wall time':<34} {summary['wall_seconds']:.0f} s")
        spent = {k: v for k, v in (summary.get("timings") or {}).items() if k != "requests" and v >= 0.5}
        if spent:
            lines.append(f"  {'  of which (s)':<34} " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


class _Progress:
    """One line per simulated day: a bar, the day, the requests so far, the wall time."""

    def __init__(self, loop, days: int, out) -> None:
        self.loop, self.days, self.out, self.started = loop, days, out, time.perf_counter()

    def __call__(self, step: int, steps: int, end: datetime) -> None:
        per_day = max(1, steps // self.days)
        if step % per_day:
            return
        day = step // per_day
        bar = "#" * day + "." * (self.days - day)
        served = sum(self.loop.served.values())
        self.out(f"day {day:>2}/{self.days} [{bar}] {end - timedelta(days=1):%a %d %b}  {served:>9,} predictions  "
                 f"{time.perf_counter() - self.started:5.0f} s")  # fmt: skip


def run_demo(
    model_name: str = "churn",
    *,
    scenario_name: str = "drift",
    days: int = DEMO_DAYS,
    rows_per_day: int = DEMO_ROWS_PER_DAY,
    interval_hours: int | None = DEMO_INTERVAL_HOURS,
    report: str | os.PathLike[str] | None = DEMO_REPORT,
    url: str | None = None,
    demo_home: str | os.PathLike[str] | None = None,
    out=None,
) -> dict[str, Any]:
    """Play ``scenario_name`` for ``days`` simulated days through the DAGs (module docstring); returns
    the loop's summary (with ``report``: where the page was written)."""
    from driftloop.sim.loop import Loop
    from driftloop.sim.scenarios import get_scenario
    from driftloop.sim.story import write_report

    say = out or (lambda line: print(line, flush=True))
    embedded = url is None and not os.environ.get("DRIFTLOOP_WAREHOUSE_URL")
    url = warehouse.resolve_url(url)
    place = Path(demo_home or home() / "demo").resolve()
    reset_demo_state(url, embedded=embedded)
    shutil.rmtree(place, ignore_errors=True)
    overrides: dict[str, Any] = {"days": days, "rows_per_day": rows_per_day}
    if interval_hours:
        overrides["interval"] = timedelta(hours=interval_hours)
    scenario = get_scenario(scenario_name, **overrides)
    say(f"driftloop demo: scenario {scenario.name!r}, {days} simulated days, {rows_per_day:,} requests a day, "
        f"a step every {int(scenario.interval.total_seconds() // 3600)} h")  # fmt: skip
    say(f"  {scenario.description}")
    say(f"  warehouse {warehouse.redact(url)}; everything else under {place}")
    loop = Loop(scenario, place, model_name=model_name, url=url, say=say)
    summary = loop.run(_Progress(loop, days, say))
    say(format_summary(summary))
    if report is not None:
        written = write_report(report, url, model_name, scenario, summary, loop.events)
        summary["report"] = str(written)
        say(f"\nreport: {written}  (open it in a browser; it needs no network)")
    say(f"query it yourself: psql \"{warehouse.redact(url)}\"   status: driftloop status --model {model_name}")
    return summary


if __name__ == "__main__":  # pragma: no cover - `python -m driftloop.sim.demo`
    run_demo()
    sys.exit(0)
