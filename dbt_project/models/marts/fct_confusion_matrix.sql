-- depends_on: {{ ref('int_labeled_predictions') }}
{{ config(pre_hook=["{{ prefer_hash_aggregation() }}"], post_hook=["{{ mart_watermark_hook() }}"]) }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}
{%- set incremental = is_incremental() %}
{%- set grain = ['model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start'] %}

with

-- counts per hour, summed over each window's hours (see hourly_counts_ctes())
{{ hourly_counts_ctes(
    {'label': 'labeled.label', 'predicted_class': 'labeled.predicted_class'},
    {'n_evaluated': 'count(*) filter (where not labeled.is_failed and labeled.is_labelled)'},
    as_of, incremental, with_feedback=true, with_maturity=false
) }}

windows as (
    select
        {{ grain | join(', ') }},
        min(window_end) as window_end,
        max(source_loaded_at) as source_loaded_at
    from window_counts
    group by {{ grain | join(', ') }}
),

-- the full classes x classes grid of every window: cells nobody fell into are 0, not missing
cells as (
    select
        windows.*,
        actual.class_name as actual_class,
        predicted.class_name as predicted_class
    from windows
    inner join model_specs
        on windows.model_name = model_specs.model_name
    cross join lateral jsonb_array_elements_text(model_specs.classes) as actual (class_name)
    cross join lateral jsonb_array_elements_text(model_specs.classes) as predicted (class_name)
),

counts as (
    select
        {{ grain | join(', ') }},
        label as actual_class,
        predicted_class,
        cast(sum(n_evaluated) as bigint) as n_predictions  -- (as the counts' type)
    from window_counts
    where n_evaluated > 0
    group by {{ grain | join(', ') }}, label, predicted_class
),

final as (
    select
        ---------- the key
        {% for column in grain %}cells.{{ column }},
        {% endfor -%}
        cells.actual_class,
        cells.predicted_class,
        cells.window_end,

        ---------- scored, labelled predictions in the cell
        coalesce(counts.n_predictions, 0) as n_predictions,

        ---------- lineage
        cells.source_loaded_at

    from cells
    left join counts
        on
            {% for column in grain -%}
            counts.{{ column }} = cells.{{ column }} and
            {% endfor -%}
            counts.actual_class = cells.actual_class
            and counts.predicted_class = cells.predicted_class
)

select * from final
