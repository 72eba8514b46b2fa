-- Alerting: ops.alerts becomes one row per alert (an incident), and ops.alert_deliveries the outbox of
-- what is sent about it where (a Slack message, a PagerDuty event, a line of the daily digest).
--
-- An alert raised by a rule (monitor__<model>) is 'firing' while its condition holds: one per
-- dedup_key (model, rule, segment) at a time; repeated evaluations update it (count, latest value,
-- last seen) and it is 'resolved' when the condition has been clear for the rule's windows. An alert
-- raised by an event (a file that failed, a training that failed, a decision) is 'notified': it has
-- nothing to resolve, and its dedup_key fires once.

alter table ops.alerts drop constraint alerts_dedup_key_key;
alter table ops.alerts drop constraint alerts_status_check;
drop index if exists ops.alerts_pending;

update ops.alerts set status = 'notified';  -- nothing was ever delivered before this migration

alter table ops.alerts
    alter column status set default 'notified',
    add constraint alerts_status_check check (status in ('firing', 'notified', 'resolved')),
    add column rule_name        text,
    add column segment          text,
    add column window_size      text,
    add column window_start     timestamptz,
    add column latest_value     jsonb,
    add column threshold        jsonb,
    add column n_evaluations    integer not null default 1,   -- evaluations in which the condition held
    add column clear_windows    integer not null default 0,   -- consecutive clear windows since it last held
    add column clear_window_start timestamptz,                -- the last window counted clear
    add column first_seen_at    timestamptz,
    add column last_seen_at     timestamptz,
    add column resolved_at      timestamptz,
    add column resolved_by      text,
    add column routes           text[] not null default '{}';

update ops.alerts set first_seen_at = created_at, last_seen_at = created_at;
alter table ops.alerts alter column first_seen_at set not null, alter column last_seen_at set not null;

-- one live alert per key: a firing condition, or an event that fired (events fire once)
create unique index alerts_live_dedup_key on ops.alerts (dedup_key) where status in ('firing', 'notified');
create index alerts_by_model on ops.alerts (model_name, status, last_seen_at desc);

-- The outbox: one row per message to send. Delivered once: 'sending' is committed before the provider
-- is called and 'sent' (with the provider's ids) right after it answers; a row found 'sending' by the
-- next run belonged to a run that died in between, and is reconciled instead of blindly sent again
-- (driftloop.core.notify).
create table ops.alert_deliveries (
    delivery_id      bigserial primary key,
    alert_id         bigint not null references ops.alerts (alert_id),
    event            text not null check (event in ('trigger', 'update', 'resolve')),
    channel          text not null check (channel in ('slack', 'pagerduty', 'digest')),
    status           text not null default 'pending'
        check (status in ('pending', 'sending', 'sent', 'failed', 'unconfirmed', 'skipped')),
    attempts         integer not null default 0,
    last_error       text,
    next_attempt_at  timestamptz not null default now(),
    provider_ref     jsonb not null default '{}'::jsonb,      -- Slack channel / ts / thread_ts; PagerDuty dedup_key
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    sent_at          timestamptz
);
create index alert_deliveries_due on ops.alert_deliveries (next_attempt_at, delivery_id)
    where status in ('pending', 'sending', 'failed');
create index alert_deliveries_by_alert on ops.alert_deliveries (alert_id, channel, delivery_id);

-- A person who is on it: no new alert (nor message) for the rule until `until`.
create table ops.alert_silences (
    silence_id  bigserial primary key,
    model_name  text not null,
    rule_name   text not null,
    until       timestamptz not null,
    reason      text,
    created_at  timestamptz not null default now()
);
create index alert_silences_active on ops.alert_silences (model_name, rule_name, until);
