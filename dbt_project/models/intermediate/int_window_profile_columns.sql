with

column_summaries as (
    select * from {{ ref('stg_profiles__column_summaries') }}
),

reference_profiles as (
    select * from {{ ref('stg_profiles__reference_profiles') }}
),

drift_specs as (
    select * from {{ ref('stg_ops__model_drift_specs') }}
),

column_statistics as (
    select * from {{ ref('stg_profiles__column_statistics') }}
),

-- the verdict's statistic of each column (drift.statistic) and whether its threshold is learned
with_statistic as (
    select
        column_summaries.*,
        case when column_summaries.column_type = 'numeric'
            then drift_specs.numeric_statistic else drift_specs.categorical_statistic end as statistic,
        -- a threshold of drift.features.<feature> is the user's: it wins over a learned one
        case
            when drift_specs.thresholds_from = 'spec' then false
            when column_summaries.column_role = 'feature'
                then not (drift_specs.feature_thresholds ? column_summaries.column_name)
            else true
        end as learns_threshold
    from column_summaries
    inner join drift_specs
        on column_summaries.model_name = drift_specs.model_name
),

window_columns as (
    select
        ---------- the window profile
        column_summaries.profile_id,
        column_summaries.model_name,
        column_summaries.model_version,
        column_summaries.variant,
        column_summaries.segment,
        column_summaries.window_size,
        column_summaries.window_start,
        column_summaries.window_end,

        ---------- the profiled column
        column_summaries.column_name,
        column_summaries.column_role,
        column_summaries.column_type,
        column_summaries.n_rows,
        column_summaries.n_rows - column_summaries.n_nulls as n_values,

        ---------- what it is compared against: the reference of the same model version (NULL: none)
        reference_profiles.reference_profile_id,
        {{ drift_threshold('psi', 'column_summaries.column_name', 'column_summaries.column_role', 'drift_specs') }}
            as psi_threshold,
        {{ drift_threshold('js', 'column_summaries.column_name', 'column_summaries.column_role', 'drift_specs') }}
            as js_threshold,
        -- fewer non-null values than this: distances reported, no verdict
        drift_specs.min_samples,

        ---------- KS (numeric) and chi-square (categorical, boolean) against the reference
        column_statistics.ks_statistic,
        column_statistics.ks_p_value,
        column_statistics.chi2_statistic,
        column_statistics.chi2_p_value,

        ---------- the verdict: its statistic and threshold (learned: the reference's null mean + k sd)
        column_summaries.statistic,
        case
            when column_summaries.learns_threshold and column_summaries.statistic = 'psi'
                then column_statistics.psi_null_mean + drift_specs.threshold_k * column_statistics.psi_null_sd
            when column_summaries.learns_threshold and column_summaries.statistic = 'js'
                then column_statistics.js_null_mean + drift_specs.threshold_k * column_statistics.js_null_sd
            when column_summaries.learns_threshold and column_summaries.statistic = 'ks'
                then column_statistics.ks_null_mean + drift_specs.threshold_k * column_statistics.ks_null_sd
            when column_summaries.learns_threshold and column_summaries.statistic = 'chi2'
                then column_statistics.chi2_null_mean + drift_specs.threshold_k * column_statistics.chi2_null_sd
        end as learned_threshold,
        drift_specs.p_value_threshold,
        drift_specs.drift_spec_hash

    from with_statistic as column_summaries
    inner join drift_specs
        on column_summaries.model_name = drift_specs.model_name
    left join reference_profiles
        on
            column_summaries.model_name = reference_profiles.model_name
            and column_summaries.model_version = reference_profiles.model_version
    left join column_statistics
        on
            column_summaries.profile_id = column_statistics.profile_id
            and column_summaries.column_name = column_statistics.column_name
            and reference_profiles.reference_profile_id = column_statistics.reference_profile_id
    where column_summaries.window_size in ('hour', 'day', 'week')
)

select * from window_columns
