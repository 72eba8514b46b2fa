"""Model health page: render time of one model's page with 50 features and a year of daily windows.

    .venv/bin/python benchmarks/ui_page.py [--features 50] [--days 365] [--repeat 7]

Goal (the issue): the page loads in under a second. What is timed is what the API server does for
``GET /driftloop/models/<model>`` after the login check: the read-only transaction of queries
(driftloop.ui.data.model_page), the five matplotlib SVG charts, the HTML. The first render of the process
is printed apart (it pays matplotlib's import, once per API server); the goal is checked on the median of
the later ones. The raw baseline printed next to it is the page's queries alone (ratio = page / queries).

Data (not timed): a fresh database on the warehouse (the embedded PostgreSQL unless DRIFTLOOP_WAREHOUSE_URL
is set), seeded by tests/health_seed.py: --days daily windows of quality per version, variant and three
segments, drift for --features features and a prediction column, label coverage and latency, a running
canary with its looks, retrains, decisions and an alert.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "tests"))  # the seed of the page's tests

import psycopg  # noqa: E402
from health_seed import seed_model  # noqa: E402

from driftloop.core import warehouse  # noqa: E402
from driftloop.ui import app, data, pages  # noqa: E402

MODEL = "bench"
GOAL_SECONDS = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=7, help="renders after the first (the median is checked)")
    args = parser.parse_args()

    admin = warehouse.resolve_url()
    url = warehouse.create_database(admin, f"bench_ui_{os.getpid()}")
    try:
        warehouse.migrate(url)
        with psycopg.connect(url) as conn:
            seed_model(conn, MODEL, n_features=args.features, days=args.days, segments=("eu", "us", "apac"))
        links = pages.Links("/driftloop", "")
        with data.read_only(url) as conn:
            rows = sum(len(v) for v in data.series(conn, MODEL).values())
        print(f"database: {warehouse.redact(url)}; model {MODEL}: {args.features} features, {args.days} daily "
              f"windows, {rows:,} series rows on the page")  # fmt: skip

        started = time.perf_counter()
        html = app.render_model(url, MODEL, links)
        first = time.perf_counter() - started
        renders, cpu, queries = [], [], []
        for _ in range(args.repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            app.render_model(url, MODEL, links)
            renders.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            started = time.perf_counter()
            with data.read_only(url) as conn:
                data.model_page(conn, MODEL)
            queries.append(time.perf_counter() - started)
        page, raw = statistics.median(renders), statistics.median(queries)
        print(f"page size: {len(html) / 1024:,.0f} KiB, {html.count('<svg')} charts")
        print(f"{'first render (matplotlib import)':<36}{first:>8.3f} s")
        print(f"{'page render, median of ' + str(args.repeat):<36}{page:>8.3f} s   (min {min(renders):.3f}, "
              f"max {max(renders):.3f})")  # fmt: skip
        print(f"{'  its CPU time (this process)':<36}{statistics.median(cpu):>8.3f} s   (wall minus waiting for "
              "the database and for other processes' turn on the cores)")
        print(f"{'baseline: the queries alone':<36}{raw:>8.3f} s")
        print(f"ratio page / queries: {page / raw:.1f}")
        print(f"goal: page under {GOAL_SECONDS:.0f} s -> {'met' if page < GOAL_SECONDS else 'MISSED'}")
    finally:
        warehouse.drop_database(admin, url)  # re-seeding takes a second: nothing worth keeping


if __name__ == "__main__":
    main()
