-- Small (one row per landed file upstream): rebuilt whole by every build.
{{ config(materialized='table') }}

with

ingest_files as (
    select * from {{ ref('stg_raw__ingest_files') }}
),

model_specs as (
    select * from {{ ref('stg_ops__model_specs') }}
),

-- files ingest has finished with (a file still being written has no verdict yet)
processed as (
    select
        ingest_files.model_name,
        ingest_files.kind,
        window_sizes.window_size,
        {{ window_start('ingest_files.loaded_at', 'window_sizes.window_size') }} as window_start,
        ingest_files.status,
        ingest_files.rows_loaded,
        ingest_files.rows_rejected
    from ingest_files
    inner join model_specs
        on ingest_files.model_name = model_specs.model_name
    cross join lateral jsonb_array_elements_text(model_specs.window_sizes) as window_sizes (window_size)
    where ingest_files.status <> 'in_progress'
),

window_counts as (
    select
        model_name,
        kind,
        window_size,
        window_start,
        count(*) as n_files,
        count(*) filter (where status = 'failed') as n_failed_files,
        coalesce(sum(rows_loaded), 0) as rows_loaded,
        coalesce(sum(rows_rejected), 0) as rows_rejected
    from processed
    group by model_name, kind, window_size, window_start
),

final as (
    select
        model_name,
        kind,
        window_size,
        window_start,
        {{ window_end('window_start', 'window_size') }} as window_end,
        n_files,
        n_failed_files,
        rows_loaded,
        rows_rejected,
        rows_loaded + rows_rejected as n_rows,
        {{ safe_divide('rows_rejected', 'rows_loaded + rows_rejected') }} as rejected_share
    from window_counts
)

select * from final
