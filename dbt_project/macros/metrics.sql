{#- Shared metric math. Every undefined value (0/0, one class only, no labels) is NULL, never an error. -#}

{% macro safe_divide(numerator, denominator) -%}
    (cast({{ numerator }} as double precision) / nullif(cast({{ denominator }} as double precision), 0))
{%- endmacro %}

{#- F1 from counts: 2 tp / (2 tp + fp + fn) = 2 tp / (n predicted + n actual), as scikit-learn computes
    it (so it is 0, not NULL, when there are positives but no predicted positives). -#}
{% macro f1_from_counts(n_true_positive, n_predicted, n_actual) -%}
    {{ safe_divide('2 * (' ~ n_true_positive ~ ')', '(' ~ n_predicted ~ ') + (' ~ n_actual ~ ')') }}
{%- endmacro %}

{#- The rank of a score among the rows of its partition, ties given the average of their ranks
    (1-based; a numeric, so rank sums stay exact). -#}
{% macro average_rank(score, partition_by) -%}
    (rank() over (partition by {{ partition_by | join(', ') }} order by {{ score }})
        + (count(*) over (partition by {{ partition_by | join(', ') }}, {{ score }}) - 1) / 2.0)
{%- endmacro %}

{#- ROC AUC by rank statistics (Mann-Whitney U / (n_pos n_neg)) from the sum of the positives'
    average ranks: equal to the area under the ROC curve with ties counted half. NULL unless both
    classes are present. -#}
{% macro auc_from_rank_sum(positive_rank_sum, n_positive, n_negative) -%}
    cast(case
        when ({{ n_positive }}) > 0 and ({{ n_negative }}) > 0
            then (({{ positive_rank_sum }}) - ({{ n_positive }}) * (({{ n_positive }}) + 1) / 2.0)
                / (cast({{ n_positive }} as numeric) * ({{ n_negative }}))
    end as double precision)
{%- endmacro %}

{#- One prediction's log loss, given the probability it gave the true class. Probabilities are
    clipped to [eps, 1 - eps], eps = float64 machine epsilon, exactly like scikit-learn's log_loss. -#}
{% macro log_loss_term(probability_of_true_class) -%}
    {%- set eps = "cast('2.220446049250313e-16' as double precision)" -%}
    (-ln(least(greatest(cast({{ probability_of_true_class }} as double precision), {{ eps }}), 1 - {{ eps }})))
{%- endmacro %}

{#- The calibration bin (0 .. n_bins - 1) of a top-label probability: equal-width bins
    [0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1], the last one closed. -#}
{% macro ece_bin(confidence, n_bins=10) -%}
    least(cast(floor(cast({{ confidence }} as double precision) * {{ n_bins }}) as integer), {{ n_bins - 1 }})
{%- endmacro %}

{#- Float sums and means over the values in ascending order: the result depends only on the values,
    not on the order a plan reads the rows, so an incremental build is bit-identical to a full
    refresh. -#}
{% macro stable_sum(value) -%}
    sum({{ value }} order by {{ value }})
{%- endmacro %}

{% macro stable_avg(value) -%}
    avg({{ value }} order by {{ value }})
{%- endmacro %}
