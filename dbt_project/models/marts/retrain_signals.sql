-- Small (one row per model) and about "now": rebuilt whole by every build, at the build's as_of.
-- retrain__<model>'s sensor reads it.
{{ config(materialized='table') }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}

with

model_specs as (
    select * from {{ ref('stg_ops__model_specs') }}
),

retraining_specs as (
    select * from {{ ref('stg_ops__model_retraining_specs') }}
),

retrain_runs as (
    select * from {{ ref('stg_ops__retrain_runs') }}
),

model_aliases as (
    select * from {{ ref('stg_ops__model_aliases') }}
),

feedback as (
    select * from {{ ref('stg_raw__feedback') }}
),

labelled_predictions as (
    select * from {{ ref('int_labeled_predictions') }}
),

feature_drift as (
    select * from {{ ref('fct_feature_drift') }}
    where segment = '(all)'
),

prediction_drift as (
    select * from {{ ref('fct_prediction_drift') }}
    where segment = '(all)'
),

---------- the champion and the trainings

champions as (
    select
        model_name,
        model_version as champion_version
    from model_aliases
    where alias = 'champion'
),

-- the training that produced the champion: its holdout metrics are the baseline, its gain the importance
champion_trainings as (
    select distinct on (champions.model_name)
        champions.model_name,
        champions.champion_version,
        retrain_runs.holdout_metrics as baseline_metrics,
        retrain_runs.gain_importance
    from champions
    left join retrain_runs
        on
            champions.model_name = retrain_runs.model_name
            and champions.champion_version = retrain_runs.model_version
            and retrain_runs.status = 'succeeded'
    order by champions.model_name, retrain_runs.finished_at desc nulls last
),

last_trainings as (
    select distinct on (model_name)
        model_name,
        retrain_run_id as last_retrain_run_id,
        finished_at as last_trained_at,
        labels_seen_until
    from retrain_runs
    where status = 'succeeded'
    order by model_name, finished_at desc
),

last_attempts as (
    select
        model_name,
        max(started_at) as last_started_at
    from retrain_runs
    group by model_name
),

---------- volume: labels loaded since the last training's data snapshot

new_labels as (
    select
        model_specs.model_name,
        count(distinct feedback.prediction_id) as n_new_labels
    from model_specs
    left join last_trainings
        on model_specs.model_name = last_trainings.model_name
    left join feedback
        on
            model_specs.model_name = feedback.model_name
            and feedback.loaded_at > coalesce(last_trainings.labels_seen_until, '-infinity')
            and feedback.loaded_at <= {{ as_of }}
    group by model_specs.model_name
),

---------- degradation: the champion's labelled traffic of the last window vs its holdout baseline

recent_labelled as (
    select
        labelled_predictions.model_name,
        labelled_predictions.positive_score,
        labelled_predictions.is_correct,
        labelled_predictions.is_predicted_positive,
        labelled_predictions.is_actual_positive,
        labelled_predictions.log_loss,
        labelled_predictions.brier
    from labelled_predictions
    inner join champions
        on
            labelled_predictions.model_name = champions.model_name
            and labelled_predictions.model_version = champions.champion_version
    inner join retraining_specs
        on labelled_predictions.model_name = retraining_specs.model_name
    where
        labelled_predictions.is_labelled
        and not labelled_predictions.is_failed
        and labelled_predictions.request_ts >= {{ as_of }} - retraining_specs.degradation_window
        and labelled_predictions.request_ts < {{ as_of }}
        -- the same bound for all models, as a constant Postgres can prune partitions with
        and labelled_predictions.request_ts >= {{ as_of }} - (select max(degradation_window) from retraining_specs)
),

recent_ranked as (
    select
        *,
        {{ average_rank('positive_score', ['model_name']) }} as score_rank
    from recent_labelled
),

recent_quality as (
    select
        model_name,
        count(*) as n_labelled,
        {{ safe_divide('count(*) filter (where is_correct)', 'count(*)') }} as accuracy,
        {{ safe_divide(
            'count(*) filter (where is_predicted_positive and is_actual_positive)',
            'count(*) filter (where is_predicted_positive)'
        ) }} as precision,
        {{ safe_divide(
            'count(*) filter (where is_predicted_positive and is_actual_positive)',
            'count(*) filter (where is_actual_positive)'
        ) }} as recall,
        {{ f1_from_counts(
            'count(*) filter (where is_predicted_positive and is_actual_positive)',
            'count(*) filter (where is_predicted_positive)',
            'count(*) filter (where is_actual_positive)'
        ) }} as f1,
        {{ auc_from_rank_sum(
            'sum(score_rank) filter (where is_actual_positive)',
            'count(*) filter (where is_actual_positive)',
            'count(*) filter (where not is_actual_positive)'
        ) }} as roc_auc,
        {{ stable_avg('log_loss') }} as log_loss,
        {{ stable_avg('brier') }} as brier
    from recent_ranked
    group by model_name
),

degradation as (
    select
        retraining_specs.model_name,
        retraining_specs.degradation_metric,
        cast(champion_trainings.baseline_metrics ->> retraining_specs.degradation_metric as double precision)
            as degradation_baseline,
        case retraining_specs.degradation_metric
            when 'accuracy' then recent_quality.accuracy
            when 'precision' then recent_quality.precision
            when 'recall' then recent_quality.recall
            when 'f1' then recent_quality.f1
            when 'roc_auc' then recent_quality.roc_auc
            when 'log_loss' then recent_quality.log_loss
            when 'brier' then recent_quality.brier
        end as degradation_current,
        coalesce(recent_quality.n_labelled, 0) as degradation_n_labelled
    from retraining_specs
    left join champion_trainings
        on retraining_specs.model_name = champion_trainings.model_name
    left join recent_quality
        on retraining_specs.model_name = recent_quality.model_name
),

degradation_scored as (
    select
        degradation.*,
        -- how much worse, relative to the baseline (log loss and Brier are better lower)
        case
            when degradation_baseline is null or degradation_current is null or degradation_baseline = 0 then null
            when degradation_metric in ('log_loss', 'brier')
                then (degradation_current - degradation_baseline) / abs(degradation_baseline)
            else (degradation_baseline - degradation_current) / abs(degradation_baseline)
        end as degradation_observed_drop
    from degradation
),

---------- drift: the drift verdict (fct_*_drift.is_drifted) in the champion's latest complete window
---------- that has one, on important features and the prediction

latest_feature_drift as (
    select distinct on (feature_drift.model_name, feature_drift.feature)
        feature_drift.model_name,
        feature_drift.feature,
        feature_drift.window_start,
        feature_drift.n_rows,
        feature_drift.statistic,
        feature_drift.statistic_value,
        feature_drift.threshold,
        feature_drift.is_drifted,
        -- unknown importance (a champion not trained by driftloop): every feature counts
        coalesce(cast(champion_trainings.gain_importance ->> feature_drift.feature as double precision), 1.0)
            as importance
    from feature_drift
    inner join champion_trainings
        on
            feature_drift.model_name = champion_trainings.model_name
            and feature_drift.model_version = champion_trainings.champion_version
    inner join retraining_specs
        on feature_drift.model_name = retraining_specs.model_name
    where
        feature_drift.window_size = retraining_specs.drift_window_size
        -- the latest complete window with a verdict (enough values for drift.min_samples) and rows enough
        and feature_drift.window_end <= {{ as_of }}
        and feature_drift.n_rows >= retraining_specs.drift_min_samples
        and feature_drift.is_drifted is not null
    order by
        feature_drift.model_name,
        feature_drift.feature,
        feature_drift.window_start desc,
        feature_drift.variant = '(all)' desc,
        feature_drift.n_rows desc,
        feature_drift.variant
),

latest_prediction_drift as (
    select distinct on (prediction_drift.model_name, prediction_drift.column_name)
        prediction_drift.model_name,
        prediction_drift.column_name as feature,
        prediction_drift.window_start,
        prediction_drift.n_rows,
        prediction_drift.statistic,
        prediction_drift.statistic_value,
        prediction_drift.threshold,
        prediction_drift.is_drifted
    from prediction_drift
    inner join champions
        on
            prediction_drift.model_name = champions.model_name
            and prediction_drift.model_version = champions.champion_version
    inner join retraining_specs
        on prediction_drift.model_name = retraining_specs.model_name
    where
        retraining_specs.drift_include_prediction
        and prediction_drift.window_size = retraining_specs.drift_window_size
        -- the latest complete window with a verdict (enough values for drift.min_samples) and rows enough
        and prediction_drift.window_end <= {{ as_of }}
        and prediction_drift.n_rows >= retraining_specs.drift_min_samples
        and prediction_drift.is_drifted is not null
    order by
        prediction_drift.model_name,
        prediction_drift.column_name,
        prediction_drift.window_start desc,
        prediction_drift.variant = '(all)' desc,
        prediction_drift.n_rows desc,
        prediction_drift.variant
),

drifted as (
    select
        latest_feature_drift.model_name,
        latest_feature_drift.feature,
        'feature' as kind,
        latest_feature_drift.window_start,
        latest_feature_drift.statistic,
        latest_feature_drift.statistic_value,
        latest_feature_drift.threshold,
        latest_feature_drift.importance
    from latest_feature_drift
    inner join retraining_specs
        on latest_feature_drift.model_name = retraining_specs.model_name
    where
        latest_feature_drift.is_drifted
        and latest_feature_drift.importance >= retraining_specs.drift_min_importance

    union all

    select
        model_name,
        feature,
        'prediction' as kind,
        window_start,
        statistic,
        statistic_value,
        threshold,
        null as importance
    from latest_prediction_drift
    where is_drifted
),

drift as (
    select
        model_name,
        count(*) as n_drifted,
        jsonb_agg(
            jsonb_build_object(
                'column', feature, 'kind', kind, 'window_start', window_start, 'statistic', statistic,
                'value', statistic_value, 'threshold', threshold, 'importance', importance
            )
            order by statistic_value / nullif(threshold, 0) desc nulls last, feature
        ) as drifted_columns,
        string_agg(
            feature || ' ' || statistic || ' ' || to_char(statistic_value, 'FM999990.000')
            || coalesce(' >= ' || to_char(threshold, 'FM999990.000'), ' (p-value below drift.p_value)'),
            ', '
            order by statistic_value / nullif(threshold, 0) desc nulls last, feature
        ) as drifted_text
    from drifted
    group by model_name
),

---------- together

signals as (
    select
        retraining_specs.model_name,
        {{ as_of }} as as_of,
        champions.champion_version,
        last_trainings.last_retrain_run_id,
        last_trainings.last_trained_at,
        last_attempts.last_started_at,

        ---------- cool-down
        last_attempts.last_started_at + retraining_specs.cooldown as cooldown_until,
        coalesce(last_attempts.last_started_at + retraining_specs.cooldown > {{ as_of }}, false) as is_cooling_down,

        ---------- volume
        new_labels.n_new_labels,
        retraining_specs.volume_min_new_labels,
        retraining_specs.volume_enabled and new_labels.n_new_labels >= retraining_specs.volume_min_new_labels
            as volume_fired,

        ---------- degradation
        degradation_scored.degradation_metric,
        degradation_scored.degradation_baseline,
        degradation_scored.degradation_current,
        degradation_scored.degradation_observed_drop,
        retraining_specs.degradation_relative_drop,
        degradation_scored.degradation_n_labelled,
        retraining_specs.degradation_min_samples,
        coalesce(
            retraining_specs.degradation_enabled
            and degradation_scored.degradation_n_labelled >= retraining_specs.degradation_min_samples
            and degradation_scored.degradation_observed_drop >= retraining_specs.degradation_relative_drop,
            false
        ) as degradation_fired,

        ---------- drift
        coalesce(drift.n_drifted, 0) as n_drifted_columns,
        coalesce(drift.drifted_columns, '[]'::jsonb) as drifted_columns,
        retraining_specs.drift_enabled and coalesce(drift.n_drifted, 0) > 0 as drift_fired,
        drift.drifted_text,

        ---------- schedule
        retraining_specs.schedule_every,
        retraining_specs.schedule_enabled
        and (last_trainings.last_trained_at is null
            or last_trainings.last_trained_at + retraining_specs.schedule_every <= {{ as_of }}) as schedule_fired,

        ---------- for the reasons
        retraining_specs.drift_window_size,
        retraining_specs.degradation_window

    from retraining_specs
    left join champions
        on retraining_specs.model_name = champions.model_name
    left join last_trainings
        on retraining_specs.model_name = last_trainings.model_name
    left join last_attempts
        on retraining_specs.model_name = last_attempts.model_name
    left join new_labels
        on retraining_specs.model_name = new_labels.model_name
    left join degradation_scored
        on retraining_specs.model_name = degradation_scored.model_name
    left join drift
        on retraining_specs.model_name = drift.model_name
),

reasons as (
    select
        signals.*,
        case
            when volume_fired
                then n_new_labels || ' new labels since the last training (>= ' || volume_min_new_labels || ')'
        end as volume_reason,
        case
            when degradation_fired
                then degradation_metric || ' ' || to_char(degradation_current, 'FM990.0000')
                    || ' over the last ' || degradation_window || ' (' || degradation_n_labelled
                    || ' labelled) vs baseline ' || to_char(degradation_baseline, 'FM990.0000') || ': '
                    || to_char(100 * degradation_observed_drop, 'FM990.0') || ' % worse (>= '
                    || to_char(100 * degradation_relative_drop, 'FM990.0') || ' %)'
        end as degradation_reason,
        case
            when drift_fired then 'drift in the latest ' || drift_window_size || ' window: ' || drifted_text
        end as drift_reason,
        case
            when schedule_fired and last_trained_at is null then 'no successful training recorded'
            when schedule_fired
                then 'last trained ' || to_char(last_trained_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI')
                    || ' UTC, every ' || schedule_every
        end as schedule_reason
    from signals
),

final as (
    select
        ---------- ids
        model_name,
        champion_version,

        ---------- the decision
        not is_cooling_down and (volume_fired or degradation_fired or drift_fired or schedule_fired)
            as should_retrain,
        -- the first fired trigger in this order names the run; the others travel in the evidence
        case
            when not (volume_fired or degradation_fired or drift_fired or schedule_fired) then null
            when degradation_fired then 'degradation'
            when drift_fired then 'drift'
            when volume_fired then 'volume'
            else 'schedule'
        end as primary_trigger,
        case
            when is_cooling_down and (volume_fired or degradation_fired or drift_fired or schedule_fired)
                then 'cooling down until '
                    || to_char(cooldown_until at time zone 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC; would fire: '
                    || concat_ws('; ', degradation_reason, drift_reason, volume_reason, schedule_reason)
            when is_cooling_down then 'cooling down; no trigger fires'
            else coalesce(nullif(concat_ws('; ', degradation_reason, drift_reason, volume_reason, schedule_reason), ''),
                'no trigger fires')
        end as reason,

        ---------- each trigger
        volume_fired,
        n_new_labels,
        volume_min_new_labels,
        degradation_fired,
        degradation_metric,
        degradation_baseline,
        degradation_current,
        degradation_observed_drop,
        degradation_relative_drop,
        degradation_n_labelled,
        degradation_min_samples,
        drift_fired,
        n_drifted_columns,
        drifted_columns,
        schedule_fired,
        schedule_every,

        ---------- cool-down
        is_cooling_down,
        cooldown_until,

        ---------- timestamps
        last_retrain_run_id,
        last_trained_at,
        last_started_at,
        as_of

    from reasons
)

select * from final
