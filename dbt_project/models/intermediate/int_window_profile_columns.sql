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
            as js_threshold

    from column_summaries
    inner join drift_specs
        on column_summaries.model_name = drift_specs.model_name
    left join reference_profiles
        on
            column_summaries.model_name = reference_profiles.model_name
            and column_summaries.model_version = reference_profiles.model_version
    where column_summaries.window_size in ('hour', 'day')
)

select * from window_columns
