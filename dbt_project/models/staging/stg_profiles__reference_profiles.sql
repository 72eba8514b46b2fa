with

source as (
    select * from {{ source('profiles', 'reference_profiles') }}
),

renamed as (
    select
        ---------- ids
        model_name,
        model_version,
        profile_id as reference_profile_id,

        ---------- the reference
        bin_edges,
        n_rows,
        source as reference_source,

        ---------- timestamps
        created_at

    from source
)

select * from renamed
