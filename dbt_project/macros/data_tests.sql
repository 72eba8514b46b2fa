{#- Data tests on raw-sized models (staging and intermediate views over all history) check only the
    rows requested in the last var('data_test_lookback') before the build's as_of, so that a build
    never re-reads all history; the database's own constraints guard the rest. A test opts in
    with `config: {meta: {recent_rows_on: <timestamp column>}}`.

    Tests on int_labeled_predictions (an incremental table) and the views over it check the rows its
    latest build wrote: `config: {meta: {changed_rows_on: changed_at}}` keeps the rows whose
    changed_at is the newest in the table (`changed_rows_of: <table>`: in that table of the same
    schema, for a view over it); every row after a full refresh.

    This overrides dbt's get_where_subquery (which applies a test's `where` config) to add that
    filter: a `where` config cannot call project macros, since dbt renders it while parsing. -#}
{% macro get_where_subquery(relation) -%}
    {%- set filters = [] -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- do filters.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- set meta = config.get('meta') or {} -%}
    {%- set changed_rows_on = meta.get('changed_rows_on') -%}
    {%- if changed_rows_on -%}
        {#- the newest stamp of the table that stamps the rows (itself, or changed_rows_of in its schema) -#}
        {%- set stamped = relation.incorporate(path={'identifier': meta.get('changed_rows_of') or relation.identifier}) -%}
        {%- do filters.append(
            changed_rows_on ~ ' >= (select max(' ~ changed_rows_on ~ ') from ' ~ stamped ~ ')'
        ) -%}
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
