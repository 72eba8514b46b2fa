-- Online experiments (champion vs challenger on live traffic), what serving reads, and the audit
-- trail of every automated decision.
create table ops.experiments (
    experiment_id       text primary key,               -- written into every prediction event it serves
    model_name          text not null,
    champion_version    text not null,
    challenger_version  text not null,
    strategy            text not null check (strategy in ('canary', 'thompson', 'epsilon_greedy')),
    status              text not null check (status in ('running', 'promoted', 'rejected', 'halted', 'inconclusive', 'rolled_back')),
    policy              jsonb not null default '{}'::jsonb,
    retrain_run_id      bigint references ops.retrain_runs (retrain_run_id),
    started_at          timestamptz not null default now(),
    ended_at            timestamptz,
    check ((status = 'running') = (ended_at is null))
);
-- At most one running experiment per model, enforced here rather than by luck.
create unique index experiments_one_running on ops.experiments (model_name) where status = 'running';

-- What serving reads: which versions serve a model and the challenger's share of the units.
create table ops.traffic_allocation (
    model_name          text primary key,
    experiment_id       text references ops.experiments (experiment_id),
    champion_version    text not null,
    challenger_version  text,
    challenger_share    double precision not null check (challenger_share >= 0 and challenger_share <= 1),
    updated_at          timestamptz not null default now(),
    check (challenger_version is not null or challenger_share = 0)
);

-- Every automated decision with its evidence (numbers and thresholds): the audit trail.
create table ops.decisions (
    decision_id     bigint generated always as identity primary key,
    model_name      text not null,
    experiment_id   text references ops.experiments (experiment_id),
    step            text not null,                      -- offline_gate, srm, guardrails, ramp, sequential_test, promote, reject, rollback
    decision        text not null,
    reason          text not null,
    evidence        jsonb not null default '{}'::jsonb,
    airflow_run_id  text,
    decided_at      timestamptz not null default now()
);
create index decisions_experiment on ops.decisions (experiment_id, decided_at);
