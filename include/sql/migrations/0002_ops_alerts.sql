-- Alert outbox: every alert is written here first (deduplicated), then delivered to Slack or
-- PagerDuty by the notifier; with no channel configured it stays here and in the log, never lost.
create table ops.alerts (
    alert_id    bigserial primary key,
    dedup_key   text not null unique,
    model_name  text,
    source      text not null,                    -- ingest, monitor, retrain, promote, ...
    severity    text not null check (severity in ('info', 'warning', 'critical')),
    summary     text not null,
    details     jsonb not null default '{}'::jsonb,
    status      text not null default 'pending' check (status in ('pending', 'sent', 'failed', 'resolved')),
    attempts    integer not null default 0,
    last_error  text,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    sent_at     timestamptz
);
create index alerts_pending on ops.alerts (status, created_at) where status in ('pending', 'failed');
