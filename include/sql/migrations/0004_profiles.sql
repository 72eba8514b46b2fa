-- Profiles layer: what the profiling DAG writes (driftloop.profiling). Kept forever: drift history never
-- depends on raw rows, which may be dropped after their retention period.
--
-- One whylogs profile per closed window x model_version x variant x segment ('(all)' = the whole
-- traffic of the window, '(null)' = rows without a segment), hourly and daily (daily = the merge of the
-- stored hourly profiles), plus one reference profile per model version (its training data). Each
-- profile is flattened into column_summaries (one row per column) and column_bins (one row per bin of a
-- column, on the bin edges of the reference of the window's model_version), which the dbt drift marts read.
-- Rewriting a window deletes its profile row; summaries and bins go with it (on delete cascade).
create schema if not exists profiles;

create table profiles.whylogs_profiles (
    profile_id     bigserial primary key,
    model_name     text not null,
    model_version  text not null,
    variant        text not null,                  -- '(all)' for a reference
    segment        text not null,                  -- a segment value, '(null)', or '(all)'
    window_size    text not null check (window_size in ('hour', 'day', 'reference')),
    window_start   timestamptz,                    -- reference: the training data's time range, if known
    window_end     timestamptz,
    n_rows         bigint not null check (n_rows >= 0),
    profile        bytea not null,                 -- whylogs DatasetProfileView.serialize()
    created_at     timestamptz not null default now(),
    check (window_size = 'reference' or (window_start is not null and window_end > window_start)),
    check (window_size <> 'reference' or (variant = '(all)' and segment = '(all)'))
);
-- The grain: one profile per window x version x variant x segment, and one reference per model version.
create unique index whylogs_profiles_window_grain
    on profiles.whylogs_profiles (model_name, model_version, variant, segment, window_size, window_start)
    where window_size <> 'reference';
create unique index whylogs_profiles_reference_grain
    on profiles.whylogs_profiles (model_name, model_version)
    where window_size = 'reference';
create index whylogs_profiles_model_window on profiles.whylogs_profiles (model_name, window_size, window_start);

-- The reference of a model version: its profile (above) and the bin edges every window of that version
-- is binned on. bin_edges: {"<column>": {"role", "type": "numeric", "edges": [interior edges, ascending]}
-- | {"role", "type": "categorical" | "boolean", "categories": [top categories, most frequent first]}}.
-- Numeric bins are (-inf, e1], (e1, e2], ..., (ek, inf); categorical bins are the categories plus '__other__'.
create table profiles.reference_profiles (
    model_name     text not null,
    model_version  text not null,
    profile_id     bigint not null unique references profiles.whylogs_profiles (profile_id) on delete cascade,
    bin_edges      jsonb not null,
    n_rows         bigint not null check (n_rows >= 0),
    source         jsonb not null default '{}'::jsonb, -- where the training data came from (free form)
    created_at     timestamptz not null default now(),
    primary key (model_name, model_version)
);

-- One row per profile and column. Counts include nulls; the distribution statistics are over the
-- non-null values (numeric and boolean columns: a boolean's mean is its share of true).
create table profiles.column_summaries (
    profile_id         bigint not null references profiles.whylogs_profiles (profile_id) on delete cascade,
    model_name         text not null,
    model_version      text not null,
    variant            text not null,
    segment            text not null,
    window_size        text not null,
    window_start       timestamptz,
    window_end         timestamptz,
    column_name        text not null,              -- a feature, 'prediction.class' or 'prediction.score.<class>'
    column_role        text not null check (column_role in ('feature', 'score', 'prediction', 'other')),
    column_type        text not null check (column_type in ('numeric', 'categorical', 'boolean')),
    count              bigint not null,            -- rows, nulls included
    null_count         bigint not null,
    null_fraction      double precision,
    mean               double precision,
    stddev             double precision,
    min                double precision,
    max                double precision,
    p01                double precision,
    p05                double precision,
    p25                double precision,
    p50                double precision,
    p75                double precision,
    p95                double precision,
    p99                double precision,
    cardinality_est    double precision,           -- HyperLogLog estimate of distinct non-null values
    cardinality_lower  double precision,
    cardinality_upper  double precision,
    frequent_items     jsonb,                      -- [{"value", "est", "lower", "upper"}], most frequent first
    created_at         timestamptz not null default now(),
    primary key (profile_id, column_name)
);
create index column_summaries_model_window on profiles.column_summaries (model_name, window_size, window_start);

-- One row per profile, column and bin, on the bins of the reference of the profile's model_version
-- (reference profiles are binned on their own edges: the expected distribution). Fractions are over
-- the non-null values and sum to 1 per profile and column; count = fraction x non-null values (an
-- estimate from the sketches: exact for categories, within the KLL rank error for numeric bins).
create table profiles.column_bins (
    profile_id            bigint not null references profiles.whylogs_profiles (profile_id) on delete cascade,
    reference_profile_id  bigint not null references profiles.whylogs_profiles (profile_id) on delete cascade,
    model_name            text not null,
    model_version         text not null,
    variant               text not null,
    segment               text not null,
    window_size           text not null,
    window_start          timestamptz,
    window_end            timestamptz,
    column_name           text not null,
    column_role           text not null check (column_role in ('feature', 'score', 'prediction', 'other')),
    column_type           text not null check (column_type in ('numeric', 'categorical', 'boolean')),
    bin_index             integer not null check (bin_index >= 0),
    lower_edge            double precision,        -- numeric bins: (lower_edge, upper_edge], -Infinity / Infinity at the ends
    upper_edge            double precision,
    category              text,                    -- categorical / boolean bins: the category, or '__other__'
    count                 double precision not null check (count >= 0),
    fraction              double precision not null check (fraction >= 0 and fraction <= 1),
    created_at            timestamptz not null default now(),
    primary key (profile_id, column_name, bin_index),
    check ((column_type = 'numeric') = (category is null))
);
create index column_bins_model_window on profiles.column_bins (model_name, window_size, window_start);
create index column_bins_reference on profiles.column_bins (reference_profile_id);
