{#- The windows an incremental build of a mart recomputes, as (model_name, window_size, window_start,
    window_end):
      * every window holding a prediction (or, with_feedback, a labelled prediction) loaded since
        the newest `source_loaded_at` the mart holds for that model, minus var('loaded_at_lookback');
        a model the mart has never seen is computed whole;
      * with_maturity: every window whose stored is_mature / matures_at is not what it would be
        now (its age crossed expected_label_delay since the last build, or the spec's maturity
        rules changed).
    Recomputing a window is idempotent, so an incremental build equals a full refresh. -#}
{% macro changed_windows(as_of, with_feedback=true, with_maturity=false) %}
    with

    model_specs as (
        select * from {{ ref('stg_ops__model_specs') }}
    ),

    watermarks as (
        select
            model_name,
            max(source_loaded_at) - cast('{{ var("loaded_at_lookback") }}' as interval) as loaded_since
        from {{ this }}
        group by model_name
    ),

    -- NULL for a model the mart has never seen: all of its rows count as new
    loaded_since as (
        select
            model_specs.model_name,
            watermarks.loaded_since
        from model_specs
        left join watermarks
            on model_specs.model_name = watermarks.model_name
    ),

    touched as (
        select distinct
            loads.model_name,
            window_sizes.window_size,
            {{ window_start('loads.request_ts', 'window_sizes.window_size') }} as window_start
        from {{ ref('int_prediction_loads') }} as loads
        inner join loaded_since
            on loads.model_name = loaded_since.model_name
        inner join model_specs
            on loads.model_name = model_specs.model_name
        cross join lateral jsonb_array_elements_text(model_specs.window_sizes) as window_sizes (window_size)
        where
            (loaded_since.loaded_since is null or loads.loaded_at > loaded_since.loaded_since)
            -- the same bound for all models, as a constant Postgres can push into the scans
            and loads.loaded_at > (
                select coalesce(min(coalesce(loaded_since, '-infinity')), 'infinity') from loaded_since
            )
            {%- if not with_feedback %}
            and loads.load_kind = 'prediction'
            {%- endif %}
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
