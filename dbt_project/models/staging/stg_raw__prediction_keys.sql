with

source as (
    select * from {{ source('raw', 'prediction_keys') }}
),

renamed as (
    select
        model_name,
        prediction_id,
        request_ts,
        file_id,
        line_number

    from source
)

select * from renamed
