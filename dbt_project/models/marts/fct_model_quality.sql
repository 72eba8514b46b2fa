-- depends_on: {{ ref('int_labeled_predictions') }}
{{ config(pre_hook=["{{ prefer_hash_aggregation() }}"], post_hook=["{{ mart_watermark_hook() }}"]) }}
{%- set as_of = as_of_timestamp(var('as_of', none)) %}
{%- set incremental = is_incremental() %}
{%- set grain = ['model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start'] %}

with

-- the rows themselves, for the ranks of the AUC (the only measure that does not add up over hours)
{{ window_predictions_ctes(
    [
        'model_name', 'model_version', 'variant', 'segment', 'window_size', 'window_start',
        'is_failed', 'is_labelled', 'is_binary', 'positive_class', 'classes', 'scores', 'positive_score', 'label'
    ],
    as_of, incremental, with_feedback=true, with_maturity=true
) }}

-- everything else per hour, summed over each window's hours (see hourly_counts_ctes()): counts and
-- exact fixed-point sums add up
{{ hourly_counts_ctes(
    {
        'classes': 'labeled.classes',
        'label': 'labeled.label',
        'predicted_class': 'labeled.predicted_class',
        'is_evaluated': 'not labeled.is_failed and labeled.is_labelled',
        'calibration_bin': ece_bin('labeled.top_score', 10),
    },
    {
        'n_predictions': 'count(*)',
        'n_failed': 'count(*) filter (where labeled.is_failed)',
        'n_scored': 'count(*) filter (where not labeled.is_failed)',
        'n_correct': 'count(*) filter (where labeled.is_correct)',
        'log_loss_sum': fixed_point_sum('labeled.log_loss'),
        'n_log_loss': 'count(labeled.log_loss)',
        'brier_sum': fixed_point_sum('labeled.brier'),
        'n_brier': 'count(labeled.brier)',
        'n_predicted_positive': 'count(*) filter (where labeled.is_predicted_positive)',
        'n_positive_known': 'count(labeled.is_predicted_positive)',
        'score_sum': fixed_point_sum('labeled.positive_score', 'not labeled.is_failed'),
        'n_score': 'count(labeled.positive_score) filter (where not labeled.is_failed)',
        'confidence_sum': fixed_point_sum('labeled.top_score', 'not labeled.is_failed'),
        'n_confidence': 'count(labeled.top_score) filter (where not labeled.is_failed)',
        'n_top_correct': 'count(*) filter (where labeled.is_top_correct)',
    },
    as_of, incremental, with_feedback=true, with_maturity=true, with_shared_ctes=false
) }}

-- quality counts only predictions that were served (no error) and have a label
evaluated as (
    select * from window_predictions
    where not is_failed and is_labelled
),

window_totals as (
    select
        {{ grain | join(', ') }},
        min(window_end) as window_end,
        -- (sums of counts, as the counts' type: bigint)
        cast(sum(n_predictions) as bigint) as n_predictions,
        cast(sum(n_failed) as bigint) as n_failed,
        cast(sum(n_scored) as bigint) as n_scored,
        cast(coalesce(sum(n_predictions) filter (where is_evaluated), 0) as bigint) as n_labelled,
        cast(sum(n_correct) as bigint) as n_correct,
        {{ fixed_point_mean('log_loss_sum', 'n_log_loss') }} as log_loss,
        {{ fixed_point_mean('brier_sum', 'n_brier') }} as brier,
        -- is_predicted_positive is NULL for failed requests and multiclass models
        {{ safe_divide('sum(n_predicted_positive)', 'sum(n_positive_known)') }} as positive_rate,
        {{ fixed_point_mean('score_sum', 'n_score') }} as mean_score,
        {{ fixed_point_mean('confidence_sum', 'n_confidence') }} as mean_confidence,
        max(source_loaded_at) as source_loaded_at
    from window_counts
    group by {{ grain | join(', ') }}
),

-- per class counts: precision / recall / F1 of the positive class (binary) or their macro average
class_counts as (
    select
        {% for column in grain %}evaluated.{{ column }},{% endfor %}
        listed.class_name,
        cast(coalesce(sum(evaluated.n_predictions) filter (
            where evaluated.predicted_class = listed.class_name and evaluated.label = listed.class_name
        ), 0) as bigint) as n_true_positive,
        cast(coalesce(sum(evaluated.n_predictions) filter (where evaluated.predicted_class = listed.class_name), 0)
            as bigint) as n_predicted,
        cast(coalesce(sum(evaluated.n_predictions) filter (where evaluated.label = listed.class_name), 0)
            as bigint) as n_actual
    from window_counts as evaluated
    cross join lateral jsonb_array_elements_text(evaluated.classes) as listed (class_name)
    where evaluated.is_evaluated
    group by {% for column in grain %}evaluated.{{ column }}, {% endfor %}listed.class_name
),

class_metrics as (
    select
        class_counts.*,
        {{ safe_divide('n_true_positive', 'n_predicted') }} as class_precision,
        {{ safe_divide('n_true_positive', 'n_actual') }} as class_recall,
        {{ f1_from_counts('n_true_positive', 'n_predicted', 'n_actual') }} as class_f1
    from class_counts
),

averaged_class_metrics as (
    select
        {% for column in grain %}class_metrics.{{ column }},{% endfor %}
        -- binary: the positive class; multiclass: the mean over the classes where it is defined
        -- (scikit-learn's average="macro" with zero_division=nan)
        case
            when bool_or(model_specs.is_binary)
                then max(class_metrics.class_precision) filter (where class_metrics.class_name = model_specs.positive_class)
            else {{ stable_avg('class_metrics.class_precision') }}
        end as precision,
        case
            when bool_or(model_specs.is_binary)
                then max(class_metrics.class_recall) filter (where class_metrics.class_name = model_specs.positive_class)
            else {{ stable_avg('class_metrics.class_recall') }}
        end as recall,
        case
            when bool_or(model_specs.is_binary)
                then max(class_metrics.class_f1) filter (where class_metrics.class_name = model_specs.positive_class)
            else {{ stable_avg('class_metrics.class_f1') }}
        end as f1
    from class_metrics
    inner join model_specs
        on class_metrics.model_name = model_specs.model_name
    group by {% for column in grain %}class_metrics.{{ column }}{% if not loop.last %}, {% endif %}{% endfor %}
),

-- ROC AUC one-vs-rest per class by ranks: binary = the positive class on `score`; multiclass =
-- every class on its probability, macro averaged (NULL when a class is missing or alone)
auc_inputs as (
    select
        {% for column in grain %}evaluated.{{ column }},{% endfor %}
        listed.class_name,
        evaluated.label = listed.class_name as is_actual,
        case
            when evaluated.is_binary then evaluated.positive_score
            else cast(evaluated.scores ->> listed.class_name as double precision)
        end as class_score
    from evaluated
    cross join lateral jsonb_array_elements_text(evaluated.classes) as listed (class_name)
    where not evaluated.is_binary or listed.class_name = evaluated.positive_class
),

-- hashed groups (the window and the class): each one's scores are collected, then ranked alone,
-- instead of sorting every row of every window by the window key (materialized: planned on its own,
-- Postgres hashes them; planned with the joins after it, it sorts every row to group them)
auc_groups as materialized (
    select
        {{ grain | join(', ') }},
        class_name,
        -- (one pass over the same rows: the two arrays are in the same order)
        array_agg(class_score) as class_scores,
        array_agg(is_actual) as is_actuals
    from auc_inputs
    group by {{ grain | join(', ') }}, class_name
),

class_auc as (
    select
        auc_groups.*,
        class_rank_sums.roc_auc
    from auc_groups
    cross join lateral (
        select
            {{ auc_from_rank_sum(
                'sum(ranked.score_rank) filter (where ranked.is_actual)',
                'count(*) filter (where ranked.is_actual)',
                'count(*) filter (where not ranked.is_actual)'
            ) }} as roc_auc
        from (
            select
                scored.is_actual,
                {{ average_rank('scored.class_score') }} as score_rank
            from unnest(auc_groups.class_scores, auc_groups.is_actuals) as scored (class_score, is_actual)
        ) as ranked
    ) as class_rank_sums
),

window_auc as (
    select
        {{ grain | join(', ') }},
        case when count(roc_auc) = count(*) then {{ stable_avg('roc_auc') }} end as roc_auc
    from class_auc
    group by {{ grain | join(', ') }}
),

-- top-label expected calibration error over 10 equal-width bins of the top probability
calibration_bins as (
    select
        {{ grain | join(', ') }},
        calibration_bin,
        sum(n_predictions) as n_in_bin,
        sum(confidence_sum) as confidence_sum_fixed,
        sum(n_top_correct) as n_top_correct
    from window_counts
    where is_evaluated
    group by {{ grain | join(', ') }}, calibration_bin
),

window_calibration as (
    select
        {{ grain | join(', ') }},
        -- |correct - confidence| per bin, summed exactly (numeric) from the bins' fixed-point sums
        {{ safe_divide(
            'cast(sum(abs(cast(n_top_correct as numeric) * ' ~ fixed_point_scale() ~ ' - confidence_sum_fixed)) as double precision) / '
            ~ fixed_point_scale(),
            'sum(n_in_bin)'
        ) }} as ece
    from calibration_bins
    group by {{ grain | join(', ') }}
),

joined as (
    select
        window_totals.*,
        averaged_class_metrics.precision,
        averaged_class_metrics.recall,
        averaged_class_metrics.f1,
        window_auc.roc_auc,
        window_calibration.ece,
        model_specs.min_label_coverage,
        window_totals.window_end + model_specs.expected_label_delay as matures_at
    from window_totals
    inner join model_specs
        on window_totals.model_name = model_specs.model_name
    {% for cte in ['averaged_class_metrics', 'window_auc', 'window_calibration'] %}
    left join {{ cte }}
        on
            {% for column in grain -%}
            {{ cte }}.{{ column }} = window_totals.{{ column }}{% if not loop.last %} and {% endif %}
            {% endfor %}
    {% endfor %}
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

        ---------- counts
        n_predictions,
        n_failed,
        n_scored,
        n_labelled,
        {{ safe_divide('n_labelled', 'n_scored') }} as label_coverage,

        ---------- quality (NULL where undefined)
        {{ safe_divide('n_correct', 'n_labelled') }} as accuracy,
        precision,
        recall,
        f1,
        roc_auc,
        log_loss,
        brier,
        ece,
        positive_rate,
        mean_score,
        mean_confidence,

        ---------- label maturity
        {{ is_mature(safe_divide('n_labelled', 'n_scored'), 'min_label_coverage', 'matures_at', as_of) }}
            as is_mature,
        matures_at,

        ---------- lineage
        source_loaded_at

    from joined
)

select * from final
