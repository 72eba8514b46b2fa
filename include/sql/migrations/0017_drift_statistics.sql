-- Drift verdicts a person can trust (issue 13): week windows, KS and chi-square per window column,
-- and the reference's null model of every statistic (what thresholds are learned from).

-- week windows (Monday 00:00 UTC to the next Monday), next to hour and day
alter table profiles.whylogs_profiles drop constraint if exists whylogs_profiles_window_size_check;
alter table profiles.whylogs_profiles add constraint whylogs_profiles_window_size_check
    check (window_size in ('hour', 'day', 'week', 'reference'));

-- A reference made from simulated data (driftloop reference --simulated) says so.
alter table profiles.reference_profiles add column if not exists is_simulated boolean not null default false;

-- One row per window profile and column that has a reference: the statistics SQL cannot compute from
-- the bins (KS from the sketches with its p-value, chi-square with its p-value), and the null model of
-- every statistic at the window's number of values (mean and sd over windows of that many rows drawn
-- from the reference; driftloop.monitor.drift.null_model). The drift marts set a learned threshold
-- as mean + k * sd (drift.k of the spec). Written with the column's bins; re-binning rewrites both.
create table if not exists profiles.column_statistics (
    profile_id            bigint not null references profiles.whylogs_profiles (profile_id) on delete cascade,
    reference_profile_id  bigint not null references profiles.whylogs_profiles (profile_id) on delete cascade,
    model_name            text not null,
    model_version         text not null,
    window_size           text not null,
    window_start          timestamptz,
    column_name           text not null,
    n_values              bigint not null check (n_values >= 0),
    ks_statistic          double precision,        -- numeric columns
    ks_p_value            double precision,
    chi2_statistic        double precision,        -- categorical and boolean columns
    chi2_dof              integer,
    chi2_p_value          double precision,
    psi_null_mean         double precision,        -- NULL: the reference is too small for windows of this size
    psi_null_sd           double precision,
    js_null_mean          double precision,
    js_null_sd            double precision,
    ks_null_mean          double precision,
    ks_null_sd            double precision,
    chi2_null_mean        double precision,
    chi2_null_sd          double precision,
    created_at            timestamptz not null default now(),
    primary key (profile_id, column_name)
);
create index if not exists column_statistics_model_window
    on profiles.column_statistics (model_name, window_size, window_start);
create index if not exists column_statistics_reference on profiles.column_statistics (reference_profile_id);
