with

source as (
    select * from {{ source('raw', 'feedback') }}
),

renamed as (
    select
        ---------- ids
        model_name,
        prediction_id,

        ---------- timestamps
        feedback_ts,
        loaded_at,

        ---------- feedback
        label,
        outcome,
        source as feedback_source,

        ---------- lineage
        file_id,
        line_number

    from source
)

select * from renamed
