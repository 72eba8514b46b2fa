-- depends_on: {{ ref('stg_profiles__whylogs_profiles') }}, {{ ref('stg_profiles__reference_profiles') }}, {{ ref('stg_ops__model_drift_specs') }}
{#- new columns are appended to a table built by an older driftloop: its rows have no drift_spec_hash,
    so the next build recomputes them (changed_profile_windows) -#}
{{ config(post_hook="{{ delete_rows_of_deleted_profiles() }}", on_schema_change='append_new_columns') }}
{%- set incremental = is_incremental() %}

with

{{ column_drift_ctes(['feature'], 'feature', "'feature'", incremental) }}

verdicts as (
    {{ drift_verdicts('column_drift') }}
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
        {{ drift_is_drifted() }} as is_drifted,

        ---------- lineage
        profile_id,
        reference_profile_id,
        drift_spec_hash

    from verdicts
)

select * from final
