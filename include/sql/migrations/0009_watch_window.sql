-- After a promotion the new champion is watched for a while and rolled back if it degrades; the
-- watch belongs to the experiment that promoted it. At most one experiment per model is running or
-- watching at a time (start_experiment also refuses to start during a watch).
alter table ops.experiments
    add column watch_status   text check (watch_status in ('watching', 'passed', 'rolled_back', 'superseded')),
    add column watch_ends_at  timestamptz,
    add check (watch_status is null or status in ('promoted', 'rolled_back')),
    add check ((watch_status = 'watching') <= (watch_ends_at is not null));
create unique index experiments_one_watching on ops.experiments (model_name) where watch_status = 'watching';
