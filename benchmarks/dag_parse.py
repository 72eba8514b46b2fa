"""DAG parse cost: each file of dags/ imported in a fresh interpreter, as a dag-processor or a task
process does it, against the bare ``import airflow.sdk`` measured the same way in the same run.

    .venv/bin/python benchmarks/dag_parse.py [--repeat 3] [--importtime dags/metrics.py] [--top 25] [--dags DIR]

    ../main/.venv/bin/python benchmarks/dag_parse.py --dags ../main/dags   # another checkout, its own venv

Goal (issue 15): every DAG file parses in < 2 s on a quiet machine.

Each measurement is a new ``python -c`` process (the venv's interpreter, same environment, compiled
bytecode as ``make install`` leaves it) that imports the file with importlib and prints the time the
import took inside the process (interpreter start-up excluded, identical for all): first
``import airflow.sdk``, then the file. The baseline is ``import airflow.sdk`` alone, which no DAG file
can avoid. Printed per file: the best and the median total of ``--repeat`` runs, the median of the
file's own share, and which heavy libraries (scipy, pandas, sklearn, MLflow, GX, whylogs, dbt,
cosmos...) the file left in ``sys.modules`` beyond what Airflow imports itself (should be none).

``--importtime FILE`` also runs ``python -X importtime`` on one file and prints the ``--top``
modules by cumulative import time (what to cut next).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DAGS = PROJECT / "dags"
HEAVY = ["scipy", "pandas", "sklearn", "mlflow", "great_expectations", "whylogs", "lightgbm", "pyarrow",
         "dbt", "cosmos", "psycopg", "numpy"]  # fmt: skip
GOAL_S = 2.0

_PROBE = """
import importlib.util, json, sys, time
started = time.perf_counter()
import airflow.sdk
sdk = time.perf_counter() - started
if sys.argv[1] != "airflow.sdk":
    spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
total = time.perf_counter() - started
print(json.dumps({"sdk": sdk, "seconds": total, "own": total - sdk,
                  "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def environment(dags: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="dag-parse-airflow-"))  # parsing needs no metadata DB
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def probe(target: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, target, json.dumps(HEAVY)], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"importing {target} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def importtime(path: Path, env: dict[str, str], top: int) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the slowest imports of one DAG file."""
    code = f"import importlib.util; s = importlib.util.spec_from_file_location('dagfile', {str(path)!r}); " \
           "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)"  # fmt: skip
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        rows.append((int(cumulative), name))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--importtime", type=Path, help="also list the slowest imports of this DAG file")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dags", type=Path, default=DAGS, help="the DAG folder (default: this checkout's dags/)")
    args = parser.parse_args()
    dags = args.dags.resolve()
    env = environment(dags)

    probe("airflow.sdk", env)  # warm the page cache once: the first process pays for the disk
    baseline = [probe("airflow.sdk", env) for _ in range(args.repeat)]
    sdk_heavy = sorted({module for run in baseline for module in run["heavy"]})
    print(f"baseline: import airflow.sdk alone, median {statistics.median(r['seconds'] for r in baseline):.2f} s over "
          f"{args.repeat} fresh processes (heavy modules it imports itself: {', '.join(sdk_heavy) or '-'})\n")
    print(f"{'DAG file':<12} {'best s':>7} {'median s':>9} {'own s':>7}  heavy modules the file adds")
    worst = 0.0
    for path in sorted(dags.glob("*.py")):
        runs = [probe(str(path), env) for _ in range(args.repeat)]
        median = statistics.median(run["seconds"] for run in runs)
        own = statistics.median(run["own"] for run in runs)
        worst = max(worst, median)
        heavy = sorted({module for run in runs for module in run["heavy"]} - set(sdk_heavy))
        print(f"{path.name:<12} {min(r['seconds'] for r in runs):>7.2f} {median:>9.2f} {own:>7.2f}  {', '.join(heavy) or '-'}")
    verdict = "meets" if worst < GOAL_S else "misses"
    print(f"\nslowest file: median {worst:.2f} s ({verdict} the goal of < {GOAL_S:.0f} s per file; machine load matters)")
    if args.importtime:
        print(f"\nslowest imports of {args.importtime} (cumulative, python -X importtime):")
        for micros, name in importtime(args.importtime.resolve(), env, args.top):
            print(f"  {micros / 1e6:7.3f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
