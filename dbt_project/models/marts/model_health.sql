-- Small (one row per model) and about "now": rebuilt whole by every build, at the build's as_of.
{{ config(materialized='table') }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}

with

model_specs as (
    select * from {{ ref('stg_ops__model_specs') }}
),

ingest_files as (
    select * from {{ ref('stg_raw__ingest_files') }}
),

reference_profiles as (
    select * from {{ ref('stg_profiles__reference_profiles') }}
),

model_quality as (
    select * from {{ ref('fct_model_quality') }}
    where segment = '(all)'
),

label_coverage as (
    select * from {{ ref('fct_label_coverage') }}
    where segment = '(all)'
),

retraining_specs as (
    select * from {{ ref('stg_ops__model_retraining_specs') }}
),

-- drift is read in the windows of the drift trigger's size (retraining.triggers.drift.window_size)
feature_drift as (
    select fct_feature_drift.* from {{ ref('fct_feature_drift') }} as fct_feature_drift
    inner join retraining_specs
        on
            fct_feature_drift.model_name = retraining_specs.model_name
            and fct_feature_drift.window_size = retraining_specs.drift_window_size
    where fct_feature_drift.segment = '(all)'
),

prediction_drift as (
    select fct_prediction_drift.* from {{ ref('fct_prediction_drift') }} as fct_prediction_drift
    inner join retraining_specs
        on
            fct_prediction_drift.model_name = retraining_specs.model_name
            and fct_prediction_drift.window_size = retraining_specs.drift_window_size
    where fct_prediction_drift.segment = '(all)'
),

-- the version (and variant) that served most of the model's latest window (hourly when the spec
-- has hourly windows): the champion, even while a challenger takes a share of the traffic
serving as (
    select distinct on (model_name)
        model_name,
        model_version as serving_model_version,
        variant as serving_variant,
        window_start as serving_window_start
    from model_quality
    order by
        model_name,
        window_size = 'hour' desc,
        window_start desc,
        n_scored desc,
        n_predictions desc,
        model_version desc,
        variant
),

-- quality of the serving version: its latest daily window whose labels are mature
serving_quality as (
    select distinct on (model_quality.model_name)
        model_quality.model_name,
        model_quality.window_start as quality_window_start,
        model_quality.n_labelled as quality_n_labelled,
        model_quality.accuracy,
        model_quality.roc_auc,
        model_quality.f1,
        model_quality.log_loss
    from model_quality
    inner join serving
        on
            model_quality.model_name = serving.model_name
            and model_quality.model_version = serving.serving_model_version
            and model_quality.variant = serving.serving_variant
    where model_quality.window_size = 'day' and model_quality.is_mature
    order by model_quality.model_name, model_quality.window_start desc
),

-- traffic of the model's latest daily window, every version and variant together
latest_days as (
    select
        model_name,
        max(window_start) as window_start
    from label_coverage
    where window_size = 'day'
    group by model_name
),

latest_traffic as (
    select
        label_coverage.model_name,
        label_coverage.window_start as traffic_window_start,
        sum(label_coverage.n_predictions) as n_predictions,
        sum(label_coverage.n_scored) as n_scored,
        sum(label_coverage.n_labelled) as n_labelled
    from label_coverage
    inner join latest_days
        on
            label_coverage.model_name = latest_days.model_name
            and label_coverage.window_start = latest_days.window_start
    where label_coverage.window_size = 'day'
    group by label_coverage.model_name, label_coverage.window_start
),

-- from the manifest (one row per landed file): no scan of the raw rows
freshness as (
    select
        model_name,
        max(max_event_ts) filter (where kind = 'predictions') as latest_request_ts,
        max(loaded_at) as latest_loaded_at
    from ingest_files
    where status in ('loaded', 'changed') and rows_loaded > 0
    group by model_name
),

-- drift of the serving version: its latest complete window (ended by as_of) that qualifies (as many
-- values as drift.min_samples in some feature), not a partial or tiny one
serving_drift_days as (
    select
        feature_drift.model_name,
        max(feature_drift.window_start) as drift_window_start
    from feature_drift
    inner join serving
        on
            feature_drift.model_name = serving.model_name
            and feature_drift.model_version = serving.serving_model_version
            and feature_drift.variant = serving.serving_variant
    where feature_drift.window_end <= {{ as_of }} and feature_drift.n_values >= feature_drift.min_samples
    group by feature_drift.model_name
),

serving_feature_drift as (
    select
        feature_drift.model_name,
        count(feature_drift.is_drifted) as n_features_measured,
        -- NULL, not 0 / '', when nothing could be measured (no reference); names as a
        -- ', '-separated sorted list, which every BI tool shows (feature names never hold commas)
        case when count(feature_drift.is_drifted) > 0
            then count(*) filter (where feature_drift.is_drifted) end as n_drifted_features,
        case when count(feature_drift.is_drifted) > 0
            then coalesce(
                string_agg(feature_drift.feature, ', ' order by feature_drift.feature) filter (where feature_drift.is_drifted),
                ''
            ) end as drifted_features
    from feature_drift
    inner join serving
        on
            feature_drift.model_name = serving.model_name
            and feature_drift.model_version = serving.serving_model_version
            and feature_drift.variant = serving.serving_variant
    inner join serving_drift_days
        on
            feature_drift.model_name = serving_drift_days.model_name
            and feature_drift.window_start = serving_drift_days.drift_window_start
    group by feature_drift.model_name
),

serving_prediction_drift as (
    select
        prediction_drift.model_name,
        bool_or(prediction_drift.is_drifted) as is_prediction_drifted,
        case when count(prediction_drift.is_drifted) > 0
            then coalesce(
                string_agg(prediction_drift.column_name, ', ' order by prediction_drift.column_name)
                    filter (where prediction_drift.is_drifted),
                ''
            ) end as drifted_prediction_columns
    from prediction_drift
    inner join serving
        on
            prediction_drift.model_name = serving.model_name
            and prediction_drift.model_version = serving.serving_model_version
            and prediction_drift.variant = serving.serving_variant
    inner join serving_drift_days
        on
            prediction_drift.model_name = serving_drift_days.model_name
            and prediction_drift.window_start = serving_drift_days.drift_window_start
    group by prediction_drift.model_name
),

final as (
    select
        ---------- the model
        model_specs.model_name,

        ---------- what serves
        serving.serving_model_version,
        serving.serving_variant,
        serving.serving_window_start,
        case when serving.serving_model_version is not null
            then reference_profiles.reference_profile_id is not null end as serving_has_reference,

        ---------- quality of the serving version: latest mature daily window
        serving_quality.quality_window_start,
        serving_quality.quality_n_labelled,
        serving_quality.accuracy,
        serving_quality.roc_auc,
        serving_quality.f1,
        serving_quality.log_loss,

        ---------- traffic: latest daily window, every version and variant
        latest_traffic.traffic_window_start,
        latest_traffic.n_predictions,
        latest_traffic.n_scored,
        latest_traffic.n_labelled,
        {{ safe_divide('latest_traffic.n_labelled', 'latest_traffic.n_scored') }} as label_coverage,

        ---------- drift of the serving version: latest complete window that qualifies
        serving_drift_days.drift_window_start,
        serving_feature_drift.n_features_measured,
        serving_feature_drift.n_drifted_features,
        serving_feature_drift.drifted_features,
        serving_prediction_drift.is_prediction_drifted,
        serving_prediction_drift.drifted_prediction_columns,

        ---------- freshness at as_of
        freshness.latest_request_ts,
        freshness.latest_loaded_at,
        cast(extract(epoch from {{ as_of }} - freshness.latest_request_ts) as double precision)
            as seconds_since_latest_request,
        cast(extract(epoch from {{ as_of }} - freshness.latest_loaded_at) as double precision)
            as seconds_since_latest_load,
        {{ as_of }} as as_of

    from model_specs
    left join freshness
        on model_specs.model_name = freshness.model_name
    left join serving
        on model_specs.model_name = serving.model_name
    left join reference_profiles
        on
            serving.model_name = reference_profiles.model_name
            and serving.serving_model_version = reference_profiles.model_version
    left join serving_quality
        on model_specs.model_name = serving_quality.model_name
    left join latest_traffic
        on model_specs.model_name = latest_traffic.model_name
    left join serving_drift_days
        on model_specs.model_name = serving_drift_days.model_name
    left join serving_feature_drift
        on model_specs.model_name = serving_feature_drift.model_name
    left join serving_prediction_drift
        on model_specs.model_name = serving_prediction_drift.model_name
)

select * from final
