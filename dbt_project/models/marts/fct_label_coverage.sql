-- depends_on: {{ ref('int_labeled_predictions') }}
{{ config(pre_hook=["{{ prefer_hash_aggregation() }}"], post_hook=["{{ mart_watermark_hook() }}"]) }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}
{%- set incremental = is_incremental() %}
{%- set grain = ['model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start'] %}

with

{{ window_predictions_ctes(
    [
        'model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start',
        'window_end', 'is_failed', 'is_labelled', 'n_labels', 'label_delay_seconds', 'loaded_at'
    ],
    as_of, incremental, with_feedback=true, with_maturity=true
) }}

-- materialized: `final` reads three elements of array_percentiles() (see there)
window_labels as materialized (
    -- hashed groups: each window's label delays are collected, then sorted alone (array_percentiles())
    select
        {{ grain | join(', ') }},
        min(window_end) as window_end,
        count(*) as n_predictions,
        count(*) filter (where not is_failed) as n_scored,
        count(*) filter (where not is_failed and is_labelled) as n_labelled,
        count(*) filter (where not is_failed and n_labels > 1) as n_relabelled,
        -- the delay until the truth first became known (a later correction does not delay it)
        {{ array_percentiles(
            'array_agg(label_delay_seconds) filter (where not is_failed and label_delay_seconds is not null)',
            ['0.50', '0.90', '0.99']
        ) }} as percentiles,
        max(loaded_at) as source_loaded_at
    from window_predictions
    group by {{ grain | join(', ') }}
),

final as (
    select
        ---------- the window key
        window_labels.model_name,
        window_labels.model_version,
        window_labels.variant,
        window_labels.segment,
        window_labels.window_size,
        window_labels.window_start,
        window_labels.window_end,

        ---------- coverage of the scored (not failed) predictions
        window_labels.n_predictions,
        window_labels.n_scored,
        window_labels.n_labelled,
        window_labels.n_scored - window_labels.n_labelled as n_awaiting,
        window_labels.n_relabelled,
        {{ safe_divide('window_labels.n_labelled', 'window_labels.n_scored') }} as label_coverage,

        ---------- label delay (seconds from request to first label), over labelled predictions
        window_labels.percentiles[1] as label_delay_p50_seconds,
        window_labels.percentiles[2] as label_delay_p90_seconds,
        window_labels.percentiles[3] as label_delay_p99_seconds,

        ---------- label maturity
        {{ is_mature(
            safe_divide('window_labels.n_labelled', 'window_labels.n_scored'),
            'model_specs.min_label_coverage',
            'window_labels.window_end + model_specs.expected_label_delay',
            as_of
        ) }} as is_mature,
        window_labels.window_end + model_specs.expected_label_delay as matures_at,

        ---------- lineage
        window_labels.source_loaded_at

    from window_labels
    inner join model_specs
        on window_labels.model_name = model_specs.model_name
)

select * from final
