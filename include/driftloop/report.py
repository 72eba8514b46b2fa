"""What the warehouse holds for a model, in words a person reads (CLI, demo)."""

from __future__ import annotations

from typing import Any

import psycopg

from driftloop.ingest import IngestResult


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
