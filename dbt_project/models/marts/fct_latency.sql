-- depends_on: {{ ref('int_labeled_predictions') }}, {{ ref('stg_ops__model_specs') }}
{{ config(post_hook=["{{ mart_watermark_hook() }}"]) }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}
{%- set incremental = is_incremental() %}
{%- set grain = ['model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start'] %}

with

windowed as (
    select * from {{ ref('int_labeled_predictions_windowed') }}
),

{% if incremental %}
-- labels do not change latency: only windows with new predictions are recomputed
changed_windows as (
    {{ changed_windows(as_of, with_feedback=false, with_maturity=false) }}
),
{% endif %}

-- only the columns it uses: Postgres materializes a CTE read more than once, every column of it
window_predictions as (
    select
        windowed.model_name,
        windowed.model_version,
        windowed.variant,
        windowed.segment,
        windowed.window_size,
        windowed.window_start,
        windowed.window_end,
        windowed.is_failed,
        windowed.latency_ms,
        windowed.prediction_loaded_at
    from windowed
    {{ in_changed_windows('windowed', incremental) }}
),

window_latency as (
    select
        {{ grain | join(', ') }},
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
    group by {{ grain | join(', ') }}
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
