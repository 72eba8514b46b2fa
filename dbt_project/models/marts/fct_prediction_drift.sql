-- depends_on: {{ ref('stg_profiles__whylogs_profiles') }}, {{ ref('stg_profiles__reference_profiles') }}, {{ ref('stg_ops__model_drift_specs') }}
{{ config(post_hook="{{ delete_rows_of_deleted_profiles() }}") }}
{%- set incremental = is_incremental() %}

with

-- the prediction distribution: prediction.score.<class> (role 'score') and prediction.class
window_columns as (
    select * from {{ ref('int_window_profile_columns') }}
    where column_role in ('score', 'prediction')
),

window_bins as (
    select * from {{ ref('int_window_profile_bins') }}
),

{% if incremental %}
changed_windows as (
    {{ changed_profile_windows(column_name='column_name', column_role='column_role') }}
),
{% endif %}

changed_columns as (
    select * from window_columns
    {{ in_changed_profile_windows('window_columns', incremental) }}
),

-- A lateral lookup of each column's bins (by the column_bins primary key) rather than a join to
-- all bins grouped: a build that recomputes a few windows reads only their bins, and no plan the
-- statistics (or their absence, right after profiling) suggest can rescan every bin per column.
column_drift as (
    select
        changed_columns.*,
        drift.n_bins,
        drift.psi,
        drift.js_distance
    from changed_columns
    left join lateral (
        select
            count(*) as n_bins,
            {{ psi('window_bins.expected_fraction', 'window_bins.actual_fraction') }} as psi,
            {{ js_distance('window_bins.expected_fraction', 'window_bins.actual_fraction') }} as js_distance
        from window_bins
        where
            window_bins.profile_id = changed_columns.profile_id
            and window_bins.column_name = changed_columns.column_name
            -- always true; it lets the reference's bins be looked up by key too
            and window_bins.reference_profile_id = changed_columns.reference_profile_id
    ) as drift on true
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
