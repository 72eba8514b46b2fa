{#- Data tests on raw-sized models (staging and intermediate views over all history) check only the
    rows requested in the last var('data_test_lookback') before the build's as_of, so that a build
    never re-reads all history; the database's own constraints guard the rest. A test opts in
    with `config: {meta: {recent_rows_on: <timestamp column>}}`.

    This overrides dbt's get_where_subquery (which applies a test's `where` config) to add that
    filter: a `where` config cannot call project macros, since dbt renders it while parsing. -#}
{% macro get_where_subquery(relation) -%}
    {%- set filters = [] -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- do filters.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- set recent_rows_on = (config.get('meta') or {}).get('recent_rows_on') -%}
    {%- if recent_rows_on -%}
        {%- do filters.append(
            recent_rows_on ~ ' >= ' ~ as_of_timestamp(var('as_of', none))
            ~ " - cast('" ~ var('data_test_lookback') ~ "' as interval)"
        ) -%}
    {%- endif -%}
    {%- if filters -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ filters | join(' and ') }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
