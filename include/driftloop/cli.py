"""The `driftloop` command line."""

from __future__ import annotations

import getpass
import json
import logging
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="driftloop: keep production ML models healthy.", no_args_is_help=True, add_completion=False)
warehouse_app = typer.Typer(help="The Postgres warehouse.", no_args_is_help=True)
specs_app = typer.Typer(help="Model specs in include/specs.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")
app.add_typer(specs_app, name="specs")
alerts_app = typer.Typer(help="Alerts: the outbox, delivery to Slack / PagerDuty, resolving and silencing.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model name (a spec in include/specs).")]
LandingOption = Annotated[
    str | None, typer.Option("--landing", help="Landing zone root (folder or fsspec URL). Default: $DRIFTLOOP_LANDING or .driftloop/landing.")
]
UrlOption = Annotated[str | None, typer.Option("--url", help="Warehouse URL. Default: $DRIFTLOOP_WAREHOUSE_URL or the embedded server.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _spec(model: str):
    """The model's spec, or exit with the spec error (file, field, what was expected)."""
    from driftloop.core.spec import SpecError, get_spec

    try:
        return get_spec(model)
    except SpecError as exc:
        raise _fail(str(exc)) from None


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # pgserver asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it falls back to /tmp (fine)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


# ---------------------------------------------------------------------------------------------- warehouse


@warehouse_app.command("up")
def warehouse_up() -> None:
    """Start the embedded warehouse (unless DRIFTLOOP_WAREHOUSE_URL is set), migrate it, print its URL."""
    from driftloop.core import warehouse

    url = warehouse.resolve_url()
    applied = warehouse.migrate(url)
    typer.echo(warehouse.redact(url))
    if applied:
        typer.echo(f"applied migrations: {', '.join(applied)}", err=True)


@warehouse_app.command("url")
def warehouse_url(show_password: Annotated[bool, typer.Option(help="Print the password too.")] = False) -> None:
    """Print the warehouse URL (starting the embedded server if it is the default)."""
    from driftloop.core import warehouse

    url = warehouse.resolve_url()
    typer.echo(url if show_password else warehouse.redact(url))


@warehouse_app.command("migrate")
def warehouse_migrate(url: UrlOption = None) -> None:
    """Apply pending migrations (safe to run twice, and from two processes at once)."""
    from driftloop.core import warehouse

    applied = warehouse.migrate(url)
    models = warehouse.sync_specs(url)
    typer.echo(f"applied: {', '.join(applied)}" if applied else "up to date")
    typer.echo(f"specs synced to ops.model_specs: {', '.join(models)}")


@warehouse_app.command("down")
def warehouse_down() -> None:
    """Stop the embedded warehouse server."""
    from driftloop.core import warehouse

    typer.echo("stopped" if warehouse.stop_embedded() else "no embedded warehouse here")


# ---------------------------------------------------------------------------------------------- specs


@specs_app.command("validate")
def specs_validate(paths: Annotated[list[Path] | None, typer.Argument(help="Spec files (default: all).")] = None) -> None:
    """Validate model specs; errors name the file, the field and what was expected."""
    from driftloop.core.settings import specs_dir
    from driftloop.core.spec import SpecError, load_spec

    failed = False
    for path in paths or sorted(specs_dir().glob("*.yaml")):
        try:
            spec = load_spec(path)
            typer.echo(f"ok  {path}: {spec.name} ({spec.task.value}, {len(spec.features)} features)")
        except SpecError as exc:
            failed = True
            typer.secho(f"bad {exc}", fg=typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(code=1)


# ---------------------------------------------------------------------------------------------- ingest


@app.command()
def ingest(
    model: ModelOption,
    landing: LandingOption = None,
    url: UrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Try every failed file again (by default only when its bytes change).")
    ] = False,
) -> None:
    """Load new landed prediction and feedback files of a model into the warehouse (exactly once)."""
    from driftloop.core import warehouse
    from driftloop.ingest.loader import ingest as run_ingest
    from driftloop.report import format_run

    spec = _spec(model)
    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    warehouse.sync_specs(resolved)
    result = run_ingest(spec, landing_root=landing, url=resolved, run_id="cli", retry_failed=retry_failed)
    typer.echo(json.dumps(result.as_dict(), indent=2, default=str) if as_json else format_run(result))
    if result.count("failed"):
        raise typer.Exit(code=2)


@app.command()
def status(model: ModelOption, url: UrlOption = None) -> None:
    """A model's status: serving versions, the experiment and its running estimate, open alerts, the marts'
    latest windows, the last decisions; then what ingestion loaded and rejected."""
    from driftloop.core import warehouse
    from driftloop.report import format_model_status, format_summary, ingest_summary, model_status

    resolved = warehouse.resolve_url(url)
    typer.echo(format_model_status(model_status(resolved, model)))
    typer.echo("\n== ingestion\n" + format_summary(ingest_summary(resolved, model)))


@app.command()
def decisions(
    model: ModelOption,
    experiment: Annotated[str | None, typer.Option("--experiment", help="One experiment id.")] = None,
    url: UrlOption = None,
) -> None:
    """Why the promotion did what it did: the model's experiments and every automated decision (ops.decisions)."""
    from driftloop.core import warehouse
    from driftloop.report import format_decisions

    _spec(model)
    typer.echo(format_decisions(warehouse.resolve_url(url), model, experiment))


@app.command("stop-experiment")
def stop_experiment(
    model: ModelOption,
    reason: Annotated[str, typer.Option(help="Why it stops (recorded in ops.decisions).")],
    by: Annotated[str, typer.Option(help="Who stops it.")] = getpass.getuser(),
    url: UrlOption = None,
) -> None:
    """Stop the model's running live experiment: the champion gets all traffic back (what the
    stop_experiment__<model> DAG does)."""
    from driftloop.promote.experiments import stop_experiment as stop

    try:
        stopped = stop(url, _spec(model), reason=reason, by=by)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if stopped is None:
        typer.echo(f"{model}: no experiment is running")
    else:
        typer.echo(f"{model}: experiment {stopped['experiment_id']} stopped; version {stopped['champion_version']} "
                   "serves all traffic")  # fmt: skip


# ---------------------------------------------------------------------------------------------- alerts


@alerts_app.command("list")
def alerts_list(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's alerts.")] = None,
    alert_status: Annotated[str | None, typer.Option("--status", help="firing, notified or resolved.")] = None,
    limit: int = 50,
    url: UrlOption = None,
) -> None:
    """Alerts, newest first, with where each was delivered (or why it waits)."""
    from driftloop.core import alerts, warehouse

    with warehouse.connect(warehouse.resolve_url(url)) as conn:
        rows = alerts.list_alerts(conn, model, alert_status, limit)
    if not rows:
        typer.echo("no alerts")
        return
    for row in rows:
        deliveries = ", ".join(f"{k} {v}" for k, v in sorted(row["deliveries"].items())) or "no route"
        typer.echo(f"#{row['alert_id']:<5} {row['status']:<9} [{row['severity']}] {row['summary']}")
        typer.echo(f"       {row['source']}{'/' + row['rule_name'] if row['rule_name'] else ''}, last seen "
                   f"{row['last_seen_at']:%Y-%m-%d %H:%M} UTC, {row['n_evaluations']} evaluation(s); {deliveries}")  # fmt: skip


@alerts_app.command("send")
def alerts_send(url: UrlOption = None) -> None:
    """Deliver what is due in the outbox now (Slack, PagerDuty), with the connections of Airflow or the
    AIRFLOW_CONN_* environment; with none configured the alerts stay in the outbox."""
    from datetime import UTC, datetime

    from driftloop.core import notify, warehouse

    report = notify.deliver_pending(warehouse.resolve_url(url), now=datetime.now(UTC))
    typer.echo(f"sent {report.sent}, failed {report.failed} (retried later), waiting {report.waiting}, "
               f"reconciled {report.reconciled}" + (" (another delivery run is active)" if report.busy else ""))  # fmt: skip
    for error in report.errors:
        typer.echo(f"  {error}", err=True)


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (driftloop alerts list).")],
    reason: Annotated[str, typer.Option(help="Recorded with the resolution.")] = "resolved by a person",
    url: UrlOption = None,
) -> None:
    """Resolve a firing alert by hand; the resolution is sent where the alert went."""
    from datetime import UTC, datetime

    from driftloop.core import alerts, warehouse

    with warehouse.connect(warehouse.resolve_url(url)) as conn, conn.transaction():
        done = alerts.resolve_alert(conn, alert_id, by=reason, now=datetime.now(UTC))
    if not done:
        raise _fail(f"alert {alert_id} is not firing (see driftloop alerts list)")
    typer.echo(f"alert {alert_id} resolved")


@alerts_app.command("silence")
def alerts_silence(
    rule: Annotated[str, typer.Argument(help="The rule's name in the model's spec (alerts.rules).")],
    model: ModelOption,
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 6h, 2d.")] = "6h",
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    url: UrlOption = None,
) -> None:
    """Raise nothing for a rule while a person is on it (an open alert stays open and can still resolve)."""
    from datetime import UTC, datetime

    from driftloop.core import alerts, warehouse
    from driftloop.core.spec import parse_duration

    spec = _spec(model)
    if rule not in {r.name for r in spec.alerts.rules}:
        raise _fail(f"{model} has no alert rule {rule!r} (rules: {', '.join(r.name for r in spec.alerts.rules)})")
    try:
        until = datetime.now(UTC) + parse_duration(duration)
    except ValueError as exc:
        raise _fail(f"--for: {exc}") from None
    with warehouse.connect(warehouse.resolve_url(url)) as conn, conn.transaction():
        alerts.silence(conn, model, rule, until, reason)
    typer.echo(f"{model}/{rule} silenced until {until:%Y-%m-%d %H:%M} UTC")


# ---------------------------------------------------------------------------------------------- simulate


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a date YYYY-MM-DD, got {value!r}") from None


@app.command()
def simulate(
    model: ModelOption,
    scenario: Annotated[str | None, typer.Option(help="Play a closed-loop scenario through the DAGs "
                                                 "(drift, control, worse_online, data_faults).")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="--scenario: simulated days (default: the scenario's).")] = None,
    rows_per_day: Annotated[int | None, typer.Option(min=100, help="--scenario: requests a day.")] = None,
    report: Annotated[Path | None, typer.Option(help="--scenario: where the HTML report goes.")] = None,
    start: Annotated[str | None, typer.Option(help="Without --scenario: first day (YYYY-MM-DD, UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, inclusive (default: start).")] = None,
    landing: LandingOption = None,
    rows_per_hour: Annotated[int, typer.Option(min=0)] = 500,
    seed: int = 42,
    model_version: str = "1",
    faults: Annotated[bool, typer.Option(help="Also land the catalogue of bad inputs for each day.")] = False,
) -> None:
    """With --scenario: play a closed-loop scenario in simulated time through the real DAGs (what
    `make demo` does with drift), with a report. Without: write contract files (predictions, and the
    feedback that has arrived by now) for a date range."""
    from driftloop.core.settings import landing_root
    from driftloop.sim.faults import write_fault_files
    from driftloop.sim.world import Scenario
    from driftloop.sim.world import simulate as run_simulation

    spec = _spec(model)
    if scenario is not None:
        from driftloop.sim.demo import run_demo
        from driftloop.sim.scenarios import SCENARIOS

        if scenario not in SCENARIOS:
            raise typer.BadParameter(f"no scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        chosen = SCENARIOS[scenario]
        run_demo(spec.name, scenario_name=scenario, days=days or chosen.days, rows_per_day=rows_per_day or chosen.rows_per_day,
                 report=report or Path("reports") / scenario / "index.html")  # fmt: skip
        return
    if start is None:
        raise typer.BadParameter("give --scenario NAME, or --start YYYY-MM-DD for contract files")
    first, last = _day(start), _day(end or start)
    if last < first:
        raise typer.BadParameter("--end is before --start")
    now = datetime.now(UTC)
    begin = datetime(first.year, first.month, first.day, tzinfo=UTC)
    finish = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    if finish > now:
        raise typer.BadParameter("the range reaches into the future: predictions cannot be logged before they happen")
    root = landing_root(landing)
    scenario = Scenario(rows_per_hour=rows_per_hour, seed=seed, model_version=model_version)
    result = run_simulation(spec, root, begin, finish, scenario, now=now)
    typer.echo(
        f"{result.predictions} predictions in {len(result.prediction_files)} files, "
        f"{result.feedback} feedback in {len(result.feedback_files)} files -> {root}"
    )
    if faults:
        day = first
        while day <= last:
            cases = write_fault_files(spec, root, day.isoformat(), now)
            typer.echo(f"{day}: bad-input catalogue ({len(cases) - 1} cases)")
            day += timedelta(days=1)


@app.command()
def reference(
    model: ModelOption,
    version: Annotated[str, typer.Option(help="Model version the reference belongs to.")] = "1",
    rows: Annotated[int, typer.Option(min=100)] = 20_000,
    seed: int = 42,
    simulated: Annotated[
        bool, typer.Option("--simulated", help="Required for any model but the shipped example: the data is made up.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Store a reference profile for a model version from SIMULATED training data (the shipped example
    model; use `driftloop register --training-data FILE` for a real model), and re-bin that version's
    stored profiles on its edges."""
    from driftloop.core import warehouse
    from driftloop.sim.examples import EXAMPLE_MODEL, store_simulated_reference

    spec = _spec(model)
    if model != EXAMPLE_MODEL and not simulated:
        typer.echo(
            f"error: {model} is not the shipped example model: a reference from simulated data would make every "
            "drift number meaningless. Store the version's real training data with\n"
            f"  driftloop register --model {model} --version {version} --training-data FILE\n"
            "or pass --simulated to store simulated data anyway (the stored profile says so).",
            err=True,
        )
        raise typer.Exit(1)
    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    profile_id = store_simulated_reference(
        resolved, spec, version, training_end=datetime.now(UTC) - timedelta(days=30), rows=rows, seed=seed
    )
    typer.echo(f"reference profile {profile_id} stored for {model} version {version} (simulated data)")


@app.command()
def register(
    model: ModelOption,
    training_data: Annotated[Path, typer.Option(help="The version's training data: .parquet, .csv or .jsonl.")],
    version: Annotated[
        str | None,
        typer.Option(help="The model version (as its predictions' model_version says); with --mlflow-model, "
                          "optional: the registry assigns one (and the reference is stored for both)."),
    ] = None,
    label_column: Annotated[str | None, typer.Option(help="The label column: gives the baseline quality.")] = None,
    score_column: Annotated[
        list[str] | None,
        typer.Option("--score-column", "--score-columns",
                     help="The model's score: binary, the positive class's probability; multiclass, CLASS=COLUMN per class."),
    ] = None,
    prediction_column: Annotated[str | None, typer.Option(help="The model's predicted class.")] = None,
    mlflow_model: Annotated[
        str | None,
        typer.Option(help="An MLflow model (a folder with an MLmodel file, runs:/..., models:/...): registered as a "
                          "version of the model in driftloop's MLflow registry so the router can serve it."),
    ] = None,
    champion: Annotated[bool, typer.Option("--champion", help="Make the registered MLflow version the champion.")] = False,
    url: UrlOption = None,
) -> None:
    """Register a model version driftloop did not train: its reference profile from its own training
    data (features, predicted class, scores), its baseline quality when labels and scores are given, and
    with --mlflow-model the model itself in the registry (optionally as champion)."""
    from driftloop.learn.external import RegistrationError, register_external

    spec = _spec(model)
    try:
        done = register_external(url, spec, version, training_data, label_column=label_column,
                                 score_columns=score_column, prediction_column=prediction_column,
                                 mlflow_model=mlflow_model, champion=champion)  # fmt: skip
    except (RegistrationError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if done.registry_version is not None:
        from driftloop.learn import registry

        check = done.model_check
        state = "already registered (same model content): nothing new" if done.already_registered else "registered"
        typer.echo(f"{model}: {mlflow_model} {state} as MLflow version {done.registry_version} ({registry.tracking_uri()})")
        typer.echo(f"  model inputs ({check.flavor}, from {check.input_source}): {', '.join(check.inputs)}")
        if check.unused_features:
            typer.echo("  spec features the model does not take (still profiled): " + ", ".join(check.unused_features))
        if done.alias:
            typer.echo(f"  alias '{done.alias}' -> version {done.registry_version}: the router serves it")
        else:
            typer.echo("  no alias set: pass --champion to serve it (or let an experiment promote it)")
    stored = ", ".join(done.stored_versions)
    typer.echo(f"{model} version {stored}: reference profile {done.reference_profile_id} stored from {done.n_rows} rows of {training_data}")
    typer.echo("  columns used: " + ", ".join(f"{c} -> {p}" if c != p else c for c, p in done.used_columns.items()))
    if done.unused_columns:
        typer.echo("  columns NOT used (not in the spec, nor named as label / score / prediction): " + ", ".join(done.unused_columns))
    if done.missing_features:
        typer.echo("  spec features missing from the file (no reference for them): " + ", ".join(done.missing_features))
    if done.baseline is not None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in done.baseline.items() if isinstance(v, float) and k != "n")
        typer.echo(f"  baseline quality on the file (the degradation trigger's baseline): {shown}")
    elif label_column is None:
        typer.echo("  no --label-column: no baseline quality stored")


@app.command()
def profile(
    model: ModelOption,
    now: Annotated[str | None, typer.Option(help="The clock (RFC 3339); default: now. Only closed windows are profiled.")] = None,
    url: UrlOption = None,
) -> None:
    """Profile what profile__<model> would: windows touched by newly loaded files, and those closed since."""
    from driftloop.core import warehouse
    from driftloop.monitor.profiling import profile_pending

    spec = _spec(model)
    clock = datetime.fromisoformat(now) if now else datetime.now(UTC)
    if clock.tzinfo is None:
        typer.echo("error: --now needs a UTC offset, e.g. 2026-11-20T12:00:00+00:00", err=True)
        raise typer.Exit(1)
    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    done = profile_pending(resolved, spec, clock)
    windows = ", ".join([f"{len(done.hours)} hour", *(f"{len(v)} {k}" for k, v in done.windows.items())])
    typer.echo(f"{model}: {windows} windows profiled ({done.profiles} profiles, {done.rows} rows)")
    if done.unbinned_versions:
        typer.echo(f"  no reference for version(s) {', '.join(done.unbinned_versions)}: no drift for them until one is stored")


@app.command()
def bootstrap(
    model: ModelOption,
    rows: Annotated[int, typer.Option(min=1000, help="Simulated example rows to train on.")] = 20_000,
    seed: int = 42,
    url: UrlOption = None,
) -> None:
    """Train and register the first champion of a model (MLflow alias 'champion') from simulated example
    data, when the registry has none; with a champion it only says which version it is."""
    from driftloop.core import warehouse
    from driftloop.learn import registry
    from driftloop.sim import examples

    spec = _spec(model)
    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    warehouse.sync_specs(resolved)
    result = examples.bootstrap(resolved, spec, rows=rows, seed=seed)
    if result["status"] == "exists":
        typer.echo(f"{model} already has a champion: version {result['model_version']} ({registry.tracking_uri()})")
    else:
        typer.echo(f"{model} version {result['model_version']} registered as champion ({registry.tracking_uri()})")


@app.command()
def retrain(
    model: ModelOption,
    reason: Annotated[str, typer.Option(help="Why (recorded with the run and in MLflow).")],
    url: UrlOption = None,
) -> None:
    """Train a challenger now from the warehouse's labelled predictions (like a manual run of
    retrain__<model>): registered with alias 'challenger'; the champion is not touched."""
    import uuid

    from driftloop.core import warehouse
    from driftloop.learn import retrain as retraining

    spec = _spec(model)
    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    result = retraining.run_retrain(
        resolved, spec, run_key=f"cli/{uuid.uuid4()}", trigger="manual", reason=reason,
        evidence={"requested_by": "driftloop retrain"}, respect_cooldown=False, progress=typer.echo,
    )  # fmt: skip
    if result["status"] not in ("succeeded", "done"):
        raise _fail(result.get("message") or result["status"])
    typer.echo(json.dumps({k: v for k, v in result.items()}, indent=2, default=str))


@app.command()
def metrics(
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild every mart from scratch.")] = False,
    select: Annotated[list[str] | None, typer.Option(help="dbt selection (repeatable).")] = None,
    url: UrlOption = None,
) -> None:
    """`dbt build` of the metrics layer against the warehouse (what the metrics DAG runs, in one go)."""
    from driftloop.core import warehouse
    from driftloop.monitor.dbt_runner import build

    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    warehouse.sync_specs(resolved)
    build(resolved, full_refresh=full_refresh, select=select or ())
    typer.echo("metrics built")


# ---------------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    model: Annotated[str, typer.Option("--model", "-m")] = "churn",
    scenario: Annotated[str, typer.Option(help="A scenario of driftloop.sim.scenarios.")] = "drift",
    days: Annotated[int, typer.Option(min=1)] = 14,
    rows_per_day: Annotated[int, typer.Option(min=100)] = 7_500,
    interval_hours: Annotated[int, typer.Option(min=1, max=24, help="Simulated hours per step.")] = 24,
    report: Annotated[Path | None, typer.Option(help="Where the HTML report goes.")] = None,
) -> None:
    """The closed loop on the embedded warehouse: 14 simulated days through the real DAGs, a report."""
    from driftloop.sim.demo import DEMO_REPORT, run_demo

    run_demo(model, scenario_name=scenario, days=days, rows_per_day=rows_per_day, interval_hours=interval_hours,
             report=report or DEMO_REPORT)  # fmt: skip


@app.command("airflow-settings")
def airflow_settings(path: Annotated[Path, typer.Argument()] = Path("airflow_settings.yaml")) -> None:
    """Load connections, variables and pools from airflow_settings.yaml into the local Airflow."""
    from driftloop.airflow.settings_import import import_into_airflow

    import_into_airflow(path)
    typer.echo(f"imported {path}")


if __name__ == "__main__":
    app()
