{#- The windows an incremental build of a mart recomputes, as (model_name, window_size, window_start,
    window_end):
      * every window holding a prediction whose int_labeled_predictions row changed (a new
        prediction, or new feedback: with_feedback) since this mart's last successful build (its
        watermark in ops.watermarks, written by mart_watermark_hook()); without a watermark, every
        window;
      * with_maturity: every window whose stored is_mature / matures_at is not what it would be
        now (its age crossed expected_label_delay since the last build, or the spec's maturity
        rules changed).
    Recomputing a window is idempotent, so an incremental build equals a full refresh. -#}
{% macro changed_windows(as_of, with_feedback=true, with_maturity=false) %}
    {%- set last_build = mart_watermark() %}
    {%- set changed_column = 'changed_at' if with_feedback else 'prediction_changed_at' %}
    with

    model_specs as (
        select * from {{ ref('stg_ops__model_specs') }}
    ),

    touched as (
        select distinct
            labeled.model_name,
            window_sizes.window_size,
            {{ window_start('labeled.request_ts', 'window_sizes.window_size') }} as window_start
        from {{ ref('int_labeled_predictions') }} as labeled
        inner join model_specs
            on labeled.model_name = model_specs.model_name
        cross join lateral jsonb_array_elements_text(model_specs.window_sizes) as window_sizes (window_size)
        -- a constant, so that Postgres uses the index on {{ changed_column }}
        where labeled.{{ changed_column }} > cast('{{ last_build }}' as timestamp with time zone)
    ),

    {% if with_maturity %}
    maturity_changed as (
        select distinct
            stored.model_name,
            stored.window_size,
            stored.window_start
        from {{ this }} as stored
        inner join model_specs
            on stored.model_name = model_specs.model_name
        where
            stored.matures_at is distinct from stored.window_end + model_specs.expected_label_delay
            or stored.is_mature is distinct from {{ is_mature(
                'stored.label_coverage',
                'model_specs.min_label_coverage',
                'stored.window_end + model_specs.expected_label_delay',
                as_of
            ) }}
    ),
    {% endif %}

    windows as (
        select model_name, window_size, window_start from touched
        {% if with_maturity %}
        union
        select model_name, window_size, window_start from maturity_changed
        {% endif %}
    )

    select
        model_name,
        window_size,
        window_start,
        {{ window_end('window_start', 'window_size') }} as window_end
    from windows
{% endmacro %}

{#- Where a mart keeps how far it has read int_labeled_predictions: ops.watermarks (a driftloop table,
    include/sql/migrations/0005_watermarks.sql), one row per mart relation. -#}
{% macro mart_watermark_name() -%}
    dbt:{{ this.schema }}.{{ this.identifier }}
{%- endmacro %}

{#- The start of this mart's last successful build ('-infinity' when it has none: every window is
    recomputed). Read when the model runs, so the value is a constant in its SQL. -#}
{% macro mart_watermark() %}
    {%- if not execute -%}
        {%- do return('-infinity') -%}
    {%- endif -%}
    {%- set result = run_query(
        "select coalesce(max(value)::text, '-infinity') from ops.watermarks where name = '"
        ~ mart_watermark_name() ~ "'"
    ) -%}
    {%- do return(result.columns[0].values()[0]) -%}
{% endmacro %}

{#- A mart's post-hook: it has now read every int_labeled_predictions row changed before this dbt
    invocation started (int_labeled_predictions stamps the rows it changes with the same
    run_started_at, and runs first). Inside the mart's transaction: it moves only if the mart commits. -#}
{% macro mart_watermark_hook() -%}
    insert into ops.watermarks (name, value)
    values ('{{ mart_watermark_name() }}', cast('{{ run_started_at.isoformat() }}' as timestamp with time zone))
    on conflict (name) do update
        set value = greatest(ops.watermarks.value, excluded.value), updated_at = now()
{%- endmacro %}

{#- A filter keeping the rows of `relation` (windowed predictions) in the windows to recompute; no
    filter when not `incremental` (the model passes is_incremental() itself, so that unit tests can
    override it). -#}
{% macro in_changed_windows(relation, incremental) %}
    {%- if incremental %}
    where
        -- bounds Postgres can use before the per-prediction label lookups (index, partition pruning)
        {{ relation }}.request_ts >= (select min(changed_windows.window_start) from changed_windows)
        and {{ relation }}.request_ts < (select max(changed_windows.window_end) from changed_windows)
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

{#- The CTEs every windowed quality mart starts with: `windowed` (int_labeled_predictions_windowed),
    `model_specs` (with_model_specs), `changed_windows` (incremental builds: the windows to recompute, see
    changed_windows()), and `window_predictions`: the `columns` the mart uses of the rows in those windows
    (only those columns: Postgres materializes a CTE read more than once, every column of it). Followed by
    a comma, so the mart's own CTEs come next. -#}
{% macro window_predictions_ctes(columns, as_of, incremental, with_feedback, with_maturity, with_model_specs=true) %}
windowed as (
    select * from {{ ref('int_labeled_predictions_windowed') }}
),

{% if with_model_specs %}
model_specs as (
    select * from {{ ref('stg_ops__model_specs') }}
),
{% endif %}

{% if incremental %}
changed_windows as (
    {{ changed_windows(as_of, with_feedback=with_feedback, with_maturity=with_maturity) }}
),
{% endif %}

window_predictions as (
    select
        {%- for column in columns %}
        windowed.{{ column }}{{ "," if not loop.last }}
        {%- endfor %}
    from windowed
    {{ in_changed_windows('windowed', incremental) }}
),
{% endmacro %}

{#- The CTEs of a mart whose measures add up over hours (counts, exact fixed-point sums):
    `model_specs` and `changed_windows` (incremental builds, see changed_windows()) unless
    `with_shared_ctes` is false (the mart defines them, e.g. with window_predictions_ctes()), then
    `hourly` and `window_counts`.
      * `hourly`: int_labeled_predictions (as `labeled`) grouped by model, version, variant, segment,
        UTC hour and the `keys` (name -> an expression of `labeled`), with the `measures` (name -> an
        aggregate of `labeled` that adds up over hours) and the hour's latest loaded_at
        (source_loaded_at). Incremental builds read only the predictions inside a window to
        recompute.
      * `window_counts`: those hourly rows spread over the windows int_labeled_predictions_windowed
        puts their predictions in (each of the row's window sizes, its own segment ('(none)' when it
        has none) and '(all)'), keyed like it (model_name ... window_start, window_end); in
        incremental builds only the windows to recompute.
    A window's measures are the sums of its hours', so the mart groups a few rows per hour instead
    of every prediction once per window size and segment slice. Followed by a comma, so the mart's
    own CTEs come next. -#}
{% macro hourly_counts_ctes(keys, measures, as_of, incremental, with_feedback, with_maturity, with_shared_ctes=true) %}
{% if with_shared_ctes %}
model_specs as (
    select * from {{ ref('stg_ops__model_specs') }}
),

{% if incremental %}
changed_windows as (
    {{ changed_windows(as_of, with_feedback=with_feedback, with_maturity=with_maturity) }}
),
{% endif %}
{% endif %}

hourly as (
    select
        labeled.model_name,
        labeled.model_version,
        labeled.variant,
        labeled.segment,
        labeled.window_sizes,
        {{ window_start('labeled.request_ts', "'hour'") }} as hour_start,
        {%- for name, expression in keys.items() %}
        {{ expression }} as {{ name }},
        {%- endfor %}
        {%- for name, aggregate in measures.items() %}
        {{ aggregate }} as {{ name }},
        {%- endfor %}
        max(labeled.loaded_at) as source_loaded_at
    from {{ ref('int_labeled_predictions') }} as labeled
    {%- if incremental %}
    where
        -- bounds Postgres can use (index on request_ts, partition pruning), then the windows' own
        labeled.request_ts >= (select min(changed_windows.window_start) from changed_windows)
        and labeled.request_ts < (select max(changed_windows.window_end) from changed_windows)
        -- the hours of the windows to recompute: a hashed semi-join, not a scan of the windows per row
        and (labeled.model_name, {{ window_start('labeled.request_ts', "'hour'") }}) in (
            select changed_windows.model_name, hours.hour_start
            from changed_windows
            cross join lateral generate_series(
                changed_windows.window_start, changed_windows.window_end - interval '1 hour', interval '1 hour'
            ) as hours (hour_start)
        )
    {%- endif %}
    group by
        labeled.model_name, labeled.model_version, labeled.variant, labeled.segment, labeled.window_sizes,
        {{ window_start('labeled.request_ts', "'hour'") }}{% for expression in keys.values() %}, {{ expression }}{% endfor %}
),

window_counts as (
    select
        hourly.model_name,
        hourly.model_version,
        hourly.variant,
        slices.segment,
        window_sizes.window_size,
        {{ window_start('hourly.hour_start', 'window_sizes.window_size') }} as window_start,
        {{ window_end(window_start('hourly.hour_start', 'window_sizes.window_size'), 'window_sizes.window_size') }}
            as window_end,
        {%- for name in keys %}
        hourly.{{ name }},
        {%- endfor %}
        {%- for name in measures %}
        hourly.{{ name }},
        {%- endfor %}
        hourly.source_loaded_at
    from hourly
    cross join lateral jsonb_array_elements_text(hourly.window_sizes) as window_sizes (window_size)
    cross join lateral {{ segment_slices('hourly.segment') }} as slices (segment)
    {%- if incremental %}
    where exists (
        select 1
        from changed_windows
        where
            changed_windows.model_name = hourly.model_name
            and changed_windows.window_size = window_sizes.window_size
            and changed_windows.window_start = {{ window_start('hourly.hour_start', 'window_sizes.window_size') }}
    )
    {%- endif %}
),
{% endmacro %}
