-- depends_on: {{ ref('stg_profiles__whylogs_profiles') }}, {{ ref('stg_profiles__reference_profiles') }}, {{ ref('stg_ops__model_drift_specs') }}
{{ config(post_hook="{{ delete_rows_of_deleted_profiles() }}") }}
{%- set incremental = is_incremental() %}

with

-- the prediction distribution: prediction.score.<class> (role 'score') and prediction.class
{{ column_drift_ctes(['score', 'prediction'], 'column_name', 'column_role', incremental) }}

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

        ---------- the prediction column
        column_name,
        column_role,
        case
            when column_role = 'score' then substr(column_name, length('prediction.score.') + 1)
        end as class_name,
        column_type,
        n_rows,
        n_values,

        ---------- drift against the reference of the same model version (NULL: not measured)
        n_bins,
        psi,
        js_distance,
        psi_threshold,
        js_threshold,
        psi >= psi_threshold or js_distance >= js_threshold as is_drifted,

        ---------- lineage
        profile_id,
        reference_profile_id

    from column_drift
)

select * from final
