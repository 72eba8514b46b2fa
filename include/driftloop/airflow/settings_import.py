"""Load `airflow_settings.yaml` (Astro CLI format) and put it into a plain Airflow.

The Astro CLI reads `airflow_settings.yaml` itself; plain Airflow (the compose stack, `make`, CI) does
not. This module validates the file, converts it to the JSON files that the Airflow 3.3 CLI imports,
and runs those imports:

    airflow connections import --overwrite connections.json   # {conn_id: {conn_type, host, ...}}
    airflow variables import variables.json                    # {key: value}; overwrites by default
    airflow pools import pools.json                            # {name: {slots, description, ...}}

All three are idempotent (pools are created or updated, variables overwrite by default).

Usage: `python -m driftloop.airflow.settings_import import [airflow_settings.yaml]`
       `python -m driftloop.airflow.settings_import export [airflow_settings.yaml] --out DIR`
       `python -m driftloop.airflow.settings_import check [airflow_settings.yaml]`

Nothing here imports Airflow: the CLI is run in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

DEFAULT_SETTINGS_FILE = "airflow_settings.yaml"
SETTINGS_ENV = "DRIFTLOOP_AIRFLOW_SETTINGS"

# Secrets in the repository are placeholders containing this marker. Code that sends notifications
# can call `is_placeholder()` and treat such a connection as "not configured" (outbox + log only).
PLACEHOLDER_MARKER = "driftloop-placeholder"

_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")  # what Airflow's helpers.validate_key accepts


class SettingsError(ValueError):
    """A bad settings file; the message names the file and the field."""


class AirflowImportError(RuntimeError):
    """An `airflow ... import` command failed; the message carries the command and its output."""


def is_placeholder(value: str | None) -> bool:
    """True when a secret is the repository's placeholder rather than a real value."""
    return bool(value) and PLACEHOLDER_MARKER in str(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class ConnectionSetting(_Strict):
    """One entry of `airflow.connections` (Astro CLI field names)."""

    conn_id: str = Field(min_length=1, max_length=200)
    conn_type: str = Field(min_length=1)
    conn_host: str | None = None
    conn_schema: str | None = None
    conn_login: str | None = None
    conn_password: str | None = None
    conn_port: int | None = Field(default=None, ge=1, le=65535)
    conn_extra: dict[str, Any] | None = None

    @field_validator("conn_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _ID_PATTERN.match(value):
            raise ValueError("only letters, digits, '_', '.' and '-' are allowed")
        return value

    @field_validator("conn_host", "conn_schema", "conn_login", "conn_password", mode="before")
    @classmethod
    def _scalar_to_str(cls, value: Any) -> Any:
        # YAML turns `conn_password: 1234` into an int; Airflow stores strings.
        if isinstance(value, bool):
            raise ValueError("expected a string, got a boolean")
        if isinstance(value, int | float):
            return str(value)
        if value == "":
            return None
        return value

    @field_validator("conn_extra", mode="before")
    @classmethod
    def _extra_from_json(cls, value: Any) -> Any:
        # Astro accepts conn_extra as a YAML mapping or as a JSON string.
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc.msg}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {type(value).__name__}")
        return value

    def to_airflow(self) -> dict[str, Any]:
        """The value `airflow connections import` expects for this conn_id."""
        return {
            "conn_type": self.conn_type,
            "host": self.conn_host,
            "port": self.conn_port,
            "login": self.conn_login,
            "password": self.conn_password,
            "schema": self.conn_schema,
            "extra": dict(self.conn_extra) if self.conn_extra else None,
        }


class VariableSetting(_Strict):
    """One entry of `airflow.variables`."""

    variable_name: str = Field(min_length=1, max_length=250)
    variable_value: str

    @field_validator("variable_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _ID_PATTERN.match(value):
            raise ValueError("only letters, digits, '_', '.' and '-' are allowed")
        return value

    @field_validator("variable_value", mode="before")
    @classmethod
    def _scalar_to_str(cls, value: Any) -> Any:
        # Astro stores every value as a string; keep the same meaning for `5` or `true`.
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        if value is None:
            raise ValueError('a value is required (use "" for an empty string)')
        return value


class PoolSetting(_Strict):
    """One entry of `airflow.pools`."""

    pool_name: str = Field(min_length=1, max_length=256)
    pool_slot: int = Field(ge=-1, description="-1 means unlimited")
    pool_description: str = ""

    @field_validator("pool_description", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    def to_airflow(self) -> dict[str, Any]:
        """The value `airflow pools import` expects for this pool (slots and description are required)."""
        return {"slots": self.pool_slot, "description": self.pool_description, "include_deferred": False}


def _unique(items: Sequence[BaseModel], key: str) -> None:
    seen: set[str] = set()
    for item in items:
        value = getattr(item, key)
        if value in seen:
            raise ValueError(f"duplicate {key} {value!r}")
        seen.add(value)


class AirflowSection(_Strict):
    connections: list[ConnectionSetting] = Field(default_factory=list)
    variables: list[VariableSetting] = Field(default_factory=list)
    pools: list[PoolSetting] = Field(default_factory=list)

    @field_validator("connections", "variables", "pools", mode="before")
    @classmethod
    def _drop_blank_entries(cls, value: Any) -> Any:
        # `connections:` with nothing under it, and the Astro template's all-empty entries, mean "none".
        if value is None:
            return []
        if isinstance(value, list):
            return [
                item
                for item in value
                if not (isinstance(item, dict) and all(v is None or v == "" for v in item.values()))
            ]
        return value

    @field_validator("connections", "variables", "pools", mode="after")
    @classmethod
    def _ids_unique(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        key = {"connections": "conn_id", "variables": "variable_name", "pools": "pool_name"}[info.field_name]
        _unique(value, key)
        return value


class AirflowSettings(_Strict):
    """The whole file: `airflow: {connections, variables, pools}`."""

    airflow: AirflowSection = Field(default_factory=AirflowSection)
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file these settings were loaded from, if any."""
        return self._source

    @property
    def connections(self) -> list[ConnectionSetting]:
        return self.airflow.connections

    @property
    def variables(self) -> list[VariableSetting]:
        return self.airflow.variables

    @property
    def pools(self) -> list[PoolSetting]:
        return self.airflow.pools

    def connection(self, conn_id: str) -> ConnectionSetting:
        for conn in self.connections:
            if conn.conn_id == conn_id:
                return conn
        raise KeyError(f"no connection {conn_id!r} in {self.source or 'the settings'}")

    def variable(self, name: str) -> str:
        for var in self.variables:
            if var.variable_name == name:
                return var.variable_value
        raise KeyError(f"no variable {name!r} in {self.source or 'the settings'}")

    def pool(self, name: str) -> PoolSetting:
        for pool in self.pools:
            if pool.pool_name == name:
                return pool
        raise KeyError(f"no pool {name!r} in {self.source or 'the settings'}")

    def connections_json(self) -> dict[str, dict[str, Any]]:
        return {conn.conn_id: conn.to_airflow() for conn in self.connections}

    def variables_json(self) -> dict[str, str]:
        return {var.variable_name: var.variable_value for var in self.variables}

    def pools_json(self) -> dict[str, dict[str, Any]]:
        return {pool.pool_name: pool.to_airflow() for pool in self.pools}


def _describe(raw: Any, error: Mapping[str, Any]) -> str:
    """`airflow.connections[1](driftloop_slack).conn_port: <message> (got 'abc')`."""
    parts: list[str] = []
    node: Any = raw
    for part in error["loc"]:
        if isinstance(part, int):
            label = f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict):
                ident = node.get("conn_id") or node.get("variable_name") or node.get("pool_name")
                if ident:
                    label += f"({ident})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(part))
            node = node.get(part) if isinstance(node, dict) else None
    location = "".join(parts) or "(top level)"
    message = error["msg"]
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        message = str(error["ctx"]["error"])
    elif error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling against the Astro CLI format)"
    elif error["type"] == "missing":
        message = "field required"
    got = error.get("input")
    quiet = error["type"] in ("missing", "extra_forbidden") or isinstance(got, dict | list)
    shown = "" if quiet else f" (got {got!r})"
    return f"{location}: {message}{shown}"


def parse_settings(raw: Any, source: str | Path = "<settings>") -> AirflowSettings:
    """Validate an already-loaded YAML document; errors name `source` and the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(
            f"{source}: (top level): expected a mapping with an 'airflow' key, got {type(raw).__name__}"
        )
    if "airflow" in raw and raw["airflow"] is None:
        raw = {**raw, "airflow": {}}
    try:
        settings = AirflowSettings.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(_describe(raw, error) for error in exc.errors())
        raise SettingsError(f"{source}: {details}") from None
    settings._source = Path(source)
    return settings


def load_settings(path: str | os.PathLike[str] | None = None) -> AirflowSettings:
    """Read and validate an `airflow_settings.yaml` (Astro CLI format)."""
    path = Path(path) if path is not None else default_settings_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read settings file: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    return parse_settings(raw, path)


def default_settings_path() -> Path:
    """`$DRIFTLOOP_AIRFLOW_SETTINGS`, else `./airflow_settings.yaml`."""
    return Path(os.environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS_FILE)


def _write_json(path: Path, payload: Any, *, private: bool = False) -> None:
    if private:
        # connections.json carries passwords: never world-readable, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
    else:
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def export_for_cli(settings: AirflowSettings, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write connections.json, variables.json and pools.json in the formats the Airflow CLI imports.

    Returns {"connections": path, "variables": path, "pools": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "connections": out / "connections.json",
        "variables": out / "variables.json",
        "pools": out / "pools.json",
    }
    _write_json(paths["connections"], settings.connections_json(), private=True)
    _write_json(paths["variables"], settings.variables_json())
    _write_json(paths["pools"], settings.pools_json())
    return paths


def resolve_airflow_bin(airflow_bin: str = "airflow") -> str:
    """A bare name is looked up next to the running interpreter first (the venv), then on PATH."""
    if os.sep in airflow_bin or (os.altsep and os.altsep in airflow_bin):
        return airflow_bin
    beside_python = Path(sys.executable).parent / airflow_bin
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(airflow_bin)
    if found is None:
        raise AirflowImportError(
            f"cannot find the '{airflow_bin}' command next to {sys.executable} or on PATH; "
            "install Airflow (make install) or pass airflow_bin"
        )
    return found


def _run(cmd: list[str], env: Mapping[str, str] | None, timeout: float) -> str:
    try:
        proc = subprocess.run(
            cmd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AirflowImportError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise AirflowImportError(f"`{' '.join(cmd)}` could not start: {exc}") from exc
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        raise AirflowImportError(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{(proc.stderr or proc.stdout).strip()}"
        )
    # Two imports exit 0 although something was not imported: catch that here.
    problems = [
        line.strip()
        for line in output.splitlines()
        if "Could not import connection" in line
        or "variable(s) failed to be updated" in line
        or "Variable import failed" in line
    ]
    if problems:
        raise AirflowImportError(f"`{' '.join(cmd)}` reported failures:\n" + "\n".join(problems))
    return proc.stdout


def import_into_airflow(
    settings_path: str | os.PathLike[str] | None = None,
    airflow_bin: str = "airflow",
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 300.0,
) -> AirflowSettings:
    """Validate the settings file and import it with the Airflow CLI (connections, variables, pools).

    `env` is the complete environment of the `airflow` commands (AIRFLOW_HOME, the metadata DB, ...);
    None inherits this process's environment. Existing connections, variables and pools with the same
    ids are overwritten, so running it again is safe. Raises `AirflowImportError` with the failing
    command and its stderr.
    """
    settings = load_settings(settings_path)
    airflow = resolve_airflow_bin(airflow_bin)
    with tempfile.TemporaryDirectory(prefix="driftloop-airflow-settings-") as tmp:
        files = export_for_cli(settings, tmp)
        if settings.connections:
            _run([airflow, "connections", "import", "--overwrite", str(files["connections"])], env, timeout)
        if settings.variables:
            _run(
                [
                    airflow,
                    "variables",
                    "import",
                    "--action-on-existing-key",
                    "overwrite",
                    str(files["variables"]),
                ],
                env,
                timeout,
            )
        if settings.pools:
            _run([airflow, "pools", "import", str(files["pools"])], env, timeout)
    return settings


def _summary(settings: AirflowSettings) -> str:
    return (
        f"{len(settings.connections)} connection(s) ({', '.join(c.conn_id for c in settings.connections) or '-'}), "
        f"{len(settings.variables)} variable(s), {len(settings.pools)} pool(s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m driftloop.airflow.settings_import",
        description="Validate airflow_settings.yaml (Astro CLI format) and import it into plain Airflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_import = sub.add_parser("import", help="import connections, variables and pools with the airflow CLI")
    p_import.add_argument(
        "path", nargs="?", default=None, help=f"default: ${SETTINGS_ENV} or ./{DEFAULT_SETTINGS_FILE}"
    )
    p_import.add_argument(
        "--airflow-bin", default="airflow", help="the airflow executable (default: next to python)"
    )
    p_export = sub.add_parser("export", help="write connections.json, variables.json, pools.json")
    p_export.add_argument("path", nargs="?", default=None)
    p_export.add_argument("--out", required=True, help="output folder")
    p_check = sub.add_parser("check", help="validate the file only")
    p_check.add_argument("path", nargs="?", default=None)
    args = parser.parse_args(argv)

    try:
        if args.command == "import":
            settings = import_into_airflow(args.path, airflow_bin=args.airflow_bin)
            print(f"Imported {_summary(settings)} from {settings.source}")
        elif args.command == "export":
            settings = load_settings(args.path)
            for kind, path in export_for_cli(settings, args.out).items():
                print(f"{kind}: {path}")
        else:
            settings = load_settings(args.path)
            print(f"OK {settings.source}: {_summary(settings)}")
    except (SettingsError, AirflowImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
