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
    -- hashed groups: each window's latencies are collected, then sorted alone (array_percentiles())
    select
        {{ grain | join(', ') }},
        min(window_end) as window_end,
        count(*) as n_predictions,
        count(*) filter (where is_failed) as n_failed,
        array_agg(latency_ms) as latencies,
        max(prediction_loaded_at) as source_loaded_at
    from window_predictions
    group by {{ grain | join(', ') }}
),

-- materialized: `final` reads three elements of array_percentiles() (see there)
window_stats as materialized (
    select
        window_latency.*,
        {{ array_percentiles('window_latency.latencies', ['0.50', '0.95', '0.99']) }} as percentiles,
        (
            select {{ stable_avg('latencies.latency_ms') }}
            from unnest(window_latency.latencies) as latencies (latency_ms)
        ) as mean_ms
    from window_latency
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
        percentiles[1] as latency_p50_ms,
        percentiles[2] as latency_p95_ms,
        percentiles[3] as latency_p99_ms,
        mean_ms as latency_mean_ms,

        ---------- lineage
        source_loaded_at

    from window_stats
)

select * from final
