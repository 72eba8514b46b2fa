"""The `driftloop` command line."""

from __future__ import annotations

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
) -> None:
    """Load new landed prediction and feedback files of a model into the warehouse (exactly once)."""
    from driftloop.core import warehouse
    from driftloop.ingest.loader import ingest as run_ingest
    from driftloop.report import format_run

    spec = _spec(model)
    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    warehouse.sync_specs(resolved)
    result = run_ingest(spec, landing_root=landing, url=resolved, run_id="cli")
    typer.echo(json.dumps(result.as_dict(), indent=2, default=str) if as_json else format_run(result))
    if result.count("failed"):
        raise typer.Exit(code=2)


@app.command()
def status(model: ModelOption, url: UrlOption = None) -> None:
    """What the warehouse holds for a model: files, rejected rows by reason, alerts."""
    from driftloop.core import warehouse
    from driftloop.report import format_summary, ingest_summary

    typer.echo(format_summary(ingest_summary(warehouse.resolve_url(url), model)))


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


# ---------------------------------------------------------------------------------------------- simulate


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a date YYYY-MM-DD, got {value!r}") from None


@app.command()
def simulate(
    model: ModelOption,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD, UTC).")],
    end: Annotated[str | None, typer.Option(help="Last day, inclusive (default: start).")] = None,
    landing: LandingOption = None,
    rows_per_hour: Annotated[int, typer.Option(min=0)] = 500,
    seed: int = 42,
    model_version: str = "1",
    faults: Annotated[bool, typer.Option(help="Also land the catalogue of bad inputs for each day.")] = False,
) -> None:
    """Write contract files (predictions, and the feedback that has arrived by now) for a date range."""
    from driftloop.core.settings import landing_root
    from driftloop.sim.faults import write_fault_files
    from driftloop.sim.world import Scenario
    from driftloop.sim.world import simulate as run_simulation

    spec = _spec(model)
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
    url: UrlOption = None,
) -> None:
    """Store a reference profile for a model version from simulated training data (until retraining
    stores real ones), and re-bin that version's stored profiles on its edges."""
    from driftloop.core import warehouse
    from driftloop.sim.examples import store_simulated_reference

    spec = _spec(model)
    resolved = warehouse.resolve_url(url)
    warehouse.migrate(resolved)
    profile_id = store_simulated_reference(
        resolved, spec, version, training_end=datetime.now(UTC) - timedelta(days=30), rows=rows, seed=seed
    )
    typer.echo(f"reference profile {profile_id} stored for {model} version {version}")


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
    rows_per_hour: Annotated[int, typer.Option(min=1)] = 200,
) -> None:
    """The whole story on the embedded warehouse: simulate, ingest with the real DAG, report."""
    from driftloop.sim.demo import run_demo

    run_demo(model, rows_per_hour=rows_per_hour)


@app.command("airflow-settings")
def airflow_settings(path: Annotated[Path, typer.Argument()] = Path("airflow_settings.yaml")) -> None:
    """Load connections, variables and pools from airflow_settings.yaml into the local Airflow."""
    from driftloop.airflow.settings_import import import_into_airflow

    import_into_airflow(path)
    typer.echo(f"imported {path}")


if __name__ == "__main__":
    app()
