with

source as (
    select * from {{ source('raw', 'predictions') }}
),

renamed as (
    select
        ---------- ids
        model_name,
        prediction_id,
        model_version,
        variant,
        experiment_id,
        unit_id,
        segment,

        ---------- timestamps
        request_ts,
        loaded_at,

        ---------- prediction
        prediction as predicted_class,
        scores,
        score,
        latency_ms,
        error as error_message,
        error is not null as is_failed,

        ---------- lineage
        event,
        file_id,
        line_number

    from source
)

select * from renamed
