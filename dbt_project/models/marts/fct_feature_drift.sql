-- depends_on: {{ ref('stg_profiles__whylogs_profiles') }}, {{ ref('stg_profiles__reference_profiles') }}, {{ ref('stg_ops__model_drift_specs') }}
{#- new columns are appended to a table built by an older driftloop: its rows have no drift_spec_hash,
    so the next build recomputes them (changed_profile_windows) -#}
{{ config(post_hook="{{ delete_rows_of_deleted_profiles() }}", on_schema_change='append_new_columns') }}
{%- set incremental = is_incremental() %}

with

{{ column_drift_ctes(['feature'], 'feature', "'feature'", incremental) }}

verdicts as (
    select
        column_drift.*,
        case column_drift.statistic
            when 'psi' then column_drift.psi
            when 'js' then column_drift.js_distance
            when 'ks' then column_drift.ks_statistic
            when 'chi2' then column_drift.chi2_statistic
        end as statistic_value,
        case
            when column_drift.learned_threshold is not null then 'reference'
            else 'spec'
        end as threshold_source,
        case
            when column_drift.learned_threshold is not null then column_drift.learned_threshold
            when column_drift.statistic = 'psi' then column_drift.psi_threshold
            when column_drift.statistic = 'js' then column_drift.js_threshold
        end as threshold
    from column_drift
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

        ---------- the feature
        column_name as feature,
        column_type as feature_type,
        n_rows,
        n_values,

        ---------- drift against the reference of the same model version (NULL: not measured)
        n_bins,
        psi,
        js_distance,
        psi_threshold,
        js_threshold,
        ks_statistic,
        ks_p_value,
        chi2_statistic,
        chi2_p_value,

        ---------- the verdict
        statistic,
        statistic_value,
        threshold,
        threshold_source,
        min_samples,
        -- no verdict on a window too small for one (its distances are mostly sampling noise), nor
        -- without a measure; a spec threshold of KS / chi-square is a p-value
        case when n_values >= min_samples and statistic_value is not null then
            case
                when threshold_source = 'spec' and statistic = 'ks' then ks_p_value < p_value_threshold
                when threshold_source = 'spec' and statistic = 'chi2' then chi2_p_value < p_value_threshold
                else statistic_value >= threshold
            end
        end as is_drifted,

        ---------- lineage
        profile_id,
        reference_profile_id,
        drift_spec_hash

    from verdicts
)

select * from final
