-- depends_on: {{ ref('int_labeled_predictions') }}
{{ config(pre_hook=["{{ prefer_hash_aggregation() }}"], post_hook=["{{ mart_watermark_hook() }}"]) }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}
{%- set incremental = is_incremental() %}
{%- set grain = ['model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start'] %}

with

-- counts per hour, summed over each window's hours (see hourly_counts_ctes())
{{ hourly_counts_ctes(
    {'classes': 'labeled.classes', 'label': 'labeled.label', 'predicted_class': 'labeled.predicted_class'},
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

-- every class of the spec in every window, so a class nobody predicted or labelled still has a row
window_classes as (
    select
        windows.*,
        listed.class_name,
        listed.class_position,
        model_specs.is_binary,
        model_specs.positive_class
    from windows
    inner join model_specs
        on windows.model_name = model_specs.model_name
    cross join lateral jsonb_array_elements_text(model_specs.classes) with ordinality as listed (class_name, class_position)
),

class_counts as (
    select
        {% for column in grain %}evaluated.{{ column }},{% endfor %}
        listed.class_name,
        -- (sums of counts, as the counts' type: bigint)
        cast(sum(evaluated.n_evaluated) filter (
            where evaluated.predicted_class = listed.class_name and evaluated.label = listed.class_name
        ) as bigint) as n_true_positive,
        cast(sum(evaluated.n_evaluated) filter (where evaluated.predicted_class = listed.class_name) as bigint)
            as n_predicted,
        cast(sum(evaluated.n_evaluated) filter (where evaluated.label = listed.class_name) as bigint) as n_actual
    from window_counts as evaluated
    cross join lateral jsonb_array_elements_text(evaluated.classes) as listed (class_name)
    where evaluated.n_evaluated > 0
    group by {% for column in grain %}evaluated.{{ column }}, {% endfor %}listed.class_name
),

joined as (
    select
        window_classes.*,
        coalesce(class_counts.n_true_positive, 0) as n_true_positive,
        coalesce(class_counts.n_predicted, 0) as n_predicted,
        coalesce(class_counts.n_actual, 0) as support
    from window_classes
    left join class_counts
        on
            {% for column in grain -%}
            class_counts.{{ column }} = window_classes.{{ column }} and
            {% endfor -%}
            class_counts.class_name = window_classes.class_name
),

final as (
    select
        ---------- the key
        model_name,
        model_version,
        variant,
        segment,
        window_size,
        window_start,
        class_name,
        window_end,
        class_position,
        is_binary and class_name = positive_class as is_positive_class,

        ---------- counts over scored, labelled predictions
        support,
        n_predicted,
        n_true_positive,

        ---------- one-vs-rest quality of the class (NULL where undefined)
        {{ safe_divide('n_true_positive', 'n_predicted') }} as precision,
        {{ safe_divide('n_true_positive', 'support') }} as recall,
        {{ f1_from_counts('n_true_positive', 'n_predicted', 'support') }} as f1,

        ---------- lineage
        source_loaded_at

    from joined
)

select * from final
