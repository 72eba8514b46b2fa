"""dbt metrics layer: an hourly incremental build vs a full rebuild, on a month of raw predictions.

    .venv/bin/python benchmarks/metrics.py [--rows 10000000] [--days 30] [--new-rows 100000]
        [--late-labels 20000] [--late-days 3] [--label-delay-hours 24] [--select ...] [--no-verify] [--keep]

    .venv/bin/python benchmarks/metrics.py --rows 1000000 --days 3     # a quick run (~7 minutes)

Goal (the issue): with 10,000,000 predictions in raw (about 30 days), the hourly incremental build
after 100,000 new rows takes <= 10 % of a full rebuild.

What it does, in a fresh database on the warehouse (the embedded PostgreSQL unless
DRIFTLOOP_WAREHOUSE_URL is set), migrated, with the churn spec (include/specs/churn.yaml) synced:

1. SETUP (not measured): ``--rows`` churn predictions over ``--days`` days ending at S (the start
   of the last whole hour), two arms (control v1 80 %, challenger v2 20 %), made by
   ``driftloop.sim.world.generate_predictions``, and feedback for ~70 % of them with exponential
   delays (mean ``--label-delay-hours``); feedback after S has not arrived yet. Running all that
   through ``driftloop.ingest.loader`` would take ~30 k rows/s, so instead the raw tables are bulk-loaded
   with COPY (CSV written by pyarrow, one day at a time, the next day generated while the server
   loads this one) in the shape ingest writes: every column of raw.predictions (``event`` = the
   JSON line as landed, ``scores`` built like ingest builds it), raw.prediction_keys, raw.feedback,
   and one raw.ingest_files manifest row per hourly file (per arm for predictions), so every
   file_id is valid. Day partitions come from ``raw.ensure_predictions_partition(day)``. Each hourly
   file is "loaded" 5 minutes after its hour (``loaded_at``), in loaded_at order, as ingest would
   have loaded it; then ``vacuum analyze`` (what autovacuum would have done over a month).
2. FULL REBUILD (measured): ``driftloop.monitor.dbt_runner.build(url, full_refresh=True, as_of=S + 10 min)``.
3. THE NEXT HOUR (setup, not measured): ``--new-rows`` predictions requested in [S, S + 1 h) and the
   next ``--late-labels`` labels to arrive for predictions of the ``--late-days`` days before S (late
   feedback for older windows; squeezed into that hour if they would take longer), COPYed in the
   same shape with ``loaded_at`` = now().
4. INCREMENTAL BUILD (measured): ``driftloop.monitor.dbt_runner.build(url, as_of=S + 1 h 10 min)``. Like an
   hourly run in production, ``int_labeled_predictions`` also re-reads the last files loaded before
   the full build (at S + 5 min: within dbt's ``loaded_at_lookback`` of 1 hour), finds those rows
   unchanged and does not rewrite them; the marts recompute the windows of the rows it did rewrite
   (the new hour's predictions, the late labels' predictions) and the windows whose label maturity
   changed with the later as_of.

Prints both wall times, the ratio incremental / full (goal <= 0.10), and per model (marts, views,
tests) dbt's own execution times from run_results.json for both builds, plus how many windows each
mart rewrote. dbt runs the marts on 4 threads, so on a small machine their times overlap.

Verification (default; ``--no-verify`` skips it, since it costs one more full rebuild): a
``--full-refresh`` with the incremental build's as_of, then every row of every mart compared with
what the incremental build left (exactly, and within 1e-9 for floats).

Every build is ``dbt build --select`` the metrics layer (its five marts and everything upstream, with
their unit and data tests; ``--select`` to change it, ``--select`` alone for the whole project).
dbt's log lines are hidden (errors still show) unless ``--dbt-output``.

``--keep`` keeps the database and the dbt target folder (compiled SQL; their paths are printed);
otherwise both are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# (formerly) benchmarks/profile.py would shadow the standard library's `profile` (dbt imports cProfile, which
# imports it): this folder is on sys.path only because the script lives in it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from driftloop.core import warehouse  # noqa: E402
from driftloop.core.settings import specs_dir  # noqa: E402
from driftloop.core.spec import load_spec  # noqa: E402
from driftloop.monitor import dbt_runner as metrics  # noqa: E402
from driftloop.sim.bulk import HOUR, HistoryPlan, land_next_hour, load_history  # noqa: E402

MODEL = "churn"
MARTS = (
    "fct_model_quality",
    "fct_class_quality",
    "fct_confusion_matrix",
    "fct_latency",
    "fct_label_coverage",
)
# The metrics layer: its marts, everything upstream of them, their unit tests and data tests.
METRICS_SELECTION = tuple(f"+{mart}" for mart in MARTS)
MART_KEYS = {
    "fct_model_quality": (),
    "fct_class_quality": ("class_name",),
    "fct_confusion_matrix": ("actual_class", "predicted_class"),
    "fct_latency": (),
    "fct_label_coverage": (),
}
GRAIN = ("model_name", "model_version", "variant", "segment", "window_size", "window_start")
WINDOW_KEY = ("model_name", "window_size", "window_start")
TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------------------
# Databases


def _database(admin_url: str) -> str:
    return warehouse.create_database(admin_url, f"bench_metrics_{uuid.uuid4().hex[:8]}")


def _drop(admin_url: str, url: str) -> None:
    warehouse.drop_database(admin_url, url)


# --------------------------------------------------------------------------------------------------
# Builds and their figures


@dataclass
class BuildResult:
    seconds: float
    nodes: dict[str, dict]  # unique_id -> run_results entry


def timed_build(
    url: str, target: Path, logs: Path, *, full_refresh: bool, as_of: datetime, select: list[str]
) -> BuildResult:
    (target / "run_results.json").unlink(missing_ok=True)
    started = time.perf_counter()
    metrics.build(
        url, full_refresh=full_refresh, as_of=as_of, select=select, target_path=target, log_path=logs
    )
    seconds = time.perf_counter() - started
    results = json.loads((target / "run_results.json").read_text())["results"]
    return BuildResult(seconds, {r["unique_id"]: r for r in results})


def _short(unique_id: str) -> str:
    parts = unique_id.split(".")
    return parts[2] if parts[0] in ("model", "unit_test") and len(parts) > 2 else ".".join(parts[2:])


def print_build_table(full: BuildResult, incremental: BuildResult) -> None:
    def kind(unique_id: str) -> str:
        return unique_id.split(".")[0]

    def rows(result: BuildResult, unique_id: str) -> str:
        response = result.nodes.get(unique_id, {}).get("adapter_response") or {}
        value = response.get("rows_affected")
        return f"{value:>10,}" if isinstance(value, int) and value >= 0 else " " * 10

    models = sorted(
        {u for u in (*full.nodes, *incremental.nodes) if kind(u) == "model"},
        key=lambda u: -full.nodes.get(u, {}).get("execution_time", 0.0),
    )
    print(f"\n{'model':<36}{'full s':>9}{'incr s':>9}{'ratio':>8}{'full rows':>11}{'incr rows':>11}")
    for unique_id in models:
        f = full.nodes.get(unique_id, {}).get("execution_time", float("nan"))
        i = incremental.nodes.get(unique_id, {}).get("execution_time", float("nan"))
        ratio = i / f if f else float("nan")
        print(
            f"{_short(unique_id):<36}{f:9.1f}{i:9.1f}{ratio:8.2f}{rows(full, unique_id)} {rows(incremental, unique_id)}"
        )
    for label, node_kind in (("unit tests", "unit_test"), ("data tests", "test")):
        f = sum(r["execution_time"] for u, r in full.nodes.items() if kind(u) == node_kind)
        i = sum(r["execution_time"] for u, r in incremental.nodes.items() if kind(u) == node_kind)
        n = sum(1 for u in full.nodes if kind(u) == node_kind)
        print(f"{f'{label} ({n}, summed)':<36}{f:9.1f}{i:9.1f}{(i / f if f else float('nan')):8.2f}")
    slowest = sorted(
        ((r["execution_time"], u) for u, r in incremental.nodes.items() if kind(u) == "test"), reverse=True
    )[:5]
    if slowest:
        print(
            "slowest data tests (incremental build): "
            + ", ".join(f"{_short(u)} {t:.1f}s" for t, u in slowest)
        )
    for label, result in (("full", full), ("incremental", incremental)):
        summed = sum(r["execution_time"] for r in result.nodes.values())
        print(f"{label}: wall {result.seconds:.1f} s; dbt node times summed {summed:.1f} s "
              f"(4 threads: nodes overlap; the rest is dbt start-up, parsing and compiling)")  # fmt: skip


def row_versions(url: str) -> dict[str, set[tuple]]:
    """(model_name, window_size, window_start, xmin) of every mart row: a rewritten row has a new xmin."""
    with psycopg.connect(url) as conn:
        return {
            mart: set(
                conn.execute(f"select {', '.join(WINDOW_KEY)}, xmin::text from marts.{mart}").fetchall()
            )
            for mart in MARTS
        }


def rewritten_windows(
    before: dict[str, set[tuple]], after: dict[str, set[tuple]]
) -> dict[str, tuple[int, int, int]]:
    """mart -> (windows rewritten, of which hour windows, windows in the mart)."""
    out = {}
    for mart in MARTS:
        old = {row[-1] for row in before[mart]}
        rewritten = {row[:3] for row in after[mart] if row[-1] not in old}
        out[mart] = (
            len(rewritten),
            sum(1 for w in rewritten if w[1] == "hour"),
            len({row[:3] for row in after[mart]}),
        )
    return out


def dump(url: str) -> dict[str, dict[tuple, dict]]:
    """Every mart row, by its key."""
    out = {}
    with psycopg.connect(url) as conn:
        for mart in MARTS:
            cursor = conn.execute(f"select * from marts.{mart}")
            names = [c.name for c in cursor.description]
            keys = (*GRAIN, *MART_KEYS[mart])
            out[mart] = {}
            for row in cursor.fetchall():
                record = dict(zip(names, row, strict=True))
                out[mart][tuple(record[k] for k in keys)] = record
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))
    return a == b


def compare(incremental: dict, full: dict) -> dict[str, tuple[int, int, int, int]]:
    """mart -> (rows, rows not exactly equal, rows differing beyond the tolerance, keys in one only)."""
    out = {}
    for mart in MARTS:
        a, b = incremental[mart], full[mart]
        common = a.keys() & b.keys()
        inexact = sum(1 for k in common if a[k] != b[k])
        different = sum(1 for k in common if not all(_close(a[k][c], b[k][c]) for c in a[k]))
        out[mart] = (len(b), inexact, different, len(a.keys() ^ b.keys()))
    return out


# --------------------------------------------------------------------------------------------------


# One SQL scan computing the marts' daily aggregates (the metrics full rebuild's baseline): per model,
# version, variant, segment and UTC day: predictions, failures, latency mean and p95, labelled share,
# accuracy, log loss of the positive score.
SCAN = """
with labels as (
    select distinct on (model_name, prediction_id) model_name, prediction_id, label
    from raw.feedback order by model_name, prediction_id, feedback_ts desc
)
select p.model_name, p.model_version, p.variant, p.segment, date_trunc('day', p.request_ts, 'UTC') as day,
       count(*), count(*) filter (where p.error is not null), avg(p.latency_ms),
       percentile_cont(0.95) within group (order by p.latency_ms),
       avg((l.label is not null)::int), avg((l.label = p.prediction)::int),
       avg(-ln(greatest(least(case when l.label = 'churn' then p.score else 1 - p.score end, 1 - 1e-15), 1e-15)))
from raw.predictions p left join labels l using (model_name, prediction_id)
group by 1, 2, 3, 4, 5
"""


def scan_seconds(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(SCAN).fetchall()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    """Returns the full rebuild's, the incremental build's and the one-scan baseline's seconds."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="predictions already in raw")
    parser.add_argument("--days", type=int, default=30, help="days they cover")
    parser.add_argument("--new-rows", type=int, default=100_000, help="predictions of the next hour")
    parser.add_argument(
        "--late-labels", type=int, default=20_000, help="late labels landing with the next hour"
    )
    parser.add_argument(
        "--late-days", type=float, default=3.0, help="the late labels are for predictions this recent"
    )
    parser.add_argument(
        "--label-delay-hours", type=float, default=24.0, help="mean label delay (exponential)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the full refresh that checks the incremental result"
    )
    parser.add_argument(
        "--select",
        nargs="*",
        default=list(METRICS_SELECTION),
        help="dbt --select for every build (default: the metrics layer's marts and everything upstream; "
        "--select with no value: the whole project)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--dbt-output", action="store_true", help="show dbt's log lines (default: errors only)"
    )
    args = parser.parse_args(argv)
    if not args.dbt_output:
        os.environ.setdefault("DBT_QUIET", "true")  # dbt still prints errors
    if args.days < 1 or args.rows < args.days:
        parser.error("--days must be >= 1 and --rows >= --days")

    spec = load_spec(specs_dir() / f"{MODEL}.yaml")
    admin = warehouse.resolve_url()
    now = datetime.now(UTC)
    t_hour = now.replace(minute=0, second=0, microsecond=0)
    s = t_hour - HOUR  # history ends here; [S, S + 1 h) is "the next hour"
    as_of_full, as_of_incremental = s + timedelta(minutes=10), s + HOUR + timedelta(minutes=10)
    work = Path(tempfile.mkdtemp(prefix="dl-bench-metrics-"))
    url = _database(admin)
    print(f"database: {warehouse.redact(url)}")
    try:
        warehouse.migrate(url)
        warehouse.sync_specs(url, {MODEL: spec})
        with psycopg.connect(url) as conn:
            settings = {
                name: conn.execute(sql.SQL("show {}").format(sql.Identifier(name))).fetchone()[0]
                for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit")
            }
        print("server: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        print(
            f"dbt build --select {' '.join(args.select)}" if args.select else "dbt build (the whole project)"
        )

        print(
            f"setup: {args.rows:,} predictions over {args.days} days up to {s.isoformat()} (bulk COPY, not measured)"
        )
        started = time.perf_counter()
        plan = HistoryPlan(rows=args.rows, days=args.days, label_delay_hours=args.label_delay_hours,
                           late_days=args.late_days, seed=args.seed, new_rows=args.new_rows, late_labels=args.late_labels)
        history = load_history(url, spec, plan, s, f"benchmark-{uuid.uuid4().hex[:6]}")
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "vacuum (analyze) raw.predictions, raw.prediction_keys, raw.feedback, raw.ingest_files"
            )
            size = conn.execute(
                "select pg_size_pretty(pg_database_size(current_database()))"
            ).fetchone()[0]  # fmt: skip
        print(f"setup: loaded {history.predictions:,} predictions and {history.feedback:,} labels "
              f"({history.feedback / history.predictions:.0%}) in {load_seconds:.0f} s "
              f"({history.predictions / load_seconds:,.0f} predictions/s), vacuum analyze "
              f"{time.perf_counter() - started:.0f} s; database {size}", flush=True)  # fmt: skip

        target, logs = work / "target", work / "logs"
        print(f"\nfull rebuild (--full-refresh, as_of {as_of_full.isoformat()}) ...", flush=True)
        full = timed_build(url, target, logs, full_refresh=True, as_of=as_of_full, select=args.select)
        print(f"full rebuild: {full.seconds:.1f} s", flush=True)
        scan = scan_seconds(url)
        print(f"one SQL scan computing the daily aggregates (baseline): {scan:.1f} s", flush=True)
        before = row_versions(url)

        new_rows, late = land_next_hour(url, spec, plan, s, history, f"benchmark-{uuid.uuid4().hex[:6]}")
        print(f"\nnext hour landed (not measured): {new_rows:,} predictions in [{s:%H:%M}, {s + HOUR:%H:%M}) "
              f"and {late:,} late labels for predictions of the {args.late_days:g} days before, loaded_at = now()")  # fmt: skip
        print(f"incremental build (as_of {as_of_incremental.isoformat()}) ...", flush=True)
        incremental = timed_build(
            url, target, logs, full_refresh=False, as_of=as_of_incremental, select=args.select
        )
        print(f"incremental build: {incremental.seconds:.1f} s", flush=True)
        after = row_versions(url)

        print_build_table(full, incremental)
        print("\nwindows the incremental build rewrote (model, window size, window start):")
        for mart, (windows, hours, total) in rewritten_windows(before, after).items():
            print(f"  {mart:<22} {windows:>5} of {total:>5} ({hours} hour, {windows - hours} day windows)")

        ratio = incremental.seconds / full.seconds
        print(
            f"\nrows in raw: {history.predictions + new_rows:,} predictions, {history.feedback + late:,} labels"
        )
        print(f"full rebuild     : {full.seconds:8.1f} s")
        print(
            f"incremental build: {incremental.seconds:8.1f} s  ({new_rows:,} new predictions, {late:,} late labels)"
        )
        print(
            f"ratio incremental / full: {ratio:.3f}  (goal <= 0.10: {'met' if ratio <= 0.10 else 'MISSED'})"
        )

        if not args.no_verify:
            incremental_rows = dump(url)
            print(f"\nverify: --full-refresh with as_of {as_of_incremental.isoformat()} ...", flush=True)
            check = timed_build(
                url, target, logs, full_refresh=True, as_of=as_of_incremental, select=args.select
            )
            differences = compare(incremental_rows, dump(url))
            print(f"verify: full refresh took {check.seconds:.1f} s")
            for mart, (rows, inexact, different, unmatched) in differences.items():
                verdict = (
                    "equal"
                    if not (inexact or unmatched)
                    else ("equal within 1e-9" if not (different or unmatched) else "DIFFERENT")
                )
                print(f"  {mart:<22} {rows:>7,} rows: {verdict}"
                      + (f" ({inexact} not bit-equal, {different} beyond 1e-9, {unmatched} keys in one only)" if verdict != "equal" else ""))  # fmt: skip
            if any(different or unmatched for _, _, different, unmatched in differences.values()):
                sys.exit(1)
        else:
            print("\nverify: skipped (--no-verify); it costs one more full rebuild")
        return {"full_s": full.seconds, "incremental_s": incremental.seconds, "scan_s": scan}
    finally:
        if args.keep:
            print(
                f"kept database: {url}\nkept dbt target (compiled SQL, run_results.json): {work / 'target'}"
            )
        else:
            _drop(admin, url)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
