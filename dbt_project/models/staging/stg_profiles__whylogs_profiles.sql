with

source as (
    select * from {{ source('profiles', 'whylogs_profiles') }}
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

        ---------- the window ('reference' for a model version's reference)
        window_size,
        window_start,
        window_end,
        window_size = 'reference' as is_reference,

        ---------- the profile (the serialized whylogs profile stays in the source: Python reads it)
        n_rows,

        ---------- timestamps
        created_at

    from source
)

select * from renamed
