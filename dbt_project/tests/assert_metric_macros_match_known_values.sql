-- depends_on: {{ ref('fct_model_quality') }}
-- (attached to the mart that uses these macros, so per-model `dbt build --select` runs it too)
-- The shared metric macros against values worked out by hand (and by scikit-learn for the AUCs).
-- Fails with one row per case whose result differs by more than 1e-12.

with

-- roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75 (scikit-learn's docs example);
-- with a tie across the classes: roc_auc_score([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) = 0.875;
-- one class only: undefined
auc_scores (case_name, is_positive, score) as (
    values
        ('auc: no ties', false, 0.1), ('auc: no ties', false, 0.4),
        ('auc: no ties', true, 0.35), ('auc: no ties', true, 0.8),
        ('auc: tie across classes', false, 0.5), ('auc: tie across classes', true, 0.5),
        ('auc: tie across classes', false, 0.2), ('auc: tie across classes', true, 0.9),
        ('auc: one class only', true, 0.3), ('auc: one class only', true, 0.7)
),

auc_ranked as (
    select
        case_name,
        is_positive,
        {{ average_rank('score', ['case_name']) }} as score_rank
    from auc_scores
),

auc_cases as (
    select
        case_name,
        {{ auc_from_rank_sum(
            'sum(score_rank) filter (where is_positive)',
            'count(*) filter (where is_positive)',
            'count(*) filter (where not is_positive)'
        ) }} as actual
    from auc_ranked
    group by case_name
),

auc_expected (case_name, expected) as (
    values
        ('auc: no ties', 0.75::double precision),
        ('auc: tie across classes', 0.875),
        ('auc: one class only', null)
),

-- fixed_point_sum -> fixed_point_mean / fixed_point_total, summed over parts (the kept values and the
-- others, as the marts sum hours): numpy.mean / sum of the same values (float64), of all of them and
-- of the kept ones, a clipped log loss (36.04) among them, and a value of 1e-9
exact_values (case_name, value, is_kept) as (
    values
        ('exact: probabilities', 0.1::double precision, true), ('exact: probabilities', 0.2, true),
        ('exact: probabilities', 0.3, true), ('exact: probabilities', 0.7, false),
        ('exact: log loss terms', 36.04365338911715, true), ('exact: log loss terms', 0.6931471805599453, true),
        ('exact: log loss terms', 1e-9, true), ('exact: log loss terms', null, true)
),

exact_parts as (
    select case_name, is_kept, {{ fixed_point_sum('value') }} as value_sum, count(value) as n_values
    from exact_values
    group by case_name, is_kept
),

exact_expected as (
    select case_name, avg(value) as mean, avg(value) filter (where is_kept) as kept_mean, sum(value) as total
    from exact_values
    group by case_name
),

exact_cases (case_name, actual, expected) as (
    select parts.case_name || ': mean', {{ fixed_point_mean('parts.value_sum', 'parts.n_values') }}, min(expected.mean)
    from exact_parts as parts inner join exact_expected as expected on parts.case_name = expected.case_name
    group by parts.case_name
    union all
    select parts.case_name || ': mean of the kept', {{ fixed_point_mean('parts.value_sum', 'parts.n_values') }},
        min(expected.kept_mean)
    from exact_parts as parts inner join exact_expected as expected on parts.case_name = expected.case_name
    where parts.is_kept
    group by parts.case_name
    union all
    select parts.case_name || ': sum', {{ fixed_point_total('parts.value_sum') }}, min(expected.total)
    from exact_parts as parts inner join exact_expected as expected on parts.case_name = expected.case_name
    group by parts.case_name
    union all
    select 'exact: no values is NULL', {{ fixed_point_mean('value_sum', 'n_values') }}, null::double precision
    from exact_parts
    where false
),

scalar_cases (case_name, actual, expected) as (
    values
        ('safe_divide: 1 / 4', {{ safe_divide('1', '4') }}, 0.25::double precision),
        ('safe_divide: 1 / 0 is NULL', {{ safe_divide('1', '0') }}, null),
        ('safe_divide: NULL / 2 is NULL', {{ safe_divide('null', '2') }}, null),
        ('f1: tp 1, 2 predicted, 1 actual', {{ f1_from_counts('1', '2', '1') }}, 2.0 / 3),
        ('f1: no positives predicted, 1 actual', {{ f1_from_counts('0', '0', '1') }}, 0),
        ('f1: nothing predicted or actual is NULL', {{ f1_from_counts('0', '0', '0') }}, null),
        ('log_loss_term: p = 0.5', {{ log_loss_term('0.5') }}, ln(2::double precision)),
        ('log_loss_term: p = 0 is clipped to eps', {{ log_loss_term('0') }}, 36.04365338911715),
        ('log_loss_term: p = 1 is clipped to 1 - eps', {{ log_loss_term('1') }}, 2.220446049250313e-16),
        ('ece_bin: 0', {{ ece_bin('0') }}, 0),
        ('ece_bin: 0.0999', {{ ece_bin('0.0999') }}, 0),
        ('ece_bin: 0.1', {{ ece_bin('0.1') }}, 1),
        ('ece_bin: 0.55', {{ ece_bin('0.55') }}, 5),
        ('ece_bin: 0.9', {{ ece_bin('0.9') }}, 9),
        ('ece_bin: 1 is in the last bin', {{ ece_bin('1') }}, 9),
        ('ece_bin: 5 bins, 0.5', {{ ece_bin('0.5', 5) }}, 2)
),

all_cases as (
    select auc_cases.case_name, auc_cases.actual, auc_expected.expected
    from auc_cases
    inner join auc_expected
        on auc_cases.case_name = auc_expected.case_name
    union all
    select case_name, actual, expected from scalar_cases
    union all
    select case_name, actual, expected from exact_cases
)

select *
from all_cases
where not (
    (actual is null and expected is null)
    or abs(actual - expected) <= 1e-12
)
