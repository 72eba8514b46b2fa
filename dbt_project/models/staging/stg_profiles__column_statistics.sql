with

source as (
    select * from {{ source('profiles', 'column_statistics') }}
),

renamed as (
    select
        ---------- ids
        profile_id,
        reference_profile_id,
        column_name,

        ---------- tests against the reference (driftloop.monitor.drift)
        n_values,
        ks_statistic,
        ks_p_value,
        chi2_statistic,
        chi2_dof,
        chi2_p_value,

        ---------- the reference's null model at n_values: mean and sd of each statistic
        psi_null_mean,
        psi_null_sd,
        js_null_mean,
        js_null_sd,
        ks_null_mean,
        ks_null_sd,
        chi2_null_mean,
        chi2_null_sd

    from source
)

select * from renamed
