-- Two imports of the same bins, not one CTE read twice (Postgres would materialize it whole): the
-- window side's filters reach the column_bins indexes, and the reference side is found by its
-- primary key (profile_id, column_name, bin_index), whatever plan the statistics suggest.
with

window_bins as (
    select * from {{ ref('stg_profiles__column_bins') }}
    where window_size in ('hour', 'day', 'week')
),

-- a reference binned on its own edges (its rows are those whose profile_id is a reference's):
-- the expected distribution
reference_bins as (
    select * from {{ ref('stg_profiles__column_bins') }}
),

paired as (
    select
        ---------- the window profile
        window_bins.profile_id,
        window_bins.model_name,
        window_bins.model_version,
        window_bins.variant,
        window_bins.segment,
        window_bins.window_size,
        window_bins.window_start,
        window_bins.window_end,

        ---------- the profiled column and the bin
        window_bins.column_name,
        window_bins.column_role,
        window_bins.column_type,
        window_bins.bin_index,
        window_bins.lower_edge,
        window_bins.upper_edge,
        window_bins.category,

        ---------- the distributions: the window's (actual) and its reference's (expected)
        window_bins.fraction as actual_fraction,
        reference_bins.fraction as expected_fraction,

        ---------- lineage
        window_bins.reference_profile_id

    from window_bins
    -- both sides hold every bin of the reference's edges, or none (a column without values)
    inner join reference_bins
        on
            window_bins.reference_profile_id = reference_bins.profile_id
            and window_bins.column_name = reference_bins.column_name
            and window_bins.bin_index = reference_bins.bin_index
)

select * from paired
