"""Deployment configuration: docker-compose.yaml, Dockerfile and airflow_settings.yaml agree.

No Docker engine is needed: the compose file is parsed and checked the way Compose would resolve it
(merge keys, `${VAR:-default}` with an empty environment). One slow test really imports the settings
into a throwaway Airflow (SQLite metadata DB) with the Airflow CLI.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from fnmatch import fnmatch
from graphlib import CycleError, TopologicalSorter
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
if str(REPO / "include") not in sys.path:  # the package may not be pip-installed yet
    sys.path.insert(0, str(REPO / "include"))

from driftloop.airflow.settings_import import (  # noqa: E402
    AirflowImportError,
    AirflowSettings,
    SettingsError,
    export_for_cli,
    import_into_airflow,
    is_placeholder,
    load_settings,
    main,
    parse_settings,
)

COMPOSE_FILE = REPO / "docker-compose.yaml"
SETTINGS_FILE = REPO / "airflow_settings.yaml"
DOCKERFILE = REPO / "Dockerfile"

AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
]
EXPECTED_SERVICES = ["warehouse", "airflow-metadata", "redis", *AIRFLOW_SERVICES, "mlflow"]
LONG_RUNNING = [s for s in EXPECTED_SERVICES if s != "airflow-init"]
SETTINGS_IN_CONTAINER = "/opt/airflow/airflow_settings.yaml"

# ---------------------------------------------------------------------------------------------------
# Helpers: resolve the compose file like `docker compose config` would, without an environment.

_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose interpolation with every variable unset: `${X:-d}` -> d, `${X}` -> "", `$$` -> `$`."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            op = match.group("op") or ""
            if "?" in op:
                raise AssertionError(f"{match.group(0)} requires a variable to be set")
            return match.group("default") or ""

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # safe_load resolves anchors and `<<` merge keys
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw_compose)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def settings() -> AirflowSettings:
    return load_settings(SETTINGS_FILE)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_list(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def option(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} not in {cmd}"
    return cmd[cmd.index(name) + 1]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def volume_entries(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume, short or long syntax."""
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            yield str(vol.get("source", "")), str(vol["target"])
        else:
            parts = vol.split(":")
            if len(parts) == 1:  # anonymous volume
                yield "", parts[0]
            else:
                yield parts[0], parts[1]


def container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split(":")[-1].split("/")[0]))
    for entry in service.get("expose") or []:
        ports.add(int(str(entry).split("/")[0]))
    return ports


# ---------------------------------------------------------------------------------------------------
# docker-compose.yaml on its own


def test_compose_has_every_expected_service(services: dict[str, Any]) -> None:
    missing = [name for name in EXPECTED_SERVICES if name not in services]
    assert not missing, f"services missing from docker-compose.yaml: {missing}"


def test_airflow_services_share_the_common_block(compose: dict[str, Any], services: dict[str, Any]) -> None:
    common = compose["x-airflow-common"]
    common_env = env_of(common)
    assert common.get("build"), "x-airflow-common must build the project image (Dockerfile)"
    for name in AIRFLOW_SERVICES:
        service = services[name]
        for key in ("image", "build", "user", "volumes"):
            assert service.get(key) == common.get(key), f"{name}.{key} differs from x-airflow-common"
        env = env_of(service)
        differing = {k for k, v in common_env.items() if env.get(k) != v}
        assert not differing, f"{name} overrides shared environment: {sorted(differing)}"


def test_raw_file_uses_the_anchor(raw_compose: dict[str, Any]) -> None:
    # A copy-pasted block would drift; every Airflow service must be merged from the anchor.
    text = COMPOSE_FILE.read_text()
    assert "x-airflow-common: &airflow-common" in text
    blocks = re.split(r"\n  (?=[a-z][a-z0-9-]*:\n)", text.split("\nservices:\n", 1)[1])
    by_name = {block.split(":", 1)[0].strip(): block for block in blocks}
    for name in AIRFLOW_SERVICES:
        assert "<<: *airflow-common\n" in by_name[name], f"{name} does not merge *airflow-common"


def test_celery_executor_with_redis_broker_and_postgres_backend(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    env = env_of(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"

    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis"
    assert broker.hostname in services and services[broker.hostname]["image"].startswith("redis")
    assert (broker.port or 6379) in container_ports(services[broker.hostname])

    metadata_env = env_of(services["airflow-metadata"])
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        url = urlsplit(env[key])
        assert "postgresql" in url.scheme, f"{key} is not Postgres: {url.scheme}"
        assert url.hostname == "airflow-metadata", f"{key} points at {url.hostname}"
        assert (url.port or 5432) == 5432
        assert url.username == metadata_env["POSTGRES_USER"]
        assert url.password == metadata_env["POSTGRES_PASSWORD"]
        assert url.path.lstrip("/") == metadata_env["POSTGRES_DB"]


def test_airflow_environment(compose: dict[str, Any], services: dict[str, Any]) -> None:
    env = env_of(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["DRIFTLOOP_HOME"] == "/opt/airflow/.driftloop"

    # Airflow 3: task runners reach the Task Execution API on the api-server.
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver"
    assert api.port in container_ports(services["airflow-apiserver"])
    assert api.path == "/execution/"

    # Shared secrets come from the environment with placeholder defaults...
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["x-airflow-common"]["environment"]
    for key, var in [
        ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_FERNET_KEY"),
        ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET"),
        ("AIRFLOW__API__SECRET_KEY", "AIRFLOW_API_SECRET_KEY"),
    ]:
        assert raw[key].startswith("${" + var + ":-"), f"{key} must be ${{{var}:-placeholder}}"
        assert env[key], f"{key} has an empty default"
    # ...and the default Fernet key is a valid key (otherwise Airflow cannot store connections).
    from cryptography.fernet import Fernet

    Fernet(env["AIRFLOW__CORE__FERNET_KEY"])


def test_warehouse_comes_only_from_the_airflow_connection(services: dict[str, Any]) -> None:
    # One source of truth: the driftloop_warehouse connection in airflow_settings.yaml.
    assert "DRIFTLOOP_WAREHOUSE_URL" not in COMPOSE_FILE.read_text()
    for name, service in services.items():
        for key, value in env_of(service).items():
            assert not key.startswith("AIRFLOW_CONN_"), f"{name}: {key} would shadow airflow_settings.yaml"
            assert "@warehouse" not in value, f"{name}: {key} carries a warehouse URL"


def test_depends_on_names_existing_services_with_valid_conditions(services: dict[str, Any]) -> None:
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        deps = depends_on(service)
        graph[name] = set(deps)
        for dep, condition in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep} to be healthy: no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is one-shot: restart must be 'no'"
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"depends_on cycle: {exc.args[1]}")
    for name in AIRFLOW_SERVICES:
        if name != "airflow-init":
            assert depends_on(services[name]).get("airflow-init") == "service_completed_successfully"


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck") or {}
        assert check.get("test"), f"{name} has no healthcheck"


def test_volume_sources_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source, target in volume_entries(service):
            assert target.startswith("/"), f"{name}: volume target {target!r} is not absolute"
            if not source:
                continue
            if source.startswith((".", "/", "~")):
                if source.startswith("."):
                    path = (REPO / source).resolve()
                    assert path.exists(), f"{name}: volume source {source} does not exist in the repo"
            else:
                assert source in named, f"{name}: named volume {source!r} is not declared under volumes:"
    for config in (compose.get("configs") or {}).values():
        assert "content" in config or (REPO / config["file"]).exists()


def test_init_migrates_then_imports_the_settings(services: dict[str, Any]) -> None:
    init = services["airflow-init"]
    script = " ".join(command_list(init)) if isinstance(init["command"], str) else "\n".join(init["command"])
    migrate = script.find("airflow db migrate")
    imports = script.find(f"python -m driftloop.airflow.settings_import import {SETTINGS_IN_CONTAINER}")
    assert migrate >= 0 and imports > migrate, "airflow-init must run `airflow db migrate`, then the import"
    mounts = dict((target, source) for source, target in volume_entries(init))
    assert mounts.get(SETTINGS_IN_CONTAINER) == "./airflow_settings.yaml"


def test_dockerfile_matches_installed_airflow() -> None:
    text = DOCKERFILE.read_text()
    airflow_version = version("apache-airflow")
    assert re.search(rf"^FROM apache/airflow:{re.escape(airflow_version)}-python3\.11\s*$", text, re.M), (
        f"Dockerfile must build FROM apache/airflow:{airflow_version}-python3.11 (the version the lock pins)"
    )
    assert "requirements.lock" in text
    assert re.search(r"pip install[^\n]*-e ", text), "the project must be installed (pip install -e)"
    lock = (REPO / "requirements.lock").read_text()
    assert f"\napache-airflow=={airflow_version}\n" in lock


# ---------------------------------------------------------------------------------------------------
# airflow_settings.yaml against the compose services


def test_warehouse_connection_matches_the_warehouse_service(
    settings: AirflowSettings, services: dict[str, Any]
) -> None:
    conn = settings.connection("driftloop_warehouse")
    warehouse = services["warehouse"]
    env = env_of(warehouse)
    assert conn.conn_type == "postgres"
    assert conn.conn_host == "warehouse" and conn.conn_host in services
    assert conn.conn_port == 5432 and conn.conn_port in container_ports(warehouse)
    assert "PGPORT" not in env
    assert conn.conn_schema == env["POSTGRES_DB"]
    assert conn.conn_login == env["POSTGRES_USER"]
    assert conn.conn_password == env["POSTGRES_PASSWORD"]


def test_notification_connections_are_placeholders(settings: AirflowSettings) -> None:
    slack = settings.connection("driftloop_slack")
    pagerduty = settings.connection("driftloop_pagerduty")
    assert slack.conn_type == "slackwebhook"
    assert slack.conn_password and slack.conn_password.startswith("https://")
    assert pagerduty.conn_type == "pagerduty_events"
    assert is_placeholder(slack.conn_password) and is_placeholder(pagerduty.conn_password)
    assert not is_placeholder(settings.connection("driftloop_warehouse").conn_password)


def test_mlflow_variable_matches_the_mlflow_service(
    settings: AirflowSettings, compose: dict[str, Any], services: dict[str, Any]
) -> None:
    uri = settings.variable("driftloop_mlflow_tracking_uri")
    parsed = urlsplit(uri)
    mlflow = services["mlflow"]
    cmd = command_list(mlflow)
    assert parsed.hostname == "mlflow" and parsed.hostname in services
    assert parsed.port == int(option(cmd, "--port"))
    assert parsed.port in container_ports(mlflow)
    assert env_of(compose["x-airflow-common"])["MLFLOW_TRACKING_URI"] == uri

    # MLflow 3 rejects unknown Host headers: the one other containers send must be allowed
    # (same matching as mlflow.server.security_utils.is_allowed_host_header; the slow test uses it).
    allowed = [h.strip() for h in option(cmd, "--allowed-hosts").split(",")]
    assert any(fnmatch(parsed.netloc, pattern) for pattern in allowed), f"{parsed.netloc} not in {allowed}"
    assert any(fnmatch("localhost:5000", pattern) for pattern in allowed)

    # The backend store is Postgres on a service, in a database the init script creates.
    store = urlsplit(option(cmd, "--backend-store-uri"))
    assert store.scheme.startswith("postgresql") and store.hostname in services
    created = " ".join(c.get("content", "") for c in (compose.get("configs") or {}).values())
    assert f"CREATE DATABASE {store.path.lstrip('/')}" in created
    assert f"CREATE USER {store.username} WITH PASSWORD '{store.password}'" in created


@pytest.mark.slow
def test_mlflow_accepts_the_host_header_airflow_sends(
    settings: AirflowSettings, services: dict[str, Any]
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header  # imports mlflow: ~4 s

    allowed = [h.strip() for h in option(command_list(services["mlflow"]), "--allowed-hosts").split(",")]
    assert is_allowed_host_header(
        allowed, urlsplit(settings.variable("driftloop_mlflow_tracking_uri")).netloc
    )
    assert is_allowed_host_header(allowed, "localhost:5000")


def test_landing_variable_is_a_mounted_folder(settings: AirflowSettings, compose: dict[str, Any]) -> None:
    landing = settings.variable("driftloop_landing_root")
    targets = {target for _, target in volume_entries(compose["x-airflow-common"])}
    assert landing in targets, f"driftloop_landing_root {landing} is not a volume of the Airflow services"


def test_pools(settings: AirflowSettings) -> None:
    assert settings.pool("driftloop_training").pool_slot == 1
    assert settings.pool("driftloop_dbt").pool_slot == 2
    assert settings.pool("driftloop_training").pool_description


# ---------------------------------------------------------------------------------------------------
# driftloop.airflow.settings_import


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "airflow:\n  connections:\n    - {conn_id: a, conn_type: postgres, conn_port: abc}\n",
            r"airflow\.connections\[0\]\(a\)\.conn_port: .*integer.*'abc'",
        ),
        (
            "airflow:\n  connections:\n    - {conn_id: a, conn_type: postgres, conn_hostname: x}\n",
            r"airflow\.connections\[0\]\(a\)\.conn_hostname: unknown field",
        ),
        (
            "airflow:\n  connections:\n    - {conn_id: a}\n",
            r"airflow\.connections\[0\]\(a\)\.conn_type: field required",
        ),
        (
            "airflow:\n  connections:\n    - {conn_id: a, conn_type: http}\n    - {conn_id: a, conn_type: http}\n",
            r"airflow\.connections: .*duplicate conn_id 'a'",
        ),
        (
            "airflow:\n  connections:\n    - {conn_id: a, conn_type: http, conn_extra: '{not json'}\n",
            r"airflow\.connections\[0\]\(a\)\.conn_extra: .*not a JSON object",
        ),
        (
            "airflow:\n  pools:\n    - {pool_name: p, pool_slot: many}\n",
            r"airflow\.pools\[0\]\(p\)\.pool_slot",
        ),
        ("airflow:\n  variables:\n    - {variable_name: 'bad name', variable_value: x}\n", r"variable_name"),
        (
            "airflow:\n  variables:\n    - {variable_name: v}\n",
            r"airflow\.variables\[0\]\(v\)\.variable_value",
        ),
        ("airflow:\n  connections: [\n", r"not valid YAML"),
        ("- just\n- a list\n", r"\(top level\): expected a mapping"),
        ("airflw:\n  connections: []\n", r"airflw: unknown field"),
    ],
)
def test_load_settings_rejects_bad_files_naming_file_and_field(
    tmp_path: Path, body: str, expected: str
) -> None:
    path = tmp_path / "bad_settings.yaml"
    path.write_text(body)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(expected, message), message


def test_load_settings_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nope.yaml: cannot read"):
        load_settings(tmp_path / "nope.yaml")


def test_load_settings_accepts_astro_variants() -> None:
    raw = yaml.safe_load(
        """
airflow:
  connections:
    - conn_id: api
      conn_type: http
      conn_host: example.org
      conn_extra: '{"timeout": 5}'
      conn_password: 1234
    - conn_id:
      conn_type:
      conn_host:
  pools:
  variables:
    - variable_name: retries
      variable_value: 3
    - variable_name: enabled
      variable_value: true
"""
    )
    settings = parse_settings(raw, "inline.yaml")
    assert [c.conn_id for c in settings.connections] == ["api"]  # the blank template entry is skipped
    assert settings.connection("api").conn_extra == {"timeout": 5}
    assert settings.connection("api").conn_password == "1234"
    assert settings.pools == []
    assert settings.variables_json() == {"retries": "3", "enabled": "true"}
    assert parse_settings({"airflow": None}).connections == []


def test_export_for_cli_round_trips(tmp_path: Path, settings: AirflowSettings) -> None:
    files = export_for_cli(settings, tmp_path / "out")
    assert set(files) == {"connections", "variables", "pools"}

    connections = json.loads(files["connections"].read_text())
    assert set(connections) == {c.conn_id for c in settings.connections}
    fields = {"conn_type", "host", "port", "login", "password", "schema", "extra"}
    for conn in settings.connections:
        exported = connections[conn.conn_id]
        assert set(exported) == fields
        assert exported == {
            "conn_type": conn.conn_type,
            "host": conn.conn_host,
            "port": conn.conn_port,
            "login": conn.conn_login,
            "password": conn.conn_password,
            "schema": conn.conn_schema,
            "extra": conn.conn_extra or None,
        }
    assert stat.S_IMODE(files["connections"].stat().st_mode) == 0o600, "connections.json holds passwords"

    assert json.loads(files["variables"].read_text()) == {
        v.variable_name: v.variable_value for v in settings.variables
    }
    pools = json.loads(files["pools"].read_text())
    assert pools == {
        p.pool_name: {"slots": p.pool_slot, "description": p.pool_description, "include_deferred": False}
        for p in settings.pools
    }

    # Airflow's own file parsers (what `airflow connections|variables import` use) accept the files.
    from airflow.secrets.local_filesystem import load_connections_dict, load_variables

    parsed = load_connections_dict(str(files["connections"]))
    warehouse = settings.connection("driftloop_warehouse")
    airflow_conn = parsed["driftloop_warehouse"]
    assert (airflow_conn.conn_type, airflow_conn.host, airflow_conn.port, airflow_conn.schema) == (
        "postgres",
        warehouse.conn_host,
        warehouse.conn_port,
        warehouse.conn_schema,
    )
    assert airflow_conn.login == warehouse.conn_login and airflow_conn.password == warehouse.conn_password
    assert airflow_conn.extra_dejson == (warehouse.conn_extra or {})
    assert parsed["driftloop_slack"].password == settings.connection("driftloop_slack").conn_password
    assert load_variables(str(files["variables"])) == settings.variables_json()
    for entry in pools.values():  # the keys `airflow pools import` requires
        assert {"slots", "description"} <= set(entry)


def _fake_airflow(tmp_path: Path, script: str) -> str:
    path = tmp_path / "fake-airflow"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_import_raises_with_the_commands_stderr(tmp_path: Path) -> None:
    fake = _fake_airflow(tmp_path, 'echo "boom: metadata database unreachable" >&2\nexit 3\n')
    with pytest.raises(AirflowImportError) as info:
        import_into_airflow(SETTINGS_FILE, airflow_bin=fake)
    message = str(info.value)
    assert "connections import --overwrite" in message
    assert "exit code 3" in message and "boom: metadata database unreachable" in message


def test_import_catches_failures_reported_with_exit_code_0(tmp_path: Path) -> None:
    fake = _fake_airflow(
        tmp_path, 'echo "Could not import connection driftloop_slack: connection already exists."\n'
    )
    with pytest.raises(AirflowImportError, match="Could not import connection driftloop_slack"):
        import_into_airflow(SETTINGS_FILE, airflow_bin=fake)


def test_import_runs_the_three_imports_in_order(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    fake = _fake_airflow(tmp_path, f'echo "$1 $2 $3" >> {log}\n')
    settings = import_into_airflow(SETTINGS_FILE, airflow_bin=fake, env={"PATH": os.environ.get("PATH", "")})
    assert settings.source == SETTINGS_FILE
    calls = log.read_text().splitlines()
    assert calls[0] == "connections import --overwrite"
    assert calls[1] == "variables import --action-on-existing-key"
    assert re.fullmatch(r"pools import \S+/pools\.json", calls[2]), calls[2]


def test_main_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(SETTINGS_FILE)]) == 0
    assert "3 connection(s)" in capsys.readouterr().out
    bad = tmp_path / "s.yaml"
    bad.write_text("airflow:\n  pools:\n    - {pool_name: p}\n")
    assert main(["check", str(bad)]) == 1
    assert f"{bad}: airflow.pools[0](p).pool_slot: field required" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The real thing: import into a throwaway Airflow with the Airflow 3 CLI.


def _airflow(env: dict[str, str], *args: str) -> str:
    airflow = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _json_from(stdout: str) -> Any:
    line = next(line for line in stdout.splitlines() if line.startswith(("[", "{")))
    return json.loads(line)


@pytest.mark.slow
def test_import_into_a_real_airflow(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    dags = tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_HOME"
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "include"), os.environ.get("PYTHONPATH")])),
    )
    _airflow(env, "db", "migrate")

    settings = import_into_airflow(SETTINGS_FILE, env=env)
    warehouse = settings.connection("driftloop_warehouse")
    conn = _json_from(_airflow(env, "connections", "get", "driftloop_warehouse", "-o", "json"))[0]
    assert conn["conn_type"] == "postgres"
    assert (conn["host"], int(conn["port"]), conn["schema"], conn["login"]) == (
        warehouse.conn_host,
        warehouse.conn_port,
        warehouse.conn_schema,
        warehouse.conn_login,
    )
    landing = _airflow(env, "variables", "get", "driftloop_landing_root").strip().splitlines()[-1]
    assert landing == settings.variable("driftloop_landing_root")
    pool = _json_from(_airflow(env, "pools", "get", "driftloop_training", "-o", "json"))[0]
    assert int(pool["slots"]) == 1
    ids = {c["conn_id"] for c in _json_from(_airflow(env, "connections", "list", "-o", "json"))}
    assert ids == {c.conn_id for c in settings.connections}

    # Again with changed values, through `python -m` as airflow-init runs it: everything is overwritten.
    changed = SETTINGS_FILE.read_text().replace("conn_port: 5432", "conn_port: 6543")
    changed = changed.replace("variable_value: /opt/airflow/landing", "variable_value: /data/landing")
    changed = changed.replace("pool_slot: 1\n", "pool_slot: 3\n")
    changed_file = tmp_path / "airflow_settings.yaml"
    changed_file.write_text(changed)
    proc = subprocess.run(
        [sys.executable, "-m", "driftloop.airflow.settings_import", "import", str(changed_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Imported 3 connection(s)" in proc.stdout
    conn = _json_from(_airflow(env, "connections", "get", "driftloop_warehouse", "-o", "json"))[0]
    assert int(conn["port"]) == 6543
    assert (
        _airflow(env, "variables", "get", "driftloop_landing_root").strip().splitlines()[-1]
        == "/data/landing"
    )
    pool = _json_from(_airflow(env, "pools", "get", "driftloop_training", "-o", "json"))[0]
    assert int(pool["slots"]) == 3
