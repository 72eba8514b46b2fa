-- How far a consumer has read a producer's output (e.g. profiling: raw files loaded up to loaded_at).
-- Written after the consumer's work commits, so a crash means the work is redone (it is idempotent).
create table ops.watermarks (
    name        text primary key,                 -- e.g. 'profile:churn'
    value       timestamptz not null,
    updated_at  timestamptz not null default now()
);
