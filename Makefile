# driftloop — every command a newcomer needs. Everything installs from requirements.lock.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export DRIFTLOOP_HOME ?= $(CURDIR)/.driftloop
export PYTHONDONTWRITEBYTECODE := 1
# A plain local Airflow for the project (the demo and `make airflow-*` use it); compose has its own.
export AIRFLOW_HOME ?= $(DRIFTLOOP_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export DO_NOT_TRACK ?= 1
export GX_ANALYTICS_ENABLED ?= False

.PHONY: install demo demo-screenshot test test-unit test-fast test-clock-ahead lint lock warehouse-up migrate airflow-settings airflow airflow-ui bench bench-drift-reference lock-nannyml clean

$(BIN)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	# compiled bytecode: PYTHONDONTWRITEBYTECODE (set here and on many machines) would otherwise make every
	# process (each DAG parse, each Airflow task) compile Airflow from source again: 2-3x slower imports
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

install: $(BIN)/.installed ## create .venv, install the pinned lock

lock: ## re-resolve requirements.txt into requirements.lock
	$(BIN)/uv pip compile -q requirements.txt --override overrides.txt --python-version 3.11 -o requirements.lock

demo: install ## the closed loop on the embedded warehouse, one command
	$(BIN)/driftloop demo

demo-screenshot: ## the README's picture: reports/demo/index.html (after make demo) rendered by Debian's chromium
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,1900 \
		--screenshot=docs/images/demo_report.png file://$(CURDIR)/reports/demo/index.html

test: install ## lint, then the whole suite: unit, integration (real PostgreSQL), DAG and e2e tests
	$(BIN)/ruff check dags include tests benchmarks
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-fast: install ## the inner loop (a few minutes): unit and the quick integration tests, no DAG runs
	$(BIN)/python -m pytest -q -m "not slow" tests/unit tests/integration

# The whole suite with every process's clock a year ahead (the embedded PostgreSQL, dbt and Airflow's
# subprocesses too: libfaketime through LD_PRELOAD): a result that depends on the wall clock shows here.
CLOCK_AHEAD ?= +365d
test-clock-ahead: install ## the suite with the clock moved a year ahead (CLOCK_AHEAD=+730d, ... to change it)
	eval "$$($(BIN)/python-libfaketime)" && FAKETIME="$(CLOCK_AHEAD)" $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check dags include tests benchmarks

warehouse-up: install ## start the embedded warehouse (or check DRIFTLOOP_WAREHOUSE_URL) and print its URL
	$(BIN)/driftloop warehouse up

migrate: install
	$(BIN)/driftloop warehouse migrate

airflow-settings: install ## load airflow_settings.yaml (connections, variables, pools) into $$AIRFLOW_HOME
	$(BIN)/airflow db migrate >/dev/null
	$(BIN)/python -m driftloop.airflow.settings_import import airflow_settings.yaml

# Airflow 3 standalone (api-server, scheduler, dag-processor, triggerer; LocalExecutor) on the demo's Airflow
# home and warehouse, airflow_settings.yaml loaded (local flavour), small-machine settings
# (driftloop/airflow/standalone.py, README "Airflow"); prints the URL and the admin password.
airflow: install ## Airflow for the project on http://localhost:8080 (Ctrl-C stops it)
	$(BIN)/python -m driftloop.airflow.standalone

airflow-ui: airflow

# BENCH_SCALE (0.01-1) shrinks every size for a quick run; 1 is the real one (hours on 2 cores).
BENCH_SCALE ?= 1
bench: install ## every benchmark figure in one run, one table: driftloop vs its baseline, goal, verdict, peak RSS
	BENCH_SCALE=$(BENCH_SCALE) $(BIN)/python benchmarks/bench.py

# NannyML lives in its own environment: every release conflicts with the project's pins (see
# benchmarks/nannyml-requirements.txt); the benchmark runs it as a subprocess.
NANNYML_VENV ?= .venv-nannyml

$(NANNYML_VENV)/.installed: benchmarks/nannyml.lock $(BIN)/.installed
	test -x $(NANNYML_VENV)/bin/python || $(BIN)/uv venv -q --python $(PYTHON) $(NANNYML_VENV)
	$(BIN)/uv pip sync -q --python $(NANNYML_VENV)/bin/python benchmarks/nannyml.lock
	touch $@

lock-nannyml: install ## re-resolve benchmarks/nannyml-requirements.txt into benchmarks/nannyml.lock
	$(BIN)/uv pip compile -q benchmarks/nannyml-requirements.txt --python-version 3.11 -o benchmarks/nannyml.lock

bench-drift-reference: install $(NANNYML_VENV)/.installed ## driftloop's drift calls next to NannyML's on its synthetic dataset
	$(BIN)/python benchmarks/drift_reference.py --nannyml-python $(NANNYML_VENV)/bin/python

clean:
	-$(BIN)/driftloop warehouse down 2>/dev/null
	rm -rf $(VENV) $(NANNYML_VENV) .driftloop
