-- Retraining: one row per training attempt (a retrain__<model> run, a manual retrain, a bootstrap),
-- and the warehouse's mirror of the registry aliases, so dbt (retrain_signals) and analysts can see
-- when a model was last trained, on what, with which holdout numbers, and which version serves.
create table ops.retrain_runs (
    retrain_run_id      bigint generated always as identity primary key,
    model_name          text not null,
    -- who asked: "<dag_id>/<run_id>" for Airflow (a retried task finds its own row), "cli/<uuid>", ...
    run_key             text not null unique,
    trigger             text not null,                  -- volume, degradation, drift, schedule, manual, bootstrap
    reason              text not null,                  -- one sentence a person can read
    evidence            jsonb not null default '{}'::jsonb,
    status              text not null check (status in ('running', 'succeeded', 'failed')),
    attempts            integer not null default 1,
    started_at          timestamptz not null default now(),
    finished_at         timestamptz,
    error               text,
    -- the data (time-based split: train < validation < holdout on request_ts)
    data_source         text,                           -- warehouse, simulated, ...
    data_start          timestamptz,                    -- request_ts range of the rows used
    data_end            timestamptz,
    labels_loaded_until timestamptz,                    -- newest feedback loaded_at seen: later labels are "new"
    data_hash           text,                           -- sha256 of the training frame (ids, features, labels)
    n_train             integer,
    n_validation        integer,
    n_holdout           integer,
    holdout_start       timestamptz,                    -- the promotion gate scores both models on this range
    holdout_end         timestamptz,
    -- the result
    candidate           text,                           -- the winner: lightgbm, logistic_regression, ...
    metrics             jsonb,                          -- {"validation": {...}, "holdout": {...}, "candidates": {...}}
    feature_importance  jsonb,                          -- {"gain": {feature: share}, "permutation": {feature: drop}}
    mlflow_run_id       text,
    model_version       text,                           -- registry version created by this run
    alias               text,                           -- challenger (retrain) or champion (bootstrap)
    check (status <> 'succeeded' or (model_version is not null and finished_at is not null)),
    check (status <> 'failed' or error is not null)
);
-- At most one training per model at a time, whatever triggers it: the second one to start is refused.
create unique index retrain_runs_one_running on ops.retrain_runs (model_name) where status = 'running';
create index retrain_runs_model_started on ops.retrain_runs (model_name, started_at desc);

-- The registry's aliases as driftloop last set them (MLflow stays the source of truth for serving).
create table ops.model_aliases (
    model_name      text not null,
    alias           text not null,                      -- champion, challenger
    model_version   text not null,
    retrain_run_id  bigint references ops.retrain_runs (retrain_run_id),
    updated_at      timestamptz not null default now(),
    primary key (model_name, alias)
);
