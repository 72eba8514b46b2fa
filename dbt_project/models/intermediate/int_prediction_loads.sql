with

predictions as (
    select * from {{ ref('stg_raw__predictions') }}
),

feedback as (
    select * from {{ ref('stg_raw__feedback') }}
),

prediction_keys as (
    select * from {{ ref('stg_raw__prediction_keys') }}
),

prediction_loads as (
    select
        model_name,
        prediction_id,
        'prediction' as load_kind,
        request_ts as event_ts,
        request_ts,
        loaded_at
    from predictions
),

feedback_loads as (
    select
        feedback.model_name,
        feedback.prediction_id,
        'feedback' as load_kind,
        feedback.feedback_ts as event_ts,
        prediction_keys.request_ts,
        feedback.loaded_at
    from feedback
    -- feedback whose prediction has not arrived touches no window yet; the prediction's own load will
    inner join prediction_keys
        on
            feedback.model_name = prediction_keys.model_name
            and feedback.prediction_id = prediction_keys.prediction_id
),

unioned as (
    select * from prediction_loads
    union all
    select * from feedback_loads
)

select * from unioned
