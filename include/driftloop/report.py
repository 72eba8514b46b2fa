"""What the warehouse holds for a model, in words a person reads (CLI, demo)."""

from __future__ import annotations

from typing import Any

import psycopg

from driftloop.ingest.loader import IngestResult


def ingest_summary(url: str, model_name: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        files = conn.execute(
            """select kind, status, count(*), coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0)
               from raw.ingest_files where model_name = %s group by kind, status order by kind, status""",
            (model_name,),
        ).fetchall()
        problems = conn.execute(
            """select kind, status, path, error from raw.ingest_files
               where model_name = %s and status in ('failed', 'duplicate', 'empty') order by file_id""",
            (model_name,),
        ).fetchall()
        reasons = conn.execute(
            """select kind, reasons->0->>'rule' as rule, count(*), min(reason),
                      (array_agg(regexp_replace(path, '^.*/', '') || ':' || line_number order by rejected_id))[1]
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
        "file_problems": [{"kind": k, "status": s, "path": p, "error": e} for k, s, p, e in problems],
        "rejections": [
            {"kind": k, "rule": r, "rows": n, "example_reason": reason, "example_at": at}
            for k, r, n, reason, at in reasons
        ],
        "feedback_awaiting_prediction": awaiting,
        "alerts": [{"severity": s, "summary": m} for s, m in alerts],
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def format_summary(summary: dict[str, Any]) -> str:
    parts = ["Landed files (raw.ingest_files):"]
    parts.append(
        _table(
            ["kind", "status", "files", "rows loaded", "rows rejected"],
            [[f["kind"], f["status"], f["files"], f["rows_loaded"], f["rows_rejected"]] for f in summary["files"]],
        )
    )
    if summary["file_problems"]:
        parts.append("\nFiles not loaded, and why:")
        for problem in summary["file_problems"]:
            name = problem["path"].rsplit("/", 1)[-1]
            parts.append(f"  [{problem['status']}] {problem['kind']}/{name}: {problem['error']}")
    if summary["rejections"]:
        parts.append("\nRejected rows (raw.rejected_records), by rule:")
        parts.append(
            _table(
                ["kind", "rule", "rows", "example", "reason"],
                [[r["kind"], r["rule"], r["rows"], r["example_at"], r["example_reason"]] for r in summary["rejections"]],
            )
        )
    parts.append(f"\nFeedback waiting for its prediction: {summary['feedback_awaiting_prediction']}")
    if summary["alerts"]:
        parts.append("\nAlerts raised (ops.alerts outbox):")
        parts.extend(f"  [{a['severity']}] {a['summary']}" for a in summary["alerts"])
    return "\n".join(parts)


def format_run(result: IngestResult) -> str:
    rows = [
        [f.kind, f.path.rsplit("/", 1)[-1], f.status, f.rows_loaded, f.rows_rejected, f.error or ""]
        for f in result.files
    ]
    if not rows:
        return f"{result.model_name}: no new files."
    return (
        _table(["kind", "file", "status", "loaded", "rejected", "note"], rows)
        + f"\n{result.model_name}: {result.rows_loaded} rows loaded, {result.rows_rejected} rejected."
    )


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
