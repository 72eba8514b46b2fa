{#- Drift math on binned distributions: aggregates over the rows of one column's bins (one row per
    bin, `expected` = the reference's fraction, `actual` = the window's), on the same bins. Both sets
    of fractions sum to 1 (profiles.column_bins does). Sums run over the terms in ascending order,
    so a result depends only on the bins, not on the order a plan reads them (an incremental build
    stays bit-identical to a full refresh). Rows with NULL fractions (a left join that found no
    bins) add nothing; over no bins, both are NULL. -#}

{#- The floor of an empty bin's fraction in PSI: 1e-4 (an empty bin would make ln(a / e) infinite).
    It is small against a bin of a 10-bin reference (0.1) and bounds a bin's term by about
    a * ln(a / 1e-4), i.e. at most ~9.2. tests/integration/monitor/test_drift_marts.py uses the same. -#}
{% macro psi_epsilon() -%}
    0.0001
{%- endmacro %}

{#- Population stability index: sum over the bins of (a - e) * ln(a / e), with a and e each floored
    at psi_epsilon() (not renormalized). 0 for identical distributions; >= 0.2 is the usual
    "significant shift". -#}
{% macro psi(expected, actual, epsilon=none) -%}
    {%- set epsilon = epsilon if epsilon is not none else psi_epsilon() -%}
    {#- not greatest(): it would turn a NULL fraction into epsilon -#}
    {%- set e = '(case when ' ~ expected ~ ' < ' ~ epsilon ~ ' then ' ~ epsilon ~ ' else cast(' ~ expected ~ ' as double precision) end)' -%}
    {%- set a = '(case when ' ~ actual ~ ' < ' ~ epsilon ~ ' then ' ~ epsilon ~ ' else cast(' ~ actual ~ ' as double precision) end)' -%}
    {{ stable_sum('(' ~ a ~ ' - ' ~ e ~ ') * ln(' ~ a ~ ' / ' ~ e ~ ')') }}
{%- endmacro %}

{#- p * ln(p / m), 0 when p = 0 (scipy.special.rel_entr; m > 0 whenever p > 0 since m >= p / 2);
    NULL when p is. -#}
{% macro _relative_entropy_term(p, m) -%}
    (case when {{ p }} > 0 then {{ p }} * ln({{ p }} / {{ m }}) when {{ p }} = 0 then 0 end)
{%- endmacro %}

{#- Jensen-Shannon DISTANCE, base 2: the square root of the JS divergence
    (KL(p || m) + KL(q || m)) / 2 / ln(2), m = (p + q) / 2; in [0, 1] (0 = identical, 1 = disjoint),
    symmetric, no epsilon needed. Equals scipy.spatial.distance.jensenshannon(p, q, base=2) for
    fractions that sum to 1 (scipy normalizes its inputs first). Rounding can push the divergence a
    hair outside [0, 1]; it is clamped there before the square root. -#}
{% macro js_distance(expected, actual) -%}
    {%- set e = 'cast(' ~ expected ~ ' as double precision)' -%}
    {%- set a = 'cast(' ~ actual ~ ' as double precision)' -%}
    {%- set m = '((' ~ e ~ ' + ' ~ a ~ ') / 2)' -%}
    {%- set divergence = '(' ~ stable_sum(
        _relative_entropy_term(a, m) ~ ' + ' ~ _relative_entropy_term(e, m)
    ) ~ ' / (2 * ln(2)))' -%}
    sqrt(case when {{ divergence }} < 0 then 0 when {{ divergence }} > 1 then 1 else {{ divergence }} end)
{%- endmacro %}

{#- The drift threshold (metric 'psi' or 'js') that applies to a profiled column, from a row of
    stg_ops__model_drift_specs: a feature's override (drift.features) else the model's
    (drift.thresholds); the prediction columns (scores, predicted class): drift.prediction. -#}
{% macro drift_threshold(metric, column_name, column_role, drift_specs) -%}
    (case
        when {{ column_role }} = 'feature'
            then coalesce(
                cast({{ drift_specs }}.feature_thresholds -> {{ column_name }} ->> '{{ metric }}' as double precision),
                {{ drift_specs }}.{{ metric }}_threshold
            )
        else coalesce({{ drift_specs }}.prediction_{{ metric }}_threshold, {{ drift_specs }}.{{ metric }}_threshold)
    end)
{%- endmacro %}

{#- The windows an incremental build of a drift mart recomputes, as (model_name, window_size,
    window_start): every window
      * holding a window profile the mart has not seen (by profile_id: a new window, or a rewritten
        one, since rewriting a window gives its profiles new ids);
      * holding a stored row whose profile is gone, whose reference is no longer the current reference
        of its model version (a reference was stored, replaced or deleted: storing one re-bins every
        window of its version), or whose thresholds are no longer the spec's.
    Nothing depends on clocks or commit order, so an incremental build equals a full refresh.
    `column_name` / `column_role`: SQL giving a stored row's profiled column and its role. -#}
{% macro changed_profile_windows(column_name, column_role) %}
    with

    profiles as (
        select * from {{ ref('stg_profiles__whylogs_profiles') }}
        where not is_reference
    ),

    reference_profiles as (
        select * from {{ ref('stg_profiles__reference_profiles') }}
    ),

    drift_specs as (
        select * from {{ ref('stg_ops__model_drift_specs') }}
    ),

    stored as (
        select
            model_name,
            model_version,
            window_size,
            window_start,
            {{ column_name }} as column_name,
            {{ column_role }} as column_role,
            psi_threshold,
            js_threshold,
            drift_spec_hash,
            profile_id,
            reference_profile_id
        from {{ this }}
    ),

    unseen_profiles as (
        select
            profiles.model_name,
            profiles.window_size,
            profiles.window_start
        from profiles
        inner join drift_specs
            on profiles.model_name = drift_specs.model_name
        where not exists (
            select 1
            from stored
            where stored.profile_id = profiles.profile_id
        )
    ),

    outdated_rows as (
        select
            stored.model_name,
            stored.window_size,
            stored.window_start
        from stored
        inner join drift_specs
            on stored.model_name = drift_specs.model_name
        left join reference_profiles
            on
                stored.model_name = reference_profiles.model_name
                and stored.model_version = reference_profiles.model_version
        where
            not exists (
                select 1
                from profiles
                where profiles.profile_id = stored.profile_id
            )
            or stored.reference_profile_id is distinct from reference_profiles.reference_profile_id
            or stored.psi_threshold is distinct from
                {{ drift_threshold('psi', 'stored.column_name', 'stored.column_role', 'drift_specs') }}
            or stored.js_threshold is distinct from
                {{ drift_threshold('js', 'stored.column_name', 'stored.column_role', 'drift_specs') }}
            or stored.drift_spec_hash is distinct from drift_specs.drift_spec_hash
    ),

    windows as (
        select model_name, window_size, window_start from unseen_profiles
        union
        select model_name, window_size, window_start from outdated_rows
    )

    select * from windows
{% endmacro %}

{#- A filter keeping the rows of `relation` (per window profile) in the windows to recompute; no
    filter when not `incremental` (the model passes is_incremental() itself, so that unit tests can
    override it). -#}
{% macro in_changed_profile_windows(relation, incremental) %}
    {%- if incremental %}
    where
        -- bounds Postgres can use on the (model_name, window_size, window_start) indexes
        {{ relation }}.window_start >= (select min(changed_windows.window_start) from changed_windows)
        and {{ relation }}.window_start <= (select max(changed_windows.window_start) from changed_windows)
        and exists (
            select 1
            from changed_windows
            where
                changed_windows.model_name = {{ relation }}.model_name
                and changed_windows.window_size = {{ relation }}.window_size
                and changed_windows.window_start = {{ relation }}.window_start
        )
    {%- endif %}
{% endmacro %}

{#- Post-hook of the drift marts: a window whose profiles were all deleted has no rows left to
    replace its stored ones by delete+insert; delete those rows (what a full refresh would not have). -#}
{% macro delete_rows_of_deleted_profiles() %}
    delete from {{ this }} as stored
    where not exists (
        select 1
        from {{ ref('stg_profiles__whylogs_profiles') }} as profiles
        where profiles.profile_id = stored.profile_id
    )
{% endmacro %}

{#- The CTEs both drift marts are made of: the window profiles' columns of `roles` (window_columns), their
    bins on the reference's edges (window_bins), in an incremental build only the windows whose profiles
    changed (changed_windows, changed_columns; see changed_profile_windows()), and column_drift: each
    column with n_bins, PSI and the Jensen-Shannon distance against the reference of its model version.
    Followed by a comma, so the mart's own CTEs come next.

    A lateral lookup of each column's bins (by the column_bins primary key) rather than a join to all bins
    grouped: a build that recomputes a few windows reads only their bins, and no plan the statistics (or
    their absence, right after profiling) suggest can rescan every bin per column. -#}
{% macro column_drift_ctes(roles, changed_column_name, changed_column_role, incremental) %}
window_columns as (
    select * from {{ ref('int_window_profile_columns') }}
    where column_role in ({% for role in roles %}'{{ role }}'{{ ", " if not loop.last }}{% endfor %})
),

window_bins as (
    select * from {{ ref('int_window_profile_bins') }}
),

{% if incremental %}
changed_windows as (
    {{ changed_profile_windows(column_name=changed_column_name, column_role=changed_column_role) }}
),
{% endif %}

changed_columns as (
    select * from window_columns
    {{ in_changed_profile_windows('window_columns', incremental) }}
),

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
{% endmacro %}

{#- The verdict's inputs for each row of `relation` (column_drift): statistic_value (the spec's
    statistic), threshold_source ('reference' when a learned threshold exists, else 'spec') and the
    threshold it uses (NULL for a spec verdict on ks / chi2, which uses the p-value). -#}
{% macro drift_verdicts(relation) %}
    select
        {{ relation }}.*,
        case {{ relation }}.statistic
            when 'psi' then {{ relation }}.psi
            when 'js' then {{ relation }}.js_distance
            when 'ks' then {{ relation }}.ks_statistic
            when 'chi2' then {{ relation }}.chi2_statistic
        end as statistic_value,
        case when {{ relation }}.learned_threshold is not null then 'reference' else 'spec' end as threshold_source,
        case
            when {{ relation }}.learned_threshold is not null then {{ relation }}.learned_threshold
            when {{ relation }}.statistic = 'psi' then {{ relation }}.psi_threshold
            when {{ relation }}.statistic = 'js' then {{ relation }}.js_threshold
        end as threshold
    from {{ relation }}
{% endmacro %}

{#- is_drifted: no verdict on a window too small for one (fewer values than drift.min_samples: its
    distances are mostly sampling noise), nor without a measure; a spec threshold of KS / chi-square is
    a p-value (drift.p_value). -#}
{% macro drift_is_drifted() -%}
    case when n_values >= min_samples and statistic_value is not null then
            case
                when threshold_source = 'spec' and statistic = 'ks' then ks_p_value < p_value_threshold
                when threshold_source = 'spec' and statistic = 'chi2' then chi2_p_value < p_value_threshold
                else statistic_value >= threshold
            end
        end
{%- endmacro %}
