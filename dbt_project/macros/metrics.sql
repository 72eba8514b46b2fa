{#- Shared metric math. Every undefined value (0/0, one class only, no labels) is NULL, never an error. -#}

{% macro safe_divide(numerator, denominator) -%}
    (cast({{ numerator }} as double precision) / nullif(cast({{ denominator }} as double precision), 0))
{%- endmacro %}

{#- F1 from counts: 2 tp / (2 tp + fp + fn) = 2 tp / (n predicted + n actual), as scikit-learn computes
    it (so it is 0, not NULL, when there are positives but no predicted positives). -#}
{% macro f1_from_counts(n_true_positive, n_predicted, n_actual) -%}
    {{ safe_divide('2 * (' ~ n_true_positive ~ ')', '(' ~ n_predicted ~ ') + (' ~ n_actual ~ ')') }}
{%- endmacro %}

{#- The rank of a score among the rows of its partition (all rows without `partition_by`), ties
    given the average of their ranks (1-based). A double: ranks are whole or half numbers, so they
    and their sums (below 2^52, i.e. partitions of up to some 90 million rows) are exact in any
    order, without numeric arithmetic on every row. -#}
{% macro average_rank(score, partition_by=[]) -%}
    (rank() over ({% if partition_by %}partition by {{ partition_by | join(', ') }} {% endif %}order by {{ score }})
        + (count(*) over (partition by {{ (partition_by + [score]) | join(', ') }}) - 1) / cast(2 as double precision))
{%- endmacro %}

{#- ROC AUC by rank statistics (Mann-Whitney U / (n_pos n_neg)) from the sum of the positives'
    average ranks: equal to the area under the ROC curve with ties counted half. NULL unless both
    classes are present. In doubles, like average_rank(): every term is a whole or half number
    below 2^52, so only the division rounds. -#}
{% macro auc_from_rank_sum(positive_rank_sum, n_positive, n_negative) -%}
    cast(case
        when ({{ n_positive }}) > 0 and ({{ n_negative }}) > 0
            then (({{ positive_rank_sum }}) - ({{ n_positive }}) * (({{ n_positive }}) + 1) / cast(2 as double precision))
                / (cast({{ n_positive }} as double precision) * ({{ n_negative }}))
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

{#- Exact, order-independent sums and means of bounded values (probabilities, per-prediction log loss
    and Brier terms: |value| < 8192): fixed_point_sum() rounds each value to a multiple of 2^-50 (an
    absolute error below 4.5e-16, under the rounding of a float64 near 1) and sums them as integers,
    exactly; fixed_point_total() and fixed_point_mean() read such sums back. The result is the same
    whatever order a plan reads the rows, like stable_sum(), but without ordering them: Postgres can
    hash the groups instead of sorting every row of every window (an aggregate with ORDER BY forces a
    sort). A value of 8192 or more fails the build ("bigint out of range"), never a silent overflow.
    `filter` is an aggregate FILTER condition applied to the values summed. -#}
{% macro fixed_point_scale() -%}
    1125899906842624
{%- endmacro %}

{% macro fixed_point_sum(value, filter=none) -%}
    sum(cast(round(cast({{ value }} as double precision) * {{ fixed_point_scale() }}) as bigint))
    {%- if filter %} filter (where {{ filter }}){% endif %}
{%- endmacro %}

{#- A pre-hook of the raw-sized builds: their memory per sort / hash (vars build_work_mem and
    build_maintenance_work_mem), for this transaction only. -#}
{% macro build_memory() -%}
    set local work_mem = '{{ var("build_work_mem") | replace("'", "''") }}';
    set local maintenance_work_mem = '{{ var("build_maintenance_work_mem") | replace("'", "''") }}'
{%- endmacro %}

{#- A pre-hook of the windowed quality marts. Postgres estimates the windowed rows (each prediction
    once per window size and segment slice, through jsonb_array_elements_text, counted as 100 rows a
    call) some 50 times too high and their groups (model, version, variant, segment, window) about a
    thousand times: it then sorts every windowed row to group them, several times per mart, where
    hashing a few hundred groups per day is what the data needs (incremental sorts too: fed by an
    index scan of every row, the hourly sums of fct_model_quality took 95 of its 191 s under EXPLAIN
    ANALYZE at 10M predictions). Sorting stays where a result needs an order (ranks, percentiles);
    only the plan choice changes. -#}
{% macro prefer_hash_aggregation() -%}
    set local enable_sort = off;
    set local enable_incremental_sort = off
{%- endmacro %}

{#- Percentiles (linear interpolation between the closest ranks, like numpy.percentile's default) of
    the values in an array, as an array in the order of `fractions`: for one group's values collected
    with array_agg() in a hashed GROUP BY, so that each group's values are sorted alone instead of every
    row of every group by the group key (an ordered-set aggregate forces that sort). NULLs are ignored.
    It is a subquery: compute it in a materialized CTE and read its elements from there, or Postgres
    inlines the CTE and runs the subquery (a sort of the group's values) once per element read. -#}
{% macro array_percentiles(values_array, fractions) -%}
    (
        select percentile_cont(array[{{ fractions | join(', ') }}]) within group (order by collected.value)
        from unnest({{ values_array }}) as collected (value)
    )
{%- endmacro %}

{#- A prediction's truth from its feedback rows (`relation`, grouped to one prediction): the latest
    label wins (a later feedback_ts is a correction), with how many labels it had, when the first
    and the last came, and when the last was loaded. -#}
{% macro latest_labels(relation) -%}
    (array_agg({{ relation }}.label order by {{ relation }}.feedback_ts desc))[1] as label,
    (array_agg({{ relation }}.outcome order by {{ relation }}.feedback_ts desc))[1] as outcome,
    count(*) as n_labels,
    min({{ relation }}.feedback_ts) as first_label_ts,
    max({{ relation }}.feedback_ts) as label_ts,
    max({{ relation }}.loaded_at) as feedback_loaded_at
{%- endmacro %}

{#- The total and the mean of fixed-point sums (fixed_point_sum()) added up over parts (hours) as a
    float64: the exact integer total rounded once, then scaled (exact); the mean divides it by the
    parts' counts added up. The same numbers whatever the parts and their order. -#}
{% macro fixed_point_total(fixed_point_sums) -%}
    (cast(sum({{ fixed_point_sums }}) as double precision) / {{ fixed_point_scale() }})
{%- endmacro %}

{% macro fixed_point_mean(fixed_point_sums, counts) -%}
    ({{ fixed_point_total(fixed_point_sums) }} / nullif(cast(sum({{ counts }}) as bigint), 0))
{%- endmacro %}
