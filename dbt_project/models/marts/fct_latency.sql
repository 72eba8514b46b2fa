-- depends_on: {{ ref('int_labeled_predictions') }}, {{ ref('stg_ops__model_specs') }}
{{ config(pre_hook=["{{ prefer_hash_aggregation() }}"], post_hook=["{{ mart_watermark_hook() }}"]) }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}
{%- set incremental = is_incremental() %}
{%- set grain = ['model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start'] %}

with

-- labels do not change latency: only windows with new predictions are recomputed
{{ window_predictions_ctes(
    [
        'model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start',
        'window_end', 'is_failed', 'latency_ms', 'prediction_loaded_at'
    ],
    as_of, incremental, with_feedback=false, with_maturity=false, with_model_specs=false
) }}

window_latency as (
    select
        -- grouped by one compact value for the text columns of the window key (see compact_key()): the
        -- sort the percentiles need compares two values per row pair, not six; min() reads them back
        {% for column in grain if column != 'window_start' %}min({{ column }}) as {{ column }},
        {% endfor -%}
        window_start,
        min(window_end) as window_end,
        count(*) as n_predictions,
        count(*) filter (where is_failed) as n_failed,
        -- linear interpolation between the closest ranks, like numpy.percentile's default
        percentile_cont(0.50) within group (order by latency_ms) as latency_p50_ms,
        percentile_cont(0.95) within group (order by latency_ms) as latency_p95_ms,
        percentile_cont(0.99) within group (order by latency_ms) as latency_p99_ms,
        {{ stable_avg('latency_ms') }} as latency_mean_ms,
        max(prediction_loaded_at) as source_loaded_at
    from window_predictions
    group by window_start, {{ compact_key(['model_name', 'model_version', 'variant', 'segment', 'window_size']) }}
),

final as (
    select
        ---------- the window key
        model_name,
        model_version,
        variant,
        segment,
        window_size,
        window_start,
        window_end,

        ---------- traffic (failed requests included)
        n_predictions,
        n_failed,
        {{ safe_divide('n_predictions', 'extract(epoch from window_end - window_start)') }} as throughput_per_second,
        {{ safe_divide('n_failed', 'n_predictions') }} as error_rate,

        ---------- latency of every request (failed ones too)
        latency_p50_ms,
        latency_p95_ms,
        latency_p99_ms,
        latency_mean_ms,

        ---------- lineage
        source_loaded_at

    from window_latency
)

select * from final
