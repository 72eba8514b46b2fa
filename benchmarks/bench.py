"""Every benchmark figure of the performance issue in one run, printed as one table.

    make bench                       # the real sizes (long: the metrics rebuild alone takes many minutes)
    BENCH_SCALE=0.05 make bench      # every size x 0.05 (a quick run); the verdicts are then indicative
    .venv/bin/python benchmarks/bench.py --only ingest_small profiling_windows

Each figure runs in its own process (its peak RSS is its own: the child's ru_maxrss from wait4) and
measures driftloop next to its baseline in the same run: a plain COPY of the same rows; the same rows in
one file; the profiler on the same rows in memory; `whylogs.log` on the same rows; one SQL scan computing
the same daily aggregates; the full rebuild; the model alone. Sizes come from the scripts beside this one
(ingest.py, profiling.py, metrics.py, retrain.py, router.py), times BENCH_SCALE. Exits 1 when a figure
fails to run or exceeds 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 1 << 30
MEMORY_LIMIT = 4 * GIB


@dataclass(frozen=True)
class Figure:
    name: str
    label: str  # what the row says, at BENCH_SCALE = 1
    baseline: str
    goal: str


FIGURES = [
    Figure("ingest_1m", "ingest, 1M predictions in 10 files, validation included", "plain COPY", "ratio >= 0.5"),
    Figure("ingest_small", "ingest, 600 files of ~200 rows", "same rows in one file",
           "ratio >= 0.5, <= 20 ms/file"),
    Figure("profiling_windows", "profiling, 50k rows over 300 daily windows, stored", "profiler in memory",
           "ratio >= 0.5, <= 10 s"),
    Figure("profiling_1m", "profiling, 1M rows x 22 columns", "whylogs.log", "speed-up >= 10x"),
    Figure("metrics_full", "metrics full rebuild, 10M predictions, 30 days", "one SQL scan", "<= 300 s"),
    Figure("metrics_incremental", "metrics incremental, +100k rows, 20k late labels", "full rebuild",
           "ratio <= 0.10"),
    Figure("retrain", "retrain, ~1M labelled rows", "-", "<= 300 s"),
    Figure("router", "router overhead per prediction (p99)", "model alone (p99)", "p99 < 1 ms"),
]  # fmt: skip


def _scaled(value: float, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(value * scale))


def run_figure(name: str, scale: float) -> dict:
    """Measure one figure (in this process); returns its numbers and verdict."""
    sys.path.insert(0, str(HERE))
    if name == "ingest_1m":
        import ingest

        n = ingest.measure(_scaled(1_000_000, scale, 1000), 10, verbose=False)
        ratio = n["baseline_s"] / n["driftloop_s"]
        return {"driftloop": f"{n['driftloop_s']:.1f} s", "baseline": f"{n['baseline_s']:.1f} s",
                "ratio": f"{ratio:.2f}", "met": ratio >= 0.5}  # fmt: skip
    if name == "ingest_small":
        import ingest

        n = ingest.measure_small_files(_scaled(600, scale, 10), 200, verbose=False)
        ratio = n["baseline_s"] / n["driftloop_s"]
        return {"driftloop": f"{n['driftloop_s']:.1f} s ({n['per_file_ms']:.0f} ms/file)",
                "baseline": f"{n['baseline_s']:.1f} s", "ratio": f"{ratio:.2f}",
                "met": ratio >= 0.5 and n["per_file_ms"] <= 20}  # fmt: skip
    if name == "profiling_windows":
        import profiling

        days = _scaled(300, scale, 5)
        n = profiling.measure_windows(_scaled(50_000, scale, 1000), days, verbose=False)
        ratio = n["baseline_s"] / n["driftloop_s"]
        limit = 10 * days / 300  # 10 s for 300 windows
        return {"driftloop": f"{n['driftloop_s']:.1f} s", "baseline": f"{n['baseline_s']:.1f} s",
                "ratio": f"{ratio:.2f}", "met": ratio >= 0.5 and n["driftloop_s"] <= limit}  # fmt: skip
    if name == "profiling_1m":
        import profiling

        n = profiling.measure_1m(_scaled(1_000_000, scale, 10_000), verbose=False)
        speedup = n["baseline_s"] / n["driftloop_s"]
        return {"driftloop": f"{n['driftloop_s']:.2f} s", "baseline": f"{n['baseline_s']:.2f} s",
                "ratio": f"{speedup:.1f}x", "met": speedup >= 10 and not n["problems"],
                "note": "; ".join(n["problems"][:3])}  # fmt: skip
    if name in ("metrics_full", "metrics"):
        import metrics

        n = metrics.main([
            "--rows", str(_scaled(10_000_000, scale, 30_000)), "--days", str(_scaled(30, scale, 3)),
            "--new-rows", str(_scaled(100_000, scale, 300)), "--late-labels", str(_scaled(20_000, scale, 60)),
            "--no-verify",
        ])  # fmt: skip
        full_limit = 300 * scale
        incremental = n["incremental_s"] / n["full_s"]
        return {
            "rows": [
                {"figure": "metrics_full", "driftloop": f"{n['full_s']:.1f} s", "baseline": f"{n['scan_s']:.1f} s",
                 "ratio": f"{n['full_s'] / n['scan_s']:.0f}x slower", "met": n["full_s"] <= full_limit},
                {"figure": "metrics_incremental", "driftloop": f"{n['incremental_s']:.1f} s",
                 "baseline": f"{n['full_s']:.1f} s", "ratio": f"{incremental:.3f}", "met": incremental <= 0.10},
            ]
        }  # fmt: skip
    if name == "retrain":
        import retrain

        n = retrain.main(["--rows", str(_scaled(1_450_000, scale, 20_000)), "--days", str(_scaled(30, scale, 5))])
        return {"driftloop": f"{n['wall_seconds']:.1f} s", "baseline": "-", "ratio": "-",
                "met": n["wall_seconds"] <= 300 * scale, "note": f"retrain process {n['peak_mib']:,.0f} MiB"}  # fmt: skip
    if name == "router":
        import router

        n = router.measure(_scaled(50_000, scale, 20_000))
        return {"driftloop": f"{n['overhead_p99_ms']:.3f} ms", "baseline": f"{n['model_p99_ms']:.3f} ms",
                "ratio": f"{n['overhead_p99_ms'] / n['model_p99_ms']:.2f}", "met": n["overhead_p99_ms"] < 1.0}  # fmt: skip
    raise ValueError(f"unknown figure {name!r}")


def _child(name: str, scale: float) -> tuple[list[dict], int, str]:
    """Run one figure in a fresh process: (its rows, its peak RSS in bytes, its stderr tail on failure)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--scale", repr(scale)]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"driftloop-bench-{name}-{os.getpid()}.log"
    with open(log, "w+b") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
    peak = usage.ru_maxrss * 1024  # KiB on Linux
    lines = out.decode(errors="replace").strip().splitlines()
    if process.returncode != 0 or not lines:
        return [{"figure": name, "error": f"exit {process.returncode}: {' | '.join(tail)[-300:]} (log {log})"}], peak, ""
    log.unlink(missing_ok=True)
    result = json.loads(lines[-1])
    rows = result.pop("rows", None) or [{"figure": name, **result}]
    return rows, peak, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")))
    parser.add_argument("--only", nargs="*", help="figures to run (default: all): " +
                        ", ".join(f.name for f in FIGURES if f.name != "metrics_incremental"))  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        # the figure's own prints go to stderr; stdout's last line is the JSON result
        stdout, sys.stdout = sys.stdout, sys.stderr
        result = run_figure(args.child, args.scale)
        sys.stdout = stdout
        print(json.dumps(result))
        return 0
    wanted = args.only or [f.name for f in FIGURES]
    labels = {f.name: f for f in FIGURES}
    runs = [f.name for f in FIGURES if f.name in wanted and f.name != "metrics_incremental"]
    if "metrics_incremental" in wanted and "metrics_full" not in runs:
        runs.append("metrics_full")
    started = time.perf_counter()
    rows, failed = [], False
    for name in runs:
        t0 = time.perf_counter()
        print(f"running {name} (BENCH_SCALE={args.scale:g}) ...", file=sys.stderr, flush=True)
        figure_rows, peak, _ = _child(name, args.scale)
        for row in figure_rows:
            row["peak"] = peak
            failed |= "error" in row or peak > MEMORY_LIMIT
            if row["figure"] in wanted or name == row["figure"]:
                rows.append(row)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    load = os.getloadavg()
    print(f"\nBENCH_SCALE={args.scale:g}, {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.perf_counter() - started:.0f} s"
          + ("" if args.scale == 1 else f"; sizes and time goals x {args.scale:g} (fixed costs weigh more: indicative)"))  # fmt: skip
    header = ("figure", "driftloop", "baseline (same run)", "ratio", "goal", "verdict", "peak RSS")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        figure = labels[row["figure"]]
        peak = f"{row['peak'] / (1 << 20):,.0f} MiB"
        if "error" in row:
            cells = (figure.label, "FAILED", figure.baseline, "-", figure.goal, row["error"], peak)
        else:
            verdict = "met" if row["met"] else "MISSED"
            if row["peak"] > MEMORY_LIMIT:
                verdict += ", over 4 GiB"
            if row.get("note"):
                verdict += f" ({row['note']})"
            cells = (figure.label, row["driftloop"], f"{figure.baseline}: {row['baseline']}", row["ratio"],
                     figure.goal, verdict, peak)  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
