"""What the warehouse holds for a model, in words a person reads (CLI, demo)."""

from __future__ import annotations

from typing import Any

import psycopg

from driftloop.core.contracts import landing_relative
from driftloop.ingest.loader import IngestResult

WIDTH = 100  # status screens fit a 100-column terminal


def ingest_summary(url: str, model_name: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        files = conn.execute(
            """select kind, status, count(*), coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0)
               from raw.ingest_files where model_name = %s group by kind, status order by kind, status""",
            (model_name,),
        ).fetchall()
        problems = conn.execute(
            """select kind, status, path, error from raw.ingest_files
               where model_name = %s and status <> 'loaded' order by file_id""",
            (model_name,),
        ).fetchall()
        # the example is one row: its location and its reason (the first rejected row of the rule)
        reasons = conn.execute(
            """select kind, reasons->0->>'rule' as rule, count(*),
                      (array_agg(reason order by rejected_id))[1],
                      (array_agg(path order by rejected_id))[1],
                      (array_agg(line_number order by rejected_id))[1]
               from raw.rejected_records where model_name = %s
               group by kind, rule order by kind, count(*) desc, rule""",
            (model_name,),
        ).fetchall()
        awaiting = conn.execute(
            "select count(*) from raw.feedback_awaiting_prediction where model_name = %s", (model_name,)
        ).fetchone()[0]
        alerts = conn.execute(
            "select severity, summary from ops.alerts where model_name = %s order by alert_id", (model_name,)
        ).fetchall()
    return {
        "files": [
            {"kind": k, "status": s, "files": n, "rows_loaded": loaded, "rows_rejected": rejected}
            for k, s, n, loaded, rejected in files
        ],
        "file_problems": [
            {"kind": k, "status": s, "path": landing_relative(p, model_name), "error": e} for k, s, p, e in problems
        ],
        "rejections": [
            {"kind": k, "rule": r, "rows": n, "example_reason": reason,
             "example_at": f"{landing_relative(path, model_name)}:{line}"}
            for k, r, n, reason, path, line in reasons
        ],  # fmt: skip
        "feedback_awaiting_prediction": awaiting,
        "alerts": [{"severity": s, "summary": _relative_in(m, model_name)} for s, m in alerts],
    }


def _relative_in(text: str, model_name: str) -> str:
    """Landed paths inside a sentence, from the landing root on."""
    return " ".join(landing_relative(word, model_name) if "/" in word else word for word in text.split(" "))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _wrapped(text: str, first: str, rest: str) -> str:
    import textwrap

    return textwrap.fill(text, width=WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def format_summary(summary: dict[str, Any]) -> str:
    parts = ["Landed files (raw.ingest_files):"]
    parts.append(
        _table(
            ["kind", "status", "files", "rows loaded", "rows rejected"],
            [[f["kind"], f["status"], f["files"], f["rows_loaded"], f["rows_rejected"]] for f in summary["files"]],
        )
    )
    if summary["file_problems"]:
        parts.append("\nFiles not loaded (or not as landed), and why:")
        for problem in summary["file_problems"]:
            parts.append(_wrapped(f"[{problem['status']}] {problem['path']}: {problem['error']}", "  ", "      "))
    if summary["rejections"]:
        parts.append("\nRejected rows (raw.rejected_records), by rule, with the first rejected row as the example:")
        parts.append(_table(["kind", "rule", "rows"], [[r["kind"], r["rule"], r["rows"]] for r in summary["rejections"]]))
        for rule in summary["rejections"]:
            parts.append(_wrapped(f"{rule['kind']} / {rule['rule']}, e.g. {rule['example_at']}", "  ", "      "))
            parts.append(_wrapped(rule["example_reason"], "      ", "      "))
    parts.append(f"\nFeedback waiting for its prediction: {summary['feedback_awaiting_prediction']}")
    if summary["alerts"]:
        parts.append("\nAlerts raised (ops.alerts outbox):")
        parts.extend(_wrapped(f"[{a['severity']}] {a['summary']}", "  ", "      ") for a in summary["alerts"])
    return "\n".join(parts)


def _day_of(path: str) -> str:
    """The dt= folder of a landed path (files outside one are their own 'day')."""
    folder = path.rsplit("/", 2)[-2] if path.count("/") >= 2 else ""
    return folder if folder.startswith("dt=") else "(no day folder)"


def format_run(result: IngestResult, *, days_in_full: int = 3) -> str:
    """One run's files: every file of the first `days_in_full` days of each kind, then one line per day;
    a file that did not simply load (failed, skipped, changed, duplicate, ...) is always listed."""
    if not result.files:
        return f"{result.model_name}: no new files."
    from collections import Counter, defaultdict

    by_day: dict[tuple[str, str], list] = defaultdict(list)
    for file in result.files:
        by_day[(file.kind, _day_of(file.path))].append(file)
    rows: list[list[Any]] = []
    notes: list[str] = []
    shown_days: Counter[str] = Counter()
    for (kind, day), files in sorted(by_day.items()):
        shown_days[kind] += 1
        in_full = shown_days[kind] <= days_in_full
        if not in_full:
            statuses = Counter(f.status for f in files)
            rows.append([kind, f"{day}/ ({len(files)} files)", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
                         sum(f.rows_loaded for f in files), sum(f.rows_rejected for f in files)])  # fmt: skip
        for file in files:
            relative = landing_relative(file.path, result.model_name).split("/", 2)[-1]
            if in_full or file.status not in ("loaded", "empty"):
                rows.append([kind, relative if in_full else f"  {relative}", file.status, file.rows_loaded,
                             file.rows_rejected])  # fmt: skip
            if file.error and file.status not in ("loaded", "empty"):
                notes.append(_wrapped(f"{kind}/{relative}: {file.error}", "  ", "      "))
    failed = result.count("failed")
    return "\n".join([
        _table(["kind", "file", "status", "loaded", "rejected"], rows),
        *(["Why:", *notes] if notes else []),
        f"{result.model_name}: {len(result.files)} files, {result.rows_loaded} rows loaded, {result.rows_rejected} "
        f"rejected" + (f", {failed} files failed" if failed else "") + ".",
    ])  # fmt: skip


MARTS = ("fct_model_quality", "fct_class_quality", "fct_confusion_matrix", "fct_latency", "fct_label_coverage",
         "fct_feature_drift", "fct_prediction_drift")  # fmt: skip


def marts_sample(url: str, model_name: str, window_start: Any) -> dict[str, dict[str, Any]]:
    """Per mart: its row count for the model and the first daily '(all)' row of `window_start`."""
    from psycopg import sql

    samples: dict[str, dict[str, Any]] = {}
    with psycopg.connect(url) as conn:
        for mart in MARTS:
            if conn.execute("select to_regclass(%s)", (f"marts.{mart}",)).fetchone()[0] is None:
                continue
            table = sql.Identifier("marts", mart)
            count = conn.execute(sql.SQL("select count(*) from {} where model_name = %s").format(table), (model_name,)).fetchone()[0]
            cursor = conn.execute(
                sql.SQL(
                    "select * from {} where model_name = %s and window_size = 'day' and window_start = %s "
                    "and segment = '(all)' limit 1"
                ).format(table),
                (model_name, window_start),
            )
            row = cursor.fetchone()
            columns = [c.name for c in cursor.description]
            samples[mart] = {"rows": count, "sample": dict(zip(columns, row, strict=True)) if row else None}
    return samples


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_marts(samples: dict[str, dict[str, Any]]) -> str:
    parts = []
    for mart, found in samples.items():
        parts.append(f"marts.{mart}: {found['rows']} rows; the day's '(all)' row:")
        if found["sample"] is None:
            parts.append("   (none)")
            continue
        shown = {k: v for k, v in found["sample"].items() if k not in ("model_name", "source_loaded_at")}
        parts.append("   " + ", ".join(f"{k}={_value(v)}" for k, v in shown.items()))
    return "\n".join(parts)


def format_signals(url: str, model_name: str) -> str:
    """One line: whether marts.retrain_signals would start a training, and why."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select should_retrain, reason from marts.retrain_signals where model_name = %s", (model_name,)
        ).fetchone()
    if row is None:
        return "(no row yet: the metrics DAG has not built marts.retrain_signals)"
    return f"should_retrain={row[0]}: {row[1]}"


def format_retrain(url: str, model_name: str) -> str:
    """Every training of the model (ops.retrain_runs) and the registry aliases as the warehouse knows them."""
    with psycopg.connect(url) as conn:
        runs = conn.execute(
            """
            select retrain_run_id, trigger, status, candidate, model_version, coalesce(alias, ''),
                n_train, n_holdout, metrics -> 'holdout' ->> 'roc_auc', left(coalesce(error, ''), 60)
            from ops.retrain_runs where model_name = %s order by retrain_run_id
            """,
            (model_name,),
        ).fetchall()
        aliases = conn.execute(
            "select alias, model_version from ops.model_aliases where model_name = %s order by alias", (model_name,)
        ).fetchall()
    rows = [[*r[:8], _value(float(r[8])) if r[8] is not None else "", r[9]] for r in runs]
    table = _table(["run", "trigger", "status", "winner", "version", "alias", "n_train", "n_holdout",
                    "holdout_auc", "error"], rows)  # fmt: skip
    return table + "\naliases: " + (", ".join(f"{a}={v}" for a, v in aliases) or "(none)")


def format_decisions(url: str, model_name: str, experiment_id: str | None = None) -> str:
    """The model's experiments (ops.experiments) and every automated decision about them, oldest first
    (ops.decisions: the audit trail); ``experiment_id`` narrows both to one experiment."""
    with psycopg.connect(url) as conn:
        experiments = conn.execute(
            """
            select experiment_id, strategy, champion_version, challenger_version, status, coalesce(watch_status, ''),
                started_at, ended_at
            from ops.experiments where model_name = %s and (%s::text is null or experiment_id = %s) order by started_at
            """,
            (model_name, experiment_id, experiment_id),
        ).fetchall()
        decisions = conn.execute(
            """
            select decided_at, coalesce(experiment_id, ''), step, decision, reason
            from ops.decisions where model_name = %s and (%s::text is null or experiment_id = %s)
            order by decided_at, decision_id
            """,
            (model_name, experiment_id, experiment_id),
        ).fetchall()
    table = _table(["experiment", "strategy", "champion", "challenger", "status", "watch", "started", "ended"],
                   [[*r[:6], _value(r[6]), _value(r[7]) if r[7] else ""] for r in experiments])  # fmt: skip
    lines = [f"{_value(at)}  {experiment or '-'}  {step}: {decision}\n    {reason}" for at, experiment, step, decision, reason in decisions]
    return table + "\n\n" + ("\n".join(lines) if lines else "(no decisions)")


# --------------------------------------------------------------------------------------------------
# The model's status screen (`driftloop status --model`): the facts the Model health page shows


def _rows(conn, sql: str, params: tuple) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(sql, params).fetchall()


def _relation_exists(conn, name: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (name,)).fetchone()[0]


def model_status(url: str, model_name: str, decisions: int = 6) -> dict[str, Any]:
    """Serving versions, the latest experiment with its running estimate, open alerts, the last decisions,
    the last retrain and marts.model_health's row (absent before the first marts build)."""
    with psycopg.connect(url) as conn:
        return model_status_in(conn, model_name, decisions)


def model_status_in(conn: psycopg.Connection, model_name: str, decisions: int = 6) -> dict[str, Any]:
    """:func:`model_status` on an open connection (the Model health page reads in a read-only transaction)."""
    from driftloop.core.alerts import list_alerts

    allocation = _rows(conn, "select champion_version, challenger_version, challenger_share, experiment_id, updated_at "
                             "from ops.traffic_allocation where model_name = %s", (model_name,))  # fmt: skip
    aliases = _rows(conn, "select alias, model_version, updated_at from ops.model_aliases where model_name = %s "
                          "order by alias", (model_name,))  # fmt: skip
    experiment = _rows(conn, "select experiment_id, strategy, champion_version, challenger_version, status, "
                             "watch_status, started_at, ended_at from ops.experiments where model_name = %s "
                             "order by started_at desc limit 1", (model_name,))  # fmt: skip
    estimate = None
    if experiment:
        test = _rows(conn, "select decided_at, decision, evidence -> 'statistics' as statistics from ops.decisions "
                           "where experiment_id = %s and step = 'sequential_test' "
                           "order by decided_at desc, decision_id desc limit 1",
                     (experiment[0]["experiment_id"],))  # fmt: skip
        if test:
            statistics = test[0]["statistics"] or {}
            numbers = statistics.get("test") or {}
            metric = statistics.get("metric") or {}  # the primary metric and its numbers per arm
            if isinstance(metric, str):  # decisions recorded before the metric carried its numbers
                metric = {"name": metric}
            estimate = {"decided_at": test[0]["decided_at"], "decision": test[0]["decision"],
                        "metric": metric.get("name", "accuracy"), "difference": numbers.get("difference"),
                        "interval": numbers.get("always_valid_interval"),
                        "level": numbers.get("always_valid_interval_level"),
                        "share": statistics.get("treatment_share")}  # fmt: skip
    last = _rows(conn, "select decided_at, step, decision, reason from ops.decisions where model_name = %s "
                       "order by decided_at desc, decision_id desc limit %s", (model_name, decisions))  # fmt: skip
    retrain = _rows(conn, "select started_at, trigger, status, model_version, reason from ops.retrain_runs "
                          "where model_name = %s order by started_at desc limit 1", (model_name,))  # fmt: skip
    alerts = [a for a in list_alerts(conn, model_name) if a["status"] in ("firing", "notified")]
    health = None
    if _relation_exists(conn, "marts.model_health"):
        found = _rows(conn, "select * from marts.model_health where model_name = %s", (model_name,))
        health = found[0] if found else None
    return {"model_name": model_name, "allocation": allocation[0] if allocation else None, "aliases": aliases,
            "experiment": experiment[0] if experiment else None, "estimate": estimate, "decisions": last,
            "retrain": retrain[0] if retrain else None, "open_alerts": alerts, "health": health}  # fmt: skip


def _clip(text: Any, width: int) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else "-" if value is None else str(value)


def _health_lines(health: dict[str, Any]) -> list[str]:
    def number(key: str, digits: int = 3) -> str:
        value = health.get(key)
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    drifted = health.get("drifted_features")
    return [
        f"  quality   day {_when(health.get('quality_window_start'))} (mature labels, n {number('quality_n_labelled')}): "
        f"accuracy {number('accuracy')}, ROC AUC {number('roc_auc')}, F1 {number('f1')}",
        f"  traffic   day {_when(health.get('traffic_window_start'))}: {number('n_predictions')} predictions, "
        f"label coverage {number('label_coverage')}",
        f"  drift     day {_when(health.get('drift_window_start'))}: {number('n_drifted_features')} of "
        f"{number('n_features_measured')} features drifted{f' ({drifted})' if drifted else ''}; prediction drift "
        f"{number('is_prediction_drifted')}",
        f"  freshness last load {number('seconds_since_latest_load', 0)} s before {_when(health.get('as_of'))}",
    ]


def format_model_status(status: dict[str, Any], width: int = 100) -> str:
    """The status screen, every line at most ``width`` characters."""
    lines = [f"== {status['model_name']}"]
    allocation = status["allocation"]
    aliases = {a["alias"]: a["model_version"] for a in status["aliases"]}
    if allocation:
        serving = f"serving   version {allocation['champion_version']}"
        if allocation["challenger_version"]:
            serving += (f", challenger version {allocation['challenger_version']} on "
                        f"{allocation['challenger_share']:.0%} of the units ({allocation['experiment_id']})")  # fmt: skip
        lines.append(serving)
    else:
        lines.append(f"serving   registry champion {aliases.get('champion', '-')} (no allocation row yet)")
    if "challenger" in aliases and not (allocation and allocation["challenger_version"]):
        lines.append(f"challenger version {aliases['challenger']} (registered, not on live traffic)")
    experiment = status["experiment"]
    if experiment:
        watch = f", watch {experiment['watch_status']}" if experiment["watch_status"] else ""
        lines.append(f"experiment {experiment['experiment_id']} ({experiment['strategy']}): {experiment['status']}{watch}, "
                     f"started {_when(experiment['started_at'])}")  # fmt: skip
        estimate = status["estimate"]
        if estimate and estimate["difference"] is not None:
            interval = estimate["interval"] or [None, None]
            low, high = (f"{v:+.4f}" if isinstance(v, int | float) else "?" for v in interval)
            level = f"{estimate['level']:.0%} " if estimate["level"] else ""
            lines.append(f"  estimate {estimate['metric']} challenger - champion {estimate['difference']:+.4f}, "
                         f"{level}always-valid interval [{low}, {high}]")  # fmt: skip
            share = "" if estimate["share"] is None else f", challenger share {estimate['share']:.0%}"
            lines.append(f"  last look {_when(estimate['decided_at'])}: {estimate['decision']}{share}")
    else:
        lines.append("experiment none yet (a challenger that passes the offline gate starts one)")
    retrain = status["retrain"]
    if retrain:
        lines.append(f"retrain   {_when(retrain['started_at'])} {retrain['trigger']}: {retrain['status']}"
                     f"{' -> version ' + str(retrain['model_version']) if retrain['model_version'] else ''}")  # fmt: skip
    lines.append(f"alerts    {len(status['open_alerts'])} open")
    lines += [f"  {a['severity']:<8} {a['summary']}" for a in status["open_alerts"][:8]]
    health = status["health"]
    lines.append("health    (marts.model_health)" if health else "health    no marts yet: run the metrics DAG")
    if health:
        lines += _health_lines(health)
    lines.append("decisions (latest first)" if status["decisions"] else "decisions none yet")
    lines += [f"  {_when(d['decided_at'])} {d['step']}: {d['decision']}: {d['reason']}" for d in status["decisions"]]
    return "\n".join(_clip(line, width) for line in lines)
