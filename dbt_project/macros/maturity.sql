{#- The build's clock: the `as_of` var (RFC 3339) when given, else when this dbt invocation started.
    Models pass var('as_of') themselves so that unit tests can override it. -#}
{% macro as_of_timestamp(as_of) -%}
    {%- if as_of is none or as_of | string | trim == '' -%}
        cast('{{ run_started_at.isoformat() }}' as timestamp with time zone)
    {%- else -%}
        cast('{{ as_of }}' as timestamp with time zone)
    {%- endif -%}
{%- endmacro %}

{#- A window's labels are mature (its quality is final enough to act on) when enough of it is
    labelled, or when it is old enough that the labels still missing are not expected anymore. -#}
{% macro is_mature(label_coverage, min_label_coverage, matures_at, as_of) -%}
    (coalesce({{ label_coverage }} >= {{ min_label_coverage }}, false) or {{ matures_at }} <= {{ as_of }})
{%- endmacro %}

