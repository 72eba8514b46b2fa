with

source as (
    select * from {{ source('profiles', 'column_summaries') }}
),

renamed as (
    select
        ---------- ids
        profile_id,
        model_name,
        model_version,
        variant,
        -- the marts call rows without a segment '(none)'; profiling calls them '(null)'
        case when segment = '(null)' then '(none)' else segment end as segment,
        window_size,
        window_start,
        window_end,
        column_name,

        ---------- the column
        column_role,
        column_type,

        ---------- counts (rows include nulls)
        count as n_rows,
        null_count as n_nulls,
        null_fraction,

        ---------- distribution of the non-null values
        mean,
        stddev,
        min as min_value,
        max as max_value,
        p01,
        p05,
        p25,
        p50,
        p75,
        p95,
        p99,
        cardinality_est,
        cardinality_lower,
        cardinality_upper,
        frequent_items,

        ---------- timestamps
        created_at

    from source
)

select * from renamed
