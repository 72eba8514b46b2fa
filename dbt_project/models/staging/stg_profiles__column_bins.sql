with

source as (
    select * from {{ source('profiles', 'column_bins') }}
),

renamed as (
    select
        ---------- ids
        profile_id,
        reference_profile_id,
        model_name,
        model_version,
        variant,
        -- the marts call rows without a segment '(none)'; profiling calls them '(null)'
        case when segment = '(null)' then '(none)' else segment end as segment,
        window_size,
        window_start,
        window_end,
        column_name,
        bin_index,

        ---------- the column
        column_role,
        column_type,

        ---------- the bin: (lower_edge, upper_edge] (numeric) or a category / '__other__'
        lower_edge,
        upper_edge,
        category,

        ---------- the profile's values in the bin (of its non-null values)
        count as bin_count,
        fraction,

        ---------- timestamps
        created_at

    from source
)

select * from renamed
