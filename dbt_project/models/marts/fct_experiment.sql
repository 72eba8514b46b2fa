-- Experiment traffic is small next to raw: a table rebuilt whole by every build (no watermark to
-- keep, and late labels of an ended experiment are always picked up). Windows are hour and day
-- whatever the spec's window_sizes: an experiment is looked at hourly.
{{ config(materialized='table') }}
{%- set grain = ['experiment_id', 'arm', 'window_size', 'window_start'] %}

with

labeled_predictions as (
    select * from {{ ref('int_labeled_predictions') }}
),

experiments as (
    select * from {{ ref('stg_ops__experiments') }}
),

-- the two arms of every experiment and the version each serves
experiment_arms as (
    select
        experiments.experiment_id,
        experiments.model_name,
        arms.arm,
        arms.model_version,
        -- the experiment's primary metric, as its policy (the spec's promotion.online, stored at its start) says
        coalesce(experiments.policy -> 'online' ->> 'metric', 'accuracy') as primary_metric
    from experiments
    cross join lateral (
        values
            ('control', experiments.champion_version),
            ('challenger', experiments.challenger_version)
    ) as arms (arm, model_version)
),

experiment_predictions as (
    select
        experiment_arms.experiment_id,
        experiment_arms.arm,
        experiment_arms.model_name,
        experiment_arms.model_version,
        experiment_arms.primary_metric,
        labeled_predictions.prediction_id,
        units.unit_id,
        labeled_predictions.request_ts,
        labeled_predictions.latency_ms,
        labeled_predictions.is_failed,
        labeled_predictions.is_labelled,
        labeled_predictions.is_correct,
        labeled_predictions.outcome,
        labeled_predictions.loaded_at
    from labeled_predictions
    inner join experiment_arms
        on
            labeled_predictions.experiment_id = experiment_arms.experiment_id
            and labeled_predictions.model_name = experiment_arms.model_name
            and labeled_predictions.variant = experiment_arms.arm
    -- unit_id is not in int_labeled_predictions. Lateral: one (model_name, request_ts) index probe per
    -- experiment prediction, in its day's partition. As a join, its plan hung on the row estimate of
    -- fresh experiment traffic: a nested loop over the partitions once made this model take 146 s.
    left join lateral (
        select stg_raw__predictions.unit_id
        from {{ ref('stg_raw__predictions') }} as stg_raw__predictions
        where
            stg_raw__predictions.model_name = labeled_predictions.model_name
            and stg_raw__predictions.request_ts = labeled_predictions.request_ts
            and stg_raw__predictions.prediction_id = labeled_predictions.prediction_id
        offset 0
    ) as units on true
    -- a filter Postgres pushes into the scan under int_labeled_predictions: the per-prediction label
    -- lookups run for experiment traffic only
    where labeled_predictions.experiment_id is not null
),

windowed as (
    select
        experiment_predictions.*,
        window_sizes.window_size,
        {{ window_start('experiment_predictions.request_ts', 'window_sizes.window_size') }} as window_start
    from experiment_predictions
    cross join (values ('hour'), ('day')) as window_sizes (window_size)
),

window_arms as (
    select
        {{ grain | join(', ') }},
        -- one per experiment and arm (from ops.experiments), so grouping by them keeps the grain
        model_name,
        model_version,
        primary_metric,
        -- a request without a unit_id is its own unit, as the promote DAG's evidence counts it
        -- (driftloop.promote.experiments): the mart and the decision's numbers agree
        count(distinct coalesce(unit_id, prediction_id)) as n_units,
        count(*) as n_predictions,
        count(*) filter (where is_failed) as n_failed,
        count(*) filter (where not is_failed and is_labelled) as n_labelled,
        count(*) filter (where is_correct) as n_correct,
        count(outcome) filter (where is_labelled) as n_outcomes,
        count(*) filter (where is_labelled and outcome > 0) as n_positive_outcomes,
        {{ stable_avg('outcome') }} filter (where is_labelled) as outcome_mean,
        stddev_samp(outcome order by outcome) filter (where is_labelled) as outcome_sd,
        -- linear interpolation between the closest ranks, like numpy.percentile's default (fct_latency)
        percentile_cont(0.95) within group (order by latency_ms) as latency_p95_ms,
        max(loaded_at) as source_loaded_at
    from windowed
    group by {{ grain | join(', ') }}, model_name, model_version, primary_metric
),

metrics as (
    select
        window_arms.*,
        {{ safe_divide('n_correct', 'n_labelled') }} as accuracy,
        {{ safe_divide('n_positive_outcomes', 'n_outcomes') }} as outcome_rate
    from window_arms
),

final as (
    select
        ---------- the key
        experiment_id,
        arm,
        window_size,
        window_start,
        {{ window_end('window_start', 'window_size') }} as window_end,

        ---------- what the arm serves
        model_name,
        model_version,

        ---------- counts (failed requests included in n_units, n_predictions)
        n_units,
        n_predictions,
        n_failed,
        n_labelled,
        n_correct,
        n_outcomes,

        ---------- the primary metric (the one the decision tests), then every metric
        primary_metric,
        case primary_metric
            when 'outcome_rate' then outcome_rate
            when 'outcome_mean' then outcome_mean
            else accuracy
        end as primary_metric_value,
        case when primary_metric = 'accuracy' then n_labelled else n_outcomes end as primary_metric_n,
        accuracy,
        outcome_rate,
        outcome_mean,
        outcome_sd,
        n_positive_outcomes,

        ---------- guardrails
        latency_p95_ms,
        {{ safe_divide('n_failed', 'n_predictions') }} as error_rate,

        ---------- lineage
        source_loaded_at

    from metrics
)

select * from final
