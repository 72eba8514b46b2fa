-- Raw layer: what the ingest DAG loads. Written with COPY only; one manifest row per landed file.
create schema if not exists raw;
create schema if not exists ops;

create table raw.ingest_files (
    file_id       bigserial primary key,
    model_name    text not null,
    kind          text not null check (kind in ('predictions', 'feedback')),
    path          text not null unique,
    size_bytes    bigint not null,
    checksum      text not null,                  -- sha256 of the bytes as landed
    status        text not null check (status in ('loaded', 'empty', 'duplicate', 'failed')),
    rows_loaded   integer not null default 0,
    rows_rejected integer not null default 0,
    error         text,                           -- why a file failed / what it duplicates
    duplicate_of  bigint references raw.ingest_files (file_id),
    min_event_ts  timestamptz,
    max_event_ts  timestamptz,
    run_id        text,                           -- Airflow run id or 'cli'
    loaded_at     timestamptz not null default now()
);
-- The same content is loaded once, whatever its file name.
create unique index ingest_files_content_loaded_once
    on raw.ingest_files (model_name, kind, checksum) where status = 'loaded';
create index ingest_files_model_kind on raw.ingest_files (model_name, kind, loaded_at);

create table raw.predictions (
    model_name    text not null,
    prediction_id text not null,
    model_version text not null,
    variant       text not null,
    experiment_id text,
    unit_id       text,
    request_ts    timestamptz not null,
    latency_ms    double precision not null check (latency_ms >= 0),
    event         jsonb not null,                 -- the event exactly as landed (features live here)
    -- prediction and scores may be null only for a failed request (error set)
    prediction    text,
    scores        jsonb,                          -- class -> probability, always the full object
    score         double precision,               -- positive-class probability (binary models)
    segment       text,
    error         text,
    file_id       bigint not null,
    line_number   integer not null,
    loaded_at     timestamptz not null default now(),
    check (error is not null or (prediction is not null and scores is not null))
) partition by range (request_ts);
create index predictions_model_ts on raw.predictions (model_name, request_ts);

-- prediction_id is unique per model across all days; a partitioned table cannot enforce that
-- (its keys must contain request_ts), so this small table does. It also lets feedback find the
-- request_ts of its prediction without scanning partitions.
create table raw.prediction_keys (
    model_name    text not null,
    prediction_id text not null,
    request_ts    timestamptz not null,
    file_id       bigint not null,
    line_number   integer not null,
    primary key (model_name, prediction_id)
);

create table raw.feedback (
    model_name    text not null,
    prediction_id text not null,
    label         text not null,
    outcome       double precision,
    feedback_ts   timestamptz not null,
    source        text not null,
    event         jsonb not null,                 -- the event exactly as landed
    file_id       bigint not null,
    line_number   integer not null,
    loaded_at     timestamptz not null default now(),
    -- a later label for the same prediction is a correction and is kept; an exact repeat is a duplicate
    primary key (model_name, prediction_id, feedback_ts)
);

create table raw.rejected_records (
    rejected_id  bigserial primary key,
    model_name   text not null,
    kind         text not null check (kind in ('predictions', 'feedback')),
    file_id      bigint not null references raw.ingest_files (file_id),
    path         text not null,
    line_number  integer not null,                -- 1-based line (JSON lines) or row (Parquet)
    payload      text not null,                   -- the original line, as landed
    reason       text not null,                   -- one sentence a person understands
    reasons      jsonb not null,                  -- [{"field", "rule", "message"}, ...]
    rejected_at  timestamptz not null default now(),
    unique (file_id, line_number)
);
create index rejected_records_model on raw.rejected_records (model_name, rejected_at);

-- Feedback whose prediction has not arrived (yet); it joins as soon as the prediction is loaded.
create view raw.feedback_awaiting_prediction as
select feedback.*
from raw.feedback as feedback
where not exists (
    select 1 from raw.prediction_keys as keys
    where keys.model_name = feedback.model_name and keys.prediction_id = feedback.prediction_id
);

-- Daily partitions of raw.predictions (UTC days), created on demand by ingestion.
create function raw.ensure_predictions_partition(day date) returns text
language plpgsql as $$
declare
    partition_name text := 'predictions_' || to_char(day, 'YYYYMMDD');
begin
    if to_regclass(format('raw.%I', partition_name)) is not null then
        return partition_name;
    end if;
    -- serialize creators: two loaders may need the same new day at once
    perform pg_advisory_xact_lock(hashtext('raw.predictions partitions'));
    if to_regclass(format('raw.%I', partition_name)) is null then
        execute format(
            'create table raw.%I partition of raw.predictions for values from (%L) to (%L)',
            partition_name,
            (day::timestamp at time zone 'UTC'),
            ((day + 1)::timestamp at time zone 'UTC')
        );
    end if;
    return partition_name;
end;
$$;
