with

source as (
    select * from {{ source('ops', 'model_aliases') }}
),

renamed as (
    select
        ---------- ids
        model_name,
        alias,
        model_version,
        retrain_run_id,

        ---------- timestamps
        updated_at

    from source
)

select * from renamed
