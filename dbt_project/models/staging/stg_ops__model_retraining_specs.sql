-- The retraining block of each model's spec, cast (the spec parser fills in every default).
with

source as (
    select * from {{ source('ops', 'model_specs') }}
),

retraining as (
    select
        model_name,
        spec -> 'retraining' as retraining,
        spec -> 'retraining' -> 'triggers' as triggers,
        synced_at
    from source
),

renamed as (
    select
        ---------- ids
        model_name,

        ---------- cool-down after any training
        cast(retraining ->> 'cooldown' as interval) as cooldown,

        ---------- volume: labels since the last training
        cast(triggers -> 'volume' ->> 'enabled' as boolean) as volume_enabled,
        cast(triggers -> 'volume' ->> 'min_new_labels' as bigint) as volume_min_new_labels,

        ---------- degradation: the champion's metric over a recent window vs its holdout baseline
        cast(triggers -> 'degradation' ->> 'enabled' as boolean) as degradation_enabled,
        triggers -> 'degradation' ->> 'metric' as degradation_metric,
        cast(triggers -> 'degradation' ->> 'relative_drop' as double precision) as degradation_relative_drop,
        cast(triggers -> 'degradation' ->> 'window' as interval) as degradation_window,
        cast(triggers -> 'degradation' ->> 'min_samples' as bigint) as degradation_min_samples,

        ---------- drift: PSI on an important feature, or on the prediction
        cast(triggers -> 'drift' ->> 'enabled' as boolean) as drift_enabled,
        triggers -> 'drift' ->> 'window_size' as drift_window_size,
        cast(triggers -> 'drift' ->> 'min_importance' as double precision) as drift_min_importance,
        cast(triggers -> 'drift' ->> 'min_samples' as bigint) as drift_min_samples,
        cast(triggers -> 'drift' ->> 'include_prediction' as boolean) as drift_include_prediction,

        ---------- schedule
        cast(triggers -> 'schedule' ->> 'enabled' as boolean) as schedule_enabled,
        cast(triggers -> 'schedule' ->> 'every' as interval) as schedule_every,

        ---------- timestamps
        synced_at

    from retraining
)

select * from renamed
